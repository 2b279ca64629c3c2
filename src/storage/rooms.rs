//! The rooms' tables: each room's messages in id order, a copy of their rows (so a room's
//! replay and history read only its own rows, contiguous on disk, not one page of the
//! messages table per message of a room among many), and each room's counters (messages, newest id, highest id
//! retention deleted), kept in the same transactions as the messages they count.
//!
//! A room is keyed by its name; the default room, whose messages carry no name, by `""`
//! (no room name is empty).

use std::collections::BTreeMap;

use redb::{ReadableTable, Table, TableDefinition, WriteTransaction};

use super::{StoreError, write_err};

/// `(room key, id) -> record`: every message under its room, with the same record bytes as its
/// row in `messages` (written and deleted in the same transactions).
pub(super) const ROOM_MESSAGES: TableDefinition<(&str, u64), &[u8]> =
    TableDefinition::new("room_messages");

/// `room key -> (messages, newest id, pruned through)`: a room exists here once it has held a
/// message; `pruned through` is the highest id of the room that retention deleted (0: none),
/// which tells whether a replay of the room from an offset is complete.
pub(super) const ROOMS: TableDefinition<&str, (u64, u64, u64)> = TableDefinition::new("rooms");

/// The key of `room` (`None`: the default room) in the rooms' tables.
pub fn room_key(room: Option<&str>) -> &str {
    room.unwrap_or("")
}

/// The room a key names (`None`: the default room).
pub fn key_room(key: &str) -> Option<&str> {
    (!key.is_empty()).then_some(key)
}

/// One room's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RoomStats {
    /// Messages it holds.
    pub messages: u64,
    /// Its newest message's id (0: it never had one).
    pub last: u64,
    /// The highest of its ids that retention deleted (0: none).
    pub pruned_through: u64,
}

impl RoomStats {
    fn from_value((messages, last, pruned_through): (u64, u64, u64)) -> Self {
        Self {
            messages,
            last,
            pruned_through,
        }
    }

    fn value(self) -> (u64, u64, u64) {
        (self.messages, self.last, self.pruned_through)
    }
}

/// A change to one room's counters, gathered over a transaction and written once.
#[derive(Debug, Default, Clone, Copy)]
struct Delta {
    added: u64,
    removed: u64,
    last: u64,
    pruned_through: u64,
}

/// The rooms' tables within one write transaction: index entries are written as messages are
/// added and removed; the counters once, at [`RoomIndex::finish`].
pub(super) struct RoomIndex<'txn> {
    messages: Table<'txn, (&'static str, u64), &'static [u8]>,
    rooms: Table<'txn, &'static str, (u64, u64, u64)>,
    deltas: BTreeMap<String, Delta>,
}

impl<'txn> RoomIndex<'txn> {
    /// Opens the tables in `write`.
    pub(super) fn open(write: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            messages: write.open_table(ROOM_MESSAGES).map_err(write_err)?,
            rooms: write.open_table(ROOMS).map_err(write_err)?,
            deltas: BTreeMap::new(),
        })
    }

    fn delta(&mut self, room: Option<&str>) -> &mut Delta {
        self.deltas.entry(room_key(room).to_string()).or_default()
    }

    /// Message `id` of `room` was stored, as `record`.
    pub(super) fn add(
        &mut self,
        room: Option<&str>,
        id: u64,
        record: &[u8],
    ) -> Result<(), StoreError> {
        self.messages
            .insert((room_key(room), id), record)
            .map_err(write_err)?;
        let delta = self.delta(room);
        delta.added += 1;
        delta.last = delta.last.max(id);
        Ok(())
    }

    /// Message `id` of `room` was rewritten as `record` (a deletion's tombstone): its index
    /// entry follows, the counters do not change.
    pub(super) fn replace(
        &mut self,
        room: Option<&str>,
        id: u64,
        record: &[u8],
    ) -> Result<(), StoreError> {
        self.messages
            .insert((room_key(room), id), record)
            .map_err(write_err)?;
        Ok(())
    }

    /// Message `id` of `room` was deleted by retention.
    pub(super) fn prune(&mut self, room: Option<&str>, id: u64) -> Result<(), StoreError> {
        let removed = self
            .messages
            .remove((room_key(room), id))
            .map_err(write_err)?
            .is_some();
        let delta = self.delta(room);
        if removed {
            delta.removed += 1;
        }
        delta.pruned_through = delta.pruned_through.max(id);
        Ok(())
    }

    /// The oldest ids of the room keyed `key`, at most `limit` of them.
    pub(super) fn oldest(&self, key: &str, limit: usize) -> Result<Vec<u64>, StoreError> {
        let mut ids = Vec::new();
        for entry in self
            .messages
            .range((key, 0)..=(key, u64::MAX))
            .map_err(write_err)?
            .take(limit)
        {
            ids.push(entry.map_err(write_err)?.0.value().1);
        }
        Ok(ids)
    }

    /// Rooms whose counters say they hold more than `keep` messages, with how many too many.
    pub(super) fn over(&self, keep: u64) -> Result<Vec<(String, u64)>, StoreError> {
        let mut over = Vec::new();
        for entry in self.rooms.iter().map_err(write_err)? {
            let (key, value) = entry.map_err(write_err)?;
            let stats = RoomStats::from_value(value.value());
            if stats.messages > keep {
                over.push((key.value().to_string(), stats.messages - keep));
            }
        }
        Ok(over)
    }

    /// Writes the counters changed in this transaction; returns the rooms it left with no
    /// message (retention deleted their last ones).
    pub(super) fn finish(mut self) -> Result<Vec<Option<String>>, StoreError> {
        let mut emptied = Vec::new();
        for (key, delta) in std::mem::take(&mut self.deltas) {
            let old = self
                .rooms
                .get(key.as_str())
                .map_err(write_err)?
                .map(|v| RoomStats::from_value(v.value()))
                .unwrap_or_default();
            let new = RoomStats {
                messages: (old.messages + delta.added).saturating_sub(delta.removed),
                last: old.last.max(delta.last),
                pruned_through: old.pruned_through.max(delta.pruned_through),
            };
            self.rooms
                .insert(key.as_str(), new.value())
                .map_err(write_err)?;
            if delta.removed > 0 && new.messages == 0 {
                emptied.push(key_room(&key).map(String::from));
            }
        }
        Ok(emptied)
    }
}

/// Reads of the rooms' tables within one read transaction.
pub(super) fn stats_of(
    rooms: &impl ReadableTable<&'static str, (u64, u64, u64)>,
    key: &str,
) -> Result<Option<RoomStats>, redb::StorageError> {
    Ok(rooms.get(key)?.map(|v| RoomStats::from_value(v.value())))
}

/// Decodes a counters value (for readers outside this module).
pub(super) fn stats(value: (u64, u64, u64)) -> RoomStats {
    RoomStats::from_value(value)
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_db;
    use super::super::{RoomCursor, Store, StoreError, TEST_CACHE_BYTES};
    use super::*;
    use crate::message::RetryKey;
    use crate::message::test_support::input_in;
    use crate::message::{AppendOutcome, MessageId, StoredRow};

    fn ids(rows: &[StoredRow]) -> Vec<u64> {
        rows.iter().map(|r| r.id.0).collect()
    }

    fn cursor(room: Option<&str>, after: u64) -> RoomCursor {
        RoomCursor {
            room: room.map(String::from),
            after,
        }
    }

    #[test]
    fn a_room_reads_only_its_own_messages_in_id_order() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        // Ids 1..=12 round the three rooms: default, dev, ops, default, dev, ...
        let rooms = [None, Some("dev"), Some("ops")];
        let inputs: Vec<_> = (0..12)
            .map(|n| input_in(rooms[n % 3], &format!("m{}", n + 1), None))
            .collect();
        writer.append_batch(&inputs, 1)?;
        let read = |cursors: &[RoomCursor], through, max| {
            reader.read_rooms(cursors, through, max, usize::MAX)
        };
        assert_eq!(
            ids(&read(&[cursor(Some("dev"), 0)], 12, 100)?),
            [2, 5, 8, 11]
        );
        // Two rooms merged in id order, each from its own cursor.
        let both = [cursor(None, 4), cursor(Some("ops"), 0)];
        assert_eq!(ids(&read(&both, 12, 100)?), [3, 6, 7, 9, 10, 12]);
        assert_eq!(ids(&read(&both, 9, 100)?), [3, 6, 7, 9], "up to `through`");
        assert_eq!(ids(&read(&both, 12, 2)?), [3, 6], "bounded batches");
        assert!(read(&[cursor(Some("nobody"), 0)], 12, 100)?.is_empty());
        assert!(read(&[], 12, 100)?.is_empty());
        let rows = read(&[cursor(Some("ops"), 0)], 12, 1)?;
        assert_eq!(rows[0].message.room.as_deref(), Some("ops"));
        // History pages walk one room backwards.
        let page = |before, limit| -> Result<(Vec<u64>, bool), StoreError> {
            let (rows, more) = reader.read_room_before(Some("dev"), before, limit)?;
            Ok((ids(&rows), more))
        };
        assert_eq!(page(None, 3)?, (vec![5, 8, 11], true));
        assert_eq!(page(Some(5), 3)?, (vec![2], false));
        assert_eq!(page(Some(1), 3)?, (vec![], false));
        // Counters, and the rooms by name (the default room, keyed "", first).
        let dev = reader.room_stats(Some("dev"))?;
        assert_eq!(
            dev,
            Some(RoomStats {
                messages: 4,
                last: 11,
                pruned_through: 0
            })
        );
        let names: Vec<Option<String>> = reader
            .rooms_after(None, 10)?
            .into_iter()
            .map(|(room, _)| room)
            .collect();
        assert_eq!(names, [None, Some("dev".into()), Some("ops".into())]);
        let after_dev = reader.rooms_after(Some("dev"), 10)?;
        assert_eq!(after_dev.len(), 1);
        assert_eq!(after_dev[0].0.as_deref(), Some("ops"));
        Ok(())
    }

    #[test]
    fn the_same_offset_and_content_in_two_rooms_are_two_messages() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        let out = writer.append_batch(
            &[
                input_in(None, "hi", Some("o-1")),
                input_in(Some("dev"), "hi", Some("o-1")),
                input_in(Some("dev"), "hi", Some("o-1")),
                input_in(None, "hi", Some("o-1")),
            ],
            1,
        )?;
        use AppendOutcome::*;
        assert_eq!(
            out,
            [
                Stored(MessageId(1)),
                Stored(MessageId(2)),
                Duplicate(MessageId(2)),
                Duplicate(MessageId(1))
            ]
        );
        assert_eq!(
            reader.find_retry(&RetryKey::new(Some("dev"), "o-1", "hi"))?,
            Some(MessageId(2))
        );
        assert_eq!(
            reader.find_retry(&RetryKey::new(Some("ops"), "o-1", "hi"))?,
            None
        );
        Ok(())
    }

    #[test]
    fn retention_keeps_the_newest_of_each_room() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        // The default room gets 1..=6, dev gets 7..=8, ops gets 9..=14.
        let mut inputs: Vec<_> = (1..=6)
            .map(|n| input_in(None, &format!("d{n}"), Some(&format!("o{n}"))))
            .collect();
        inputs.extend((7..=8).map(|n| input_in(Some("dev"), &format!("v{n}"), None)));
        inputs.extend((9..=14).map(|n| input_in(Some("ops"), &format!("p{n}"), None)));
        writer.append_batch(&inputs, 1)?;
        // Keep 3 per room, at most 4 rows per call.
        assert_eq!(writer.prune(Some(3), None, 4)?.0, 4);
        assert_eq!(writer.prune(Some(3), None, 4)?.0, 2);
        assert_eq!(writer.prune(Some(3), None, 4)?, (0, 11));
        let all = [
            cursor(None, 0),
            cursor(Some("dev"), 0),
            cursor(Some("ops"), 0),
        ];
        assert_eq!(
            ids(&reader.read_rooms(&all, 14, 100, usize::MAX)?),
            [4, 5, 6, 7, 8, 12, 13, 14]
        );
        let stats = |room| {
            reader
                .room_stats(room)
                .map(|s| s.map(|s| (s.messages, s.pruned_through)))
        };
        assert_eq!(stats(None)?, Some((3, 3)));
        assert_eq!(
            stats(Some("dev"))?,
            Some((2, 0)),
            "under the limit: untouched"
        );
        assert_eq!(stats(Some("ops"))?, Some((3, 11)));
        // A pruned message's offset is forgotten with it.
        assert_eq!(reader.find_retry(&RetryKey::new(None, "o1", "d1"))?, None);
        assert_eq!(
            reader.find_retry(&RetryKey::new(None, "o5", "d5"))?,
            Some(MessageId(5))
        );
        // By age, across rooms: everything before t=2 goes.
        assert!(
            writer.take_emptied_rooms().is_empty(),
            "by count: never empty"
        );
        writer.append_batch(&[input_in(Some("dev"), "new", None)], 5)?;
        assert_eq!(writer.prune(None, Some(2), 100)?, (8, 14));
        assert_eq!(ids(&reader.read_rooms(&all, 15, 100, usize::MAX)?), [15]);
        assert_eq!(stats(Some("dev"))?, Some((1, 8)));
        // The default room and ops hold nothing now; each is told once.
        assert_eq!(
            stats(Some("ops"))?,
            Some((0, 14)),
            "its counters stay: it lost 14"
        );
        let mut emptied = writer.take_emptied_rooms();
        emptied.sort();
        assert_eq!(emptied, [None, Some("ops".to_string())]);
        assert!(writer.take_emptied_rooms().is_empty());
        Ok(())
    }

    #[test]
    fn the_default_room_is_pinned_once() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        {
            let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
            assert_eq!(reader.default_room()?, None);
            writer.pin_default_room("general")?;
            writer.pin_default_room("general")?;
            assert_eq!(reader.default_room()?.as_deref(), Some("general"));
        }
        let (_, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        let refused = writer
            .pin_default_room("lobby")
            .err()
            .map(|e| e.to_string());
        assert!(
            refused
                .as_deref()
                .is_some_and(|e| e.contains("default room \"general\"")
                    && e.contains("--default-room general")),
            "{refused:?}"
        );
        Ok(())
    }
}
