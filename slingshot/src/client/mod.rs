//! Calling services like functions: publish an ID with a reply address, wait for what became of it, and follow it through the pipeline.
//!
//! A [`Client`] owns one reply queue, declared by the broker on the first
//! call: exclusive to the client's connection and deleted with it. Every
//! call waits on its own correlation ID, so concurrent calls from one client
//! never wait on each other; an answer that arrives after its call gave up
//! finds nobody waiting and is dropped (and counted, see
//! [`Client::late_replies`]).
//!
//! Why a reply queue and not RabbitMQ's direct reply-to: a reply is the only
//! record the caller gets of a request's outcome, and direct reply-to
//! delivers at most once to a consumer that must be on the publishing
//! channel. A queue of the client's own holds replies while the client is
//! briefly busy, with acknowledgements. Both lose the replies of a client
//! whose connection dropped (an exclusive queue goes with its connection);
//! such calls end with [`CallError::RepliesLost`]. Services answer any
//! `reply_to`, direct reply-to included, for other AMQP clients.
//!
//! [`Client::call`] asks one service; [`Client::submit`] then
//! [`Submission::wait_until_done`] follows the ID through every stage its
//! routes reach (see [`crate::protocol::FOLLOW_HEADER`]).

mod follow;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::{mpsc, oneshot};

pub use self::follow::{PipelineOutcome, Submission, Waiting};
use crate::broker::{Broker, BrokerError, HeaderValue, Message};
use crate::protocol::{unix_ms, Outcome, Status, DEADLINE_HEADER, FOLLOW_HEADER, FOLLOW_ID_HEADER};
use crate::sysmap::{SysMap, SysMapError};

/// How many replies the client's reply queue hands over unacknowledged.
const REPLY_PREFETCH: u16 = 1024;

/// Why a call returned no outcome.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// No service took the request before the timeout. Unless the call
    /// asked to run late, it expires: RabbitMQ drops it from the queue, and
    /// a service that takes it anyway acknowledges it without running it.
    #[error(
        "{service}: request {id} was never picked up from {queue:?} within {timeout:?}{}",
        if *.expires { "; it expires and will not run" } else { "; it stays in the queue and runs when a service takes it" }
    )]
    NeverPickedUp {
        /// The service called.
        service: String,
        /// Its inbound queue.
        queue: String,
        /// The request ID.
        id: u64,
        /// How long the call waited.
        timeout: Duration,
        /// Whether the request expires rather than running late.
        expires: bool,
    },
    /// A service took the request but did not finish it within the
    /// timeout. It goes on; its answer, when it comes, is dropped.
    #[error("{service}: request {id} is still running (attempt {attempt}) after {timeout:?}")]
    StillRunning {
        /// The service called.
        service: String,
        /// The request ID.
        id: u64,
        /// The attempt that started.
        attempt: u32,
        /// How long the call waited.
        timeout: Duration,
    },
    /// A followed request did not get through the pipeline in time: what
    /// was done, and the stages still waited for.
    #[error(
        "not done after {timeout:?}: {} stage(s) reported, waiting for {}",
        done.stages.len(),
        waiting.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
    )]
    Unfinished {
        /// What the stages that reported did.
        done: PipelineOutcome,
        /// The stages not done yet.
        waiting: Vec<Waiting>,
        /// How long it waited.
        timeout: Duration,
    },
    /// The client's connection to the broker dropped, and its reply queue
    /// with it: answers to calls made before are lost.
    #[error("the reply queue was lost with the broker connection; request {id} may still run")]
    RepliesLost {
        /// The request ID.
        id: u64,
    },
    /// The broker refused or failed the publish or the reply queue.
    #[error(transparent)]
    Broker(#[from] BrokerError),
    /// The sys-map does not know the service.
    #[error(transparent)]
    SysMap(#[from] SysMapError),
}

/// How a call is made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CallOptions {
    /// How long to wait for the outcome.
    pub timeout: Duration,
    /// Whether a request no service took within the timeout may still run
    /// later (`false`: it expires, as RPC requests do).
    pub run_late: bool,
}

impl CallOptions {
    /// Waits `timeout`; the request expires with it.
    pub fn new(timeout: Duration) -> Self {
        CallOptions {
            timeout,
            run_late: false,
        }
    }
}

/// Calls services: see the module documentation. Cheap to clone; clones
/// share the reply queue.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("broker", &self.inner.broker.describe())
            .finish_non_exhaustive()
    }
}

struct Inner {
    broker: Arc<dyn Broker>,
    sysmap: SysMap,
    /// Services a followed request may reach: their inbound queues are
    /// stages that report, other queues are where the pipeline ends.
    services: Vec<String>,
    /// Each service's inbound queue, read from the sys-map once (as a
    /// service reads its wiring once, at start-up).
    inbound: Mutex<HashMap<String, String>>,
    /// The reply queue, once declared, and what stops its consumer when
    /// the client goes away (dropped with it); `None` again once it was lost.
    replies: tokio::sync::Mutex<Option<(String, oneshot::Sender<()>)>>,
    /// Each call waiting, by correlation ID.
    waiting: Mutex<HashMap<String, mpsc::UnboundedSender<Outcome>>>,
    /// Numbers correlation IDs.
    next: AtomicU64,
    /// Makes this client's correlation IDs unique among clients.
    prefix: String,
    /// Answers that found no call waiting.
    late: AtomicU64,
}

impl Client {
    /// A client publishing to `broker`, finding services' queues in
    /// `sysmap`, following requests through `services` (see
    /// [`Client::submit`]).
    pub fn new(broker: Arc<dyn Broker>, sysmap: SysMap, services: Vec<String>) -> Client {
        let nanos = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
        Client {
            inner: Arc::new(Inner {
                broker,
                sysmap,
                services,
                inbound: Mutex::new(HashMap::new()),
                replies: tokio::sync::Mutex::new(None),
                waiting: Mutex::new(HashMap::new()),
                next: AtomicU64::new(0),
                prefix: format!("{:x}-{:x}", std::process::id(), nanos),
                late: AtomicU64::new(0),
            }),
        }
    }

    /// Answers that arrived after their call gave up (or for calls this
    /// client never made), dropped.
    pub fn late_replies(&self) -> u64 {
        self.inner.late.load(Ordering::Relaxed)
    }

    /// Calls waiting for an answer now.
    pub fn waiting(&self) -> usize {
        self.inner.waiting().len()
    }

    /// Sends `id` to `service` and returns its outcome: done (routes,
    /// objects) or failed (dead-lettered, with why). The request expires
    /// with `timeout`.
    pub async fn call(&self, service: &str, id: u64, timeout: Duration) -> Result<Outcome, CallError> {
        self.call_with(service, id, CallOptions::new(timeout)).await
    }

    /// [`Client::call`] with options.
    pub async fn call_with(&self, service: &str, id: u64, options: CallOptions) -> Result<Outcome, CallError> {
        let queue = self.inbound(service).await?;
        let (correlation, mut answers) = self.register();
        let _done = Forget(self.inner.clone(), correlation.clone());
        let mut message = Message::id(id);
        message.properties.reply_to = Some(self.reply_queue().await?);
        message.properties.correlation_id = Some(correlation);
        if !options.run_late {
            expire(&mut message, options.timeout);
        }
        self.inner.broker.publish(&queue, message).await?;
        let mut started = None;
        let waited = tokio::time::timeout(options.timeout, async {
            while let Some(outcome) = answers.recv().await {
                match outcome.status {
                    Status::Started => started = Some(outcome.attempt),
                    Status::Done | Status::Failed => return Some(outcome),
                }
            }
            None
        })
        .await;
        match waited {
            Ok(Some(outcome)) => Ok(outcome),
            Ok(None) => Err(CallError::RepliesLost { id }),
            Err(_) => Err(match started {
                Some(attempt) => CallError::StillRunning {
                    service: service.to_string(),
                    id,
                    attempt,
                    timeout: options.timeout,
                },
                None => CallError::NeverPickedUp {
                    service: service.to_string(),
                    queue,
                    id,
                    timeout: options.timeout,
                    expires: !options.run_late,
                },
            }),
        }
    }

    /// Sends `id` to `service` with the follow headers: every stage it
    /// reaches reports to this client. Wait with
    /// [`Submission::wait_until_done`].
    pub async fn submit(&self, service: &str, id: u64) -> Result<Submission, CallError> {
        let stages = self.stages().await?;
        let queue = self.inbound(service).await?;
        let (correlation, answers) = self.register();
        let forget = Forget(self.inner.clone(), correlation.clone());
        let mut message = Message::id(id);
        message
            .headers
            .insert(FOLLOW_HEADER.into(), HeaderValue::Str(self.reply_queue().await?));
        message
            .headers
            .insert(FOLLOW_ID_HEADER.into(), HeaderValue::Str(correlation));
        let submission = Submission::new(forget, answers, stages, (service.to_string(), queue.clone(), id));
        self.inner.broker.publish(&queue, message).await?;
        Ok(submission)
    }

    /// The inbound queue of `service`, from the sys-map the first time.
    async fn inbound(&self, service: &str) -> Result<String, CallError> {
        if let Some(queue) = self
            .inner
            .inbound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(service)
        {
            return Ok(queue.clone());
        }
        let queue = self.inner.sysmap.service(service).await?.inbound;
        self.inner
            .inbound
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(service.to_string(), queue.clone());
        Ok(queue)
    }

    /// The stages a followed request may reach: inbound queue → service.
    /// A service the sys-map does not know is none of them.
    async fn stages(&self) -> Result<HashMap<String, String>, CallError> {
        let mut stages = HashMap::new();
        for service in &self.inner.services {
            match self.inbound(service).await {
                Ok(queue) => {
                    stages.insert(queue, service.clone());
                }
                Err(CallError::SysMap(SysMapError::Missing { .. })) => {
                    tracing::debug!(service, "not in the sys-map; not followed");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(stages)
    }

    /// A new correlation ID and where its answers arrive.
    fn register(&self) -> (String, mpsc::UnboundedReceiver<Outcome>) {
        let n = self.inner.next.fetch_add(1, Ordering::Relaxed);
        let correlation = format!("{}-{n}", self.inner.prefix);
        let (tx, rx) = mpsc::unbounded_channel();
        self.inner.waiting().insert(correlation.clone(), tx);
        (correlation, rx)
    }

    /// The reply queue, declared and consumed on first use (and again after
    /// it was lost).
    async fn reply_queue(&self) -> Result<String, CallError> {
        let mut replies = self.inner.replies.lock().await;
        if let Some((queue, _)) = replies.as_ref() {
            return Ok(queue.clone());
        }
        let (queue, mut consumer) = self.inner.broker.consume_replies(REPLY_PREFETCH).await?;
        let (stop, mut stopped) = oneshot::channel();
        *replies = Some((queue.clone(), stop));
        let inner = Arc::downgrade(&self.inner);
        tokio::spawn(async move {
            loop {
                let delivery = tokio::select! {
                    // The client is gone: dropping the consumer cancels it,
                    // and the broker deletes the queue (auto-delete).
                    _ = &mut stopped => return,
                    next = consumer.next() => match next {
                        Some(Ok(delivery)) => delivery,
                        _ => break,
                    },
                };
                let Some(inner) = inner.upgrade() else { return };
                let _ = delivery.acker.ack().await;
                inner.dispatch(&delivery.message);
            }
            // Lost with the connection: the calls waiting on it never hear back.
            if let Some(inner) = inner.upgrade() {
                *inner.replies.lock().await = None;
                inner.waiting().clear();
                tracing::warn!("the reply queue was lost; calls waiting on it end");
            }
        });
        Ok(queue)
    }
}

impl Inner {
    fn waiting(&self) -> MutexGuard<'_, HashMap<String, mpsc::UnboundedSender<Outcome>>> {
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Hands an answer to the call waiting for it, or drops it.
    fn dispatch(&self, message: &Message) {
        let outcome = match Outcome::from_json(&message.body) {
            Ok(outcome) => outcome,
            Err(e) => {
                tracing::warn!(error = %e, "a reply that is not an outcome; dropped");
                return;
            }
        };
        let waiting = message
            .properties
            .correlation_id
            .as_ref()
            .and_then(|id| self.waiting().get(id).cloned());
        match waiting {
            Some(call) if call.send(outcome).is_ok() => {}
            _ => {
                self.late.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Removes a call's correlation ID when the call ends, however it ends:
/// answers to it are dropped from then on.
struct Forget(Arc<Inner>, String);

impl Drop for Forget {
    fn drop(&mut self) {
        self.0.waiting().remove(&self.1);
    }
}

/// Makes `message` expire after `timeout`: the AMQP `expiration` (RabbitMQ
/// drops it from the queue) and the deadline header (a service that takes it
/// later acknowledges it without running it).
fn expire(message: &mut Message, timeout: Duration) {
    let millis = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX).max(1);
    message.properties.expiration = Some(millis.to_string());
    let deadline = i64::try_from(unix_ms().saturating_add(millis)).unwrap_or(i64::MAX);
    message
        .headers
        .insert(DEADLINE_HEADER.into(), HeaderValue::Int(deadline));
}
