//! A consistent copy of the database while it serves (`GET /backup` on the admin port): every
//! table read in one read transaction, a snapshot (redb's writes go on meanwhile and are not
//! in it), and written into a new file, which a server opens like the original: the same
//! epoch, ids, rooms, sessions and access state.

use std::collections::BTreeSet;
use std::path::Path;

use redb::{
    Database, Key, MultimapTableDefinition, MultimapTableHandle, ReadTransaction, ReadableDatabase,
    ReadableMultimapTable, ReadableTable, ReadableTableMetadata, TableDefinition, TableError,
    TableHandle, Value, WriteTransaction,
};

use super::access::ROOM_ACCESS;
use super::rooms::{ROOM_MESSAGES, ROOMS};
use super::sessions::{SESSION_ROOMS, SESSION_USERS, SESSIONS};
use super::{CLUSTER, DEDUP, MESSAGES, META, SETTINGS, SharedDb, StoreError, read_err, write_err};

/// Copies tables from one transaction into another, noting the names it copied.
struct Copier<'a> {
    read: &'a ReadTransaction,
    write: &'a WriteTransaction,
    copied: BTreeSet<String>,
}

impl Copier<'_> {
    /// Copies every row of `definition` (nothing if `read` lacks it).
    fn table<K: Key + 'static, V: Value + 'static>(
        &mut self,
        definition: TableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        self.copied.insert(definition.name().to_string());
        let source = match self.read.open_table(definition) {
            Ok(source) => source,
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(read_err(e)),
        };
        let mut target = self.write.open_table(definition).map_err(write_err)?;
        for entry in source.iter().map_err(read_err)? {
            let (key, value) = entry.map_err(read_err)?;
            target
                .insert(key.value(), value.value())
                .map_err(write_err)?;
        }
        Ok(())
    }

    /// [`Self::table`] for a multimap table.
    fn multimap<K: Key + 'static, V: Key + 'static>(
        &mut self,
        definition: MultimapTableDefinition<K, V>,
    ) -> Result<(), StoreError> {
        self.copied.insert(definition.name().to_string());
        let source = match self.read.open_multimap_table(definition) {
            Ok(source) => source,
            Err(TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(read_err(e)),
        };
        let mut target = self
            .write
            .open_multimap_table(definition)
            .map_err(write_err)?;
        for entry in source.iter().map_err(read_err)? {
            let (key, values) = entry.map_err(read_err)?;
            for value in values {
                let value = value.map_err(read_err)?;
                target
                    .insert(key.value(), value.value())
                    .map_err(write_err)?;
            }
        }
        Ok(())
    }
}

/// Writes a copy of `db` as it is now into a new database file at `dest` (which must not
/// exist); returns how many messages the copy holds.
pub(super) fn copy(db: &SharedDb, dest: &Path) -> Result<u64, StoreError> {
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(dest)
        .map_err(|e| StoreError::Open {
            path: dest.to_path_buf(),
            reason: e.to_string(),
        })?;
    let open_error = |reason: String| StoreError::Open {
        path: dest.to_path_buf(),
        reason,
    };
    let backend = redb::backends::FileBackend::new(file).map_err(|e| open_error(e.to_string()))?;
    let copy = Database::builder()
        .create_with_backend(backend)
        .map_err(|e| open_error(e.to_string()))?;
    db.with(|db| {
        let read = db.begin_read().map_err(read_err)?;
        let write = copy.begin_write().map_err(write_err)?;
        let mut copier = Copier {
            read: &read,
            write: &write,
            copied: BTreeSet::new(),
        };
        copier.table(MESSAGES)?;
        copier.multimap(DEDUP)?;
        copier.table(META)?;
        copier.table(CLUSTER)?;
        copier.table(SETTINGS)?;
        copier.table(ROOM_MESSAGES)?;
        copier.table(ROOMS)?;
        copier.table(ROOM_ACCESS)?;
        copier.table(SESSIONS)?;
        copier.table(SESSION_ROOMS)?;
        copier.table(SESSION_USERS)?;
        let messages = read
            .open_table(MESSAGES)
            .map_err(read_err)?
            .len()
            .map_err(read_err)?;
        // A table this list does not name (a later schema's, written here by mistake) would
        // be left out silently: refuse the copy instead.
        let missing: Vec<String> = table_names(&read)?
            .difference(&copier.copied)
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(StoreError::Open {
                path: dest.to_path_buf(),
                reason: format!("the copy lacks tables {missing:?}: this build cannot copy them"),
            });
        }
        write.commit().map_err(write_err)?;
        Ok(messages)
    })
}

/// The names of the tables (plain and multimap) a read transaction sees.
fn table_names(read: &ReadTransaction) -> Result<BTreeSet<String>, StoreError> {
    let plain = read
        .list_tables()
        .map_err(read_err)?
        .map(|t| t.name().to_string());
    let multi = read
        .list_multimap_tables()
        .map_err(read_err)?
        .map(|t| t.name().to_string());
    Ok(plain.chain(multi).collect())
}

#[cfg(test)]
mod tests {
    use super::super::tests::temp_db;
    use super::super::{Store, TEST_CACHE_BYTES};
    use super::*;
    use crate::access::RoomEvent;
    use crate::message::test_support::input_in;
    use crate::message::{AppendOutcome, ChatInput, MessageId};

    #[test]
    fn a_copy_opens_with_everything_the_original_had() -> Result<(), StoreError> {
        let (dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        let sent = input_in(Some("ops"), "kept", Some("o-1"));
        writer.append_batch(std::slice::from_ref(&sent), 1)?;
        let created = ChatInput {
            content: String::new(),
            client_offset: None,
            author: None,
            room: Some("ops".into()),
            user: Some("alice".into()),
            event: Some(RoomEvent::Created {
                private: true,
                read_only: false,
            }),
        };
        writer.append_batch(&[created], 2)?;
        let dest = dir.path().join("copy.redb");
        assert_eq!(reader.copy_to(&dest)?, 2);
        // Writes go on in the original; the copy is what was.
        writer.append_batch(&[input_in(None, "later", None)], 3)?;
        // Never over an existing file.
        assert!(matches!(
            reader.copy_to(&dest),
            Err(StoreError::Open { .. })
        ));
        let epoch = reader.epoch()?;
        drop((reader, writer));
        let (copy, mut copy_writer) = Store::open_existing(&dest, TEST_CACHE_BYTES)?;
        assert_eq!(copy.count()?, 2);
        assert_eq!(copy.epoch()?, epoch, "clients' offsets stay valid");
        assert_eq!(copy.access_states()?.len(), 1);
        assert_eq!(copy.room_stats(Some("ops"))?.map(|s| s.messages), Some(2));
        assert_eq!(
            copy_writer.append_batch(&[sent], 4)?,
            vec![AppendOutcome::Duplicate(MessageId(1))],
            "the dedup index came along"
        );
        Ok(())
    }

    #[test]
    fn a_table_the_copy_does_not_know_fails_the_copy_instead_of_vanishing() -> Result<(), StoreError>
    {
        let (dir, path) = temp_db();
        let (reader, _writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        reader.db.with(|db| {
            let write = db.begin_write().map_err(write_err)?;
            let later: TableDefinition<u64, u64> = TableDefinition::new("a_later_schemas_table");
            write
                .open_table(later)
                .map_err(write_err)?
                .insert(1, 2)
                .map_err(write_err)?;
            write.commit().map_err(write_err)
        })?;
        let refused = reader.copy_to(&dir.path().join("copy.redb"));
        assert!(
            matches!(&refused, Err(StoreError::Open { reason, .. }) if reason.contains("a_later_schemas_table")),
            "{refused:?}"
        );
        Ok(())
    }
}
