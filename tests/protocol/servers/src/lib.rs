//! What the two echo servers share: the HTTP/1 accept loop (with upgrades, for websockets)
//! on a loopback port given on the command line, announced on stdout.

use std::{convert::Infallible, future::Future, net::SocketAddr};

use hyper::{
    Request, Response,
    body::{Body, Incoming},
    server::conn::http1,
    service::Service,
};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The address to listen on: the first argument, `127.0.0.1:0` (a free port) when none.
pub fn listen_addr() -> SocketAddr {
    std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:0".to_owned())
        .parse()
        .expect("usage: SERVER [ADDRESS:PORT]")
}

/// Serves `svc` on `addr` until the process is killed. Prints `listening on http://ADDR:PORT`
/// once the port is bound (tests/protocol/run.sh waits for that line).
pub async fn serve<S, B>(addr: SocketAddr, svc: S) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>, Error = Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Future + Send + 'static,
    B: Body + Send + 'static,
    B::Data: Send,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let listener = TcpListener::bind(addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let svc = svc.clone();
        tokio::spawn(async move {
            let conn = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), svc)
                .with_upgrades();
            if let Err(e) = conn.await {
                eprintln!("connection error: {e}");
            }
        });
    }
}
