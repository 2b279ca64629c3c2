//! The store against a model, the way redb fuzzes itself: a sequence of operations (appends
//! to four rooms with and without a client offset, retries, the same offset with other
//! content, imports, retention by age and per room by count, history pages and replays of the
//! whole log and of rooms, clean reopens, failed commits followed by a reopen, and crashes in
//! the middle of a commit) runs on the real store over an in-memory disk and on a plain
//! `BTreeMap`. After every step: ids are strictly increasing and never reused, every dedup
//! answer is the model's (the same offset and content in two rooms are two messages), every
//! page and every replay is the model's range, each room's counters are the model's, and a
//! failed or crashed commit stored all of its batch or none of it.
#![no_main]

use std::collections::BTreeMap;
use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use libfuzzer_sys::fuzz_target;
use tidings::message::{
    AppendOutcome, ChatInput, ClientOffset, MessageId, StoredMessage, StoredRow,
};
use tidings::storage::fault::{Crash, FaultSwitch, MemoryDisk};
use tidings::storage::{
    ImportSummary, RoomCursor, RoomStats, Store, StoreError, StoreReader, StoreWriter,
};

/// Operations per input: enough to fill, prune and crash, few enough for ~1000 inputs a second.
const MAX_OPS: usize = 48;

/// A message from a small alphabet, so offsets and contents collide often.
#[derive(Debug, Clone, Copy, Arbitrary)]
struct Text(u8);

impl Text {
    /// Eight contents, of 1 to 64 bytes (the byte bounds of replays get reached).
    fn content(self) -> String {
        let len = 1usize << (self.0 >> 5).min(6);
        char::from(b'a' + (self.0 & 7)).to_string().repeat(len)
    }
}

#[derive(Debug, Clone, Copy, Arbitrary)]
struct Msg {
    content: Text,
    /// One of six offsets (the tutorial's `undefined-0` while offline is shared by clients).
    offset: Option<u8>,
    author: bool,
    /// The default room, or one of three others.
    room: Option<u8>,
    /// An anonymous sender, or one of two verified users.
    user: Option<bool>,
}

/// The room `n` picks (`None`: the default room).
fn room(n: Option<u8>) -> Option<String> {
    n.map(|n| format!("r{}", n % 3))
}

impl Msg {
    fn input(self) -> ChatInput {
        ChatInput {
            content: self.content.content(),
            client_offset: self.offset.map(|o| ClientOffset(format!("o{}", o % 6))),
            author: self.author.then(|| "ada".to_string()),
            room: room(self.room),
            user: self.user.map(|u| if u { "u1" } else { "u2" }.to_string()),
            event: None,
        }
    }
}

/// An import line's id: near the stored ids, or anything at all.
#[derive(Debug, Clone, Copy, Arbitrary)]
enum ImportId {
    Near(i8),
    Any(u64),
}

#[derive(Debug, Arbitrary)]
enum Op {
    /// A batch, as the writer commits it.
    Append(Vec<Msg>),
    /// A client retrying a stored message (same offset, same content).
    Retry(u16),
    /// A stored message's offset with other content: a different message, stored anew.
    SameOffsetOtherContent(u16, Text),
    /// `tidings import`.
    Import(Vec<(ImportId, Msg)>),
    /// Retention by age and per room by count, at most `max_rows` per call.
    Prune {
        keep_newest: Option<u8>,
        older_than: Option<u8>,
        max_rows: u8,
    },
    /// A `history` page of the whole log.
    Page { before: Option<u16>, limit: u8 },
    /// A `history` page of one room.
    RoomPage {
        room: Option<u8>,
        before: Option<u16>,
        limit: u8,
    },
    /// One replay batch of some rooms, each from its own cursor, and the whole of it.
    RoomReplay {
        rooms: Vec<(Option<u8>, u16)>,
        up_to: u16,
        max_count: u8,
        max_bytes: u16,
    },
    /// One replay batch from any offset.
    Replay {
        after: u16,
        up_to: u16,
        max_count: u8,
        max_bytes: u16,
    },
    /// A close and reopen (what the writer does after a failure), with a working disk.
    Reopen,
    /// The disk fills up after `after` writes: the batch's commit may fail; then the writer
    /// reopens, once while the disk is still full (it stays closed) if `still_full`.
    FailingAppend {
        after: u8,
        batch: Vec<Msg>,
        still_full: bool,
    },
    /// The process dies (or the power goes) after `after` writes into a commit: the
    /// transaction in flight is dropped, and a new process opens the disk.
    Crash {
        after: u8,
        batch: Vec<Msg>,
        lose_unsynced: bool,
    },
}

/// What the store must hold: a plain map.
#[derive(Debug, Default, Clone)]
struct Model {
    rows: BTreeMap<u64, StoredMessage>,
    /// The highest id ever assigned (ids are never reused, even after retention).
    last_id: u64,
    pruned_through: u64,
    /// Each room that ever held a message: its newest id ever, and the highest id retention
    /// took from it.
    rooms: BTreeMap<Option<String>, (u64, u64)>,
}

impl Model {
    /// The oldest stored message of `room` from `user` with this offset and content.
    fn original(
        &self,
        room: Option<&str>,
        user: Option<&str>,
        offset: &str,
        content: &str,
    ) -> Option<u64> {
        self.rows
            .iter()
            .find(|(_, m)| {
                m.room.as_deref() == room
                    && m.user.as_deref() == user
                    && m.client_offset.as_deref() == Some(offset)
                    && m.content == content
            })
            .map(|(id, _)| *id)
    }

    /// Stores `message` as `id`.
    fn insert(&mut self, id: u64, message: StoredMessage) {
        let room = self.rooms.entry(message.room.clone()).or_default();
        room.0 = room.0.max(id);
        self.rows.insert(id, message);
    }

    /// Retention deletes `id`.
    fn delete(&mut self, id: u64) {
        if let Some(message) = self.rows.remove(&id) {
            let room = self.rooms.entry(message.room).or_default();
            room.1 = room.1.max(id);
            self.pruned_through = self.pruned_through.max(id);
        }
    }

    /// A room's counters, as the store keeps them.
    fn stats(&self, room: &Option<String>) -> Option<RoomStats> {
        let (last, pruned_through) = *self.rooms.get(room)?;
        let messages = self.rows.values().filter(|m| &m.room == room).count() as u64;
        Some(RoomStats {
            messages,
            last,
            pruned_through,
        })
    }

    /// `room`'s rows in `(after, up_to]`.
    fn room_range(&self, room: &Option<String>, after: u64, up_to: u64) -> Vec<StoredRow> {
        self.range(after, up_to)
            .into_iter()
            .filter(|row| &row.message.room == room)
            .collect()
    }

    fn append(&mut self, inputs: &[ChatInput], time: u64) -> Vec<AppendOutcome> {
        inputs
            .iter()
            .map(|input| {
                if let Some(offset) = &input.client_offset
                    && let Some(id) =
                        self.original(
                            input.room.as_deref(),
                            input.user.as_deref(),
                            &offset.0,
                            &input.content,
                        )
                {
                    return AppendOutcome::Duplicate(MessageId(id));
                }
                self.last_id += 1;
                self.insert(self.last_id, StoredMessage::from_input(input, time));
                AppendOutcome::Stored(MessageId(self.last_id))
            })
            .collect()
    }

    fn import(&mut self, records: &[StoredRow]) -> ImportSummary {
        let mut summary = ImportSummary::default();
        for record in records {
            let same_id = self
                .rows
                .get(&record.id.0)
                .is_some_and(|m| m.content == record.message.content);
            let retry = record.message.client_offset.as_deref().is_some_and(|o| {
                self.original(
                    record.message.room.as_deref(),
                    record.message.user.as_deref(),
                    o,
                    &record.message.content,
                )
                    .is_some()
            });
            if same_id || retry {
                summary.skipped += 1;
                continue;
            }
            let id = if record.id.0 > self.last_id && record.id <= MessageId::MAX {
                summary.kept_id += 1;
                record.id.0
            } else {
                summary.new_id += 1;
                self.last_id + 1
            };
            self.last_id = id;
            self.insert(id, record.message.clone());
        }
        summary
    }

    /// Deletes at most `max_rows` rows: first the oldest received before `older_than_ms`,
    /// then, room by room (the default room first, then by name), each room's oldest beyond
    /// its newest `keep_newest`.
    fn prune(
        &mut self,
        keep_newest: Option<u64>,
        older_than_ms: Option<u64>,
        max_rows: usize,
    ) -> (usize, u64) {
        let mut doomed: Vec<u64> = match older_than_ms {
            None => Vec::new(),
            Some(cutoff) => self
                .rows
                .iter()
                .take_while(|(_, m)| m.received_at_ms < cutoff)
                .take(max_rows)
                .map(|(id, _)| *id)
                .collect(),
        };
        for id in &doomed {
            self.delete(*id);
        }
        if let Some(keep) = keep_newest {
            let rooms: Vec<Option<String>> = self.rooms.keys().cloned().collect();
            for room in rooms {
                let ids: Vec<u64> = self
                    .rows
                    .iter()
                    .filter(|(_, m)| m.room == room)
                    .map(|(id, _)| *id)
                    .collect();
                let excess = ids.len().saturating_sub(usize::try_from(keep).unwrap_or(0));
                let left = max_rows - doomed.len();
                for id in ids.into_iter().take(excess.min(left)) {
                    self.delete(id);
                    doomed.push(id);
                }
            }
        }
        (doomed.len(), self.pruned_through)
    }

    fn range(&self, after: u64, up_to: u64) -> Vec<StoredRow> {
        let Some(first) = after.checked_add(1) else {
            return Vec::new();
        };
        if first > up_to {
            return Vec::new();
        }
        self.rows
            .range(first..=up_to)
            .map(|(id, m)| StoredRow {
                id: MessageId(*id),
                message: m.clone(),
            })
            .collect()
    }
}

struct Rig {
    disk: MemoryDisk,
    reader: StoreReader,
    writer: StoreWriter,
    model: Model,
    /// The model before a commit whose outcome is unknown until the disk is read again (it
    /// failed, or the process crashed during it).
    pending: Option<Model>,
    /// Receive times: one tick per message, as a clock would give them.
    now: u64,
}

fn ok<T>(result: Result<T, StoreError>, what: &str) -> T {
    result.unwrap_or_else(|e| panic!("{what} failed on a working disk: {e}"))
}

impl Rig {
    fn new(disk: MemoryDisk) -> Self {
        let (reader, writer) = ok(Store::open_memory(&disk), "open");
        Self {
            disk,
            reader,
            writer,
            model: Model::default(),
            pending: None,
            now: 1_000,
        }
    }

    fn everything(&self) -> Vec<StoredRow> {
        ok(
            self.reader.read_range(0, u64::MAX, usize::MAX, usize::MAX),
            "full replay",
        )
    }

    /// Everything the store holds equals the model.
    fn check(&self) {
        assert_eq!(self.writer.last_id(), self.model.last_id, "last id");
        assert_eq!(
            self.everything(),
            self.model.range(0, u64::MAX),
            "stored rows"
        );
    }

    /// And so do its counters (checked less often: each is a read transaction).
    fn check_counters(&self) {
        for room in [
            None,
            Some("r0".to_string()),
            Some("r1".into()),
            Some("r2".into()),
        ] {
            assert_eq!(
                ok(self.reader.room_stats(room.as_deref()), "room stats"),
                self.model.stats(&room),
                "the counters of room {room:?}"
            );
        }
        assert_eq!(
            ok(self.reader.count(), "count"),
            self.model.rows.len() as u64
        );
        let oldest = self.model.rows.keys().next().copied().unwrap_or(0);
        let newest = self.model.rows.keys().next_back().copied().unwrap_or(0);
        assert_eq!(ok(self.reader.oldest_id(), "oldest"), oldest);
        assert_eq!(ok(self.reader.newest_id(), "newest"), newest);
        assert_eq!(
            ok(self.reader.pruned_through(), "pruned through"),
            self.model.pruned_through
        );
    }

    fn tick(&mut self) -> u64 {
        self.now += 1;
        self.now
    }

    /// Appends on a working disk: the answers must be the model's.
    fn append(&mut self, inputs: &[ChatInput]) -> Vec<AppendOutcome> {
        let time = self.tick();
        let last_before = self.model.last_id;
        let got = ok(self.writer.append_batch(inputs, time), "append");
        let want = self.model.append(inputs, time);
        assert_eq!(got, want, "dedup answers and ids of {inputs:?}");
        // Said outright, though the model implies it: new ids are fresh and increasing.
        let mut last = last_before;
        for outcome in &got {
            if let AppendOutcome::Stored(MessageId(id)) = outcome {
                assert!(*id > last, "id {id} after {last}: reused or out of order");
                last = *id;
            }
        }
        got
    }

    /// Appends a batch whose commit may fail half-way (the disk fills up).
    fn append_at_risk(&mut self, batch: &[Msg]) -> bool {
        let inputs: Vec<ChatInput> = batch.iter().map(|m| m.input()).collect();
        let time = self.tick();
        let before = self.model.clone();
        let want = self.model.append(&inputs, time);
        match self.writer.append_batch(&inputs, time) {
            Ok(got) => {
                assert_eq!(got, want, "dedup answers and ids of {inputs:?}");
                true
            }
            Err(_) => {
                self.pending = Some(before);
                false
            }
        }
    }

    /// After a reopen: a commit that failed stored all of its batch or none of it.
    fn settle(&mut self) {
        let Some(before) = self.pending.take() else {
            return;
        };
        let stored = self.everything();
        if stored == before.range(0, u64::MAX) && self.writer.last_id() == before.last_id {
            self.model = before;
        } else {
            assert_eq!(
                stored,
                self.model.range(0, u64::MAX),
                "a failed commit stored part of its batch"
            );
        }
    }
}

fn pick(model: &Model, n: u16) -> Option<StoredMessage> {
    let len = model.rows.len();
    (len > 0)
        .then(|| model.rows.values().nth(usize::from(n) % len).cloned())
        .flatten()
}

fn step(mut rig: Rig, switch: &FaultSwitch, op: Op) -> Rig {
    match op {
        Op::Append(batch) => {
            let inputs: Vec<ChatInput> = batch.iter().map(|m| m.input()).collect();
            rig.append(&inputs);
        }
        Op::Retry(n) => {
            let Some(stored) = pick(&rig.model, n) else {
                return rig;
            };
            let input = ChatInput {
                content: stored.content.clone(),
                client_offset: stored.client_offset.clone().map(ClientOffset),
                author: stored.author.clone(),
                room: stored.room.clone(),
                user: stored.user.clone(),
                event: None,
            };
            let got = rig.append(&[input]);
            if stored.client_offset.is_some() {
                assert!(
                    matches!(got[..], [AppendOutcome::Duplicate(_)]),
                    "a retry of a stored message was stored again: {got:?}"
                );
            }
        }
        Op::SameOffsetOtherContent(n, text) => {
            let Some(stored) = pick(&rig.model, n) else {
                return rig;
            };
            let input = ChatInput {
                content: format!("{}{}", stored.content, text.content()),
                client_offset: stored.client_offset.clone().map(ClientOffset),
                author: None,
                room: stored.room.clone(),
                user: stored.user.clone(),
                event: None,
            };
            rig.append(&[input]);
        }
        Op::Import(lines) => {
            let records: Vec<StoredRow> = lines
                .iter()
                .map(|(id, msg)| {
                    let id = match *id {
                        ImportId::Near(d) => rig.model.last_id.saturating_add_signed(i64::from(d)),
                        ImportId::Any(id) => id,
                    };
                    let time = rig.tick();
                    StoredRow {
                        id: MessageId(id),
                        message: StoredMessage::from_input(&msg.input(), time),
                    }
                })
                .collect();
            let got = ok(rig.writer.import(&records), "import");
            let want = rig.model.import(&records);
            assert_eq!(got, want, "import summary of {records:?}");
        }
        Op::Prune {
            keep_newest,
            older_than,
            max_rows,
        } => {
            let keep = keep_newest.map(u64::from);
            // Receive times start at 1000 and grow by one per message.
            let cutoff = older_than.map(|t| 1_000 + u64::from(t));
            let max_rows = usize::from(max_rows % 16) + 1;
            let got = ok(rig.writer.prune(keep, cutoff, max_rows), "prune");
            let want = rig.model.prune(keep, cutoff, max_rows);
            assert_eq!(
                got, want,
                "prune (keep {keep:?}, before {cutoff:?}, {max_rows} rows)"
            );
        }
        Op::Page { before, limit } => {
            let before = before.map(u64::from);
            let limit = usize::from(limit % 32);
            let (rows, more) = ok(rig.reader.read_before(before, limit), "history");
            let older = match before {
                None => rig.model.range(0, u64::MAX),
                Some(before) => rig.model.range(0, before.saturating_sub(1)),
            };
            let want = &older[older.len().saturating_sub(limit)..];
            assert_eq!(rows, want, "history page before {before:?}, limit {limit}");
            assert_eq!(
                more,
                rows.len() == limit && older.len() > limit,
                "history page before {before:?}, limit {limit}: has more"
            );
        }
        Op::RoomPage {
            room: n,
            before,
            limit,
        } => {
            let room = room(n);
            let before = before.map(u64::from);
            let limit = usize::from(limit % 32);
            let (rows, more) = ok(
                rig.reader.read_room_before(room.as_deref(), before, limit),
                "room history",
            );
            let up_to = before.map_or(u64::MAX, |b| b.saturating_sub(1));
            let older = rig.model.room_range(&room, 0, up_to);
            let want = &older[older.len().saturating_sub(limit)..];
            assert_eq!(
                rows, want,
                "room {room:?} page before {before:?}, limit {limit}"
            );
            assert_eq!(
                more,
                rows.len() == limit && older.len() > limit,
                "room {room:?} page before {before:?}, limit {limit}: has more"
            );
        }
        Op::RoomReplay {
            rooms,
            up_to,
            max_count,
            max_bytes,
        } => {
            let up_to = u64::from(up_to % 512);
            let max_count = usize::from(max_count % 32).max(1);
            let max_bytes = usize::from(max_bytes % 512);
            // Each room once, with its cursor.
            let mut cursors: BTreeMap<Option<String>, u64> = BTreeMap::new();
            for (n, after) in rooms.into_iter().take(4) {
                cursors.entry(room(n)).or_insert(u64::from(after % 512));
            }
            let cursors: Vec<RoomCursor> = cursors
                .into_iter()
                .map(|(room, after)| RoomCursor { room, after })
                .collect();
            let mut all: Vec<StoredRow> = cursors
                .iter()
                .flat_map(|c| rig.model.room_range(&c.room, c.after, up_to))
                .collect();
            all.sort_by_key(|row| row.id);
            let batch = ok(
                rig.reader.read_rooms(&cursors, up_to, max_count, max_bytes),
                "room replay",
            );
            let mut want = Vec::new();
            let mut bytes = 0;
            for row in &all {
                bytes += row.message.content.len();
                want.push(row.clone());
                if want.len() >= max_count || bytes >= max_bytes {
                    break;
                }
            }
            assert_eq!(
                batch, want,
                "room replay batch of {cursors:?} up to {up_to}"
            );
            // The whole replay, batch after batch, as a catch-up reader reads it.
            let mut after = 0;
            let mut whole: Vec<StoredRow> = Vec::new();
            loop {
                let moved: Vec<RoomCursor> = cursors
                    .iter()
                    .map(|c| RoomCursor {
                        room: c.room.clone(),
                        after: c.after.max(after),
                    })
                    .collect();
                let rows = ok(
                    rig.reader.read_rooms(&moved, up_to, max_count, max_bytes),
                    "room replay",
                );
                let Some(last) = rows.last() else { break };
                assert!(last.id.0 > after, "a replay batch goes forward");
                after = last.id.0;
                whole.extend(rows);
            }
            assert_eq!(
                whole, all,
                "the whole room replay of {cursors:?} up to {up_to}"
            );
        }
        Op::Replay {
            after,
            up_to,
            max_count,
            max_bytes,
        } => {
            let (after, up_to) = (u64::from(after % 512), u64::from(up_to % 512));
            let max_count = usize::from(max_count % 32);
            let max_bytes = usize::from(max_bytes % 512);
            let batch = ok(
                rig.reader.read_range(after, up_to, max_count, max_bytes),
                "replay",
            );
            // One batch is the model's range cut after `max_count` rows or once `max_bytes`
            // of content is in, with at least one row.
            let all = rig.model.range(after, up_to);
            let mut want = Vec::new();
            let mut bytes = 0;
            for row in &all {
                bytes += row.message.content.len();
                want.push(row.clone());
                if want.len() >= max_count || bytes >= max_bytes {
                    break;
                }
            }
            assert_eq!(batch, want, "replay batch ({after}, {up_to}]");
            // The whole replay, batch after batch, as a catch-up reader reads it.
            let mut cursor = after;
            let mut whole: Vec<StoredRow> = Vec::new();
            loop {
                let rows = ok(
                    rig.reader.read_range(cursor, up_to, max_count, max_bytes),
                    "replay",
                );
                let Some(last) = rows.last() else { break };
                assert!(last.id.0 > cursor, "a replay batch goes forward");
                cursor = last.id.0;
                whole.extend(rows);
            }
            assert_eq!(whole, all, "the whole replay ({after}, {up_to}]");
        }
        Op::Reopen => ok(rig.writer.reopen(), "reopen"),
        Op::FailingAppend {
            after,
            batch,
            still_full,
        } => {
            switch.fail_after(u64::from(after));
            let stored = rig.append_at_risk(&batch);
            if !stored || switch.is_failing() {
                if still_full {
                    switch.set_failing(true);
                    if rig.writer.reopen().is_err() {
                        assert!(!rig.writer.is_open());
                        let input = Msg {
                            content: Text(0),
                            offset: None,
                            author: false,
                            room: None,
                            user: None,
                        };
                        let refused = rig.writer.append_batch(&[input.input()], rig.now);
                        assert!(
                            matches!(refused, Err(StoreError::Closed)),
                            "a closed store stores nothing: {refused:?}"
                        );
                        assert!(matches!(rig.reader.count(), Err(StoreError::Closed)));
                    }
                }
                switch.set_failing(false);
                ok(rig.writer.reopen(), "reopen once the disk has room");
                rig.settle();
            }
            switch.set_failing(false);
        }
        Op::Crash {
            after,
            batch,
            lose_unsynced,
        } => {
            switch.fail_after(u64::from(after));
            rig.append_at_risk(&batch);
            // The process dies: nothing more reaches the disk, not even what closing writes.
            switch.set_failing(true);
            let Rig {
                disk,
                reader,
                writer,
                model,
                pending,
                now,
            } = rig;
            drop((reader, writer));
            disk.crash(if lose_unsynced {
                Crash::LoseUnsynced
            } else {
                Crash::KeepUnsynced
            });
            switch.set_failing(false);
            let (reader, writer) = ok(Store::open_memory(&disk), "open after a crash");
            rig = Rig {
                disk,
                reader,
                writer,
                model,
                pending,
                now,
            };
            rig.settle();
        }
    }
    rig
}

/// A new, empty database, cleanly closed: every run starts from a copy of it.
fn empty_database() -> &'static MemoryDisk {
    static EMPTY: OnceLock<MemoryDisk> = OnceLock::new();
    EMPTY.get_or_init(|| {
        let disk = MemoryDisk::default();
        let (reader, writer) = ok(Store::open_memory(&disk), "create");
        drop(writer);
        ok(reader.close(), "close");
        disk
    })
}

fuzz_target!(|data: &[u8]| {
    let mut input = Unstructured::new(data);
    let switch = FaultSwitch::default();
    let mut rig = Rig::new(empty_database().copy(switch.clone()));
    for _ in 0..MAX_OPS {
        // An exhausted input would go on yielding default operations: stop instead.
        if input.is_empty() {
            break;
        }
        let Ok(op) = Op::arbitrary(&mut input) else {
            break;
        };
        let reads_only = matches!(
            op,
            Op::Page { .. } | Op::RoomPage { .. } | Op::Replay { .. } | Op::RoomReplay { .. }
        );
        let reopens = matches!(op, Op::Reopen | Op::FailingAppend { .. } | Op::Crash { .. });
        rig = step(rig, &switch, op);
        if !reads_only {
            rig.check();
        }
        if reopens {
            rig.check_counters();
        }
    }
    rig.check_counters();
    // Done: the process may as well die (closing cleanly writes; nobody reads it again).
    switch.set_failing(true);
    drop(rig);
});
