//! Prometheus metrics (the OpenMetrics text format, with the prometheus-client crate): fault
//! counters by process name, kind, mode and cgroup, latency histograms, faults per file.
//! Series are capped: past the cap, new label sets add to one `_other` series, so memory
//! stays flat however many processes come and go, and no counter ever goes backwards.

use std::{collections::HashSet, sync::Mutex};

use pfault_common::{hist_bucket_floor, HIST_BUCKETS};
use prometheus_client::{
    encoding::{text::encode, EncodeLabelSet, EncodeMetric, MetricEncoder, NoLabelSet},
    metrics::{counter::Counter, family::Family, MetricType, TypedMetric},
    registry::Registry,
};

/// The label set of a fault counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FaultLabels {
    pub(crate) comm: String,
    pub(crate) kind: String,
    pub(crate) mode: String,
    pub(crate) cgroup: String,
}

/// The label set of a latency histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LatencyLabels {
    pub(crate) comm: String,
    pub(crate) cgroup: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct FileLabels {
    pub(crate) file: String,
    pub(crate) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct LossLabels {
    pub(crate) what: String,
}

/// What stands for every label value past a cap.
pub(crate) const OTHER: &str = "_other";

/// Upper bounds of the latency buckets, seconds: 1 us doubling to about 8 s.
fn bounds() -> impl Iterator<Item = f64> {
    (0..24).map(|i| 1e-6 * (1u64 << i) as f64)
}

/// A latency histogram fed from the kernel's log-linear buckets (about 19% wide): each
/// kernel bucket lands in the Prometheus bucket that holds its lower bound.
#[derive(Debug, Default)]
pub(crate) struct Latency(Mutex<LatencyState>);

#[derive(Debug, Default)]
struct LatencyState {
    counts: Vec<u64>,
    sum_s: f64,
    count: u64,
}

impl Latency {
    pub(crate) fn add(&self, hist: &[u64; HIST_BUCKETS], sum_ns: u64) {
        let bounds: Vec<f64> = bounds().collect();
        let mut s = self.0.lock().unwrap();
        if s.counts.is_empty() {
            s.counts = vec![0; bounds.len() + 1];
        }
        for (i, &n) in hist.iter().enumerate().filter(|(_, n)| **n > 0) {
            let secs = hist_bucket_floor(i) as f64 / 1e9;
            let b = bounds.iter().position(|&ub| secs <= ub).unwrap_or(bounds.len());
            s.counts[b] += n;
            s.count += n;
        }
        s.sum_s += sum_ns as f64 / 1e9;
    }
}

impl TypedMetric for Latency {
    const TYPE: MetricType = MetricType::Histogram;
}

impl EncodeMetric for Latency {
    fn encode(&self, mut encoder: MetricEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap();
        let mut buckets: Vec<(f64, u64)> = bounds().zip(s.counts.iter().copied()).collect();
        buckets.push((f64::INFINITY, s.counts.last().copied().unwrap_or(0)));
        encoder.encode_histogram::<NoLabelSet>(s.sum_s, s.count, &buckets, None)
    }

    fn metric_type(&self) -> MetricType {
        Self::TYPE
    }
}

/// Every metric the exporter serves.
pub(crate) struct Metrics {
    registry: Registry,
    faults: Family<FaultLabels, Counter>,
    latency: Family<LatencyLabels, Latency>,
    files: Family<FileLabels, Counter>,
    lost: Family<LossLabels, Counter>,
    /// Label sets with a series of their own.
    fault_series: HashSet<FaultLabels>,
    latency_series: HashSet<LatencyLabels>,
    file_series: HashSet<String>,
    max_series: usize,
    max_files: usize,
}

impl Metrics {
    pub(crate) fn new(max_series: usize, max_files: usize) -> Metrics {
        let mut registry = Registry::default();
        let faults = Family::<FaultLabels, Counter>::default();
        let latency = Family::<LatencyLabels, Latency>::default();
        let files = Family::<FileLabels, Counter>::default();
        let lost = Family::<LossLabels, Counter>::default();
        registry.register(
            "pfault_page_faults",
            "Page faults by process name, kind (minor, major, error), mode (user, kernel) and cgroup",
            faults.clone(),
        );
        registry.register(
            "pfault_page_fault_latency_seconds",
            "Time from a fault's entry to its completion, by process name and cgroup (-L)",
            latency.clone(),
        );
        registry.register(
            "pfault_file_page_faults",
            "Page faults by file and kind, the first --max-files files apart (--by-file)",
            files.clone(),
        );
        registry.register(
            "pfault_lost",
            "What the kernel side could not record, by what it was",
            lost.clone(),
        );
        Metrics {
            registry,
            faults,
            latency,
            files,
            lost,
            fault_series: HashSet::new(),
            latency_series: HashSet::new(),
            file_series: HashSet::new(),
            max_series,
            max_files,
        }
    }

    /// Adds `n` faults; a label set past the cap adds to the `_other` process name.
    pub(crate) fn add_faults(&mut self, mut labels: FaultLabels, n: u64) {
        if n == 0 {
            return;
        }
        if !self.fault_series.contains(&labels) {
            if self.fault_series.len() >= self.max_series {
                labels.comm = OTHER.into();
                labels.cgroup = OTHER.into();
            }
            self.fault_series.insert(labels.clone());
        }
        self.faults.get_or_create(&labels).inc_by(n);
    }

    pub(crate) fn add_latency(&mut self, mut labels: LatencyLabels, hist: &[u64; HIST_BUCKETS], sum_ns: u64) {
        if !self.latency_series.contains(&labels) {
            if self.latency_series.len() >= self.max_series {
                labels = LatencyLabels {
                    comm: OTHER.into(),
                    cgroup: OTHER.into(),
                };
            }
            self.latency_series.insert(labels.clone());
        }
        self.latency.get_or_create(&labels).add(hist, sum_ns);
    }

    /// Adds faults on `file`: the first `max_files` files get a series each, later ones add
    /// to `file="_other"` (a file never moves between the two, so none goes backwards).
    pub(crate) fn add_file_faults(&mut self, file: &str, kind: &str, n: u64) {
        if n == 0 {
            return;
        }
        let file = if self.file_series.contains(file) || self.file_series.len() < self.max_files {
            self.file_series.insert(file.to_string());
            file
        } else {
            OTHER
        };
        let labels = FileLabels {
            file: file.into(),
            kind: kind.into(),
        };
        self.files.get_or_create(&labels).inc_by(n);
    }

    /// Sets a loss counter to the kernel's running total (which never goes backwards).
    pub(crate) fn set_lost(&mut self, what: &str, total: u64) {
        let c = self.lost.get_or_create(&LossLabels { what: what.into() });
        let now = c.get();
        if total > now {
            c.inc_by(total - now);
        }
    }

    /// The OpenMetrics text of every metric.
    pub(crate) fn encode(&self) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(comm: &str) -> FaultLabels {
        FaultLabels {
            comm: comm.into(),
            kind: "minor".into(),
            mode: "user".into(),
            cgroup: "/".into(),
        }
    }

    #[test]
    fn counters_add_up_and_past_the_cap_go_to_other() {
        let mut m = Metrics::new(2, 1);
        m.add_faults(labels("a"), 5);
        m.add_faults(labels("a"), 2);
        m.add_faults(labels("b"), 1);
        m.add_faults(labels("c"), 4);
        m.add_faults(labels("d"), 6);
        m.add_file_faults("/lib/x.so", "major", 3);
        m.add_file_faults("/lib/y.so", "major", 9);
        let text = m.encode();
        assert!(
            text.contains(r#"pfault_page_faults_total{comm="a",kind="minor",mode="user",cgroup="/"} 7"#),
            "{text}"
        );
        assert!(
            text.contains(r#"comm="_other",kind="minor",mode="user",cgroup="_other"} 10"#),
            "{text}"
        );
        assert!(!text.contains(r#"comm="c""#), "{text}");
        assert!(
            text.contains(r#"pfault_file_page_faults_total{file="/lib/x.so",kind="major"} 3"#),
            "{text}"
        );
        assert!(
            text.contains(r#"pfault_file_page_faults_total{file="_other",kind="major"} 9"#),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
    }

    #[test]
    fn latency_buckets_are_cumulative_and_count_everything() {
        let m = Metrics::new(10, 10);
        let mut hist = [0u64; HIST_BUCKETS];
        // 3 faults near 2 us, 1 near 1 ms.
        hist[pfault_common::hist_bucket(2_000)] = 3;
        hist[pfault_common::hist_bucket(1_000_000)] = 1;
        let l = LatencyLabels {
            comm: "a".into(),
            cgroup: "/".into(),
        };
        let mut m = m;
        m.add_latency(l, &hist, 1_006_000);
        let text = m.encode();
        assert!(
            text.contains(r#"pfault_page_fault_latency_seconds_count{comm="a",cgroup="/"} 4"#),
            "{text}"
        );
        assert!(text.contains(r#"le="0.000002",comm="a",cgroup="/"} 3"#), "{text}");
        assert!(text.contains(r#"le="0.001024",comm="a",cgroup="/"} 4"#), "{text}");
        assert!(text.contains(r#"le="+Inf",comm="a",cgroup="/"} 4"#), "{text}");
    }
}
