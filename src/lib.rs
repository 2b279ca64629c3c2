#![doc = include_str!("../docs/ARCHITECTURE.md")]

pub mod access;
mod client_addr;
mod cluster;
mod config;
mod delivery;
mod every;
mod http;
pub mod identity;
mod ingest;
pub mod message;
mod metrics;
pub mod notify;
mod ops;
mod origins;
pub mod protocol;
mod server;
mod socket;
pub mod storage;
mod tls;

pub use cluster::Cluster;
pub use config::{AuthMode, Cli, Command, Config, DbArgs, LogFormat};
pub use ops::commands;
pub use server::{Server, ServerError};

/// What the fuzz targets drive beyond the public API: the live set, the tail cache and the
/// cursor they rest on. Not an API: it changes with them.
#[doc(hidden)]
pub mod fuzzing {
    pub use crate::delivery::cursor::EmittedCursor;
    pub use crate::delivery::live::{ChatSink, LiveSet, Member, PassBatch, Refused};
    pub use crate::delivery::outbox::NotQueued;
    pub use crate::delivery::tail::{TailCache, cost};
    pub use crate::delivery::{Hub, Subscription, TailLimits};
}
