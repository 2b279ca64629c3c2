//! tidings: a durable Socket.IO chat server.
//!
//! One process serves the chat page and a Socket.IO v4 endpoint compatible with the official
//! tutorial's clients, and keeps every message in one embedded redb file. Every acked message
//! is on disk; every client sees every message once, in id order, across reconnects.
//!
//! # Layout
//! - [`config`]: command-line flags and environment variables.
//! - [`admin`]: offline commands over a database file (export, import, backup, stats).
//! - [`protocol`]: pure wire rules: handshake auth, `chat message` validation, ack bodies.
//! - [`record`]: pure on-disk record encoding (versioned postcard).
//! - [`rate`]: the per-connection token bucket (pure).
//! - [`store`]: the only code touching redb: tables, dedup, id allocation, range reads.
//! - [`writer`]: the single writer thread with group commit; publishes after each commit.
//! - [`hub`]: the sequencer of live delivery (`last_published` + broadcast channel).
//! - [`tail`]: the in-memory cache of the newest messages that serves recent replays (pure).
//! - [`feed`]: one client's gap-free replay-then-live stream.
//! - [`presence`]: who is online (ephemeral roster).
//! - [`socket`]: the Socket.IO handlers (the only code touching socketioxide).
//! - [`http`]: the router, `/metrics`, `/healthz` and the embedded static assets.
//! - [`telemetry`]: metric names and the Prometheus exporter.
//!
//! [`Server::open`] opens the database and starts the writer; [`Server::serve`] takes an
//! already bound listener and a shutdown future, so tests bind port 0 and never sleep.

pub mod admin;

pub mod config;
pub mod feed;
pub mod http;
pub mod hub;
pub mod presence;
pub mod protocol;
pub mod rate;
pub mod record;
pub mod socket;
pub mod store;
pub mod tail;
pub mod telemetry;
pub mod writer;

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use axum::serve::ListenerExt;
use socketioxide::{ParserConfig, SocketIo};
use tokio::net::TcpListener;

pub use config::Config;

use crate::feed::BatchLimits;
use crate::hub::Hub;
use crate::socket::ChatState;
use crate::store::{Store, StoreError, StoreReader, StoreWriter};
use crate::tail::TailLimits;
use crate::writer::{Retention, WriterConfig, WriterHandle, spawn_writer};
use tokio_util::sync::CancellationToken;

/// Initial websocket read buffer per connection (engineioxide's default is 4 KiB).
const WS_READ_BUFFER_BYTES: usize = 1024;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The writer thread could not be started.
    #[error("cannot start the writer thread: {0}")]
    Writer(std::io::Error),
    /// Serving HTTP failed.
    #[error("server error: {0}")]
    Serve(std::io::Error),
}

/// How often retention looks for messages to delete.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// Applies retention in the background: small batches through the writer (so appends
/// interleave), repeated while there is more, then a pause.
async fn prune_forever(writer: WriterHandle, retention: Retention, stop: CancellationToken) {
    loop {
        loop {
            match writer.prune(retention).await {
                Ok(n) if n == writer::PRUNE_BATCH => tokio::task::yield_now().await,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!("retention: {e}");
                    break;
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(PRUNE_INTERVAL) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// How long shutdown waits for per-socket tasks to notice their socket closed.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(5);

/// An opened database with its writer running, ready to serve.
pub struct Server {
    config: Config,
    /// The database's epoch, as clients see it.
    epoch: Arc<str>,
    hub: Arc<Hub>,
    reader: StoreReader,
    writer: WriterHandle,
    writer_thread: JoinHandle<()>,
}

impl Server {
    /// Opens the database named by `config` and starts the writer thread. Blocking (opens a
    /// file); call it before serving, or from `spawn_blocking`.
    pub fn open(config: Config) -> Result<Self, ServerError> {
        let stores = Store::open(&config.db)?;
        Self::with_store(config, stores)
    }

    /// Like [`Server::open`], over an already opened store (tests use one whose storage
    /// fails on demand).
    pub fn with_store(
        config: Config,
        (reader, store_writer): (StoreReader, StoreWriter),
    ) -> Result<Self, ServerError> {
        let tail = TailLimits {
            max_messages: config.tail_cache_messages as usize,
            max_bytes: config.tail_cache_bytes as usize,
        };
        // Seeded from the store, so the reconnects after a restart replay from memory too.
        let (newest, _) = reader.read_before(None, tail.max_messages)?;
        let hub = Arc::new(Hub::new(
            store_writer.last_id(),
            config.live_buffer as usize,
            tail,
            newest
                .into_iter()
                .map(|row| Arc::new(hub::LiveMessage::from_row(row))),
        ));
        let epoch: Arc<str> = format!("{:016x}", reader.epoch()?).into();
        let (writer, writer_thread) =
            spawn_writer(store_writer, hub.clone(), WriterConfig::default())
                .map_err(ServerError::Writer)?;
        Ok(Self {
            config,
            epoch,
            hub,
            reader,
            writer,
            writer_thread,
        })
    }

    /// The highest message id stored when the server was opened or since.
    pub fn last_id(&self) -> u64 {
        self.hub.last_published()
    }

    /// Serves HTTP and Socket.IO on `listener` until `shutdown` resolves, then closes every
    /// socket, lets the writer finish what it was given, and closes the database.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let limits = self.config.limits();
        // Worst case JSON escaping is 6 bytes per content byte (\u00XX), plus the frame.
        let payload_limit =
            ((limits.max_message_bytes + limits.max_client_offset_bytes) * 6 + 4096).max(100_000);
        let tasks = tokio_util::task::TaskTracker::new();
        let roster = socket::SharedRoster::default();
        let in_flight = socket::InFlight::default();
        let connections = socket::ConnectionCount::new(self.config.max_connections as usize);
        // Install the recorder before anything records.
        let _ = telemetry::handle();
        let shutdown_token = tokio_util::sync::CancellationToken::new();
        let (live, broadcaster) = socket::LiveSet::start(self.hub.clone(), shutdown_token.clone());
        tasks.spawn(broadcaster);
        let state = ChatState {
            hub: self.hub.clone(),
            reader: self.reader.clone(),
            writer: self.writer.clone(),
            limits,
            batch: BatchLimits {
                max_count: self.config.replay_batch as usize,
                ..BatchLimits::default()
            },
            tasks: tasks.clone(),
            shutdown: shutdown_token.clone(),
            rate_limit: self.config.rate_limit(),
            connections: connections.clone(),
            roster: roster.clone(),
            in_flight: in_flight.clone(),
            epoch: self.epoch.clone(),
            live,
        };
        let (service, io) = SocketIo::builder()
            .max_payload(payload_limit as u64)
            .max_buffer_size(self.config.socket_buffer as usize)
            .ping_interval(Duration::from_millis(self.config.ping_interval_ms))
            .ping_timeout(Duration::from_millis(self.config.ping_timeout_ms))
            .ws_max_message_size(payload_limit)
            .ws_max_frame_size(payload_limit)
            // tungstenite zero-fills its whole read buffer, so each connection keeps all of it
            // resident; chat frames are small, and a larger frame grows the buffer to its size.
            .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
            // We accept no binary attachments; bound what a client can make us buffer anyway.
            .with_parser(
                ParserConfig::common()
                    .max_incoming_binary_buf_size(payload_limit)
                    .max_incoming_binaries(4),
            )
            .with_state(state)
            .build_with_inner_svc(http::not_found());
        socket::register(&io);
        let retention = Retention {
            messages: self.config.retain_messages,
            days: self.config.retain_days,
        };
        if retention != Retention::default() {
            tasks.spawn(prune_forever(
                self.writer.clone(),
                retention,
                shutdown_token.clone(),
            ));
        }
        tasks.spawn(socket::broadcast_presence(
            io.clone(),
            roster,
            shutdown_token.clone(),
        ));
        let ops = http::Ops {
            writer: self.writer.clone(),
            hub: self.hub.clone(),
            db: self.config.db.clone(),
            connections: connections.clone(),
        };
        let app = http::router(service, ops);
        let closing = io.clone();
        let stopping = shutdown_token.clone();
        // Small frames (acks, chat lines) must leave at once: Nagle would hold them ~40 ms.
        let listener = listener.tap_io(|tcp| {
            if let Err(e) = tcp.set_nodelay(true) {
                tracing::debug!("cannot set TCP_NODELAY: {e}");
            }
        });
        let grace = Duration::from_secs(self.config.shutdown_timeout);
        let serving = axum::serve(listener, app)
            .with_graceful_shutdown(async move {
                shutdown.await;
                // Store and ack what was received, then close the sockets.
                tracing::info!("shutting down: finishing received messages");
                let _ = tokio::time::timeout(grace, in_flight.drained()).await;
                tracing::info!("shutting down: closing sockets");
                stopping.cancel();
                closing.close().await;
            })
            .into_future();
        // Bound the drain: connections that do not close in time are dropped.
        let deadline = async {
            shutdown_token.cancelled().await;
            tokio::time::sleep(grace).await;
        };
        let served = tokio::select! {
            served = serving => served,
            () = deadline => {
                tracing::warn!(?grace, "shutdown timeout: dropping the remaining connections");
                Ok(())
            }
        };
        // Every socket is closed: wait for their delivery tasks (bounded, in case a client
        // never acknowledges the close), then let the writer finish what it was given.
        drop(io);
        tasks.close();
        if tokio::time::timeout(SHUTDOWN_DRAIN, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = tasks.len(),
                "delivery tasks still running at shutdown"
            );
        }
        self.writer.stop().await;
        let thread = self.writer_thread;
        let _ = tokio::task::spawn_blocking(move || thread.join()).await;
        let reader = self.reader;
        match tokio::task::spawn_blocking(move || reader.close()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::error!("closing the database: {e}"),
            Err(e) => tracing::error!("closing the database: {e}"),
        }
        tracing::info!("stopped");
        served.map_err(ServerError::Serve)
    }
}
