//! The single appender: group-committed appends with the client-offset dedup, retention,
//! imports, and reopening after an I/O failure.

use std::path::PathBuf;
use std::sync::PoisonError;

use redb::{Database, ReadableDatabase, ReadableTable};

use super::access::AccessChanges;
use super::record::decode_record;
use super::rooms::key_room;
use super::sessions::{self, SessionChanges};
use super::tables::MessageTables;
use super::{
    CLUSTER, CLUSTER_STREAM, META, META_LAST_ID, META_PRUNED_THROUGH, META_SKIPPED_THROUGH, Opener,
    SETTING_DEFAULT_ROOM, SETTINGS, SharedDb, StoreError, open_checked, write_err,
};
use crate::access::RoomEvent;
use crate::message::{AppendOutcome, ChatInput, MessageId, StoredMessage, StoredRow};

/// What an import did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ImportSummary {
    /// Stored under their original ids.
    pub kept_id: u64,
    /// Stored under new ids (their id was taken, or would break the order).
    pub new_id: u64,
    /// Already present (same id and content, or a retry by client offset): skipped.
    pub skipped: u64,
}

/// A row retention deletes: its id, its record if it decodes, and the room it is known to be
/// in (from the room's index) if that is how it was found.
struct Doomed {
    id: u64,
    record: Option<StoredMessage>,
    room: Option<Option<String>>,
}

/// The oldest rows received before `cutoff` (ms), at most `budget`. Rows that do not decode
/// have no receive time: ids are in receive order, so the next readable row decides for them
/// (too old: so are they).
fn older_than(
    tables: &MessageTables<'_>,
    cutoff: u64,
    budget: usize,
) -> Result<Vec<Doomed>, StoreError> {
    let mut doomed = Vec::new();
    let mut undecided = Vec::new();
    for entry in tables.messages.iter().map_err(write_err)? {
        if doomed.len() >= budget {
            break;
        }
        let (key, value) = entry.map_err(write_err)?;
        let id = key.value();
        match decode_record(value.value()) {
            Ok(record) if record.received_at_ms < cutoff => {
                doomed.append(&mut undecided);
                doomed.push(Doomed {
                    id,
                    record: Some(record),
                    room: None,
                });
            }
            Ok(_) => break,
            Err(_) => undecided.push(Doomed {
                id,
                record: None,
                room: None,
            }),
        }
    }
    doomed.truncate(budget);
    Ok(doomed)
}

/// In each room holding more than `keep` messages, its oldest beyond those, at most `budget`
/// in all.
fn beyond(tables: &MessageTables<'_>, keep: u64, budget: usize) -> Result<Vec<Doomed>, StoreError> {
    let mut doomed = Vec::new();
    for (key, excess) in tables.rooms.over(keep)? {
        let left = budget - doomed.len();
        if left == 0 {
            break;
        }
        let take = usize::try_from(excess).unwrap_or(usize::MAX).min(left);
        for id in tables.rooms.oldest(&key, take)? {
            doomed.push(Doomed {
                id,
                record: tables.record(id)?,
                room: Some(key_room(&key).map(String::from)),
            });
        }
    }
    Ok(doomed)
}

/// The single appender. Not `Clone`: whoever owns it is the only writer of the file.
pub struct StoreWriter {
    db: SharedDb,
    /// The id the next stored message gets; advanced only after a successful commit.
    next_id: u64,
    /// For errors and for reopening after an I/O failure.
    path: PathBuf,
    opener: Opener,
    /// Rooms retention left with no message, not yet taken ([`Self::take_emptied_rooms`]).
    emptied: Vec<Option<String>>,
    /// Ids retention deleted, not yet taken ([`Self::take_pruned_ids`]).
    pruned: Vec<u64>,
    /// What room events changed in committed transactions, not yet taken
    /// ([`Self::take_access_changes`]).
    access: AccessChanges,
}

impl StoreWriter {
    pub(super) fn new(db: SharedDb, last_id: u64, path: PathBuf, opener: Opener) -> Self {
        Self {
            db,
            next_id: last_id + 1,
            path,
            opener,
            emptied: Vec::new(),
            pruned: Vec::new(),
            access: AccessChanges::default(),
        }
    }

    /// What room events changed since the last call: the rooms' access state and the
    /// messages deletions erased (committed).
    pub fn take_access_changes(&mut self) -> AccessChanges {
        std::mem::take(&mut self.access)
    }

    /// The highest id assigned so far (0 for an empty database).
    pub fn last_id(&self) -> u64 {
        self.next_id - 1
    }

    /// Whether the database is open (false after a failed [`StoreWriter::reopen`]).
    pub fn is_open(&self) -> bool {
        self.db
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
    }

    /// Closes and reopens the database. redb refuses every operation after an I/O error
    /// until the file is reopened (which also runs its crash recovery), so the writer calls
    /// this after a failed commit. While it fails (the disk is still full), the store stays
    /// closed: reads and appends fail with [`StoreError::Closed`] and the next append retries.
    pub fn reopen(&mut self) -> Result<(), StoreError> {
        let mut slot = self.db.0.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(old) = slot.take() {
            // Closing a database that failed I/O reports that failure again; it is known.
            let _ = old.close();
        }
        let (db, last_id) = open_checked(&self.path, &self.opener)?;
        *slot = Some(db);
        // Nothing of a failed batch was committed; a successful one is on disk either way.
        self.next_id = last_id + 1;
        Ok(())
    }

    /// Deletes at most `max_rows` of the messages retention no longer keeps: those received
    /// before `older_than_ms`, then, in each room, those beyond its newest `keep_per_room`.
    /// Their dedup entries go with them, and each room records the highest id it lost. Returns
    /// how many rows it deleted (one durable transaction for each rule that deleted any) and the
    /// highest id deleted so far, ever, in any room (call again while it returns `max_rows`).
    pub fn prune(
        &mut self,
        keep_per_room: Option<u64>,
        older_than_ms: Option<u64>,
        max_rows: usize,
    ) -> Result<(usize, u64), StoreError> {
        let mut deleted = 0;
        if let Some(cutoff) = older_than_ms {
            deleted += self.prune_in(max_rows, |tables, budget| {
                older_than(tables, cutoff, budget)
            })?;
        }
        if let Some(keep) = keep_per_room
            && deleted < max_rows
        {
            deleted += self.prune_in(max_rows - deleted, |tables, budget| {
                beyond(tables, keep, budget)
            })?;
        }
        let through = self.db.with(|db| {
            let read = db.begin_read().map_err(super::read_err)?;
            let meta = read.open_table(META).map_err(super::read_err)?;
            Ok(meta
                .get(META_PRUNED_THROUGH)
                .map_err(super::read_err)?
                .map_or(0, |v| v.value()))
        })?;
        Ok((deleted, through))
    }

    /// Deletes what `choose` picks (at most `budget` rows) in one durable transaction, if it
    /// picks anything; returns how many.
    fn prune_in(
        &mut self,
        budget: usize,
        choose: impl FnOnce(&MessageTables<'_>, usize) -> Result<Vec<Doomed>, StoreError>,
    ) -> Result<usize, StoreError> {
        let last_id = self.last_id();
        let mut emptied = Vec::new();
        let mut pruned = Vec::new();
        let deleted = self.db.with(|db| {
            let write = db.begin_write().map_err(write_err)?;
            let deleted;
            {
                let mut tables = MessageTables::open(&write)?;
                let doomed = choose(&tables, budget)?;
                if doomed.is_empty() {
                    return Ok(0);
                }
                let mut highest = 0;
                for Doomed { id, record, room } in &doomed {
                    tables.remove(*id, record.as_ref(), room.as_ref().map(|r| r.as_deref()))?;
                    highest = highest.max(*id);
                }
                (emptied, _) = tables.finish()?;
                pruned = doomed.iter().map(|doomed| doomed.id).collect();
                let mut meta = write.open_table(META).map_err(write_err)?;
                let through = meta
                    .get(META_PRUNED_THROUGH)
                    .map_err(write_err)?
                    .map_or(0, |v| v.value());
                meta.insert(META_PRUNED_THROUGH, through.max(highest))
                    .map_err(write_err)?;
                // The deleted rows may include the newest: the id counter must survive.
                meta.insert(META_LAST_ID, last_id).map_err(write_err)?;
                deleted = doomed.len();
            }
            write.commit().map_err(write_err)?;
            Ok(deleted)
        })?;
        self.emptied.extend(emptied);
        self.pruned.extend(pruned);
        Ok(deleted)
    }

    /// The ids retention deleted since the last call (the tail cache forgets exactly these).
    pub fn take_pruned_ids(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.pruned)
    }

    /// The rooms retention left with no message since the last call (each once per time it
    /// was emptied): a room with neither messages nor members is forgotten.
    pub fn take_emptied_rooms(&mut self) -> Vec<Option<String>> {
        std::mem::take(&mut self.emptied)
    }

    /// Imports records in one durable transaction. Idempotent: a record whose id already
    /// holds the same content, or whose client offset and content are already stored, is
    /// skipped. A record keeps its id when that id is above every stored id (so an import
    /// into an empty database preserves ids) and at most [`MessageId::MAX`] (no client could
    /// hold a larger one); otherwise it gets the next id.
    pub fn import(&mut self, records: &[StoredRow]) -> Result<ImportSummary, StoreError> {
        let next_id = self.next_id;
        let mut changes = AccessChanges::default();
        let (summary, next_id) = self.db.with(|db| {
            let mut next_id = next_id;
            let mut summary = ImportSummary::default();
            let write = db.begin_write().map_err(write_err)?;
            {
                let mut tables = MessageTables::open(&write)?;
                for record in records {
                    let same_id = tables
                        .record(record.id.0)?
                        .is_some_and(|m| m.content == record.message.content);
                    let retry = match record.message.retry_key() {
                        Some(key) => tables.retry_of(&key)?.is_some(),
                        None => false,
                    };
                    if same_id || retry {
                        summary.skipped += 1;
                        continue;
                    }
                    let keeps_id = record.id.0 >= next_id && record.id <= MessageId::MAX;
                    // A deletion names its message by id: under a new id it would name
                    // whatever this file holds there. Its message came as a tombstone anyway.
                    if !keeps_id && matches!(record.message.event, Some(RoomEvent::Deleted { .. }))
                    {
                        tracing::warn!(
                            id = record.id.0,
                            "a deletion not imported: its ids are taken in this database"
                        );
                        summary.skipped += 1;
                        continue;
                    }
                    let id = if keeps_id {
                        summary.kept_id += 1;
                        record.id.0
                    } else {
                        summary.new_id += 1;
                        next_id
                    };
                    next_id = id + 1;
                    tables.insert(id, &record.message)?;
                }
                changes = tables.finish()?.1;
                let mut meta = write.open_table(META).map_err(write_err)?;
                meta.insert(META_LAST_ID, next_id - 1).map_err(write_err)?;
            }
            write.commit().map_err(write_err)?;
            Ok((summary, next_id))
        })?;
        self.next_id = next_id;
        self.access.absorb(changes);
        Ok(summary)
    }

    /// Stores rows that already have their ids (a cluster node applying the stream, in
    /// order), in one durable transaction; rows at or below the last id are skipped (already
    /// applied). Returns the rows stored. A jump over missing ids is kept as a hole (the stream
    /// deleted them by retention before this node saw them), and recorded in the same
    /// transaction as ids lost in rooms unknown ([`super::StoreReader::skipped_through`]).
    pub fn apply(&mut self, rows: &[StoredRow]) -> Result<usize, StoreError> {
        self.store_rows(rows, true, |_, id, next_id| Ok(id >= next_id))
    }

    /// Stores rows that already have their ids where the file has none (a cluster replica's
    /// holes, filled from the stream), below the last id as well as above it; rows whose id is
    /// taken are left alone. One durable transaction; returns the rows stored.
    pub fn fill(&mut self, rows: &[StoredRow]) -> Result<usize, StoreError> {
        self.store_rows(rows, false, |messages, id, _| {
            Ok(messages.get(id)?.is_none())
        })
    }

    /// Stores the rows `wanted` accepts (given the messages table, the row's id and the next
    /// id), with their dedup and room entries, in one durable transaction; returns how many.
    fn store_rows(
        &mut self,
        rows: &[StoredRow],
        record_jumps: bool,
        wanted: impl Fn(&redb::Table<u64, &'static [u8]>, u64, u64) -> Result<bool, redb::StorageError>,
    ) -> Result<usize, StoreError> {
        let next_id = self.next_id;
        let mut changes = AccessChanges::default();
        let (stored, next_id) = self.db.with(|db| {
            let mut next_id = next_id;
            let mut stored = 0;
            let mut skipped_through = 0;
            let write = db.begin_write().map_err(write_err)?;
            {
                let mut tables = MessageTables::open(&write)?;
                for row in rows {
                    if !wanted(&tables.messages, row.id.0, next_id).map_err(write_err)? {
                        continue;
                    }
                    if row.id.0 > next_id {
                        skipped_through = row.id.0 - 1;
                    }
                    tables.insert(row.id.0, &row.message)?;
                    next_id = next_id.max(row.id.0 + 1);
                    stored += 1;
                }
                changes = tables.finish()?.1;
                if record_jumps && skipped_through > 0 {
                    let mut meta = write.open_table(META).map_err(write_err)?;
                    let before = meta
                        .get(META_SKIPPED_THROUGH)
                        .map_err(write_err)?
                        .map_or(0, |v| v.value());
                    meta.insert(META_SKIPPED_THROUGH, before.max(skipped_through))
                        .map_err(write_err)?;
                }
            }
            write.commit().map_err(write_err)?;
            Ok((stored, next_id))
        })?;
        self.next_id = next_id;
        self.access.absorb(changes);
        Ok(stored)
    }

    /// Pins the default room's name: records it in a file that has none, refuses one that
    /// records another (its messages without a room are that room's; another name would move
    /// them).
    pub fn pin_default_room(&mut self, name: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        self.db.with(|db| {
            let write = db.begin_write().map_err(write_err)?;
            {
                let mut settings = write.open_table(SETTINGS).map_err(write_err)?;
                let recorded = settings
                    .get(SETTING_DEFAULT_ROOM)
                    .map_err(write_err)?
                    .map(|v| v.value().to_string());
                match recorded {
                    Some(recorded) if recorded == name => {}
                    Some(recorded) => {
                        return Err(StoreError::DefaultRoom {
                            path,
                            recorded,
                            asked: name.to_string(),
                        });
                    }
                    None => {
                        settings
                            .insert(SETTING_DEFAULT_ROOM, name)
                            .map_err(write_err)?;
                    }
                }
            }
            write.commit().map_err(write_err)
        })
    }

    /// Makes this file the replica of the stream `identity`: records it on a new file, checks
    /// it on a known one. Refuses a file of another stream, or one holding a single-node
    /// history (it would mix two logs' ids).
    pub fn claim_stream(&mut self, identity: &str) -> Result<(), StoreError> {
        let path = self.path.clone();
        let last_id = self.last_id();
        self.db.with(|db| {
            let write = db.begin_write().map_err(write_err)?;
            {
                let mut cluster = write.open_table(CLUSTER).map_err(write_err)?;
                let known = cluster
                    .get(CLUSTER_STREAM)
                    .map_err(write_err)?
                    .map(|v| v.value().to_string());
                match known {
                    Some(known) if known == identity => {}
                    Some(known) => {
                        return Err(StoreError::OtherLog {
                            path,
                            why: format!(
                                "is a replica of stream {known}, not of {identity} (the stream \
                                 was recreated, or --stream names another one)"
                            ),
                        });
                    }
                    None if last_id > 0 => {
                        return Err(StoreError::OtherLog {
                            path,
                            why: format!(
                                "holds a single-node history ({last_id} message ids), not a replica \
                                 of stream {identity}"
                            ),
                        });
                    }
                    None => {
                        cluster
                            .insert(CLUSTER_STREAM, identity)
                            .map_err(write_err)?;
                    }
                }
            }
            write.commit().map_err(write_err)
        })
    }

    /// Stores a batch in one write transaction with one durable commit (fsync).
    ///
    /// Each input is first checked against the dedup table: an input whose client offset is
    /// already stored with identical content is a [`AppendOutcome::Duplicate`] (also within the
    /// batch). All others get consecutive new ids. On error nothing of the batch is stored and
    /// the id counter is unchanged.
    pub fn append_batch(
        &mut self,
        inputs: &[ChatInput],
        received_at_ms: u64,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        self.commit(inputs, &SessionChanges::default(), received_at_ms)
    }

    /// [`StoreWriter::append_batch`], also recording changes to recovery sessions (seen,
    /// rooms joined and left) in the same durable commit.
    pub fn commit(
        &mut self,
        inputs: &[ChatInput],
        sessions: &SessionChanges,
        received_at_ms: u64,
    ) -> Result<Vec<AppendOutcome>, StoreError> {
        let (outcomes, next_id, changes) = self
            .db
            .with(|db| Self::append_in(db, self.next_id, inputs, sessions, received_at_ms))?;
        self.next_id = next_id;
        self.access.absorb(changes);
        Ok(outcomes)
    }

    /// Deletes the recovery sessions last seen before `before_ms`; returns how many.
    pub fn expire_sessions(&mut self, before_ms: u64) -> Result<usize, StoreError> {
        self.db.with(|db| {
            let write = db.begin_write().map_err(write_err)?;
            let expired = sessions::expire(&write, before_ms)?;
            write.commit().map_err(write_err)?;
            Ok(expired)
        })
    }

    fn append_in(
        db: &Database,
        mut next_id: u64,
        inputs: &[ChatInput],
        changes: &SessionChanges,
        received_at_ms: u64,
    ) -> Result<(Vec<AppendOutcome>, u64, AccessChanges), StoreError> {
        let mut outcomes = Vec::with_capacity(inputs.len());
        let access;
        let write = db.begin_write().map_err(write_err)?;
        sessions::write(&write, changes)?;
        {
            let mut tables = MessageTables::open(&write)?;
            for input in inputs {
                if let Some(key) = input.retry_key()
                    && let Some(id) = tables.retry_of(&key)?
                {
                    outcomes.push(AppendOutcome::Duplicate(MessageId(id)));
                    continue;
                }
                let id = next_id;
                next_id += 1;
                tables.insert(id, &StoredMessage::from_input(input, received_at_ms))?;
                outcomes.push(AppendOutcome::Stored(MessageId(id)));
            }
            access = tables.finish()?.1;
        }
        write.commit().map_err(write_err)?;
        Ok((outcomes, next_id, access))
    }
}

#[cfg(test)]
pub(super) mod tests {
    pub(in crate::storage) use crate::message::test_support::input;

    use super::super::tests::temp_db;
    use super::super::{Store, TEST_CACHE_BYTES};
    use super::*;

    #[test]
    fn appends_dedups_and_survives_reopen() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        {
            let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
            assert_eq!(writer.last_id(), 0);
            let out = writer.append_batch(
                &[
                    input("a", Some("o1")),
                    input("b", None),
                    input("a", Some("o1")),
                    input("other", Some("o1")),
                ],
                5,
            )?;
            use AppendOutcome::*;
            assert_eq!(
                out,
                vec![
                    Stored(MessageId(1)),
                    Stored(MessageId(2)),
                    Duplicate(MessageId(1)),
                    Stored(MessageId(3)),
                ]
            );
            let rows = reader.read_range(0, 10, 100, usize::MAX)?;
            let ids: Vec<u64> = rows.iter().map(|r| r.id.0).collect();
            assert_eq!(ids, vec![1, 2, 3]);
            assert_eq!(rows[2].message.content, "other");
            assert_eq!(rows[2].message.received_at_ms, 5);
            // bounded batches
            let rows = reader.read_range(1, 10, 1, usize::MAX)?;
            assert_eq!(rows.len(), 1);
            assert_eq!(rows[0].id, MessageId(2));
            assert!(reader.read_range(3, 3, 10, 10)?.is_empty());
            assert!(reader.read_range(u64::MAX, u64::MAX, 10, 10)?.is_empty());
        }
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        assert_eq!(writer.last_id(), 3);
        assert_eq!(reader.count()?, 3);
        let out = writer.append_batch(&[input("other", Some("o1")), input("c", None)], 6)?;
        assert_eq!(
            out,
            vec![
                AppendOutcome::Duplicate(MessageId(3)),
                AppendOutcome::Stored(MessageId(4))
            ]
        );
        Ok(())
    }

    /// Room `room`'s entry `event`, by `by`.
    fn entry(room: &str, by: &str, event: crate::access::RoomEvent) -> ChatInput {
        ChatInput {
            content: String::new(),
            client_offset: None,
            author: None,
            room: Some(room.into()),
            user: Some(by.into()),
            event: Some(event),
        }
    }

    #[test]
    fn a_deletion_leaves_a_tombstone_that_still_answers_retries() -> Result<(), StoreError> {
        use crate::access::RoomEvent;
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        let secret = ChatInput {
            user: Some("bob".into()),
            ..crate::message::test_support::input_in(Some("ops"), "secret", Some("o1"))
        };
        writer.append_batch(std::slice::from_ref(&secret), 5)?;
        let dedup = secret.dedup_key().map(|key| key.0);
        writer.append_batch(
            &[entry("ops", "bob", RoomEvent::Deleted { id: 1, dedup })],
            6,
        )?;
        let changes = writer.take_access_changes();
        assert_eq!(changes.erased, vec![1]);
        // The row keeps its id and room, nothing of what was said or by whom.
        let rows = reader.read_range(0, 10, 10, usize::MAX)?;
        assert_eq!(rows.len(), 2);
        assert!(rows[0].message.is_tombstone());
        assert!(rows[0].message.content.is_empty() && rows[0].message.user.is_none());
        assert_eq!(rows[0].message.room.as_deref(), Some("ops"));
        // A retry is answered with the original id, not stored again.
        assert_eq!(
            writer.append_batch(&[secret], 7)?,
            vec![AppendOutcome::Duplicate(MessageId(1))]
        );
        // History shows neither the tombstone nor the deletion; the room's counters still
        // count both rows (completeness checks stay exact).
        let (history, more) = reader.read_room_before(Some("ops"), None, 10)?;
        assert!(history.is_empty() && !more);
        assert_eq!(reader.room_stats(Some("ops"))?.map(|s| s.messages), Some(2));
        Ok(())
    }

    #[test]
    fn an_imported_deletion_whose_id_is_taken_erases_nothing() -> Result<(), StoreError> {
        use crate::access::RoomEvent;
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        writer.append_batch(
            &[crate::message::test_support::input_in(
                Some("ops"),
                "mine",
                None,
            )],
            1,
        )?;
        // Another server's export: its message 1 deleted by its entry 2.
        let deletion = StoredMessage::from_input(
            &entry("ops", "bob", RoomEvent::Deleted { id: 1, dedup: None }),
            2,
        );
        let summary = writer.import(&[StoredRow {
            id: MessageId(1),
            message: deletion,
        }])?;
        assert_eq!(summary.skipped, 1);
        let rows = reader.read_range(0, 10, 10, usize::MAX)?;
        assert_eq!(rows.len(), 1);
        assert_eq!(
            rows[0].message.content, "mine",
            "this file's message 1 is untouched"
        );
        Ok(())
    }

    #[test]
    fn room_events_change_the_access_state_in_their_commit() -> Result<(), StoreError> {
        use crate::access::RoomEvent;
        let (_dir, path) = temp_db();
        {
            let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
            let created = RoomEvent::Created {
                private: true,
                read_only: false,
            };
            writer.append_batch(
                &[
                    entry("ops", "alice", created.clone()),
                    entry("ops", "alice", RoomEvent::Invited { user: "bob".into() }),
                    entry(
                        "ops",
                        "alice",
                        RoomEvent::Banned {
                            user: "carol".into(),
                        },
                    ),
                    // A second creation changes nothing: the first in the log wins.
                    entry("ops", "mallory", created),
                ],
                5,
            )?;
            let changes = writer.take_access_changes();
            let ops = changes
                .rooms
                .get(&Some("ops".to_string()))
                .cloned()
                .unwrap_or_default();
            assert!(ops.private && ops.created == 1);
            assert_eq!(ops.standing("bob").role, Some(crate::access::Role::Member));
            assert!(ops.standing("carol").banned);
            assert_eq!(ops.standing("mallory").role, None);
            assert_eq!(changes.removed.len(), 1, "the ban removes carol's sockets");
            assert_eq!(
                reader.access_states()?,
                vec![(Some("ops".to_string()), ops)]
            );
        }
        // What the server loads at start.
        let (reader, _writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        let states = reader.access_states()?;
        assert_eq!(states.len(), 1);
        assert!(states[0].1.standing("carol").banned);
        Ok(())
    }

    #[test]
    fn retention_prunes_oldest_first_with_their_offsets() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        let epoch = reader.epoch()?;
        assert_ne!(epoch, 0);
        let inputs: Vec<ChatInput> = (1..=10)
            .map(|i| input(&format!("m{i}"), Some(&format!("o{i}"))))
            .collect();
        writer.append_batch(&inputs[..5], 100)?;
        writer.append_batch(&inputs[5..], 200)?;
        // Keep the newest 7, two rows per transaction.
        assert_eq!(writer.prune(Some(7), None, 2)?, (2, 2));
        assert_eq!(writer.prune(Some(7), None, 2)?, (1, 3));
        assert_eq!(writer.prune(Some(7), None, 2)?, (0, 3));
        assert_eq!((reader.oldest_id()?, reader.pruned_through()?), (4, 3));
        // Older than t=150 goes too.
        assert_eq!(writer.prune(None, Some(150), 100)?, (2, 5));
        assert_eq!(reader.oldest_id()?, 6);
        // A pruned offset is forgotten: sending it again stores a new message.
        let out = writer.append_batch(&[input("m1", Some("o1")), input("m6", Some("o6"))], 300)?;
        assert_eq!(
            out,
            vec![
                AppendOutcome::Stored(MessageId(11)),
                AppendOutcome::Duplicate(MessageId(6))
            ]
        );
        drop((reader, writer));
        let (reader, writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        assert_eq!((reader.epoch()?, writer.last_id()), (epoch, 11));
        Ok(())
    }

    #[test]
    fn retention_by_age_goes_past_a_row_that_does_not_decode() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        {
            let (_, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
            let inputs: Vec<ChatInput> = (1..=5).map(|i| input(&format!("m{i}"), None)).collect();
            writer.append_batch(&inputs, 100)?;
            writer.append_batch(&[input("new", None)], 5_000)?;
        }
        super::super::tests::overwrite_row(&path, 3, &[9, 1, 2]);
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        // Everything received before t=1000 goes, the unreadable row 3 included (row 4,
        // after it, is older than the cutoff); the newer row 6 stays.
        assert_eq!(writer.prune(None, Some(1_000), 100)?, (5, 5));
        assert_eq!(reader.oldest_id()?, 6);
        // An unreadable newest row is kept: nothing after it says it is old.
        drop((reader, writer));
        super::super::tests::overwrite_row(&path, 6, &[9, 9]);
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        assert_eq!(writer.prune(None, Some(10_000), 100)?, (0, 5));
        assert_eq!(reader.count()?, 1);
        Ok(())
    }

    #[test]
    fn ids_are_not_reused_after_retention_deletes_every_row() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        writer.append_batch(&[input("a", None), input("b", None), input("c", None)], 100)?;
        assert_eq!(writer.prune(None, Some(1_000), 100)?, (3, 3));
        assert_eq!(reader.newest_id()?, 0, "every row is gone");
        drop((reader, writer));
        let (_reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        assert_eq!(writer.last_id(), 3);
        let out = writer.append_batch(&[input("d", None)], 2_000)?;
        assert_eq!(out, vec![AppendOutcome::Stored(MessageId(4))]);
        Ok(())
    }
}
