//! The `tidings` binary: parse the command line, start logging, then serve (open the
//! database, bind, run until a signal) or run one offline command.

use std::fs::File;
use std::io::{BufReader, BufWriter, IsTerminal};

use anyhow::Context;
use clap::Parser;
use indicatif::{ProgressBar, ProgressStyle};
use tidings::{Cli, Cluster, Command, Config, LogFormat, Server, commands};
use tokio::net::TcpListener;

fn main() -> std::process::ExitCode {
    let thp = without_transparent_huge_pages();
    match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(run(thp)),
        Err(e) => {
            eprintln!("tidings: cannot start the async runtime: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(thp: Result<(), std::io::Error>) -> std::process::ExitCode {
    let cli = Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        // async-nats logs every reconnection attempt at info; tidings says what matters.
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,async_nats=warn"));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => logs.init(),
        LogFormat::Json => logs.json().init(),
    }
    if let Err(e) = thp {
        tracing::warn!("transparent huge pages stay on (memory use may be higher): {e}");
    }
    let outcome = match cli.command {
        None => serve(cli.serve).await,
        Some(Command::Serve(config)) => serve(*config).await,
        Some(command) => tokio::task::spawn_blocking(move || offline(command))
            .await
            .context("the command's thread failed")
            .and_then(|r| r),
    };
    match outcome {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tidings: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn serve(config: Config) -> anyhow::Result<()> {
    let address = format!("{}:{}", config.host, config.port);
    let db = config.db.clone();
    let admin_address = config.admin_listen.clone();
    let scheme = if config.tls_cert.is_some() {
        "https"
    } else {
        "http"
    };
    let server = match config.cluster() {
        None => tokio::task::spawn_blocking(move || Server::open(config))
            .await
            .context("opening the database")??,
        Some(cluster) => {
            tracing::info!(nats = %cluster.urls.join(","), stream = %cluster.stream, node = %cluster.node, "joining the cluster");
            let cluster = Cluster::join(cluster).await?;
            tracing::info!(stream = %cluster.identity, "stream ready");
            let server =
                tokio::task::spawn_blocking(move || Server::open_in_cluster(config, cluster))
                    .await
                    .context("opening the database")??;
            server.mend_replica().await?;
            server
        }
    };
    let listener = TcpListener::bind(&address)
        .await
        .with_context(|| format!("cannot listen on {address}"))?;
    let local = listener.local_addr().context("reading the bound address")?;
    let (server, admin) = match admin_address {
        None => (server, None),
        Some(address) => {
            let admin = TcpListener::bind(&address)
                .await
                .with_context(|| format!("--admin-listen: cannot listen on {address}"))?;
            let bound = admin.local_addr().context("reading the admin address")?;
            (server.with_admin(admin), Some(bound))
        }
    };
    tracing::info!(db = %db.display(), messages = server.last_id(), "database open");
    let shutdown = shutdown_signal();
    // Scripts (and the JS tests) read the port from this line; then the admin port's.
    println!("listening on {scheme}://{local}");
    if let Some(admin) = admin {
        println!("admin on http://{admin}");
    }
    tidings::notify::notify(&format!("READY=1\nSTATUS=listening on {scheme}://{local}"));
    server.serve(listener, shutdown).await?;
    Ok(())
}

/// A progress bar on a terminal, nothing otherwise.
fn progress(total: Option<u64>, what: &'static str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = total.map_or_else(ProgressBar::new_spinner, ProgressBar::new);
    if let Ok(style) = ProgressStyle::with_template("{spinner} {msg} {pos}/{len} {wide_bar} {eta}")
    {
        bar.set_style(style);
    }
    bar.set_message(what);
    bar
}

/// Runs a subcommand other than `serve`.
fn offline(command: Command) -> anyhow::Result<()> {
    // The server holds the database's lock while it runs.
    let hint =
        "export, import, backup and stats need the database to themselves: stop the server first";
    match command {
        Command::Serve(_) => anyhow::bail!("serve is not an offline command"),
        Command::Export(args) => {
            let bar = progress(None, "exporting");
            let show = |done: u64, total: u64| {
                bar.set_length(total);
                bar.set_position(done);
            };
            let written = match &args.out {
                Some(path) => {
                    let file = File::create_new(path)
                        .with_context(|| format!("cannot create {}", path.display()))?;
                    let mut out = BufWriter::new(file);
                    commands::export(&args, &mut out, &show)
                }
                None => {
                    let stdout = std::io::stdout();
                    let mut out = BufWriter::new(stdout.lock());
                    commands::export(&args, &mut out, &show)
                }
            }
            .context(hint)?;
            bar.finish_and_clear();
            eprintln!("exported {written} messages");
        }
        Command::Import(args) => {
            let bar = progress(None, "importing lines");
            let show = |lines: u64| bar.set_position(lines);
            let summary = if args.file.as_os_str() == "-" {
                let stdin = std::io::stdin();
                commands::import(&args, &mut stdin.lock(), &show)
            } else {
                let file = File::open(&args.file)
                    .with_context(|| format!("cannot open {}", args.file.display()))?;
                commands::import(&args, &mut BufReader::new(file), &show)
            }
            .context(hint)?;
            bar.finish_and_clear();
            eprintln!(
                "imported {} messages ({} kept their ids, {} got new ids), skipped {} already present",
                summary.kept_id + summary.new_id,
                summary.kept_id,
                summary.new_id,
                summary.skipped
            );
        }
        Command::Backup(args) => {
            let count = match &args.from {
                Some(url) => {
                    let bar = progress(None, "copying");
                    let show = |done: u64, total: Option<u64>| {
                        if let Some(total) = total {
                            bar.set_length(total);
                        }
                        bar.set_position(done);
                    };
                    let count =
                        commands::backup_from(url, &args.path, args.db.cache_bytes(), show)?;
                    bar.finish_and_clear();
                    count
                }
                None => commands::backup(&args.db, &args.path).context(hint)?,
            };
            eprintln!("backed up {count} messages to {}", args.path.display());
        }
        Command::Stats(args) => {
            let stats = commands::stats(&args).context(hint)?;
            println!("{}", serde_json::to_string_pretty(&stats)?);
        }
        Command::Token(args) => println!("{}", args.sign()?),
    }
    Ok(())
}

/// Resolves on Ctrl-C or SIGTERM.
fn shutdown_signal() -> impl std::future::Future<Output = ()> {
    // Installed now, not when first polled: a signal that comes right after "listening on"
    // is printed still shuts the server down gracefully (it used to kill it).
    #[cfg(unix)]
    let (interrupt, terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (
            signal(SignalKind::interrupt()),
            signal(SignalKind::terminate()),
        )
    };
    async move {
        #[cfg(unix)]
        {
            let wait = |signal: std::io::Result<tokio::signal::unix::Signal>, name| async move {
                match signal {
                    Ok(mut signal) => {
                        signal.recv().await;
                    }
                    Err(e) => {
                        tracing::error!("cannot listen for {name}: {e}");
                        std::future::pending::<()>().await;
                    }
                }
            };
            tokio::select! {
                () = wait(interrupt, "Ctrl-C") => {},
                () = wait(terminate, "SIGTERM") => {},
            }
        }
        #[cfg(not(unix))]
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!("cannot listen for Ctrl-C: {e}");
            std::future::pending::<()>().await;
        }
        tracing::info!("signal received: shutting down");
        tidings::notify::notify("STOPPING=1\nSTATUS=finishing received messages");
    }
}

/// mimalloc: per-delivery serialization allocates and frees small buffers at a high rate.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Turns transparent huge pages off for this process, before the runtime allocates, unless
/// the operator set `MIMALLOC_ALLOW_THP` (mimalloc's own switch for the same thing).
///
/// Why: mimalloc commits its arena up front, and a kernel with THP `always` (a common
/// default) backs it with 2 MiB pages, so memory that was touched once, or is used sparsely,
/// stays resident in 2 MiB units. Measured (`tidings-bench compare idle`, BENCHMARKS.md round
/// 8): 25 MB at rest and 8.2 KiB per idle connection at 10,000 with THP, 15 MB and 7.4 KiB
/// without (a few huge pages are touched before `main`); fan-out CPU unchanged.
#[cfg(target_os = "linux")]
fn without_transparent_huge_pages() -> Result<(), std::io::Error> {
    if std::env::var_os("MIMALLOC_ALLOW_THP").is_some() {
        return Ok(());
    }
    nix::sys::prctl::set_thp_disable(true).map_err(std::io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn without_transparent_huge_pages() -> Result<(), std::io::Error> {
    Ok(())
}
