//! Reads: replay range scans, history pages, and the counters `stats` and start-up need.

use std::sync::PoisonError;

use redb::{ReadableDatabase, ReadableTable, ReadableTableMetadata};

use super::record::decode_record;
use super::rooms::{self, ROOM_MESSAGES, ROOMS, RoomStats, key_room, room_key};
use super::sessions::{self, SESSION_ROOMS, SESSION_USERS, SESSIONS};
use super::{
    CacheStats, DEDUP, MESSAGES, META, META_EPOCH, META_PRUNED_THROUGH, META_SKIPPED_THROUGH,
    SETTING_DEFAULT_ROOM, SETTINGS, SharedDb, StoreError, read_err, write_err,
};
use crate::message::{MessageId, RetryKey, StoredMessage, StoredRow};

/// Row `id`'s record, or `None` (logged) if it does not decode: one unreadable row (written by
/// a newer version, say) must not stall every read that crosses it.
fn readable(id: u64, bytes: &[u8]) -> Option<StoredMessage> {
    match decode_record(bytes) {
        Ok(message) => Some(message),
        Err(source) => {
            tracing::error!("{}", StoreError::Record { id, source });
            None
        }
    }
}

/// Where one room's part of a replay stands: its room (`None`: the default room) and the id
/// after which its messages are wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoomCursor {
    /// The room.
    pub room: Option<String>,
    /// Its messages with larger ids are wanted.
    pub after: u64,
}

/// Read access for replays; cheap to clone, usable from any thread (blocking calls).
#[derive(Clone)]
pub struct StoreReader {
    pub(super) db: SharedDb,
}

impl StoreReader {
    /// Reads messages with ids in `(after, up_to]`, ascending, stopping after `max_count`
    /// rows or once `max_bytes` of content has been collected (at least one row is returned
    /// when any exists), so a replay of any length proceeds in bounded batches. A row that
    /// does not decode is logged and skipped.
    pub fn read_range(
        &self,
        after: u64,
        up_to: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRow>, StoreError> {
        let mut rows = Vec::new();
        let Some(first) = after.checked_add(1) else {
            return Ok(rows);
        };
        if first > up_to {
            return Ok(rows);
        }
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let table = read.open_table(MESSAGES).map_err(read_err)?;
            let mut bytes = 0usize;
            for entry in table.range(first..=up_to).map_err(read_err)? {
                let (key, value) = entry.map_err(read_err)?;
                let id = key.value();
                let Some(message) = readable(id, value.value()) else {
                    continue;
                };
                bytes += message.content.len();
                rows.push(StoredRow {
                    id: MessageId(id),
                    message,
                });
                if rows.len() >= max_count || bytes >= max_bytes {
                    break;
                }
            }
            Ok(rows)
        })
    }

    /// The newest `limit` messages with ids below `before` (all ids when `None`), ascending,
    /// and whether older ones exist. Unreadable rows are skipped, as in replay.
    pub fn read_before(
        &self,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<StoredRow>, bool), StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let table = read.open_table(MESSAGES).map_err(read_err)?;
            let mut rows = Vec::with_capacity(limit.min(1024));
            let mut range = table
                .range(..before.unwrap_or(u64::MAX))
                .map_err(read_err)?
                .rev();
            while rows.len() < limit {
                let Some(entry) = range.next() else { break };
                let (key, value) = entry.map_err(read_err)?;
                let id = key.value();
                if let Some(message) = readable(id, value.value()) {
                    rows.push(StoredRow {
                        id: MessageId(id),
                        message,
                    });
                }
            }
            let has_more = rows.len() == limit && range.next().is_some();
            rows.reverse();
            Ok((rows, has_more))
        })
    }

    /// The messages of the rooms in `rooms`, each after its cursor, with ids up to `through`,
    /// in id order: the rooms' ranges of the room table merged, at most `max_count` rows and
    /// about `max_bytes` of content (at least one when any exists). Reads only those rooms'
    /// rows, whatever the other rooms hold. Rows that do not decode are skipped.
    pub fn read_rooms(
        &self,
        rooms: &[RoomCursor],
        through: u64,
        max_count: usize,
        max_bytes: usize,
    ) -> Result<Vec<StoredRow>, StoreError> {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let index = read.open_table(ROOM_MESSAGES).map_err(read_err)?;
            let mut ranges = Vec::with_capacity(rooms.len());
            for cursor in rooms {
                let key = room_key(cursor.room.as_deref());
                let Some(first) = cursor.after.checked_add(1).filter(|f| *f <= through) else {
                    continue;
                };
                ranges.push(
                    index
                        .range((key, first)..=(key, through))
                        .map_err(read_err)?,
                );
            }
            // Each range's next row, and the ids of those rows, smallest first.
            let mut heads = Vec::with_capacity(ranges.len());
            let mut next = BinaryHeap::new();
            for (n, range) in ranges.iter_mut().enumerate() {
                let head = range.next().transpose().map_err(read_err)?;
                if let Some((key, _)) = &head {
                    next.push(Reverse((key.value().1, n)));
                }
                heads.push(head.map(|(_, record)| record));
            }
            let mut rows = Vec::new();
            let mut bytes = 0usize;
            while let Some(Reverse((id, n))) = next.pop() {
                let record = heads[n].take();
                if let Some((key, following)) = ranges[n].next().transpose().map_err(read_err)? {
                    next.push(Reverse((key.value().1, n)));
                    heads[n] = Some(following);
                }
                let Some(message) = record.and_then(|record| readable(id, record.value())) else {
                    continue;
                };
                bytes += message.content.len();
                rows.push(StoredRow {
                    id: MessageId(id),
                    message,
                });
                if rows.len() >= max_count || bytes >= max_bytes {
                    break;
                }
            }
            Ok(rows)
        })
    }

    /// Writes a consistent copy of the database as it is now into a new file at `dest` (which
    /// must not exist) while writes go on; returns how many messages it holds. Blocking.
    pub fn copy_to(&self, dest: &std::path::Path) -> Result<u64, StoreError> {
        super::snapshot::copy(&self.db, dest)
    }

    /// Every room's access state (rooms without one are public with no owner).
    pub fn access_states(
        &self,
    ) -> Result<Vec<(Option<String>, crate::access::RoomAccess)>, StoreError> {
        super::access::load(&self.db)
    }

    /// The newest `limit` chat messages of `room` with ids below `before` (all when `None`),
    /// ascending, and whether it has older ones: room events and deleted messages are not
    /// part of a room's history.
    pub fn read_room_before(
        &self,
        room: Option<&str>,
        before: Option<u64>,
        limit: usize,
    ) -> Result<(Vec<StoredRow>, bool), StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let index = read.open_table(ROOM_MESSAGES).map_err(read_err)?;
            let key = room_key(room);
            let Some(end) = before.unwrap_or(u64::MAX).checked_sub(1) else {
                return Ok((Vec::new(), false));
            };
            let mut rows = Vec::with_capacity(limit.min(1024));
            let mut range = index.range((key, 0)..=(key, end)).map_err(read_err)?.rev();
            while rows.len() < limit {
                let Some(entry) = range.next() else { break };
                let (key, record) = entry.map_err(read_err)?;
                let id = key.value().1;
                if let Some(message) = readable(id, record.value())
                    && message.event.is_none()
                {
                    rows.push(StoredRow {
                        id: MessageId(id),
                        message,
                    });
                }
            }
            let has_more = rows.len() == limit && range.next().is_some();
            rows.reverse();
            Ok((rows, has_more))
        })
    }

    /// The id just before the newest `n` messages of `rooms` together (0 when they hold no
    /// more than `n`): where a replay of "the newest `n`" starts. Reads index keys only, at
    /// most `n` per room.
    pub fn before_newest(&self, rooms: &[Option<String>], n: u64) -> Result<u64, StoreError> {
        let n = usize::try_from(n).unwrap_or(usize::MAX);
        if n == 0 {
            return self.newest_id();
        }
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let index = read.open_table(ROOM_MESSAGES).map_err(read_err)?;
            let mut newest = Vec::new();
            for room in rooms {
                let key = room_key(room.as_deref());
                for entry in index
                    .range((key, 0)..=(key, u64::MAX))
                    .map_err(read_err)?
                    .rev()
                    .take(n)
                {
                    newest.push(entry.map_err(read_err)?.0.value().1);
                }
            }
            newest.sort_unstable_by(|a, b| b.cmp(a));
            Ok(newest.get(n - 1).map_or(0, |nth| nth - 1))
        })
    }

    /// `room`'s counters, `None` if it never held a message.
    pub fn room_stats(&self, room: Option<&str>) -> Result<Option<RoomStats>, StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let rooms = read.open_table(ROOMS).map_err(read_err)?;
            rooms::stats_of(&rooms, room_key(room)).map_err(read_err)
        })
    }

    /// Up to `limit` rooms that hold or held messages, by name after `after` (the default
    /// room, keyed `""`, comes first), with their counters.
    pub fn rooms_after(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<(Option<String>, RoomStats)>, StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let rooms = read.open_table(ROOMS).map_err(read_err)?;
            let mut out = Vec::new();
            let range = match after {
                Some(after) => rooms
                    .range::<&str>((std::ops::Bound::Excluded(after), std::ops::Bound::Unbounded)),
                None => rooms.range::<&str>(..),
            }
            .map_err(read_err)?;
            for entry in range.take(limit) {
                let (key, value) = entry.map_err(read_err)?;
                out.push((
                    key_room(key.value()).map(String::from),
                    rooms::stats(value.value()),
                ));
            }
            Ok(out)
        })
    }

    /// The default room's name as the file records it (`None`: a file no server has pinned
    /// one in yet).
    pub fn default_room(&self) -> Result<Option<String>, StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let settings = match read.open_table(SETTINGS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(read_err(e)),
            };
            Ok(settings
                .get(SETTING_DEFAULT_ROOM)
                .map_err(read_err)?
                .map(|v| v.value().to_string()))
        })
    }

    /// The newest messages that fit in a budget, ascending: at most `max_count`, and no more
    /// than `max_bytes` as `cost` counts them (but at least the newest one). Reads newest
    /// first and stops at the budget, so filling a cache of the newest messages never holds
    /// more of the history than the cache keeps. Unreadable rows are skipped, as in replay.
    pub fn read_newest(
        &self,
        max_count: usize,
        max_bytes: usize,
        cost: impl Fn(&StoredMessage) -> usize,
    ) -> Result<Vec<StoredRow>, StoreError> {
        if max_count == 0 {
            return Ok(Vec::new());
        }
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let table = read.open_table(MESSAGES).map_err(read_err)?;
            let mut rows = Vec::new();
            let mut bytes = 0usize;
            for entry in table.iter().map_err(read_err)?.rev() {
                let (key, value) = entry.map_err(read_err)?;
                let id = key.value();
                let Some(message) = readable(id, value.value()) else {
                    continue;
                };
                let size = cost(&message);
                if !rows.is_empty() && bytes.saturating_add(size) > max_bytes {
                    break;
                }
                bytes = bytes.saturating_add(size);
                rows.push(StoredRow {
                    id: MessageId(id),
                    message,
                });
                if rows.len() >= max_count {
                    break;
                }
            }
            rows.reverse();
            Ok(rows)
        })
    }

    /// The stored message that a message with `key` would be a retry of.
    pub fn find_retry(&self, key: &RetryKey<'_>) -> Result<Option<MessageId>, StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let messages = read.open_table(MESSAGES).map_err(read_err)?;
            let dedup = read.open_multimap_table(DEDUP).map_err(read_err)?;
            Ok(super::find_retry(&messages, &dedup, key)
                .map_err(read_err)?
                .map(MessageId))
        })
    }

    /// When the client of recovery session `pid` was last seen, if the session exists.
    pub fn session(&self, pid: &str) -> Result<Option<u64>, StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let sessions = match read.open_table(SESSIONS) {
                Ok(table) => table,
                // A file written before sessions existed has no table yet.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(read_err(e)),
            };
            Ok(sessions.get(pid).map_err(read_err)?.map(|v| v.value()))
        })
    }

    /// The verified user whose session `pid` is (`None`: an anonymous or unknown session).
    pub fn session_user(&self, pid: &str) -> Result<Option<String>, StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let users = match read.open_table(SESSION_USERS) {
                Ok(table) => table,
                // No session of a verified user was ever issued from this file.
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
                Err(e) => return Err(read_err(e)),
            };
            Ok(users
                .get(pid)
                .map_err(read_err)?
                .map(|v| v.value().to_string()))
        })
    }

    /// The ranges of ids in `from..=through` that no row has, ascending (as `(first, last)`):
    /// the holes of a cluster replica, whose ids are the stream's contiguous sequences. Reads
    /// the keys of that range once.
    pub fn missing_ids(&self, from: u64, through: u64) -> Result<Vec<(u64, u64)>, StoreError> {
        let mut holes = Vec::new();
        if from > through {
            return Ok(holes);
        }
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let table = read.open_table(MESSAGES).map_err(read_err)?;
            let mut expected = from;
            for entry in table.range(from..=through).map_err(read_err)? {
                let id = entry.map_err(read_err)?.0.value();
                if id > expected {
                    holes.push((expected, id - 1));
                }
                expected = id + 1;
            }
            if expected <= through {
                holes.push((expected, through));
            }
            Ok(holes)
        })
    }

    /// The rooms of recovery session `pid`, with their join marks (none for an unknown
    /// session).
    pub fn session_rooms(&self, pid: &str) -> Result<Vec<(Option<String>, u64)>, StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let table = match read.open_table(SESSION_ROOMS) {
                Ok(table) => table,
                Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
                Err(e) => return Err(read_err(e)),
            };
            sessions::rooms_of(&table, pid).map_err(read_err)
        })
    }

    /// The highest id stored (0 when empty).
    pub fn newest_id(&self) -> Result<u64, StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let table = read.open_table(MESSAGES).map_err(read_err)?;
            Ok(table
                .last()
                .map_err(read_err)?
                .map(|(k, _)| k.value())
                .unwrap_or(0))
        })
    }

    /// Closes the database for every handle (call it after the writer has stopped); later
    /// reads and writes fail with [`StoreError::Closed`]. Waits for reads in progress.
    pub fn close(&self) -> Result<(), StoreError> {
        let taken = self
            .db
            .0
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match taken {
            Some(db) => db.close().map_err(write_err),
            None => Ok(()),
        }
    }

    /// What the page cache holds now and how it has served reads; `None` once closed.
    pub fn cache_stats(&self) -> Option<CacheStats> {
        self.db.cache_stats()
    }

    /// The database's epoch (see [`StoreReader::epoch`]); written when the file is created.
    pub fn epoch(&self) -> Result<u64, StoreError> {
        self.meta(META_EPOCH)
    }

    /// The highest id retention has deleted (0: none). A client whose offset is below it
    /// cannot get a complete history.
    pub fn pruned_through(&self) -> Result<u64, StoreError> {
        self.meta(META_PRUNED_THROUGH)
    }

    /// A cluster replica's highest id that it never applied because the stream had deleted
    /// it first (0: none); its room is unknown, so every room may have lost it.
    pub fn skipped_through(&self) -> Result<u64, StoreError> {
        self.meta(META_SKIPPED_THROUGH)
    }

    /// Whether any of `rooms` (with their join marks) lost, to retention, a message above
    /// `after` (or above its mark): a replay of them from `after` is then not complete.
    pub fn lost_any(
        &self,
        rooms: &[(Option<String>, u64)],
        after: u64,
    ) -> Result<bool, StoreError> {
        let skipped = self.skipped_through()?;
        for (room, mark) in rooms {
            let above = after.max(*mark);
            if skipped > above {
                return Ok(true);
            }
            if let Some(stats) = self.room_stats(room.as_deref())?
                && stats.pruned_through > above
            {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn meta(&self, key: &str) -> Result<u64, StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let meta = read.open_table(META).map_err(read_err)?;
            Ok(meta.get(key).map_err(read_err)?.map_or(0, |v| v.value()))
        })
    }

    /// The lowest stored id (0 when empty).
    pub fn oldest_id(&self) -> Result<u64, StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let table = read.open_table(MESSAGES).map_err(read_err)?;
            Ok(table
                .first()
                .map_err(read_err)?
                .map(|(k, _)| k.value())
                .unwrap_or(0))
        })
    }

    /// The number of stored messages.
    pub fn count(&self) -> Result<u64, StoreError> {
        self.db.with(|db| {
            let read = db.begin_read().map_err(read_err)?;
            let table = read.open_table(MESSAGES).map_err(read_err)?;
            table.len().map_err(read_err)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{overwrite_row, temp_db};
    use super::super::{Store, TEST_CACHE_BYTES, writer::tests::input};
    use super::*;
    use crate::message::ChatInput;

    #[test]
    fn unreadable_rows_are_skipped_by_replay() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        {
            let (_, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
            writer.append_batch(&[input("a", None), input("b", None), input("c", None)], 1)?;
        }
        // A row from a future format version, as a downgrade would leave it.
        overwrite_row(&path, 2, &[9, 1, 2]);
        let (reader, _) = Store::open(&path, TEST_CACHE_BYTES)?;
        let ids: Vec<u64> = reader
            .read_range(0, 3, 10, usize::MAX)?
            .iter()
            .map(|r| r.id.0)
            .collect();
        assert_eq!(ids, vec![1, 3]);
        Ok(())
    }

    #[test]
    fn history_pages_walk_backwards() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        let inputs: Vec<ChatInput> = (1..=7).map(|i| input(&format!("m{i}"), None)).collect();
        writer.append_batch(&inputs, 1)?;
        let ids = |rows: &[StoredRow]| rows.iter().map(|r| r.id.0).collect::<Vec<_>>();
        let (rows, more) = reader.read_before(None, 3)?;
        assert_eq!((ids(&rows), more), (vec![5, 6, 7], true));
        let (rows, more) = reader.read_before(Some(5), 3)?;
        assert_eq!((ids(&rows), more), (vec![2, 3, 4], true));
        let (rows, more) = reader.read_before(Some(2), 3)?;
        assert_eq!((ids(&rows), more), (vec![1], false));
        let (rows, more) = reader.read_before(Some(4), 3)?;
        assert_eq!((ids(&rows), more), (vec![1, 2, 3], false));
        Ok(())
    }

    #[test]
    fn the_newest_rows_are_read_newest_first_up_to_a_budget() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        let inputs: Vec<ChatInput> = (1..=6).map(|i| input(&"x".repeat(i * 10), None)).collect();
        writer.append_batch(&inputs, 1)?;
        let ids = |rows: &[StoredRow]| rows.iter().map(|r| r.id.0).collect::<Vec<_>>();
        let size = |m: &StoredMessage| m.content.len();
        // 60 + 50 fit in 115 bytes; 40 more would not.
        assert_eq!(ids(&reader.read_newest(10, 115, size)?), vec![5, 6]);
        assert_eq!(
            ids(&reader.read_newest(3, usize::MAX, size)?),
            vec![4, 5, 6]
        );
        // The newest one always, even over the budget; nothing when no count is allowed.
        assert_eq!(ids(&reader.read_newest(10, 1, size)?), vec![6]);
        assert!(reader.read_newest(0, usize::MAX, size)?.is_empty());
        Ok(())
    }

    #[test]
    fn missing_ids_are_the_holes_of_a_range() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        let rows = |ids: &[u64]| -> Vec<StoredRow> {
            ids.iter()
                .map(|&id| StoredRow {
                    id: MessageId(id),
                    message: crate::message::StoredMessage::from_input(&input("x", None), 0),
                })
                .collect()
        };
        assert!(!reader.lost_any(&[(None, 0)], 0)?);
        writer.apply(&rows(&[2, 3, 6, 7, 10]))?;
        assert_eq!(reader.missing_ids(1, 10)?, vec![(1, 1), (4, 5), (8, 9)]);
        // The jumps are ids lost in rooms unknown: any room's replay from below 9 may lack one.
        assert_eq!(reader.skipped_through()?, 9);
        assert!(reader.lost_any(&[(Some("dev".into()), 0)], 8)?);
        assert!(!reader.lost_any(&[(Some("dev".into()), 0)], 9)?);
        assert!(
            !reader.lost_any(&[(None, 9)], 0)?,
            "joined at 9: nothing lost since"
        );
        assert_eq!(reader.missing_ids(2, 7)?, vec![(4, 5)]);
        assert_eq!(reader.missing_ids(6, 12)?, vec![(8, 9), (11, 12)]);
        assert!(reader.missing_ids(2, 3)?.is_empty());
        assert!(reader.missing_ids(5, 4)?.is_empty());
        writer.fill(&rows(&[4, 5]))?;
        assert_eq!(reader.skipped_through()?, 9, "a fill is not a jump");
        Ok(())
    }
}
