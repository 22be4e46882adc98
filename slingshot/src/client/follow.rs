//! Following one ID through the pipeline: each stage's outcome, where the branches end, and when no stage has work left for it.
//!
//! Every stage a followed request reaches reports to the client and copies
//! the follow headers onto its outputs. The client expects a report from
//! each (queue, ID) an output went to when that queue is the inbound queue
//! of a known service; an output to any other queue ends its branch there.
//! Reports may arrive in any order (a stage downstream can answer before the
//! one that fed it), and a stage that runs twice (at least once) reports
//! twice: only its first final report counts.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::sync::mpsc;

use super::{CallError, Forget};
use crate::protocol::{Outcome, RouteTaken, Status};

/// A request on its way through the pipeline; see
/// [`Submission::wait_until_done`].
pub struct Submission {
    _forget: Forget,
    answers: mpsc::UnboundedReceiver<Outcome>,
    /// Inbound queue → the service consuming it.
    stages: HashMap<String, String>,
    /// The first stage: service, queue, ID.
    start: (String, String, u64),
    /// (queue, ID) → the service a report is expected from.
    expected: HashMap<(String, u64), String>,
    /// Stages whose final report came.
    reported: HashSet<(String, u64)>,
    /// Stages that said they started.
    started: HashSet<(String, u64)>,
    /// What the stages that reported did.
    done: PipelineOutcome,
}

impl std::fmt::Debug for Submission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Submission")
            .field("service", &self.start.0)
            .field("id", &self.start.2)
            .finish_non_exhaustive()
    }
}

/// What became of a request through the whole pipeline.
#[derive(Debug, Clone, PartialEq, Default, serde::Serialize)]
pub struct PipelineOutcome {
    /// Each stage's final outcome (done or failed), in the order they came.
    pub stages: Vec<Outcome>,
    /// Outputs sent to queues no known service consumes: where branches
    /// left the pipeline.
    pub ended_at: Vec<RouteTaken>,
}

impl PipelineOutcome {
    /// The stages that dead-lettered their request.
    pub fn failed(&self) -> impl Iterator<Item = &Outcome> {
        self.stages.iter().filter(|o| o.status == Status::Failed)
    }
}

/// A stage a followed request was sent to that has not reported yet.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Waiting {
    /// The service expected to report.
    pub service: String,
    /// Its inbound queue.
    pub queue: String,
    /// The ID sent there.
    pub id: u64,
    /// Whether it said it started.
    pub started: bool,
}

impl std::fmt::Display for Waiting {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = if self.started {
            "still running"
        } else {
            "never picked up"
        };
        write!(f, "{} ({:?}) ID {}: {state}", self.service, self.queue, self.id)
    }
}

impl Submission {
    pub(super) fn new(
        forget: Forget,
        answers: mpsc::UnboundedReceiver<Outcome>,
        stages: HashMap<String, String>,
        start: (String, String, u64),
    ) -> Self {
        let expected = HashMap::from([((start.1.clone(), start.2), start.0.clone())]);
        Submission {
            _forget: forget,
            answers,
            stages,
            start,
            expected,
            reported: HashSet::new(),
            started: HashSet::new(),
            done: PipelineOutcome::default(),
        }
    }

    /// Waits until every stage the request reached has reported and none
    /// has work left for it, then returns each stage's outcome. On timeout,
    /// [`CallError::Unfinished`] says what was done and which stages are
    /// still waited for (never picked up, or still running); waiting again
    /// goes on from there.
    pub async fn wait_until_done(&mut self, timeout: Duration) -> Result<PipelineOutcome, CallError> {
        let deadline = tokio::time::Instant::now() + timeout;
        while !self.expected.keys().all(|key| self.reported.contains(key)) {
            let outcome = match tokio::time::timeout_at(deadline, self.answers.recv()).await {
                Ok(Some(outcome)) => outcome,
                Ok(None) => return Err(CallError::RepliesLost { id: self.start.2 }),
                Err(_) => {
                    return Err(CallError::Unfinished {
                        done: self.done.clone(),
                        waiting: self.waiting(),
                        timeout,
                    })
                }
            };
            self.record(outcome);
        }
        Ok(self.done.clone())
    }

    /// The stages expected to report that have not, in queue order.
    fn waiting(&self) -> Vec<Waiting> {
        let mut waiting: Vec<Waiting> = self
            .expected
            .iter()
            .filter(|(key, _)| !self.reported.contains(*key))
            .map(|((queue, id), service)| Waiting {
                service: service.clone(),
                queue: queue.clone(),
                id: *id,
                started: self.started.contains(&(queue.clone(), *id)),
            })
            .collect();
        waiting.sort_by(|a, b| (&a.queue, a.id).cmp(&(&b.queue, b.id)));
        waiting
    }

    /// Takes in one report: a stage started, or finished with outputs that
    /// other stages now owe a report for.
    fn record(&mut self, outcome: Outcome) {
        let Some(id) = outcome.id else { return };
        let key = (outcome.queue.clone(), id);
        if outcome.status == Status::Started {
            self.started.insert(key);
            return;
        }
        if !self.reported.insert(key) {
            return; // a second run of the same stage (at least once)
        }
        for route in &outcome.routes {
            match self.stages.get(&route.queue) {
                Some(service) => {
                    self.expected.insert((route.queue.clone(), route.id), service.clone());
                }
                None => self.done.ended_at.push(route.clone()),
            }
        }
        self.done.stages.push(outcome);
    }
}
