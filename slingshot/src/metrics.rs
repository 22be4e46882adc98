//! Live counters and histograms of each service, and their Prometheus text exposition.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::case::CaseValue;

/// Upper bounds (seconds) of the duration histograms' buckets.
const BUCKETS: [f64; 14] = [
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// A Prometheus histogram of durations with fixed buckets.
#[derive(Debug, Default)]
pub struct Histogram {
    buckets: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    /// Records one duration.
    pub fn observe(&self, duration: Duration) {
        let seconds = duration.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|bound| seconds <= *bound) {
            self.buckets[i].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        let micros = u64::try_from(duration.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// How many durations were recorded.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (bound, bucket) in BUCKETS.iter().zip(&self.buckets) {
            cumulative += bucket.load(Ordering::Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels},le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{{labels},le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum{{{labels}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{labels}}} {count}");
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
    routes: Mutex<BTreeMap<(CaseValue, String), u64>>,
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

    fn lock_routes(&self) -> std::sync::MutexGuard<'_, BTreeMap<(CaseValue, String), u64>> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Reads a counter.
    pub fn get(counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}

fn escape(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// The case as a label value: its JSON text without string quotes, with its kind beside it.
fn case_labels(case: &CaseValue) -> String {
    let value = match case {
        CaseValue::Str(s) => s.to_string(),
        other => other.to_string(),
    };
    format!("case=\"{}\",case_kind=\"{}\"", escape(&value), case.kind())
}

/// Renders every service's metrics in the Prometheus text format.
pub fn render(services: &[(&str, &Stats)]) -> String {
    let mut out = String::new();
    type Counter = fn(&Stats) -> &AtomicU64;
    let counters: [(&str, &str, Counter); 8] = [
        (
            "slingshot_messages_consumed_total",
            "Deliveries taken from the inbound queue.",
            |s| &s.consumed,
        ),
        (
            "slingshot_messages_acked_total",
            "Requests processed and acknowledged.",
            |s| &s.processed,
        ),
        (
            "slingshot_messages_retried_total",
            "Requests sent back for another attempt.",
            |s| &s.retried,
        ),
        (
            "slingshot_messages_dead_lettered_total",
            "Requests sent to the dead-letter queue.",
            |s| &s.dead_lettered,
        ),
        (
            "slingshot_outputs_published_total",
            "Output messages confirmed by the broker.",
            |s| &s.published,
        ),
        ("slingshot_objects_written_total", "Objects uploaded.", |s| {
            &s.objects_written
        }),
        (
            "slingshot_s3_bytes_written_total",
            "Bytes uploaded to object storage.",
            |s| &s.bytes_written,
        ),
        (
            "slingshot_s3_bytes_read_total",
            "Bytes read from object storage.",
            |s| &s.bytes_read,
        ),
    ];
    for (name, help, counter) in counters {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} counter");
        for (service, stats) in services {
            let _ = writeln!(
                out,
                "{name}{{service=\"{}\"}} {}",
                escape(service),
                Stats::get(counter(stats))
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP slingshot_in_flight Requests being processed.\n# TYPE slingshot_in_flight gauge"
    );
    for (service, stats) in services {
        let _ = writeln!(
            out,
            "slingshot_in_flight{{service=\"{}\"}} {}",
            escape(service),
            Stats::get(&stats.in_flight)
        );
    }
    let _ = writeln!(
        out,
        "# HELP slingshot_ready Whether the service is consuming.\n# TYPE slingshot_ready gauge"
    );
    for (service, stats) in services {
        let ready = u8::from(stats.consuming.load(Ordering::Relaxed));
        let _ = writeln!(out, "slingshot_ready{{service=\"{}\"}} {ready}", escape(service));
    }
    let _ = writeln!(
        out,
        "# HELP slingshot_outputs_routed_total Outputs sent, by case and queue.\n# TYPE slingshot_outputs_routed_total counter"
    );
    for (service, stats) in services {
        for ((case, queue), n) in stats.lock_routes().iter().filter(|((_, q), _)| !q.is_empty()) {
            let _ = writeln!(
                out,
                "slingshot_outputs_routed_total{{service=\"{}\",{},queue=\"{}\"}} {n}",
                escape(service),
                case_labels(case),
                escape(queue)
            );
        }
    }
    let _ = writeln!(
        out,
        "# HELP slingshot_outputs_unrouted_total Outputs whose case has no route.\n# TYPE slingshot_outputs_unrouted_total counter"
    );
    for (service, stats) in services {
        for ((case, _), n) in stats.lock_routes().iter().filter(|((_, q), _)| q.is_empty()) {
            let _ = writeln!(
                out,
                "slingshot_outputs_unrouted_total{{service=\"{}\",{}}} {n}",
                escape(service),
                case_labels(case)
            );
        }
    }
    for (name, help, pick) in [
        (
            "slingshot_process_duration_seconds",
            "Time spent in process, uploads excluded.",
            (|s: &Stats| &s.process_duration) as fn(&Stats) -> &Histogram,
        ),
        (
            "slingshot_publish_confirm_seconds",
            "Time from publish to broker confirm.",
            |s: &Stats| &s.confirm_latency,
        ),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        for (service, stats) in services {
            pick(stats).render(&mut out, name, &format!("service=\"{}\"", escape(service)));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative() {
        let h = Histogram::default();
        h.observe(Duration::from_micros(300));
        h.observe(Duration::from_millis(3));
        h.observe(Duration::from_secs(60));
        let mut out = String::new();
        h.render(&mut out, "x", "service=\"s\"");
        assert!(out.contains("x_bucket{service=\"s\",le=\"0.0005\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{service=\"s\",le=\"0.005\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{service=\"s\",le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{service=\"s\",le=\"+Inf\"} 3\n"), "{out}");
        assert!(out.contains("x_count{service=\"s\"} 3\n"), "{out}");
    }

    #[test]
    fn routes_render_with_case_kind_and_escaped_labels() {
        let stats = Stats::default();
        stats.count_route(&CaseValue::Str("say \"hi\"".into()), "q1");
        stats.count_route(&CaseValue::Bool(false), "");
        stats.processed.store(5, Ordering::Relaxed);
        let text = render(&[("svc", &stats)]);
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
