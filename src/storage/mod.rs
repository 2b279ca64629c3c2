//! Storage: the only code that touches redb.
//!
//! Owns the file format above the record level: the table definitions, the schema check on
//! open, the dedup rule for client offsets, id allocation and durable commits. [`Store::open`]
//! hands out one [`StoreWriter`] (not `Clone`: exactly one owner appends; the ingest writer
//! thread) and a cloneable [`StoreReader`] for replay range scans and history pages. The byte
//! format of one row is [`record`]'s. It knows nothing of sockets or delivery.
//!
//! redb is blocking: call these from a dedicated thread or `spawn_blocking`, never directly on
//! the async runtime.

#[doc(hidden)]
mod access;
pub mod fault;
mod migrate;
mod reader;
pub mod record;
mod rooms;
mod sessions;
mod snapshot;
mod tables;
mod writer;

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use redb::{
    Database, DatabaseError, MultimapTableDefinition, MultimapTableHandle, ReadableDatabase,
    ReadableTable, TableDefinition, TableHandle,
};

use crate::message::RetryKey;

pub use access::AccessChanges;
pub use reader::{RoomCursor, StoreReader};
pub use record::RecordError;
pub use rooms::{RoomStats, key_room, room_key};
pub use sessions::SessionChanges;
pub use writer::{ImportSummary, StoreWriter};

/// `id -> [format version] ++ postcard(StoredMessage)`.
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// `dedup key -> {ids}`: the messages stored with a client offset, under the key of their
/// offset and content ([`DedupKey`]), so a retry is found with one probe however many messages
/// share its offset. A multimap so that a hash collision cannot hide a message: the stored
/// offset and content decide. (Schema 1 had `client_offsets: offset -> {ids}`, which made a
/// reused offset cost every id under it; it is rebuilt into this at open.)
const DEDUP: MultimapTableDefinition<u128, u64> = MultimapTableDefinition::new("dedup");
/// Small named counters: the schema version and the highest id ever assigned.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
/// Cluster mode only: `"stream"` -> the identity of the JetStream stream this file is a replica
/// of (`NAME@CREATED`). Absent in a single-node file.
const CLUSTER: TableDefinition<&str, &str> = TableDefinition::new("cluster");
const CLUSTER_STREAM: &str = "stream";

const META_SCHEMA_VERSION: &str = "schema_version";
/// The highest id assigned, as of the last transaction that deleted or imported rows. With
/// the messages table's last key it gives the next id (the larger of the two), so ids are
/// never reused even when retention deletes the newest rows. Appends do not write it: one
/// table fewer per commit means fewer pages written before each fsync.
const META_LAST_ID: &str = "last_id";
/// A random id created with the file: offsets from another database can be told apart.
const META_EPOCH: &str = "epoch";
/// The highest id deleted by retention (0: nothing ever deleted).
const META_PRUNED_THROUGH: &str = "pruned_through";
/// A cluster replica's: the highest id it never applied because the stream had deleted it
/// (retention) before the replica read it (0: none). Which room it was in is unknown, so a
/// replay or a recovery from below it is not known to be complete, whatever its rooms.
const META_SKIPPED_THROUGH: &str = "skipped_through";
/// The table layout this build reads and writes. Older files are migrated when opened
/// (`migrate`).
pub const SCHEMA_VERSION: u64 = 4;
/// Text settings a file pins: the default room's name.
const SETTINGS: TableDefinition<&str, &str> = TableDefinition::new("settings");
const SETTING_DEFAULT_ROOM: &str = "default_room";

/// A storage failure, with enough context to print as one clear line.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually another tidings) holds the file's lock.
    #[error("database {path} is already in use by another process")]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// There is no database file at the path (and this operation does not create one).
    #[error("database {path} does not exist (check --db / TIDINGS_DB)")]
    Missing {
        /// The database file.
        path: PathBuf,
    },
    /// The file could not be opened as a database (unreadable, corrupt, not redb).
    #[error("cannot open database {path}: {reason}")]
    Open {
        /// The database file.
        path: PathBuf,
        /// What redb or the OS said.
        reason: String,
    },
    /// The file is a redb database, but not one of ours.
    #[error("{path} is not a tidings database (it has tables {tables:?} and no tidings metadata)")]
    Foreign {
        /// The database file.
        path: PathBuf,
        /// The tables it holds.
        tables: Vec<String>,
    },
    /// The file was written by a different schema version.
    #[error("database {path} has schema version {found}; this build reads version {expected}")]
    Schema {
        /// The database file.
        path: PathBuf,
        /// The version in the file.
        found: u64,
        /// The version this build supports.
        expected: u64,
    },
    /// A read transaction failed.
    #[error("database read failed: {0}")]
    Read(#[source] Box<redb::Error>),
    /// A write transaction or its commit failed; nothing of it was stored.
    #[error("database write failed: {0}")]
    Write(#[source] Box<redb::Error>),
    /// The database was closed (the server is shutting down).
    #[error("the database is closed")]
    Closed,
    /// The file belongs to another JetStream stream, or holds a single-node history.
    #[error(
        "database {path} {why}; a cluster node needs a file of its own (a new one is filled from the stream)"
    )]
    OtherLog {
        /// The database file.
        path: PathBuf,
        /// What it holds instead.
        why: String,
    },
    /// The file's messages belong to another default room than the one configured.
    #[error(
        "database {path} was created with default room {recorded:?}: its messages before rooms \
         existed, and those sent to the default room since, are that room's; run with \
         --default-room {recorded} (or use another database for default room {asked:?})"
    )]
    DefaultRoom {
        /// The database file.
        path: PathBuf,
        /// The default room the file records.
        recorded: String,
        /// The one configured.
        asked: String,
    },
    /// A room's stored access state does not decode (or could not be encoded).
    #[error("the access state of room {room:?} is unreadable: {reason}")]
    AccessState {
        /// The room's key ("" for the default room).
        room: String,
        /// What postcard said.
        reason: String,
    },
    /// A stored row does not decode.
    #[error("stored message {id} is unreadable: {source}")]
    Record {
        /// The row's id.
        id: u64,
        /// Why it does not decode.
        source: RecordError,
    },
}

/// The id of the stored message that a message with `key` is a retry of, if any: the dedup
/// rule, with one probe of the dedup index, over a read or a write transaction's tables.
fn find_retry(
    messages: &impl ReadableTable<u64, &'static [u8]>,
    dedup: &impl redb::ReadableMultimapTable<u128, u64>,
    key: &RetryKey<'_>,
) -> Result<Option<u64>, redb::StorageError> {
    for id in dedup.get(key.dedup_key().as_u128())? {
        let id = id?.value();
        let Some(row) = messages.get(id)? else {
            continue;
        };
        match record::decode_record(row.value()) {
            Ok(stored) if stored.is_retried_by(key) => return Ok(Some(id)),
            Ok(_) => {}
            Err(e) => tracing::warn!(id, "stored message is unreadable: {e}"),
        }
    }
    Ok(None)
}

fn read_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Read(Box::new(e.into()))
}

fn write_err(e: impl Into<redb::Error>) -> StoreError {
    StoreError::Write(Box::new(e.into()))
}

/// Opens the redb database; called again to reopen it after an I/O failure. Production
/// opens the file; tests pass one over a storage backend that fails on demand.
pub type Opener = Arc<dyn Fn() -> Result<Database, DatabaseError> + Send + Sync>;

/// Entry point: opens (or creates) a database file.
pub struct Store;

impl Store {
    /// Opens `path`, creating an empty tidings database if the file is missing or empty,
    /// with a page cache of at most `cache_bytes` (see [`Store::builder`]).
    ///
    /// Never overwrites or truncates an existing file: a file that is not a tidings database is
    /// refused with an error naming what it is.
    pub fn open(path: &Path, cache_bytes: usize) -> Result<(StoreReader, StoreWriter), StoreError> {
        let file = path.to_path_buf();
        Self::open_with(
            path,
            Arc::new(move || Self::builder(cache_bytes).create(&file)),
        )
    }

    /// Opens the existing database `path`; refuses, without creating anything, when there is
    /// no file there (the offline commands, which must never invent an empty database).
    pub fn open_existing(
        path: &Path,
        cache_bytes: usize,
    ) -> Result<(StoreReader, StoreWriter), StoreError> {
        // redb's `open` never creates a file; this says why in our words.
        if !path.exists() {
            return Err(StoreError::Missing {
                path: path.to_path_buf(),
            });
        }
        let file = path.to_path_buf();
        Self::open_with(
            path,
            Arc::new(move || Self::builder(cache_bytes).open(&file)),
        )
    }

    /// redb's builder with its page cache (read cache plus write buffer) bounded to
    /// `cache_bytes`. redb's own default is 1 GiB, and it keeps every page it writes or
    /// reads until the cache is full: without this bound the process grows with the history
    /// up to that gigabyte.
    pub fn builder(cache_bytes: usize) -> redb::Builder {
        let mut builder = Database::builder();
        builder.set_cache_size(cache_bytes);
        builder
    }

    /// Opens the database `opener` yields; `path` names it in errors.
    pub fn open_with(
        path: &Path,
        opener: Opener,
    ) -> Result<(StoreReader, StoreWriter), StoreError> {
        let (db, last_id) = open_checked(path, &opener)?;
        let db = SharedDb(Arc::new(RwLock::new(Some(db))));
        Ok((
            StoreReader { db: db.clone() },
            StoreWriter::new(db, last_id, path.to_path_buf(), opener),
        ))
    }
}

/// Opens through `opener` and checks the schema; returns the database and its last id.
fn open_checked(path: &Path, opener: &Opener) -> Result<(Database, u64), StoreError> {
    let shown = path.to_path_buf();
    // redb documents that opening a file damaged outside redb may panic; turn that into
    // an error so a bad file gives one clear line instead of a crash.
    let db = match catch_unwind(AssertUnwindSafe(|| opener())) {
        Ok(Ok(db)) => db,
        Ok(Err(DatabaseError::DatabaseAlreadyOpen)) => {
            return Err(StoreError::InUse { path: shown });
        }

        Ok(Err(e)) => {
            return Err(StoreError::Open {
                path: shown,
                reason: e.to_string(),
            });
        }
        Err(_) => {
            return Err(StoreError::Open {
                path: shown,
                reason: "the file is corrupt (redb could not read it)".into(),
            });
        }
    };
    let last_id = init_schema(&db, path)?;
    Ok((db, last_id))
}

/// Checks (or, for a new file, writes) the schema and returns the highest id ever assigned.
fn init_schema(db: &Database, path: &Path) -> Result<u64, StoreError> {
    let read = db.begin_read().map_err(read_err)?;
    let mut tables: Vec<String> = read
        .list_tables()
        .map_err(read_err)?
        .map(|t| t.name().to_string())
        .collect();
    tables.extend(
        read.list_multimap_tables()
            .map_err(read_err)?
            .map(|t| t.name().to_string()),
    );
    if tables.is_empty() {
        drop(read);
        let write = db.begin_write().map_err(write_err)?;
        {
            write.open_table(MESSAGES).map_err(write_err)?;
            write.open_multimap_table(DEDUP).map_err(write_err)?;
            write.open_table(rooms::ROOM_MESSAGES).map_err(write_err)?;
            write.open_table(rooms::ROOMS).map_err(write_err)?;
            let mut meta = write.open_table(META).map_err(write_err)?;
            meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION)
                .map_err(write_err)?;
            meta.insert(META_LAST_ID, 0).map_err(write_err)?;
            meta.insert(META_EPOCH, new_epoch()).map_err(write_err)?;
        }
        write.commit().map_err(write_err)?;
        return Ok(0);
    }
    let foreign = || StoreError::Foreign {
        path: path.to_path_buf(),
        tables: tables.clone(),
    };
    let meta = read.open_table(META).map_err(|_| foreign())?;
    let version = meta
        .get(META_SCHEMA_VERSION)
        .map_err(read_err)?
        .map(|v| v.value())
        .ok_or_else(foreign)?;
    let migrate = match version {
        SCHEMA_VERSION => false,
        1..SCHEMA_VERSION => true,
        found => {
            return Err(StoreError::Schema {
                path: path.to_path_buf(),
                found,
                expected: SCHEMA_VERSION,
            });
        }
    };
    let recorded = meta
        .get(META_LAST_ID)
        .map_err(read_err)?
        .map(|v| v.value())
        .unwrap_or(0);
    let has_epoch = meta.get(META_EPOCH).map_err(read_err)?.is_some();
    // `last()` is a descent to the rightmost leaf, not a scan.
    let messages = read.open_table(MESSAGES).map_err(read_err)?;
    let newest = messages
        .last()
        .map_err(read_err)?
        .map(|(k, _)| k.value())
        .unwrap_or(0);
    if migrate {
        drop((meta, messages, read));
        migrate::migrate(db, path, version)?;
        return init_schema(db, path);
    }
    if !has_epoch {
        // Files from before epochs existed get one now.
        drop((meta, messages, read));
        let write = db.begin_write().map_err(write_err)?;
        {
            let mut meta = write.open_table(META).map_err(write_err)?;
            meta.insert(META_EPOCH, new_epoch()).map_err(write_err)?;
        }
        write.commit().map_err(write_err)?;
    }
    Ok(recorded.max(newest))
}

/// A fresh random epoch (never 0). Not secret, only distinct between databases: std's
/// per-process random hash keys mixed with the time and the process id.
fn new_epoch() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut hasher = std::collections::hash_map::RandomState::new().build_hasher();
    hasher.write_u128(crate::every::since_epoch().as_nanos());
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}

/// What the database's page cache holds and how it has served reads, since the database was
/// (re)opened.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CacheStats {
    /// Bytes of pages held (read cache and write buffer); at most the configured size, give
    /// or take a page.
    pub used_bytes: u64,
    /// Page reads served from the cache.
    pub read_hits: u64,
    /// Page reads that went to the file (the operating system's page cache, or the disk).
    pub read_misses: u64,
    /// Pages dropped from the cache to stay within its size.
    pub evictions: u64,
}

/// A page cache for unit tests: small, as on a small machine.
#[cfg(test)]
pub(crate) const TEST_CACHE_BYTES: usize = 4 << 20;

/// The open database, shared by the reader handles and the writer until [`StoreReader::close`]
/// takes it out: a stray handle somewhere must not keep the file locked after shutdown.
#[derive(Clone)]
struct SharedDb(Arc<RwLock<Option<Database>>>);

impl SharedDb {
    fn cache_stats(&self) -> Option<CacheStats> {
        let guard = self.0.read().unwrap_or_else(PoisonError::into_inner);
        guard.as_ref().map(|db| {
            let stats = db.cache_stats();
            CacheStats {
                used_bytes: stats.used_bytes() as u64,
                read_hits: stats.read_hits(),
                read_misses: stats.read_misses(),
                evictions: stats.evictions(),
            }
        })
    }

    fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        // A panic while holding a read guard cannot leave the Option half-written.
        let guard = self.0.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Closed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replaces row `id`'s bytes, as a damaged file or a newer version would leave them.
    pub(super) fn overwrite_row(path: &Path, id: u64, bytes: &[u8]) {
        let db = Database::create(path).expect("open");
        let write = db.begin_write().expect("write");
        {
            let mut table = write.open_table(MESSAGES).expect("table");
            table.insert(id, bytes).expect("insert");
        }
        write.commit().expect("commit");
    }

    pub(super) fn temp_db() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.redb");
        (dir, path)
    }

    /// Stores about 3 MB (1,500 messages of 2 KiB), then reads all of it back, with a page
    /// cache of `cache_bytes`; returns what the cache holds afterwards.
    fn cache_after_3_mb(cache_bytes: usize) -> Result<CacheStats, StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, cache_bytes)?;
        let text = "x".repeat(2048);
        for batch in 0..15 {
            let inputs: Vec<_> = (0..100)
                .map(|i| writer::tests::input(&text, Some(&format!("o-{batch}-{i}"))))
                .collect();
            writer.append_batch(&inputs, 0)?;
        }
        let mut after = 0;
        loop {
            let rows = reader.read_range(after, u64::MAX, 256, usize::MAX)?;
            let Some(last) = rows.last() else { break };
            after = last.id.0;
        }
        assert_eq!(after, 1500);
        Ok(reader.cache_stats().unwrap_or_default())
    }

    #[test]
    fn the_page_cache_stays_within_its_configured_size() -> Result<(), StoreError> {
        // One page of slack: redb's budget is checked page by page.
        let small = cache_after_3_mb(512 << 10)?;
        assert!(
            small.used_bytes <= (512 + 64) << 10,
            "a 512 KiB cache holds {small:?}"
        );
        assert!(small.evictions > 0, "{small:?}");
        assert!(small.read_misses > 0, "{small:?}");
        // The same work with room to spare keeps the whole file in memory: this bound is
        // what keeps a growing history from growing the process.
        let roomy = cache_after_3_mb(64 << 20)?;
        assert!(roomy.used_bytes > 3 << 20, "a 64 MiB cache holds {roomy:?}");
        assert_eq!(roomy.evictions, 0, "{roomy:?}");
        Ok(())
    }

    /// A file as schema 1 wrote it: `messages`, `client_offsets` (offset -> ids) and `meta`,
    /// with `rows` as (id, content, offset) and one version-1 record.
    fn schema_1_file(path: &Path, rows: &[(u64, &str, Option<&str>)]) {
        const OFFSETS: MultimapTableDefinition<&str, u64> =
            MultimapTableDefinition::new("client_offsets");
        let db = Database::create(path).expect("create");
        let write = db.begin_write().expect("write");
        {
            let mut messages = write.open_table(MESSAGES).expect("messages");
            let mut offsets = write.open_multimap_table(OFFSETS).expect("offsets");
            for (id, content, offset) in rows {
                let stored = crate::message::StoredMessage {
                    content: (*content).into(),
                    client_offset: offset.map(String::from),
                    received_at_ms: 1,
                    author: None,
                    room: None,
                    user: None,
                    event: None,
                };
                messages
                    .insert(*id, record::encode_record(&stored).as_slice())
                    .expect("row");
                if let Some(offset) = offset {
                    offsets.insert(*offset, *id).expect("offset");
                }
            }
            // A version-1 record (no author), as the oldest files hold them.
            let v1 = postcard::to_extend(&("old", Some("o-v1"), 7u64), vec![1u8]).expect("v1");
            messages.insert(100, v1.as_slice()).expect("v1 row");
            offsets.insert("o-v1", 100).expect("v1 offset");
            // A recovery session of a page connected before the upgrade.
            let mut sessions = write.open_table(sessions::SESSIONS).expect("sessions");
            sessions.insert("pid-before-rooms", 5).expect("session");
            let mut meta = write.open_table(META).expect("meta");
            meta.insert(META_SCHEMA_VERSION, 1).expect("version");
            meta.insert(META_LAST_ID, 0).expect("last id");
            meta.insert(META_EPOCH, 42).expect("epoch");
        }
        write.commit().expect("commit");
    }

    #[test]
    fn a_schema_1_file_is_migrated_and_keeps_its_messages_and_retries() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        // 25,000 rows under one shared offset: more than a migration batch.
        let shared: Vec<String> = (1..=25_000).map(|n| format!("m{n}")).collect();
        let mut rows: Vec<(u64, &str, Option<&str>)> = shared
            .iter()
            .enumerate()
            .map(|(n, content)| (n as u64 + 1000, content.as_str(), Some("undefined-0")))
            .collect();
        rows.push((1, "first", Some("o-1")));
        rows.push((2, "no offset", None));
        schema_1_file(&path, &rows);
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        assert_eq!(reader.epoch()?, 42, "the file is the same database");
        assert_eq!(reader.count()?, 25_003);
        assert_eq!(writer.last_id(), 26_000 - 1);
        // Every old message is the default room's, indexed and counted.
        let stats = reader.room_stats(None)?.map(|s| (s.messages, s.last));
        assert_eq!(stats, Some((25_003, 25_999)));
        let first: Vec<u64> = reader
            .read_rooms(
                &[RoomCursor {
                    room: None,
                    after: 0,
                }],
                u64::MAX,
                5,
                usize::MAX,
            )?
            .iter()
            .map(|row| row.id.0)
            .collect();
        assert_eq!(first, [1, 2, 100, 1000, 1001]);
        // A session from before rooms is in the default room, so it recovers into it.
        assert_eq!(reader.session_rooms("pid-before-rooms")?, [(None, 0)]);
        // Every old retry is still recognised, the version-1 row's too; new content under a
        // known offset is new.
        let out = writer.append_batch(
            &[
                writer::tests::input("first", Some("o-1")),
                writer::tests::input("m17", Some("undefined-0")),
                writer::tests::input("old", Some("o-v1")),
                writer::tests::input("m17", Some("o-1")),
                writer::tests::input("no offset", None),
            ],
            9,
        )?;
        use crate::message::{AppendOutcome::*, MessageId};
        assert_eq!(
            out,
            vec![
                Duplicate(MessageId(1)),
                Duplicate(MessageId(1016)),
                Duplicate(MessageId(100)),
                Stored(MessageId(26_000)),
                Stored(MessageId(26_001)),
            ]
        );
        drop((reader, writer));
        // Schema 2 now, without the old index; opening again migrates nothing.
        let db = Database::open(&path).expect("open");
        let read = db.begin_read().expect("read");
        assert_eq!(schema_version(&read), Some(SCHEMA_VERSION));
        let tables: Vec<String> = read
            .list_multimap_tables()
            .expect("list")
            .map(|t| t.name().to_string())
            .collect();
        assert_eq!(tables, vec!["dedup".to_string()]);
        Ok(())
    }

    /// Pages read (from the cache or the file) by appending `input`.
    fn pages_read_by(
        reader: &StoreReader,
        writer: &mut StoreWriter,
        input: crate::message::ChatInput,
    ) -> Result<u64, StoreError> {
        let pages = |stats: Option<CacheStats>| stats.map_or(0, |s| s.read_hits + s.read_misses);
        let before = pages(reader.cache_stats());
        writer.append_batch(&[input], 1)?;
        Ok(pages(reader.cache_stats()) - before)
    }

    #[test]
    fn a_dedup_probe_costs_the_same_however_many_messages_share_the_offset()
    -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        // 20,000 messages under one offset (the tutorial's `undefined-0`), with a long
        // content each so they span many pages.
        let text = "x".repeat(200);
        for batch in 0..20 {
            let inputs: Vec<_> = (0..1000)
                .map(|n| writer::tests::input(&format!("{text}{batch}-{n}"), Some("undefined-0")))
                .collect();
            writer.append_batch(&inputs, 0)?;
        }
        let fresh = pages_read_by(&reader, &mut writer, writer::tests::input("a", Some("new")))?;
        let shared = pages_read_by(
            &reader,
            &mut writer,
            writer::tests::input("b", Some("undefined-0")),
        )?;
        // One probe of the index, one row at most: a handful of pages either way (with one
        // decode per message under the offset it read ~1,000 pages).
        assert!(
            shared <= fresh + 8,
            "an append under a shared offset read {shared} pages, under a fresh one {fresh}"
        );
        Ok(())
    }

    /// The schema version a file records.
    fn schema_version(read: &redb::ReadTransaction) -> Option<u64> {
        read.open_table(META)
            .expect("meta")
            .get(META_SCHEMA_VERSION)
            .expect("get")
            .map(|v| v.value())
    }

    #[test]
    fn a_schema_3_file_gets_the_access_table_and_keeps_its_messages() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        {
            let (_, mut writer) = Store::open(&path, TEST_CACHE_BYTES)?;
            writer.append_batch(&[crate::message::test_support::input("kept", Some("o"))], 1)?;
        }
        {
            // As a schema-3 build left it: no access table, version 3.
            let db = Database::open(&path).expect("open");
            let write = db.begin_write().expect("write");
            write.delete_table(access::ROOM_ACCESS).expect("drop");
            write
                .open_table(META)
                .expect("meta")
                .insert(META_SCHEMA_VERSION, 3)
                .expect("version");
            write.commit().expect("commit");
        }
        let (reader, _writer) = Store::open(&path, TEST_CACHE_BYTES)?;
        assert!(reader.access_states()?.is_empty());
        assert_eq!(reader.read_range(0, 10, 10, usize::MAX)?.len(), 1);
        drop((reader, _writer));
        let db = Database::open(&path).expect("open");
        let read = db.begin_read().expect("read");
        assert_eq!(schema_version(&read), Some(4));
        assert!(
            read.open_table(access::ROOM_ACCESS).is_ok(),
            "the table exists"
        );
        Ok(())
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let (_dir, path) = temp_db();
        drop(Store::open(&path, TEST_CACHE_BYTES).expect("create"));
        {
            let db = Database::open(&path).expect("open");
            let write = db.begin_write().expect("write");
            {
                let mut meta = write.open_table(META).expect("meta");
                meta.insert(META_SCHEMA_VERSION, SCHEMA_VERSION + 1)
                    .expect("version");
            }
            write.commit().expect("commit");
        }
        let err = Store::open(&path, TEST_CACHE_BYTES).err().expect("refused");
        assert!(
            matches!(err, StoreError::Schema { found, .. } if found == SCHEMA_VERSION + 1),
            "{err}"
        );
    }

    #[test]
    fn second_open_is_refused_as_in_use() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let _first = Store::open(&path, TEST_CACHE_BYTES)?;
        match Store::open(&path, TEST_CACHE_BYTES) {
            Err(e @ StoreError::InUse { .. }) => {
                assert!(e.to_string().contains("already in use by another process"));
            }
            other => panic!("expected InUse, got {:?}", other.err()),
        }
        Ok(())
    }

    #[test]
    fn garbage_file_is_refused_and_left_untouched() {
        let (_dir, path) = temp_db();
        let garbage = b"this is not a database, it is a text file\n".repeat(200);
        std::fs::write(&path, &garbage).expect("write");
        let err = Store::open(&path, TEST_CACHE_BYTES)
            .err()
            .expect("must refuse");
        assert!(matches!(err, StoreError::Open { .. }), "{err}");
        assert_eq!(std::fs::read(&path).expect("read"), garbage);
    }

    #[test]
    fn foreign_redb_file_is_refused() {
        let (_dir, path) = temp_db();
        {
            let db = Database::create(&path).expect("create");
            let w = db.begin_write().expect("write");
            {
                let t: TableDefinition<u64, u64> = TableDefinition::new("accounts");
                w.open_table(t).expect("table");
            }
            w.commit().expect("commit");
        }
        let err = Store::open(&path, TEST_CACHE_BYTES)
            .err()
            .expect("must refuse");
        assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    }
}
