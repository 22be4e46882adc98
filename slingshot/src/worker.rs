//! The consume loop of one service: bounded concurrency, ack after upload and confirmed publishes, retries with backoff, dead-lettering.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::future::try_join_all;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::broker::{Broker, BrokerError, Delivery, Message, QUORUM_DELIVERY_LIMIT};
use crate::error::error_chain;
use crate::execute::{Executed, Executor, Job};
use crate::failure::{Failure, FailureKind};
pub use crate::metrics::Stats;
use crate::otel::{self, Operation};
use crate::protocol::{self, dead_letter_queue, Decision, Envelope, FailureRecord, TraceParent};
use crate::routing::RouteTable;
use crate::settings::Settings;

/// How long a `process` call may run before a warning says that RabbitMQ's
/// consumer timeout (30 minutes by default) is near.
pub(crate) const CONSUMER_TIMEOUT_WARNING: Duration = Duration::from_secs(20 * 60);

/// A service's consumer and everything it needs.
pub(crate) struct Worker {
    pub name: &'static str,
    pub inbound: String,
    pub executor: Arc<dyn Executor>,
    pub broker: Arc<dyn Broker>,
    pub routes: Arc<RouteTable>,
    pub settings: Settings,
    pub stats: Arc<Stats>,
}

/// Why a worker stopped without being asked to.
#[derive(Debug, thiserror::Error)]
pub(crate) enum Stopped {
    #[error("the broker cancelled the consumer of {0:?} (queue deleted?)")]
    Cancelled(String),
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

impl Worker {
    /// Consumes until `shutdown` turns true (then finishes in-flight requests
    /// within the deadline) or the consumer fails.
    pub(crate) async fn run(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) -> Result<(), Stopped> {
        let mut consumer = self.broker.consume(&self.inbound, self.settings.prefetch).await?;
        self.stats.consuming.store(true, Ordering::Relaxed);
        let slots = Arc::new(Semaphore::new(self.settings.concurrency));
        let mut tasks = JoinSet::new();
        tracing::info!(
            service = self.name,
            queue = %self.inbound,
            concurrency = self.settings.concurrency,
            prefetch = self.settings.prefetch,
            "consuming"
        );
        let result = loop {
            while tasks.try_join_next().is_some() {}
            let slot = tokio::select! {
                biased;
                _ = shutdown.wait_for(|stop| *stop) => break Ok(()),
                slot = slots.clone().acquire_owned() => match slot {
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
                    let (span, traced) = self.request_span(&delivery);
                    tasks.spawn(
                        self.clone()
                            .handle(delivery, traced, slot, shutdown.clone())
                            .instrument(span),
                    );
                }
            }
        };
        // Not ready from here on: stopping, or about to reconnect.
        self.stats.consuming.store(false, Ordering::Relaxed);
        let deadline = self.settings.shutdown_deadline;
        while tasks.try_join_next().is_some() {}
        if !tasks.is_empty() {
            tracing::info!(
                service = self.name,
                in_flight = tasks.len(),
                ?deadline,
                "finishing in-flight requests"
            );
        }
        let finished = tokio::time::timeout(deadline, async { while tasks.join_next().await.is_some() {} }).await;
        if finished.is_err() {
            tracing::warn!(
                service = self.name,
                left = tasks.len(),
                "shutdown deadline passed; unfinished requests return to the queue"
            );
            tasks.abort_all();
        }
        // Dropping the consumer returns every unsettled delivery to the queue.
        drop(consumer);
        result
    }

    async fn handle(
        self: Arc<Self>,
        delivery: Delivery,
        traced: Traced,
        slot: OwnedSemaphorePermit,
        shutdown: watch::Receiver<bool>,
    ) {
        let mut envelope = match Envelope::decode(&delivery.message) {
            Ok(envelope) => envelope,
            // Not a request: nothing to retry, so dead-lettered at once (as
            // `protocol::decide` does with malformed failures).
            Err(malformed) => {
                drop(slot);
                let attempt = malformed.attempt;
                return self
                    .dead_letter(
                        delivery,
                        &traced,
                        Failure::new(FailureKind::Malformed, malformed.reason),
                        attempt,
                    )
                    .await;
            }
        };
        envelope.trace_id = traced.legacy.clone();
        let (request, attempt) = (envelope.id, envelope.attempt);
        // Quorum queues count the deliveries they took back (lost
        // connections, crashes); past the delivery limit the broker
        // dead-letters the message itself.
        let delivery_count = protocol::delivery_count(&delivery.message);
        if i64::from(delivery_count) * 2 >= QUORUM_DELIVERY_LIMIT {
            tracing::warn!(
                service = self.name,
                request,
                delivery_count,
                limit = QUORUM_DELIVERY_LIMIT,
                "delivered again and again without being settled (does processing it crash the service?); \
                 the broker dead-letters it at the limit"
            );
        }
        let job = Job {
            request,
            attempt,
            redelivered: delivery.redelivered || delivery_count > 0,
            trace_id: envelope.trace_id.clone(),
        };
        self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
        let executing = self.executor.clone().execute(job);
        tokio::pin!(executing);
        let executed = tokio::select! {
            executed = &mut executing => executed,
            _ = tokio::time::sleep(CONSUMER_TIMEOUT_WARNING) => {
                tracing::warn!(
                    service = self.name,
                    request,
                    running = ?CONSUMER_TIMEOUT_WARNING,
                    "process is still running: RabbitMQ closes the channel of a consumer that holds a delivery \
                     past its consumer timeout (30 minutes by default), and the request then runs again; \
                     raise `consumer_timeout` in rabbitmq.conf for requests this long"
                );
                executing.await
            }
        };
        // The slot bounds concurrent `process` calls and uploads; waiting for
        // the broker's confirms is not processing, so the next request may
        // start meanwhile. Unacknowledged messages stay bounded by prefetch.
        drop(slot);
        let result = match executed {
            Ok(executed) => self.route(&envelope, &traced, &executed).await,
            Err(failure) => Err(failure),
        };
        self.stats.in_flight.fetch_sub(1, Ordering::Relaxed);
        match result {
            Ok(()) => {
                match delivery.acker.ack().await {
                    Ok(()) => {
                        self.stats.processed.fetch_add(1, Ordering::Relaxed);
                    }
                    // The broker will redeliver it; the outputs were sent, so downstream may see them twice.
                    Err(e) => {
                        tracing::warn!(service = self.name, request, error = %e, "ack failed; the request will be redelivered")
                    }
                }
            }
            Err(failure) => {
                // The delivery failed, whatever happens next.
                let span = tracing::Span::current();
                span.record("otel.status_code", "error");
                span.record("otel.status_description", failure.to_string());
                span.record("error.type", failure.kind.as_str());
                match protocol::decide(&failure, &envelope, &self.settings) {
                    Decision::Retry { delay, next } => {
                        self.retry(delivery, &traced, &envelope, next, delay, failure, shutdown)
                            .await
                    }
                    Decision::DeadLetter { attempts } => {
                        tracing::error!(service = self.name, request, attempt, error = %failure, "giving up: dead-lettering");
                        self.dead_letter(delivery, &traced, failure, attempts).await;
                    }
                }
            }
        }
    }

    /// Routes the outputs: publishes every `(queue, id)` concurrently and
    /// waits for all the confirms.
    async fn route(&self, envelope: &Envelope, traced: &Traced, executed: &Executed) -> Result<(), Failure> {
        let request = envelope.id;
        let plan = self.routes.plan(&executed.outputs);
        for (id, case) in &plan.unrouted {
            self.stats.unrouted.fetch_add(1, Ordering::Relaxed);
            self.stats.count_route(case, "");
            tracing::warn!(service = self.name, request, output = id, %case, "no route for this case; output dropped");
        }
        let publishes = plan.sends.iter().map(|(queue, id)| {
            let span = self.publish_span(queue);
            let message = envelope.encode_output(*id, &otel::context_of(&span, Some(&traced.context)));
            async move {
                let sent = std::time::Instant::now();
                let confirmed = self.broker.publish(queue, message).await;
                self.stats.confirm_latency.observe(sent.elapsed());
                if let Err(e) = &confirmed {
                    failed(&tracing::Span::current(), &e.to_string());
                }
                confirmed
            }
            .instrument(span)
        });
        try_join_all(publishes)
            .await
            .map_err(|e| Failure::outage(FailureKind::Broker, error_chain(&e)))?;
        self.stats
            .published
            .fetch_add(plan.sends.len() as u64, Ordering::Relaxed);
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
        Ok(())
    }

    /// Waits out the backoff `delay`, then sends the request back to the
    /// inbound queue as `next` (its attempt or outage count raised), then acks
    /// this delivery. The counts travel in the message, so they survive
    /// restarts.
    #[allow(clippy::too_many_arguments)]
    async fn retry(
        &self,
        delivery: Delivery,
        traced: &Traced,
        envelope: &Envelope,
        next: Envelope,
        delay: Duration,
        failure: Failure,
        mut shutdown: watch::Receiver<bool>,
    ) {
        let (request, attempt) = (envelope.id, envelope.attempt);
        tracing::warn!(
            service = self.name,
            request,
            attempt,
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
        let message = next.encode_retry(&delivery.message, &failure);
        self.forward(delivery, traced, &self.inbound.clone(), message).await;
        self.stats.retried.fetch_add(1, Ordering::Relaxed);
    }

    async fn dead_letter(&self, delivery: Delivery, traced: &Traced, failure: Failure, attempt: u32) {
        let record = FailureRecord::new(&failure, attempt, self.name, &self.inbound, SystemTime::now());
        let message = record.encode(&delivery.message);
        tracing::warn!(service = self.name, kind = failure.kind.as_str(), error = %failure.message, attempts = attempt, "dead-lettered");
        if self
            .forward(delivery, traced, &dead_letter_queue(&self.inbound), message)
            .await
        {
            self.stats.dead_lettered.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Publishes `message` to `queue` under a PRODUCER span whose context it
    /// carries, then acks `delivery`; if the publish is not confirmed the
    /// delivery is requeued instead, so nothing is lost.
    async fn forward(&self, delivery: Delivery, traced: &Traced, queue: &str, mut message: Message) -> bool {
        // Its channel is gone (the connection was lost meanwhile): the broker
        // delivers the original again, a copy would be a duplicate.
        if !delivery.acker.is_live() {
            tracing::warn!(
                service = self.name,
                queue,
                "delivery's channel closed; the broker will redeliver it"
            );
            return false;
        }
        let span = self.publish_span(queue);
        otel::context_of(&span, Some(&traced.context)).stamp(&mut message, &traced.legacy);
        let published = self.broker.publish(queue, message).instrument(span.clone()).await;
        if let Err(e) = &published {
            failed(&span, &e.to_string());
        }
        drop(span);
        match published {
            Ok(()) => {
                if let Err(e) = delivery.acker.ack().await {
                    tracing::warn!(service = self.name, error = %e, "ack after forwarding failed; the broker will redeliver");
                }
                true
            }
            Err(e) => {
                tracing::error!(service = self.name, queue, error = %e, "forwarding failed; returning the message to its queue");
                if let Err(e) = delivery.acker.reject(true).await {
                    tracing::warn!(service = self.name, error = %e, "requeue failed; the broker will redeliver");
                }
                false
            }
        }
    }
}

/// The trace a delivery continues: the W3C context of its CONSUMER span and
/// the legacy trace ID its outputs carry.
#[derive(Debug, Clone)]
struct Traced {
    context: TraceParent,
    legacy: String,
}

impl Worker {
    /// The CONSUMER span of one delivery, continuing the trace its message
    /// carries (`traceparent`, else the legacy trace ID), and the context it
    /// runs in. Its service, request ID, attempt, trace and span IDs are on
    /// every log line of the request.
    fn request_span(&self, delivery: &Delivery) -> (tracing::Span, Traced) {
        let message = &delivery.message;
        let body = std::str::from_utf8(&message.body).unwrap_or("<not UTF-8>");
        let span = tracing::info_span!(
            "request",
            otel.name = %format_args!("process {}", self.inbound),
            otel.kind = "consumer",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
            error.type = tracing::field::Empty,
            service = self.name,
            request = body.trim(),
            attempt = protocol::attempt(message),
            trace_id = tracing::field::Empty,
            span_id = tracing::field::Empty,
        );
        let parent = TraceParent::read(message);
        if let Some(parent) = &parent {
            otel::set_remote_parent(&span, parent);
        }
        otel::set_messaging_attributes(&span, self.broker.messaging_system(), &self.inbound, Operation::Process);
        span.set_attribute("messaging.message.body.size", message.body.len() as i64);
        span.set_attribute("messaging.destination.redelivered", delivery.redelivered);
        let context = otel::context_of(&span, parent.as_ref());
        span.record("trace_id", context.trace_id_hex());
        span.record("span_id", context.span_id_hex());
        let legacy = protocol::trace_id(message)
            .map(str::to_string)
            .unwrap_or_else(|| context.trace_id_hex());
        (span, Traced { context, legacy })
    }

    /// The PRODUCER span of one publish to `queue`, a child of the current
    /// (CONSUMER) span.
    fn publish_span(&self, queue: &str) -> tracing::Span {
        let span = tracing::info_span!(
            "publish",
            otel.name = %format_args!("publish {queue}"),
            otel.kind = "producer",
            otel.status_code = tracing::field::Empty,
            otel.status_description = tracing::field::Empty,
        );
        otel::set_messaging_attributes(&span, self.broker.messaging_system(), queue, Operation::Publish);
        span
    }
}

/// Marks `span` failed with `error`.
fn failed(span: &tracing::Span, error: &str) {
    span.record("otel.status_code", "error");
    span.record("otel.status_description", error);
}
