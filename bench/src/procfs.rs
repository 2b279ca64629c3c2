//! Process figures from /proc: resident memory and CPU time of the server and of the bench.

use std::sync::OnceLock;
use std::time::Instant;

use anyhow::Context;

/// Whose figures to read.
#[derive(Debug, Clone, Copy)]
pub enum Who {
    /// The bench process itself.
    Myself,
    /// Another process.
    Pid(u32),
}

impl Who {
    fn path(self, file: &str) -> String {
        match self {
            Who::Myself => format!("/proc/self/{file}"),
            Who::Pid(pid) => format!("/proc/{pid}/{file}"),
        }
    }
}

/// Resident set size in bytes (`VmRSS` of /proc/PID/status).
pub fn rss_bytes(who: Who) -> anyhow::Result<u64> {
    status_kib(who, "VmRSS:").map(|kib| kib * 1024)
}

/// The highest resident set size the process has had, in bytes (`VmHWM`).
pub fn peak_rss_bytes(who: Who) -> anyhow::Result<u64> {
    status_kib(who, "VmHWM:").map(|kib| kib * 1024)
}

/// A `kB` field of /proc/PID/status.
fn status_kib(who: Who, field: &str) -> anyhow::Result<u64> {
    let path = who.path("status");
    let status = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    let line = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .with_context(|| format!("no {field} in {path}"))?;
    line.trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .with_context(|| format!("bad {field} line in {path}: {line:?}"))
}

/// The process's open file descriptors (entries of /proc/PID/fd).
pub fn open_files(who: Who) -> anyhow::Result<u64> {
    let path = who.path("fd");
    let entries = std::fs::read_dir(&path).with_context(|| format!("reading {path}"))?;
    Ok(entries.count() as u64)
}

/// The machine's 1-minute load average (/proc/loadavg).
pub fn load_average() -> anyhow::Result<f64> {
    let text = std::fs::read_to_string("/proc/loadavg").context("reading /proc/loadavg")?;
    text.split_whitespace()
        .next()
        .and_then(|f| f.parse().ok())
        .context("malformed /proc/loadavg")
}

/// User + system CPU seconds the process has used (/proc/PID/stat fields 14 and 15).
pub fn cpu_seconds(who: Who) -> anyhow::Result<f64> {
    let path = who.path("stat");
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    // The command name (field 2) may hold spaces; the fields after its closing ')' do not.
    let after = stat
        .rsplit_once(')')
        .map(|(_, rest)| rest)
        .with_context(|| format!("malformed {path}"))?;
    let fields: Vec<&str> = after.split_whitespace().collect();
    // `after` starts at field 3 (state): utime is field 14, stime field 15.
    let tick = |i: usize| -> anyhow::Result<u64> {
        fields
            .get(i)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("malformed {path}"))
    };
    let ticks = tick(11)? + tick(12)?;
    Ok(ticks as f64 / clock_ticks_per_second())
}

/// CPU seconds all processes of the machine have used (/proc/stat: every state but idle and
/// iowait).
pub fn machine_busy_seconds() -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string("/proc/stat").context("reading /proc/stat")?;
    let line = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .context("no cpu line in /proc/stat")?;
    let ticks: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user).
    let busy: u64 = [0, 1, 2, 5, 6, 7]
        .iter()
        .filter_map(|&i| ticks.get(i))
        .sum();
    Ok(busy as f64 / clock_ticks_per_second())
}

/// `getconf CLK_TCK` (the kernel's USER_HZ), 100 when it cannot be asked.
fn clock_ticks_per_second() -> f64 {
    static HZ: OnceLock<f64> = OnceLock::new();
    *HZ.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100.0)
    })
}

/// CPU used by the server (one process or several) and by the bench over an interval.
pub struct CpuMeter {
    servers: Vec<u32>,
    start: Instant,
    servers_start: Vec<Option<f64>>,
    own_start: f64,
    machine_start: Option<f64>,
}

/// What a [`CpuMeter`] measured.
#[derive(Debug, Clone)]
pub struct CpuUse {
    pub wall_s: f64,
    /// Server CPU seconds, when its pid is known: the sum over its processes, `None` if one
    /// of them could not be read (a partial sum would pass for the whole).
    pub server_s: Option<f64>,
    /// Each server process's CPU seconds, in the order of the pids given.
    pub server_each_s: Vec<Option<f64>>,
    /// The bench's own CPU seconds.
    pub bench_s: f64,
    /// CPU seconds used by every other process of the machine (a disturbance when large).
    pub others_s: Option<f64>,
}

impl CpuUse {
    /// The bench's CPU use in cores (1.0 = one core busy all along).
    pub fn bench_cores(&self) -> f64 {
        self.bench_s / self.wall_s.max(1e-9)
    }
    /// Other processes' CPU use in cores.
    pub fn others_cores(&self) -> Option<f64> {
        self.others_s.map(|s| s / self.wall_s.max(1e-9))
    }
}

impl CpuMeter {
    pub fn start(servers: &[u32]) -> Self {
        Self {
            servers: servers.to_vec(),
            start: Instant::now(),
            servers_start: servers
                .iter()
                .map(|&pid| cpu_seconds(Who::Pid(pid)).ok())
                .collect(),
            own_start: cpu_seconds(Who::Myself).unwrap_or(0.0),
            machine_start: machine_busy_seconds().ok(),
        }
    }

    pub fn stop(&self) -> CpuUse {
        let server_each_s: Vec<Option<f64>> = self
            .servers
            .iter()
            .zip(&self.servers_start)
            .map(|(&pid, start)| {
                let now = cpu_seconds(Who::Pid(pid)).ok()?;
                Some(now - (*start)?)
            })
            .collect();
        let server_s = if server_each_s.is_empty() {
            None
        } else {
            server_each_s.iter().copied().sum::<Option<f64>>()
        };
        let bench_s = cpu_seconds(Who::Myself).unwrap_or(0.0) - self.own_start;
        // Whatever of the servers could be read is not "other processes".
        let servers_read: f64 = server_each_s.iter().flatten().sum();
        let others_s = match (self.machine_start, machine_busy_seconds()) {
            (Some(start), Ok(now)) => Some((now - start - bench_s - servers_read).max(0.0)),
            _ => None,
        };
        CpuUse {
            wall_s: self.start.elapsed().as_secs_f64(),
            server_s,
            server_each_s,
            bench_s,
            others_s,
        }
    }
}

/// A figure summed over processes (`None` if one of them cannot be read), with each one's.
pub fn summed(
    pids: &[u32],
    read: fn(Who) -> anyhow::Result<u64>,
) -> (Option<u64>, Vec<Option<u64>>) {
    let each: Vec<Option<u64>> = pids.iter().map(|&pid| read(Who::Pid(pid)).ok()).collect();
    let sum = if each.is_empty() {
        None
    } else {
        each.iter().copied().sum()
    };
    (sum, each)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_figures() {
        assert!(rss_bytes(Who::Myself).is_ok_and(|rss| rss > 0));
        assert!(peak_rss_bytes(Who::Myself).is_ok_and(|peak| peak > 0));
        assert!(open_files(Who::Myself).is_ok_and(|n| n >= 3));
        assert!(load_average().is_ok_and(|l| l >= 0.0));
        assert!(cpu_seconds(Who::Myself).is_ok_and(|s| s >= 0.0));
    }

    #[test]
    fn sums_over_processes() {
        let me = std::process::id();
        let one = CpuMeter::start(&[me]).stop();
        assert_eq!(one.server_each_s.len(), 1);
        assert!(one.server_s.is_some());
        let two = CpuMeter::start(&[me, me]).stop();
        assert_eq!(two.server_each_s.len(), 2);
        assert!(two.server_s.is_some());
        assert!(CpuMeter::start(&[]).stop().server_s.is_none());

        let (sum, each) = summed(&[me, me], rss_bytes);
        assert!(each.iter().all(Option::is_some));
        assert_eq!(sum, Some(each.iter().flatten().sum()));
        // A process that is gone spoils the sum but not the others' figures.
        let (sum, each) = summed(&[me, u32::MAX], rss_bytes);
        assert_eq!(sum, None);
        assert!(each[0].is_some() && each[1].is_none());
    }
}
