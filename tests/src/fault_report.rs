//! Counting a fault test's stream and reporting it: the `fault=<name> broker=<version> sent=N
//! delivered=N lost=N duplicates=N dead_lettered=N` line, printed and appended to
//! `$SLINGSHOT_FAULT_REPORT`, as `tests/tests/faults.rs` does.
//!
//! `broker=` is the version the RabbitMQ broker of the test announced
//! (`3.10.8`, `4.0.5`): [`crate::test_broker`] records it when it connects.

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

use slingshot::broker::{Broker, Message};

use crate::process::ServiceProcess;

/// What a stream came to.
#[derive(Debug, Clone, Copy)]
pub struct Outcome {
    pub lost: u64,
    pub duplicates: u64,
    pub dead_lettered: u64,
}

/// The version of the RabbitMQ broker the test connected to last.
static BROKER: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Names the broker the fault lines of this process are measured on.
pub fn set_broker(version: &str) {
    *BROKER.lock().unwrap_or_else(|p| p.into_inner()) = Some(version.to_string());
}

/// The broker's version for the fault lines: `unknown` if no test broker connected.
pub fn broker() -> String {
    BROKER
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .clone()
        .unwrap_or_else(|| "unknown".into())
}

/// Prints `line` and appends it to the fault report, if there is one.
pub fn publish(line: &str) {
    if let Err(e) = try_publish(line) {
        panic!("{e}");
    }
}

fn try_publish(line: &str) -> Result<(), String> {
    println!("{line}");
    let Some(path) = std::env::var_os("SLINGSHOT_FAULT_REPORT").filter(|p| !p.is_empty()) else {
        return Ok(());
    };
    // One write of a whole line to a file opened for appending: lines of
    // tests running at once do not interleave.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| file.write_all(format!("{line}\n").as_bytes()))
        .map_err(|e| format!("cannot append to the fault report {}: {e}", Path::new(&path).display()))
}

/// Held for a fault test's life: if the test fails, the report says so.
pub struct Figures(pub &'static str);

impl Drop for Figures {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let line = format!(
                "fault={} broker={} FAILED: the test panicked (see its output for why)",
                self.0,
                broker()
            );
            // Already unwinding: a second panic would abort the test binary.
            if let Err(e) = try_publish(&line) {
                eprintln!("{e}");
            }
        }
    }
}

/// Counts the stream's outcome, reports the line (on the test's RabbitMQ,
/// [`broker`]), and returns it.
pub fn report(fault: &str, sent: u64, expected: &[u64], counts: &HashMap<u64, u32>, dead_lettered: u64) -> Outcome {
    report_on(&broker(), fault, sent, expected, counts, dead_lettered)
}

/// [`report`] for a stream measured on `broker`: `embedded` for the
/// in-process broker, say.
pub fn report_on(
    broker: &str,
    fault: &str,
    sent: u64,
    expected: &[u64],
    counts: &HashMap<u64, u32>,
    dead_lettered: u64,
) -> Outcome {
    let delivered = expected.iter().filter(|id| counts.contains_key(id)).count() as u64;
    let lost = expected.len() as u64 - delivered;
    let duplicates: u64 = counts.values().map(|&n| u64::from(n.saturating_sub(1))).sum();
    let expected_set: std::collections::HashSet<u64> = expected.iter().copied().collect();
    let stray = counts.keys().filter(|id| !expected_set.contains(id)).count();
    publish(&format!(
        "fault={fault} broker={broker} sent={sent} delivered={delivered} lost={lost} duplicates={duplicates} dead_lettered={dead_lettered}"
    ));
    assert_eq!(stray, 0, "{fault}: IDs arrived that should not have");
    Outcome {
        lost,
        duplicates,
        dead_lettered,
    }
}

/// No ID lost, none dead-lettered, duplicates within `window`.
pub fn assert_nothing_lost(outcome: &Outcome, window: u64) {
    assert_eq!(outcome.lost, 0, "IDs were lost");
    assert_eq!(outcome.dead_lettered, 0, "an outage must not dead-letter good requests");
    assert!(
        outcome.duplicates <= window,
        "{} duplicates exceed the window of {window}",
        outcome.duplicates
    );
}

/// The prefetch window of a fault test's service ([`stream_settings`]).
pub const STREAM_PREFETCH: u64 = 8;

/// The settings of a service a fault test streams through, with retries
/// after `retry_base_ms` growing to `retry_max_ms` and the default shutdown
/// deadline: concurrency 4, prefetch [`STREAM_PREFETCH`] (the most
/// deliveries unacknowledged when something breaks, so the duplicate
/// bound), 1 ms per request (`SLINGSHOT_TEST_DELAY_MS`).
pub fn stream_settings_retrying(retry_base_ms: u64, retry_max_ms: u64) -> Vec<(&'static str, String)> {
    vec![
        ("SLINGSHOT_CONCURRENCY", "4".to_string()),
        ("SLINGSHOT_PREFETCH", STREAM_PREFETCH.to_string()),
        ("SLINGSHOT_RETRY_BASE_MS", retry_base_ms.to_string()),
        ("SLINGSHOT_RETRY_MAX_MS", retry_max_ms.to_string()),
        ("SLINGSHOT_TEST_DELAY_MS", "1".to_string()),
    ]
}

/// The settings of a service a fault test streams through: those of
/// [`stream_settings_retrying`] with quick retries capped at 1 s, and 20 s
/// to shut down.
pub fn stream_settings() -> Vec<(&'static str, String)> {
    let mut settings = stream_settings_retrying(50, 1000);
    settings.push(("SLINGSHOT_SHUTDOWN_SECS", "20".to_string()));
    settings
}

/// Starts `binary NAME` against the sys-map at `sysmap` with the
/// [`stream_settings`], then `env` (which may override them).
pub fn spawn_stream_service(
    binary: &str,
    name: &str,
    sysmap: &str,
    dir: &Path,
    env: &[(&str, String)],
) -> ServiceProcess {
    let mut settings = stream_settings();
    settings.extend(env.iter().cloned());
    ServiceProcess::spawn(binary, name, sysmap, dir, &settings)
}

/// Publishes IDs with confirms, a thousand at a time.
pub async fn send_ids(broker: &dyn Broker, queue: &str, ids: std::ops::Range<u64>) {
    let ids: Vec<u64> = ids.collect();
    for chunk in ids.chunks(1000) {
        futures::future::try_join_all(chunk.iter().map(|&id| broker.publish(queue, Message::id(id))))
            .await
            .expect("send IDs");
    }
}
