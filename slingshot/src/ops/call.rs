//! `NAME call ID...`: call a service (or follow IDs through the pipeline) from the command line, and print what became of each ID.
//!
//! On the embedded default the broker lives in this process, so the
//! services linked into this binary are started here first: `call` then
//! runs the pipeline for those IDs and stops.

use std::process::ExitCode;
use std::time::Duration;

use futures::future::join_all;
use serde_json::{json, Value};

use crate::client::{CallError, CallOptions, Client, PipelineOutcome};
use crate::error::Error;
use crate::execute::service::ServiceDef;
use crate::protocol::{Outcome, Status};
use crate::runtime::{RunningService, Runtime};
use crate::settings::Settings;
use crate::sysmap::BrokerBackend;

/// What `call` was asked.
#[derive(Debug, Clone)]
pub(crate) struct CallArgs {
    /// The IDs, each called concurrently.
    pub ids: Vec<u64>,
    /// The service called.
    pub service: String,
    /// How long to wait for each.
    pub timeout: Duration,
    /// Follow each ID through every stage it reaches.
    pub follow: bool,
    /// Print JSON rather than a table.
    pub json: bool,
    /// A request nobody took in time may still run later.
    pub run_late: bool,
}

/// Parses a duration: `30s`, `500ms`, `2m`, or a number of seconds.
pub(crate) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30s, 500ms, 2m)"))?;
    let seconds = match unit.trim() {
        "" | "s" => value,
        "ms" => value / 1000.0,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        other => return Err(format!("unknown unit {other:?} in {text:?} (ms, s, m or h)")),
    };
    if !(seconds > 0.0 && seconds <= 7.0 * 86_400.0) {
        return Err(format!("{text:?} is out of range (above 0, at most a week)"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Runs `call`: exit 0 when every ID was done, 1 when any failed or timed out.
pub(crate) async fn run(location: &str, settings: Settings, args: CallArgs) -> Result<ExitCode, Error> {
    let runtime = Runtime::connect(location, settings).await?;
    // On the in-process broker nobody else would take the requests.
    let mut started: Vec<RunningService> = Vec::new();
    if runtime.sysmap().backends().broker == BrokerBackend::Memory {
        for def in ServiceDef::all() {
            eprintln!("embedded default: running {} in this process", def.name);
            started.push(runtime.start(def).await?);
        }
    }
    let client = runtime.client();
    let results = join_all(args.ids.iter().map(|&id| one(&client, &args, id))).await;
    runtime.shutdown();
    for service in &mut started {
        service.finished().await?;
    }
    let all_done = results.iter().all(|(_, result)| match result {
        Ok(Answer::Call(outcome)) => outcome.status == Status::Done,
        Ok(Answer::Follow(pipeline)) => pipeline.failed().next().is_none(),
        Err(_) => false,
    });
    if args.json {
        let documents: Vec<Value> = results.iter().map(|(id, result)| to_json(*id, result)).collect();
        let text = serde_json::to_string_pretty(&documents)
            .map_err(|e| Error::Config(format!("cannot write the outcome as JSON: {e}")))?;
        println!("{text}");
    } else {
        for (id, result) in &results {
            print!("{}", show(*id, result));
        }
    }
    Ok(if all_done { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

/// One ID's answer.
enum Answer {
    Call(Outcome),
    Follow(PipelineOutcome),
}

async fn one(client: &Client, args: &CallArgs, id: u64) -> (u64, Result<Answer, CallError>) {
    let result = if args.follow {
        match client.submit(&args.service, id).await {
            Ok(mut submission) => submission.wait_until_done(args.timeout).await.map(Answer::Follow),
            Err(e) => Err(e),
        }
    } else {
        let options = CallOptions {
            timeout: args.timeout,
            run_late: args.run_late,
        };
        client.call_with(&args.service, id, options).await.map(Answer::Call)
    };
    (id, result)
}

fn to_json(id: u64, result: &Result<Answer, CallError>) -> Value {
    match result {
        Ok(Answer::Call(outcome)) => json!(outcome),
        Ok(Answer::Follow(pipeline)) => json!({"id": id, "stages": pipeline.stages, "ended_at": pipeline.ended_at}),
        Err(e) => {
            let mut error = json!({"id": id, "error": e.to_string(), "kind": error_kind(e)});
            if let CallError::Unfinished { done, waiting, .. } = e {
                error["stages"] = json!(done.stages);
                error["ended_at"] = json!(done.ended_at);
                error["waiting"] = json!(waiting);
            }
            error
        }
    }
}

/// A word for each way a call can end without an answer.
fn error_kind(e: &CallError) -> &'static str {
    match e {
        CallError::NeverPickedUp { .. } => "never-picked-up",
        CallError::StillRunning { .. } => "still-running",
        CallError::Unfinished { .. } => "unfinished",
        CallError::RepliesLost { .. } => "replies-lost",
        CallError::Broker(_) => "broker",
        CallError::SysMap(_) => "sys-map",
    }
}

/// The human form: a line per stage, then its routes and objects.
fn show(id: u64, result: &Result<Answer, CallError>) -> String {
    let mut text = String::new();
    match result {
        Ok(Answer::Call(outcome)) => text.push_str(&stage(outcome)),
        Ok(Answer::Follow(pipeline)) => {
            text.push_str(&format!("request {id}: {} stage(s)\n", pipeline.stages.len()));
            for outcome in &pipeline.stages {
                text.push_str(&stage(outcome));
            }
            for end in &pipeline.ended_at {
                text.push_str(&format!(
                    "  ended   {} -> {} (no stage consumes it)\n",
                    end.id, end.queue
                ));
            }
        }
        Err(e) => text.push_str(&format!("request {id}: {} : {e}\n", error_kind(e))),
    }
    text
}

fn stage(outcome: &Outcome) -> String {
    let id = outcome.id.map_or_else(|| "?".to_string(), |id| id.to_string());
    let mut text = format!(
        "{id:>8}  {:<20} {:<7} attempt {}{}\n",
        outcome.service,
        outcome.status.as_str(),
        outcome.attempt,
        if outcome.duplicate { " (already done)" } else { "" }
    );
    for route in &outcome.routes {
        text.push_str(&format!(
            "          route   case {} -> {} id {}\n",
            route.case, route.queue, route.id
        ));
    }
    for unrouted in &outcome.unrouted {
        text.push_str(&format!(
            "          unrouted case {} id {}\n",
            unrouted.case, unrouted.id
        ));
    }
    for object in &outcome.objects {
        text.push_str(&format!(
            "          object  {}/{} {} bytes\n",
            object.bucket, object.key, object.size
        ));
    }
    if let Some(failure) = &outcome.failure {
        text.push_str(&format!(
            "          failed  {} after {} attempt(s), in {}: {}\n",
            failure.kind, failure.attempts, failure.dead_letter_queue, failure.error
        ));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_with_their_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("1.5"), Ok(Duration::from_millis(1500)));
        assert!(parse_duration("0s").is_err());
        assert!(parse_duration("5 fortnights").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("soon").is_err());
    }
}
