//! Compare mode: for each server (ours, then the reference), start it on a free port with a
//! fresh database, run the scenario, stop it; then print both side by side with ratios. The
//! servers run one after the other, never at once, so they never share the two cores.

use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand};

use crate::procfs::machine_busy_seconds;
use crate::report::{Report, print_comparison};
use crate::scenario::connect_storm::ConnectStormArgs;
use crate::scenario::fanout::FanoutArgs;
use crate::scenario::history::HistoryArgs;
use crate::scenario::idle::IdleArgs;
use crate::scenario::ingest::{IngestArgs, Offsets};
use crate::scenario::replay::ReplayArgs;
use crate::scenario::room_memory::RoomMemoryArgs;
use crate::scenario::room_replay::RoomReplayArgs;
use crate::scenario::rooms::RoomsArgs;
use crate::scenario::soak::SoakArgs;
use crate::scenario::startup::StartupArgs;
use crate::scenario::{self, Target};
use crate::server::{Kind, Launcher, WorkDir, free_port};

#[derive(Debug, Args)]
pub struct CompareArgs {
    /// Run against one server only.
    #[arg(long, value_enum)]
    pub only: Option<Kind>,

    /// Before each run, wait up to this many seconds for other processes to go quiet (under
    /// 0.2 cores), so that builds or tests running meanwhile do not skew the figures.
    #[arg(long, default_value_t = 600, value_parser = clap::value_parser!(u64).range(0..=86_400))]
    pub quiet_wait: u64,

    /// Runs again (up to this many times) when other processes used over 0.25 cores during
    /// a run.
    #[arg(long, default_value_t = 2, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(0..=100))]
    pub retries: usize,

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
    History(HistoryArgs),
    Soak(SoakArgs),
    ConnectStorm(ConnectStormArgs),
    Rooms(RoomsArgs),
    RoomReplay(RoomReplayArgs),
    RoomMemory(RoomMemoryArgs),
}

impl Scenario {
    fn name(&self) -> &'static str {
        match self {
            Scenario::Ingest(_) => "ingest",
            Scenario::Fanout(_) => "fanout",
            Scenario::Replay(_) => "replay",
            Scenario::Idle(_) => "idle",
            Scenario::Startup(_) => "startup",
            Scenario::History(_) => "history",
            Scenario::Soak(_) => "soak",
            Scenario::ConnectStorm(_) => "connect-storm",
            Scenario::Rooms(_) => "rooms",
            Scenario::RoomReplay(_) => "room-replay",
            Scenario::RoomMemory(_) => "room-memory",
        }
    }

    /// Whether the scenario speaks the rooms protocol: the reference is then our rooms
    /// extension of the tutorial (bench/reference-rooms), not the tutorial itself.
    fn needs_rooms(&self) -> bool {
        matches!(
            self,
            Scenario::Rooms(_) | Scenario::RoomReplay(_) | Scenario::RoomMemory(_)
        )
    }

    /// Why `kind` cannot run the scenario meaningfully, if it cannot.
    fn unsupported(&self, kind: Kind) -> Option<&'static str> {
        if kind != Kind::Reference {
            return None;
        }
        match self {
            Scenario::History(_) => Some("`history` is a tidings extension"),
            Scenario::ConnectStorm(_) => Some("`presence` is a tidings extension"),
            // Its `client_offset TEXT UNIQUE` column refuses every message after the first
            // under an offset, and it acks those with nothing, storing and broadcasting none.
            Scenario::Ingest(args) if args.offsets == Offsets::Shared => {
                Some("it stores one message per clientOffset and acks the others unstored")
            }
            _ => None,
        }
    }
}

pub async fn run(args: &CompareArgs, launcher: &Launcher, keep: bool) -> anyhow::Result<ExitCode> {
    if let Some(warning) = launcher.staleness_warning() {
        eprintln!("warning: {warning}");
    }
    let kinds = kinds_to_run(args)?;
    let dir = WorkDir::create(keep)?;
    let rooms_launcher;
    let launcher = if args.scenario.needs_rooms() {
        rooms_launcher = launcher.for_rooms();
        &rooms_launcher
    } else {
        launcher
    };
    let mut reports = Vec::new();
    for (i, &kind) in kinds.iter().enumerate() {
        if i > 0 {
            // Let the disk and the page cache settle between servers.
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
        let scenario = &args.scenario;
        let quiet_wait = Duration::from_secs(args.quiet_wait);
        let dir = &dir;
        let mut report = run_until_undisturbed(args.retries, move |attempt| async move {
            wait_until_quiet(quiet_wait).await;
            eprintln!(
                "--- {} against {} (attempt {attempt})",
                scenario.name(),
                kind.name()
            );
            match run_one(scenario, launcher, kind, dir, attempt).await {
                Ok(report) => report,
                Err(e) => {
                    let mut report = Report::new(scenario.name(), kind.name());
                    report.problems.push(format!("{e:#}"));
                    report
                }
            }
        })
        .await;
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
        if kind == Kind::Reference {
            report.param("server_dir", launcher.reference_dir().display().to_string());
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

/// The servers to run the scenario against: both unless `--only` names one, less the
/// reference when it cannot run the scenario (said on stderr). `--only reference` on such a
/// scenario is an error: it would run nothing.
fn kinds_to_run(args: &CompareArgs) -> anyhow::Result<Vec<Kind>> {
    let wanted = match args.only {
        Some(kind) => vec![kind],
        None => vec![Kind::Ours, Kind::Reference],
    };
    let mut kinds = Vec::new();
    for kind in wanted {
        match args.scenario.unsupported(kind) {
            None => kinds.push(kind),
            Some(why) if args.only.is_some() => anyhow::bail!(
                "the {} server cannot run {} ({why}): nothing to run with --only {}",
                kind.name(),
                args.scenario.name(),
                kind.name()
            ),
            Some(why) => eprintln!(
                "the {} server cannot run {} ({why}): running it against ours only",
                kind.name(),
                args.scenario.name()
            ),
        }
    }
    Ok(kinds)
}

/// Runs `attempt` (given its number, from 1) until a run is not disturbed by other processes,
/// or `retries` more runs were made; returns the last run's report. A disturbed run is
/// discarded for its figures only: its problems (lost, duplicated or reordered messages, a
/// server that died, errors) are carried into the returned report, so a retry never hides one.
async fn run_until_undisturbed<F, Fut>(retries: usize, mut attempt: F) -> Report
where
    F: FnMut(usize) -> Fut,
    Fut: Future<Output = Report>,
{
    let mut discarded_problems = Vec::new();
    let mut n = 0;
    loop {
        n += 1;
        let mut report = attempt(n).await;
        let disturbance = disturbance(&report);
        if disturbance <= DISTURBED_CORES || n > retries {
            if n > 1 {
                report
                    .notes
                    .push(format!("attempt {n} (earlier ones were disturbed)"));
            }
            discarded_problems.append(&mut report.problems);
            report.problems = discarded_problems;
            return report;
        }
        eprintln!("other processes used {disturbance:.2} cores during the run: running it again");
        for problem in report.problems {
            eprintln!("problem in the discarded attempt {n}: {problem}");
            discarded_problems.push(format!("attempt {n} (discarded as disturbed): {problem}"));
        }
    }
}

/// Other processes' CPU use (in cores) above which a run counts as disturbed.
const DISTURBED_CORES: f64 = 0.25;

/// The most CPU other processes used during any part of a run.
fn disturbance(report: &Report) -> f64 {
    report
        .metrics
        .iter()
        .filter(|m| m.key.starts_with("others_cpu_cores"))
        .map(|m| m.value)
        .fold(0.0, f64::max)
}

/// Waits (at most `limit`) until the machine's other processes use under 0.2 cores over 2 s.
async fn wait_until_quiet(limit: Duration) {
    let start = std::time::Instant::now();
    loop {
        let Ok(before) = machine_busy_seconds() else {
            return;
        };
        tokio::time::sleep(Duration::from_secs(2)).await;
        let Ok(after) = machine_busy_seconds() else {
            return;
        };
        let cores = (after - before) / 2.0;
        if cores < 0.2 {
            return;
        }
        if start.elapsed() >= limit {
            eprintln!("the machine is still busy ({cores:.2} cores): running anyway");
            return;
        }
        eprintln!("waiting for a quiet machine ({cores:.2} cores busy)");
        tokio::time::sleep(Duration::from_secs(3)).await;
    }
}

async fn run_one(
    scenario: &Scenario,
    launcher: &Launcher,
    kind: Kind,
    dir: &WorkDir,
    attempt: usize,
) -> anyhow::Result<Report> {
    if let Scenario::Startup(args) = scenario {
        return scenario::startup::run(args, launcher, kind, &dir.path).await;
    }
    // A fresh database for every attempt: a repeated run must not find the last one's history.
    let name = format!("{}-{}-{attempt}", scenario.name(), kind.name());
    let db = dir.path.join(match kind {
        Kind::Ours => format!("{name}.redb"),
        Kind::Reference => format!("{name}.sqlite"),
    });
    let log = dir.path.join(format!("{name}.log"));
    let mut server = launcher.start(kind, &db, free_port()?, &log).await?;
    let target = Target::single(server.url.clone(), server.pid, kind.name());
    let result = match scenario {
        Scenario::Ingest(a) => scenario::ingest::run(a, &target).await,
        Scenario::Fanout(a) => scenario::fanout::run(a, &target).await,
        Scenario::Replay(a) => scenario::replay::run(a, &target).await,
        Scenario::Idle(a) => scenario::idle::run(a, &target).await,
        Scenario::History(a) => scenario::history::run(a, &target).await,
        Scenario::Soak(a) => scenario::soak::run(a, &target).await,
        Scenario::ConnectStorm(a) => scenario::connect_storm::run(a, &target).await,
        Scenario::Rooms(a) => scenario::rooms::run(a, &target).await,
        Scenario::RoomReplay(a) => scenario::room_replay::run(a, &target).await,
        Scenario::RoomMemory(a) => scenario::room_memory::run(a, &target).await,
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::Better;

    /// A report whose run other processes disturbed (or not), with the given problems.
    fn attempt_report(disturbed: bool, problems: &[&str]) -> Report {
        let mut report = Report::new("ingest", "ours");
        let cores = if disturbed { 1.0 } else { 0.0 };
        report.metric(
            "others_cpu_cores",
            "others",
            cores,
            "cores",
            Better::Neither,
        );
        report.problems = problems.iter().map(|p| p.to_string()).collect();
        report
    }

    /// The scenario as compare's command line gives it.
    fn scenario(args: &[&str]) -> Scenario {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(subcommand)]
            scenario: Scenario,
        }
        match Cli::try_parse_from(std::iter::once("compare").chain(args.iter().copied())) {
            Ok(cli) => cli.scenario,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn the_reference_runs_only_what_it_can() {
        let runs = |args: &[&str]| {
            let s = scenario(args);
            assert_eq!(s.unsupported(Kind::Ours), None, "{args:?}");
            s.unsupported(Kind::Reference).is_none()
        };
        assert!(runs(&["ingest", "-c", "2"]));
        assert!(runs(&["ingest", "--offsets", "fresh"]));
        assert!(!runs(&["ingest", "--offsets", "shared"]));
        assert!(!runs(&["history"]));
        assert!(!runs(&["connect-storm", "--conns", "10"]));
        assert!(runs(&["idle"]));
        assert_eq!(scenario(&["connect-storm"]).name(), "connect-storm");
        assert!(runs(&["rooms", "--conns", "20", "--room-size", "10"]));
        assert!(runs(&["room-replay", "-n", "1000"]));
        assert!(runs(&["room-memory", "--conns", "10"]));
        assert!(scenario(&["rooms"]).needs_rooms());
        assert!(!scenario(&["replay"]).needs_rooms());
    }

    /// Every numeric flag refuses what it cannot mean (zero where at least one is needed,
    /// negative numbers, non-numbers, NaN) at parse time.
    #[test]
    fn numeric_flags_are_validated() {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            compare: CompareArgs,
        }
        let refused = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("compare").chain(args.iter().copied())).is_err()
        };
        for bad in [
            &["--quiet-wait", "-1", "idle"][..],
            &["--retries", "x", "idle"],
            &["ingest", "-c", "0"],
            &["ingest", "-m", "0"],
            &["ingest", "--size", "0"],
            &["ingest", "--timeout", "0"],
            &["fanout", "-r", "0"],
            &["fanout", "--rate", "50,0"],
            &["fanout", "--duration", "0"],
            &["fanout", "--stop-p99-ms", "-5"],
            &["fanout", "--stop-p99-ms", "inf"],
            &["replay", "-n", "0"],
            &["replay", "--runs", "0"],
            &["replay", "--window", "0"],
            &["replay", "--first", "0"],
            &["idle", "--conns", "100,0"],
            &["idle", "--concurrency", "0"],
            &["history", "--clients", "0"],
            &["history", "--limit", "201"],
            &["soak", "--duration", "0"],
            &["soak", "--churn-every", "0"],
            &["connect-storm", "--conns", "0"],
            &["startup", "--runs", "0"],
            &["startup", "-n", "0"],
            &["rooms", "--rate", "0"],
            &["room-replay", "--rooms", "0"],
            &["room-memory", "--extra", "0"],
            &["room-memory", "--extra", "99"],
        ] {
            assert!(refused(bad), "{bad:?} was accepted");
        }
        assert!(!refused(&["--quiet-wait", "0", "--retries", "0", "idle"]));
        assert!(!refused(&["soak", "--churn", "0", "--replay-every", "0"]));
        assert!(!refused(&[
            "fanout",
            "--drain",
            "0",
            "--stop-p99-ms",
            "0.5"
        ]));
    }

    fn compare_args(args: &[&str]) -> CompareArgs {
        use clap::Parser;
        #[derive(Debug, Parser)]
        struct Cli {
            #[command(flatten)]
            compare: CompareArgs,
        }
        match Cli::try_parse_from(std::iter::once("compare").chain(args.iter().copied())) {
            Ok(cli) => cli.compare,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn only_the_reference_on_a_scenario_it_cannot_run_is_an_error() {
        let kinds = |args: &[&str]| kinds_to_run(&compare_args(args));
        assert_eq!(
            kinds(&["history"]).expect("ours runs it"),
            [Kind::Ours],
            "without --only, the reference is left out"
        );
        assert_eq!(
            kinds(&["--only", "ours", "history"]).expect("ours runs it"),
            [Kind::Ours]
        );
        let error = kinds(&["--only", "reference", "history"]).expect_err("nothing to run");
        assert!(error.to_string().contains("cannot run history"), "{error}");
        assert!(kinds(&["--only", "reference", "connect-storm"]).is_err());
        assert!(kinds(&["--only", "reference", "ingest", "--offsets", "shared"]).is_err());
        assert_eq!(
            kinds(&["--only", "reference", "ingest"]).expect("it runs ingest"),
            [Kind::Reference]
        );
        assert_eq!(
            kinds(&["rooms"]).expect("both run rooms"),
            [Kind::Ours, Kind::Reference]
        );
    }

    #[tokio::test]
    async fn a_retry_never_drops_the_problems_of_a_disturbed_run() {
        let mut runs = vec![
            attempt_report(true, &["lost 3 messages"]),
            attempt_report(true, &[]),
            attempt_report(false, &[]),
        ]
        .into_iter();
        let report = run_until_undisturbed(2, |_| {
            let run = runs.next().expect("at most three runs");
            async move { run }
        })
        .await;
        assert_eq!(report.notes, ["attempt 3 (earlier ones were disturbed)"]);
        assert_eq!(report.problems.len(), 1, "{:?}", report.problems);
        assert!(
            report.problems[0].contains("attempt 1") && report.problems[0].contains("lost 3"),
            "{:?}",
            report.problems
        );
    }

    #[tokio::test]
    async fn an_undisturbed_run_is_not_repeated_and_its_problems_stay() {
        let mut calls = 0;
        let report = run_until_undisturbed(2, |_| {
            calls += 1;
            async { attempt_report(false, &["duplicated 1 message"]) }
        })
        .await;
        assert_eq!(calls, 1);
        assert_eq!(report.problems, ["duplicated 1 message"]);
    }
}
