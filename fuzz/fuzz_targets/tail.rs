//! The tail cache against a declarative model: after any sequence of pushes (consecutive ids,
//! and now and then a break in them), evictions by count and bytes, and retention deleting
//! any ids (per room: not a prefix), the cache holds exactly the longest run of the newest
//! messages that fits its limits, and every range it serves is the model's: the run from the
//! id asked for less the deleted ids, bounded, and `None` only when it does not hold that id.
#![no_main]

use std::collections::HashSet;
use std::sync::Arc;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidings::fuzzing::TailLimits;
use tidings::fuzzing::{TailCache, cost};
use tidings::message::{Message, MessageId, SharedMessage};

const MAX_OPS: usize = 256;
/// The largest `max_messages` the target uses.
const MAX_LIMIT: usize = 23;

#[derive(Debug, Arbitrary)]
enum Op {
    /// The next id, as the writer publishes.
    Push {
        content_len: u8,
        author_len: Option<u8>,
    },
    /// An id that does not follow the newest (cannot happen with the writer; must stay sane).
    PushOther { id: u16, content_len: u8 },
    /// Retention deleted some of the 8 ids from one near the oldest held (the bits of the
    /// mask).
    Forget(i8, u8),
    /// A replay batch.
    Range {
        after: i8,
        through: i8,
        max_count: u8,
        max_bytes: u16,
    },
}

/// What the cache must hold, said without its eviction loop: every message pushed since the
/// last break in the ids (retention's deletions among them: held, never served) ...
#[derive(Default)]
struct Model {
    run: Vec<SharedMessage>,
    deleted: HashSet<u64>,
}

impl Model {
    fn push(&mut self, message: SharedMessage) {
        if self
            .run
            .last()
            .is_some_and(|newest| newest.id.0 + 1 != message.id.0)
        {
            self.run.clear();
            self.deleted.clear();
        }
        self.run.push(message);
        // No limits hold more than this many: older ones are beyond any count limit.
        if self.run.len() > MAX_LIMIT {
            self.run.remove(0);
        }
    }

    /// Deletions the cache can know of: those of ids it holds now.
    fn forget(&mut self, ids: &[u64], limits: TailLimits) {
        let held: HashSet<u64> = self.held(limits).iter().map(|m| m.id.0).collect();
        self.deleted
            .extend(ids.iter().copied().filter(|id| held.contains(id)));
    }

    fn served(&self, held: &[SharedMessage]) -> Vec<u64> {
        held.iter()
            .map(|m| m.id.0)
            .filter(|id| !self.deleted.contains(id))
            .collect()
    }

    /// ... of which the cache holds the longest newest part within both limits (a single
    /// message is held even if it is over the byte budget).
    fn held(&self, limits: TailLimits) -> Vec<SharedMessage> {
        if limits.max_messages == 0 {
            return Vec::new();
        }
        let mut held = Vec::new();
        let mut bytes = 0;
        for message in self.run.iter().rev() {
            let next = bytes + cost(message);
            if held.len() == limits.max_messages || (!held.is_empty() && next > limits.max_bytes) {
                break;
            }
            bytes = next;
            held.push(message.clone());
        }
        held.reverse();
        held
    }
}

fn message(id: u64, content_len: u8, author_len: Option<u8>) -> SharedMessage {
    Arc::new(Message {
        id: MessageId(id),
        content: "x".repeat(usize::from(content_len)),
        author: author_len.map(|n| "a".repeat(usize::from(n % 33))),
        user: None,
        event: None,
        time: id,
        room: None,
    })
}

fn ids(messages: &[SharedMessage]) -> Vec<u64> {
    messages.iter().map(|m| m.id.0).collect()
}

fn run(input: &mut Unstructured) -> arbitrary::Result<()> {
    let limits = TailLimits {
        max_messages: usize::from(u8::arbitrary(input)?) % (MAX_LIMIT + 1),
        max_bytes: usize::from(u16::arbitrary(input)?),
    };
    let mut cache = TailCache::new(limits);
    let mut model = Model::default();
    let mut next_id = u64::from(u8::arbitrary(input)?) + 1;
    for _ in 0..MAX_OPS {
        // An exhausted input would go on yielding default operations: stop instead.
        if input.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(input) else { break };
        match op {
            Op::Push {
                content_len,
                author_len,
            } => {
                let m = message(next_id, content_len, author_len);
                next_id += 1;
                cache.push(m.clone());
                model.push(m);
            }
            Op::PushOther { id, content_len } => {
                let m = message(u64::from(id).max(1), content_len, None);
                next_id = m.id.0 + 1;
                cache.push(m.clone());
                model.push(m);
            }
            Op::Forget(delta, mask) => {
                let oldest = model.held(limits).first().map_or(next_id, |m| m.id.0);
                let from = oldest.saturating_add_signed(i64::from(delta));
                let doomed: Vec<u64> = (0..8u64)
                    .filter(|k| mask >> k & 1 == 1)
                    .map(|k| from + k)
                    .collect();
                cache.forget(&doomed);
                model.forget(&doomed, limits);
            }
            Op::Range {
                after,
                through,
                max_count,
                max_bytes,
            } => {
                let held = model.held(limits);
                let base = held.first().map_or(next_id, |m| m.id.0);
                let after = base.saturating_add_signed(i64::from(after));
                let through = after.saturating_add_signed(i64::from(through));
                let (max_count, max_bytes) = (usize::from(max_count % 16), usize::from(max_bytes));
                let got = cache.range(after, through, max_count, max_bytes);
                let first = held.iter().position(|m| m.id.0 == after + 1);
                match (first, got) {
                    (Some(start), Some(batch)) if after < through => {
                        // The model's batch: from `after + 1`, up to `through`, at most
                        // `max_count` (at least one), and within `max_bytes` of content
                        // unless it is the first.
                        let mut want = Vec::new();
                        let mut bytes = 0;
                        for m in &held[start..] {
                            if m.id.0 > through || want.len() >= max_count.max(1) {
                                break;
                            }
                            if model.deleted.contains(&m.id.0) {
                                continue;
                            }
                            if !want.is_empty() && bytes + m.content.len() > max_bytes {
                                break;
                            }
                            bytes += m.content.len();
                            want.push(m.clone());
                        }
                        assert_eq!(ids(&batch), ids(&want), "range ({after}, {through}]");
                        for (got, want) in batch.iter().zip(&want) {
                            assert!(Arc::ptr_eq(got, want), "the very message pushed");
                        }
                    }
                    (Some(_), None) if after < through => {
                        panic!(
                            "the cache holds {} but refused ({after}, {through}]",
                            after + 1
                        )
                    }
                    (_, None) => {}
                    (first, Some(batch)) => panic!(
                        "served {:?} for ({after}, {through}] holding it: {}",
                        ids(&batch),
                        first.is_some()
                    ),
                }
            }
        }
        let held = model.held(limits);
        assert_eq!(cache.len(), held.len(), "held {:?}", ids(&held));
        assert_eq!(cache.bytes(), held.iter().map(|m| cost(m)).sum::<usize>());
        assert_eq!(cache.is_empty(), held.is_empty());
        // What it holds, through its own interface: the whole run, from its oldest.
        if let Some(oldest) = held.first() {
            let newest = held.last().map_or(0, |m| m.id.0);
            let all = cache.range(oldest.id.0 - 1, newest, usize::MAX, usize::MAX);
            assert_eq!(all.as_deref().map(ids), Some(model.served(&held)));
        }
    }
    Ok(())
}

fuzz_target!(|data: &[u8]| {
    let _ = run(&mut Unstructured::new(data));
});
