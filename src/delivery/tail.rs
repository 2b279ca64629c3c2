//! The tail cache: the newest stored messages, kept in memory, so that recent replays (a
//! reconnect, a page reload, every client catching up after a restart) are served without
//! a read transaction.
//!
//! It holds a contiguous run of ids ending at the newest published message, bounded by a
//! message count and a byte budget. It never serves anything the store does not hold: it is
//! filled only with durably stored messages (by the hub, as the writer publishes them, and
//! from the store at start-up), and the ids retention deletes (per room, so anywhere in the
//! run) are skipped until they are evicted. A replay whose start it does not hold goes to
//! the store. It does no locking and no I/O itself.

use std::collections::{HashSet, VecDeque};

use crate::message::{Message, SharedMessage};

/// Bounds of the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TailLimits {
    /// At most this many messages (0 turns the cache off).
    pub max_messages: usize,
    /// At most about this many bytes (content, author and user plus a fixed overhead each).
    pub max_bytes: usize,
}

/// Bookkeeping per message beyond its text: the `Arc`, the struct, the queue slot.
const OVERHEAD_BYTES: usize = 96;

/// What a message counts against the byte budget.
pub fn cost(message: &Message) -> usize {
    cost_of(
        &message.content,
        message.author.as_deref(),
        message.user.as_deref(),
    )
}

/// What a message with `content`, `author` and `user` counts against the byte budget (for
/// sizing what is read to fill the cache, before it is a [`Message`]).
pub fn cost_of(content: &str, author: Option<&str>, user: Option<&str>) -> usize {
    OVERHEAD_BYTES + content.len() + author.map_or(0, str::len) + user.map_or(0, str::len)
}

/// See the module docs.
#[derive(Debug)]
pub struct TailCache {
    limits: TailLimits,
    /// Ascending, contiguous ids.
    messages: VecDeque<SharedMessage>,
    /// Ids among `messages` that retention deleted from the store: held until evicted (the
    /// run stays contiguous), never served.
    deleted: HashSet<u64>,
    bytes: usize,
}

impl TailCache {
    /// An empty cache.
    pub fn new(limits: TailLimits) -> Self {
        Self {
            limits,
            messages: VecDeque::new(),
            deleted: HashSet::new(),
            bytes: 0,
        }
    }

    /// Appends the newest message, evicting the oldest beyond the limits. A message that
    /// does not follow the newest held one (cannot happen with the writer's consecutive ids)
    /// restarts the run, so what is held is always contiguous.
    pub fn push(&mut self, message: SharedMessage) {
        if self.limits.max_messages == 0 {
            return;
        }
        if self
            .messages
            .back()
            .is_some_and(|newest| newest.id.0 + 1 != message.id.0)
        {
            self.messages.clear();
            self.deleted.clear();
            self.bytes = 0;
        }
        self.bytes += cost(&message);
        self.messages.push_back(message);
        while self.messages.len() > self.limits.max_messages
            || (self.bytes > self.limits.max_bytes && self.messages.len() > 1)
        {
            self.evict_oldest();
        }
    }

    /// Retention deleted the messages `ids` from the store: they are not served any more.
    /// Only those: retention is per room, and the other rooms' messages around them stay.
    pub fn forget(&mut self, ids: &[u64]) {
        let (Some(oldest), Some(newest)) = (self.messages.front(), self.messages.back()) else {
            return;
        };
        let held = oldest.id.0..=newest.id.0;
        self.deleted
            .extend(ids.iter().copied().filter(|id| held.contains(id)));
    }

    fn evict_oldest(&mut self) {
        if let Some(oldest) = self.messages.pop_front() {
            self.bytes -= cost(&oldest);
            self.deleted.remove(&oldest.id.0);
        }
    }

    /// Messages with ids in `(after, through]`, ascending, at most `max_count` of them and
    /// no more than `max_bytes` of content (but at least one); `None` when the cache does
    /// not hold the id right after `after` (the caller reads the store instead).
    pub fn range(
        &self,
        after: u64,
        through: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Option<Vec<SharedMessage>> {
        let oldest = self.messages.front()?.id.0;
        let first = after.checked_add(1)?;
        if first < oldest || first > through {
            return None;
        }
        let start = usize::try_from(first - oldest).ok()?;
        if start >= self.messages.len() {
            return None;
        }
        let mut batch = Vec::new();
        let mut bytes = 0;
        for message in self.messages.range(start..) {
            if message.id.0 > through || batch.len() >= max_count.max(1) {
                break;
            }
            if self.deleted.contains(&message.id.0) {
                continue;
            }
            if !batch.is_empty() && bytes + message.content.len() > max_bytes {
                break;
            }
            bytes += message.content.len();
            batch.push(message.clone());
        }
        Some(batch)
    }

    /// Messages held.
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }

    /// Bytes counted against the budget.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::test_support::message as msg;

    fn ids(batch: Option<Vec<SharedMessage>>) -> Option<Vec<u64>> {
        batch.map(|b| b.iter().map(|m| m.id.0).collect())
    }

    fn filled(from: u64, to: u64, limits: TailLimits) -> TailCache {
        let mut cache = TailCache::new(limits);
        for id in from..=to {
            cache.push(msg(id, "hello"));
        }
        cache
    }

    const ROOMY: TailLimits = TailLimits {
        max_messages: 100,
        max_bytes: 1 << 20,
    };

    #[test]
    fn serves_a_range_it_holds_and_refuses_one_it_does_not() {
        let cache = filled(11, 20, ROOMY);
        assert_eq!(
            ids(cache.range(10, 20, 100, 1 << 20)),
            Some((11..=20).collect())
        );
        assert_eq!(ids(cache.range(15, 17, 100, 1 << 20)), Some(vec![16, 17]));
        assert_eq!(
            ids(cache.range(9, 20, 100, 1 << 20)),
            None,
            "11 is not the start"
        );
        assert_eq!(
            ids(cache.range(20, 25, 100, 1 << 20)),
            None,
            "21 is not held"
        );
        assert_eq!(ids(cache.range(12, 12, 100, 1 << 20)), None, "empty range");
    }

    #[test]
    fn batches_are_bounded_by_count_and_bytes_but_never_empty() {
        let cache = filled(1, 50, ROOMY);
        assert_eq!(ids(cache.range(0, 50, 3, 1 << 20)), Some(vec![1, 2, 3]));
        // "hello" is 5 bytes: 12 bytes fit two.
        assert_eq!(ids(cache.range(0, 50, 100, 12)), Some(vec![1, 2]));
        assert_eq!(ids(cache.range(0, 50, 100, 1)), Some(vec![1]));
    }

    #[test]
    fn evicts_the_oldest_beyond_either_limit() {
        let by_count = filled(
            1,
            30,
            TailLimits {
                max_messages: 10,
                max_bytes: 1 << 20,
            },
        );
        assert_eq!(by_count.len(), 10);
        assert_eq!(
            ids(by_count.range(20, 30, 100, 1 << 20)).map(|v| v[0]),
            Some(21)
        );
        assert_eq!(by_count.range(19, 30, 100, 1 << 20), None);

        let one = cost(&msg(1, "hello"));
        let by_bytes = filled(
            1,
            30,
            TailLimits {
                max_messages: 100,
                max_bytes: 4 * one,
            },
        );
        assert_eq!(by_bytes.len(), 4);
        assert_eq!(by_bytes.bytes(), 4 * one);
    }

    #[test]
    fn forgets_exactly_what_retention_deleted() {
        let mut cache = filled(1, 10, ROOMY);
        // Retention is per room: it deletes some ids, and the others around them stay.
        cache.forget(&[2, 3, 7, 42]);
        assert_eq!(
            ids(cache.range(0, 10, 100, 1 << 20)),
            Some(vec![1, 4, 5, 6, 8, 9, 10])
        );
        assert_eq!(ids(cache.range(1, 6, 2, 1 << 20)), Some(vec![4, 5]));
        assert_eq!(ids(cache.range(6, 7, 100, 1 << 20)), Some(vec![]));
        // Evicted with the run, and forgotten with it.
        let mut small = filled(
            1,
            3,
            TailLimits {
                max_messages: 3,
                max_bytes: 1 << 20,
            },
        );
        small.forget(&[1, 2]);
        small.push(msg(4, "four"));
        small.push(msg(5, "five"));
        assert_eq!(ids(small.range(2, 5, 100, 1 << 20)), Some(vec![3, 4, 5]));
        assert!(small.deleted.is_empty(), "{:?}", small.deleted);
    }

    #[test]
    fn a_break_in_the_ids_restarts_the_run() {
        let mut cache = filled(1, 5, ROOMY);
        cache.push(msg(9, "later"));
        assert_eq!(cache.len(), 1);
        assert_eq!(cache.range(4, 9, 100, 1 << 20), None);
        assert_eq!(ids(cache.range(8, 9, 100, 1 << 20)), Some(vec![9]));
    }

    #[test]
    fn a_zero_sized_cache_holds_nothing() {
        let cache = filled(
            1,
            5,
            TailLimits {
                max_messages: 0,
                max_bytes: 1 << 20,
            },
        );
        assert!(cache.is_empty());
        assert_eq!(cache.range(0, 5, 100, 1 << 20), None);
    }
}
