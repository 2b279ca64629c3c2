//! One client's catch-up reader: the stored messages of its rooms after its cursor, in
//! bounded batches.
//!
//! A socket's delivery task ([`super::socket_task`]) reads `(cursor, through]` with it, where
//! `through` is an id the live broadcaster has sent: first the replay asked for in the
//! handshake, later whatever the client missed while it was too slow to stay in the live set.
//! Batches come from the hub's tail cache when it holds them (recent offsets; the cache holds
//! every room's newest messages, and the reader keeps those of the socket's rooms), from the
//! store otherwise, through the rooms' index (a room's catch-up reads only its own rows), so a
//! slow client costs bounded memory and still sees every message of its rooms exactly once, in
//! order.
//!
//! It owns one cursor (the highest id it has yielded, or the one the caller says was queued
//! otherwise). It does no socket I/O: the delivery task pulls batches and emits them at the
//! client's pace (that pull is the backpressure).

use std::sync::Arc;

use super::Hub;
use super::subscription::Subscription;
use crate::message::{Message, SharedMessage};
use crate::storage::{StoreError, StoreReader};

/// Bounds on one replay batch.
#[derive(Debug, Clone, Copy)]
pub struct BatchLimits {
    /// At most this many messages per batch (`--replay-batch`).
    pub max_count: usize,
    /// Stop adding messages once this many content bytes are in the batch.
    pub max_bytes: usize,
}

impl BatchLimits {
    /// The content bytes per batch: enough for a full batch of typical messages, small enough
    /// that a batch of the largest ones stays a few MiB.
    pub const MAX_BYTES: usize = 1 << 20;
}

/// Why a batch could not be read.
#[derive(Debug, thiserror::Error)]
pub enum CatchUpError {
    /// Reading the range from the store failed.
    #[error("replay failed: {0}")]
    Store(#[from] StoreError),
    /// The blocking read task panicked or was cancelled.
    #[error("replay read task failed: {0}")]
    Task(#[from] tokio::task::JoinError),
}

/// See the module docs.
pub struct CatchUp {
    hub: Arc<Hub>,
    reader: StoreReader,
    limits: BatchLimits,
    /// The socket's rooms.
    subscription: Arc<Subscription>,
    /// Highest id yielded so far (or the client's starting offset).
    cursor: u64,
    /// Where the replay began (the effective offset).
    start: u64,
    /// The newest id when the reader was made: the replay the client asked for ends there.
    replay_until: u64,
}

impl CatchUp {
    /// A reader of every message of `subscription`'s rooms with id greater than `after` (one
    /// this node has not applied yet is waited for; admission has turned an offset of another
    /// database into 0, [`Hub::beyond_stream`]). With `latest_after`, the replay starts no earlier than it (the id before the
    /// newest N messages of the rooms: a fresh page asks for the last screenful and pages back
    /// with `history`).
    pub fn new(
        hub: Arc<Hub>,
        reader: StoreReader,
        subscription: Arc<Subscription>,
        after: u64,
        latest_after: Option<u64>,
        limits: BatchLimits,
    ) -> Self {
        let newest = hub.last_published();
        let cursor = latest_after.map_or(after, |latest_after| after.max(latest_after));
        Self {
            hub,
            reader,
            limits,
            subscription,
            cursor,
            start: cursor,
            replay_until: newest,
        }
    }

    /// The socket's rooms.
    pub fn subscription(&self) -> &Arc<Subscription> {
        &self.subscription
    }

    /// The highest id yielded so far (the starting offset before the first batch).
    pub fn cursor(&self) -> u64 {
        self.cursor
    }

    /// Where the replay began: messages after this id are delivered.
    pub fn start(&self) -> u64 {
        self.start
    }

    /// Whether retention deleted messages of its rooms that the replay was asked for (ids
    /// above its start): the client cannot get everything it asked for. Each room records the
    /// highest id it lost, so this is exact, whatever the other rooms lost.
    pub async fn lost_any(&self) -> Result<bool, CatchUpError> {
        let (reader, rooms, start) = (self.reader.clone(), self.subscription.rooms(), self.start);
        Ok(tokio::task::spawn_blocking(move || reader.lost_any(&rooms, start)).await??)
    }

    /// Whether the replay the client asked for (up to the newest id when it connected) has
    /// been yielded.
    pub fn caught_up(&self) -> bool {
        self.cursor >= self.replay_until
    }

    /// The end of the replay the client asked for.
    pub fn replay_until(&self) -> u64 {
        self.replay_until
    }

    /// Moves the cursor forward to `id`: messages up to it reached the client another way
    /// (the live broadcaster). Never moves it back.
    pub fn skip_to(&mut self, id: u64) {
        self.cursor = self.cursor.max(id);
    }

    /// The next batch of stored messages of the socket's rooms in `(cursor, through]`,
    /// ascending, following the previous batch; empty once the cursor has reached `through`.
    /// Every id up to `through` must have been published (it is then in the cache or the
    /// store).
    pub async fn read_through(&mut self, through: u64) -> Result<Vec<SharedMessage>, CatchUpError> {
        let limits = self.limits;
        while self.cursor < through {
            let Some(batch) =
                self.hub
                    .replay_from_tail(self.cursor, through, limits.max_count, limits.max_bytes)
            else {
                break;
            };
            let Some(last) = batch.last() else {
                break;
            };
            // The cache holds a contiguous run starting right after the cursor; the socket
            // wants its rooms' part of it.
            self.cursor = last.id.0;
            let wanted: Vec<SharedMessage> = batch
                .into_iter()
                .filter(|message| self.subscription.wants(message))
                .collect();
            if !wanted.is_empty() {
                return Ok(wanted);
            }
        }
        if self.cursor >= through {
            return Ok(Vec::new());
        }
        loop {
            let reader = self.reader.clone();
            let cursors = self.subscription.cursors(self.cursor);
            let rows = tokio::task::spawn_blocking(move || {
                reader.read_rooms(&cursors, through, limits.max_count, limits.max_bytes)
            })
            .await??;
            let Some(last) = rows.last() else {
                // Nothing more of its rooms up to `through`.
                self.cursor = through;
                return Ok(Vec::new());
            };
            self.cursor = last.id.0;
            // Deleted messages' tombstones hold nothing to deliver (the deletion itself is an
            // entry of its own, replayed in its place).
            let messages: Vec<SharedMessage> = rows
                .into_iter()
                .filter(|row| !row.message.is_tombstone())
                .map(|row| Arc::new(Message::from(row)))
                .collect();
            if !messages.is_empty() {
                return Ok(messages);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::delivery::TailLimits;
    use crate::message::{ChatInput, MessageId, StoredRow};
    use crate::storage::{Store, TEST_CACHE_BYTES};

    struct Rig {
        _dir: tempfile::TempDir,
        reader: StoreReader,
        writer: crate::storage::StoreWriter,
    }

    /// A store holding `count` messages, ids 1..=count.
    fn store_with(count: u64) -> Rig {
        let dir = tempfile::tempdir().expect("temp dir");
        let (reader, mut writer) =
            Store::open(&dir.path().join("c.redb"), TEST_CACHE_BYTES).expect("open");
        let inputs: Vec<ChatInput> = (1..=count)
            .map(|i| ChatInput {
                content: format!("m{i}"),
                client_offset: None,
                author: None,
                user: None,
                room: None,
                event: None,
            })
            .collect();
        if !inputs.is_empty() {
            writer.append_batch(&inputs, 1).expect("append");
        }
        Rig {
            _dir: dir,
            reader,
            writer,
        }
    }

    /// A hub at `last_id` whose tail cache holds `cached` (read from the store, as at start-up).
    fn hub(rig: &Rig, last_id: u64, cached: &[u64]) -> Arc<Hub> {
        let tail = TailLimits {
            max_messages: 1000,
            max_bytes: 1 << 20,
        };
        let rows = rig
            .reader
            .read_range(0, last_id, 10_000, usize::MAX)
            .expect("read");
        let cached = rows
            .into_iter()
            .filter(|row| cached.contains(&row.id.0))
            .map(|row| Arc::new(Message::from(row)));
        Arc::new(Hub::new(last_id, 16, tail, cached))
    }

    const LIMITS: BatchLimits = BatchLimits {
        max_count: 4,
        max_bytes: 1 << 20,
    };

    /// A socket in the default room only.
    fn default_room() -> Arc<Subscription> {
        Arc::new(Subscription::new([None]))
    }

    async fn read_all(catch_up: &mut CatchUp, through: u64) -> Vec<Vec<u64>> {
        let mut batches = Vec::new();
        loop {
            let batch = catch_up.read_through(through).await.expect("read");
            if batch.is_empty() {
                return batches;
            }
            batches.push(batch.iter().map(|m| m.id.0).collect());
        }
    }

    #[tokio::test]
    async fn replays_in_bounded_contiguous_batches_from_the_store_then_the_cache() {
        let rig = store_with(10);
        let hub = hub(&rig, 10, &[7, 8, 9, 10]);
        let mut catch_up = CatchUp::new(hub, rig.reader.clone(), default_room(), 2, None, LIMITS);
        assert_eq!(catch_up.replay_until(), 10);
        assert_eq!(
            read_all(&mut catch_up, 10).await,
            vec![vec![3, 4, 5, 6], vec![7, 8, 9, 10]],
            "3..=6 from the store (up to where the cache begins), the rest from the cache"
        );
        assert!(catch_up.caught_up());
        assert!(!catch_up.lost_any().await.expect("read"));
        assert_eq!(catch_up.cursor(), 10);
    }

    #[tokio::test]
    async fn a_range_the_cache_holds_is_not_read_from_the_store() {
        // The store is empty: only the cache can answer.
        let rig = store_with(0);
        let tail = TailLimits {
            max_messages: 10,
            max_bytes: 1 << 20,
        };
        let cached = (5..=8).map(|id| {
            Arc::new(Message::from(StoredRow {
                id: MessageId(id),
                message: crate::message::StoredMessage {
                    content: format!("c{id}"),
                    client_offset: None,
                    received_at_ms: 0,
                    author: None,
                    user: None,
                    event: None,
                    room: None,
                },
            }))
        });
        let hub = Arc::new(Hub::new(8, 16, tail, cached));
        let mut catch_up = CatchUp::new(hub, rig.reader.clone(), default_room(), 4, None, LIMITS);
        assert_eq!(read_all(&mut catch_up, 8).await, vec![vec![5, 6, 7, 8]]);
    }

    #[tokio::test]
    async fn a_hole_left_by_retention_is_reported() {
        let mut rig = store_with(10);
        // Retention deletes 1..=6 while the client was away.
        rig.writer.prune(Some(4), None, 100).expect("prune");
        let hub = hub(&rig, 10, &[]);
        let mut catch_up = CatchUp::new(hub, rig.reader.clone(), default_room(), 2, None, LIMITS);
        assert_eq!(read_all(&mut catch_up, 10).await, vec![vec![7, 8, 9, 10]]);
        assert!(catch_up.lost_any().await.expect("read"), "3..=6 are gone");
        let hub_all = self::hub(&rig, 10, &[]);
        let mut from_seven =
            CatchUp::new(hub_all, rig.reader.clone(), default_room(), 6, None, LIMITS);
        read_all(&mut from_seven, 10).await;
        assert!(
            !from_seven.lost_any().await.expect("read"),
            "nothing the client asked for is gone"
        );
    }

    #[tokio::test]
    async fn latest_cuts_the_replay_to_the_newest_messages() {
        let rig = store_with(10);
        let mut latest = CatchUp::new(
            hub(&rig, 10, &[]),
            rig.reader.clone(),
            default_room(),
            0,
            Some(7),
            LIMITS,
        );
        assert_eq!(latest.start(), 7);
        assert_eq!(read_all(&mut latest, 10).await, vec![vec![8, 9, 10]]);
    }

    #[tokio::test(start_paused = true)]
    async fn a_cluster_node_asks_the_stream_before_it_takes_an_offset_for_another_databases() {
        // A cluster node whose file and probe say 10, while other nodes gave a client ids up
        // to 15. Found by the fault harness (tests/faults): a reader moving to such a node
        // (one cut off from NATS, or one whose last probe was a second old) got the whole
        // history again.
        let rig = store_with(10);
        let node = hub(&rig, 10, &[]);
        node.follow_stream();
        // No probe answers (cut off from NATS): waited for, not another database's.
        assert!(!node.beyond_stream(15).await);
        let mut ahead = CatchUp::new(
            node.clone(),
            rig.reader.clone(),
            default_room(),
            15,
            None,
            LIMITS,
        );
        assert_eq!(ahead.start(), 15);
        assert!(read_all(&mut ahead, 10).await.is_empty());
        // The probes find the stream at 20: 15 is real.
        let probing = node.clone();
        let probe = tokio::spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                probing.probed(20);
            }
        });
        assert!(!node.beyond_stream(15).await);
        probe.await.expect("probe");
        // Two probes still find the stream at 20: 99 is another database's.
        let probing = node.clone();
        let probe = tokio::spawn(async move {
            for _ in 0..2 {
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                probing.probed(20);
            }
        });
        assert!(node.beyond_stream(99).await);
        probe.await.expect("probe");
        // A single node's end is exact: at once (tests/extensions.rs replays the whole
        // history to such an offset).
        let single = hub(&rig, 10, &[]);
        assert!(single.beyond_stream(11).await);
        assert!(!single.beyond_stream(10).await);
    }

    #[tokio::test]
    async fn skip_to_moves_the_cursor_forward_only() {
        let rig = store_with(10);
        let mut catch_up = CatchUp::new(
            hub(&rig, 10, &[]),
            rig.reader.clone(),
            default_room(),
            2,
            None,
            LIMITS,
        );
        catch_up.skip_to(8);
        assert_eq!(catch_up.cursor(), 8);
        catch_up.skip_to(5);
        assert_eq!(catch_up.cursor(), 8);
        assert_eq!(read_all(&mut catch_up, 10).await, vec![vec![9, 10]]);
    }

    #[tokio::test]
    async fn a_socket_reads_only_its_rooms_from_the_cache_and_the_store() {
        let dir = tempfile::tempdir().expect("temp dir");
        let (reader, mut writer) =
            Store::open(&dir.path().join("r.redb"), TEST_CACHE_BYTES).expect("open");
        // 1..=20 alternate between the default room and dev; ops gets 21.
        let inputs: Vec<ChatInput> = (1..=21)
            .map(|i| ChatInput {
                content: format!("m{i}"),
                client_offset: None,
                author: None,
                user: None,
                event: None,
                room: match i {
                    21 => Some("ops".into()),
                    i if i % 2 == 0 => Some("dev".into()),
                    _ => None,
                },
            })
            .collect();
        writer.append_batch(&inputs, 1).expect("append");
        let rig = Rig {
            _dir: dir,
            reader,
            writer,
        };
        // The cache holds 15..=21; 1..=14 come from the store.
        let cached: Vec<u64> = (15..=21).collect();
        let hub = hub(&rig, 21, &cached);
        let dev = Arc::new(Subscription::new([Some("dev".to_string())]));
        let mut catch_up = CatchUp::new(
            hub.clone(),
            rig.reader.clone(),
            dev.clone(),
            0,
            None,
            LIMITS,
        );
        let batches = read_all(&mut catch_up, 21).await;
        assert!(
            batches.iter().all(|b| !b.is_empty() && b.len() <= 4),
            "{batches:?}"
        );
        assert_eq!(
            batches.concat(),
            (1..=10).map(|n| 2 * n).collect::<Vec<_>>()
        );
        // Joining ops at mark 20 (as a join would, under the live set): 21 comes too.
        let mut both = CatchUp::new(hub, rig.reader.clone(), dev.clone(), 19, None, LIMITS);
        dev.join(Some("ops".into()), 20);
        assert_eq!(read_all(&mut both, 21).await.concat(), vec![20, 21]);
    }
}
