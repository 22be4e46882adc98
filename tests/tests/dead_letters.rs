//! `dead-letters list` and `replay` on long dead-letter queues, on the real
//! RabbitMQ and the in-process broker: one delivery held at a time whatever
//! the queue's length, order kept, nothing lost; a replay the broker stops
//! midway (a refused publish, a failed acknowledgement) leaves every dead
//! letter replayed or still dead-lettered, and no delivery unsettled.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use slingshot::broker::memory::MemoryBroker;
use slingshot::broker::{Acker, Broker, BrokerError, Consumer, Delivery, Durability, HeaderValue, Message, QueueState};
use slingshot::deadletter::{self, Selection, Stopped};
use slingshot::protocol::dead_letter_queue;
use slingshot_tests::fault_report::{self, publish, report_on, Figures};
use slingshot_tests::{drain_ids, shared_amqp_url, test_broker, Backend, Fixture};

/// Deliveries taken with `get` and not settled yet, and the most at once.
#[derive(Default)]
struct Held {
    now: AtomicUsize,
    most: AtomicUsize,
    /// Dropped without an ack or a reject: left to the broker's goodwill.
    stranded: AtomicUsize,
}

/// A broker that counts the deliveries its user holds and can fail the
/// `n`-th publish or acknowledgement (counting from 0), as a broker that
/// refuses a publish or loses the connection would.
struct Watched {
    inner: Arc<dyn Broker>,
    held: Arc<Held>,
    publishes: AtomicUsize,
    acks: Arc<AtomicUsize>,
    fail_publish: Option<usize>,
    fail_ack: Option<usize>,
}

impl Watched {
    fn new(inner: Arc<dyn Broker>) -> Watched {
        Watched {
            inner,
            held: Arc::default(),
            publishes: AtomicUsize::new(0),
            acks: Arc::default(),
            fail_publish: None,
            fail_ack: None,
        }
    }

    fn most_held(&self) -> usize {
        self.held.most.load(Ordering::SeqCst)
    }

    fn assert_settled(&self) {
        assert_eq!(self.held.now.load(Ordering::SeqCst), 0, "deliveries still held");
        assert_eq!(
            self.held.stranded.load(Ordering::SeqCst),
            0,
            "deliveries dropped unsettled"
        );
    }
}

#[async_trait]
impl Broker for Watched {
    async fn declare(&self, queue: &str, durability: Durability) -> Result<(), BrokerError> {
        self.inner.declare(queue, durability).await
    }

    async fn inspect(&self, queue: &str, durability: Durability) -> Result<QueueState, BrokerError> {
        self.inner.inspect(queue, durability).await
    }

    async fn consume(&self, queue: &str, prefetch: u16) -> Result<Box<dyn Consumer>, BrokerError> {
        self.inner.consume(queue, prefetch).await
    }

    async fn publish(&self, queue: &str, message: Message) -> Result<(), BrokerError> {
        if Some(self.publishes.fetch_add(1, Ordering::SeqCst)) == self.fail_publish {
            return Err(BrokerError::Disconnected("injected: the publish failed".into()));
        }
        self.inner.publish(queue, message).await
    }

    async fn get(&self, queue: &str) -> Result<Option<Delivery>, BrokerError> {
        let Some(delivery) = self.inner.get(queue).await? else {
            return Ok(None);
        };
        let now = self.held.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.held.most.fetch_max(now, Ordering::SeqCst);
        Ok(Some(Delivery {
            message: delivery.message,
            redelivered: delivery.redelivered,
            acker: Box::new(WatchedAcker {
                inner: Some(delivery.acker),
                held: self.held.clone(),
                acks: self.acks.clone(),
                fail_ack: self.fail_ack,
            }),
        }))
    }

    async fn ready_count(&self, queue: &str) -> Result<u64, BrokerError> {
        self.inner.ready_count(queue).await
    }

    fn describe(&self) -> String {
        format!("watched {}", self.inner.describe())
    }
}

struct WatchedAcker {
    inner: Option<Box<dyn Acker>>,
    held: Arc<Held>,
    acks: Arc<AtomicUsize>,
    fail_ack: Option<usize>,
}

impl WatchedAcker {
    fn settle(&mut self) -> Box<dyn Acker> {
        self.held.now.fetch_sub(1, Ordering::SeqCst);
        self.inner.take().expect("settled once")
    }
}

#[async_trait]
impl Acker for WatchedAcker {
    async fn ack(mut self: Box<Self>) -> Result<(), BrokerError> {
        let inner = self.settle();
        if Some(self.acks.fetch_add(1, Ordering::SeqCst)) == self.fail_ack {
            // What a lost channel does: the broker takes the message back.
            inner.reject(true).await?;
            return Err(BrokerError::Disconnected("injected: the ack failed".into()));
        }
        inner.ack().await
    }

    async fn reject(mut self: Box<Self>, requeue: bool) -> Result<(), BrokerError> {
        self.settle().reject(requeue).await
    }
}

impl Drop for WatchedAcker {
    fn drop(&mut self) {
        if self.inner.is_some() {
            self.held.now.fetch_sub(1, Ordering::SeqCst);
            self.held.stranded.fetch_add(1, Ordering::SeqCst);
        }
    }
}

/// The broker of `backend`, with `inbound` and its dead-letter queue declared.
async fn broker(backend: Backend, f: &Fixture) -> Arc<dyn Broker> {
    let broker: Arc<dyn Broker> = match backend {
        Backend::Embedded => Arc::new(MemoryBroker::new()),
        Backend::Real | Backend::Quorum => test_broker(&shared_amqp_url()).await,
    };
    for queue in [f.q("in"), dead_letter_queue(&f.q("in"))] {
        broker.declare(&queue, Durability::Durable).await.expect("declare");
    }
    broker
}

/// Dead-letters IDs `0..n`, a hundred publishes at a time; returns them in
/// the order the queue holds them (as a `list` reads them).
async fn dead_letter(broker: &Arc<dyn Broker>, inbound: &str, n: u64) -> Vec<u64> {
    let queue = dead_letter_queue(inbound);
    let ids: Vec<u64> = (0..n).collect();
    for chunk in ids.chunks(100) {
        futures::future::try_join_all(chunk.iter().map(|&id| {
            let message = Message::id(id)
                .with_header("x-slingshot-error-kind", HeaderValue::Str("process-error".into()))
                .with_header("x-slingshot-error", HeaderValue::Str(format!("cannot handle {id}")))
                .with_header("x-slingshot-attempt", HeaderValue::Int(5));
            broker.publish(&queue, message)
        }))
        .await
        .expect("dead-letter the IDs");
    }
    let mut listed = Vec::new();
    let watched = Watched::new(broker.clone());
    let count = deadletter::list(&watched, inbound, |letter| listed.push(letter.id.expect("an ID")))
        .await
        .expect("list");
    assert_eq!(count, n as usize);
    listed
}

fn ids_of(letters: &[u64], keep: impl Fn(u64) -> bool) -> Vec<u64> {
    letters.iter().copied().filter(|&id| keep(id)).collect()
}

async fn long_queues_are_listed_and_replayed_one_delivery_at_a_time(backend: Backend) {
    const N: u64 = 10_000;
    let f = Fixture::new(backend, "dl-long");
    let inbound = f.q("in");
    let broker = broker(backend, &f).await;
    let order = dead_letter(&broker, &inbound, N).await;
    let mut sorted = order.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..N).collect::<Vec<_>>());

    // Listing reads every one, in order, and leaves them so.
    let watched = Watched::new(broker.clone());
    let mut listed = Vec::new();
    let mut first = None;
    let count = deadletter::list(&watched, &inbound, |letter| {
        first.get_or_insert(letter.clone());
        listed.push(letter.id.expect("an ID"));
    })
    .await
    .expect("list");
    assert_eq!((count, &listed), (N as usize, &order));
    let first = first.expect("a dead letter");
    assert_eq!(
        (first.record.kind.as_str(), first.record.attempts, first.record.error),
        ("process-error", 5, format!("cannot handle {}", order[0]))
    );
    assert_eq!(watched.most_held(), 1, "list holds one delivery at a time");
    watched.assert_settled();

    // Replaying the even IDs: they reach the inbound queue in order, once
    // each; the odd ones stay, in order.
    let evens: Vec<u64> = (0..N).filter(|id| id % 2 == 0).collect();
    let watched = Watched::new(broker.clone());
    let (replayed, left) = deadletter::replay(&watched, &inbound, &Selection::Ids(evens))
        .await
        .expect("replay");
    assert_eq!((replayed, left), (N as usize / 2, N as usize / 2));
    assert_eq!(watched.most_held(), 1, "replay holds one delivery at a time");
    watched.assert_settled();
    assert_eq!(
        drain_ids(broker.as_ref(), &inbound).await,
        ids_of(&order, |id| id % 2 == 0)
    );
    let mut kept = Vec::new();
    deadletter::list(broker.as_ref(), &inbound, |letter| kept.push(letter.id.expect("an ID")))
        .await
        .expect("list");
    assert_eq!(kept, ids_of(&order, |id| id % 2 == 1));
    publish(&format!(
        "dead-letters-{backend:?}: list and replay of {N} held at most {} delivery at a time",
        watched.most_held()
    ));
}

/// The outcome of `replay` as the test expects it to have stopped.
fn stopped(result: Result<(usize, usize), slingshot::Error>) -> Stopped {
    match result {
        Err(slingshot::Error::DeadLetters(stopped)) => *stopped,
        other => panic!("the replay did not stop: {other:?}"),
    }
}

async fn a_replay_the_broker_stops_leaves_every_dead_letter_replayed_or_dead_lettered(backend: Backend) {
    const N: u64 = 1_000;
    let _figures = Figures("dead-letter-replay-stopped");
    let f = Fixture::new(backend, "dl-stop");
    let inbound = f.q("in");
    let broker = broker(backend, &f).await;
    let order = dead_letter(&broker, &inbound, N).await;
    let mut replayed_ids = Vec::new();

    // The 300th publish is refused, midway through a replay of the even IDs:
    // 150 replayed, 150 kept, the one in hand back in the queue.
    let mut watched = Watched::new(broker.clone());
    watched.fail_publish = Some(300);
    let evens: Vec<u64> = (0..N).filter(|id| id % 2 == 0).collect();
    let stop = stopped(deadletter::replay(&watched, &inbound, &Selection::Ids(evens)).await);
    let first = ids_of(&order[..300], |id| id % 2 == 0);
    let r1 = first.len();
    assert_eq!(
        (stop.replayed, stop.kept, stop.not_reached, stop.in_doubt),
        (r1, 300 - r1, 700, false),
        "{stop}"
    );
    watched.assert_settled();
    replayed_ids.extend(drain_ids(broker.as_ref(), &inbound).await);
    assert_eq!(replayed_ids, first);
    let dlq = dead_letter_queue(&inbound);
    assert_eq!(
        broker.ready_count(&dlq).await.expect("count"),
        N - r1 as u64,
        "nothing held unacknowledged"
    );

    // The 250th acknowledgement fails after its replay was confirmed: that
    // one is replayed and back in the dead-letter queue.
    let mut watched = Watched::new(broker.clone());
    watched.fail_ack = Some(250);
    let stop = stopped(deadletter::replay(&watched, &inbound, &Selection::All).await);
    assert_eq!((stop.replayed, stop.kept, stop.in_doubt), (250, 0, true), "{stop}");
    assert_eq!(stop.not_reached, N as usize - r1 - 250, "{stop}");
    watched.assert_settled();
    replayed_ids.extend(drain_ids(broker.as_ref(), &inbound).await);
    assert_eq!(replayed_ids.len(), r1 + 251);

    // What is left replays whole.
    let watched = Watched::new(broker.clone());
    let (replayed, left) = deadletter::replay(&watched, &inbound, &Selection::All)
        .await
        .expect("replay");
    assert_eq!((replayed, left), (N as usize - r1 - 250, 0));
    watched.assert_settled();
    replayed_ids.extend(drain_ids(broker.as_ref(), &inbound).await);
    assert_eq!(broker.ready_count(&dlq).await.expect("count"), 0);

    let mut counts: HashMap<u64, u32> = HashMap::new();
    for id in &replayed_ids {
        *counts.entry(*id).or_default() += 1;
    }
    let measured_on = match backend {
        Backend::Embedded => "embedded".to_string(),
        Backend::Real | Backend::Quorum => fault_report::broker(),
    };
    let outcome = report_on(
        &measured_on,
        &format!("dead-letter-replay-stopped-{}", format!("{backend:?}").to_lowercase()),
        N,
        &order,
        &counts,
        0,
    );
    assert_eq!(outcome.lost, 0, "dead letters lost");
    assert_eq!(outcome.duplicates, 1, "only the one whose ack failed comes twice");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_queues_are_listed_and_replayed_one_delivery_at_a_time_embedded() {
    long_queues_are_listed_and_replayed_one_delivery_at_a_time(Backend::Embedded).await;
}

#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_queues_are_listed_and_replayed_one_delivery_at_a_time_real() {
    long_queues_are_listed_and_replayed_one_delivery_at_a_time(Backend::Real).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_the_broker_stops_leaves_every_dead_letter_replayed_or_dead_lettered_embedded() {
    a_replay_the_broker_stops_leaves_every_dead_letter_replayed_or_dead_lettered(Backend::Embedded).await;
}

#[cfg(feature = "services")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_the_broker_stops_leaves_every_dead_letter_replayed_or_dead_lettered_real() {
    a_replay_the_broker_stops_leaves_every_dead_letter_replayed_or_dead_lettered(Backend::Real).await;
}
