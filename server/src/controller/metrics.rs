//! Prometheus metrics: reconciliations, their durations and errors per
//! kind, scans, Git pushes, admission answers, Receiver requests, the
//! leader gauge, and the process's own figures. Typed families of
//! `prometheus-client` (a metric or label misspelt does not compile); the
//! process figures are read with `procfs`. No global state.

use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::time::{Duration, SystemTime};

/// Histogram buckets, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

fn histogram() -> Histogram {
    Histogram::new(BUCKETS)
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindResult {
    kind: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindReason {
    kind: &'static str,
    reason: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct KindLabel {
    kind: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabel {
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleResult {
    rule: &'static str,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RuleLabel {
    rule: &'static str,
}

/// The process's metrics.
pub struct Metrics {
    registry: Registry,
    reconcile: Family<KindResult, Counter>,
    reconcile_errors: Family<KindReason, Counter>,
    reconcile_duration: Histograms<KindLabel>,
    scans: Family<ResultLabel, Counter>,
    scan_duration: Histogram,
    pushes: Family<ResultLabel, Counter>,
    admission: Family<RuleResult, Counter>,
    admission_duration: Histograms<RuleLabel>,
    receiver_events: Family<ResultLabel, Counter>,
    leader: Gauge,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let reconcile = Family::default();
        let reconcile_errors = Family::default();
        let reconcile_duration = Histograms::new_with_constructor(histogram as fn() -> Histogram);
        let scans = Family::default();
        let scan_duration = histogram();
        let pushes = Family::default();
        let admission = Family::default();
        let admission_duration = Histograms::new_with_constructor(histogram as fn() -> Histogram);
        let receiver_events = Family::default();
        let leader = Gauge::default();
        let r = &mut registry;
        r.register(
            "imageauto_reconcile",
            "Reconciliations by kind and result",
            reconcile.clone(),
        );
        r.register(
            "imageauto_reconcile_errors",
            "Failed reconciliations by kind and reason",
            reconcile_errors.clone(),
        );
        r.register(
            "imageauto_reconcile_duration_seconds",
            "Reconciliation time by kind",
            reconcile_duration.clone(),
        );
        r.register("imageauto_scan", "Registry scans by result.", scans.clone());
        r.register(
            "imageauto_scan_duration_seconds",
            "Registry scan time",
            scan_duration.clone(),
        );
        r.register("imageauto_git_push", "Git pushes by result", pushes.clone());
        r.register(
            "imageauto_admission",
            "Admission answers by rule and result",
            admission.clone(),
        );
        r.register(
            "imageauto_admission_duration_seconds",
            "Admission answer time by rule",
            admission_duration.clone(),
        );
        r.register(
            "imageauto_receiver_events",
            "Receiver requests by result",
            receiver_events.clone(),
        );
        r.register(
            "imageauto_leader",
            "1 while this process holds the leader lease",
            leader.clone(),
        );
        r.register_collector(Box::new(Process {
            started: SystemTime::now(),
        }));
        Self {
            registry,
            reconcile,
            reconcile_errors,
            reconcile_duration,
            scans,
            scan_duration,
            pushes,
            admission,
            admission_duration,
            receiver_events,
            leader,
        }
    }
}

impl Metrics {
    /// A reconciliation's outcome: count, duration, and its error reason.
    pub fn reconciled(&self, kind: &'static str, d: Duration, error: Option<&'static str>) {
        let result = if error.is_some() { "error" } else { "success" };
        self.reconcile
            .get_or_create(&KindResult { kind, result })
            .inc();
        self.reconcile_duration
            .get_or_create(&KindLabel { kind })
            .observe(d.as_secs_f64());
        if let Some(reason) = error {
            self.reconcile_errors
                .get_or_create(&KindReason { kind, reason })
                .inc();
        }
    }

    /// A registry scan: `success`, or the reason of its failure.
    pub fn scanned(&self, result: &'static str, d: Duration) {
        self.scan_duration.observe(d.as_secs_f64());
        self.scans.get_or_create(&ResultLabel { result }).inc();
    }

    /// A push to Git, done or failed.
    pub fn pushed(&self, done: bool) {
        let result = if done { "pushed" } else { "failed" };
        self.pushes.get_or_create(&ResultLabel { result }).inc();
    }

    /// An admission answer of `rule`.
    pub fn admitted(&self, rule: &'static str, result: &'static str, d: Duration) {
        self.admission
            .get_or_create(&RuleResult { rule, result })
            .inc();
        self.admission_duration
            .get_or_create(&RuleLabel { rule })
            .observe(d.as_secs_f64());
    }

    /// A request to a Receiver's path, by what was answered.
    pub fn receiver_event(&self, result: &'static str) {
        self.receiver_events
            .get_or_create(&ResultLabel { result })
            .inc();
    }

    /// Whether this process leads.
    pub fn leading(&self, leads: bool) {
        self.leader.set(i64::from(leads));
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// The process's own figures, as Prometheus clients name them, read at
/// each scrape.
#[derive(Debug)]
struct Process {
    started: SystemTime,
}

impl prometheus_client::collector::Collector for Process {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        fn gauge(
            encoder: &mut DescriptorEncoder,
            name: &str,
            help: &str,
            value: f64,
        ) -> Result<(), std::fmt::Error> {
            let g = ConstGauge::new(value);
            g.encode(encoder.encode_descriptor(name, help, None, g.metric_type())?)
        }
        use procfs::WithCurrentSystemInfo as _;
        if let Ok(me) = procfs::process::Process::myself() {
            if let Ok(stat) = me.stat() {
                let ticks = procfs::ticks_per_second() as f64;
                let cpu = ConstCounter::new((stat.utime + stat.stime) as f64 / ticks);
                cpu.encode(encoder.encode_descriptor(
                    "process_cpu_seconds",
                    "Total user and system CPU time spent in seconds",
                    None,
                    cpu.metric_type(),
                )?)?;
                gauge(
                    &mut encoder,
                    "process_virtual_memory_bytes",
                    "Virtual memory size in bytes",
                    stat.vsize as f64,
                )?;
                gauge(
                    &mut encoder,
                    "process_resident_memory_bytes",
                    "Resident memory size in bytes",
                    stat.rss_bytes().get() as f64,
                )?;
            }
            if let Ok(n) = me.fd_count() {
                gauge(
                    &mut encoder,
                    "process_open_fds",
                    "Number of open file descriptors",
                    n as f64,
                )?;
            }
        }
        if let Ok(d) = self.started.duration_since(SystemTime::UNIX_EPOCH) {
            gauge(
                &mut encoder,
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds",
                d.as_secs() as f64,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposition() {
        let m = Metrics::default();
        m.reconciled("ImagePolicy", Duration::from_millis(3), None);
        m.reconciled(
            "ImagePolicy",
            Duration::from_millis(30),
            Some("InvalidPolicy"),
        );
        m.pushed(true);
        m.leading(true);
        m.scanned("success", Duration::from_millis(40));
        let t = m.render();
        assert!(
            t.contains("imageauto_reconcile_total{kind=\"ImagePolicy\",result=\"success\"} 1"),
            "{t}"
        );
        assert!(t.contains(
            "imageauto_reconcile_errors_total{kind=\"ImagePolicy\",reason=\"InvalidPolicy\"} 1"
        ));
        assert!(
            t.contains(
                "imageauto_reconcile_duration_seconds_bucket{le=\"0.005\",kind=\"ImagePolicy\"} 1"
            ),
            "{t}"
        );
        assert!(t.contains("imageauto_reconcile_duration_seconds_count{kind=\"ImagePolicy\"} 2"));
        assert!(t.contains("imageauto_git_push_total{result=\"pushed\"} 1"));
        assert!(t.contains("imageauto_leader 1"), "{t}");
        let rss = t
            .lines()
            .find_map(|l| l.strip_prefix("process_resident_memory_bytes "))
            .and_then(|v| v.parse::<f64>().ok());
        assert!(rss.is_some_and(|b| b > 1e6), "{t}");
        assert!(t.contains("process_cpu_seconds_total "), "{t}");
        assert!(t.contains("# TYPE imageauto_scan counter"), "{t}");
        assert!(
            t.contains("imageauto_scan_total{result=\"success\"} 1"),
            "{t}"
        );
        assert!(t.contains("imageauto_scan_duration_seconds_count 1"), "{t}");
        assert!(t.ends_with("# EOF\n"), "{t}");
    }
}
