//! Keeping a service consuming: when its consumer stops (connection lost,
//! consumer cancelled), wait with jittered backoff, redeclare its queues and
//! consume again, until shutdown.

use std::sync::Arc;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use tokio::sync::watch;

use crate::broker::{BrokerError, Durability};
use crate::consume::worker::{InFlight, Worker};
use crate::error::Error;

/// Runs a worker until shutdown. When its consumer fails (connection lost,
/// consumer cancelled because the queue was deleted) it waits, redeclares the
/// queues and consumes again: the service never stops on its own, unless
/// the broker refuses to declare them for good (a deprecated feature it does
/// not permit).
pub(crate) async fn keep_consuming(
    worker: Arc<Worker>,
    queues: Vec<(String, Durability)>,
    shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    // Once mode: the relay runs beside the consumer, through reconnections.
    let relay = worker
        .once
        .clone()
        .map(|once| tokio::spawn(super::relay::run(worker.clone(), once, shutdown.clone())));
    let consumed = consume_until_shutdown(worker.clone(), queues, shutdown).await;
    if let Some(once) = &worker.once {
        // What the requests that finished after the shutdown published.
        super::relay::flush_sent(&worker, once).await;
    }
    if let Some(relay) = relay {
        // It ends by itself on shutdown; a service stopped for good stops it.
        if consumed.is_err() {
            relay.abort();
        }
        let _ = relay.await;
    }
    consumed
}

async fn consume_until_shutdown(
    worker: Arc<Worker>,
    queues: Vec<(String, Durability)>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), Error> {
    // Doubling from 250 ms to 15 s, with jitter so that the services of a
    // pipeline do not all reconnect at the same instant after an outage.
    let backoff = || {
        ExponentialBuilder::new()
            .with_min_delay(Duration::from_millis(250))
            .with_max_delay(RECONNECT_MAX_DELAY)
            .with_jitter()
            .without_max_times()
            .build()
    };
    let mut delays = backoff();
    // Outlives each consumer: what a lost consumer left running keeps its
    // slots while the next one consumes.
    let mut in_flight = InFlight::new(worker.settings.concurrency);
    loop {
        let started = std::time::Instant::now();
        let stopped = match worker.clone().run(&mut in_flight, shutdown.clone()).await {
            Ok(()) => return Ok(()),
            Err(stopped) => stopped,
        };
        // A consumer that ran for a while starts over from the shortest delay.
        if started.elapsed() > RECONNECT_MAX_DELAY {
            delays = backoff();
        }
        let mut delay = delays.next().unwrap_or(RECONNECT_MAX_DELAY);
        tracing::error!(service = worker.name, error = %stopped, ?delay, "consumer stopped; resuming");
        loop {
            let stopping = tokio::select! {
                _ = tokio::time::sleep(delay) => false,
                _ = shutdown.wait_for(|stop| *stop) => true,
            };
            if stopping {
                worker.finish_in_flight(&mut in_flight).await;
                return Ok(());
            }
            let mut declared = Ok(());
            for (queue, durability) in &queues {
                declared = worker.broker.declare(queue, *durability).await;
                if declared.is_err() {
                    break;
                }
            }
            match declared {
                Ok(()) => break,
                // The broker refuses a feature it deprecated (RabbitMQ 4:
                // compatible mode's transient queues): trying again cannot
                // help, so stop with what to do rather than loop.
                Err(e @ BrokerError::Deprecated { .. }) => {
                    worker.finish_in_flight(&mut in_flight).await;
                    return Err(e.into());
                }
                Err(e) => {
                    delay = delays.next().unwrap_or(RECONNECT_MAX_DELAY);
                    tracing::warn!(service = worker.name, error = %e, ?delay, "cannot redeclare queues yet");
                }
            }
        }
    }
}

/// The longest wait between two attempts to resume a stopped consumer.
const RECONNECT_MAX_DELAY: Duration = Duration::from_secs(15);
