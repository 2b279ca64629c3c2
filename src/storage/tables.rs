//! The tables a message lives in, opened together in one write transaction: its row, its
//! dedup entry and its room's index entry and counters are always written, and deleted,
//! together, by the one [`MessageTables::insert`] and [`MessageTables::remove`]. A room
//! event's row also changes what it says in the same transaction: a room's access state, or
//! the row of the message a deletion erases (a tombstone in its place).

use redb::{MultimapTable, ReadableTable, Table, WriteTransaction};

use super::access::{AccessChanges, AccessTable};
use super::record::{decode_record, encode_record};
use super::rooms::RoomIndex;
use super::{DEDUP, MESSAGES, StoreError, find_retry, write_err};
use crate::access::{Removal, RoomEvent};
use crate::message::{DedupKey, RetryKey, StoredMessage};

/// See the module docs.
pub(super) struct MessageTables<'txn> {
    pub(super) messages: Table<'txn, u64, &'static [u8]>,
    dedup: MultimapTable<'txn, u128, u64>,
    pub(super) rooms: RoomIndex<'txn>,
    access: AccessTable<'txn>,
}

impl<'txn> MessageTables<'txn> {
    /// Opens them in `write`.
    pub(super) fn open(write: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            messages: write.open_table(MESSAGES).map_err(write_err)?,
            dedup: write.open_multimap_table(DEDUP).map_err(write_err)?,
            rooms: RoomIndex::open(write)?,
            access: AccessTable::open(write)?,
        })
    }

    /// Stores `message` as row `id`, and, for a room event, what it changes.
    pub(super) fn insert(&mut self, id: u64, message: &StoredMessage) -> Result<(), StoreError> {
        self.store(id, message)?;
        let room = message.room.as_deref();
        match &message.event {
            None | Some(RoomEvent::Erased { .. }) => Ok(()),
            Some(RoomEvent::Deleted { id: target, dedup }) => {
                self.erase(*target, room, dedup.map(DedupKey))
            }
            Some(event) => {
                let by = message.user.as_deref();
                self.access
                    .changes
                    .removed
                    .extend(Removal::of(id, room, by, event));
                self.access
                    .update(room, |access| access.apply(id, by, event))
            }
        }
    }

    fn store(&mut self, id: u64, message: &StoredMessage) -> Result<(), StoreError> {
        let bytes = encode_record(message);
        self.messages
            .insert(id, bytes.as_slice())
            .map_err(write_err)?;
        if let Some(key) = message.dedup_index_key() {
            self.dedup.insert(key.as_u128(), id).map_err(write_err)?;
        }
        self.rooms.add(message.room.as_deref(), id, &bytes)
    }

    /// Replaces message `id` of `room` with its tombstone: its content, author and sender are
    /// gone, its id, room and dedup key stay. A row of another room, or one already erased, is
    /// left alone. A missing row (a replica rebuilt from a stream that no longer holds it)
    /// gets the tombstone, with `dedup`, so the replica is the same as the others.
    fn erase(
        &mut self,
        id: u64,
        room: Option<&str>,
        dedup: Option<DedupKey>,
    ) -> Result<(), StoreError> {
        match self.record(id)? {
            Some(record) if record.room.as_deref() != room || record.is_tombstone() => Ok(()),
            Some(record) => {
                let bytes = encode_record(&record.tombstone());
                self.messages
                    .insert(id, bytes.as_slice())
                    .map_err(write_err)?;
                self.rooms.replace(room, id, &bytes)?;
                self.access.changes.erased.push(id);
                Ok(())
            }
            None if self.messages.get(id).map_err(write_err)?.is_some() => Ok(()),
            None => {
                self.store(id, &StoredMessage::erased(room.map(String::from), dedup))?;
                self.access.changes.erased.push(id);
                Ok(())
            }
        }
    }

    /// Deletes row `id` (retention), with its dedup and index entries when its record, read
    /// before, says where they are (`room` is the room it is known to be in, if the record does
    /// not decode).
    pub(super) fn remove(
        &mut self,
        id: u64,
        record: Option<&StoredMessage>,
        room: Option<Option<&str>>,
    ) -> Result<(), StoreError> {
        self.messages.remove(id).map_err(write_err)?;
        if let Some(key) = record.and_then(StoredMessage::dedup_index_key) {
            self.dedup.remove(key.as_u128(), id).map_err(write_err)?;
        }
        match record.map(|r| r.room.as_deref()).or(room) {
            Some(room) => self.rooms.prune(room, id),
            None => {
                // Neither its record nor its caller says which room it was in: its index
                // entry stays, pointing at nothing (readers skip it).
                tracing::warn!(id, "deleted an unreadable message whose room is unknown");
                Ok(())
            }
        }
    }

    /// Row `id`'s record, if the row exists and decodes.
    pub(super) fn record(&self, id: u64) -> Result<Option<StoredMessage>, StoreError> {
        Ok(self
            .messages
            .get(id)
            .map_err(write_err)?
            .and_then(|row| decode_record(row.value()).ok()))
    }

    /// The id of the stored message that a message with `key` would be a retry of.
    pub(super) fn retry_of(&self, key: &RetryKey<'_>) -> Result<Option<u64>, StoreError> {
        find_retry(&self.messages, &self.dedup, key).map_err(write_err)
    }

    /// Writes the rooms' counters; call before the transaction commits. Returns the rooms
    /// left with no message, and what room events changed.
    pub(super) fn finish(self) -> Result<(Vec<Option<String>>, AccessChanges), StoreError> {
        Ok((self.rooms.finish()?, self.access.changes))
    }
}
