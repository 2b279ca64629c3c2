//! Schema migrations. Each step builds what its schema adds from the messages table, in
//! transactions of [`MIGRATION_BATCH`] rows (bounded memory, and resumable: a crash keeps what
//! was committed, and a marker says where to go on); until a step's last commit the file is a
//! valid file of the schema before it.
//!
//! - 1 → 2: the dedup index keyed on offset and content (`client_offsets`, offset → ids,
//!   is dropped).
//! - 2 → 3: the rooms' tables (every message of a schema-2 file is the default room's).
//! - 3 → 4: the rooms' access state (`room_access`), empty: no room was created or moderated
//!   before it, so nothing is built and no row is read. It is a schema step all the same, so
//!   that a build from before access rules refuses the file instead of opening its private
//!   rooms to everyone.

use std::path::Path;
use std::time::Instant;

use redb::{Database, MultimapTableDefinition, ReadableDatabase, ReadableTable, WriteTransaction};

use super::record::{decode_record, encode_record};
use super::rooms::RoomIndex;
use super::sessions;
use super::{
    DEDUP, MESSAGES, META, META_SCHEMA_VERSION, SCHEMA_VERSION, StoreError, read_err, write_err,
};
use crate::message::StoredMessage;

/// Rows indexed per transaction.
const MIGRATION_BATCH: usize = 10_000;

/// How far the step under way has gone (the last id indexed); present only during a step.
const META_MIGRATED_THROUGH: &str = "migrated_through";
/// The same, as the first build with schema 2 named it.
const META_DEDUP_MIGRATED_THROUGH: &str = "dedup_migrated_through";

/// Schema 1's dedup index, dropped once `dedup` is built.
const LEGACY_CLIENT_OFFSETS: MultimapTableDefinition<&str, u64> =
    MultimapTableDefinition::new("client_offsets");

/// Brings a file of schema `from` to [`SCHEMA_VERSION`].
pub(super) fn migrate(db: &Database, path: &Path, from: u64) -> Result<(), StoreError> {
    if from < 2 {
        step(db, path, 2, "the dedup index", |write, rows| {
            let mut dedup = write.open_multimap_table(DEDUP).map_err(write_err)?;
            for (id, stored) in rows {
                if let Some(key) = stored.dedup_key() {
                    dedup.insert(key.as_u128(), *id).map_err(write_err)?;
                }
            }
            Ok(())
        })?;
    }
    if from < 3 {
        step(db, path, 3, "the rooms' tables", |write, rows| {
            let mut index = RoomIndex::open(write)?;
            for (id, stored) in rows {
                index.add(stored.room.as_deref(), *id, &encode_record(stored))?;
            }
            index.finish().map(drop)
        })?;
    }
    if from < 4 {
        let write = db.begin_write().map_err(write_err)?;
        write
            .open_table(super::access::ROOM_ACCESS)
            .map_err(write_err)?;
        write
            .open_table(META)
            .map_err(write_err)?
            .insert(META_SCHEMA_VERSION, 4)
            .map_err(write_err)?;
        write.commit().map_err(write_err)?;
        tracing::info!(db = %path.display(), "migrated the database to schema 4: rooms' access state");
    }
    debug_assert_eq!(SCHEMA_VERSION, 4, "a new schema needs a step here");
    Ok(())
}

/// One step to schema `to`: `index` gets every readable row, a batch at a time, in the
/// batch's transaction.
fn step(
    db: &Database,
    path: &Path,
    to: u64,
    what: &str,
    mut index: impl FnMut(&WriteTransaction, &[(u64, StoredMessage)]) -> Result<(), StoreError>,
) -> Result<(), StoreError> {
    let total = {
        let read = db.begin_read().map_err(read_err)?;
        let messages = read.open_table(MESSAGES).map_err(read_err)?;
        redb::ReadableTableMetadata::len(&messages).map_err(read_err)?
    };
    tracing::info!(
        db = %path.display(),
        messages = total,
        "migrating the database to schema {to}: building {what}"
    );
    let started = Instant::now();
    loop {
        let write = db.begin_write().map_err(write_err)?;
        let after = {
            let meta = write.open_table(META).map_err(write_err)?;
            meta.get(META_MIGRATED_THROUGH)
                .map_err(write_err)?
                .map_or(0, |v| v.value())
        };
        let mut rows = Vec::new();
        let mut last = None;
        let mut seen = 0;
        {
            let messages = write.open_table(MESSAGES).map_err(write_err)?;
            for entry in messages
                .range(after.saturating_add(1)..)
                .map_err(write_err)?
            {
                let (key, value) = entry.map_err(write_err)?;
                let id = key.value();
                match decode_record(value.value()) {
                    Ok(stored) => rows.push((id, stored)),
                    // It could not be found by the old index either.
                    Err(e) => tracing::warn!(id, "stored message is unreadable: {e}"),
                }
                last = Some(id);
                seen += 1;
                if seen >= MIGRATION_BATCH {
                    break;
                }
            }
        }
        index(&write, &rows)?;
        let done = seen < MIGRATION_BATCH;
        {
            let mut meta = write.open_table(META).map_err(write_err)?;
            if done {
                meta.remove(META_MIGRATED_THROUGH).map_err(write_err)?;
                meta.remove(META_DEDUP_MIGRATED_THROUGH)
                    .map_err(write_err)?;
                meta.insert(META_SCHEMA_VERSION, to).map_err(write_err)?;
            } else if let Some(last) = last {
                meta.insert(META_MIGRATED_THROUGH, last)
                    .map_err(write_err)?;
            }
        }
        if done && to == 3 {
            sessions::all_in_default_room(&write)?;
        }
        if done && to == 2 {
            write
                .delete_multimap_table(LEGACY_CLIENT_OFFSETS)
                .map_err(write_err)?;
        }
        write.commit().map_err(write_err)?;
        if done {
            break;
        }
    }
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        "database migrated to schema {to}"
    );
    Ok(())
}
