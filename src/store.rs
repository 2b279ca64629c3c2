//! Storage: the only module that touches redb.
//!
//! Owns the file format above the record level: the table definitions, the schema check on
//! open, the dedup rule for client offsets, id allocation and durable commits. [`Store::open`]
//! hands out one [`StoreWriter`] (not `Clone`: exactly one owner appends) and a cloneable
//! [`StoreReader`] for replay range scans. It knows nothing of sockets or broadcasting; the
//! writer task in [`crate::writer`] decides when to append and whom to tell.
//!
//! redb is blocking: call these from a dedicated thread or `spawn_blocking`, never directly on
//! the async runtime.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use redb::{
    Database, DatabaseError, MultimapTableDefinition, MultimapTableHandle, ReadableDatabase,
    ReadableMultimapTable, ReadableTable, ReadableTableMetadata, TableDefinition, TableHandle,
};

use crate::protocol::{ChatInput, MessageId};
use crate::record::{RecordError, StoredMessage, decode_record, encode_record};

/// `id -> [format version] ++ postcard(StoredMessage)`.
const MESSAGES: TableDefinition<u64, &[u8]> = TableDefinition::new("messages");
/// `clientOffset -> {ids}`: every message stored with that offset. A multimap because the
/// tutorial's offsets are not unique across clients (`undefined-0` while offline); the content
/// decides whether a hit is a retry (same content) or a different message (stored anew).
const CLIENT_OFFSETS: MultimapTableDefinition<&str, u64> =
    MultimapTableDefinition::new("client_offsets");
/// Small named counters: the schema version and the highest id ever assigned.
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");

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
/// The table layout this build reads and writes.
pub const SCHEMA_VERSION: u64 = 1;

/// A storage failure, with enough context to print as one clear line.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another process (usually another tidings) holds the file's lock.
    #[error("database {path} is already in use by another process")]
    InUse {
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
    Read(String),
    /// A write transaction or its commit failed; nothing of it was stored.
    #[error("database write failed: {0}")]
    Write(String),
    /// The database was closed (the server is shutting down).
    #[error("the database is closed")]
    Closed,
    /// A stored row does not decode.
    #[error("stored message {id} is unreadable: {source}")]
    Record {
        /// The row's id.
        id: u64,
        /// Why it does not decode.
        source: RecordError,
    },
}

fn read_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Read(e.to_string())
}

fn write_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Write(e.to_string())
}

/// Opens the redb database; called again to reopen it after an I/O failure. Production
/// opens the file; tests pass one over a storage backend that fails on demand.
pub type Opener = Arc<dyn Fn() -> Result<Database, DatabaseError> + Send + Sync>;

/// Entry point: opens (or creates) a database file.
pub struct Store;

impl Store {
    /// Opens `path`, creating an empty tidings database if the file is missing or empty.
    ///
    /// Never overwrites or truncates an existing file: a file that is not a tidings database is
    /// refused with an error naming what it is.
    pub fn open(path: &Path) -> Result<(StoreReader, StoreWriter), StoreError> {
        let file = path.to_path_buf();
        Self::open_with(path, Arc::new(move || Database::builder().create(&file)))
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
            StoreWriter {
                db,
                next_id: last_id + 1,
                path: path.to_path_buf(),
                opener,
            },
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
            write
                .open_multimap_table(CLIENT_OFFSETS)
                .map_err(write_err)?;
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
    if version != SCHEMA_VERSION {
        return Err(StoreError::Schema {
            path: path.to_path_buf(),
            found: version,
            expected: SCHEMA_VERSION,
        });
    }
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
    hasher.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0),
    );
    hasher.write_u32(std::process::id());
    hasher.finish().max(1)
}

/// One message read back from the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredRow {
    /// Its id.
    pub id: MessageId,
    /// Its record.
    pub message: StoredMessage,
}

/// The open database, shared by the reader handles and the writer until [`StoreReader::close`]
/// takes it out: a stray handle somewhere must not keep the file locked after shutdown.
#[derive(Clone)]
struct SharedDb(Arc<RwLock<Option<Database>>>);

impl SharedDb {
    fn with<T>(&self, f: impl FnOnce(&Database) -> Result<T, StoreError>) -> Result<T, StoreError> {
        // A panic while holding a read guard cannot leave the Option half-written.
        let guard = self.0.read().unwrap_or_else(PoisonError::into_inner);
        match guard.as_ref() {
            Some(db) => f(db),
            None => Err(StoreError::Closed),
        }
    }
}

/// Read access for replays; cheap to clone, usable from any thread (blocking calls).
#[derive(Clone)]
pub struct StoreReader {
    db: SharedDb,
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
                let message = match decode_record(value.value()) {
                    Ok(message) => message,
                    Err(source) => {
                        // One unreadable row (e.g. written by a newer version) must not stall
                        // every replay that crosses it: say so loudly and go on.
                        tracing::error!("{}", StoreError::Record { id, source });
                        continue;
                    }
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
                match decode_record(value.value()) {
                    Ok(message) => rows.push(StoredRow {
                        id: MessageId(id),
                        message,
                    }),
                    Err(source) => tracing::error!("{}", StoreError::Record { id, source }),
                }
            }
            let has_more = rows.len() == limit && range.next().is_some();
            rows.reverse();
            Ok((rows, has_more))
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

    /// The database's epoch (see [`StoreReader::epoch`]); written when the file is created.
    pub fn epoch(&self) -> Result<u64, StoreError> {
        self.meta(META_EPOCH)
    }

    /// The highest id retention has deleted (0: none). A client whose offset is below it
    /// cannot get a complete history.
    pub fn pruned_through(&self) -> Result<u64, StoreError> {
        self.meta(META_PRUNED_THROUGH)
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

/// One message to import, as `tidings export` wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportRecord {
    /// Its id in the exported database.
    pub id: u64,
    /// The stored record.
    pub message: StoredMessage,
}

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

/// What happened to one appended message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    /// Stored under a new id.
    Stored(MessageId),
    /// Same client offset and same content as an already stored message: not stored again.
    Duplicate(MessageId),
}

/// The single appender. Not `Clone`: whoever owns it is the only writer of the file.
pub struct StoreWriter {
    db: SharedDb,
    /// The id the next stored message gets; advanced only after a successful commit.
    next_id: u64,
    /// For errors and for reopening after an I/O failure.
    path: PathBuf,
    opener: Opener,
}

impl StoreWriter {
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

    /// Deletes at most `max_rows` of the oldest messages that retention no longer keeps:
    /// those beyond the newest `keep_newest`, and those received before `older_than_ms`.
    /// Their client offsets go with them. One durable transaction; returns how many rows it
    /// deleted and the highest id deleted so far, ever (call again while it returns
    /// `max_rows`).
    pub fn prune(
        &mut self,
        keep_newest: Option<u64>,
        older_than_ms: Option<u64>,
        max_rows: usize,
    ) -> Result<(usize, u64), StoreError> {
        let last_id = self.last_id();
        self.db.with(|db| {
            let write = db.begin_write().map_err(write_err)?;
            let deleted;
            let through;
            {
                let mut messages = write.open_table(MESSAGES).map_err(write_err)?;
                let mut offsets = write
                    .open_multimap_table(CLIENT_OFFSETS)
                    .map_err(write_err)?;
                let keep_from = keep_newest.map_or(0, |n| last_id.saturating_sub(n) + 1);
                let mut doomed = Vec::new();
                for entry in messages.iter().map_err(write_err)? {
                    if doomed.len() >= max_rows {
                        break;
                    }
                    let (key, value) = entry.map_err(write_err)?;
                    let id = key.value();
                    let record = decode_record(value.value()).ok();
                    let too_old = older_than_ms.is_some_and(|cutoff| {
                        record.as_ref().is_some_and(|r| r.received_at_ms < cutoff)
                    });
                    if id >= keep_from && !too_old {
                        break;
                    }
                    doomed.push((id, record.and_then(|r| r.client_offset)));
                }
                for (id, offset) in &doomed {
                    messages.remove(*id).map_err(write_err)?;
                    if let Some(offset) = offset {
                        offsets.remove(offset.as_str(), *id).map_err(write_err)?;
                    }
                }
                let mut meta = write.open_table(META).map_err(write_err)?;
                if let Some((last, _)) = doomed.last() {
                    meta.insert(META_PRUNED_THROUGH, *last).map_err(write_err)?;
                    // The deleted rows may include the newest: the id counter must survive.
                    meta.insert(META_LAST_ID, last_id).map_err(write_err)?;
                }
                through = meta
                    .get(META_PRUNED_THROUGH)
                    .map_err(write_err)?
                    .map_or(0, |v| v.value());
                deleted = doomed.len();
            }
            write.commit().map_err(write_err)?;
            Ok((deleted, through))
        })
    }

    /// Imports records in one durable transaction. Idempotent: a record whose id already
    /// holds the same content, or whose client offset and content are already stored, is
    /// skipped. A record keeps its id when that id is above every stored id (so an import
    /// into an empty database preserves ids); otherwise it gets the next id.
    pub fn import(&mut self, records: &[ImportRecord]) -> Result<ImportSummary, StoreError> {
        let next_id = self.next_id;
        let (summary, next_id) = self.db.with(|db| {
            let mut next_id = next_id;
            let mut summary = ImportSummary::default();
            let write = db.begin_write().map_err(write_err)?;
            {
                let mut messages = write.open_table(MESSAGES).map_err(write_err)?;
                let mut offsets = write
                    .open_multimap_table(CLIENT_OFFSETS)
                    .map_err(write_err)?;
                for record in records {
                    let same_id = match messages.get(record.id).map_err(write_err)? {
                        Some(row) => decode_record(row.value())
                            .is_ok_and(|m| m.content == record.message.content),
                        None => false,
                    };
                    let mut retry = false;
                    if let Some(offset) = &record.message.client_offset {
                        for id in offsets.get(offset.as_str()).map_err(write_err)? {
                            let id = id.map_err(write_err)?.value();
                            if let Some(row) = messages.get(id).map_err(write_err)? {
                                retry |= decode_record(row.value())
                                    .is_ok_and(|m| m.content == record.message.content);
                            }
                        }
                    }
                    if same_id || retry {
                        summary.skipped += 1;
                        continue;
                    }
                    let id = if record.id >= next_id {
                        summary.kept_id += 1;
                        record.id
                    } else {
                        summary.new_id += 1;
                        next_id
                    };
                    next_id = id + 1;
                    let bytes = encode_record(&record.message);
                    messages.insert(id, bytes.as_slice()).map_err(write_err)?;
                    if let Some(offset) = &record.message.client_offset {
                        offsets.insert(offset.as_str(), id).map_err(write_err)?;
                    }
                }
                let mut meta = write.open_table(META).map_err(write_err)?;
                meta.insert(META_LAST_ID, next_id - 1).map_err(write_err)?;
            }
            write.commit().map_err(write_err)?;
            Ok((summary, next_id))
        })?;
        self.next_id = next_id;
        Ok(summary)
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
        let (outcomes, next_id) = self
            .db
            .with(|db| Self::append_in(db, self.next_id, inputs, received_at_ms))?;
        self.next_id = next_id;
        Ok(outcomes)
    }

    fn append_in(
        db: &Database,
        mut next_id: u64,
        inputs: &[ChatInput],
        received_at_ms: u64,
    ) -> Result<(Vec<AppendOutcome>, u64), StoreError> {
        let mut outcomes = Vec::with_capacity(inputs.len());
        let write = db.begin_write().map_err(write_err)?;
        {
            let mut messages = write.open_table(MESSAGES).map_err(write_err)?;
            let mut offsets = write
                .open_multimap_table(CLIENT_OFFSETS)
                .map_err(write_err)?;
            for input in inputs {
                if let Some(offset) = &input.client_offset {
                    let mut original = None;
                    for id in offsets.get(offset.0.as_str()).map_err(write_err)? {
                        let id = id.map_err(write_err)?.value();
                        let Some(row) = messages.get(id).map_err(write_err)? else {
                            continue;
                        };
                        match decode_record(row.value()) {
                            Ok(stored) if stored.content == input.content => {
                                original = Some(id);
                                break;
                            }
                            Ok(_) => {}
                            Err(e) => tracing::warn!(id, "stored message is unreadable: {e}"),
                        }
                    }
                    if let Some(id) = original {
                        outcomes.push(AppendOutcome::Duplicate(MessageId(id)));
                        continue;
                    }
                }
                let id = next_id;
                next_id += 1;
                let record = encode_record(&StoredMessage {
                    content: input.content.clone(),
                    client_offset: input.client_offset.as_ref().map(|o| o.0.clone()),
                    received_at_ms,
                    author: input.author.clone(),
                });
                messages.insert(id, record.as_slice()).map_err(write_err)?;
                if let Some(offset) = &input.client_offset {
                    offsets.insert(offset.0.as_str(), id).map_err(write_err)?;
                }
                outcomes.push(AppendOutcome::Stored(MessageId(id)));
            }
        }
        write.commit().map_err(write_err)?;
        Ok((outcomes, next_id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::ClientOffset;

    fn input(content: &str, offset: Option<&str>) -> ChatInput {
        ChatInput {
            content: content.into(),
            client_offset: offset.map(|o| ClientOffset(o.into())),
            author: None,
        }
    }

    fn temp_db() -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("t.redb");
        (dir, path)
    }

    #[test]
    fn appends_dedups_and_survives_reopen() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        {
            let (reader, mut writer) = Store::open(&path)?;
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
        let (reader, mut writer) = Store::open(&path)?;
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

    #[test]
    fn unreadable_rows_are_skipped_by_replay() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        {
            let (_, mut writer) = Store::open(&path)?;
            writer.append_batch(&[input("a", None), input("b", None), input("c", None)], 1)?;
        }
        {
            // A row from a future format version, as a downgrade would leave it.
            let db = Database::create(&path).expect("open");
            let w = db.begin_write().expect("write");
            {
                let mut t = w.open_table(MESSAGES).expect("table");
                t.insert(2, [9u8, 1, 2].as_slice()).expect("insert");
            }
            w.commit().expect("commit");
        }
        let (reader, _) = Store::open(&path)?;
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
        let (reader, mut writer) = Store::open(&path)?;
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
    fn retention_prunes_oldest_first_with_their_offsets() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path)?;
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
        let (reader, writer) = Store::open(&path)?;
        assert_eq!((reader.epoch()?, writer.last_id()), (epoch, 11));
        Ok(())
    }

    #[test]
    fn ids_are_not_reused_after_retention_deletes_every_row() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let (reader, mut writer) = Store::open(&path)?;
        writer.append_batch(&[input("a", None), input("b", None), input("c", None)], 100)?;
        assert_eq!(writer.prune(None, Some(1_000), 100)?, (3, 3));
        assert_eq!(reader.newest_id()?, 0, "every row is gone");
        drop((reader, writer));
        let (_reader, mut writer) = Store::open(&path)?;
        assert_eq!(writer.last_id(), 3);
        let out = writer.append_batch(&[input("d", None)], 2_000)?;
        assert_eq!(out, vec![AppendOutcome::Stored(MessageId(4))]);
        Ok(())
    }

    #[test]
    fn second_open_is_refused_as_in_use() -> Result<(), StoreError> {
        let (_dir, path) = temp_db();
        let _first = Store::open(&path)?;
        match Store::open(&path) {
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
        let err = Store::open(&path).err().expect("must refuse");
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
        let err = Store::open(&path).err().expect("must refuse");
        assert!(matches!(err, StoreError::Foreign { .. }), "{err}");
    }
}
