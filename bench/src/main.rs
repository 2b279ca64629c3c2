//! `tidings-bench`: load scenarios for any server speaking the tidings / Socket.IO tutorial chat
//! protocol, and a compare mode that starts tidings and the tutorial's reference server on fresh
//! databases and runs the same scenario against each.
//!
//! ```text
//! tidings-bench ingest --url http://127.0.0.1:3000 -c 50 -m 100 [--server-pid PID]
//! tidings-bench ingest --url http://127.0.0.1:3001,http://127.0.0.1:3002 --server-pid P1,P2
//! tidings-bench compare ingest -c 50 -m 100
//! tidings-bench compare --only ours ingest -c 20 -m 1000 --offsets shared
//! tidings-bench compare connect-storm --conns 10000 --probes 200
//! tidings-bench compare rooms --conns 10000 --room-size 10 --rate 1000 --single-room 500
//! tidings-bench compare --only ours room-replay -n 1000000 --rooms 100
//! tidings-bench compare room-memory --conns 10000
//! ```
//!
//! Each run prints a human summary and one JSON line (the last line of stdout).

mod compare;
mod conn;
mod disk;
mod frame;
mod procfs;
mod progress;
mod report;
mod scenario;
mod server;
mod server_metrics;
mod stats;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::compare::CompareArgs;
use crate::disk::DiskArgs;
use crate::report::Report;
use crate::scenario::connect_storm::ConnectStormArgs;
use crate::scenario::fanout::FanoutArgs;
use crate::scenario::history::HistoryArgs;
use crate::scenario::idle::IdleArgs;
use crate::scenario::ingest::IngestArgs;
use crate::scenario::replay::ReplayArgs;
use crate::scenario::room_memory::RoomMemoryArgs;
use crate::scenario::room_replay::RoomReplayArgs;
use crate::scenario::rooms::RoomsArgs;
use crate::scenario::soak::SoakArgs;
use crate::scenario::startup::StartupArgs;
use crate::scenario::{Target, TargetArgs};
use crate::server::{Launcher, WorkDir};

/// Load scenarios for a Socket.IO chat server (tidings, or the tutorial's reference).
#[derive(Debug, Parser)]
#[command(name = "tidings-bench", version)]
struct Cli {
    #[command(flatten)]
    launcher: Launcher,

    /// Keep the scratch folder (databases and server logs) instead of deleting it.
    #[arg(long, global = true)]
    keep: bool,

    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// C clients x M messages, each awaiting its ack; every client receives every broadcast.
    Ingest {
        #[command(flatten)]
        args: IngestArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// R receivers, one sender at fixed rate(s): delivery latency, deliveries/s, lost.
    Fanout {
        #[command(flatten)]
        args: FanoutArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Store N messages, then time full replays (offset 0) and recent ones.
    Replay {
        #[command(flatten)]
        args: ReplayArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Store N messages, then page through them with `history` (tidings only): a walk from
    /// the newest to the oldest, then pages at random positions.
    History {
        #[command(flatten)]
        args: HistoryArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// A long run: acked senders, connection churn and periodic replays, sampling server RSS,
    /// open files and ack p99; at the end every acked message must be stored exactly once.
    Soak {
        #[command(flatten)]
        args: SoakArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Hold idle connections; server RSS per connection (needs --server-pid).
    Idle {
        #[command(flatten)]
        args: IdleArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Hold N idle connections with nicknames; time M more connects one at a time, then all
    /// N dropped and reconnected at once, until each has the presence count (tidings only).
    ConnectStorm {
        #[command(flatten)]
        args: ConnectStormArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Many small rooms against one big room at the same deliveries/s: delivery latency and
    /// server CPU per delivery (tidings' rooms protocol).
    Rooms {
        #[command(flatten)]
        args: RoomsArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// The replay of one room from a history of many rooms, against a one-room history.
    RoomReplay {
        #[command(flatten)]
        args: RoomReplayArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Server RSS per membership, per room and per empty room (needs --server-pid).
    RoomMemory {
        #[command(flatten)]
        args: RoomMemoryArgs,
        #[command(flatten)]
        target: TargetArgs,
    },
    /// Store N messages, restart the server, time until it serves (starts the server itself).
    Startup(StartupArgs),
    /// The disk's synced 4 KiB write rate (the ceiling of one-at-a-time durable commits).
    Disk(DiskArgs),
    /// Start ours and the reference on fresh databases and run the same scenario on each.
    Compare(CompareArgs),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    // Thousands of connections need file descriptors (servers started here inherit the limit).
    if let Err(e) = rlimit::increase_nofile_limit(u64::MAX) {
        eprintln!("warning: cannot raise the open-file limit: {e}");
    }
    match run(cli).await {
        Ok(code) => code,
        Err(e) => {
            eprintln!("tidings-bench: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    let report = match cli.command {
        Command::Compare(args) => return compare::run(&args, &cli.launcher, cli.keep).await,
        Command::Disk(args) => disk::run(&args)?,
        Command::Startup(args) => {
            let dir = WorkDir::create(cli.keep)?;
            scenario::startup::run(&args, &cli.launcher, args.server, &dir.path).await?
        }
        Command::Ingest { args, target } => {
            scenario::ingest::run(&args, &Target::from_args(&target)?).await?
        }
        Command::Fanout { args, target } => {
            scenario::fanout::run(&args, &Target::from_args(&target)?).await?
        }
        Command::Replay { args, target } => {
            scenario::replay::run(&args, &Target::from_args(&target)?).await?
        }
        Command::Idle { args, target } => {
            scenario::idle::run(&args, &Target::from_args(&target)?).await?
        }
        Command::History { args, target } => {
            scenario::history::run(&args, &Target::from_args(&target)?).await?
        }
        Command::ConnectStorm { args, target } => {
            scenario::connect_storm::run(&args, &Target::from_args(&target)?).await?
        }
        Command::Rooms { args, target } => {
            scenario::rooms::run(&args, &Target::from_args(&target)?).await?
        }
        Command::RoomReplay { args, target } => {
            scenario::room_replay::run(&args, &Target::from_args(&target)?).await?
        }
        Command::RoomMemory { args, target } => {
            scenario::room_memory::run(&args, &Target::from_args(&target)?).await?
        }
        Command::Soak { args, target } => {
            scenario::soak::run(&args, &Target::from_args(&target)?).await?
        }
    };
    Ok(finish(&report))
}

/// Prints a report and its JSON line; exit status 2 when it found problems.
fn finish(report: &Report) -> ExitCode {
    report.print_human();
    println!("{}", report.json());
    if report.problems.is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(2)
    }
}
