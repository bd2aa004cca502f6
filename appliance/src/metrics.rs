//! The daemon's counters and histograms for `/metrics` (Prometheus text format 0.0.4).
//!
//! One process-wide registry of plain atomics: the DICOM server, the analysis worker and the
//! forwarder bump them with a single call that never blocks or allocates, and the web console
//! renders them on a scrape. Values that live in the database (queue depth by state, deliveries
//! by state) are read from the store at scrape time, not mirrored here. Nothing here carries a
//! label with patient data: the only labels are fixed state names.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Upper bounds (seconds) of the job latency histogram: an analysis job claimed by the worker
/// to its result stored (series loading, inference, SEG/SR writing), seconds to hours.
pub const JOB_LATENCY_BUCKETS: [f64; 12] = [
    1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0,
];

/// Upper bounds (seconds) of the inference time histogram (ONNX Runtime, one series).
pub const INFERENCE_BUCKETS: [f64; 11] = [
    0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// A cumulative histogram with fixed bucket bounds; the sum is kept in microseconds.
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    fn new(bounds: &'static [f64]) -> Self {
        Self {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    /// Records one observation.
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            if secs <= *bound {
                bucket.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(
            u64::try_from(d.as_micros()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }

    /// Observations so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} histogram");
        for (bound, bucket) in self.bounds.iter().zip(&self.buckets) {
            let _ = writeln!(
                out,
                "{name}_bucket{{le=\"{bound}\"}} {}",
                bucket.load(Ordering::Relaxed)
            );
        }
        let count = self.count();
        let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6;
        let _ = writeln!(out, "{name}_sum {sum}");
        let _ = writeln!(out, "{name}_count {count}");
    }
}

/// The registry; [`global`] is the one the daemon uses.
#[derive(Debug)]
pub struct Metrics {
    /// Instances stored to the spool (C-STORE success).
    pub ingest_instances: AtomicU64,
    /// Bytes of those instances.
    pub ingest_bytes: AtomicU64,
    /// Associations open now.
    pub associations_current: AtomicU64,
    /// Associations accepted since start.
    pub associations_total: AtomicU64,
    /// Associations rejected (peer not allowed, busy, bad request) since start.
    pub associations_rejected: AtomicU64,
    /// Failed delivery attempts since start.
    pub delivery_failures: AtomicU64,
    /// Objects delivered since start.
    pub deliveries_done: AtomicU64,
    /// Analysis job claimed to result stored.
    pub job_latency: Histogram,
    /// Network run time per series.
    pub inference_time: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            ingest_instances: AtomicU64::new(0),
            ingest_bytes: AtomicU64::new(0),
            associations_current: AtomicU64::new(0),
            associations_total: AtomicU64::new(0),
            associations_rejected: AtomicU64::new(0),
            delivery_failures: AtomicU64::new(0),
            deliveries_done: AtomicU64::new(0),
            job_latency: Histogram::new(&JOB_LATENCY_BUCKETS),
            inference_time: Histogram::new(&INFERENCE_BUCKETS),
        }
    }
}

/// The process-wide registry.
pub fn global() -> &'static Metrics {
    static GLOBAL: std::sync::OnceLock<Metrics> = std::sync::OnceLock::new();
    GLOBAL.get_or_init(Metrics::default)
}

/// Holds one "current association" while alive (decrements on drop, also on panic).
#[derive(Debug)]
pub struct AssociationGuard(&'static Metrics);

impl Drop for AssociationGuard {
    fn drop(&mut self) {
        self.0.associations_current.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Metrics {
    /// Counts an accepted association; it is "current" until the guard drops.
    pub fn association_started(&'static self) -> AssociationGuard {
        self.associations_total.fetch_add(1, Ordering::Relaxed);
        self.associations_current.fetch_add(1, Ordering::Relaxed);
        AssociationGuard(self)
    }

    /// Counts a rejected association.
    pub fn association_rejected(&self) {
        self.associations_rejected.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts one stored instance of `bytes`.
    pub fn instance_stored(&self, bytes: u64) {
        self.ingest_instances.fetch_add(1, Ordering::Relaxed);
        self.ingest_bytes.fetch_add(bytes, Ordering::Relaxed);
    }

    /// Counts the outcome of delivery attempts.
    pub fn deliveries(&self, delivered: u64, failed: u64) {
        self.deliveries_done.fetch_add(delivered, Ordering::Relaxed);
        self.delivery_failures.fetch_add(failed, Ordering::Relaxed);
    }

    /// The registry in the Prometheus text format, followed by `gauges` (name, help, labelled
    /// values) read elsewhere (the store) at scrape time.
    pub fn render(&self, gauges: &[Gauge]) -> String {
        let mut out = String::with_capacity(4096);
        let counter = |out: &mut String, name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP {name} {help}");
            let _ = writeln!(out, "# TYPE {name} counter");
            let _ = writeln!(out, "{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            &mut out,
            "vertebra_ingest_instances_total",
            "DICOM instances stored to the spool.",
            &self.ingest_instances,
        );
        counter(
            &mut out,
            "vertebra_ingest_bytes_total",
            "Bytes of DICOM instances stored to the spool.",
            &self.ingest_bytes,
        );
        counter(
            &mut out,
            "vertebra_associations_total",
            "DICOM associations accepted.",
            &self.associations_total,
        );
        counter(
            &mut out,
            "vertebra_associations_rejected_total",
            "DICOM associations rejected or refused.",
            &self.associations_rejected,
        );
        let _ = writeln!(
            out,
            "# HELP vertebra_associations_current DICOM associations open now.\n\
             # TYPE vertebra_associations_current gauge\n\
             vertebra_associations_current {}",
            self.associations_current.load(Ordering::Relaxed)
        );
        counter(
            &mut out,
            "vertebra_deliveries_total",
            "Result objects delivered to destinations.",
            &self.deliveries_done,
        );
        counter(
            &mut out,
            "vertebra_delivery_failures_total",
            "Failed delivery attempts.",
            &self.delivery_failures,
        );
        self.job_latency.render(
            &mut out,
            "vertebra_job_latency_seconds",
            "Time from claiming an analysis job to its stored result.",
        );
        self.inference_time.render(
            &mut out,
            "vertebra_inference_seconds",
            "Network run time per series (ONNX Runtime).",
        );
        for g in gauges {
            let _ = writeln!(out, "# HELP {} {}", g.name, g.help);
            let _ = writeln!(out, "# TYPE {} gauge", g.name);
            for (label, value) in &g.values {
                match label {
                    Some((k, v)) => {
                        let _ = writeln!(out, "{}{{{k}=\"{}\"}} {value}", g.name, escape_label(v));
                    }
                    None => {
                        let _ = writeln!(out, "{} {value}", g.name);
                    }
                }
            }
        }
        out
    }
}

/// A gauge family read at scrape time.
#[derive(Clone, Debug, PartialEq)]
pub struct Gauge {
    /// Metric name.
    pub name: &'static str,
    /// Help text.
    pub help: &'static str,
    /// `(label name, label value)` or none, and the value.
    pub values: Vec<(Option<(&'static str, String)>, f64)>,
}

/// A label value with `\`, `"` and newlines escaped as the text format requires.
fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_buckets_are_cumulative_and_sum_in_seconds() {
        let h = Histogram::new(&INFERENCE_BUCKETS);
        h.observe(Duration::from_millis(300));
        h.observe(Duration::from_secs(7));
        let mut out = String::new();
        h.render(&mut out, "x", "help");
        assert!(out.contains("x_bucket{le=\"0.25\"} 0\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"0.5\"} 1\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"10\"} 2\n"), "{out}");
        assert!(out.contains("x_bucket{le=\"+Inf\"} 2\n"), "{out}");
        assert!(out.contains("x_sum 7.3\n"), "{out}");
        assert!(out.contains("x_count 2\n"), "{out}");
    }

    #[test]
    fn association_guard_counts_current_down_on_drop() {
        let m: &'static Metrics = Box::leak(Box::default());
        let g = m.association_started();
        assert_eq!(m.associations_current.load(Ordering::Relaxed), 1);
        drop(g);
        assert_eq!(m.associations_current.load(Ordering::Relaxed), 0);
        assert_eq!(m.associations_total.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn gauges_escape_label_values() {
        let m = Metrics::default();
        let text = m.render(&[Gauge {
            name: "g",
            help: "h",
            values: vec![(Some(("state", "a\"b".into())), 2.0)],
        }]);
        assert!(text.contains("g{state=\"a\\\"b\"} 2\n"), "{text}");
    }
}
