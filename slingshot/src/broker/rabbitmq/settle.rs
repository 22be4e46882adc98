//! Settling a consumer's deliveries: acks that are waiting together for a
//! channel's oldest deliveries go to the broker as one `multiple` ack.
//!
//! Every ack and reject of a consumer's deliveries passes through one task
//! per channel, the settler. It takes every request waiting when it wakes.
//! If the oldest deliveries still unsettled on the channel are all acks of
//! that batch, one `basic.ack` with `multiple` settles them: one frame for
//! the broker to parse and one pass over its queue instead of one each.
//! Every other request goes out as before, on its own. Nothing is held back
//! to make a batch (a stuck `process` call never delays another's ack), so
//! batches form only when acks come faster than they are sent, which is
//! when they cost the broker most.
//!
//! A `multiple` ack with tag T settles every delivery of the channel up to T
//! that the broker still counts unacknowledged. The ledger of unsettled tags
//! is what keeps that exact: a delivery enters it before anyone can settle
//! it and leaves it when its own frame (or the `multiple` one covering it)
//! is queued, and frames leave a channel in the order they were queued. A
//! delivery dropped without being settled stays in the ledger, so no
//! `multiple` ack covers it: the broker gives it back when the channel
//! closes.

use std::collections::BTreeSet;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use futures::future::join_all;
use lapin::options::{BasicAckOptions, BasicRejectOptions};
use lapin::Channel;
use tokio::sync::{mpsc, oneshot};

use super::link::Session;
use crate::broker::{Acker, BrokerError};

/// How a request settles its delivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Verdict {
    Ack,
    Reject { requeue: bool },
}

/// One delivery to settle, and where its outcome goes.
struct Request {
    tag: u64,
    acker: lapin::Acker,
    verdict: Verdict,
    reply: oneshot::Sender<Result<(), BrokerError>>,
}

/// The settler of one channel's deliveries; the consumer keeps it and hands
/// each delivery an acker made by [`Settler::acker`].
pub(crate) struct Settler {
    unsettled: Arc<Mutex<BTreeSet<u64>>>,
    requests: mpsc::UnboundedSender<Request>,
    channel: Channel,
    session: Arc<Session>,
}

impl Settler {
    /// Starts the channel's settling task; it ends when the settler and the
    /// last of its ackers are gone. Needs a Tokio runtime.
    pub(crate) fn start(channel: Channel, session: Arc<Session>) -> Self {
        let unsettled = Arc::new(Mutex::new(BTreeSet::new()));
        let (requests, waiting) = mpsc::unbounded_channel();
        tokio::spawn(settle(waiting, unsettled.clone()));
        Settler {
            unsettled,
            requests,
            channel,
            session,
        }
    }

    /// The acker of a delivery just received; from now on it counts as
    /// unsettled.
    pub(crate) fn acker(&self, tag: u64, acker: lapin::Acker) -> Box<dyn Acker> {
        lock(&self.unsettled).insert(tag);
        Box::new(SettledAcker {
            tag,
            acker,
            requests: self.requests.clone(),
            channel: self.channel.clone(),
            session: self.session.clone(),
        })
    }
}

fn lock(unsettled: &Mutex<BTreeSet<u64>>) -> std::sync::MutexGuard<'_, BTreeSet<u64>> {
    // The set stays consistent whatever panicked while holding it: each
    // change is a single insert or removal.
    unsettled.lock().unwrap_or_else(|e| e.into_inner())
}

struct SettledAcker {
    tag: u64,
    acker: lapin::Acker,
    requests: mpsc::UnboundedSender<Request>,
    channel: Channel,
    session: Arc<Session>,
}

impl SettledAcker {
    async fn settle(self, verdict: Verdict) -> Result<(), BrokerError> {
        let (reply, outcome) = oneshot::channel();
        let request = Request {
            tag: self.tag,
            acker: self.acker,
            verdict,
            reply,
        };
        let gone = || BrokerError::Disconnected("the channel's settler is gone".into());
        self.requests.send(request).map_err(|_| gone())?;
        outcome.await.map_err(|_| gone())?
    }
}

#[async_trait]
impl Acker for SettledAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.settle(Verdict::Ack).await
    }

    async fn reject(self: Box<Self>, requeue: bool) -> Result<(), BrokerError> {
        self.settle(Verdict::Reject { requeue }).await
    }

    fn is_live(&self) -> bool {
        self.channel.status().connected() && !self.session.dead.load(Ordering::SeqCst)
    }
}

/// The settling task: each time it wakes, everything waiting is one batch.
async fn settle(mut waiting: mpsc::UnboundedReceiver<Request>, unsettled: Arc<Mutex<BTreeSet<u64>>>) {
    let mut batch = Vec::new();
    while waiting.recv_many(&mut batch, usize::MAX).await > 0 {
        let frames = {
            let mut unsettled = lock(&unsettled);
            plan(&mut unsettled, std::mem::take(&mut batch))
        };
        join_all(frames.into_iter().map(Frame::send)).await;
    }
}

/// One frame to send, and the requests it settles.
struct Frame {
    /// The delivery tag it carries.
    tag: u64,
    acker: lapin::Acker,
    verdict: Verdict,
    multiple: bool,
    replies: Vec<oneshot::Sender<Result<(), BrokerError>>>,
}

impl Frame {
    async fn send(self) {
        let sent = match self.verdict {
            Verdict::Ack => {
                self.acker
                    .ack(BasicAckOptions {
                        multiple: self.multiple,
                    })
                    .await
            }
            Verdict::Reject { requeue } => self.acker.reject(BasicRejectOptions { requeue }).await,
        };
        let tag = self.tag;
        let outcome = sent.map(drop).map_err(|e| {
            let what = if self.verdict == Verdict::Ack { "ack" } else { "reject" };
            BrokerError::Disconnected(format!("{what} of delivery {tag}: {e}"))
        });
        for reply in self.replies {
            // A settler whose caller stopped waiting has nobody to tell.
            let _ = reply.send(outcome.clone());
        }
    }
}

/// The frames that settle `batch`, in the order to send them, with every tag
/// they settle taken out of `unsettled`: one `multiple` ack for the acks that
/// are the oldest unsettled deliveries, if there are two or more, then a
/// frame for each other request.
///
/// A reject can never be below that `multiple` ack's tag: its delivery is
/// unsettled until now and not an ack, so the oldest acks end before it.
fn plan(unsettled: &mut BTreeSet<u64>, batch: Vec<Request>) -> Vec<Frame> {
    let acked: BTreeSet<u64> = batch
        .iter()
        .filter(|r| r.verdict == Verdict::Ack)
        .map(|r| r.tag)
        .collect();
    let oldest = unsettled.iter().take_while(|tag| acked.contains(tag));
    let highest = match oldest.enumerate().last() {
        Some((at, tag)) if at > 0 => Some(*tag),
        _ => None,
    };
    let (mut covered, single): (Vec<Request>, Vec<Request>) = batch
        .into_iter()
        .partition(|r| r.verdict == Verdict::Ack && highest.is_some_and(|highest| r.tag <= highest));
    for request in covered.iter().chain(&single) {
        unsettled.remove(&request.tag);
    }
    let mut frames = Vec::with_capacity(single.len() + 1);
    covered.sort_by_key(|r| r.tag);
    if let Some(top) = covered.pop() {
        let mut replies: Vec<_> = covered.into_iter().map(|r| r.reply).collect();
        replies.push(top.reply);
        frames.push(Frame {
            tag: top.tag,
            acker: top.acker,
            verdict: Verdict::Ack,
            multiple: true,
            replies,
        });
    }
    frames.extend(single.into_iter().map(|r| Frame {
        tag: r.tag,
        acker: r.acker,
        verdict: r.verdict,
        multiple: false,
        replies: vec![r.reply],
    }));
    frames
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(tag: u64, verdict: Verdict) -> Request {
        let delivery = lapin::message::Delivery::mock(tag, "".into(), "q".into(), false, Vec::new());
        Request {
            tag,
            acker: delivery.acker,
            verdict,
            reply: oneshot::channel().0,
        }
    }

    const ACK: Verdict = Verdict::Ack;
    const REJECT: Verdict = Verdict::Reject { requeue: true };

    /// A planned frame: its tag, whether `multiple`, its verdict, and how
    /// many requests it settles.
    type Planned = (u64, bool, Verdict, usize);

    /// `plan` of `batch` with `unsettled` delivered: its frames, and what
    /// stays unsettled.
    fn planned(unsettled: &[u64], batch: &[(u64, Verdict)]) -> (Vec<Planned>, Vec<u64>) {
        let mut unsettled: BTreeSet<u64> = unsettled.iter().copied().collect();
        let batch = batch.iter().map(|&(tag, verdict)| request(tag, verdict)).collect();
        let frames = plan(&mut unsettled, batch)
            .into_iter()
            .map(|f| (f.tag, f.multiple, f.verdict, f.replies.len()))
            .collect();
        (frames, unsettled.into_iter().collect())
    }

    #[test]
    fn acks_of_the_oldest_deliveries_become_one_multiple_ack() {
        let (frames, left) = planned(&[1, 2, 3, 4], &[(2, ACK), (1, ACK), (3, ACK)]);
        assert_eq!(frames, [(3, true, ACK, 3)]);
        assert_eq!(left, [4]);
    }

    #[test]
    fn a_lone_ack_stays_single() {
        let (frames, left) = planned(&[1, 2], &[(1, ACK)]);
        assert_eq!(frames, [(1, false, ACK, 1)]);
        assert_eq!(left, [2]);
    }

    #[test]
    fn acks_behind_an_unsettled_delivery_go_one_by_one() {
        // 1 is still being processed (or was dropped unsettled): a
        // `multiple` ack of 3 would settle it too.
        let (frames, left) = planned(&[1, 2, 3], &[(2, ACK), (3, ACK)]);
        assert_eq!(frames, [(2, false, ACK, 1), (3, false, ACK, 1)]);
        assert_eq!(left, [1]);
    }

    #[test]
    fn a_reject_ends_the_run_and_goes_alone() {
        let (frames, left) = planned(&[1, 2, 3, 4, 5], &[(1, ACK), (2, ACK), (3, REJECT), (4, ACK)]);
        assert_eq!(frames, [(2, true, ACK, 2), (3, false, REJECT, 1), (4, false, ACK, 1)]);
        assert_eq!(left, [5]);
        // A reject first: nothing is covered.
        let (frames, _) = planned(&[1, 2, 3], &[(1, REJECT), (2, ACK), (3, ACK)]);
        assert!(frames.iter().all(|&(_, multiple, _, _)| !multiple), "{frames:?}");
    }

    #[test]
    fn tags_settled_earlier_do_not_break_a_run() {
        // 2 and 4 went out in an earlier batch.
        let (frames, left) = planned(&[1, 3, 5, 6], &[(1, ACK), (3, ACK), (5, ACK)]);
        assert_eq!(frames, [(5, true, ACK, 3)]);
        assert_eq!(left, [6]);
    }
}
