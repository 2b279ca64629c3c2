//! The hub: where the log hands newly stored messages to delivery, in id order.
//!
//! Owns `last_published` (the highest id published) and the broadcast channel that carries
//! every newly stored message to the one live broadcaster ([`super::live`]). Publishing and
//! subscribing happen under one lock, so a subscriber learns exactly which id its stream starts
//! after: everything up to that id is in the tail cache or the store, everything after it comes
//! through the channel, with no gap and no overlap.
//!
//! It also keeps the [`TailCache`] of the newest messages, filled as they are published, which
//! serves recent replays from memory, and every room's [`AccessMap`], which the writer sets
//! after each commit that changed it, before it publishes the commit's entries.
//!
//! It does not store anything (the log publishes only after a durable commit) and it does not
//! talk to sockets.

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use tokio::sync::{broadcast, watch};

use super::subscription::RoomKey;
use super::tail::{TailCache, TailLimits};
use crate::access::AccessMap;
use crate::message::SharedMessage;
use crate::metrics;

/// How long [`Hub::beyond_stream`] waits for a cluster node's probe to read the stream's end
/// twice (it does once a second).
const PROBE_WAIT: Duration = Duration::from_secs(3);

/// See the module docs.
pub struct Hub {
    /// The highest id published, and each room's; guarded together with sends so subscribe
    /// sees a consistent (position, id) pair, and a room's newest id is exact at any moment.
    last_published: Mutex<Published>,
    /// Newly stored messages, for the live broadcaster. Bounded (`--live-buffer`): if the
    /// broadcaster falls further behind, it gets `Lagged` and every live socket catches up
    /// from the tail cache or the store instead.
    live: broadcast::Sender<SharedMessage>,
    /// The newest messages, for replays. Its own lock: replays read it while the writer
    /// publishes, and everything up to `last_published` is in it (or evicted) first.
    tail: Mutex<TailCache>,
    /// `last_published`, for those who wait for an id to be published (a cluster node's log
    /// waits for its applier).
    published: watch::Sender<u64>,
    /// The highest id known to exist in the log, published here or not yet: in a cluster, a
    /// node learns of ids before it has applied them. A client offset above it may come from
    /// another database ([`Self::beyond_stream`]); one at or below it is waited for.
    log_end: AtomicU64,
    /// Whether `log_end` is exact: on a single node it is; a cluster node learns the stream's
    /// end from a probe once a second, so an offset a little above it may be an id another
    /// node gave in the meantime ([`Self::beyond_stream`] waits for the probe).
    log_end_exact: AtomicBool,
    /// How many times a cluster node's probe has read the stream's end.
    probes: watch::Sender<u64>,
    /// Every room's access state, as of the entries published.
    pub access: AccessMap,
}

/// What has been published: the highest id, and each room's.
#[derive(Debug, Default)]
struct Published {
    last: u64,
    rooms: HashMap<RoomKey, u64>,
    /// The names of the rooms in `rooms` but the default room, in order: the directory pages
    /// through them without a pass over every room.
    names: BTreeSet<String>,
}

impl Published {
    fn new(last: u64, rooms: impl IntoIterator<Item = (RoomKey, u64)>) -> Self {
        let rooms: HashMap<RoomKey, u64> = rooms.into_iter().collect();
        let names = rooms.keys().flatten().cloned().collect();
        Self { last, rooms, names }
    }
}

impl Hub {
    /// A hub whose history ends at `last_id`; `capacity` messages are buffered for live
    /// subscribers before a slow one has to fall back to the store. `newest` (ascending,
    /// ending at `last_id`) seeds the tail cache.
    pub fn new(
        last_id: u64,
        capacity: usize,
        tail: TailLimits,
        newest: impl IntoIterator<Item = SharedMessage>,
    ) -> Self {
        Self::with_rooms(last_id, [], capacity, tail, newest)
    }

    /// [`Hub::new`], knowing each room's newest id (from the store).
    pub fn with_rooms(
        last_id: u64,
        rooms: impl IntoIterator<Item = (RoomKey, u64)>,
        capacity: usize,
        tail: TailLimits,
        newest: impl IntoIterator<Item = SharedMessage>,
    ) -> Self {
        let (live, _) = broadcast::channel(capacity.max(1));
        let mut cache = TailCache::new(tail);
        for message in newest {
            cache.push(message);
        }
        record_size(&cache);
        Self {
            last_published: Mutex::new(Published::new(last_id, rooms)),
            live,
            tail: Mutex::new(cache),
            published: watch::Sender::new(last_id),
            log_end: AtomicU64::new(last_id),
            log_end_exact: AtomicBool::new(true),
            probes: watch::Sender::new(0),
            access: AccessMap::default(),
        }
    }

    fn tail(&self) -> MutexGuard<'_, TailCache> {
        // Every mutation of the cache leaves it consistent before it can panic.
        self.tail.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn lock(&self) -> MutexGuard<'_, Published> {
        // Plain values updated one at a time: never inconsistent.
        self.last_published
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Publishes durably stored messages. Callers (the writer) pass them in strictly
    /// increasing id order, each id greater than every id published before.
    pub fn publish(&self, messages: impl IntoIterator<Item = SharedMessage>) {
        let messages: Vec<_> = messages.into_iter().collect();
        {
            let mut tail = self.tail();
            for message in &messages {
                tail.push(message.clone());
            }
            record_size(&tail);
        }
        let mut last = self.lock();
        if let Some(newest) = messages.last() {
            self.log_end.fetch_max(newest.id.0, Ordering::AcqRel);
        }
        for message in messages {
            debug_assert!(message.id.0 > last.last, "publish out of order");
            last.last = message.id.0;
            match last.rooms.get_mut(&message.room) {
                Some(room) => *room = message.id.0,
                None => {
                    last.rooms.insert(message.room.clone(), message.id.0);
                    if let Some(name) = &message.room {
                        last.names.insert(name.clone());
                    }
                }
            }
            // An error only means nobody is subscribed right now.
            let _ = self.live.send(message);
        }
        let published = last.last;
        drop(last);
        self.published.send_replace(published);
    }

    /// Messages with ids in `(after, through]` from the tail cache (bounded like a replay
    /// batch), or `None` if it does not hold them: the caller reads the store.
    pub fn replay_from_tail(
        &self,
        after: u64,
        through: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Option<Vec<SharedMessage>> {
        let batch = self.tail().range(after, through, max_count, max_bytes);
        let counter = if batch.is_some() {
            metrics::TAIL_CACHE_HITS
        } else {
            metrics::TAIL_CACHE_MISSES
        };
        metrics::counter(counter).increment(1);
        batch
    }

    /// Retention deleted the messages `ids`: the cache must not serve them.
    pub fn forget(&self, ids: &[u64]) {
        self.tail().forget(ids);
    }

    /// Retention deleted the last messages of `room` (not the default room, which always
    /// exists): it no longer holds messages, so it exists only while it has members (it leaves
    /// the directory and stops counting towards `--max-rooms` once they go). Its newest id is
    /// forgotten with it: a join marks 0, and there is nothing older to read. Called from the
    /// writer, which also publishes, so no message of the room can be published in between.
    pub fn forget_room(&self, room: &RoomKey) {
        let Some(name) = room else { return };
        let mut last = self.lock();
        last.rooms.remove(room);
        last.names.remove(name);
    }

    /// The highest id published so far.
    pub fn last_published(&self) -> u64 {
        self.lock().last
    }

    /// The newest id published in `room` (0: none yet).
    pub fn room_last(&self, room: &RoomKey) -> u64 {
        self.lock().rooms.get(room).copied().unwrap_or(0)
    }

    /// How many rooms hold (or held) messages.
    pub fn room_count(&self) -> usize {
        self.lock().rooms.len()
    }

    /// The rooms that hold (or held) messages, the default room apart.
    pub fn room_names(&self) -> Vec<String> {
        self.lock().names.iter().cloned().collect()
    }

    /// Up to `limit` names of rooms that hold (or held) messages, the default room apart, in
    /// order after `after`.
    pub fn room_names_after(&self, after: &str, limit: usize) -> Vec<String> {
        use std::ops::Bound::{Excluded, Unbounded};
        self.lock()
            .names
            .range::<str, _>((Excluded(after), Unbounded))
            .take(limit)
            .cloned()
            .collect()
    }

    /// Waits until `id` has been published.
    pub async fn published(&self, id: u64) {
        let mut published = self.published.subscribe();
        // The sender lives as long as the hub, which the caller borrows.
        let _ = published.wait_for(|last| *last >= id).await;
    }

    /// The highest id known to exist in the log (at least `last_published`).
    pub fn log_end(&self) -> u64 {
        self.log_end.load(Ordering::Acquire)
    }

    /// The log is known to reach `id` (a cluster node saw it in the stream).
    pub fn learn_log_end(&self, id: u64) {
        self.log_end.fetch_max(id, Ordering::AcqRel);
    }

    /// This hub's log is a stream that other nodes write too: its end is learnt from probes
    /// ([`Self::probed`]), not exact.
    pub fn follow_stream(&self) {
        self.log_end_exact.store(false, Ordering::Release);
    }

    /// A probe read the stream's end: `end`.
    pub fn probed(&self, end: u64) {
        self.learn_log_end(end);
        self.probes.send_modify(|count| *count += 1);
    }

    /// Whether a client's `offset` lies beyond the log's end: at once on a single node; on a
    /// cluster node, whose end may lag the stream by a probe, only if it is still beyond after
    /// two more probes (at most [`PROBE_WAIT`]). When the stream does not answer (a node cut
    /// off from NATS), the offset may well be an id another node gave: not beyond, it is
    /// waited for like one this node has not applied yet. Found by the fault harness
    /// (tests/faults): a reader moving from one node to another got the whole history again.
    pub async fn beyond_stream(&self, offset: u64) -> bool {
        if offset <= self.log_end() {
            return false;
        }
        if self.log_end_exact.load(Ordering::Acquire) {
            return true;
        }
        let mut probes = self.probes.subscribe();
        let from = *probes.borrow_and_update();
        match tokio::time::timeout(PROBE_WAIT, probes.wait_for(|count| *count >= from + 2)).await {
            Ok(Ok(_)) => offset > self.log_end(),
            _ => false,
        }
    }

    /// Subscribes to live messages. Returns the id the stream starts after: the receiver gets
    /// exactly the messages with larger ids, in order (unless it lags).
    pub fn subscribe(&self) -> (u64, broadcast::Receiver<SharedMessage>) {
        let last = self.lock();
        (last.last, self.live.subscribe())
    }
}

/// The tail cache's size, as `/metrics` shows it.
fn record_size(cache: &TailCache) {
    metrics::gauge(metrics::TAIL_CACHE_MESSAGES).set(cache.len() as f64);
    metrics::gauge(metrics::TAIL_CACHE_BYTES).set(cache.bytes() as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::test_support::msg;

    const ROOMY: TailLimits = TailLimits {
        max_messages: 100,
        max_bytes: 1 << 20,
    };

    #[test]
    fn subscribe_starts_right_after_last_published() {
        let hub = Hub::new(5, 8, ROOMY, []);
        hub.publish([msg(6)]);
        let (start, mut rx) = hub.subscribe();
        assert_eq!(start, 6);
        hub.publish([msg(7), msg(8)]);
        assert_eq!(rx.try_recv().map(|m| m.id.0), Ok(7));
        assert_eq!(rx.try_recv().map(|m| m.id.0), Ok(8));
        assert!(rx.try_recv().is_err());
        assert_eq!(hub.last_published(), 8);
    }

    #[test]
    fn published_messages_are_replayed_from_the_tail_until_retention_deletes_them() {
        let hub = Hub::new(3, 8, ROOMY, [msg(2), msg(3)]);
        hub.publish([msg(4), msg(5)]);
        let ids = |batch: Option<Vec<SharedMessage>>| {
            batch.map(|b| b.iter().map(|m| m.id.0).collect::<Vec<_>>())
        };
        assert_eq!(
            ids(hub.replay_from_tail(1, 5, 10, 1 << 20)),
            Some(vec![2, 3, 4, 5])
        );
        assert_eq!(ids(hub.replay_from_tail(0, 5, 10, 1 << 20)), None);
        hub.forget(&[2, 3]);
        assert_eq!(
            ids(hub.replay_from_tail(1, 5, 10, 1 << 20)),
            Some(vec![4, 5])
        );
    }
}
