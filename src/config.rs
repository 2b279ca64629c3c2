//! Configuration: every option as a command-line flag with an environment variable and a
//! documented default, each default written once (in [`defaults`]). Parsing only;
//! [`crate::Server`] applies it.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::cluster::ClusterConfig;
use crate::delivery::{BatchLimits, TailLimits};
use crate::identity::{self, ClaimRules, Verifier, parse_algorithm};
use crate::ingest::retention::Retention;
use crate::protocol::Limits;
use crate::socket::rate::RateLimit;

/// The default of every serving option; clap's `--help`, [`Config::default`] and the tests
/// all read them from here.
pub mod defaults {
    /// `--host`: every interface, as the tutorial server does.
    pub const HOST: &str = "0.0.0.0";
    /// `--port`.
    pub const PORT: u16 = 3000;
    /// `--db`.
    pub const DB: &str = "tidings.redb";
    /// `--max-message-bytes`.
    pub const MAX_MESSAGE_BYTES: u32 = 65_536;
    /// `--max-client-offset-bytes`.
    pub const MAX_CLIENT_OFFSET_BYTES: u32 = 256;
    /// `--live-buffer`.
    pub const LIVE_BUFFER: u32 = 4096;
    /// `--tail-cache-messages`.
    pub const TAIL_CACHE_MESSAGES: u32 = 10_000;
    /// `--tail-cache-bytes`.
    pub const TAIL_CACHE_BYTES: u64 = 16 << 20;
    /// `--socket-buffer`.
    pub const SOCKET_BUFFER: u32 = 1024;
    /// `--rate-limit`.
    pub const RATE_LIMIT: f64 = 20.0;
    /// `--rate-burst`.
    pub const RATE_BURST: u32 = 50;
    /// `--max-connections`.
    pub const MAX_CONNECTIONS: u32 = 50_000;
    /// `--ping-interval-ms`.
    pub const PING_INTERVAL_MS: u64 = 25_000;
    /// `--ping-timeout-ms`.
    pub const PING_TIMEOUT_MS: u64 = 20_000;
    /// `--shutdown-timeout`.
    pub const SHUTDOWN_TIMEOUT: u64 = 10;
    /// `--replay-batch`.
    pub const REPLAY_BATCH: u32 = 256;
    /// `--recovery-window`, in seconds.
    pub const RECOVERY_WINDOW: u64 = 600;
    /// `--stream`.
    pub const STREAM: &str = "TIDINGS";
    /// `--replicas`.
    pub const REPLICAS: u8 = 3;
    /// `--default-room`: the room of clients that name none, and of every message stored
    /// before rooms existed.
    pub const DEFAULT_ROOM: &str = "general";
    /// `--max-rooms-per-connection`.
    pub const MAX_ROOMS_PER_CONNECTION: u32 = 100;
    /// `--max-rooms`: rooms that exist (hold messages or members).
    pub const MAX_ROOMS: u32 = 100_000;
    /// `--jwt-leeway`, in seconds.
    pub const JWT_LEEWAY: u64 = 30;
    /// `--token-grace`, in seconds.
    pub const TOKEN_GRACE: u64 = 30;
    /// `tidings token --ttl`, in seconds.
    pub const TOKEN_TTL: u64 = 3600;
    /// `--db-cache-mb`: redb's page cache, in MiB (redb's own default is 1 GiB, which a
    /// growing history fills). Chosen by measurement: BENCHMARKS.md, round 3, "The database cache".
    pub const DB_CACHE_MB: u32 = 32;
}

/// A configuration value out of its flag's range.
#[derive(Debug, thiserror::Error)]
#[error("invalid value for {flag}: {why}")]
pub struct ConfigError {
    /// The flag.
    pub flag: &'static str,
    /// What is wrong with its value.
    pub why: String,
}

/// Largest `--db-cache-mb` accepted (256 GiB).
pub const MAX_DB_CACHE_MB: u32 = 256 * 1024;

/// Bytes in one unit of `--db-cache-mb`.
const MIB: usize = 1 << 20;

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
    Serve(Box<Config>),
    /// Write stored messages as JSON Lines (the server must be stopped).
    Export(ExportArgs),
    /// Add messages from an export; importing the same file again adds nothing (the server
    /// must be stopped).
    Import(ImportArgs),
    /// Write a consistent copy of the database to PATH (the server must be stopped).
    Backup(BackupArgs),
    /// Print message count, id range, rooms and file size as JSON (the server must be
    /// stopped).
    Stats(StatsArgs),
    /// Print a signed token for a user, for development and tests (HMAC secret only: a public
    /// key cannot sign).
    Token(TokenArgs),
}

/// Whether clients present signed tokens (`--auth`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum AuthMode {
    /// No identities: anyone may connect, name themselves and post (the tutorial's server).
    #[default]
    Off,
    /// A client with a valid token is that user; one without is anonymous; an invalid token
    /// is refused.
    Optional,
    /// Only clients with a valid token may connect.
    Required,
}

/// The key and claim rules tokens are verified (or, by `tidings token`, signed) with.
#[derive(Debug, Clone, Default, Args)]
pub struct JwtArgs {
    /// HMAC key: a file whose bytes (less one trailing newline) are the secret, at least 32
    /// bytes.
    #[arg(long, env = "TIDINGS_JWT_SECRET_FILE", value_name = "PATH")]
    pub jwt_secret_file: Option<PathBuf>,

    /// The token algorithm (default: HS256 with a secret; RS256, ES256, ES384 or EdDSA by the
    /// public key's type and curve). Tokens naming any other algorithm are refused.
    #[arg(long, env = "TIDINGS_JWT_ALGORITHM", value_parser = parse_jwt_algorithm)]
    pub jwt_algorithm: Option<String>,

    /// Tokens must carry this `iss` claim.
    #[arg(long, env = "TIDINGS_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,

    /// Tokens must carry this `aud` claim (or a list holding it).
    #[arg(long, env = "TIDINGS_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
}

impl JwtArgs {
    /// The claim rules, with `leeway` seconds of clock skew.
    pub fn rules(&self, leeway: u64) -> ClaimRules {
        ClaimRules {
            issuer: self.jwt_issuer.clone(),
            audience: self.jwt_audience.clone(),
            leeway,
        }
    }

    fn algorithm(&self) -> Result<Option<jsonwebtoken::Algorithm>, ConfigError> {
        self.jwt_algorithm
            .as_deref()
            .map(parse_algorithm)
            .transpose()
            .map_err(|e| ConfigError {
                flag: "--jwt-algorithm",
                why: e.to_string(),
            })
    }

    /// The HMAC secret in `--jwt-secret-file` (blocking: reads the file).
    fn secret(&self) -> Result<Option<Vec<u8>>, ConfigError> {
        let Some(path) = &self.jwt_secret_file else {
            return Ok(None);
        };
        let flag = "--jwt-secret-file";
        let bytes = std::fs::read(path).map_err(|e| ConfigError {
            flag,
            why: format!("cannot read {}: {e}", path.display()),
        })?;
        let secret = identity::secret_from_file(&bytes).map_err(|e| ConfigError {
            flag,
            why: format!("{}: {e}", path.display()),
        })?;
        Ok(Some(secret.to_vec()))
    }
}

/// `tidings token`.
#[derive(Debug, Clone, Args)]
pub struct TokenArgs {
    /// The user id (the `sub` claim).
    #[arg(long)]
    pub sub: String,
    /// The display name (the `name` claim; default: the user id).
    #[arg(long)]
    pub name: Option<String>,
    /// Seconds until the token expires.
    #[arg(long, default_value_t = defaults::TOKEN_TTL,
          value_parser = clap::value_parser!(u64).range(1..=366 * 24 * 3600))]
    pub ttl: u64,
    #[command(flatten)]
    #[allow(missing_docs)]
    pub jwt: JwtArgs,
}

impl TokenArgs {
    /// The token these arguments describe, issued now (blocking: reads the secret file).
    pub fn sign(&self) -> Result<String, ConfigError> {
        let secret = self.jwt.secret()?.ok_or(ConfigError {
            flag: "--jwt-secret-file",
            why: "required: the HMAC secret to sign with".into(),
        })?;
        let signer =
            identity::Signer::from_secret(&secret, self.jwt.algorithm()?, self.jwt.rules(0))
                .map_err(|e| ConfigError {
                    flag: "--jwt-algorithm",
                    why: e.to_string(),
                })?;
        let now = crate::every::since_epoch().as_secs();
        let token = signer
            .sign(&self.sub, self.name.as_deref(), now, self.ttl)
            .map_err(|why| ConfigError {
                flag: "--jwt-secret-file",
                why,
            })?;
        // A token the server would refuse (an empty or over-long user id or name) is not
        // printed: it is checked by the very rules `serve` applies.
        Verifier::from_secret(&secret, self.jwt.algorithm()?, self.jwt.rules(0))
            .map(|verifier| verifier.verify(&token, now))
            .map_err(|e| ConfigError {
                flag: "--jwt-algorithm",
                why: e.to_string(),
            })?
            .map_err(|e| ConfigError {
                flag: if self.name.is_some() {
                    "--name"
                } else {
                    "--sub"
                },
                why: e.to_string(),
            })?;
        Ok(token)
    }
}

/// The database a subcommand works on.
#[derive(Debug, Clone, Args)]
pub struct DbArgs {
    /// The database file.
    #[arg(long, env = "TIDINGS_DB", default_value = defaults::DB)]
    pub db: PathBuf,

    /// Memory for the database's page cache, in MiB (as for serving).
    #[arg(long, env = "TIDINGS_DB_CACHE_MB", default_value_t = defaults::DB_CACHE_MB,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_DB_CACHE_MB)))]
    pub db_cache_mb: u32,
}

impl DbArgs {
    /// `db` with the default cache (tests and embedders).
    pub fn new(db: impl Into<PathBuf>) -> Self {
        Self {
            db: db.into(),
            db_cache_mb: defaults::DB_CACHE_MB,
        }
    }

    /// The page cache's size in bytes.
    pub fn cache_bytes(&self) -> usize {
        cache_bytes(self.db_cache_mb)
    }
}

fn cache_bytes(mb: u32) -> usize {
    (mb as usize).saturating_mul(MIB)
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
    /// Only the messages of these rooms (repeat the flag for several; default: every room).
    #[arg(long = "room", value_name = "ROOM", value_parser = parse_room_name)]
    pub rooms: Vec<String>,
    /// The default room's name, for a file that records none yet (a file records the one it
    /// was first served or imported with, and that one is used).
    #[arg(long, env = "TIDINGS_DEFAULT_ROOM", default_value = defaults::DEFAULT_ROOM,
          value_parser = parse_room_name)]
    pub default_room: String,
}

/// `tidings import`.
#[derive(Debug, Clone, Args)]
pub struct ImportArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// The JSON Lines file written by `tidings export` (`-`: standard input).
    pub file: PathBuf,
    /// The default room: lines without a room, or naming this one, go to it. Recorded in a
    /// file that records none yet; a file that records another is refused, as by `serve`.
    #[arg(long, env = "TIDINGS_DEFAULT_ROOM", default_value = defaults::DEFAULT_ROOM,
          value_parser = parse_room_name)]
    pub default_room: String,
}

/// `tidings stats`.
#[derive(Debug, Clone, Args)]
pub struct StatsArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// Also list each room with its message count and newest id.
    #[arg(long)]
    pub rooms: bool,
}

/// `tidings backup`.
#[derive(Debug, Clone, Args)]
pub struct BackupArgs {
    #[command(flatten)]
    #[allow(missing_docs)]
    pub db: DbArgs,
    /// Take the copy from a running server's admin port (`http://ADMIN_ADDR`, see
    /// `--admin-listen`) instead of a stopped server's `--db`.
    #[arg(long, value_name = "URL")]
    pub from: Option<String>,
    /// Where to write the copy (must not exist).
    pub path: PathBuf,
}

/// Serving options.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// Address to listen on (0.0.0.0: every interface, as the tutorial server does;
    /// 127.0.0.1: this machine only).
    #[arg(long, env = "TIDINGS_HOST", default_value = defaults::HOST)]
    pub host: String,

    /// TCP port to listen on (0 picks a free port and prints it).
    #[arg(long, env = "PORT", default_value_t = defaults::PORT)]
    pub port: u16,

    /// The database file; created if missing, never overwritten if it is not a tidings
    /// database.
    #[arg(long, env = "TIDINGS_DB", default_value = defaults::DB)]
    pub db: PathBuf,

    /// Memory for the database's page cache (redb's read cache and write buffer), in MiB.
    /// Recent replays come from the tail cache; this one serves older history, history
    /// pages and the writer's B-tree pages. 0 turns it off (every page is read from the
    /// file, through the operating system's page cache).
    #[arg(long, env = "TIDINGS_DB_CACHE_MB", default_value_t = defaults::DB_CACHE_MB,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(MAX_DB_CACHE_MB)))]
    pub db_cache_mb: u32,

    /// Largest accepted message content, in UTF-8 bytes.
    #[arg(long, env = "TIDINGS_MAX_MESSAGE_BYTES", default_value_t = defaults::MAX_MESSAGE_BYTES,
          value_parser = clap::value_parser!(u32).range(1..=16 * 1024 * 1024))]
    pub max_message_bytes: u32,

    /// Largest accepted clientOffset, in UTF-8 bytes.
    #[arg(long, env = "TIDINGS_MAX_CLIENT_OFFSET_BYTES", default_value_t = defaults::MAX_CLIENT_OFFSET_BYTES,
          value_parser = clap::value_parser!(u32).range(1..=4096))]
    pub max_client_offset_bytes: u32,

    /// Stored messages queued for the live broadcaster; if it ever falls further behind,
    /// every client catches up from the tail cache or the database instead.
    #[arg(long, env = "TIDINGS_LIVE_BUFFER", default_value_t = defaults::LIVE_BUFFER,
          value_parser = clap::value_parser!(u32).range(16..=1_000_000))]
    pub live_buffer: u32,

    /// Newest messages kept in memory to serve recent replays (reconnects, page reloads)
    /// without reading the database; 0 turns the cache off.
    #[arg(long, env = "TIDINGS_TAIL_CACHE_MESSAGES", default_value_t = defaults::TAIL_CACHE_MESSAGES,
          value_parser = clap::value_parser!(u32).range(0..=10_000_000))]
    pub tail_cache_messages: u32,

    /// Memory budget of that cache in bytes (message text plus ~96 bytes each).
    #[arg(long, env = "TIDINGS_TAIL_CACHE_BYTES", default_value_t = defaults::TAIL_CACHE_BYTES,
          value_parser = clap::value_parser!(u64).range(0..=(1 << 40)))]
    pub tail_cache_bytes: u64,

    /// Outgoing packets buffered per connection (engine.io). A client that reads slower than
    /// messages arrive fills it; delivery then waits for it, never drops.
    #[arg(long, env = "TIDINGS_SOCKET_BUFFER", default_value_t = defaults::SOCKET_BUFFER,
          value_parser = clap::value_parser!(u32).range(16..=65_536))]
    pub socket_buffer: u32,

    /// Messages a connection may send per second on average (token bucket), from 0.001 to
    /// 1,000,000; 0 disables the limit. Over it, the ack is `{ error: "rate limited",
    /// retryAfterMs }`.
    #[arg(long, env = "TIDINGS_RATE_LIMIT", default_value_t = defaults::RATE_LIMIT,
          value_parser = parse_rate_limit)]
    pub rate_limit: f64,

    /// Messages a connection may send at once after a quiet spell. A client that keeps
    /// sending while limited is disconnected after this many refusals in a row.
    #[arg(long, env = "TIDINGS_RATE_BURST", default_value_t = defaults::RATE_BURST,
          value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    pub rate_burst: u32,

    /// Most connected clients; further connections are refused with a `connect_error`.
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS", default_value_t = defaults::MAX_CONNECTIONS,
          value_parser = clap::value_parser!(u32).range(1..))]
    pub max_connections: u32,

    /// engine.io heartbeat: how often the server pings each client, in milliseconds.
    #[arg(long, env = "TIDINGS_PING_INTERVAL_MS", default_value_t = defaults::PING_INTERVAL_MS,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub ping_interval_ms: u64,

    /// engine.io heartbeat: how long a client has to answer a ping before it is dropped
    /// (this is also what ends a client that stopped reading), in milliseconds.
    #[arg(long, env = "TIDINGS_PING_TIMEOUT_MS", default_value_t = defaults::PING_TIMEOUT_MS,
          value_parser = clap::value_parser!(u64).range(100..=3_600_000))]
    pub ping_timeout_ms: u64,

    /// Longest graceful shutdown on SIGINT/SIGTERM, in seconds, before remaining connections
    /// are dropped (every received message is still stored and acked first).
    #[arg(long, env = "TIDINGS_SHUTDOWN_TIMEOUT", default_value_t = defaults::SHUTDOWN_TIMEOUT,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub shutdown_timeout: u64,

    /// Keep only this many of the newest messages; older ones are deleted in the background
    /// (with their client offsets). Unset: keep everything.
    #[arg(long, env = "TIDINGS_RETAIN_MESSAGES", value_parser = clap::value_parser!(u64).range(1..))]
    pub retain_messages: Option<u64>,

    /// Keep only messages received in the last this many days. Unset: keep everything.
    #[arg(long, env = "TIDINGS_RETAIN_DAYS", value_parser = clap::value_parser!(u64).range(1..=36_500))]
    pub retain_days: Option<u64>,

    /// Connection state recovery: how long, in seconds, after a client was last seen it can
    /// reconnect with `socket.recovered` and get exactly what it missed (this survives
    /// restarts, even kill -9); 0 turns recovery off.
    #[arg(long, env = "TIDINGS_RECOVERY_WINDOW", default_value_t = defaults::RECOVERY_WINDOW,
          value_parser = clap::value_parser!(u64).range(0..=30 * 24 * 3600))]
    pub recovery_window: u64,

    /// Run as a node of a cluster: the comma-separated URLs of the NATS servers whose
    /// JetStream stream is the log (every server of the NATS cluster). Unset: a single node,
    /// whose log is the database file.
    #[arg(
        long,
        env = "TIDINGS_CLUSTER",
        value_delimiter = ',',
        value_name = "URLS"
    )]
    pub cluster: Vec<String>,

    /// Cluster mode: the JetStream stream that is the log (the same on every node).
    #[arg(long, env = "TIDINGS_STREAM", default_value = defaults::STREAM,
          value_parser = parse_stream_name)]
    pub stream: String,

    /// Cluster mode: replicas of the stream (3 for a production NATS cluster of 3 servers;
    /// 1 with a single NATS server). Only used when the stream is created.
    #[arg(long, env = "TIDINGS_REPLICAS", default_value_t = defaults::REPLICAS,
          value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,

    /// Cluster mode: this node's name in presence, logs and JetStream consumer names
    /// (default: host name and process id).
    #[arg(long, env = "TIDINGS_NODE_NAME")]
    pub node_name: Option<String>,

    /// The room of clients that name none (tutorial clients), and of every message stored
    /// before rooms existed. A database records the one it was first served with; another
    /// one is refused (it would move those messages).
    #[arg(long, env = "TIDINGS_DEFAULT_ROOM", default_value = defaults::DEFAULT_ROOM,
          value_parser = parse_room_name)]
    pub default_room: String,

    /// Most rooms one connection may be in at once.
    #[arg(long, env = "TIDINGS_MAX_ROOMS_PER_CONNECTION", default_value_t = defaults::MAX_ROOMS_PER_CONNECTION,
          value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_rooms_per_connection: u32,

    /// Most rooms that may exist (a room exists while it has members or holds messages);
    /// joining one more that would be new is refused, so room names cannot grow memory
    /// without end.
    #[arg(long, env = "TIDINGS_MAX_ROOMS", default_value_t = defaults::MAX_ROOMS,
          value_parser = clap::value_parser!(u32).range(1..=10_000_000))]
    pub max_rooms: u32,

    /// Messages per replay batch read from the database.
    #[arg(long, env = "TIDINGS_REPLAY_BATCH", default_value_t = defaults::REPLAY_BATCH,
          value_parser = clap::value_parser!(u32).range(1..=65_536))]
    pub replay_batch: u32,

    /// Signed tokens (JWT in the handshake's `auth.token`): `off` (anyone, as the tutorial),
    /// `optional` (a valid token makes a verified user, none an anonymous one) or `required`.
    #[arg(long, env = "TIDINGS_AUTH", value_enum, default_value_t = AuthMode::Off)]
    pub auth: AuthMode,

    #[command(flatten)]
    #[allow(missing_docs)]
    pub jwt: JwtArgs,

    /// Public key verifying tokens: a PEM file (RSA, EC P-256/P-384 or Ed25519), instead of
    /// `--jwt-secret-file`.
    #[arg(
        long,
        env = "TIDINGS_JWT_PUBLIC_KEY",
        value_name = "PATH",
        conflicts_with = "jwt_secret_file"
    )]
    pub jwt_public_key: Option<PathBuf>,

    /// Seconds of clock skew allowed on a token's `exp`, `nbf` and `iat`.
    #[arg(long, env = "TIDINGS_JWT_LEEWAY", default_value_t = defaults::JWT_LEEWAY,
          value_parser = clap::value_parser!(u64).range(0..=3600))]
    pub jwt_leeway: u64,

    /// Seconds a connection whose token expired may still receive, and send `refresh token`,
    /// before it is disconnected.
    #[arg(long, env = "TIDINGS_TOKEN_GRACE", default_value_t = defaults::TOKEN_GRACE,
          value_parser = clap::value_parser!(u64).range(1..=3600))]
    pub token_grace: u64,

    /// A user id (a token's `sub`) that acts as the owner of every room; repeat the flag for
    /// more (env: comma-separated). Needs `--auth optional` or `required`.
    #[arg(
        long = "server-admin",
        env = "TIDINGS_SERVER_ADMINS",
        value_name = "SUB",
        value_delimiter = ','
    )]
    pub server_admins: Vec<String>,

    /// Web pages that may open a socket, by origin (`scheme://host[:port]`, comma-separated;
    /// `*` for any, the default). Requests without an `Origin` header (non-browser clients)
    /// and the server's own page are always allowed; others get 403.
    #[arg(
        long = "allowed-origins",
        env = "TIDINGS_ALLOWED_ORIGINS",
        value_name = "ORIGINS",
        value_delimiter = ','
    )]
    pub allowed_origins: Vec<String>,

    /// Serve `/metrics` (and `/healthz`) on this address (`HOST:PORT`, meant to be private)
    /// instead of the public port, which keeps `/healthz` for load balancers.
    #[arg(long, env = "TIDINGS_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<String>,

    /// Serve `https://` and `wss://` with this certificate chain (PEM; with `--tls-key`).
    /// Re-read on SIGHUP.
    #[arg(
        long,
        env = "TIDINGS_TLS_CERT",
        value_name = "PATH",
        requires = "tls_key"
    )]
    pub tls_cert: Option<PathBuf>,

    /// The private key of `--tls-cert` (PEM: PKCS#8, RSA or EC). Re-read on SIGHUP.
    #[arg(
        long,
        env = "TIDINGS_TLS_KEY",
        value_name = "PATH",
        requires = "tls_cert"
    )]
    pub tls_key: Option<PathBuf>,

    /// Most connections from one client address (0: no limit). Behind a proxy, set
    /// `--trusted-proxies` so that the address is the client's, not the proxy's.
    #[arg(long, env = "TIDINGS_MAX_CONNECTIONS_PER_IP", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    pub max_connections_per_ip: u32,

    /// Proxies whose `X-Forwarded-For` names the client (addresses or networks,
    /// comma-separated: `127.0.0.1,10.0.0.0/8`). Others' are ignored.
    #[arg(
        long,
        env = "TIDINGS_TRUSTED_PROXIES",
        value_name = "CIDRS",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<String>,
}

impl Default for Config {
    /// Every default, as `tidings` with no flags and no environment would run.
    fn default() -> Self {
        Self {
            host: defaults::HOST.into(),
            port: defaults::PORT,
            db: defaults::DB.into(),
            db_cache_mb: defaults::DB_CACHE_MB,
            max_message_bytes: defaults::MAX_MESSAGE_BYTES,
            max_client_offset_bytes: defaults::MAX_CLIENT_OFFSET_BYTES,
            live_buffer: defaults::LIVE_BUFFER,
            tail_cache_messages: defaults::TAIL_CACHE_MESSAGES,
            tail_cache_bytes: defaults::TAIL_CACHE_BYTES,
            socket_buffer: defaults::SOCKET_BUFFER,
            replay_batch: defaults::REPLAY_BATCH,
            rate_limit: defaults::RATE_LIMIT,
            rate_burst: defaults::RATE_BURST,
            max_connections: defaults::MAX_CONNECTIONS,
            ping_interval_ms: defaults::PING_INTERVAL_MS,
            ping_timeout_ms: defaults::PING_TIMEOUT_MS,
            shutdown_timeout: defaults::SHUTDOWN_TIMEOUT,
            retain_messages: None,
            retain_days: None,
            recovery_window: defaults::RECOVERY_WINDOW,
            cluster: Vec::new(),
            stream: defaults::STREAM.into(),
            replicas: defaults::REPLICAS,
            node_name: None,
            default_room: defaults::DEFAULT_ROOM.into(),
            max_rooms_per_connection: defaults::MAX_ROOMS_PER_CONNECTION,
            max_rooms: defaults::MAX_ROOMS,
            auth: AuthMode::Off,
            jwt: JwtArgs::default(),
            jwt_public_key: None,
            jwt_leeway: defaults::JWT_LEEWAY,
            token_grace: defaults::TOKEN_GRACE,
            server_admins: Vec::new(),
            allowed_origins: Vec::new(),
            admin_listen: None,
            tls_cert: None,
            tls_key: None,
            max_connections_per_ip: 0,
            trusted_proxies: Vec::new(),
        }
    }
}

/// `--jwt-algorithm`: an algorithm name as tokens spell it.
fn parse_jwt_algorithm(name: &str) -> Result<String, String> {
    parse_algorithm(name)
        .map(|_| name.to_string())
        .map_err(|e| e.to_string())
}

/// `--default-room`: a valid room name.
fn parse_room_name(name: &str) -> Result<String, String> {
    crate::protocol::room::RoomName::parse(name)
        .map(|room| room.to_string())
        .map_err(|e| e.to_string())
}

/// The accepted `--rate-limit` values besides 0 (off): a slower rate would make a client wait
/// longer than a `Duration` holds for its next token, a faster one is no limit at all.
pub const RATE_LIMIT_RANGE: std::ops::RangeInclusive<f64> = 0.001..=1_000_000.0;

/// `--rate-limit`: 0 (off), or a rate in [`RATE_LIMIT_RANGE`]; never NaN, infinite or negative.
fn parse_rate_limit(text: &str) -> Result<f64, String> {
    let rate: f64 = text
        .trim()
        .parse()
        .map_err(|_| format!("{text:?} is not a number"))?;
    check_rate_limit(rate)
}

fn check_rate_limit(rate: f64) -> Result<f64, String> {
    if rate == 0.0 || RATE_LIMIT_RANGE.contains(&rate) {
        Ok(rate)
    } else {
        Err(format!(
            "{rate:?} is out of range: 0 (no limit) or {} to {} messages per second",
            RATE_LIMIT_RANGE.start(),
            RATE_LIMIT_RANGE.end()
        ))
    }
}

/// A JetStream stream name: letters, digits, `-` and `_` (it is also a subject token).
fn parse_stream_name(name: &str) -> Result<String, String> {
    if !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        Ok(name.to_string())
    } else {
        Err(format!(
            "{name:?}: a stream name has 1 to 64 letters, digits, '-' or '_'"
        ))
    }
}

impl Config {
    /// Every default, but on the database `db` and on 127.0.0.1, any free port (tests and
    /// embedders).
    pub fn with_db(db: impl Into<PathBuf>) -> Self {
        Self {
            host: "127.0.0.1".into(),
            port: 0,
            db: db.into(),
            ..Self::default()
        }
    }

    /// The database page cache's size in bytes.
    pub fn db_cache_bytes(&self) -> usize {
        cache_bytes(self.db_cache_mb)
    }

    /// Checks what the flags' parsers cannot see when a configuration is built in code:
    /// every value within its flag's range.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_rate_limit(self.rate_limit).map_err(|why| ConfigError {
            flag: "--rate-limit",
            why,
        })?;
        parse_room_name(&self.default_room).map_err(|why| ConfigError {
            flag: "--default-room",
            why,
        })?;
        if !self.server_admins.is_empty() && self.auth == AuthMode::Off {
            return Err(ConfigError {
                flag: "--server-admin",
                why: "server admins need identities: set --auth optional or --auth required".into(),
            });
        }
        if let Some(bad) = self
            .server_admins
            .iter()
            .find(|sub| sub.is_empty() || sub.len() > crate::protocol::moderation::MAX_USER_BYTES)
        {
            return Err(ConfigError {
                flag: "--server-admin",
                why: format!(
                    "{bad:?} is not a user id: 1 to {} bytes",
                    crate::protocol::moderation::MAX_USER_BYTES
                ),
            });
        }
        self.origins()?;
        self.trusted_proxies()?;
        for (flag, value, range) in [
            ("--jwt-leeway", self.jwt_leeway, 0..=3600),
            ("--token-grace", self.token_grace, 1..=3600),
        ] {
            if !range.contains(&value) {
                return Err(ConfigError {
                    flag,
                    why: format!("{value} is out of range {range:?} (seconds)"),
                });
            }
        }
        Ok(())
    }

    /// The proxies `--trusted-proxies` names.
    pub fn trusted_proxies(&self) -> Result<crate::client_addr::TrustedProxies, ConfigError> {
        crate::client_addr::TrustedProxies::parse(&self.trusted_proxies).map_err(|e| ConfigError {
            flag: "--trusted-proxies",
            why: e.to_string(),
        })
    }

    /// The origins `--allowed-origins` lets open a socket.
    pub fn origins(&self) -> Result<crate::origins::AllowedOrigins, ConfigError> {
        crate::origins::AllowedOrigins::parse(&self.allowed_origins).map_err(|e| ConfigError {
            flag: "--allowed-origins",
            why: e.to_string(),
        })
    }

    /// The token verifier `--auth` and the key flags configure: `None` with `--auth off`.
    /// Blocking: reads the key file. A key without `--auth`, or `--auth` without a key, is
    /// refused: either is a configuration mistake that would leave the server open, or shut.
    pub fn verifier(&self) -> Result<Option<Verifier>, ConfigError> {
        let key_flag = match (&self.jwt.jwt_secret_file, &self.jwt_public_key) {
            (Some(_), Some(_)) => {
                return Err(ConfigError {
                    flag: "--jwt-public-key",
                    why: "give either --jwt-secret-file or --jwt-public-key, not both".into(),
                });
            }
            (Some(_), None) => Some("--jwt-secret-file"),
            (None, Some(_)) => Some("--jwt-public-key"),
            (None, None) => None,
        };
        match (self.auth, key_flag) {
            (AuthMode::Off, None) => return Ok(None),
            (AuthMode::Off, Some(flag)) => {
                return Err(ConfigError {
                    flag,
                    why: "a key is set but --auth is off: set --auth optional or --auth required"
                        .into(),
                });
            }
            (_, None) => {
                return Err(ConfigError {
                    flag: "--auth",
                    why: "tokens need a key: set --jwt-secret-file or --jwt-public-key".into(),
                });
            }
            (_, Some(_)) => {}
        }
        let algorithm = self.jwt.algorithm()?;
        let rules = self.jwt.rules(self.jwt_leeway);
        let verifier = if let Some(secret) = self.jwt.secret()? {
            Verifier::from_secret(&secret, algorithm, rules).map_err(|e| ConfigError {
                flag: "--jwt-algorithm",
                why: e.to_string(),
            })?
        } else {
            let flag = "--jwt-public-key";
            let path = self.jwt_public_key.as_ref().ok_or(ConfigError {
                flag,
                why: "missing".into(),
            })?;
            let pem = std::fs::read(path).map_err(|e| ConfigError {
                flag,
                why: format!("cannot read {}: {e}", path.display()),
            })?;
            Verifier::from_public_pem(&pem, algorithm, rules).map_err(|e| ConfigError {
                flag,
                why: format!("{}: {e}", path.display()),
            })?
        };
        Ok(Some(verifier))
    }

    /// The per-connection send limit this configuration sets ([`Config::validate`] checks
    /// its range).
    pub fn rate_limit(&self) -> RateLimit {
        RateLimit {
            per_second: self.rate_limit,
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

    /// The tail cache's bounds.
    pub fn tail_limits(&self) -> TailLimits {
        TailLimits {
            max_messages: self.tail_cache_messages as usize,
            max_bytes: usize::try_from(self.tail_cache_bytes).unwrap_or(usize::MAX),
        }
    }

    /// The replay batch bounds.
    pub fn batch_limits(&self) -> BatchLimits {
        BatchLimits {
            max_count: self.replay_batch as usize,
            max_bytes: BatchLimits::MAX_BYTES,
        }
    }

    /// The cluster this node joins, if `--cluster` is set.
    pub fn cluster(&self) -> Option<ClusterConfig> {
        let urls: Vec<String> = self
            .cluster
            .iter()
            .map(|url| url.trim().to_string())
            .filter(|url| !url.is_empty())
            .collect();
        (!urls.is_empty()).then(|| ClusterConfig {
            urls,
            stream: self.stream.clone(),
            replicas: usize::from(self.replicas),
            retention: self.retention(),
            node: self
                .node_name
                .clone()
                .unwrap_or_else(crate::cluster::default_node_name),
            default_room: self.default_room.clone(),
        })
    }

    /// What retention keeps.
    pub fn retention(&self) -> Retention {
        Retention {
            messages: self.retain_messages,
            days: self.retain_days,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::FromArgMatches;

    #[test]
    fn the_defaults_are_what_an_empty_command_line_parses_to() {
        // The environment must not count here: the same flags with their variables unset.
        let command = Config::augment_args(clap::Command::new("tidings")).mut_args(|a| a.env(None));
        let matches = command
            .try_get_matches_from(["tidings"])
            .expect("no arguments parse");
        let parsed = Config::from_arg_matches(&matches).expect("a configuration");
        assert_eq!(format!("{parsed:?}"), format!("{:?}", Config::default()));
    }

    fn parse(args: &[&str]) -> Result<Config, clap::Error> {
        let command = Config::augment_args(clap::Command::new("tidings")).mut_args(|a| a.env(None));
        let matches =
            command.try_get_matches_from(std::iter::once("tidings").chain(args.iter().copied()))?;
        Config::from_arg_matches(&matches)
    }

    #[test]
    fn the_database_cache_is_set_in_mib_and_bad_values_are_refused() {
        assert_eq!(
            Config::default().db_cache_bytes(),
            defaults::DB_CACHE_MB as usize * MIB
        );
        let config = parse(&["--db-cache-mb", "8"]).expect("8 MiB");
        assert_eq!(config.db_cache_bytes(), 8 << 20);
        assert_eq!(
            parse(&["--db-cache-mb", "0"])
                .expect("off")
                .db_cache_bytes(),
            0
        );
        for bad in ["-1", "lots", "1.5", "262145", ""] {
            let error = parse(&[&format!("--db-cache-mb={bad}")])
                .err()
                .unwrap_or_else(|| panic!("{bad:?} must be refused"))
                .to_string();
            assert!(error.contains("--db-cache-mb"), "{bad:?}: {error}");
        }
        let offline = DbArgs::new("x.redb");
        assert_eq!(offline.cache_bytes(), defaults::DB_CACHE_MB as usize * MIB);
    }

    #[test]
    fn the_rate_limit_is_off_or_within_its_range() {
        for (flag, rate) in [("0", 0.0), ("0.001", 0.001), ("20", 20.0), ("1e6", 1e6)] {
            let config = parse(&["--rate-limit", flag]).expect(flag);
            assert_eq!(config.rate_limit, rate);
            config.validate().expect(flag);
        }
        for bad in [
            "1e-20", "0.0009", "-1", "NaN", "inf", "-inf", "1e7", "lots", "",
        ] {
            let error = parse(&[&format!("--rate-limit={bad}")])
                .err()
                .unwrap_or_else(|| panic!("{bad:?} must be refused"))
                .to_string();
            assert!(error.contains("--rate-limit"), "{bad:?}: {error}");
        }
        // Built in code, the same values are refused by `validate`, naming the flag.
        for bad in [1e-20, -1.0, f64::NAN, f64::INFINITY] {
            let config = Config {
                rate_limit: bad,
                ..Config::default()
            };
            let error = config.validate().err().map(|e| e.to_string());
            assert!(
                error.as_deref().is_some_and(|e| e.contains("--rate-limit")),
                "{bad}: {error:?}"
            );
        }
    }
}
