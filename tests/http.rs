//! HTTP: the page and the vendored client bundle are served from the binary.

mod common;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A plain HTTP/1.1 GET; returns (status line, headers lowercased, body).
pub async fn get(url: &str, path: &str) -> (String, String, Vec<u8>) {
    request(url, "GET", path, "").await
}

/// A plain HTTP/1.1 request with a text body.
pub async fn request(url: &str, method: &str, path: &str, body: &str) -> (String, String, Vec<u8>) {
    let host = url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(host).await.expect("connect");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\
         Content-Type: text/plain;charset=UTF-8\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut raw = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut raw))
        .await
        .expect("response in time")
        .expect("read");
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("header end");
    let head = String::from_utf8_lossy(&raw[..split]).to_string();
    let body = raw[split + 4..].to_vec();
    let (status, headers) = head.split_once("\r\n").unwrap_or((&head, ""));
    (status.to_string(), headers.to_lowercase(), body)
}

#[tokio::test]
async fn serves_the_page_and_the_client_bundle() -> TestResult {
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;

    let (status, headers, body) = get(&server.url, "/").await;
    assert!(status.contains("200"), "{status}");
    assert!(headers.contains("content-type: text/html"), "{headers}");
    assert!(headers.contains("content-security-policy: default-src 'self'"));
    let page = String::from_utf8(body)?;
    for needle in [
        "id=\"form\"",
        "id=\"input\"",
        "id=\"messages\"",
        "/socket.io/socket.io.js",
    ] {
        assert!(page.contains(needle), "page lacks {needle}");
    }

    for (path, marker) in [
        ("/socket.io/socket.io.js", "Socket.IO v4.8"),
        ("/socket.io/socket.io.min.js", "Socket.IO v4.8"),
        ("/socket.io/socket.io.min.js.map", "\"mappings\""),
        ("/socket.io/socket.io.js.map", "\"mappings\""),
        ("/app.js", "serverOffset"),
    ] {
        let (status, headers, body) = get(&server.url, path).await;
        assert!(status.contains("200"), "{path}: {status}");
        assert!(
            headers.contains("x-content-type-options: nosniff"),
            "{path}"
        );
        let text = String::from_utf8_lossy(&body);
        assert!(text.contains(marker), "{path} lacks {marker:?}");
    }

    let (status, _, _) = get(&server.url, "/nope").await;
    assert!(status.contains("404"), "{status}");
    // Other paths under /socket.io/ belong to the engine.io endpoint.
    let (status, _, _) = get(&server.url, "/socket.io/?EIO=4&transport=polling").await;
    assert!(
        status.contains("200"),
        "engine.io handshake over polling: {status}"
    );
    server.stop().await;
    Ok(())
}

#[tokio::test]
async fn long_polling_sessions_span_requests() -> TestResult {
    // Regression: mounting Socket.IO per route gave each route its own engine.io session
    // table, so the POST after a polling handshake answered "Session ID unknown".
    let dir = tempfile::tempdir()?;
    let server = TestServer::start(&dir).await;
    let (status, _, body) = get(&server.url, "/socket.io/?EIO=4&transport=polling").await;
    assert!(status.contains("200"), "{status}");
    let open: serde_json::Value = serde_json::from_slice(&body[1..])?;
    let sid = open["sid"].as_str().unwrap_or_default().to_string();
    let path = format!("/socket.io/?EIO=4&transport=polling&sid={sid}");
    let (status, _, body) = request(&server.url, "POST", &path, "40{\"serverOffset\":0}").await;
    assert!(
        status.contains("200"),
        "{status}: {}",
        String::from_utf8_lossy(&body)
    );
    // A polling response carries the packets queued by then, separated by \x1e: the
    // namespace CONNECT comes in one of them (after the recovery session is saved, a ping may
    // come first), and every poll must find the session.
    let mut seen = Vec::new();
    for _ in 0..10 {
        let (status, _, body) = get(&server.url, &path).await;
        assert!(status.contains("200"), "{status}");
        let text = String::from_utf8_lossy(&body).to_string();
        let connected = text.split('\u{1e}').any(|p| p.starts_with("40{\"sid\""));
        seen.push(text);
        if connected {
            break;
        }
    }
    assert!(
        seen.last()
            .is_some_and(|t| t.split('\u{1e}').any(|p| p.starts_with("40{\"sid\""))),
        "no CONNECT in {seen:?}"
    );
    server.stop().await;
    Ok(())
}
