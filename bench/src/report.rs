//! Results: named metrics with units, problems seen, a human summary and one JSON line; and the
//! side-by-side comparison of two reports.

use serde_json::{Map, Value, json};

use crate::procfs::{CpuUse, Who, peak_rss_bytes, rss_bytes, summed};
use crate::stats::Summary;

/// Which direction of a metric is an improvement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Better {
    Higher,
    Lower,
    /// Informational (no ratio shown as an advantage).
    Neither,
}

/// One measured figure.
#[derive(Debug, Clone)]
pub struct Metric {
    pub key: String,
    pub label: String,
    pub value: f64,
    pub unit: &'static str,
    pub better: Better,
}

/// What one scenario run against one server measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub scenario: &'static str,
    /// Which server (`ours`, `reference`) when known, else the URL.
    pub server: String,
    pub params: Map<String, Value>,
    pub metrics: Vec<Metric>,
    /// Informational remarks (not failures).
    pub notes: Vec<String>,
    /// Anything that broke a promise or the run: errors, lost or duplicated messages, failures.
    pub problems: Vec<String>,
    /// Figures sampled over time (one row per sample, the same keys in every row), printed
    /// as a table.
    pub series: Vec<Map<String, Value>>,
}

impl Report {
    pub fn new(scenario: &'static str, server: impl Into<String>) -> Self {
        Self {
            scenario,
            server: server.into(),
            params: Map::new(),
            metrics: Vec::new(),
            notes: Vec::new(),
            problems: Vec::new(),
            series: Vec::new(),
        }
    }

    /// The server's resident memory now and its peak since it started (`VmHWM`), when its
    /// pid is known. With several processes: the sums, and each one's as `.p1`, `.p2`, ...
    pub fn server_memory(&mut self, pids: &[u32]) {
        let figures = [
            (
                "server_rss_mb",
                "server RSS at the end",
                rss_bytes as fn(Who) -> _,
            ),
            (
                "server_peak_rss_mb",
                "server peak RSS (since it started)",
                peak_rss_bytes,
            ),
        ];
        for (key, label, read) in figures {
            let (sum, each) = summed(pids, read);
            if let Some(sum) = sum {
                let label = if pids.len() > 1 {
                    format!("{label}, sum of {} processes", pids.len())
                } else {
                    label.to_string()
                };
                self.metric(key, label, sum as f64 / 1e6, "MB", Better::Lower);
            }
            self.per_process(key, label, &each, |bytes| bytes as f64 / 1e6, "MB");
        }
    }

    /// `{key}.pN` for each process's figure, when there are several.
    fn per_process<T: Copy>(
        &mut self,
        key: &str,
        label: &str,
        each: &[Option<T>],
        value: impl Fn(T) -> f64,
        unit: &'static str,
    ) {
        if each.len() < 2 {
            return;
        }
        for (i, figure) in each.iter().enumerate() {
            if let Some(figure) = figure {
                self.metric(
                    format!("{key}.p{}", i + 1),
                    format!("{label}: process {}", i + 1),
                    value(*figure),
                    unit,
                    Better::Neither,
                );
            }
        }
    }

    pub fn param(&mut self, key: &str, value: impl Into<Value>) {
        self.params.insert(key.to_string(), value.into());
    }

    pub fn metric(
        &mut self,
        key: impl Into<String>,
        label: impl Into<String>,
        value: f64,
        unit: &'static str,
        better: Better,
    ) {
        self.metrics.push(Metric {
            key: key.into(),
            label: label.into(),
            value,
            unit,
            better,
        });
    }

    /// p50, p99 and max of a latency histogram, as `{prefix}_p50_ms` etc.
    pub fn latency(&mut self, prefix: &str, label: &str, s: &Summary, suffix: &str) {
        self.metric(
            format!("{prefix}_p50_ms{suffix}"),
            format!("{label} p50{suffix}"),
            s.p50_ms(),
            "ms",
            Better::Lower,
        );
        self.metric(
            format!("{prefix}_p99_ms{suffix}"),
            format!("{label} p99{suffix}"),
            s.p99_ms(),
            "ms",
            Better::Lower,
        );
        self.metric(
            format!("{prefix}_max_ms{suffix}"),
            format!("{label} max{suffix}"),
            s.max_ms(),
            "ms",
            Better::Lower,
        );
    }

    /// Server CPU per unit of work (when the server's pid is known) and the bench's own CPU
    /// use, which tells whether the client was the bottleneck. With several server processes
    /// the figures are over their sum, and each process's share follows as `.p1`, `.p2`, ...
    pub fn cpu(&mut self, cpu: &CpuUse, units: f64, per: &str, suffix: &str) {
        let wall_s = cpu.wall_s.max(1e-9);
        if let Some(server_s) = cpu.server_s {
            if units > 0.0 {
                self.metric(
                    format!("server_cpu_us_per_{per}{suffix}"),
                    format!("server CPU per {per}{suffix}"),
                    server_s * 1e6 / units,
                    "µs",
                    Better::Lower,
                );
            }
            self.metric(
                format!("server_cpu_cores{suffix}"),
                format!("server CPU use{suffix}"),
                server_s / wall_s,
                "cores",
                Better::Neither,
            );
        }
        if units > 0.0 {
            self.per_process(
                &format!("server_cpu_us_per_{per}{suffix}"),
                &format!("server CPU per {per}{suffix}"),
                &cpu.server_each_s,
                |s| s * 1e6 / units,
                "µs",
            );
        }
        self.per_process(
            &format!("server_cpu_cores{suffix}"),
            &format!("server CPU use{suffix}"),
            &cpu.server_each_s,
            |s| s / wall_s,
            "cores",
        );
        if cpu.wall_s < 3.0 {
            self.notes.push(format!(
                "CPU figures{suffix} come from 10 ms kernel ticks over {:.2} s: too short to be precise",
                cpu.wall_s
            ));
        }
        self.metric(
            format!("bench_cpu_cores{suffix}"),
            format!("bench CPU use{suffix}"),
            cpu.bench_cores(),
            "cores",
            Better::Neither,
        );
        if let Some(others) = cpu.others_cores() {
            self.metric(
                format!("others_cpu_cores{suffix}"),
                format!("other processes' CPU use{suffix}"),
                others,
                "cores",
                Better::Neither,
            );
            if others > 0.25 {
                self.notes.push(format!(
                    "other processes used {others:.2} cores during the run{suffix}: figures may be disturbed"
                ));
            }
        }
    }

    pub fn get(&self, key: &str) -> Option<f64> {
        self.metrics.iter().find(|m| m.key == key).map(|m| m.value)
    }

    pub fn print_human(&self) {
        println!();
        println!("== {} against {}", self.scenario, self.server);
        if !self.params.is_empty() {
            println!("   {}", Value::Object(self.params.clone()));
        }
        let width = self
            .metrics
            .iter()
            .map(|m| m.label.chars().count())
            .max()
            .unwrap_or(0);
        for m in &self.metrics {
            println!(
                "   {:<width$}  {:>12} {}",
                m.label,
                fmt_num(m.value),
                m.unit
            );
        }
        print_series(&self.series);
        for note in &self.notes {
            println!("   note: {note}");
        }
        for problem in &self.problems {
            println!("   PROBLEM: {problem}");
        }
    }

    pub fn json(&self) -> Value {
        let metrics: Map<String, Value> = self
            .metrics
            .iter()
            .map(|m| (m.key.clone(), json_num(m.value)))
            .collect();
        let mut out = json!({
            "scenario": self.scenario,
            "server": self.server,
            "params": self.params,
            "metrics": metrics,
            "notes": self.notes,
            "problems": self.problems,
        });
        if !self.series.is_empty()
            && let Some(object) = out.as_object_mut()
        {
            object.insert(
                "series".into(),
                Value::Array(self.series.iter().cloned().map(Value::Object).collect()),
            );
        }
        out
    }
}

/// A series as a table: one column per key of the first row, numbers right-aligned.
fn print_series(series: &[Map<String, Value>]) {
    let Some(first) = series.first() else { return };
    let keys: Vec<&String> = first.keys().collect();
    let cell = |v: Option<&Value>| match v {
        Some(Value::Number(n)) => n.as_f64().map_or_else(|| n.to_string(), fmt_num),
        Some(Value::String(s)) => s.clone(),
        Some(other) => other.to_string(),
        None => "-".into(),
    };
    let rows: Vec<Vec<String>> = series
        .iter()
        .map(|row| keys.iter().map(|k| cell(row.get(k.as_str()))).collect())
        .collect();
    let widths: Vec<usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([k.chars().count()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:>w$}"))
            .collect();
        println!("   {}", padded.join("  "));
    };
    line(keys.iter().map(|k| k.as_str()).collect());
    for row in &rows {
        line(row.iter().map(String::as_str).collect());
    }
}

fn json_num(v: f64) -> Value {
    // Three decimals are plenty and keep the line readable.
    let rounded = (v * 1000.0).round() / 1000.0;
    serde_json::Number::from_f64(rounded).map_or(Value::Null, Value::Number)
}

/// A number with a precision that suits its size.
pub fn fmt_num(v: f64) -> String {
    let a = v.abs();
    if a >= 1000.0 || v == v.trunc() && a < 1e15 {
        format!("{v:.0}")
    } else if a >= 100.0 {
        format!("{v:.1}")
    } else if a >= 1.0 {
        format!("{v:.2}")
    } else {
        format!("{v:.3}")
    }
}

/// How many times better `ours` is than `reference` for a metric (> 1: ours is better).
fn advantage(better: Better, ours: f64, reference: f64) -> Option<f64> {
    match better {
        Better::Higher if reference > 0.0 => Some(ours / reference),
        Better::Lower if ours > 0.0 => Some(reference / ours),
        _ => None,
    }
}

/// Prints both reports side by side with ratios, then the JSON line of the comparison.
pub fn print_comparison(ours: &Report, reference: &Report) {
    println!();
    println!("== {}: ours vs reference", ours.scenario);
    let width = ours
        .metrics
        .iter()
        .map(|m| m.label.chars().count())
        .max()
        .unwrap_or(0);
    println!(
        "   {:<width$}  {:>12}  {:>12}  {:>9}  {:>10}",
        "metric", "ours", "reference", "ours/ref", "advantage"
    );
    let mut ratios = Map::new();
    let mut advantages = Map::new();
    for m in &ours.metrics {
        let Some(r) = reference.get(&m.key) else {
            continue;
        };
        let ratio = (r != 0.0).then(|| m.value / r);
        let adv = advantage(m.better, m.value, r);
        println!(
            "   {:<width$}  {:>12}  {:>12}  {:>9}  {:>10}  {}",
            m.label,
            fmt_num(m.value),
            fmt_num(r),
            ratio.map_or("-".into(), |x| format!("{x:.3}")),
            adv.map_or("".into(), |x| format!("{x:.2}x")),
            m.unit
        );
        if let Some(x) = ratio {
            ratios.insert(m.key.clone(), json_num(x));
        }
        if let Some(x) = adv {
            advantages.insert(m.key.clone(), json_num(x));
        }
    }
    for (who, report) in [("ours", ours), ("reference", reference)] {
        for problem in &report.problems {
            println!("   PROBLEM ({who}): {problem}");
        }
    }
    println!(
        "{}",
        json!({
            "compare": ours.scenario,
            "ours": ours.json(),
            "reference": reference.json(),
            "ratio_ours_over_reference": ratios,
            "advantage": advantages,
        })
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn advantages_follow_the_better_direction() {
        assert_eq!(advantage(Better::Higher, 10.0, 2.0), Some(5.0));
        assert_eq!(advantage(Better::Lower, 2.0, 10.0), Some(5.0));
        assert_eq!(advantage(Better::Neither, 2.0, 10.0), None);
        assert_eq!(fmt_num(1234.56), "1235");
        assert_eq!(fmt_num(12.345), "12.35");
        assert_eq!(fmt_num(0.01234), "0.012");
        assert_eq!(fmt_num(7.0), "7");
    }
}
