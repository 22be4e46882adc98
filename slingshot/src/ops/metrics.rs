//! The Prometheus text exposition of every service's [`Stats`], through `prometheus-client`.
//!
//! [`registry`] builds a `prometheus-client` registry whose collector reads
//! the watched services' [`Stats`] at every scrape, and [`render`] encodes
//! it in the Prometheus text format (version 0.0.4).

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::base::case::CaseValue;
use crate::base::stats::{Histogram, RouteSeries, Stats, OTHER};

/// The `Content-Type` of what [`render`] writes.
pub(crate) const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

/// The services an exposition reports on, by name; more may be added after
/// the registry is built.
pub(crate) type Watched = Arc<Mutex<Vec<(&'static str, Arc<Stats>)>>>;

/// A registry exposing the metrics of every service in `services`, read from
/// their [`Stats`] at each scrape.
pub(crate) fn registry(services: Watched) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatsCollector(services)));
    registry
}

/// Encodes `registry` in the Prometheus text format (version 0.0.4).
pub(crate) fn render(registry: &Registry) -> Result<String, std::fmt::Error> {
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
const COUNTERS: [Family; 15] = [
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
    (
        "slingshot_requests_expired",
        "Requests taken after their caller's deadline, acknowledged without running process.",
        |s| Stats::get(&s.expired),
    ),
    (
        "slingshot_replies",
        "Replies sent to callers (started, done, failed).",
        |s| Stats::get(&s.replies),
    ),
    (
        "slingshot_replies_lost",
        "Replies the broker did not take: the caller's reply queue was gone.",
        |s| Stats::get(&s.replies_lost),
    ),
    (
        "slingshot_events_published",
        "Events published to the service's topic exchange.",
        |s| Stats::get(&s.events_published),
    ),
    (
        "slingshot_events_dropped",
        "Events emitted while the sys-map names no events exchange for the service: dropped.",
        |s| Stats::get(&s.events_dropped),
    ),
    (
        "slingshot_once_duplicates",
        "Once mode: deliveries of messages already done, acknowledged without running process.",
        |s| Stats::get(&s.duplicates),
    ),
    (
        "slingshot_once_relayed",
        "Once mode: outbox rows the relay published for a stage that did not.",
        |s| Stats::get(&s.relayed),
    ),
];

/// The per-service gauges.
const GAUGES: [Family; 4] = [
    ("slingshot_in_flight", "Requests being processed.", |s| {
        Stats::get(&s.in_flight)
    }),
    ("slingshot_ready", "Whether the service is consuming.", |s| {
        u64::from(s.consuming.load(Ordering::Relaxed))
    }),
    (
        "slingshot_once_outbox_depth",
        "Once mode: outbox rows not yet published.",
        |s| Stats::get(&s.outbox_depth),
    ),
    (
        "slingshot_once_outbox_lag_milliseconds",
        "Once mode: age of the oldest outbox row not yet published.",
        |s| Stats::get(&s.outbox_lag_ms),
    ),
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
        // Scrapes list the series in a stable order.
        let series: Vec<RouteSeries> = services.iter().map(|(_, stats)| stats.route_series()).collect();
        for ((service, _), routes) in services.iter().zip(&series) {
            for (case, queue, n) in &routes.routed {
                let value = case_value(case);
                let labels = [
                    ("service", *service),
                    ("case", &value),
                    ("case_kind", case.kind()),
                    ("queue", queue.as_str()),
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
        for ((service, _), routes) in services.iter().zip(&series) {
            for (case, n) in &routes.unrouted {
                let value = case_value(case);
                let labels = [("service", *service), ("case", &value), ("case_kind", case.kind())];
                ConstCounter::new(*n).encode(unrouted.encode_family(&labels)?)?;
            }
            if routes.other > 0 {
                let labels = [("service", *service), ("case", OTHER), ("case_kind", OTHER)];
                ConstCounter::new(routes.other).encode(unrouted.encode_family(&labels)?)?;
            }
        }
        for (name, help, pick) in HISTOGRAMS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (service, stats) in services.iter() {
                pick(stats).0.encode(family.encode_family(&[("service", *service)])?)?;
            }
        }
        // The process's, not a service's: its log is one for all.
        let dropped = encoder.encode_descriptor(
            "slingshot_log_lines_dropped",
            "Log lines dropped because the log's output (stdout) did not keep up.",
            None,
            MetricType::Counter,
        )?;
        ConstCounter::new(crate::telemetry::logs::dropped_lines()).encode(dropped)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::base::stats::UNROUTED_CASE_LIMIT;
    use std::time::Duration;

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

    #[test]
    fn unrouted_series_are_bounded_and_every_output_is_counted() {
        let stats = Stats::default();
        let distinct = 100_000;
        for i in 0..distinct {
            stats.count_route(&CaseValue::Str(format!("case-{i}").into()), "");
        }
        // Known cases keep counting on their own series, past the limit too.
        for _ in 0..3 {
            stats.count_route(&CaseValue::Str("case-0".into()), "");
            stats.count_route(&CaseValue::Int(7), "q");
        }
        stats.count_route(&CaseValue::Str(format!("case-{}", distinct - 1).into()), "");
        let routes = stats.routes();
        let unrouted: Vec<_> = routes.iter().filter(|((_, q), _)| q.is_empty()).collect();
        assert_eq!(
            unrouted.len(),
            UNROUTED_CASE_LIMIT + 1,
            "the cases under the limit and `other`"
        );
        assert_eq!(routes.get(&("\"case-0\"".into(), String::new())), Some(&4));
        assert_eq!(
            routes.get(&(format!("\"case-{}\"", UNROUTED_CASE_LIMIT - 1), String::new())),
            Some(&1)
        );
        assert_eq!(
            routes.get(&("other".into(), String::new())),
            Some(&(distinct as u64 - UNROUTED_CASE_LIMIT as u64 + 1)),
            "every case past the limit, each time it comes"
        );
        assert_eq!(
            routes.get(&("7".into(), "q".into())),
            Some(&3),
            "routed outputs are not limited"
        );
        let total: u64 = unrouted.iter().map(|(_, n)| **n).sum();
        assert_eq!(total, distinct as u64 + 4, "counts stay exact");

        let text = page("svc", stats);
        let series = text
            .lines()
            .filter(|l| l.starts_with("slingshot_outputs_unrouted_total{"))
            .count();
        assert_eq!(series, UNROUTED_CASE_LIMIT + 1);
        assert!(
            text.contains(&format!(
                "slingshot_outputs_unrouted_total{{service=\"svc\",case=\"other\",case_kind=\"other\"}} {}\n",
                distinct - UNROUTED_CASE_LIMIT + 1
            )),
            "{}",
            &text[..2000.min(text.len())]
        );
    }

    #[test]
    fn a_string_case_called_other_is_not_the_overflow() {
        let stats = Stats::default();
        stats.count_route(&CaseValue::Str("other".into()), "");
        let routes = stats.routes();
        assert_eq!(routes.get(&("\"other\"".into(), String::new())), Some(&1));
        assert_eq!(routes.get(&("other".into(), String::new())), None);
        let text = page("svc", stats);
        assert!(
            text.contains("slingshot_outputs_unrouted_total{service=\"svc\",case=\"other\",case_kind=\"string\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn the_overflow_is_logged_once() {
        #[derive(Clone, Default)]
        struct Lines(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Lines {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(buf);
                Ok(buf.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let lines = Lines::default();
        let writer = lines.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let stats = Stats::default();
            for i in 0..UNROUTED_CASE_LIMIT + 50 {
                stats.count_route(&CaseValue::Int(i as i128), "");
            }
        });
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        assert_eq!(text.matches("distinct cases").count(), 1, "{text}");
        assert!(text.contains(&format!("this one: {UNROUTED_CASE_LIMIT}")), "{text}");
    }
}
