//! Live counters and histograms of each service, and their Prometheus text
//! exposition through `prometheus-client`.
//!
//! Each service's [`Stats`] remain the source of truth that code and tests
//! read; [`registry`] builds a `prometheus-client` registry whose collector
//! reads them at every scrape, and [`render`] encodes it in the Prometheus
//! text format (version 0.0.4).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram as ClientHistogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::case::CaseValue;

/// The `Content-Type` of what [`render`] writes.
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// Upper bounds (seconds) of the duration histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram of durations in seconds, with fixed buckets
/// (`prometheus-client`'s).
#[derive(Debug)]
pub struct Histogram(ClientHistogram);

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
    routes: Mutex<BTreeMap<(CaseValue, String), u64>>,
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

impl Stats {
    /// How many outputs went to each `(case, queue)`, and to `(case, "")`
    /// when unrouted; cases as the sys-map writes them.
    pub fn routes(&self) -> BTreeMap<(String, String), u64> {
        self.lock_routes()
            .iter()
            .map(|((case, queue), n)| ((case.to_string(), queue.clone()), *n))
            .collect()
    }

    pub(crate) fn count_route(&self, case: &CaseValue, queue: &str) {
        let mut routes = self.lock_routes();
        // The key is usually there already: find it without allocating one.
        let existing = routes.iter_mut().find(|((c, q), _)| c == case && q == queue);
        match existing {
            Some((_, n)) => *n += 1,
            None => {
                routes.insert((case.clone(), queue.to_string()), 1);
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

    fn lock_routes(&self) -> MutexGuard<'_, BTreeMap<(CaseValue, String), u64>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

/// The services an exposition reports on, by name; more may be added after
/// the registry is built.
pub type Watched = Arc<Mutex<Vec<(&'static str, Arc<Stats>)>>>;

/// A registry exposing the metrics of every service in `services`, read from
/// their [`Stats`] at each scrape.
pub fn registry(services: Watched) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector(services)));
    registry
}

/// Encodes `registry` in the Prometheus text format (version 0.0.4).
pub fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
    let mut out = String::new();
    prometheus_client::encoding::prometheus_text::encode(&mut out, registry)?;
    Ok(out)
}

/// Reads the watched services' [`Stats`] at each scrape.
#[derive(Debug)]
struct StatsCollector(Watched);

/// A family of counters or gauges: its name, its help and one service's value.
type Family = (&'static str, &'static str, fn(&Stats) -> u64);

/// A family of histograms: its name, its help and one service's histogram.
type HistogramFamily = (&'static str, &'static str, fn(&Stats) -> &Histogram);

/// The per-service counters (`prometheus-client` adds `_total` to the names).
const COUNTERS: [Family; 8] = [
    (
        "slingshot_messages_consumed",
        "Deliveries taken from the inbound queue.",
        |s| Stats::get(&s.consumed),
    ),
    (
        "slingshot_messages_acked",
        "Requests processed and acknowledged.",
        |s| Stats::get(&s.processed),
    ),
    (
        "slingshot_messages_retried",
        "Requests sent back for another attempt.",
        |s| Stats::get(&s.retried),
    ),
    (
        "slingshot_messages_dead_lettered",
        "Requests sent to the dead-letter queue.",
        |s| Stats::get(&s.dead_lettered),
    ),
    (
        "slingshot_outputs_published",
        "Output messages confirmed by the broker.",
        |s| Stats::get(&s.published),
    ),
    ("slingshot_objects_written", "Objects uploaded.", |s| {
        Stats::get(&s.objects_written)
    }),
    ("slingshot_s3_bytes_written", "Bytes uploaded to object storage.", |s| {
        Stats::get(&s.bytes_written)
    }),
    ("slingshot_s3_bytes_read", "Bytes read from object storage.", |s| {
        Stats::get(&s.bytes_read)
    }),
];

/// The per-service gauges.
const GAUGES: [Family; 2] = [
    ("slingshot_in_flight", "Requests being processed.", |s| {
        Stats::get(&s.in_flight)
    }),
    ("slingshot_ready", "Whether the service is consuming.", |s| {
        u64::from(s.consuming.load(Ordering::Relaxed))
    }),
];

/// The per-service duration histograms.
const HISTOGRAMS: [HistogramFamily; 2] = [
    (
        "slingshot_process_duration_seconds",
        "Time spent in process, uploads excluded.",
        |s| &s.process_duration,
    ),
    (
        "slingshot_publish_confirm_seconds",
        "Time from publish to broker confirm.",
        |s| &s.confirm_latency,
    ),
];

/// The case as a label value: its JSON text without string quotes.
fn case_value(case: &CaseValue) -> String {
    match case {
        CaseValue::Str(s) => s.to_string(),
        other => other.to_string(),
    }
}

impl StatsCollector {
    fn lock(&self) -> MutexGuard<'_, Vec<(&'static str, Arc<Stats>)>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Collector for StatsCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let services = self.lock();
        for (name, help, value) in COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (service, stats) in services.iter() {
                ConstCounter::new(value(stats)).encode(family.encode_family(&[("service", *service)])?)?;
            }
        }
        for (name, help, value) in GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (service, stats) in services.iter() {
                ConstGauge::new(value(stats)).encode(family.encode_family(&[("service", *service)])?)?;
            }
        }
        let mut routed = encoder.encode_descriptor(
            "slingshot_outputs_routed",
            "Outputs sent, by case and queue.",
            None,
            MetricType::Counter,
        )?;
        for (service, stats) in services.iter() {
            for ((case, queue), n) in stats.lock_routes().iter().filter(|((_, q), _)| !q.is_empty()) {
                let value = case_value(case);
                let labels = [
                    ("service", *service),
                    ("case", &value),
                    ("case_kind", case.kind()),
                    ("queue", queue),
                ];
                ConstCounter::new(*n).encode(routed.encode_family(&labels)?)?;
            }
        }
        let mut unrouted = encoder.encode_descriptor(
            "slingshot_outputs_unrouted",
            "Outputs whose case has no route.",
            None,
            MetricType::Counter,
        )?;
        for (service, stats) in services.iter() {
            for ((case, _), n) in stats.lock_routes().iter().filter(|((_, q), _)| q.is_empty()) {
                let value = case_value(case);
                let labels = [("service", *service), ("case", &value), ("case_kind", case.kind())];
                ConstCounter::new(*n).encode(unrouted.encode_family(&labels)?)?;
            }
        }
        for (name, help, pick) in HISTOGRAMS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (service, stats) in services.iter() {
                pick(stats).0.encode(family.encode_family(&[("service", *service)])?)?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The page of one service `service` with `stats`.
    fn page(service: &'static str, stats: Stats) -> String {
        let watched = Watched::default();
        watched.lock().unwrap().push((service, Arc::new(stats)));
        render(&registry(watched)).unwrap()
    }

    #[test]
    fn histogram_buckets_are_cumulative() {
        let stats = Stats::default();
        let h = &stats.process_duration;
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let out = page("s", stats);
        let x = "slingshot_process_duration_seconds";
        assert!(
            out.contains(&format!("{x}_bucket{{service=\"s\",le=\"0.0005\"}} 1\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{x}_bucket{{service=\"s\",le=\"0.005\"}} 2\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{x}_bucket{{service=\"s\",le=\"10\"}} 2\n")),
            "{out}"
        );
        assert!(
            out.contains(&format!("{x}_bucket{{service=\"s\",le=\"+Inf\"}} 3\n")),
            "{out}"
        );
        assert!(out.contains(&format!("{x}_count{{service=\"s\"}} 3\n")), "{out}");
    }

    #[test]
    fn routes_render_with_case_kind_and_escaped_labels() {
        let stats = Stats::default();
        stats.count_route(&CaseValue::Str("say \"hi\"".into()), "q1");
        stats.count_route(&CaseValue::Bool(false), "");
        stats.processed.store(5, Ordering::Relaxed);
        let text = page("svc", stats);
        assert!(
            text.contains("slingshot_messages_acked_total{service=\"svc\"} 5\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "slingshot_outputs_routed_total{service=\"svc\",case=\"say \\\"hi\\\"\",case_kind=\"string\",queue=\"q1\"} 1\n"
            ),
            "{text}"
        );
        assert!(
            text.contains("slingshot_outputs_unrouted_total{service=\"svc\",case=\"false\",case_kind=\"bool\"} 1\n"),
            "{text}"
        );
    }
}
