//! The in-process broker: durable-for-the-process queues with
//! acknowledgements, prefetch and redelivery, for the embedded default and
//! tests.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};

use super::{Acker, Broker, BrokerError, Consumer, Delivery, Durability, Message, QueueState};

/// A broker living in this process. Clones share the same queues, so every
/// service of a process can be wired through one.
///
/// Like AMQP: a message taken by a consumer stays owned by that consumer until
/// acknowledged; rejected with requeue, or left unsettled when the consumer is
/// dropped, it goes back to the head of its queue marked redelivered.
#[derive(Clone, Default)]
pub struct MemoryBroker {
    state: Arc<Mutex<State>>,
}

impl std::fmt::Debug for MemoryBroker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MemoryBroker")
    }
}

#[derive(Default)]
struct State {
    queues: HashMap<String, Queue>,
    /// Topic exchanges: their bindings, as (pattern, queue).
    exchanges: HashMap<String, Vec<(String, String)>>,
}

struct Queue {
    /// As the first declaration asked; later ones use the queue as it is.
    durability: Durability,
    ready: VecDeque<Stored>,
    arrived: Arc<Notify>,
}

#[derive(Clone)]
struct Stored {
    message: Message,
    redelivered: bool,
}

impl MemoryBroker {
    /// An empty broker.
    pub fn new() -> Self {
        MemoryBroker::default()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn missing(op: &'static str, queue: &str) -> BrokerError {
        BrokerError::Refused {
            op,
            queue: queue.into(),
            message: "no such queue (declare it first)".into(),
        }
    }

    /// Puts messages back at the head of `queue`, in their original order.
    fn requeue(&self, queue: &str, messages: Vec<Stored>) {
        let mut state = self.lock();
        if let Some(q) = state.queues.get_mut(queue) {
            for mut stored in messages.into_iter().rev() {
                stored.redelivered = true;
                q.ready.push_front(stored);
            }
            q.arrived.notify_waiters();
        }
    }
}

#[async_trait]
impl Broker for MemoryBroker {
    async fn declare(&self, queue: &str, durability: Durability) -> Result<(), BrokerError> {
        let mut state = self.lock();
        let q = state.queues.entry(queue.to_string()).or_insert_with(|| Queue {
            durability,
            ready: VecDeque::new(),
            arrived: Arc::default(),
        });
        if q.durability != durability {
            tracing::warn!(
                queue,
                exists = %q.durability,
                declared = %durability,
                "queue exists with another durability; using it as it is"
            );
        }
        Ok(())
    }

    async fn inspect(&self, queue: &str, durability: Durability) -> Result<QueueState, BrokerError> {
        Ok(match self.lock().queues.get(queue) {
            None => QueueState::Missing,
            Some(q) if q.durability == durability => QueueState::Matches,
            // The words RabbitMQ uses for the same mismatch.
            Some(q) => QueueState::Differs(format!(
                "inequivalent arg 'durable' for queue '{queue}': received '{}' but current is '{}'",
                durability == Durability::Durable,
                q.durability == Durability::Durable
            )),
        })
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BrokerError> {
        if !self.lock().queues.contains_key(queue) {
            return Err(Self::missing("consume", queue));
        }
        Ok(Box::new(MemoryConsumer {
            broker: self.clone(),
            queue: queue.to_string(),
            window: Arc::new(Semaphore::new(usize::from(prefetch.max(1)))),
            unacked: Arc::default(),
            next_tag: 0,
            cancelled: false,
        }))
    }

    async fn publish(&self, queue: &str, message: Message) -> Result<(), BrokerError> {
        let mut state = self.lock();
        // As RabbitMQ returns a mandatory publish to a queue that does not exist.
        let q = state.queues.get_mut(queue).ok_or_else(|| BrokerError::Returned {
            queue: queue.into(),
            message: "NO_ROUTE (no such queue)".into(),
        })?;
        q.ready.push_back(Stored {
            message,
            redelivered: false,
        });
        q.arrived.notify_waiters();
        Ok(())
    }

    async fn consume_replies(&self, prefetch: u16) -> Result<(String, Box<dyn Consumer>), BrokerError> {
        static REPLY_QUEUES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = REPLY_QUEUES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let queue = format!("amq.gen-slingshot-reply-{n}");
        self.declare(&queue, Durability::Transient).await?;
        let consumer = self.consume(&queue, prefetch).await?;
        Ok((
            queue.clone(),
            Box::new(ExclusiveConsumer {
                consumer,
                broker: self.clone(),
                queue,
            }),
        ))
    }

    async fn declare_topic(&self, exchange: &str) -> Result<(), BrokerError> {
        self.lock().exchanges.entry(exchange.to_string()).or_default();
        Ok(())
    }

    async fn bind(&self, queue: &str, exchange: &str, pattern: &str) -> Result<(), BrokerError> {
        let mut state = self.lock();
        if !state.queues.contains_key(queue) {
            return Err(Self::missing("bind", queue));
        }
        let bindings = state.exchanges.get_mut(exchange).ok_or_else(|| BrokerError::Refused {
            op: "bind",
            queue: queue.into(),
            message: format!("no exchange {exchange:?} (declare it first)"),
        })?;
        let binding = (pattern.to_string(), queue.to_string());
        if !bindings.contains(&binding) {
            bindings.push(binding);
        }
        Ok(())
    }

    async fn publish_to_exchange(
        &self,
        exchange: &str,
        routing_key: &str,
        message: Message,
    ) -> Result<(), BrokerError> {
        let mut state = self.lock();
        let bindings = state.exchanges.get(exchange).ok_or_else(|| BrokerError::Refused {
            op: "publish",
            queue: exchange.into(),
            message: "no such exchange (declare it first)".into(),
        })?;
        // Each queue once, however many of its bindings match.
        let mut targets: Vec<String> = bindings
            .iter()
            .filter(|(pattern, _)| super::topic::matches(pattern, routing_key))
            .map(|(_, queue)| queue.clone())
            .collect();
        targets.sort();
        targets.dedup();
        for queue in targets {
            if let Some(q) = state.queues.get_mut(&queue) {
                q.ready.push_back(Stored {
                    message: message.clone(),
                    redelivered: false,
                });
                q.arrived.notify_waiters();
            }
        }
        Ok(())
    }

    async fn get(&self, queue: &str) -> Result<Option<Delivery>, BrokerError> {
        let stored = {
            let mut state = self.lock();
            let q = state.queues.get_mut(queue).ok_or_else(|| Self::missing("get", queue))?;
            q.ready.pop_front()
        };
        Ok(stored.map(|stored| {
            let redelivered = stored.redelivered;
            let message = stored.message.clone();
            Delivery {
                message,
                redelivered,
                acker: Box::new(GetAcker {
                    broker: self.clone(),
                    queue: queue.to_string(),
                    stored: Mutex::new(Some(stored)),
                }),
            }
        }))
    }

    async fn ready_count(&self, queue: &str) -> Result<u64, BrokerError> {
        let state = self.lock();
        let q = state.queues.get(queue).ok_or_else(|| Self::missing("count", queue))?;
        Ok(q.ready.len() as u64)
    }

    fn describe(&self) -> String {
        "in-process broker".into()
    }

    fn messaging_system(&self) -> &'static str {
        "slingshot-memory"
    }
}

/// A consumer of a reply queue, which is deleted with it (as an exclusive
/// queue is with its connection).
struct ExclusiveConsumer {
    consumer: Box<dyn Consumer>,
    broker: MemoryBroker,
    queue: String,
}

#[async_trait]
impl Consumer for ExclusiveConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        self.consumer.next().await
    }

    async fn cancel(&mut self) -> Result<(), BrokerError> {
        self.consumer.cancel().await
    }
}

impl Drop for ExclusiveConsumer {
    fn drop(&mut self) {
        self.broker.lock().queues.remove(&self.queue);
    }
}

type Unacked = Arc<Mutex<HashMap<u64, (Stored, OwnedSemaphorePermit)>>>;

struct MemoryConsumer {
    broker: MemoryBroker,
    queue: String,
    window: Arc<Semaphore>,
    unacked: Unacked,
    next_tag: u64,
    /// Cancelled: nothing more is taken from the queue.
    cancelled: bool,
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, BrokerError>> {
        if self.cancelled {
            return None;
        }
        let permit = match self.window.clone().acquire_owned().await {
            Ok(permit) => permit,
            Err(_) => return None,
        };
        loop {
            let arrived = {
                let mut state = self.broker.lock();
                // The queue was deleted: the consumer is cancelled, as in AMQP.
                let q = state.queues.get_mut(&self.queue)?;
                if let Some(stored) = q.ready.pop_front() {
                    self.next_tag += 1;
                    let tag = self.next_tag;
                    let delivery = Delivery {
                        message: stored.message.clone(),
                        redelivered: stored.redelivered,
                        acker: Box::new(MemoryAcker {
                            broker: self.broker.clone(),
                            queue: self.queue.clone(),
                            unacked: self.unacked.clone(),
                            tag,
                        }),
                    };
                    lock(&self.unacked).insert(tag, (stored, permit));
                    return Some(Ok(delivery));
                }
                q.arrived.clone()
            };
            let notified = arrived.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            // Re-check after registering, so a publish in between is not missed.
            let has_ready = {
                let state = self.broker.lock();
                state.queues.get(&self.queue).map(|q| !q.ready.is_empty())
            };
            match has_ready {
                None => return None,
                Some(true) => continue,
                Some(false) => notified.await,
            }
        }
    }

    /// Messages are taken from the queue only when asked for, so nothing is
    /// held beyond what `next` returned.
    async fn cancel(&mut self) -> Result<(), BrokerError> {
        self.cancelled = true;
        Ok(())
    }
}

impl Drop for MemoryConsumer {
    /// Like a closed AMQP channel: every unsettled message goes back to the queue.
    fn drop(&mut self) {
        let mut pending: Vec<(u64, Stored)> = lock(&self.unacked)
            .drain()
            .map(|(tag, (stored, _permit))| (tag, stored))
            .collect();
        pending.sort_by_key(|(tag, _)| *tag);
        self.broker
            .requeue(&self.queue, pending.into_iter().map(|(_, s)| s).collect());
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

struct MemoryAcker {
    broker: MemoryBroker,
    queue: String,
    unacked: Unacked,
    tag: u64,
}

impl MemoryAcker {
    fn take(&self) -> Result<Stored, BrokerError> {
        lock(&self.unacked)
            .remove(&self.tag)
            .map(|(stored, _permit)| stored)
            .ok_or_else(|| {
                BrokerError::Disconnected(format!(
                    "delivery {} of {:?} is no longer held: its consumer was closed and the message requeued",
                    self.tag, self.queue
                ))
            })
    }
}

#[async_trait]
impl Acker for MemoryAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        self.take().map(drop)
    }

    async fn reject(self: Box<Self>, requeue: bool) -> Result<(), BrokerError> {
        let stored = self.take()?;
        if requeue {
            self.broker.requeue(&self.queue, vec![stored]);
        }
        Ok(())
    }

    fn is_live(&self) -> bool {
        lock(&self.unacked).contains_key(&self.tag)
    }
}

/// Settles a message taken with `get`; dropped unsettled, it is requeued.
struct GetAcker {
    broker: MemoryBroker,
    queue: String,
    stored: Mutex<Option<Stored>>,
}

#[async_trait]
impl Acker for GetAcker {
    async fn ack(self: Box<Self>) -> Result<(), BrokerError> {
        lock(&self.stored).take();
        Ok(())
    }

    async fn reject(self: Box<Self>, requeue: bool) -> Result<(), BrokerError> {
        if !requeue {
            lock(&self.stored).take();
        }
        Ok(())
    }
}

impl Drop for GetAcker {
    fn drop(&mut self) {
        if let Some(stored) = lock(&self.stored).take() {
            self.broker.requeue(&self.queue, vec![stored]);
        }
    }
}
