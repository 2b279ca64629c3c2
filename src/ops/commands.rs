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

use crate::config::{DbArgs, ExportArgs, ImportArgs, StatsArgs};
use crate::message::{MessageId, StoredMessage, StoredRow};
use crate::protocol::room::RoomName;
use crate::storage::{ImportSummary, RoomCursor, SCHEMA_VERSION, Store, StoreError, StoreReader};

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
    /// `backup --from`: the server's copy could not be fetched.
    #[error("cannot fetch {url}: {why}")]
    Fetch {
        /// What was asked for.
        url: String,
        /// What went wrong.
        why: String,
    },
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
    /// The room, by name: an export names every message's room, the default room's too, so
    /// the file means the same wherever it is imported. Missing (an export from before rooms):
    /// the default room.
    #[serde(default)]
    pub room: Option<String>,
    /// The verified sender's user id; absent for anonymous senders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// A room event (an access change, a deletion) or a deleted message's tombstone, instead
    /// of a chat message; absent for chat messages.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub event: Option<crate::access::RoomEvent>,
}

impl ExportLine {
    /// The line of `row`, whose room is `default_room` when it names none.
    pub fn new(row: StoredRow, default_room: &str) -> Self {
        Self {
            id: row.id.0,
            content: row.message.content,
            client_offset: row.message.client_offset,
            author: row.message.author,
            time: row.message.received_at_ms,
            room: Some(row.message.room.unwrap_or_else(|| default_room.to_string())),
            user: row.message.user,
            event: row.message.event,
        }
    }

    /// The row to store, in a file whose default room is `default_room`; refuses a room name
    /// that breaks the rule.
    pub fn into_row(self, default_room: &str) -> Result<StoredRow, String> {
        let room = match self.room {
            None => None,
            Some(name) => {
                let name = RoomName::parse(&name).map_err(|e| e.to_string())?;
                (name.as_str() != default_room).then(|| name.to_string())
            }
        };
        Ok(StoredRow {
            id: MessageId(self.id),
            message: StoredMessage {
                content: self.content,
                client_offset: self.client_offset,
                received_at_ms: self.time,
                author: self.author,
                room,
                user: self.user,
                event: self.event,
            },
        })
    }
}

/// The default room's name in the file `reader` reads: the one it records, else `fallback`.
fn default_room_of(reader: &StoreReader, fallback: &str) -> Result<String, AdminError> {
    Ok(reader
        .default_room()?
        .unwrap_or_else(|| fallback.to_string()))
}

/// Writes every message with an id above `args.since` (of `args.rooms` only, when it names
/// some) as JSON Lines; returns how many.
pub fn export(
    args: &ExportArgs,
    out: &mut dyn Write,
    progress: &dyn Fn(u64, u64),
) -> Result<u64, AdminError> {
    let (reader, _writer) = Store::open_existing(&args.db.db, args.db.cache_bytes())?;
    let default_room = default_room_of(&reader, &args.default_room)?;
    let newest = reader.newest_id()?;
    let keys: Vec<Option<String>> = args
        .rooms
        .iter()
        .map(|name| (*name != default_room).then(|| name.clone()))
        .collect();
    let total = if keys.is_empty() {
        reader.count()?
    } else {
        let mut total = 0;
        for key in &keys {
            total += reader.room_stats(key.as_deref())?.map_or(0, |s| s.messages);
        }
        total
    };
    let mut after = args.since;
    let mut written = 0;
    loop {
        let rows = if keys.is_empty() {
            reader.read_range(after, newest, BATCH, usize::MAX)?
        } else {
            let cursors: Vec<RoomCursor> = keys
                .iter()
                .map(|room| RoomCursor {
                    room: room.clone(),
                    after,
                })
                .collect();
            reader.read_rooms(&cursors, newest, BATCH, usize::MAX)?
        };
        let Some(last) = rows.last() else { break };
        after = last.id.0;
        for row in rows {
            serde_json::to_writer(&mut *out, &ExportLine::new(row, &default_room)).map_err(
                |e| AdminError::Io {
                    what: "writing the export".into(),
                    source: e.into(),
                },
            )?;
            out.write_all(b"\n").map_err(io("writing the export"))?;
            written += 1;
        }
        progress(written, total);
    }
    out.flush().map_err(io("writing the export"))?;
    Ok(written)
}

/// Adds the messages of a JSON Lines export; see [`crate::storage::StoreWriter::import`].
/// Lines without a room, or naming `args.default_room`, go to the default room, which is
/// recorded in a file that records none yet (a file that records another is refused).
pub fn import(
    args: &ImportArgs,
    input: &mut dyn BufRead,
    progress: &dyn Fn(u64),
) -> Result<ImportSummary, AdminError> {
    let db = &args.db;
    let (_reader, mut writer) = Store::open(&db.db, db.cache_bytes())?;
    writer.pin_default_room(&args.default_room)?;
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
            let bad_line = |reason: String| AdminError::BadLine {
                line: line_no,
                reason,
            };
            let line: ExportLine =
                serde_json::from_str(&text).map_err(|e| bad_line(e.to_string()))?;
            batch.push(line.into_row(&args.default_room).map_err(bad_line)?);
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

/// Writes a new file at `dest` with `fill`, never over an existing one: into `DEST.partial`
/// (created new: a leftover or someone else's is never overwritten either), synced, then
/// linked into place (a hard link, unlike a rename, fails if `dest` appeared meanwhile).
fn write_new(
    dest: &Path,
    fill: impl FnOnce(&mut std::fs::File) -> Result<(), AdminError>,
) -> Result<(), AdminError> {
    if dest.exists() {
        return Err(AdminError::Exists(dest.to_path_buf()));
    }
    let mut partial_name = dest.as_os_str().to_owned();
    partial_name.push(".partial");
    let partial = PathBuf::from(partial_name);
    let mut copy = std::fs::File::create_new(&partial).map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => AdminError::Exists(partial.clone()),
        _ => AdminError::Io {
            what: format!("creating {}", partial.display()),
            source: e,
        },
    })?;
    let filled = fill(&mut copy).and_then(|()| {
        copy.sync_all()
            .map_err(io(format!("syncing {}", partial.display())))
    });
    drop(copy);
    if let Err(e) = filled {
        let _ = std::fs::remove_file(&partial);
        return Err(e);
    }
    let linked = std::fs::hard_link(&partial, dest);
    let _ = std::fs::remove_file(&partial);
    linked.map_err(|e| match e.kind() {
        std::io::ErrorKind::AlreadyExists => AdminError::Exists(dest.to_path_buf()),
        _ => AdminError::Io {
            what: format!("moving the copy to {}", dest.display()),
            source: e,
        },
    })
}

/// Proves the copy at `dest` opens and holds `count` messages.
fn verify_copy(dest: &Path, cache_bytes: usize, count: u64) -> Result<(), AdminError> {
    let (copy, _) = Store::open_existing(dest, cache_bytes)?;
    let copied = copy.count()?;
    if copied != count {
        return Err(AdminError::Io {
            what: format!("verifying {}", dest.display()),
            source: std::io::Error::other(format!("{copied} messages, expected {count}")),
        });
    }
    Ok(())
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
    let copied = write_new(dest, |copy| {
        std::fs::File::open(&db.db)
            .and_then(|mut source| std::io::copy(&mut source, copy))
            .map(drop)
            .map_err(io(format!("copying {}", db.db.display())))
    });
    drop((reader, writer));
    copied?;
    verify_copy(dest, db.cache_bytes(), count)?;
    Ok(count)
}

/// The copy a running server's admin port serves (`GET URL/backup`), saved at `dest` (which
/// must not exist, and is never overwritten); `progress` is told the bytes so far and the
/// total. Returns how many messages the copy holds, once it opens with them.
pub fn backup_from(
    url: &str,
    dest: &Path,
    cache_bytes: usize,
    progress: impl Fn(u64, Option<u64>),
) -> Result<u64, AdminError> {
    if dest.exists() {
        return Err(AdminError::Exists(dest.to_path_buf()));
    }
    let url = format!("{}/backup", url.trim_end_matches('/'));
    let fetch = |why: String| AdminError::Fetch {
        url: url.clone(),
        why,
    };
    let response = ureq::get(&url).call().map_err(|e| fetch(e.to_string()))?;
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
    };
    let (total, messages) = (header("content-length"), header("x-tidings-messages"));
    let Some(messages) = messages else {
        return Err(fetch(
            "not a tidings backup (no x-tidings-messages header)".into(),
        ));
    };
    let mut body = response.into_body().into_reader();
    write_new(dest, |copy| {
        use std::io::{Read, Write};
        let mut buffer = vec![0u8; 1 << 16];
        let mut done = 0u64;
        loop {
            let n = body.read(&mut buffer).map_err(|e| fetch(e.to_string()))?;
            if n == 0 {
                break;
            }
            copy.write_all(&buffer[..n])
                .map_err(io(format!("writing {}", dest.display())))?;
            done += n as u64;
            progress(done, total);
        }
        match total {
            Some(total) if total != done => Err(fetch(format!(
                "the copy ended after {done} of {total} bytes"
            ))),
            _ => Ok(()),
        }
    })?;
    verify_copy(dest, cache_bytes, messages)?;
    Ok(messages)
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
    /// The default room the file records (`null`: no server has served it since rooms).
    pub default_room: Option<String>,
    /// Rooms that hold messages.
    pub rooms: u64,
    /// With `--rooms`: each room that holds or held messages, by name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub by_room: Option<Vec<RoomLine>>,
}

/// One room in `stats --rooms`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RoomLine {
    /// Its name (the default room's, as the file records it or `general`).
    pub name: String,
    /// Messages it holds.
    pub messages: u64,
    /// Its newest message's id (0: none ever).
    pub last_id: u64,
    /// The highest of its ids that retention deleted (0: none).
    pub pruned_through: u64,
}

/// Counts and sizes of a database.
pub fn stats(args: &StatsArgs) -> Result<Stats, AdminError> {
    let db = &args.db;
    let (reader, _writer) = Store::open_existing(&db.db, db.cache_bytes())?;
    let file_bytes = std::fs::metadata(&db.db)
        .map_err(io(format!("reading {}", db.db.display())))?
        .len();
    let recorded = reader.default_room()?;
    let default_name = recorded
        .clone()
        .unwrap_or_else(|| crate::config::defaults::DEFAULT_ROOM.to_string());
    let mut rooms = 0;
    let mut by_room = args.rooms.then(Vec::new);
    let mut after: Option<String> = None;
    loop {
        let page = reader.rooms_after(after.as_deref(), BATCH)?;
        let Some((last, _)) = page.last() else { break };
        after = Some(last.clone().unwrap_or_default());
        for (room, counts) in page {
            if counts.messages > 0 {
                rooms += 1;
            }
            if let Some(lines) = &mut by_room {
                lines.push(RoomLine {
                    name: room.unwrap_or_else(|| default_name.clone()),
                    messages: counts.messages,
                    last_id: counts.last,
                    pruned_through: counts.pruned_through,
                });
            }
        }
    }
    if let Some(lines) = &mut by_room {
        lines.sort_by(|a, b| a.name.cmp(&b.name));
    }
    Ok(Stats {
        messages: reader.count()?,
        first_id: reader.oldest_id()?,
        last_id: reader.newest_id()?,
        file_bytes,
        schema_version: SCHEMA_VERSION,
        default_room: recorded,
        rooms,
        by_room,
    })
}
