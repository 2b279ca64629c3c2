//! Compare mode: for each server (ours, then the reference), start it on a free port with a
//! fresh database, run the scenario, stop it; then print both side by side with ratios. The
//! servers run one after the other, never at once, so they never share the two cores.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::report::{Report, print_comparison};
use crate::scenario::fanout::FanoutArgs;
use crate::scenario::idle::IdleArgs;
use crate::scenario::ingest::IngestArgs;
use crate::scenario::replay::ReplayArgs;
use crate::scenario::startup::StartupArgs;
use crate::scenario::{self, Target};
use crate::server::{Kind, Launcher, WorkDir, free_port};

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run against one server only.
    #[arg(long, value_enum)]
    pub only: Option<Kind>,

    #[command(subcommand)]
    pub scenario: Scenario,
}

/// A scenario, without a target: compare mode provides it.
#[derive(Debug, Clone, Subcommand)]
pub enum Scenario {
    Ingest(IngestArgs),
    Fanout(FanoutArgs),
    Replay(ReplayArgs),
    Idle(IdleArgs),
    Startup(StartupArgs),
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Ingest(_) => "ingest",
            Scenario::Fanout(_) => "fanout",
            Scenario::Replay(_) => "replay",
            Scenario::Idle(_) => "idle",
            Scenario::Startup(_) => "startup",
        }
    }
}

pub async fn run(args: &CompareArgs, launcher: &Launcher, keep: bool) -> anyhow::Result<ExitCode> {
    if let Some(warning) = launcher.staleness_warning() {
        eprintln!("warning: {warning}");
    }
    let dir = WorkDir::create(keep)?;
    let kinds = match args.only {
        Some(kind) => vec![kind],
        None => vec![Kind::Ours, Kind::Reference],
    };
    let mut reports = Vec::new();
    for (i, &kind) in kinds.iter().enumerate() {
        if i > 0 {
            // Let the disk and the page cache settle between servers.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        eprintln!("--- {} against {}", args.scenario.name(), kind.name());
        let mut report = match run_one(&args.scenario, launcher, kind, &dir).await {
            Ok(report) => report,
            Err(e) => {
                let mut report = Report::new(args.scenario.name(), kind.name());
                report.problems.push(format!("{e:#}"));
                report
            }
        };
        if kind == Kind::Ours {
            report.param("server_bin", launcher.ours_bin().display().to_string());
            let env: Vec<String> = crate::server::OURS_ENV
                .iter()
                .map(|(k, v)| format!("{k}={}", std::env::var(k).unwrap_or_else(|_| v.to_string())))
                .collect();
            report.param("server_env", env);
            if !launcher.ours_args.is_empty() {
                report.param("server_args", launcher.ours_args.clone());
            }
        }
        report.print_human();
        reports.push((kind, report));
    }
    match reports.as_slice() {
        [(_, ours), (_, reference)] => print_comparison(ours, reference),
        [(_, only)] => println!("{}", only.json()),
        _ => {}
    }
    let ours_broken = reports
        .iter()
        .any(|(kind, r)| *kind == Kind::Ours && !r.problems.is_empty());
    Ok(if ours_broken {
        ExitCode::from(2)
    } else {
        ExitCode::SUCCESS
    })
}

async fn run_one(
    scenario: &Scenario,
    launcher: &Launcher,
    kind: Kind,
    dir: &WorkDir,
) -> anyhow::Result<Report> {
    if let Scenario::Startup(args) = scenario {
        return scenario::startup::run(args, launcher, kind, &dir.path).await;
    }
    let name = format!("{}-{}", scenario.name(), kind.name());
    let db = dir.path.join(match kind {
        Kind::Ours => format!("{name}.redb"),
        Kind::Reference => format!("{name}.sqlite"),
    });
    let log = dir.path.join(format!("{name}.log"));
    let mut server = launcher.start(kind, &db, free_port()?, &log).await?;
    let target = Target {
        url: server.url.clone(),
        pid: Some(server.pid),
        name: kind.name().to_string(),
    };
    let result = match scenario {
        Scenario::Ingest(a) => scenario::ingest::run(a, &target).await,
        Scenario::Fanout(a) => scenario::fanout::run(a, &target).await,
        Scenario::Replay(a) => scenario::replay::run(a, &target).await,
        Scenario::Idle(a) => scenario::idle::run(a, &target).await,
        Scenario::Startup(_) => unreachable!("handled above"),
    };
    let exited = server.exited();
    let tail = server.log_tail();
    let stopped = server.stop().await;
    let mut report = match result {
        Ok(report) => report,
        Err(e) => anyhow::bail!("{e:#}\n{tail}"),
    };
    if let Some(status) = exited {
        report.problems.push(format!(
            "the server exited during the run ({status})\n{tail}"
        ));
    } else {
        match stopped {
            Ok(status) if kind == Kind::Ours && !status.success() => report.problems.push(format!(
                "the server exited with {status} on SIGTERM\n{tail}"
            )),
            Ok(_) => {}
            Err(e) => report.problems.push(format!("{e:#}")),
        }
    }
    Ok(report)
}
