//! The server: opens the database, wires the stages together, serves until a shutdown signal,
//! then shuts down within `--shutdown-timeout`.
//!
//! It owns the lifecycle only: which task runs, in what order things start and stop. The
//! stages themselves are [`crate::ingest`], [`crate::storage`], [`crate::delivery`],
//! [`crate::socket`] and [`crate::http`].

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use socketioxide::{ParserConfig, SocketIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::Config;
use crate::access::Admins;
use crate::client_addr::Peer;
use crate::cluster::Cluster;
use crate::cluster::applier::{HoleError, apply_forever, fill_holes};
use crate::cluster::health::probe_forever;
use crate::cluster::log::JetStreamLog;
use crate::cluster::presence::{NatsRelay, exchange_forever};
use crate::delivery::{Hub, Live};
use crate::http;
use crate::ingest::retention::{Retention, prune_forever};
use crate::ingest::{SharedLog, WriterConfig, WriterHandle, spawn_writer};
use crate::message::Message;
use crate::metrics;
use crate::protocol::{MAX_INCOMING_BINARIES, payload_limit};
use crate::socket::admission::ConnectionCount;
use crate::socket::chat::InFlight;
use crate::socket::identity::{Auth, SharedAuth, watch_expiries};
use crate::socket::presence::{Relay, SharedRoster, broadcast_presence};
use crate::socket::recovery::{Recovery, keep_sessions};
use crate::socket::rooms::Rooms;
use crate::socket::{self, ChatState};
use crate::storage::{Store, StoreError, StoreReader, StoreWriter};
use crate::tls::{PlainListener, Tls, TlsListener};

/// Initial websocket read buffer per connection (engineioxide's default is 4 KiB), and the
/// most tungstenite reads from the socket at once. Most chat frames fit in 512 bytes; a larger
/// frame takes more reads (a 4 KiB message costs ~6 % more server CPU than with 1 KiB,
/// BENCHMARKS.md round 9), while every idle connection keeps 0.4 KiB less.
const WS_READ_BUFFER_BYTES: usize = 512;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// A configuration value is out of its range.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// The database could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The cluster could not be joined.
    #[error(transparent)]
    Cluster(#[from] crate::cluster::ClusterError),
    /// The writer thread could not be started.
    #[error("cannot start the writer thread: {0}")]
    Writer(#[source] std::io::Error),
    /// A cluster replica lacks messages the stream holds and they could not be read.
    #[error(transparent)]
    Hole(#[from] HoleError),
    /// The TLS certificate or key could not be used.
    #[error(transparent)]
    Tls(#[from] crate::tls::TlsError),
    /// Serving HTTP failed.
    #[error("server error: {0}")]
    Serve(#[source] std::io::Error),
}

/// An opened database with its writer running, ready to serve.
pub struct Server {
    config: Config,
    /// Cluster mode: the link to NATS and the stream that is the log.
    cluster: Option<Cluster>,
    /// The database's epoch, as clients see it.
    epoch: Arc<str>,
    hub: Arc<Hub>,
    reader: StoreReader,
    writer: WriterHandle,
    writer_thread: JoinHandle<()>,
    /// The token policy, its key read at start-up.
    auth: SharedAuth,
    /// `--admin-listen`: where `/metrics` is served instead of the public port.
    admin: Option<TcpListener>,
    /// `--tls-cert` and `--tls-key`, read at start-up.
    tls: Option<Arc<Tls>>,
}

impl Server {
    /// Serves the admin endpoints (`/metrics`, `/healthz`) on `listener` (`--admin-listen`)
    /// and no longer `/metrics` on the public port.
    pub fn with_admin(mut self, listener: TcpListener) -> Self {
        self.admin = Some(listener);
        self
    }

    /// Opens the database named by `config` and starts the writer thread. Blocking (opens a
    /// file); call it before serving, or from `spawn_blocking`.
    pub fn open(config: Config) -> Result<Self, ServerError> {
        config.validate()?;
        let stores = Store::open(&config.db, config.db_cache_bytes())?;
        Self::with_store(config, stores)
    }

    /// Opens the node's database as a replica of `cluster`'s stream (refusing a file of
    /// another stream, or one with a single-node history) and starts the writer. Blocking.
    pub fn open_in_cluster(config: Config, cluster: Cluster) -> Result<Self, ServerError> {
        config.validate()?;
        let (reader, mut store_writer) = Store::open(&config.db, config.db_cache_bytes())?;
        store_writer.claim_stream(&cluster.identity)?;
        let mut server = Self::with_store(config, (reader, store_writer))?;
        server.epoch = format!("{:016x}", cluster.epoch()).into();
        server.cluster = Some(cluster);
        Ok(server)
    }

    /// Like [`Server::open`], over an already opened store (tests use one whose storage
    /// fails on demand).
    pub fn with_store(
        config: Config,
        (reader, mut store_writer): (StoreReader, StoreWriter),
    ) -> Result<Self, ServerError> {
        config.validate()?;
        // A bad key or `--auth` without one stops the start here, before anything is served.
        let auth = Arc::new(
            Auth::new(
                config.auth,
                config.verifier()?,
                Duration::from_secs(config.token_grace),
            )
            .with_admins(Admins::new(config.server_admins.iter().cloned())),
        );
        // A missing or mismatched certificate stops the start before the database is touched.
        let tls = match (&config.tls_cert, &config.tls_key) {
            (Some(cert), Some(key)) => Some(Arc::new(Tls::load(cert, key)?)),
            _ => None,
        };
        // The file's messages without a room are the default room's: it is pinned once.
        store_writer.pin_default_room(&config.default_room)?;
        // Install the recorder before anything records (the hub records the cache's size).
        let _ = metrics::handle();
        metrics::gauge(metrics::DATABASE_CACHE_BYTES).set(config.db_cache_bytes() as f64);
        metrics::gauge(metrics::CONNECTIONS).set(0.0);
        let tail = config.tail_limits();
        // Seeded from the store, so the reconnects after a restart replay from memory too;
        // read newest first up to the cache's budget, so start-up holds no more of the
        // history than the cache keeps (a count alone could be 10,000 messages of 64 KiB).
        let newest = reader.read_newest(tail.max_messages, tail.max_bytes, |m| {
            crate::delivery::tail::cost_of(&m.content, m.author.as_deref(), m.user.as_deref())
        })?;
        // Deleted messages' tombstones are never delivered.
        let newest = newest.into_iter().filter(|row| !row.message.is_tombstone());
        // Each room's newest id, which a join reads; rooms are few next to messages. A room
        // whose messages retention deleted exists only while it has members.
        let rooms = reader
            .rooms_after(None, usize::MAX)?
            .into_iter()
            .filter(|(room, stats)| room.is_none() || stats.messages > 0)
            .map(|(room, stats)| (room, stats.last));
        let hub = Arc::new(Hub::with_rooms(
            store_writer.last_id(),
            rooms,
            config.live_buffer as usize,
            tail,
            newest.into_iter().map(|row| Arc::new(Message::from(row))),
        ));
        hub.access.load(reader.access_states()?);
        let epoch: Arc<str> = format!("{:016x}", reader.epoch()?).into();
        let (writer, writer_thread) =
            spawn_writer(store_writer, hub.clone(), WriterConfig::default())
                .map_err(ServerError::Writer)?;
        Ok(Self {
            config,
            cluster: None,
            epoch,
            hub,
            reader,
            writer,
            writer_thread,
            auth,
            admin: None,
            tls,
        })
    }

    /// A cluster node: finds the messages its replica lacks that the stream still holds (a
    /// file from a build that could lose them) and stores them from the stream, waiting up to
    /// `cluster::START_TIMEOUT` (60 s) for the stream to answer. Call it before serving: a
    /// replay across a hole would skip messages. Returns how many it stored (none on a single
    /// node).
    pub async fn mend_replica(&self) -> Result<usize, ServerError> {
        let Some(cluster) = &self.cluster else {
            return Ok(0);
        };
        let filled = fill_holes(
            &cluster.source(),
            &self.reader,
            &self.writer,
            crate::cluster::START_TIMEOUT,
        )
        .await?;
        if filled > 0 {
            tracing::warn!(filled, "the replica's holes were filled from the stream");
        }
        Ok(filled)
    }

    /// The highest message id stored when the server was opened or since.
    pub fn last_id(&self) -> u64 {
        self.hub.last_published()
    }

    /// Serves HTTP and Socket.IO on `listener` until `shutdown` resolves, then, within
    /// `--shutdown-timeout`: stores and acks the messages already received, closes every
    /// socket, lets the writer finish what it was given, and closes the database. A stage
    /// that does not finish in time is cut short and logged.
    pub async fn serve(
        mut self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        // Install the recorder before anything records.
        let _ = metrics::handle();
        let config = &self.config;
        let tasks = TaskTracker::new();
        let roster = SharedRoster::default();
        let in_flight = InFlight::default();
        let connections = ConnectionCount::new(
            config.max_connections as usize,
            config.max_connections_per_ip as usize,
        );
        let stopping = CancellationToken::new();
        let (live, broadcaster) = Live::start(self.hub.clone(), stopping.clone());
        tasks.spawn(broadcaster);
        let (log, relay): (SharedLog, Option<Arc<dyn Relay>>) = match &self.cluster {
            None => (Arc::new(self.writer.clone()), None),
            Some(cluster) => {
                let node = cluster.config.node.clone();
                tasks.spawn(apply_forever(
                    cluster.source(),
                    self.hub.last_published() + 1,
                    self.writer.clone(),
                    stopping.clone(),
                ));
                tasks.spawn(probe_forever(
                    cluster.stream.clone(),
                    cluster.health.clone(),
                    self.hub.clone(),
                    stopping.clone(),
                ));
                let log = JetStreamLog::new(
                    cluster.js.clone(),
                    cluster.config.stream.clone(),
                    self.reader.clone(),
                    self.hub.clone(),
                    cluster.health.clone(),
                );
                let (relay, publisher) = NatsRelay::new(
                    cluster.client.clone(),
                    &cluster.config.stream,
                    &node,
                    stopping.clone(),
                );
                tasks.spawn(publisher);
                (Arc::new(log), Some(Arc::new(relay)))
            }
        };
        let recovery = Recovery {
            window: Duration::from_secs(config.recovery_window),
            writer: self.writer.clone(),
            reader: self.reader.clone(),
            hub: self.hub.clone(),
        };
        let rooms = Rooms::new(
            &config.default_room,
            config.max_rooms_per_connection as usize,
            config.max_rooms as usize,
        );
        let state = ChatState {
            hub: self.hub.clone(),
            reader: self.reader.clone(),
            log: log.clone(),
            limits: config.limits(),
            batch: config.batch_limits(),
            tasks: tasks.clone(),
            shutdown: stopping.clone(),
            rate_limit: config.rate_limit(),
            connections: connections.clone(),
            roster: roster.clone(),
            in_flight: in_flight.clone(),
            epoch: self.epoch.clone(),
            live,
            relay,
            recovery: recovery.clone(),
            rooms: rooms.clone(),
            auth: self.auth.clone(),
        };
        let (service, io) = socket_io(config, state.clone());
        socket::register(&io);
        let retention = config.retention();
        if retention != Retention::default() {
            tasks.spawn(prune_forever(
                self.writer.clone(),
                retention,
                stopping.clone(),
            ));
        }
        if let Some(cluster) = &self.cluster {
            tasks.spawn(exchange_forever(
                cluster.client.clone(),
                cluster.config.stream.clone(),
                cluster.config.node.clone(),
                roster.clone(),
                io.clone(),
                stopping.clone(),
            ));
        }
        tasks.spawn(broadcast_presence(
            io.clone(),
            roster.clone(),
            rooms,
            stopping.clone(),
        ));
        if !recovery.window.is_zero() {
            tasks.spawn(keep_sessions(io.clone(), recovery, stopping.clone()));
        }
        if self.auth.is_on() {
            tasks.spawn(watch_expiries(io.clone(), state.clone(), stopping.clone()));
        }
        // Also without identities here: in a cluster, another node's kicks reach this one.
        tasks.spawn(crate::socket::moderation::enforce_forever(
            io.clone(),
            state.clone(),
        ));
        let ops = http::Ops {
            log: log.clone(),
            hub: self.hub.clone(),
            db: config.db.clone(),
            connections,
            store: self.reader.clone(),
            roster,
            backups: Arc::default(),
        };
        let public_metrics = self.admin.is_none();
        if let Some(admin) = self.admin.take() {
            let stopped = stopping.clone();
            let app = http::admin_router(ops.clone());
            tokio::spawn(async move {
                let served = axum::serve(admin, app)
                    .with_graceful_shutdown(async move { stopped.cancelled().await })
                    .await;
                if let Err(e) = served {
                    tracing::error!("the admin port stopped: {e}");
                }
            });
        }
        let app = http::router(
            service,
            ops,
            config.origins()?,
            config.trusted_proxies()?,
            public_metrics,
        );
        // Small frames (acks, chat lines) must leave at once: Nagle would hold them ~40 ms.

        let grace = Duration::from_secs(config.shutdown_timeout);
        // The writer and the database get the last part of the budget, whatever came before.
        let reserve = (grace / 4).min(Duration::from_secs(1));
        let (deadline_tx, mut deadline_rx) = watch::channel(None::<Instant>);
        let closing = io.clone();
        let draining = in_flight.clone();
        let cancel = stopping.clone();
        let graceful = async move {
            shutdown.await;
            let deadline = Instant::now() + grace;
            deadline_tx.send_replace(Some(deadline));
            let sockets_by = deadline - reserve;
            tracing::info!("shutting down: finishing received messages");
            if tokio::time::timeout_at(sockets_by, draining.drained())
                .await
                .is_err()
            {
                tracing::warn!(
                    messages = draining.count(),
                    "shutdown timeout: messages still in flight were not acked (their \
                         senders retry after the restart)"
                );
            }
            tracing::info!("shutting down: closing sockets");
            cancel.cancel();
            if tokio::time::timeout_at(sockets_by, closing.close())
                .await
                .is_err()
            {
                tracing::warn!("shutdown timeout: not every socket closed in time");
            }
        };
        let serving: std::pin::Pin<Box<dyn Future<Output = std::io::Result<()>> + Send>> =
            match &self.tls {
                None => {
                    let listener = PlainListener(listener);
                    Box::pin(
                        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                            .with_graceful_shutdown(graceful)
                            .into_future(),
                    )
                }
                Some(tls) => {
                    tasks.spawn(crate::tls::reload_on_sighup(tls.clone(), stopping.clone()));
                    let listener = TlsListener::new(listener, tls, stopping.clone())
                        .map_err(ServerError::Serve)?;
                    Box::pin(
                        axum::serve(listener, app.into_make_service_with_connect_info::<Peer>())
                            .with_graceful_shutdown(graceful)
                            .into_future(),
                    )
                }
            };
        let stop_serving_by = async {
            let deadline = loop {
                if let Some(deadline) = *deadline_rx.borrow_and_update() {
                    break deadline;
                }
                if deadline_rx.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            };
            tokio::time::sleep_until(deadline - reserve).await;
        };
        let served = tokio::select! {
            served = serving => served,
            () = stop_serving_by => {
                tracing::warn!(?grace, "shutdown timeout: dropping the remaining connections");
                Ok(())
            }
        };
        let deadline = deadline_rx
            .borrow()
            .unwrap_or_else(|| Instant::now() + grace);

        // Every socket is closed: their delivery tasks end (the database is closed only after
        // the last replay read), then the writer finishes what it was given.
        drop(io);
        tasks.close();
        if tokio::time::timeout_at(deadline - reserve, tasks.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                left = tasks.len(),
                "shutdown timeout: delivery tasks still running"
            );
        }
        let finished = tokio::time::timeout_at(deadline, async {
            // The log first (a cluster node's publishes), then the local writer (the same one
            // on a single node: a second stop finds it stopped).
            log.stop().await;
            self.writer.stop().await;
            join_thread(self.writer_thread).await;
        })
        .await;
        if finished.is_err() {
            // redb commits are crash-consistent: what was acked is on disk either way.
            tracing::warn!(
                "shutdown timeout: the writer did not finish; exiting without closing the database"
            );
        } else {
            let reader = self.reader;
            let closing = std::thread::spawn(move || reader.close());
            match tokio::time::timeout_at(deadline, join_thread(closing)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => tracing::error!("closing the database: {e}"),
                Err(_) => tracing::warn!("shutdown timeout: the database did not close in time"),
            }
        }
        tracing::info!("stopped");
        served.map_err(ServerError::Serve)
    }
}

/// Waits for a thread without blocking the runtime (a blocking join could outlast any
/// deadline, and so could a `spawn_blocking` one: the runtime waits for those on exit).
async fn join_thread<T>(thread: JoinHandle<T>) -> T {
    while !thread.is_finished() {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    match thread.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// The Socket.IO service over `state`, with the configured limits.
fn socket_io(
    config: &Config,
    state: ChatState,
) -> (
    socketioxide::service::SocketIoService<axum::Router>,
    SocketIo,
) {
    let payload_limit = payload_limit(&config.limits());
    SocketIo::builder()
        .max_payload(payload_limit as u64)
        .max_buffer_size(config.socket_buffer as usize)
        .ping_interval(Duration::from_millis(config.ping_interval_ms))
        .ping_timeout(Duration::from_millis(config.ping_timeout_ms))
        .ws_max_message_size(payload_limit)
        .ws_max_frame_size(payload_limit)
        // tungstenite zero-fills its whole read buffer, so each connection keeps all of it
        // resident; chat frames are small, and a larger frame grows the buffer to its size.
        .ws_read_buffer_size(WS_READ_BUFFER_BYTES)
        // Nothing reads a socket's request headers after its handshake: not kept, they cost
        // an idle connection ~1 KiB (a browser's, with cookies, more).
        .keep_request_headers(false)
        // We accept no binary attachments; bound what a client can make us buffer anyway.
        .with_parser(
            ParserConfig::common()
                .max_incoming_binary_buf_size(payload_limit)
                .max_incoming_binaries(MAX_INCOMING_BINARIES),
        )
        .with_state(state)
        .build_with_inner_svc(http::not_found())
}
