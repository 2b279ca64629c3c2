//! tidings' `/metrics`, read over a plain TCP connection: the database cache's misses during
//! a measured window, and figures the soak samples. Servers without the endpoint (the
//! reference) give `None` everywhere.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::report::{Better, Report};

/// `GET /metrics` (HTTP/1.0, so the body is never chunked); `None` when the server has no such
/// endpoint or does not answer within 5 s.
pub async fn scrape(base: &str) -> Option<String> {
    let host = base.strip_prefix("http://")?.trim_end_matches('/');
    let fetch = async {
        let mut stream = TcpStream::connect(host).await.ok()?;
        let request = format!("GET /metrics HTTP/1.0\r\nHost: {host}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await.ok()?;
        let text = String::from_utf8(response).ok()?;
        let (head, body) = text.split_once("\r\n\r\n")?;
        (head.split_whitespace().nth(1) == Some("200")).then(|| body.to_string())
    };
    tokio::time::timeout(Duration::from_secs(5), fetch)
        .await
        .ok()
        .flatten()
}

/// The value of an unlabelled metric in Prometheus text.
pub fn value(text: &str, name: &str) -> Option<f64> {
    text.lines().find_map(|line| {
        let rest = line.strip_prefix(name)?.strip_prefix(' ')?;
        rest.trim().parse().ok()
    })
}

const MISSES: &str = "tidings_database_cache_misses_total";

/// Database cache misses over a window: every miss is one page read from the file (the
/// operating system's page cache, or the disk). With several servers (the nodes of a
/// cluster), the sum of their misses.
pub struct CacheMisses {
    urls: Vec<String>,
    start: Option<f64>,
}

/// The sum of every server's misses; `None` if one of them does not say.
async fn misses(urls: &[String]) -> Option<f64> {
    let mut sum = 0.0;
    for url in urls {
        sum += scrape(url).await.and_then(|t| value(&t, MISSES))?;
    }
    Some(sum)
}

impl CacheMisses {
    pub async fn start(urls: &[String]) -> Self {
        Self {
            urls: urls.to_vec(),
            start: misses(urls).await,
        }
    }

    /// Adds `db_cache_misses_per_{per}{suffix}`: misses per unit of work since `start`.
    pub async fn report(self, report: &mut Report, units: f64, per: &str, suffix: &str) {
        let Some(start) = self.start else { return };
        let Some(end) = misses(&self.urls).await else {
            return;
        };
        report.metric(
            format!("db_cache_misses_per_{per}{suffix}"),
            format!("database cache misses (page reads from the file) per {per}{suffix}"),
            (end - start).max(0.0) / units.max(1.0),
            "",
            Better::Lower,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_values() {
        let text = "# TYPE tidings_connections gauge\ntidings_connections 12\n\
                    tidings_connections_total 40\ntidings_tail_cache_bytes 1.5e6\n";
        assert_eq!(value(text, "tidings_connections"), Some(12.0));
        assert_eq!(value(text, "tidings_connections_total"), Some(40.0));
        assert_eq!(value(text, "tidings_tail_cache_bytes"), Some(1.5e6));
        assert_eq!(value(text, "tidings_missing"), None);
    }
}
