//! The consume loop of one service: bounded concurrency, ack after upload and
//! confirmed publishes, retries with backoff, dead letters, crash counting,
//! and handing back on shutdown what it holds.
//!
//! Every delivery is decoded once ([`Request::decode`]) and then takes one of
//! these paths, each ending with the delivery settled or left to the broker:
//!
//! - a suspect of a crash (see [`crate::journal`]): counted and published
//!   again, or dead-lettered as `crash-loop`;
//! - a malformed body: dead-lettered at once, through [`protocol::decide`];
//! - a request: `process`, uploads, confirmed outputs, then the ack; if it
//!   failed, [`protocol::decide`] chooses a retry or the dead-letter queue.
//!
//! In once mode (see [`crate::execute::once`]) the outputs come from the
//! stage's committed outbox rows, which are deleted once confirmed; a
//! message already done is acknowledged without running `process`.
//!
//! A publish that fails after `process` succeeded is retried with backoff
//! (redeclaring a deleted queue) while the delivery stays unacknowledged:
//! `process` does not run again because the broker refused a publish.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::{join_all, try_join_all};
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;

use crate::base::chain::error_chain;
use crate::base::failure::{Failure, FailureKind};
use crate::base::fault;
pub(crate) use crate::base::stats::Stats;
use crate::broker::{Acker, Broker, BrokerError, Consumer, Delivery, Durability, Message, QUORUM_DELIVERY_LIMIT};
use crate::consume::routing::RouteTable;
use crate::execute::contract::{Event, RequestContext};
use crate::execute::journal::Journal;
use crate::execute::once::{NewOutboxRow, OnceExecutor, OnceJob, OutboxRow, Stage};
use crate::execute::{Executed, Executor, Job};
use crate::protocol::{
    self, dead_letter_queue, Decision, FailureRecord, FailureReport, ObjectWritten, Outcome, ReplyTo, Request, Room,
    Status, TraceParent, KEY_HEADER,
};
use crate::settings::Settings;
use crate::telemetry::spans;

/// How long a `process` call may run before a warning says that RabbitMQ's
/// consumer timeout (30 minutes by default) is near.
pub(crate) const CONSUMER_TIMEOUT_WARNING: Duration = Duration::from_secs(20 * 60);

/// A service's consumer and everything it needs.
pub(crate) struct Worker {
    pub name: &'static str,
    pub inbound: String,
    /// The topic exchange its events go to, if the sys-map names one.
    pub events: Option<String>,
    pub executor: Arc<dyn Executor>,
    pub broker: Arc<dyn Broker>,
    pub routes: Arc<RouteTable>,
    pub settings: Settings,
    pub stats: Arc<Stats>,
    /// Where `process` calls in progress are recorded, and the suspects
    /// earlier instances left; `None` counts no crashes.
    pub journal: Option<Arc<Journal>>,
    /// Held shared by every request, and alone by a request that took the
    /// process down before: if it does again, it is the only one in the
    /// journal, so no other message is counted as a crash.
    pub alone: tokio::sync::RwLock<()>,
    /// Once mode: the service's outbox.
    pub once: Option<Arc<dyn OnceExecutor>>,
    /// Wakes the relay: a duplicate found its stage's outputs unpublished.
    pub relay_wake: tokio::sync::Notify,
    /// Once mode: outbox rows published and confirmed, for the relay to
    /// delete in one statement.
    pub sent_rows: std::sync::Mutex<Vec<i64>>,
    /// Wakes the relay's deleter: `sent_rows` has rows.
    pub sent_wake: tokio::sync::Notify,
}

/// Why a worker stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stopped {
    #[error("the broker cancelled the consumer of {0:?} (queue deleted?)")]
    Cancelled(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// The requests a worker is handling, across the consumers it runs one
/// after another: a slot each (at most `concurrency`), and their tasks.
pub(crate) struct InFlight {
    slots: Arc<Semaphore>,
    tasks: JoinSet<()>,
    /// The tasks of the current consumer's deliveries.
    current: HashSet<tokio::task::Id>,
    /// Consumers that stopped while requests they delivered were running,
    /// with those requests' tasks: each is kept until its own are done, so
    /// that a channel still open (a cancelled consumer's) can settle them
    /// rather than return them to the queue.
    retired: Vec<(Box<dyn Consumer>, HashSet<tokio::task::Id>)>,
}

impl InFlight {
    pub(crate) fn new(concurrency: usize) -> InFlight {
        InFlight {
            slots: Arc::new(Semaphore::new(concurrency)),
            tasks: JoinSet::new(),
            current: HashSet::new(),
            retired: Vec::new(),
        }
    }

    /// Runs `task`, a delivery of the current consumer.
    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        let id = self.tasks.spawn(task).id();
        self.current.insert(id);
    }

    /// Keeps `consumer`, which stopped, while the requests it delivered run.
    fn retire(&mut self, consumer: Box<dyn Consumer>) {
        let tasks = std::mem::take(&mut self.current);
        if !tasks.is_empty() {
            self.retired.push((consumer, tasks));
        }
    }

    /// Forgets the requests that are done, and each retired consumer once
    /// the requests it delivered are.
    fn reap(&mut self) {
        while let Some(done) = self.tasks.try_join_next_with_id() {
            let id = match done {
                Ok((id, ())) => id,
                Err(e) => e.id(),
            };
            self.current.remove(&id);
            for (_, tasks) in &mut self.retired {
                tasks.remove(&id);
            }
        }
        self.retired.retain(|(_, tasks)| !tasks.is_empty());
    }

    fn len(&self) -> usize {
        self.tasks.len()
    }

    fn is_empty(&self) -> bool {
        self.tasks.is_empty()
    }
}

/// How handling one delivery ended.
enum Handled {
    /// Settled: acknowledged, retried or dead-lettered.
    Settled,
    /// Left to the broker, which delivers it again: its channel closed.
    Left,
}

impl Worker {
    /// Consumes until `shutdown` turns true (then hands back what it holds
    /// unstarted and finishes the requests in flight within the deadline)
    /// or the consumer fails. The requests in flight belong to `in_flight`,
    /// which outlives one consumer: when a consumer fails, its requests go
    /// on in the background holding their slots (their deliveries return to
    /// the queue with the lost channel), and the next consumer starts at
    /// once with the slots left, rather than waiting for them.
    pub(crate) async fn run(
        self: Arc<Self>,
        in_flight: &mut InFlight,
        mut shutdown: watch::Receiver<bool>,
    ) -> Result<(), Stopped> {
        let mut consumer = self.broker.consume(&self.inbound, self.settings.prefetch).await?;
        self.stats.consuming.store(true, Ordering::Relaxed);
        self.stats
            .concurrency
            .store(self.settings.concurrency, Ordering::Relaxed);
        tracing::info!(
            service = self.name,
            queue = %self.inbound,
            concurrency = self.settings.concurrency,
            prefetch = self.settings.prefetch,
            still_running = in_flight.len(),
            "consuming"
        );
        let result = loop {
            in_flight.reap();
            let slot = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
                slot = in_flight.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_) => break Ok(()),
                },
            };
            let next = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
                next = consumer.next() => next,
            };
            match next {
                None => break Err(Stopped::Cancelled(self.inbound.clone())),
                Some(Err(e)) => break Err(e.into()),
                Some(Ok(delivery)) => {
                    self.stats.consumed.fetch_add(1, Ordering::Relaxed);
                    let request = Request::decode(&delivery.message);
                    let (span, context) = spans::request(
                        self.name,
                        &self.inbound,
                        self.broker.messaging_system(),
                        &request,
                        delivery.message.body.len(),
                        delivery.redelivered,
                    );
                    // The trace ID the request is known by: its legacy trace
                    // ID if it carries one, else its W3C trace ID. Outputs
                    // carry the legacy header on only if it came with one,
                    // or if every output is to have it.
                    let known_as = request.legacy_trace.clone().unwrap_or_else(|| context.trace_id_hex());
                    let legacy =
                        (request.legacy_trace.is_some() || self.settings.legacy_trace_header).then(|| known_as.clone());
                    let traced = Traced {
                        context,
                        known_as,
                        legacy,
                    };
                    in_flight.spawn(
                        self.clone()
                            .handle(delivery, request, traced, slot, shutdown.clone())
                            .instrument(span),
                    );
                }
            }
        };
        // Not ready from here on: stopping, or about to reconnect.
        self.stats.consuming.store(false, Ordering::Relaxed);
        match result {
            Ok(()) => {
                self.give_back(consumer.as_mut()).await;
                // The requests settle on this consumer's channel: it stays
                // open until they are done or the deadline passed.
                self.finish_in_flight(in_flight).await;
            }
            Err(_) => {
                in_flight.reap();
                if !in_flight.current.is_empty() {
                    tracing::info!(
                        service = self.name,
                        in_flight = in_flight.current.len(),
                        "the consumer stopped with requests in flight: they finish in the background, settled \
                         if its channel is still open, else delivered again"
                    );
                    in_flight.retire(consumer);
                    return result;
                }
            }
        }
        // Dropping the consumer returns every unsettled delivery to the queue.
        drop(consumer);
        result
    }

    /// Waits for the requests in flight, up to the shutdown deadline; gives
    /// up (and counts) those still running then: their deliveries return to
    /// the queue.
    pub(crate) async fn finish_in_flight(&self, in_flight: &mut InFlight) {
        let deadline = self.settings.shutdown_deadline;
        in_flight.reap();
        if in_flight.is_empty() {
            return;
        }
        tracing::info!(
            service = self.name,
            in_flight = in_flight.len(),
            ?deadline,
            "finishing in-flight requests"
        );
        let tasks = &mut in_flight.tasks;
        let finished = tokio::time::timeout(deadline, async { while tasks.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            let left = in_flight.len();
            self.stats.abandoned.fetch_add(left as u64, Ordering::Relaxed);
            tracing::warn!(
                service = self.name,
                left,
                "shutdown deadline passed; unfinished requests return to the queue"
            );
            in_flight.tasks.abort_all();
        }
        in_flight.current.clear();
        in_flight.retired.clear();
    }

    /// Stops the consumer and hands back every delivery it received but no
    /// request took: each is published again (confirmed) and acknowledged,
    /// rather than returned with a nack, which RabbitMQ 4.0 to 4.2 count
    /// towards a quorum queue's delivery limit. What cannot be published
    /// again returns when the channel closes.
    async fn give_back(&self, consumer: &mut dyn Consumer) {
        if let Err(e) = consumer.cancel().await {
            tracing::warn!(service = self.name, error = %e, "cannot cancel the consumer; unstarted deliveries return when its channel closes");
            return;
        }
        let mut held = Vec::new();
        while let Some(Ok(delivery)) = consumer.next().await {
            held.push(delivery);
        }
        if held.is_empty() {
            return;
        }
        let count = held.len();
        let limit = self.broker.frame_max();
        let returned = join_all(held.into_iter().map(|delivery| async move {
            let crashes = Request::decode(&delivery.message).counts.crashes;
            let Ok(message) = protocol::fit(protocol::returned(&delivery.message, crashes), limit, Room::CutError)
            else {
                return false;
            };
            match self.broker.publish(&self.inbound, message).await {
                Ok(()) => delivery.acker.ack().await.is_ok(),
                Err(_) => false,
            }
        }))
        .await;
        let republished = returned.iter().filter(|ok| **ok).count();
        tracing::info!(
            service = self.name,
            republished,
            left = count - republished,
            "handed back unstarted deliveries"
        );
    }

    async fn handle(
        self: Arc<Self>,
        delivery: Delivery,
        request: Request,
        traced: Traced,
        slot: OwnedSemaphorePermit,
        shutdown: watch::Receiver<bool>,
    ) {
        if !request.ignored.is_empty() {
            let ignored: Vec<String> = request.ignored.iter().map(ToString::to_string).collect();
            tracing::warn!(service = self.name, request = %request.shown, ignored = ?ignored, "optional headers over their size limit are ignored and not passed on");
        }
        // Its caller gave up: running it now would be work nobody waits for.
        if protocol::expired(&delivery.message, protocol::unix_ms()) {
            drop(slot);
            self.stats.expired.fetch_add(1, Ordering::Relaxed);
            tracing::info!(service = self.name, request = %request.shown,
                "the caller's deadline passed before it was taken; acknowledged without running process");
            if let Err(e) = delivery.acker.ack().await {
                tracing::warn!(service = self.name, error = %e, "cannot acknowledge an expired request; it returns to the queue");
            }
            return;
        }
        // An earlier instance died while processing this very message.
        if delivery.redelivered
            && self
                .journal
                .as_ref()
                .is_some_and(|j| j.take_suspect(request.fingerprint))
        {
            drop(slot);
            // Shared until the original is settled. Its copy, which counts
            // the crash, runs alone: had it started before the broker got
            // the original's ack, a second crash would bring both back, and
            // the original would run again uncounted.
            let _settling = self.alone.read().await;
            return self.crashed(delivery, &request, &traced).await;
        }
        let id = match &request.id {
            Ok(id) => *id,
            Err(malformed) => {
                drop(slot);
                let failure = Failure::new(FailureKind::Malformed, malformed.reason.clone());
                return self.failed(delivery, &request, &traced, failure, shutdown).await;
            }
        };
        // Quorum queues count the deliveries they took back (lost
        // connections, crashes, nacks); past the delivery limit the broker
        // dead-letters the message itself.
        if i64::from(request.delivery_count) * 2 >= QUORUM_DELIVERY_LIMIT {
            tracing::warn!(
                service = self.name,
                request = id,
                delivery_count = request.delivery_count,
                limit = QUORUM_DELIVERY_LIMIT,
                "delivered again and again without being settled; the broker dead-letters it at the limit"
            );
        }
        let context = RequestContext::new(
            self.name,
            id,
            request.counts.attempt,
            delivery.redelivered || request.delivery_count > 0,
            traced.known_as.clone(),
        );
        let emitted = context.events.clone();
        let job = Job {
            context,
            fingerprint: request.fingerprint,
            once: self.once_job(id, &request, &traced, &delivery.message),
        };
        let callers = protocol::reply_addresses(&delivery.message);
        // Sent while `process` runs; awaited before any later answer, so a
        // caller never hears `started` after `done`.
        let starting = (!callers.is_empty()).then(|| {
            let started = Outcome::new(
                self.name,
                &self.inbound,
                Some(id),
                Status::Started,
                request.counts.attempt,
            );
            let (worker, callers) = (self.clone(), callers.clone());
            tokio::spawn(async move { worker.answer(&callers, &started).await }.in_current_span())
        });
        let (_shared, _alone) = if request.counts.crashes > 0 {
            (None, Some(self.alone.write().await))
        } else {
            (Some(self.alone.read().await), None)
        };
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let call = self.stats.begin_call();
        let executing = self.executor.clone().execute(job);
        tokio::pin!(executing);
        let executed = tokio::select! {
            executed = &mut executing => executed,
            _ = tokio::time::sleep(CONSUMER_TIMEOUT_WARNING) => {
                tracing::warn!(
                    service = self.name,
                    request = id,
                    running = ?CONSUMER_TIMEOUT_WARNING,
                    "process is still running: RabbitMQ closes the channel of a consumer that holds a delivery \
                     past its consumer timeout (30 minutes by default), and the request then runs again; \
                     raise `consumer_timeout` in rabbitmq.conf for requests this long"
                );
                executing.await
            }
        };
        drop((call, _shared, _alone));
        if let Some(starting) = starting {
            let _ = starting.await;
        }
        // The slot bounds concurrent `process` calls and uploads; waiting for
        // the broker's confirms is not processing, so the next request may
        // start meanwhile. Unacknowledged messages stay bounded by prefetch.
        drop(slot);
        let (routed, executed) = match executed {
            Ok(mut executed) => {
                executed.events = emitted.take();
                let routed = self
                    .route(
                        id,
                        &request,
                        &delivery.message,
                        &traced,
                        &executed,
                        delivery.acker.as_ref(),
                    )
                    .await;
                (routed, Some(executed))
            }
            Err(failure) => (Err(failure), None),
        };
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        match routed {
            Ok(Handled::Settled) => match delivery.acker.ack().await {
                Ok(()) => {
                    self.stats.processed.fetch_add(1, Ordering::Relaxed);
                    if let (false, Some(executed)) = (callers.is_empty(), executed) {
                        let done = self.done(id, &request, &executed);
                        self.answer(&callers, &done).await;
                    }
                }
                // The broker will redeliver it; the outputs were sent, so downstream may see them twice.
                Err(e) => {
                    tracing::warn!(service = self.name, request = id, error = %e, "ack failed; the request will be redelivered")
                }
            },
            Ok(Handled::Left) => {}
            Err(failure) => self.failed(delivery, &request, &traced, failure, shutdown).await,
        }
    }

    /// A message an earlier instance was processing when it died: the crash
    /// is counted in the message, which is published again, or dead-lettered
    /// once it has taken the process down `SLINGSHOT_MAX_CRASHES` times.
    async fn crashed(&self, delivery: Delivery, request: &Request, traced: &Traced) {
        let crashes = request.counts.crashes.saturating_add(1);
        let max = self.settings.max_crashes;
        spans::failed(&tracing::Span::current(), "the process died while processing it");
        if crashes >= max {
            let failure = Failure::new(
                FailureKind::CrashLoop,
                format!(
                    "the process died {crashes} times while processing this message \
                     (SLINGSHOT_MAX_CRASHES={max}): an abort, the OOM killer or a crash in native code"
                ),
            );
            tracing::error!(service = self.name, request = %request.shown, crashes, "{}", failure.message);
            return self
                .dead_letter(delivery, request, traced, failure, request.counts.attempt)
                .await;
        }
        tracing::warn!(
            service = self.name,
            request = %request.shown,
            crashes,
            max,
            "the process died while processing this message; counting the crash and trying it again"
        );
        let message = protocol::returned(&delivery.message, crashes);
        let inbound = self.inbound.clone();
        if let Err(too_large) = self.forward(delivery, traced, &inbound, message, Room::CutError).await {
            tracing::error!(service = self.name, request = %request.shown, error = %too_large, "cannot count the crash in the message");
        }
    }

    /// Retries `delivery` or dead-letters it, as [`protocol::decide`] says.
    async fn failed(
        &self,
        delivery: Delivery,
        request: &Request,
        traced: &Traced,
        failure: Failure,
        mut shutdown: watch::Receiver<bool>,
    ) {
        // The delivery failed, whatever happens next.
        let span = tracing::Span::current();
        spans::failed(&span, &failure.to_string());
        span.record("error.type", failure.kind.as_str());
        match protocol::decide(&failure, &request.counts, &self.settings) {
            Decision::Retry { delay, next } => {
                tracing::warn!(
                    service = self.name,
                    request = %request.shown,
                    attempt = request.counts.attempt,
                    transient = failure.transient,
                    error = %failure,
                    ?delay,
                    "failed; will retry"
                );
                tokio::select! {
                    _ = tokio::time::sleep(delay) => {}
                    // Shutting down: hand the retry back to the queue now.
                    _ = shutdown.wait_for(|stop| *stop) => {}
                }
                let message = protocol::retry(&delivery.message, &next, &failure);
                let inbound = self.inbound.clone();
                // A retry must carry the producer's headers whole; if they
                // leave no room for the failure record, it cannot be retried.
                let (delivery, too_large) = match self
                    .try_forward(delivery, traced, &inbound, message, Room::CutError)
                    .await
                {
                    Ok(settled) => {
                        if settled {
                            self.stats.retried.fetch_add(1, Ordering::Relaxed);
                        }
                        return;
                    }
                    Err(back) => back,
                };
                let oversized = Failure::new(
                    FailureKind::Oversized,
                    format!("cannot be retried: {too_large}; it failed with {failure}"),
                );
                self.dead_letter(delivery, request, traced, oversized, request.counts.attempt)
                    .await;
            }
            Decision::DeadLetter { attempts } => {
                tracing::error!(service = self.name, request = %request.shown, attempts, error = %failure, "giving up: dead-lettering");
                self.dead_letter(delivery, request, traced, failure, attempts).await;
            }
        }
    }

    async fn dead_letter(
        &self,
        delivery: Delivery,
        request: &Request,
        traced: &Traced,
        failure: Failure,
        attempts: u32,
    ) {
        let record = FailureRecord::new(&failure, attempts, self.name, &self.inbound, SystemTime::now());
        let message = record.encode(&delivery.message);
        let callers = protocol::reply_addresses(&delivery.message);
        let dead_letters = dead_letter_queue(&self.inbound);
        tracing::warn!(service = self.name, request = %request.shown, kind = failure.kind.as_str(), error = %failure.message, attempts, "dead-lettered");
        match self
            .forward(delivery, traced, &dead_letters, message, Room::DropHeaders)
            .await
        {
            Ok(true) => {
                self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
                if !callers.is_empty() {
                    let mut failed = Outcome::new(
                        self.name,
                        &self.inbound,
                        request.id.as_ref().ok().copied(),
                        Status::Failed,
                        request.counts.attempt,
                    );
                    failed.failure = Some(FailureReport::new(&failure, attempts, &dead_letters));
                    self.answer(&callers, &failed).await;
                }
            }
            Ok(false) => {}
            Err(too_large) => tracing::error!(
                service = self.name,
                request = %request.shown,
                error = %too_large,
                "cannot dead-letter it even without its headers; it stays unacknowledged and returns to the \
                 queue when this consumer stops"
            ),
        }
    }

    /// [`Worker::try_forward`], giving up the delivery if `message` is too large.
    async fn forward(
        &self,
        delivery: Delivery,
        traced: &Traced,
        queue: &str,
        message: Message,
        room: Room,
    ) -> Result<bool, protocol::TooLarge> {
        self.try_forward(delivery, traced, queue, message, room)
            .await
            .map_err(|(_, too_large)| too_large)
    }

    /// Publishes `message` to `queue` under a PRODUCER span whose context it
    /// carries, fitted to the frame as `room` allows, then acks `delivery`.
    /// `Ok(true)` once settled; `Ok(false)` if the delivery's channel closed
    /// meanwhile (the broker delivers it again, so a copy would be a
    /// duplicate); the delivery back with why if the message cannot fit.
    async fn try_forward(
        &self,
        delivery: Delivery,
        traced: &Traced,
        queue: &str,
        mut message: Message,
        room: Room,
    ) -> Result<bool, (Delivery, protocol::TooLarge)> {
        let (span, context) = spans::publish(self.broker.messaging_system(), queue, &traced.context);
        context.stamp(&mut message, traced.legacy.as_deref());
        let message = match protocol::fit(message, self.broker.frame_max(), room) {
            Ok(message) => message,
            Err(too_large) => return Err((delivery, too_large)),
        };
        let published = self
            .publish_confirmed(queue, message, delivery.acker.as_ref())
            .instrument(span.clone())
            .await;
        match published {
            Ok(Handled::Settled) => {
                if let Err(e) = delivery.acker.ack().await {
                    tracing::warn!(service = self.name, error = %e, "ack after forwarding failed; the broker will redeliver");
                }
                Ok(true)
            }
            Ok(Handled::Left) => Ok(false),
            Err(e) => {
                // Only a message the broker can never take ends here.
                spans::failed(&span, &e.to_string());
                tracing::error!(service = self.name, queue, error = %e, "cannot forward; the delivery stays unacknowledged and returns to the queue when this consumer stops");
                Ok(false)
            }
        }
    }

    /// What a once-mode stage needs of this delivery; `None` in plain mode.
    fn once_job(&self, id: u64, request: &Request, traced: &Traced, message: &Message) -> Option<OnceJob> {
        self.once.as_ref()?;
        let key = message
            .headers
            .get(KEY_HEADER)
            .and_then(crate::broker::HeaderValue::as_str)
            .map_or_else(|| id.to_string(), str::to_string);
        let (routes, inbound) = (self.routes.clone(), request.message_id.clone());
        Some(OnceJob {
            message_id: request.message_id.clone(),
            key,
            plan: Arc::new(move |outputs| routes.plan(outputs).messages(&inbound)),
            traceparent: Some(traced.context.header_value()),
            legacy_trace: traced.legacy.clone(),
        })
    }

    /// Routes the outputs: publishes every message concurrently, each until
    /// confirmed; in once mode the committed outbox rows, deleted once
    /// confirmed. A duplicate has nothing to route.
    async fn route(
        &self,
        request: u64,
        inbound: &Request,
        received: &Message,
        traced: &Traced,
        executed: &Executed,
        acker: &dyn Acker,
    ) -> Result<Handled, Failure> {
        let plan = self.routes.plan(&executed.outputs);
        let sends = match &executed.stage {
            Stage::Duplicate { pending } => {
                self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
                tracing::info!(service = self.name, request, message_id = %inbound.message_id, outputs_pending = pending,
                    "already done (once mode); acknowledged without running process");
                if *pending {
                    self.relay_wake.notify_one();
                }
                return Ok(Handled::Settled);
            }
            Stage::Committed(rows) => rows
                .iter()
                .map(|row| NewOutboxRow {
                    message_id: row.message_id.clone(),
                    queue: row.queue.clone(),
                    request: row.request_id(),
                })
                .collect(),
            Stage::Plain => plan.messages(&inbound.message_id),
        };
        for (id, case) in &plan.unrouted {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            self.stats.count_route(case, "");
            tracing::warn!(service = self.name, request, output = id, %case, "no route for this case; output dropped");
        }
        let publishes = sends.iter().map(|send| {
            let queue = send.queue.as_str();
            let (span, context) = spans::publish(self.broker.messaging_system(), queue, &traced.context);
            let mut message = Message::id(send.request);
            message.properties.message_id = Some(send.message_id.clone());
            context.stamp(&mut message, traced.legacy.as_deref());
            protocol::carry_follow(received, &mut message);
            async move {
                let sent = std::time::Instant::now();
                let confirmed = self.publish_confirmed(queue, message, acker).await;
                self.stats.confirm_latency.observe(sent.elapsed());
                if let Err(e) = &confirmed {
                    spans::failed(&tracing::Span::current(), &e.to_string());
                }
                confirmed
            }
            .instrument(span)
        });
        let outcomes = try_join_all(publishes)
            .await
            .map_err(|e| Failure::new(FailureKind::Broker, error_chain(&e)))?;
        if outcomes.iter().any(|o| matches!(o, Handled::Left)) {
            return Ok(Handled::Left);
        }
        if let Handled::Left = self
            .publish_events(request, inbound, traced, &executed.events, acker)
            .await?
        {
            return Ok(Handled::Left);
        }
        if let Stage::Committed(rows) = &executed.stage {
            fault::point("once-after-publish");
            if !rows.is_empty() {
                // Deleted by the relay's next batch, a few milliseconds on:
                // one statement for many stages rather than a commit each.
                // Left in the outbox by a crash, they are published again,
                // with the same message IDs.
                let mut sent = self.sent_rows.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                sent.extend(rows.iter().map(|row| row.seq));
                drop(sent);
                self.sent_wake.notify_one();
            }
        }
        self.stats.published.fetch_add(sends.len() as u64, Ordering::Relaxed);
        for (id, case) in &executed.outputs {
            if let Some(queues) = self.routes.queues(case) {
                for queue in queues {
                    self.stats.count_route(case, queue);
                }
                tracing::info!(service = self.name, request, output = id, %case, queues = ?queues, "routed");
            }
        }
        for object in &executed.written {
            self.stats.objects_written.fetch_add(1, Ordering::Relaxed);
            self.stats.bytes_written.fetch_add(object.size, Ordering::Relaxed);
            tracing::info!(service = self.name, request, bucket = %object.bucket, key = %object.key, bytes = object.size, "object written");
        }
        Ok(Handled::Settled)
    }

    /// What a request that was processed tells its callers.
    fn done(&self, id: u64, request: &Request, executed: &Executed) -> Outcome {
        let mut done = Outcome::new(self.name, &self.inbound, Some(id), Status::Done, request.counts.attempt);
        if matches!(executed.stage, Stage::Duplicate { .. }) {
            done.duplicate = true;
            return done;
        }
        done = done.routed(&executed.outputs, |case| self.routes.queues(case));
        done.objects = executed
            .written
            .iter()
            .map(|object| ObjectWritten {
                bucket: object.bucket.clone(),
                key: object.key.clone(),
                size: object.size,
            })
            .collect();
        if self.events.is_some() {
            done.events = executed
                .events
                .iter()
                .map(|event| protocol::event_key(self.name, &event.name))
                .collect();
        }
        done
    }

    /// Sends `outcome` to each caller, once: a caller whose reply queue is
    /// gone misses it, and nothing is retried.
    async fn answer(&self, callers: &[ReplyTo], outcome: &Outcome) {
        for caller in callers {
            match self.broker.publish(&caller.queue, outcome.to_message(caller)).await {
                Ok(()) => {
                    self.stats.replies.fetch_add(1, Ordering::Relaxed);
                }
                Err(e) => {
                    self.stats.replies_lost.fetch_add(1, Ordering::Relaxed);
                    tracing::info!(service = self.name, reply_to = %caller.queue, status = outcome.status.as_str(), error = %e,
                        "cannot reply; the caller is gone or its reply queue is");
                }
            }
        }
    }

    /// Publishes outbox rows a stage left, one after another in their order,
    /// each once; returns the `seq` of those the broker confirmed. Used by
    /// the relay: a row not confirmed stays for its next round.
    pub(crate) async fn publish_rows(&self, rows: Vec<OutboxRow>) -> Vec<i64> {
        let mut confirmed = Vec::with_capacity(rows.len());
        for row in rows {
            let mut message = Message::id(row.request_id());
            message.properties.message_id = Some(row.message_id.clone());
            // The stage's trace continues, as it would have on the live path.
            let span = match row.traceparent.as_deref().and_then(|tp| TraceParent::parse(tp, None)) {
                Some(parent) => {
                    let (span, context) = spans::publish(self.broker.messaging_system(), &row.queue, &parent);
                    context.stamp(&mut message, row.legacy_trace.as_deref());
                    span
                }
                None => tracing::Span::none(),
            };
            match self.broker.publish(&row.queue, message).instrument(span).await {
                Ok(()) => {
                    confirmed.push(row.seq);
                    fault::point("once-mid-relay");
                }
                Err(e) => {
                    tracing::warn!(service = self.name, queue = %row.queue, error = %e,
                        "relay: publish not confirmed; the row stays in the outbox");
                    if matches!(e, BrokerError::Returned { .. }) {
                        let durability = self.settings.queue_mode.durability();
                        if let Err(e) = self.broker.declare(&row.queue, durability).await {
                            tracing::warn!(service = self.name, queue = %row.queue, error = %e, "cannot declare the queue again yet");
                        }
                    }
                    // The rest waits for the next round, in order.
                    break;
                }
            }
        }
        confirmed
    }

    /// Publishes `message` to `queue` until the broker confirms it; see
    /// [`Worker::publish_confirmed_to`].
    async fn publish_confirmed(
        &self,
        queue: &str,
        message: Message,
        acker: &dyn Acker,
    ) -> Result<Handled, BrokerError> {
        self.publish_confirmed_to(Target::Queue(queue), message, acker).await
    }

    /// Publishes `message` to `target` until the broker confirms it, with
    /// backoff between tries, redeclaring a queue if the broker returned
    /// the message (the queue was deleted). Gives up, `Ok(Handled::Left)`,
    /// once the delivery it belongs to can no longer be settled: the broker
    /// delivers that again, and publishing more would only duplicate.
    /// `Err` only for a message the broker can never take.
    async fn publish_confirmed_to(
        &self,
        target: Target<'_>,
        message: Message,
        acker: &dyn Acker,
    ) -> Result<Handled, BrokerError> {
        let mut tries = 0u32;
        let shown = target.to_string();
        loop {
            let published = match target {
                Target::Queue(queue) => self.broker.publish(queue, message.clone()).await,
                Target::Exchange(exchange, key) => {
                    self.broker.publish_to_exchange(exchange, key, message.clone()).await
                }
            };
            let error = match published {
                Ok(()) => return Ok(Handled::Settled),
                Err(e) if !e.is_transient() => return Err(e),
                Err(e) => e,
            };
            tries = tries.saturating_add(1);
            if !acker.is_live() {
                tracing::warn!(service = self.name, target = %shown, error = %error, "publish failed and the delivery's channel closed; the broker delivers it again");
                return Ok(Handled::Left);
            }
            match (target, &error) {
                (Target::Queue(queue), BrokerError::Returned { .. }) => {
                    let durability = if queue == dead_letter_queue(&self.inbound) {
                        Durability::Durable
                    } else {
                        self.settings.queue_mode.durability()
                    };
                    match self.broker.declare(queue, durability).await {
                        Ok(()) => tracing::warn!(service = self.name, queue, "the queue was gone; declared it again"),
                        Err(e) => {
                            tracing::warn!(service = self.name, queue, error = %e, "cannot declare the queue again yet")
                        }
                    }
                }
                (Target::Exchange(exchange, _), _) => {
                    // Deleted meanwhile? Declaring it again is harmless.
                    if let Err(e) = self.broker.declare_topic(exchange).await {
                        tracing::warn!(service = self.name, exchange, error = %e, "cannot declare the exchange again yet");
                    }
                }
                _ => {}
            }
            let delay = self.settings.backoff(tries);
            tracing::warn!(service = self.name, target = %shown, tries, error = %error, ?delay, "publish not confirmed; trying again");
            tokio::time::sleep(delay).await;
        }
    }

    /// Publishes the events `process` emitted, each until confirmed, to the
    /// service's topic exchange; drops them with a warning if the sys-map
    /// names none.
    async fn publish_events(
        &self,
        request: u64,
        inbound: &Request,
        traced: &Traced,
        events: &[Event],
        acker: &dyn Acker,
    ) -> Result<Handled, Failure> {
        if events.is_empty() {
            return Ok(Handled::Settled);
        }
        let Some(exchange) = self.events.as_deref() else {
            self.stats
                .events_dropped
                .fetch_add(events.len() as u64, Ordering::Relaxed);
            let names: Vec<&str> = events.iter().map(|e| e.name.as_str()).collect();
            tracing::warn!(service = self.name, request, events = ?names,
                "events emitted, but the sys-map names no `events` exchange for this service: dropped");
            return Ok(Handled::Settled);
        };
        for (nth, event) in events.iter().enumerate() {
            let key = protocol::event_key(self.name, &event.name);
            let nth = u32::try_from(nth).unwrap_or(u32::MAX);
            let mut message = protocol::event_message(
                exchange,
                self.name,
                request,
                &event.name,
                &event.data,
                &inbound.message_id,
                nth,
            );
            let (span, context) = spans::publish(self.broker.messaging_system(), &key, &traced.context);
            context.stamp(&mut message, traced.legacy.as_deref());
            let published = self
                .publish_confirmed_to(Target::Exchange(exchange, &key), message, acker)
                .instrument(span)
                .await
                .map_err(|e| Failure::new(FailureKind::Broker, error_chain(&e)))?;
            if let Handled::Left = published {
                return Ok(Handled::Left);
            }
            self.stats.events_published.fetch_add(1, Ordering::Relaxed);
            tracing::info!(service = self.name, request, event = %event.name, exchange, routing_key = %key, "event published");
        }
        Ok(Handled::Settled)
    }
}

/// Where a message is published.
#[derive(Debug, Clone, Copy)]
enum Target<'a> {
    /// A queue, through the default exchange.
    Queue(&'a str),
    /// A topic exchange, with a routing key.
    Exchange(&'a str, &'a str),
}

impl std::fmt::Display for Target<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Queue(queue) => write!(f, "{queue}"),
            Target::Exchange(exchange, key) => write!(f, "{exchange}/{key}"),
        }
    }
}

/// The trace a delivery continues: the W3C context of its CONSUMER span, the
/// trace ID the request is known by, and the legacy trace ID its outputs
/// carry, if they carry one.
#[derive(Debug, Clone)]
struct Traced {
    context: TraceParent,
    known_as: String,
    legacy: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    /// A consumer that counts how many of its kind are alive.
    struct Counted(Arc<AtomicUsize>);

    impl Counted {
        fn boxed(alive: &Arc<AtomicUsize>) -> Box<dyn Consumer> {
            alive.fetch_add(1, Ordering::SeqCst);
            Box::new(Counted(alive.clone()))
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_sub(1, Ordering::SeqCst);
        }
    }

    #[async_trait::async_trait]
    impl Consumer for Counted {
        async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
            None
        }

        async fn cancel(&mut self) -> Result<(), BrokerError> {
            Ok(())
        }
    }

    /// Each retired consumer lives exactly as long as the requests it
    /// delivered, whatever the later consumers' requests do: a service that
    /// stays busy through many reconnections does not pile consumers up.
    #[tokio::test]
    async fn a_retired_consumer_goes_when_its_own_requests_are_done() {
        let alive = Arc::new(AtomicUsize::new(0));
        let mut in_flight = InFlight::new(4);
        let (release_first, first) = tokio::sync::oneshot::channel::<()>();
        in_flight.spawn(async move {
            let _ = first.await;
        });
        in_flight.retire(Counted::boxed(&alive));
        // The next consumer's request never ends while we look.
        let (_keep_second, second) = tokio::sync::oneshot::channel::<()>();
        in_flight.spawn(async move {
            let _ = second.await;
        });
        in_flight.retire(Counted::boxed(&alive));
        // A consumer that delivered nothing still running is not kept.
        in_flight.retire(Counted::boxed(&alive));
        assert_eq!(alive.load(Ordering::SeqCst), 2);

        release_first.send(()).unwrap();
        while in_flight.len() > 1 {
            tokio::task::yield_now().await;
            in_flight.reap();
        }
        assert_eq!(
            alive.load(Ordering::SeqCst),
            1,
            "the first consumer went with its request"
        );
        assert_eq!(in_flight.retired.len(), 1);
    }
}
