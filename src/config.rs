//! Configuration: every option as a command-line flag with an environment variable and a
//! documented default. Parsing only; [`crate::run`] applies it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::protocol::Limits;
use crate::rate::RateLimit;

/// A durable Socket.IO chat server: serves the chat page and keeps every message in one redb
/// file. Without a subcommand it serves (`tidings serve`).
#[derive(Debug, Clone, Parser)]
#[command(name = "tidings", version, about, long_about = None, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// Serving options, when no subcommand is given.
    #[command(flatten)]
    pub serve: Config,
    /// Log format on stderr: human-readable text or one JSON object per line.
    #[arg(long, env = "TIDINGS_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// The subcommands.
#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve the chat (the default).
    Serve(Config),
    /// Write stored messages as JSON Lines (the server must be stopped).
    Export(ExportArgs),
    /// Add messages from an export; importing the same file again adds nothing (the server
    /// must be stopped).
    Import(ImportArgs),
    /// Write a consistent copy of the database to PATH (the server must be stopped).
    Backup(BackupArgs),
    /// Print message count, id range and file size as JSON (the server must be stopped).
    Stats(DbArgs),
}

/// The database a subcommand works on.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// The database file.
    #[arg(long, env = "TIDINGS_DB", default_value = "tidings.redb")]
    pub db: PathBuf,
}

/// `tidings export`.
#[derive(Debug, Clone, Args)]
pub struct ExportArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// Only messages with ids above this.
    #[arg(long, default_value_t = 0)]
    pub since: u64,
    /// Write here instead of standard output (must not exist).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `tidings import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// The JSON Lines file written by `tidings export` (`-`: standard input).
    pub file: PathBuf,
}

/// `tidings backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// Where to write the copy (must not exist).
    pub path: PathBuf,
}

/// Serving options.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (0.0.0.0: every interface, as the tutorial server does;
    /// 127.0.0.1: this machine only).
    #[arg(long, env = "TIDINGS_HOST", default_value = "0.0.0.0")]
    pub host: String,

    /// TCP port to listen on (0 picks a free port and prints it).
    #[arg(long, env = "PORT", default_value_t = 3000)]
    pub port: u16,

    /// The database file; created if missing, never overwritten if it is not a tidings
    /// database.
    #[arg(long, env = "TIDINGS_DB", default_value = "tidings.redb")]
    pub db: PathBuf,

    /// Largest accepted message content, in UTF-8 bytes.
    #[arg(long, env = "TIDINGS_MAX_MESSAGE_BYTES", default_value_t = 65_536,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub max_message_bytes: u32,

    /// Largest accepted clientOffset, in UTF-8 bytes.
    #[arg(long, env = "TIDINGS_MAX_CLIENT_OFFSET_BYTES", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_client_offset_bytes: u32,

    /// Stored messages queued for the live broadcaster; if it ever falls further behind,
    /// every client catches up from the tail cache or the database instead.
    #[arg(long, env = "TIDINGS_LIVE_BUFFER", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub live_buffer: u32,

    /// Newest messages kept in memory to serve recent replays (reconnects, page reloads)
    /// without reading the database; 0 turns the cache off.
    #[arg(long, env = "TIDINGS_TAIL_CACHE_MESSAGES", default_value_t = 10_000,
          value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub tail_cache_messages: u32,

    /// Memory budget of that cache in bytes (message text plus ~96 bytes each).
    #[arg(long, env = "TIDINGS_TAIL_CACHE_BYTES", default_value_t = 16 << 20,
          value_parser = clap::value_parser!(u64).range(0..=(1 << 40)))]
    pub tail_cache_bytes: u64,

    /// Outgoing packets buffered per connection (engine.io). A client that reads slower than
    /// messages arrive fills it; delivery then waits for it, never drops.
    #[arg(long, env = "TIDINGS_SOCKET_BUFFER", default_value_t = 1024,
          value_parser = clap::value_parser!(u32).range(16..=65_536))]
    pub socket_buffer: u32,

    /// Messages a connection may send per second on average (token bucket); 0 disables
    /// the limit. Over it, the ack is `{ error: "rate limited", retryAfterMs }`.
    #[arg(long, env = "TIDINGS_RATE_LIMIT", default_value_t = 20.0)]
    pub rate_limit: f64,

    /// Messages a connection may send at once after a quiet spell. A client that keeps
    /// sending while limited is disconnected after this many refusals in a row.
    #[arg(long, env = "TIDINGS_RATE_BURST", default_value_t = 50,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_burst: u32,

    /// Most connected clients; further connections are refused with a `connect_error`.
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS", default_value_t = 50_000,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// engine.io heartbeat: how often the server pings each client, in milliseconds.
    #[arg(long, env = "TIDINGS_PING_INTERVAL_MS", default_value_t = 25_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub ping_interval_ms: u64,

    /// engine.io heartbeat: how long a client has to answer a ping before it is dropped
    /// (this is also what ends a client that stopped reading), in milliseconds.
    #[arg(long, env = "TIDINGS_PING_TIMEOUT_MS", default_value_t = 20_000,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub ping_timeout_ms: u64,

    /// Longest graceful shutdown on SIGINT/SIGTERM, in seconds, before remaining connections
    /// are dropped (every received message is still stored and acked first).
    #[arg(long, env = "TIDINGS_SHUTDOWN_TIMEOUT", default_value_t = 10,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_timeout: u64,

    /// Keep only this many of the newest messages; older ones are deleted in the background
    /// (with their client offsets). Unset: keep everything.
    #[arg(long, env = "TIDINGS_RETAIN_MESSAGES", value_parser = clap::value_parser!(u64).range(1..))]
    pub retain_messages: Option<u64>,

    /// Keep only messages received in the last this many days. Unset: keep everything.
    #[arg(long, env = "TIDINGS_RETAIN_DAYS", value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub retain_days: Option<u64>,

    /// Messages per replay batch read from the database.
    #[arg(long, env = "TIDINGS_REPLAY_BATCH", default_value_t = 256,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub replay_batch: u32,
}

impl Config {
    /// A configuration with every default, for `path` (used by tests and embedders).
    pub fn with_db(db: impl Into<PathBuf>) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            db: db.into(),
            max_message_bytes: 65_536,
            max_client_offset_bytes: 256,
            live_buffer: 4096,
            tail_cache_messages: 10_000,
            tail_cache_bytes: 16 << 20,
            socket_buffer: 1024,
            replay_batch: 256,
            rate_limit: 20.0,
            rate_burst: 50,
            max_connections: 50_000,
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
            shutdown_timeout: 10,
            retain_messages: None,
            retain_days: None,
        }
    }

    /// The per-connection send limit this configuration sets.
    pub fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: if self.rate_limit.is_finite() {
                self.rate_limit.max(0.0)
            } else {
                0.0
            },
            burst: f64::from(self.rate_burst),
        }
    }

    /// The payload limits this configuration sets.
    pub fn limits(&self) -> Limits {
        Limits {
            max_message_bytes: self.max_message_bytes as usize,
            max_client_offset_bytes: self.max_client_offset_bytes as usize,
        }
    }
}
