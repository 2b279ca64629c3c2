//! Retention: deletes, in the background, the messages `--retain-messages` and `--retain-days`
//! no longer keep, in small batches through the writer (so appends interleave and ingest never
//! waits long behind a prune).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use super::writer::{PRUNE_BATCH, WriterHandle};

/// What retention keeps; `None` fields keep everything.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Retention {
    /// Keep only this many of the newest messages.
    pub messages: Option<u64>,
    /// Keep only messages received in the last this many days.
    pub days: Option<u64>,
}

/// How often retention looks for messages to delete.
const PRUNE_INTERVAL: Duration = Duration::from_secs(10);

/// Applies `retention` until `stop`: batches while there is more to delete, then a pause.
pub async fn prune_forever(writer: WriterHandle, retention: Retention, stop: CancellationToken) {
    loop {
        loop {
            match writer.prune(retention).await {
                Ok(n) if n == PRUNE_BATCH => tokio::task::yield_now().await,
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
