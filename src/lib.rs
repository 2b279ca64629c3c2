//! tidings: a durable Socket.IO chat server.
//!
//! One process serves the chat page and a Socket.IO v4 endpoint compatible with the official
//! tutorial's clients, and keeps every message in one embedded redb file. Every acked message
//! is on disk; every client sees every message once, in id order, across reconnects.
//!
//! # Layout: one module per stage of a message's way through the server
//!
//! ```text
//!  client ─▶ socket ─▶ protocol (validate) ─▶ ingest (the log: dedup, id, group commit)
//!                                                  │                   │
//!                                                  ▼                   ▼
//!                                       delivery (hub, live set)   storage (redb)
//!                                                  │                   │
//!  client ◀─ socket ◀── delivery (replay, catch-up, live, outbox) ◀───┘
//! ```
//!
//! - [`message`]: the message's shapes (input, stored record, delivered) and conversions.
//! - [`protocol`]: pure wire rules: handshake, `chat message` validation, history, acks.
//! - [`ingest`]: the [`ingest::Log`] seam and the local log (the single writer thread, group
//!   commit, publish after commit), retention.
//! - [`storage`]: the only code touching redb: tables, dedup, id allocation, range reads,
//!   the record encoding.
//! - [`delivery`]: the hub, the tail cache, the catch-up reader, the live set and broadcaster,
//!   the outbox, and the task serving each socket.
//! - [`socket`]: the Socket.IO handlers: admission, chat, history, presence.
//! - [`http`]: the router, the embedded page, `/healthz`, `/metrics`.
//! - [`ops`]: the offline commands; [`metrics`]: the metric names and the exporter, a leaf.
//! - [`cluster`]: cluster mode: the JetStream log, the applier that fills the local replica,
//!   readiness, presence across nodes.
//! - [`config`]: flags, environment variables and their defaults; [`every`]: the beat of the
//!   periodic tasks.
//! - [`server`]: wiring and lifecycle: [`Server::open`] opens the database and starts the
//!   writer; [`Server::serve`] takes an already bound listener and a shutdown future, so tests
//!   bind port 0 and never sleep.

pub mod cluster;
pub mod config;
pub mod delivery;
pub mod every;
pub mod http;
pub mod ingest;
pub mod message;
pub mod metrics;
pub mod ops;
pub mod protocol;
pub mod server;
pub mod socket;
pub mod storage;

pub use config::Config;
pub use server::{Server, ServerError};
