//! `disk`: the disk's synced-write rate, the ceiling of one-at-a-time durable commits: 4 KiB
//! writes each followed by fdatasync (like `dd oflag=dsync`), and by fsync.

use std::fs::OpenOptions;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::Context;
use clap::Args;

use crate::report::{Better, Report};
use crate::stats::Histogram;

#[derive(Debug, Clone, Args)]
pub struct DiskArgs {
    /// A folder on the disk to measure (the databases' temp folder by default).
    #[arg(long)]
    pub dir: Option<PathBuf>,

    /// Synced writes per kind of sync.
    #[arg(long, default_value_t = 2000, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=10_000_000))]
    pub count: usize,

    /// Bytes per write.
    #[arg(long, default_value_t = 4096, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=67_108_864))]
    pub size: usize,

    /// Stop each kind after this many seconds.
    #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=3_600))]
    pub max_seconds: u64,
}

pub fn run(args: &DiskArgs) -> anyhow::Result<Report> {
    let dir = args.dir.clone().unwrap_or_else(std::env::temp_dir);
    let path = dir.join(format!("tidings-bench-disk-{}", std::process::id()));
    let mut report = Report::new("disk", dir.display().to_string());
    report.param("bytes_per_write", args.size);
    let result = measure(args, &path, &mut report);
    let _ = std::fs::remove_file(&path);
    result?;
    Ok(report)
}

fn measure(args: &DiskArgs, path: &PathBuf, report: &mut Report) -> anyhow::Result<()> {
    let mut file = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(path)
        .with_context(|| format!("creating {}", path.display()))?;
    let block = vec![0x5au8; args.size];
    // Preallocate the blocks the loop overwrites, so every sync is a data write, not growth.
    for _ in 0..64 {
        file.write_all(&block).context("writing")?;
    }
    file.sync_all().context("fsync")?;
    for (key, label, data_only) in [
        ("fdatasync", "4 KiB write + fdatasync", true),
        ("fsync", "4 KiB write + fsync", false),
    ] {
        let latency = Histogram::new();
        let limit = Duration::from_secs(args.max_seconds);
        let start = Instant::now();
        let mut done = 0usize;
        while done < args.count && start.elapsed() < limit {
            let t = Instant::now();
            file.seek(SeekFrom::Start(((done % 64) * args.size) as u64))
                .context("seek")?;
            file.write_all(&block).context("writing")?;
            if data_only {
                file.sync_data().context("fdatasync")?;
            } else {
                file.sync_all().context("fsync")?;
            }
            latency.record(t.elapsed());
            done += 1;
        }
        let elapsed = start.elapsed().as_secs_f64();
        report.metric(
            format!("{key}_per_s"),
            format!("{label} per second"),
            done as f64 / elapsed.max(1e-9),
            "/s",
            Better::Higher,
        );
        let s = latency.summary();
        report.metric(
            format!("{key}_p50_ms"),
            format!("{label} p50"),
            s.p50_ms(),
            "ms",
            Better::Lower,
        );
        report.metric(
            format!("{key}_p99_ms"),
            format!("{label} p99"),
            s.p99_ms(),
            "ms",
            Better::Lower,
        );
    }
    Ok(())
}
