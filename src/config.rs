//! Configuration: every option as a command-line flag with an environment variable and a
//! documented default. Parsing only; [`crate::run`] applies it.

use std::path::PathBuf;

use clap::Parser;

use crate::protocol::Limits;
use crate::rate::RateLimit;

/// A durable Socket.IO chat server: serves the chat page and keeps every message in one redb
/// file.
#[derive(Debug, Clone, Parser)]
#[command(name = "tidings", version, about, long_about = None)]
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

    /// Live messages buffered per server for clients that fall behind; a client further
    /// behind catches up from the database instead.
    #[arg(long, env = "TIDINGS_LIVE_BUFFER", default_value_t = 4096,
          value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub live_buffer: u32,

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
            socket_buffer: 1024,
            replay_batch: 256,
            rate_limit: 20.0,
            rate_burst: 50,
            max_connections: 50_000,
            ping_interval_ms: 25_000,
            ping_timeout_ms: 20_000,
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
