//! A client's ordered feed: replay from the store, then live messages, with no gap and no
//! duplicate at the switch.
//!
//! The feed subscribes to the [`Hub`] first, which tells it the id `target` its live stream
//! starts after; it then replays `(offset, target]` from the store in bounded batches and
//! switches to the live receiver. If the live receiver ever lags (the client is slower than the
//! room), the feed re-subscribes and replays the missed range from the store, so a slow client
//! costs bounded memory and still sees every message exactly once, in order.
//!
//! Replay batches come from the hub's tail cache when it holds them (recent offsets), from
//! the store otherwise.
//!
//! It owns one cursor (the highest id it has yielded). It does no socket I/O: the socket layer
//! pulls batches and emits them at the client's pace (that pull is the backpressure).

use std::sync::Arc;

use tokio::sync::broadcast::{self, error::RecvError, error::TryRecvError};

use crate::hub::{Hub, LiveMessage};
use crate::store::{StoreError, StoreReader};

/// Bounds on one replay batch read from the store.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// At most this many messages per batch.
    pub max_count: usize,
    /// Stop adding messages once this many content bytes are in the batch.
    pub max_bytes: usize,
}

impl Default for BatchLimits {
    fn default() -> Self {
        Self {
            max_count: 256,
            max_bytes: 1 << 20,
        }
    }
}

/// Why a feed ended.
#[derive(Debug, thiserror::Error)]
pub enum FeedError {
    /// The hub is gone: the server is shutting down.
    #[error("the server is shutting down")]
    Closed,
    /// Reading the replay range failed.
    #[error("replay failed: {0}")]
    Store(#[from] StoreError),
}

/// See the module docs.
pub struct Feed {
    hub: Arc<Hub>,
    reader: StoreReader,
    limits: BatchLimits,
    /// Highest id yielded so far (or the client's starting offset).
    cursor: u64,
    /// Where the replay began (the effective offset).
    start: u64,
    /// The requested offset was beyond the newest id (another database), so the whole
    /// history is replayed instead.
    reset: bool,
    /// The replay met missing ids. Ids are contiguous (failed commits and duplicates
    /// consume none), so a hole means rows were deleted by retention (or were unreadable).
    gap: bool,
    /// Live messages with ids greater than the id it was subscribed at.
    live: broadcast::Receiver<Arc<LiveMessage>>,
    /// While replaying: the id at which `live` starts. `None` once live.
    replay_until: Option<u64>,
}

impl Feed {
    /// A feed of every message with id greater than `after`. An `after` beyond the newest id
    /// (an offset from another database) replays the whole history. With `latest`, the
    /// replay is cut to at most that many of the newest messages (a fresh page asks for the
    /// last screenful and pages back with `history`).
    pub fn new(
        hub: Arc<Hub>,
        reader: StoreReader,
        after: u64,
        latest: Option<u64>,
        limits: BatchLimits,
    ) -> Self {
        let (target, live) = hub.subscribe();
        let reset = after > target;
        let mut cursor = if reset { 0 } else { after };
        if let Some(latest) = latest {
            cursor = cursor.max(target.saturating_sub(latest));
        }
        Self {
            hub,
            reader,
            limits,
            cursor,
            start: cursor,
            reset,
            gap: false,
            live,
            replay_until: Some(target),
        }
    }

    /// The highest id yielded so far (the starting offset before the first batch).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Where the replay began: messages after this id are delivered.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Whether the requested offset was beyond the newest id and was treated as 0.
    pub fn reset(&self) -> bool {
        self.reset
    }

    /// Whether the replay found ids missing (deleted by retention): the client cannot get
    /// everything it asked for.
    pub fn had_gap(&self) -> bool {
        self.gap
    }

    /// Whether everything stored before the feed's live stream began has been yielded.
    pub fn caught_up(&self) -> bool {
        self.replay_until.is_none_or(|target| self.cursor >= target)
    }

    /// The next batch of messages, ascending and contiguous with the previous batch. Waits
    /// when there is nothing new. Cancel-safe: a dropped call loses nothing.
    pub async fn next_batch(&mut self) -> Result<Vec<Arc<LiveMessage>>, FeedError> {
        loop {
            if let Some(target) = self.replay_until {
                if self.cursor < target {
                    let (after, limits) = (self.cursor, self.limits);
                    if let Some(batch) =
                        self.hub
                            .replay_from_tail(after, target, limits.max_count, limits.max_bytes)
                        && let Some(last) = batch.last()
                    {
                        // The cache holds a contiguous run starting right after the cursor.
                        self.cursor = last.id.0;
                        return Ok(batch);
                    }
                    let reader = self.reader.clone();
                    let rows = tokio::task::spawn_blocking(move || {
                        reader.read_range(after, target, limits.max_count, limits.max_bytes)
                    })
                    .await
                    .map_err(|e| StoreError::Read(format!("replay task failed: {e}")))??;
                    let Some(last) = rows.last() else {
                        // Nothing stored in the range (it can only have been pruned).
                        self.gap = true;
                        self.cursor = target;
                        continue;
                    };
                    let mut expected = self.cursor + 1;
                    for row in &rows {
                        self.gap |= row.id.0 != expected;
                        expected = row.id.0 + 1;
                    }
                    self.cursor = last.id.0;
                    return Ok(rows
                        .into_iter()
                        .map(|row| Arc::new(LiveMessage::from_row(row)))
                        .collect());
                }
                // Replayed up to where the live receiver starts.
                self.replay_until = None;
            }
            match self.live.recv().await {
                Ok(first) => {
                    let mut batch = Vec::new();
                    self.take_if_new(first, &mut batch);
                    while batch.len() < self.limits.max_count {
                        match self.live.try_recv() {
                            Ok(message) => self.take_if_new(message, &mut batch),
                            Err(TryRecvError::Lagged(_)) => {
                                self.resubscribe();
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    if !batch.is_empty() {
                        return Ok(batch);
                    }
                }
                Err(RecvError::Lagged(_)) => self.resubscribe(),
                Err(RecvError::Closed) => return Err(FeedError::Closed),
            }
        }
    }

    fn take_if_new(&mut self, message: Arc<LiveMessage>, batch: &mut Vec<Arc<LiveMessage>>) {
        if message.id.0 > self.cursor {
            self.cursor = message.id.0;
            batch.push(message);
        }
    }

    /// The receiver fell too far behind: start a fresh one and fill the gap from the store.
    fn resubscribe(&mut self) {
        let (target, live) = self.hub.subscribe();
        self.live = live;
        self.replay_until = Some(target);
    }
}
