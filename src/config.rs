//! Configuration: every option as a command-line flag with an environment variable and a
//! documented default. Parsing only; [`crate::run`] applies it.

use std::path::PathBuf;

use clap::Parser;

use crate::protocol::Limits;

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
