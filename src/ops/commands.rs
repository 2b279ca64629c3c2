//! Offline commands over a database file: `export`, `import`, `backup`, `stats`.
//!
//! Each opens the file itself, with the page cache `--db-cache-mb` sets, so it needs the
//! database to itself: a running server holds redb's lock and these report "already in
//! use". `export`, `backup` and `stats` refuse a file that does not exist (they never create
//! one); `import` may create it. They never overwrite a file they did not create. They are
//! blocking functions; the binary calls them and draws progress through the callback.

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::config::DbArgs;
use crate::message::{MessageId, StoredMessage, StoredRow};
use crate::storage::{ImportSummary, SCHEMA_VERSION, Store, StoreError};

/// Messages per read batch and per import transaction.
const BATCH: usize = 1000;

/// Why an offline command failed.
#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The database could not be opened or read.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading or writing a file failed.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// An import line is not an exported message.
    #[error("line {line}: {reason}")]
    BadLine {
        /// 1-based line number.
        line: u64,
        /// What is wrong with it.
        reason: String,
    },
    /// `backup` never overwrites.
    #[error("{0} already exists; choose a new file for the backup")]
    Exists(PathBuf),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AdminError {
    let what = what.into();
    move |source| AdminError::Io { what, source }
}

/// One line of an export.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExportLine {
    /// The message id.
    pub id: u64,
    /// The text.
    pub content: String,
    /// The client's idempotency key.
    #[serde(default)]
    pub client_offset: Option<String>,
    /// The sender's nickname.
    #[serde(default)]
    pub author: Option<String>,
    /// Server receive time, ms since the Unix epoch.
    pub time: u64,
}

impl From<StoredRow> for ExportLine {
    fn from(row: StoredRow) -> Self {
        Self {
            id: row.id.0,
            content: row.message.content,
            client_offset: row.message.client_offset,
            author: row.message.author,
            time: row.message.received_at_ms,
        }
    }
}

impl From<ExportLine> for StoredRow {
    fn from(line: ExportLine) -> Self {
        Self {
            id: MessageId(line.id),
            message: StoredMessage {
                content: line.content,
                client_offset: line.client_offset,
                received_at_ms: line.time,
                author: line.author,
                room: None,
            },
        }
    }
}

/// Writes every message with an id above `since` as JSON Lines; returns how many.
pub fn export(
    db: &DbArgs,
    since: u64,
    out: &mut dyn Write,
    progress: &dyn Fn(u64, u64),
) -> Result<u64, AdminError> {
    let (reader, _writer) = Store::open_existing(&db.db, db.cache_bytes())?;
    let newest = reader.newest_id()?;
    let total = reader.count()?;
    let mut after = since;
    let mut written = 0;
    loop {
        let rows = reader.read_range(after, newest, BATCH, usize::MAX)?;
        let Some(last) = rows.last() else { break };
        after = last.id.0;
        for row in rows {
            serde_json::to_writer(&mut *out, &ExportLine::from(row)).map_err(|e| {
                AdminError::Io {
                    what: "writing the export".into(),
                    source: e.into(),
                }
            })?;
            out.write_all(b"\n").map_err(io("writing the export"))?;
            written += 1;
        }
        progress(written, total);
    }
    out.flush().map_err(io("writing the export"))?;
    Ok(written)
}

/// Adds the messages of a JSON Lines export; see [`crate::storage::StoreWriter::import`].
pub fn import(
    db: &DbArgs,
    input: &mut dyn BufRead,
    progress: &dyn Fn(u64),
) -> Result<ImportSummary, AdminError> {
    let (_reader, mut writer) = Store::open(&db.db, db.cache_bytes())?;
    let mut total = ImportSummary::default();
    let mut batch = Vec::with_capacity(BATCH);
    let mut line_no = 0u64;
    let mut text = String::new();
    loop {
        text.clear();
        let read = input
            .read_line(&mut text)
            .map_err(io("reading the import"))?;
        if read > 0 {
            line_no += 1;
            if text.trim().is_empty() {
                continue;
            }
            let line: ExportLine =
                serde_json::from_str(&text).map_err(|e| AdminError::BadLine {
                    line: line_no,
                    reason: e.to_string(),
                })?;
            batch.push(StoredRow::from(line));
        }
        if batch.len() >= BATCH || (read == 0 && !batch.is_empty()) {
            let done = writer.import(&batch)?;
            total.kept_id += done.kept_id;
            total.new_id += done.new_id;
            total.skipped += done.skipped;
            batch.clear();
            progress(line_no);
        }
        if read == 0 {
            return Ok(total);
        }
    }
}

/// A consistent copy of the database at `dest`, which must not exist: it is never
/// overwritten, not even by a file created there while the copy runs. Holding the database's
/// lock while copying guarantees no commit is in progress.
pub fn backup(db: &DbArgs, dest: &Path) -> Result<u64, AdminError> {
    if dest.exists() {
        return Err(AdminError::Exists(dest.to_path_buf()));
    }
    let (reader, writer) = Store::open_existing(&db.db, db.cache_bytes())?;
    let count = reader.count()?;
    let mut partial_name = dest.as_os_str().to_owned();
    partial_name.push(".partial");
    let partial = PathBuf::from(partial_name);
    // `create_new`: a leftover or someone else's `.partial` is never overwritten either.
    let mut copy = std::fs::File::create_new(&partial).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => AdminError::Exists(partial.clone()),
        _ => AdminError::Io {
            what: format!("creating {}", partial.display()),
            source: e,
        },
    })?;
    let copied = std::fs::File::open(&db.db)
        .and_then(|mut source| std::io::copy(&mut source, &mut copy))
        .and_then(|_| copy.sync_all());
    drop((reader, writer));
    if let Err(source) = copied {
        let _ = std::fs::remove_file(&partial);
        return Err(AdminError::Io {
            what: format!("copying to {}", partial.display()),
            source,
        });
    }
    // A hard link, unlike a rename, fails if `dest` appeared meanwhile.
    let linked = std::fs::hard_link(&partial, dest);
    let _ = std::fs::remove_file(&partial);
    linked.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => AdminError::Exists(dest.to_path_buf()),
        _ => AdminError::Io {
            what: format!("moving the copy to {}", dest.display()),
            source: e,
        },
    })?;
    // Prove the copy opens and holds everything.
    let (copy, _) = Store::open_existing(dest, db.cache_bytes())?;
    let copied = copy.count()?;
    if copied != count {
        return Err(AdminError::Io {
            what: format!("verifying {}", dest.display()),
            source: std::io::Error::other(format!("{copied} messages, expected {count}")),
        });
    }
    Ok(count)
}

/// What `stats` prints.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Stats {
    /// Stored messages.
    pub messages: u64,
    /// Lowest id (0 when empty).
    pub first_id: u64,
    /// Highest id (0 when empty).
    pub last_id: u64,
    /// File size in bytes.
    pub file_bytes: u64,
    /// Table layout version.
    pub schema_version: u64,
}

/// Counts and sizes of a database.
pub fn stats(db: &DbArgs) -> Result<Stats, AdminError> {
    let (reader, _writer) = Store::open_existing(&db.db, db.cache_bytes())?;
    let file_bytes = std::fs::metadata(&db.db)
        .map_err(io(format!("reading {}", db.db.display())))?
        .len();
    Ok(Stats {
        messages: reader.count()?,
        first_id: reader.oldest_id()?,
        last_id: reader.newest_id()?,
        file_bytes,
        schema_version: SCHEMA_VERSION,
    })
}
