//! Connection state recovery's tables: when each session's client was last seen, and the
//! rooms each session is in with their join marks, so a recovered socket is back in all of
//! them and gets exactly what it missed.

use redb::{ReadableTable, ReadableTableMetadata, TableDefinition, WriteTransaction};

use super::rooms::{key_room, room_key};
use super::{StoreError, write_err};

/// Private session id -> when its client was last seen (ms since the Unix epoch). Written when
/// a session is issued, when its socket closes, and once a minute for the sockets still
/// connected; never per message.
pub(super) const SESSIONS: TableDefinition<&str, u64> = TableDefinition::new("sessions");

/// `(session id, room key) -> join mark`: the rooms of each session (the default room's key
/// is `""`), written when the session is issued and when its socket joins or leaves a room.
pub(super) const SESSION_ROOMS: TableDefinition<(&str, &str), u64> =
    TableDefinition::new("session_rooms");

/// Private session id -> the verified user (a token's `sub`) whose session it is, written when
/// the session is issued: only that user can recover it. Anonymous sessions have no entry (and
/// a file written before identities existed has no table).
pub(super) const SESSION_USERS: TableDefinition<&str, &str> = TableDefinition::new("session_users");

/// Changes to recovery sessions, committed with a batch of appends.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct SessionChanges {
    /// Sessions seen now: `(pid, ms since the Unix epoch)`.
    pub seen: Vec<(String, u64)>,
    /// A session's room joined (`Some(mark)`) or left (`None`): `(pid, room, mark)`.
    pub rooms: Vec<(String, Option<String>, Option<u64>)>,
    /// Sessions issued to a verified user: `(pid, user)`.
    pub users: Vec<(String, String)>,
}

impl SessionChanges {
    /// Whether there is nothing to write.
    pub fn is_empty(&self) -> bool {
        self.seen.is_empty() && self.rooms.is_empty() && self.users.is_empty()
    }

    /// Adds `other`'s changes to these (one commit writes both).
    pub fn absorb(&mut self, other: SessionChanges) {
        // Destructured: a field added to the changes cannot be forgotten here.
        let SessionChanges { seen, rooms, users } = other;
        self.seen.extend(seen);
        self.rooms.extend(rooms);
        self.users.extend(users);
    }

    /// Forgets everything (the batch was written, or failed).
    pub fn clear(&mut self) {
        self.seen.clear();
        self.rooms.clear();
        self.users.clear();
    }

    /// How many changes, for batch sizing.
    pub fn len(&self) -> usize {
        self.seen.len() + self.rooms.len() + self.users.len()
    }
}

/// Writes `changes` in `write`.
pub(super) fn write(write: &WriteTransaction, changes: &SessionChanges) -> Result<(), StoreError> {
    if !changes.seen.is_empty() {
        let mut table = write.open_table(SESSIONS).map_err(write_err)?;
        for (pid, seen) in &changes.seen {
            table.insert(pid.as_str(), seen).map_err(write_err)?;
        }
    }
    if !changes.users.is_empty() {
        let mut table = write.open_table(SESSION_USERS).map_err(write_err)?;
        for (pid, user) in &changes.users {
            table
                .insert(pid.as_str(), user.as_str())
                .map_err(write_err)?;
        }
    }
    if !changes.rooms.is_empty() {
        let mut table = write.open_table(SESSION_ROOMS).map_err(write_err)?;
        for (pid, room, mark) in &changes.rooms {
            let key = (pid.as_str(), room_key(room.as_deref()));
            match mark {
                Some(mark) => table.insert(key, mark).map_err(write_err)?,
                None => table.remove(key).map_err(write_err)?,
            };
        }
    }
    Ok(())
}

/// Puts every session in the default room from the start (mark 0): a session issued before
/// rooms (schema 2) was in the one room there was, and must come back in it.
pub(super) fn all_in_default_room(write: &WriteTransaction) -> Result<(), StoreError> {
    let sessions = write.open_table(SESSIONS).map_err(write_err)?;
    let mut rooms = write.open_table(SESSION_ROOMS).map_err(write_err)?;
    for entry in sessions.iter().map_err(write_err)? {
        let (pid, _) = entry.map_err(write_err)?;
        rooms
            .insert((pid.value(), room_key(None)), 0)
            .map_err(write_err)?;
    }
    Ok(())
}

/// Deletes the sessions last seen before `before_ms`, with their rooms; returns how many.
pub(super) fn expire(write: &WriteTransaction, before_ms: u64) -> Result<usize, StoreError> {
    let mut sessions = write.open_table(SESSIONS).map_err(write_err)?;
    let mut rooms = write.open_table(SESSION_ROOMS).map_err(write_err)?;
    let mut users = write.open_table(SESSION_USERS).map_err(write_err)?;
    let mut expired = Vec::new();
    for entry in sessions.iter().map_err(write_err)? {
        let (pid, seen) = entry.map_err(write_err)?;
        if seen.value() < before_ms {
            expired.push(pid.value().to_string());
        }
    }
    let before = sessions.len().map_err(write_err)?;
    for pid in &expired {
        sessions.remove(pid.as_str()).map_err(write_err)?;
        users.remove(pid.as_str()).map_err(write_err)?;
        rooms
            .retain_in((pid.as_str(), "")..(pid.as_str(), "\u{10ffff}"), |_, _| {
                false
            })
            .map_err(write_err)?;
    }
    Ok((before - sessions.len().map_err(write_err)?) as usize)
}

/// The rooms of session `pid`, with their marks.
pub(super) fn rooms_of(
    table: &impl ReadableTable<(&'static str, &'static str), u64>,
    pid: &str,
) -> Result<Vec<(Option<String>, u64)>, redb::StorageError> {
    let mut rooms = Vec::new();
    for entry in table.range((pid, "")..=(pid, "\u{10ffff}"))? {
        let (key, mark) = entry?;
        let (_, room) = key.value();
        rooms.push((key_room(room).map(String::from), mark.value()));
    }
    Ok(rooms)
}
