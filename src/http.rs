//! HTTP: the router, the page and the operational endpoints.
//!
//! Owns the page (`/`, `/app.js`, `/style.css`, compiled into the binary), the vendored
//! socket.io-client bundle served where the official server serves it
//! (`/socket.io/socket.io.js` and friends), `/healthz` and `/metrics`. The bundle's paths sit
//! under the engine.io prefix, so they are routed here before the Socket.IO service sees the
//! request; everything else under `/socket.io/` goes to socketioxide, once its `Origin` passes
//! `--allowed-origins` ([`crate::origins`]; 403 otherwise).

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderValue, Request, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use std::path::PathBuf;
use std::sync::Arc;

use crate::client_addr::{self, TrustedProxies};
use crate::delivery::Hub;
use crate::every::LogBudget;
use crate::ingest::SharedLog;
use crate::metrics;
use crate::origins::AllowedOrigins;
use crate::socket::admission::ConnectionCount;
use crate::socket::presence::SharedRoster;
use crate::socket::rooms::count_rooms;
use crate::storage::StoreReader;
use socketioxide::service::SocketIoService;
use tower::ServiceExt;

/// One embedded file.
struct Asset {
    path: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const ASSETS: &[Asset] = &[
    Asset {
        path: "/",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../static/index.html"),
    },
    Asset {
        path: "/app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/app.js"),
    },
    Asset {
        path: "/style.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../static/style.css"),
    },
    Asset {
        path: "/socket.io/socket.io.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/socket.io.js"),
    },
    Asset {
        path: "/socket.io/socket.io.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../static/socket.io.min.js"),
    },
    Asset {
        path: "/socket.io/socket.io.js.map",
        content_type: "application/json",
        body: include_bytes!("../static/socket.io.js.map"),
    },
    Asset {
        path: "/socket.io/socket.io.min.js.map",
        content_type: "application/json",
        body: include_bytes!("../static/socket.io.min.js.map"),
    },
];

/// The page may run only its own scripts and styles; message text is never HTML, and this
/// makes sure a slip could not run injected script either.
const CONTENT_SECURITY_POLICY: &str = "default-src 'self'; script-src 'self'; \
     style-src 'self'; connect-src 'self'; img-src 'self' data:; \
     object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

fn serve(asset: &'static Asset) -> Response {
    let mut response = (StatusCode::OK, asset.body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(asset.content_type),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    // The assets change with the binary: let browsers revalidate rather than keep stale code.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    if asset.content_type.starts_with("text/html") {
        headers.insert(
            header::CONTENT_SECURITY_POLICY,
            HeaderValue::from_static(CONTENT_SECURITY_POLICY),
        );
    }
    response
}

/// What the Socket.IO service passes on when a request is not for engine.io.
pub fn not_found() -> Router {
    Router::new().fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
}

/// The whole public HTTP surface: static assets, `/healthz`, `/metrics` unless an admin port
/// serves it (`metrics` false), then Socket.IO, which hands anything that is not an engine.io
/// request to [`not_found`].
///
/// The Socket.IO service is mounted once, as the fallback service, rather than with
/// `Router::layer`: a layer is instantiated per route, and each instance would have its own
/// engine.io session table (long-polling requests would then land on an engine that never
/// saw their handshake).
pub fn router(
    socket_io: SocketIoService<Router>,
    ops: Ops,
    origins: AllowedOrigins,
    proxies: TrustedProxies,
    metrics: bool,
) -> Router {
    let origins = Arc::new(origins);
    let proxies = Arc::new(proxies);
    let refusals = Arc::new(LogBudget::new(ORIGIN_REFUSALS_LOGGED_PER_MINUTE));
    let socket_io = socket_io.map_request(detach_from_read_buffer::<axum::body::Body>);
    let guarded = tower::service_fn(move |mut request: Request<axum::body::Body>| {
        let (socket_io, origins, refusals) = (socket_io.clone(), origins.clone(), refusals.clone());
        // Who the client is, for admission (the per-address limit, the log): engine.io keeps
        // only the URI of a session's first request, so the address rides in its query. The
        // session's later requests (each long-polling one) carry its `sid` and need none.
        let handshake = !request
            .uri()
            .query()
            .is_some_and(|query| query.split('&').any(|pair| pair.starts_with("sid=")));
        let peer = request
            .extensions()
            .get::<axum::extract::ConnectInfo<client_addr::Peer>>()
            .filter(|_| handshake)
            .map(|info| info.0.0.ip());
        if let Some(peer) = peer {
            let forwarded: Vec<&str> = request
                .headers()
                .get_all("x-forwarded-for")
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            let forwarded = (!forwarded.is_empty()).then(|| forwarded.join(","));
            let client = proxies.client(peer, forwarded.as_deref());
            if let Some(uri) = client_addr::tag(request.uri(), client) {
                *request.uri_mut() = uri;
            }
        }
        async move {
            let headers = request.headers();
            let text = |name| headers.get(name).and_then(|v| v.to_str().ok());
            let origin = text(header::ORIGIN).map(str::to_owned);
            let allowed = origins.allows(origin.as_deref(), text(header::HOST));
            if !allowed {
                if let Some(suppressed) = refusals.take() {
                    tracing::warn!(
                        origin,
                        not_logged = suppressed,
                        "refused a socket from a page of another origin (--allowed-origins)"
                    );
                }
                metrics::counter_with(metrics::REJECTED, "reason", "origin").increment(1);
                return Ok::<_, std::convert::Infallible>(
                    (StatusCode::FORBIDDEN, "origin not allowed\n").into_response(),
                );
            }
            let response = socket_io.oneshot(request).await?;
            Ok(response.map(axum::body::Body::new))
        }
    });
    let router = ASSETS
        .iter()
        .fold(Router::new(), |router, asset| {
            router.route(asset.path, get(move || async move { serve(asset) }))
        })
        .route("/healthz", get(healthz));
    let router = if metrics {
        router.route("/metrics", get(render_metrics))
    } else {
        router
    };
    router.with_state(ops).fallback_service(guarded)
}

/// The admin port's endpoints (`--admin-listen`, meant for a private address): `/metrics`,
/// `/healthz` and `/backup`; nothing of the chat.
pub fn admin_router(ops: Ops) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(render_metrics))
        .route("/backup", get(backup))
        .with_state(ops)
        .fallback(|| async { (StatusCode::NOT_FOUND, "not found\n") })
}

/// `GET /backup` (admin port only): a consistent copy of the database, a redb file a server
/// opens, built from one read transaction while acks go on. Written first to a temporary file
/// beside the database (one backup at a time), which is unlinked once open and streamed.
async fn backup(State(ops): State<Ops>) -> Response {
    let _one_at_a_time = ops.backups.lock().await;
    let name = ops
        .db
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "tidings.redb".into());
    let temp = ops.db.with_file_name(format!(
        ".{name}.backup-{}.tmp",
        crate::every::since_epoch().as_nanos()
    ));
    let (store, path) = (ops.store.clone(), temp.clone());
    let copied = tokio::task::spawn_blocking(move || store.copy_to(&path)).await;
    let failed = |why: String| {
        tracing::error!("backup failed: {why}");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("backup failed: {why}\n"),
        )
            .into_response()
    };
    let messages = match copied {
        Ok(Ok(messages)) => messages,
        Ok(Err(e)) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return failed(e.to_string());
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            return failed(e.to_string());
        }
    };
    let opened = tokio::fs::File::open(&temp).await;
    // Unlinked now: the open file streams on, and nothing is left behind whatever happens.
    let _ = tokio::fs::remove_file(&temp).await;
    let file = match opened {
        Ok(file) => file,
        Err(e) => return failed(format!("cannot read the copy: {e}")),
    };
    let length = match file.metadata().await {
        Ok(meta) => meta.len(),
        Err(e) => return failed(format!("cannot read the copy: {e}")),
    };
    tracing::info!(messages, bytes = length, "backup taken");
    let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(file));
    let mut response = (StatusCode::OK, body).into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    headers.insert("x-tidings-messages", HeaderValue::from(messages));
    response
}

/// Log lines a minute about refused origins.
const ORIGIN_REFUSALS_LOGGED_PER_MINUTE: u32 = 10;

/// Copies the request's URI into an allocation of its own.
///
/// hyper parses it as a slice of the connection's 8 KiB read buffer, and engine.io keeps it
/// for the life of the socket (`Socket::req_parts`): without the copy every idle websocket
/// would pin its whole read buffer for a few bytes of path and query. The headers and
/// extensions are not kept (`keep_request_headers(false)` in `server.rs`).
pub fn detach_from_read_buffer<B>(request: Request<B>) -> Request<B> {
    let (mut parts, body) = request.into_parts();
    if let Ok(uri) = Uri::try_from(parts.uri.to_string()) {
        parts.uri = uri;
    }
    Request::from_parts(parts, body)
}

/// What the operational endpoints look at.
#[derive(Clone)]
pub struct Ops {
    /// Whether the log takes writes.
    pub log: SharedLog,
    /// The newest id.
    pub hub: Arc<Hub>,
    /// The database file, for its size.
    pub db: PathBuf,
    /// Connected clients.
    pub connections: ConnectionCount,
    /// The database, for its page cache's figures.
    pub store: StoreReader,
    /// Who is in which room, for the count of rooms.
    pub roster: SharedRoster,
    /// Held while a backup copies the database: one at a time.
    pub backups: Arc<tokio::sync::Mutex<()>>,
}

/// `GET /healthz`: 200 while the database takes writes, 503 otherwise; JSON either way.
async fn healthz(State(ops): State<Ops>) -> Response {
    let problem = ops.log.problem();
    let writable = problem.is_none();
    let body = serde_json::json!({
        "status": if writable { "ok" } else { "unavailable" },
        "database": problem.as_deref().unwrap_or("writable"),
        "lastId": ops.hub.last_published(),
        "connections": ops.connections.current(),
    });
    let status = if writable {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, axum::Json(body)).into_response()
}

/// `GET /metrics`: Prometheus text format.
async fn render_metrics(State(ops): State<Ops>) -> Response {
    let Some(handle) = metrics::handle() else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "metrics are disabled (another recorder is installed)\n",
        )
            .into_response();
    };
    if let Ok(meta) = tokio::fs::metadata(&ops.db).await {
        metrics::gauge(metrics::DATABASE_BYTES).set(meta.len() as f64);
    }
    metrics::gauge(metrics::LAST_ID).set(ops.hub.last_published() as f64);
    metrics::gauge(metrics::ROOMS).set(count_rooms(&ops.hub, &ops.roster) as f64);
    // Blocking (a lock that closing the database takes), though brief.
    let store = ops.store.clone();
    if let Ok(Some(cache)) = tokio::task::spawn_blocking(move || store.cache_stats()).await {
        metrics::gauge(metrics::DATABASE_CACHE_USED_BYTES).set(cache.used_bytes as f64);
        metrics::counter(metrics::DATABASE_CACHE_HITS).absolute(cache.read_hits);
        metrics::counter(metrics::DATABASE_CACHE_MISSES).absolute(cache.read_misses);
        metrics::counter(metrics::DATABASE_CACHE_EVICTIONS).absolute(cache.evictions);
    }
    if let Some(rss) = tokio::fs::read_to_string("/proc/self/status")
        .await
        .ok()
        .as_deref()
        .and_then(resident_bytes)
    {
        metrics::gauge(metrics::RESIDENT_MEMORY).set(rss as f64);
    }
    let mut response = handle.render().into_response();
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
    );
    response
}

/// `VmRSS` of a `/proc/PID/status` text, in bytes.
fn resident_bytes(status: &str) -> Option<u64> {
    let line = status.lines().find_map(|l| l.strip_prefix("VmRSS:"))?;
    let kib: u64 = line.trim().strip_suffix("kB")?.trim().parse().ok()?;
    kib.checked_mul(1024)
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Bytes;

    #[test]
    fn resident_memory_from_proc_status() {
        let status = "Name:\ttidings\nVmHWM:\t  30000 kB\nVmRSS:\t   22528 kB\nThreads:\t5\n";
        assert_eq!(resident_bytes(status), Some(22528 * 1024));
        assert_eq!(resident_bytes("Name:\tx\n"), None);
        assert_eq!(resident_bytes("VmRSS:\t12 MB\n"), None);
    }

    #[test]
    fn detached_request_shares_nothing_with_the_read_buffer() {
        let buffer = Bytes::from(b"GET /socket.io/?EIO=4 HTTP/1.1\r\n".to_vec());
        let range = buffer.as_ptr() as usize..buffer.as_ptr() as usize + buffer.len();
        let request = Request::builder()
            .uri(Uri::from_maybe_shared(buffer.slice(4..21)).expect("valid uri"))
            .body(())
            .expect("valid request");
        assert!(range.contains(&(request.uri().path().as_ptr() as usize)));

        let detached = detach_from_read_buffer(request);
        assert_eq!(detached.uri(), "/socket.io/?EIO=4");
        assert!(!range.contains(&(detached.uri().path().as_ptr() as usize)));
    }
}
