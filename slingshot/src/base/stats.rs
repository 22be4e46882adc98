//! The live counters and histograms of each service: the source of truth that code, tests and the metrics page read.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram as ClientHistogram;

use super::case::CaseValue;

/// How many distinct cases of unrouted outputs get a series of their own in
/// `slingshot_outputs_unrouted`, per service. Past it, outputs of further
/// cases are counted under `case="other"` (`case_kind="other"`) and a
/// warning is logged once. Routed outputs need no limit: their series are
/// the routes of the sys-map.
pub(crate) const UNROUTED_CASE_LIMIT: usize = 1000;

/// Upper bounds (seconds) of the duration histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram of durations in seconds, with fixed buckets
/// (`prometheus-client`'s).
#[derive(Debug)]
pub struct Histogram(pub(crate) ClientHistogram);

impl Default for Histogram {
    fn default() -> Self {
        Histogram(ClientHistogram::new(BUCKETS))
    }
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        self.0.observe(duration.as_secs_f64());
    }
}

/// Counters of one service, shared with whoever started it.
#[derive(Debug, Default)]
pub struct Stats {
    /// Deliveries taken from the inbound queue.
    pub consumed: AtomicU64,
    /// Requests processed and acknowledged.
    pub processed: AtomicU64,
    /// Requests scheduled for another attempt.
    pub retried: AtomicU64,
    /// Requests sent to the dead-letter queue.
    pub dead_lettered: AtomicU64,
    /// Messages published to outbound queues (confirmed).
    pub published: AtomicU64,
    /// Outputs whose case had no route.
    pub unrouted: AtomicU64,
    /// Objects uploaded.
    pub objects_written: AtomicU64,
    /// Bytes uploaded.
    pub bytes_written: AtomicU64,
    /// Bytes read through `read_file`.
    pub bytes_read: AtomicU64,
    /// Requests being processed now.
    pub in_flight: AtomicU64,
    /// Whether the service is consuming (its readiness).
    pub consuming: AtomicBool,
    /// How long `process` took, uploads excluded.
    pub process_duration: Histogram,
    /// How long the broker took to confirm each publish.
    pub confirm_latency: Histogram,
    /// Requests given up at the shutdown deadline (they return to the queue).
    pub abandoned: AtomicU64,
    /// The service's concurrency: how many calls may run at once.
    pub concurrency: AtomicUsize,
    /// Once mode: deliveries of messages already done, acknowledged without
    /// running `process`.
    pub duplicates: AtomicU64,
    /// Requests taken after their caller's deadline: acknowledged without
    /// running `process`.
    pub expired: AtomicU64,
    /// Replies sent to callers (started, done and failed).
    pub replies: AtomicU64,
    /// Replies the broker did not take (the caller's reply queue is gone).
    pub replies_lost: AtomicU64,
    /// Events published to the service's topic exchange (confirmed).
    pub events_published: AtomicU64,
    /// Events emitted by a service whose sys-map entry names no `events`
    /// exchange: dropped, with a warning.
    pub events_dropped: AtomicU64,
    /// Once mode: outbox rows the relay published for a stage that did not.
    pub relayed: AtomicU64,
    /// Once mode: outbox rows not yet published, at the relay's last look.
    pub outbox_depth: AtomicU64,
    /// Once mode: age of the oldest outbox row at the relay's last look, in
    /// milliseconds (0 when empty).
    pub outbox_lag_ms: AtomicU64,
    routes: Mutex<Routes>,
    /// When each call in progress started, by a number of its own.
    calls: Mutex<Calls>,
}

/// The calls in progress.
#[derive(Debug, Default)]
struct Calls {
    next: u64,
    started: BTreeMap<u64, Instant>,
}

/// A call in progress, counted until it drops.
#[derive(Debug)]
pub(crate) struct Call<'a> {
    stats: &'a Stats,
    id: u64,
}

impl Drop for Call<'_> {
    fn drop(&mut self) {
        self.stats.lock_calls().started.remove(&self.id);
    }
}

/// The route series of one service at one moment, sorted: what the metrics
/// page shows.
#[derive(Debug)]
pub(crate) struct RouteSeries {
    /// Routed outputs: case, queue, count.
    pub(crate) routed: Vec<(CaseValue, String, u64)>,
    /// Unrouted outputs by case, up to [`UNROUTED_CASE_LIMIT`] cases.
    pub(crate) unrouted: Vec<(CaseValue, u64)>,
    /// Unrouted outputs of the cases past the limit.
    pub(crate) other: u64,
}

/// Outputs counted by case and queue: O(1) per count, with no allocation
/// once a series exists, and at most [`UNROUTED_CASE_LIMIT`] unrouted series.
#[derive(Debug, Default)]
struct Routes {
    /// Routed outputs: case, then queue.
    routed: HashMap<CaseValue, HashMap<String, u64>>,
    /// Unrouted outputs by case, up to the limit.
    unrouted: HashMap<CaseValue, u64>,
    /// Unrouted outputs of the cases past the limit.
    other: u64,
}

impl Stats {
    /// How many outputs went to each `(case, queue)`, and to `(case, "")`
    /// when unrouted; cases as the sys-map writes them. Unrouted outputs of
    /// the cases past `UNROUTED_CASE_LIMIT` (1,000) are under `("other", "")`
    /// (unquoted, so no string case can be mistaken for it).
    pub fn routes(&self) -> BTreeMap<(String, String), u64> {
        let routes = self.lock_routes();
        let routed = routes.routed.iter().flat_map(|(case, queues)| {
            queues
                .iter()
                .map(move |(queue, n)| ((case.to_string(), queue.clone()), *n))
        });
        let unrouted = routes
            .unrouted
            .iter()
            .map(|(case, n)| ((case.to_string(), String::new()), *n));
        let other = (routes.other > 0).then(|| ((OTHER.to_string(), String::new()), routes.other));
        routed.chain(unrouted).chain(other).collect()
    }

    /// Counts one output of `case` sent to `queue` (`""`: unrouted).
    pub(crate) fn count_route(&self, case: &CaseValue, queue: &str) {
        let mut routes = self.lock_routes();
        if queue.is_empty() {
            routes.count_unrouted(case);
            return;
        }
        // Both lookups borrow the key: nothing is allocated once the series exists.
        match routes.routed.get_mut(case) {
            Some(queues) => match queues.get_mut(queue) {
                Some(n) => *n += 1,
                None => {
                    queues.insert(queue.to_string(), 1);
                }
            },
            None => {
                routes
                    .routed
                    .insert(case.clone(), HashMap::from([(queue.to_string(), 1)]));
            }
        }
    }

    /// Starts timing one request's `process` call and uploads.
    pub(crate) fn begin_call(&self) -> Call<'_> {
        let mut calls = self.lock_calls();
        calls.next += 1;
        let id = calls.next;
        calls.started.insert(id, Instant::now());
        Call { stats: self, id }
    }

    /// How many calls in progress started more than `threshold` ago.
    pub fn stuck(&self, threshold: Duration) -> usize {
        let now = Instant::now();
        self.lock_calls()
            .started
            .values()
            .filter(|started| now.duration_since(**started) > threshold)
            .count()
    }

    fn lock_calls(&self) -> MutexGuard<'_, Calls> {
        self.calls.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Every route series, sorted, for the metrics page.
    pub(crate) fn route_series(&self) -> RouteSeries {
        let routes = self.lock_routes();
        let mut routed: Vec<(CaseValue, String, u64)> = routes
            .routed
            .iter()
            .flat_map(|(case, queues)| queues.iter().map(move |(queue, n)| (case.clone(), queue.clone(), *n)))
            .collect();
        routed.sort_unstable();
        let mut unrouted: Vec<(CaseValue, u64)> = routes.unrouted.iter().map(|(case, n)| (case.clone(), *n)).collect();
        unrouted.sort_unstable();
        RouteSeries {
            routed,
            unrouted,
            other: routes.other,
        }
    }

    fn lock_routes(&self) -> MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The case label of unrouted outputs past [`UNROUTED_CASE_LIMIT`].
pub(crate) const OTHER: &str = "other";

impl Routes {
    fn count_unrouted(&mut self, case: &CaseValue) {
        if let Some(n) = self.unrouted.get_mut(case) {
            *n += 1;
            return;
        }
        if self.unrouted.len() < UNROUTED_CASE_LIMIT {
            self.unrouted.insert(case.clone(), 1);
            return;
        }
        if self.other == 0 {
            // Once per service: a case no route names keeps varying.
            tracing::warn!(
                limit = UNROUTED_CASE_LIMIT,
                "outputs without a route came with more than {UNROUTED_CASE_LIMIT} distinct cases; \
                 slingshot_outputs_unrouted counts further cases under case=\"other\" (this one: {})",
                shorten_case(case)
            );
        }
        self.other += 1;
    }
}

/// `case` as the sys-map writes it, at most 100 characters.
fn shorten_case(case: &CaseValue) -> String {
    let text = case.to_string();
    match text.char_indices().nth(100) {
        Some((cut, _)) => format!("{}…", &text[..cut]),
        None => text,
    }
}
