//! Prometheus metrics in the text exposition format: reconciliations,
//! their durations and errors per kind, scans, Git pushes, admission
//! answers, and the process's own figures (from /proc). A small registry of
//! counters and histograms; no global state.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Mutex;
use std::time::Duration;

/// Histogram buckets, in seconds.
const BUCKETS: &[f64] = &[
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

#[derive(Default)]
struct Histogram {
    counts: Vec<u64>,
    sum: f64,
    count: u64,
}

impl Histogram {
    fn observe(&mut self, seconds: f64) {
        if self.counts.is_empty() {
            self.counts = vec![0; BUCKETS.len()];
        }
        for (i, b) in BUCKETS.iter().enumerate() {
            if seconds <= *b {
                self.counts[i] += 1;
            }
        }
        self.sum += seconds;
        self.count += 1;
    }
}

type Labels = Vec<(&'static str, String)>;

#[derive(Default)]
struct Inner {
    counters: BTreeMap<(&'static str, Labels), u64>,
    histograms: BTreeMap<(&'static str, Labels), Histogram>,
    gauges: BTreeMap<(&'static str, Labels), f64>,
}

/// The process's metrics.
pub struct Metrics {
    inner: Mutex<Inner>,
    started: std::time::SystemTime,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner::default()),
            started: std::time::SystemTime::now(),
        }
    }
}

const HELP: &[(&str, &str, &str)] = &[
    (
        "imageauto_reconcile_total",
        "counter",
        "Reconciliations by kind and result.",
    ),
    (
        "imageauto_reconcile_errors_total",
        "counter",
        "Failed reconciliations by kind and reason.",
    ),
    (
        "imageauto_reconcile_duration_seconds",
        "histogram",
        "Reconciliation time by kind.",
    ),
    (
        "imageauto_scan_total",
        "counter",
        "Registry scans by result.",
    ),
    (
        "imageauto_scan_duration_seconds",
        "histogram",
        "Registry scan time.",
    ),
    (
        "imageauto_git_push_total",
        "counter",
        "Git pushes by result.",
    ),
    (
        "imageauto_admission_total",
        "counter",
        "Admission answers by rule and result.",
    ),
    (
        "imageauto_admission_duration_seconds",
        "histogram",
        "Admission answer time by rule.",
    ),
    (
        "imageauto_receiver_events_total",
        "counter",
        "Receiver requests by result.",
    ),
    (
        "imageauto_leader",
        "gauge",
        "1 while this process holds the leader lease.",
    ),
];

impl Metrics {
    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    pub fn inc(&self, name: &'static str, labels: &[(&'static str, &str)]) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        );
        *self.lock().counters.entry(key).or_default() += 1;
    }

    pub fn observe(&self, name: &'static str, labels: &[(&'static str, &str)], d: Duration) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        );
        self.lock()
            .histograms
            .entry(key)
            .or_default()
            .observe(d.as_secs_f64());
    }

    pub fn set(&self, name: &'static str, labels: &[(&'static str, &str)], v: f64) {
        let key = (
            name,
            labels.iter().map(|(k, v)| (*k, v.to_string())).collect(),
        );
        self.lock().gauges.insert(key, v);
    }

    /// A reconciliation's outcome: count, duration, and its error reason.
    pub fn reconciled(&self, kind: &str, d: Duration, error: Option<&str>) {
        let result = if error.is_some() { "error" } else { "success" };
        self.inc(
            "imageauto_reconcile_total",
            &[("kind", kind), ("result", result)],
        );
        self.observe("imageauto_reconcile_duration_seconds", &[("kind", kind)], d);
        if let Some(reason) = error {
            self.inc(
                "imageauto_reconcile_errors_total",
                &[("kind", kind), ("reason", reason)],
            );
        }
    }

    /// The text exposition of every metric.
    pub fn render(&self) -> String {
        let inner = self.lock();
        let mut out = String::new();
        let labels = |l: &Labels, extra: Option<(&str, String)>| {
            let mut parts: Vec<String> = l
                .iter()
                .map(|(k, v)| format!("{k}=\"{}\"", escape(v)))
                .collect();
            if let Some((k, v)) = extra {
                parts.push(format!("{k}=\"{v}\""));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", parts.join(","))
            }
        };
        for (name, kind, help) in HELP {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((n, l), v) in &inner.counters {
                if n == name {
                    let _ = writeln!(out, "{name}{} {v}", labels(l, None));
                }
            }
            for ((n, l), v) in &inner.gauges {
                if n == name {
                    let _ = writeln!(out, "{name}{} {v}", labels(l, None));
                }
            }
            for ((n, l), h) in &inner.histograms {
                if n != name {
                    continue;
                }
                for (i, b) in BUCKETS.iter().enumerate() {
                    let c = h.counts.get(i).copied().unwrap_or(0);
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {c}",
                        labels(l, Some(("le", b.to_string())))
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    labels(l, Some(("le", "+Inf".into()))),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", labels(l, None), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", labels(l, None), h.count);
            }
        }
        drop(inner);
        process(&mut out, self.started);
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// process_* metrics from /proc/self (Linux), as Prometheus clients name them.
fn process(out: &mut String, started: std::time::SystemTime) {
    let page = 4096.0;
    let ticks = 100.0;
    if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
        let f: Vec<f64> = statm
            .split_whitespace()
            .filter_map(|x| x.parse().ok())
            .collect();
        if f.len() >= 2 {
            let _ = writeln!(
                out,
                "# HELP process_virtual_memory_bytes Virtual memory size in bytes.\n# TYPE process_virtual_memory_bytes gauge\nprocess_virtual_memory_bytes {}",
                f[0] * page
            );
            let _ = writeln!(
                out,
                "# HELP process_resident_memory_bytes Resident memory size in bytes.\n# TYPE process_resident_memory_bytes gauge\nprocess_resident_memory_bytes {}",
                f[1] * page
            );
        }
    }
    if let Ok(stat) = std::fs::read_to_string("/proc/self/stat")
        && let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r)
    {
        let f: Vec<&str> = rest.split_whitespace().collect();
        // Fields after the command: utime is the 12th, stime the 13th.
        if f.len() > 13 {
            let cpu =
                (f[11].parse::<f64>().unwrap_or(0.0) + f[12].parse::<f64>().unwrap_or(0.0)) / ticks;
            let _ = writeln!(
                out,
                "# HELP process_cpu_seconds_total Total user and system CPU time spent in seconds.\n# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total {cpu}"
            );
        }
    }
    if let Ok(fds) = std::fs::read_dir("/proc/self/fd") {
        let _ = writeln!(
            out,
            "# HELP process_open_fds Number of open file descriptors.\n# TYPE process_open_fds gauge\nprocess_open_fds {}",
            fds.count()
        );
    }
    if let Ok(d) = started.duration_since(std::time::UNIX_EPOCH) {
        let _ = writeln!(
            out,
            "# HELP process_start_time_seconds Start time of the process since unix epoch in seconds.\n# TYPE process_start_time_seconds gauge\nprocess_start_time_seconds {}",
            d.as_secs()
        );
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
        m.inc("imageauto_git_push_total", &[("result", "pushed")]);
        let t = m.render();
        assert!(
            t.contains("imageauto_reconcile_total{kind=\"ImagePolicy\",result=\"success\"} 1"),
            "{t}"
        );
        assert!(t.contains(
            "imageauto_reconcile_errors_total{kind=\"ImagePolicy\",reason=\"InvalidPolicy\"} 1"
        ));
        assert!(t.contains(
            "imageauto_reconcile_duration_seconds_bucket{kind=\"ImagePolicy\",le=\"0.005\"} 1"
        ));
        assert!(t.contains("imageauto_reconcile_duration_seconds_count{kind=\"ImagePolicy\"} 2"));
        assert!(t.contains("imageauto_git_push_total{result=\"pushed\"} 1"));
        assert!(t.contains("process_resident_memory_bytes "));
        assert!(t.contains("# TYPE imageauto_scan_total counter"));
    }
}
