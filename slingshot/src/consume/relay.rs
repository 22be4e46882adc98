//! The relay of a once-mode service: publishes what committed stages left in the outbox, keeps the outbox gauges, and forgets inbox rows past their retention.
//!
//! A stage publishes its own outbox rows right after its commit; the relay
//! is for the rows a stage could not publish (it died, or the broker was
//! away). It looks every [`EVERY`], and at once when a duplicate delivery
//! found its stage's rows still there, and takes the rows older than
//! `SLINGSHOT_ONCE_RELAY_GRACE_SECS`, so that it does not race a live
//! stage. Rows go out in `seq` order, one batch per transaction; on
//! PostgreSQL they stay locked while they are published, so the relays of
//! two instances never publish the same row at once.
//!
//! It also deletes the rows stages published themselves: the worker hands
//! their `seq`s over, and [`delete_sent`] deletes what gathered within
//! [`GATHER`] in one statement, rather than one transaction per stage.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::consume::worker::Worker;
use crate::execute::once::{now_ms, OnceExecutor, Publish, BATCH};

/// How often the relay looks at the outbox.
const EVERY: Duration = Duration::from_secs(1);

/// How often it forgets expired inbox rows.
const EXPIRE_EVERY: Duration = Duration::from_secs(60);

/// How long published rows gather before they are deleted together.
const GATHER: Duration = Duration::from_millis(10);

/// Runs until `shutdown`.
pub(crate) async fn run(worker: Arc<Worker>, once: Arc<dyn OnceExecutor>, shutdown: watch::Receiver<bool>) {
    let deleter = tokio::spawn(delete_sent(worker.clone(), once.clone(), shutdown.clone()));
    relay(worker, once, shutdown).await;
    let _ = deleter.await;
}

/// Deletes the rows stages published, in batches, until `shutdown`. What
/// requests finishing after it publish, [`flush_sent`] deletes.
async fn delete_sent(worker: Arc<Worker>, once: Arc<dyn OnceExecutor>, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = worker.sent_wake.notified() => {}
        }
        tokio::time::sleep(GATHER).await;
        flush_sent(&worker, &once).await;
    }
}

/// Deletes the rows stages published since the last batch.
pub(crate) async fn flush_sent(worker: &Worker, once: &Arc<dyn OnceExecutor>) {
    let seqs = std::mem::take(
        &mut *worker
            .sent_rows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    );
    if !seqs.is_empty() {
        if let Err(e) = once.clone().sent(seqs).await {
            tracing::warn!(service = worker.name, error = %e,
                "cannot delete published outbox rows; the relay publishes them again");
        }
    }
}

/// Publishes what stages left, until `shutdown`.
async fn relay(worker: Arc<Worker>, once: Arc<dyn OnceExecutor>, mut shutdown: watch::Receiver<bool>) {
    let grace = i64::try_from(worker.settings.once_relay_grace.as_millis()).unwrap_or(i64::MAX);
    let retention = i64::try_from(worker.settings.once_retention.as_millis()).unwrap_or(i64::MAX);
    let publisher = worker.clone();
    let publish: Publish = Arc::new(move |rows| {
        let worker = publisher.clone();
        Box::pin(async move { worker.publish_rows(rows).await })
    });
    let mut expired_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = tokio::time::sleep(EVERY) => {}
            _ = worker.relay_wake.notified() => {}
        }
        loop {
            match once
                .clone()
                .relay(now_ms().saturating_sub(grace), publish.clone())
                .await
            {
                Ok(0) => break,
                Ok(n) => {
                    worker.stats.relayed.fetch_add(n as u64, Ordering::Relaxed);
                    tracing::info!(
                        service = worker.name,
                        rows = n,
                        "relay: published outbox rows a stage left"
                    );
                    if n < BATCH as usize {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(service = worker.name, error = %e, "relay: cannot publish the outbox yet");
                    break;
                }
            }
        }
        match once.clone().depth().await {
            Ok(depth) => {
                worker
                    .stats
                    .outbox_depth
                    .store(depth.rows.max(0) as u64, Ordering::Relaxed);
                let lag = depth
                    .oldest_ms
                    .map_or(0, |oldest| now_ms().saturating_sub(oldest).max(0));
                worker.stats.outbox_lag_ms.store(lag as u64, Ordering::Relaxed);
            }
            Err(e) => tracing::debug!(service = worker.name, error = %e, "relay: cannot read the outbox's depth"),
        }
        if expired_at.is_none_or(|at| at.elapsed() >= EXPIRE_EVERY) {
            expired_at = Some(Instant::now());
            match once.clone().expire(now_ms().saturating_sub(retention)).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    service = worker.name,
                    rows = n,
                    "forgot inbox rows past their retention"
                ),
                Err(e) => tracing::warn!(service = worker.name, error = %e, "cannot forget expired inbox rows yet"),
            }
        }
    }
}
