//! The rooms' access state on disk (`room_access`: room key -> postcard [`RoomAccess`]) and
//! what a room event does to the tables within the transaction that stores it: the state it
//! changes, the message a deletion erases.

use std::collections::BTreeMap;

use redb::{ReadableDatabase, ReadableTable, Table, TableDefinition, WriteTransaction};

use super::rooms::{key_room, room_key};
use super::{SharedDb, StoreError, read_err, write_err};
use crate::access::{Removal, RoomAccess};

/// `room key -> postcard(RoomAccess)`: rooms that were created or have users with a role, a
/// ban or a mute. A room without a row is public with no owner.
pub(super) const ROOM_ACCESS: TableDefinition<&str, &[u8]> = TableDefinition::new("room_access");

/// What one transaction changed that the writer must tell the rest of the server after the
/// commit: the rooms' new access state, and the ids of the messages it erased.
#[derive(Debug, Default)]
pub struct AccessChanges {
    /// Each changed room's state after the transaction, by room key (`None`: the default room).
    pub rooms: BTreeMap<Option<String>, RoomAccess>,
    /// Messages deleted (their rows are tombstones now).
    pub erased: Vec<u64>,
    /// Users kicked or banned from rooms, in log order.
    pub removed: Vec<Removal>,
}

impl AccessChanges {
    /// Whether there is nothing to tell.
    pub fn is_empty(&self) -> bool {
        self.rooms.is_empty() && self.erased.is_empty() && self.removed.is_empty()
    }

    /// Adds `later`'s changes (they happened after these).
    pub fn absorb(&mut self, later: AccessChanges) {
        self.rooms.extend(later.rooms);
        self.erased.extend(later.erased);
        self.removed.extend(later.removed);
    }
}

/// The access table within one write transaction, with the rooms changed so far.
pub(super) struct AccessTable<'txn> {
    table: Table<'txn, &'static str, &'static [u8]>,
    pub(super) changes: AccessChanges,
}

impl<'txn> AccessTable<'txn> {
    pub(super) fn open(write: &'txn WriteTransaction) -> Result<Self, StoreError> {
        Ok(Self {
            table: write.open_table(ROOM_ACCESS).map_err(write_err)?,
            changes: AccessChanges::default(),
        })
    }

    fn get(&self, room: Option<&str>) -> Result<RoomAccess, StoreError> {
        if let Some(access) = self.changes.rooms.get(&room.map(String::from)) {
            return Ok(access.clone());
        }
        Ok(self
            .table
            .get(room_key(room))
            .map_err(write_err)?
            .map(|value| postcard::from_bytes(value.value()))
            .transpose()
            .map_err(|e| StoreError::AccessState {
                room: room_key(room).to_string(),
                reason: e.to_string(),
            })?
            .unwrap_or_default())
    }

    /// Changes room `room`'s state with `change`, writing it if it changed.
    pub(super) fn update(
        &mut self,
        room: Option<&str>,
        change: impl FnOnce(&mut RoomAccess) -> bool,
    ) -> Result<(), StoreError> {
        let mut access = self.get(room)?;
        if !change(&mut access) {
            return Ok(());
        }
        let key = room_key(room);
        if access.is_default() {
            self.table.remove(key).map_err(write_err)?;
        } else {
            let bytes =
                postcard::to_extend(&access, Vec::new()).map_err(|e| StoreError::AccessState {
                    room: key.to_string(),
                    reason: e.to_string(),
                })?;
            self.table
                .insert(key, bytes.as_slice())
                .map_err(write_err)?;
        }
        self.changes.rooms.insert(room.map(String::from), access);
        Ok(())
    }
}

/// Every room's access state in the file, for the server's in-memory map at start.
pub(super) fn load(db: &SharedDb) -> Result<Vec<(Option<String>, RoomAccess)>, StoreError> {
    db.with(|db| {
        let read = db.begin_read().map_err(read_err)?;
        let table = match read.open_table(ROOM_ACCESS) {
            Ok(table) => table,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(read_err(e)),
        };
        let mut rooms = Vec::new();
        for entry in table.iter().map_err(read_err)? {
            let (key, value) = entry.map_err(read_err)?;
            match postcard::from_bytes::<RoomAccess>(value.value()) {
                Ok(access) => rooms.push((key_room(key.value()).map(String::from), access)),
                Err(e) => {
                    // One unreadable row must not open every other room: refuse to start.
                    return Err(StoreError::AccessState {
                        room: key.value().to_string(),
                        reason: e.to_string(),
                    });
                }
            }
        }
        Ok(rooms)
    })
}
