//! The applier: reads the stream in order, from where the node's replica ends, and has the
//! writer store each message under its stream sequence (its id) and publish it to the hub.
//!
//! It owns its position: `next`, the first sequence not yet in the replica, which moves only
//! once the writer has committed what was read. Whatever ends a reader (an error, a missed
//! heartbeat, a gap in the consumer's sequence, the reader ending), what it had collected is
//! applied first and the next reader starts at `next`: nothing read is ever skipped.
//!
//! The stream is read through [`StreamSource`]: JetStream ([`JetStreamSource`]) in production,
//! a fake in the tests. On JetStream, a reader is a plain pull consumer created at
//! `ByStartSequence { next }` with a fresh name each time, and deleted when it is replaced.
//! async-nats' ordered consumer is not used: on nats-server 2.9, when the server hosting it
//! died, it stalled for minutes, and it restarts from the stream's start if it had delivered
//! nothing. A fresh name gets a fresh placement on a live server; each create is bounded.
//!
//! Sequences below the position are skipped (already applied). A consumer delivers every
//! message the stream holds, in order, numbering its deliveries 1, 2, 3...: a jump in its
//! numbering is a delivery it skipped, and the reader is replaced from `next`; a jump in the
//! stream's sequences with the numbering intact is messages the stream no longer holds
//! (retention took them: the oldest, or a room's oldest beyond its per-room limit), kept as a
//! hole the stream has too. A payload that is not a tidings record (someone else published to
//! the subject) is logged and skipped.
//!
//! [`fill_holes`] mends a replica that lacks sequences the stream still holds (a file written
//! before this rule), before the node serves.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_nats::jetstream::{
    self,
    consumer::{AckPolicy, DeliverPolicy, pull},
};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use tokio_util::sync::CancellationToken;

use crate::every::Backoff;
use crate::ingest::{AppendError, WriterHandle};
use crate::message::{MessageId, StoredRow};
use crate::storage::StoreReader;
use crate::storage::record::decode_record;

/// Most messages handed to the writer in one apply (one commit).
const MAX_APPLY: usize = 512;

/// Bound on one request to JetStream (a consumer create may be placed on a dead server and
/// never answer).
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);

/// Idle heartbeat of the pull requests: two missed and the consumer is replaced.
const HEARTBEAT: Duration = Duration::from_secs(1);

/// Pull request expiry (more than twice the heartbeat).
const EXPIRES: Duration = Duration::from_secs(5);

/// Waits between failed attempts: doubling from 50 ms to 2 s.
fn backoff() -> Backoff {
    Backoff::new(Duration::from_millis(50), Duration::from_secs(2))
}

/// One message as a reader delivers it.
#[derive(Debug, Clone)]
pub struct Delivered {
    /// Its sequence in the stream: its id.
    pub stream_sequence: u64,
    /// Its place in this reader's deliveries (1, 2, ...): a jump means the reader skipped.
    pub consumer_sequence: u64,
    /// The record.
    pub payload: Bytes,
}

/// Where the applier reads the stream.
pub trait StreamSource: Send + Sync {
    /// A reader's handle, kept until it is removed.
    type Consumer: Send;
    /// What a reader delivers, in order; an error or the end replaces the reader.
    type Reader: Stream<Item = Result<Delivered, String>> + Unpin + Send;

    /// Creates a reader starting at sequence `from` (or the first one after it that exists).
    fn create(&self, from: u64) -> impl Future<Output = Result<Self::Consumer, String>> + Send;
    /// Starts reading from `consumer`.
    fn read(
        &self,
        consumer: &Self::Consumer,
    ) -> impl Future<Output = Result<Self::Reader, String>> + Send;
    /// Removes a reader that is no longer read (in the background, best effort).
    fn remove(&self, consumer: Self::Consumer);
    /// The lowest sequence the stream holds (everything below went by retention).
    fn first_sequence(&self) -> impl Future<Output = Result<u64, String>> + Send;
    /// The record stored under `sequence`, `None` if the stream does not hold it.
    fn get(&self, sequence: u64) -> impl Future<Output = Result<Option<Bytes>, String>> + Send;
}

/// Applies the stream from `next` on, until `stop`.
pub async fn apply_forever<S: StreamSource>(
    source: S,
    mut next: u64,
    writer: WriterHandle,
    stop: CancellationToken,
) {
    let mut backoff = backoff();
    next = next.max(1);
    loop {
        let consumer = tokio::select! {
            created = source.create(next) => created,
            () = stop.cancelled() => return,
        };
        let consumer = match consumer {
            Ok(consumer) => consumer,
            Err(e) => {
                tracing::debug!(from = next, "cannot create the stream reader: {e}");
                if !backoff.wait(&stop).await {
                    return;
                }
                continue;
            }
        };
        let started_at = next;
        let reason = match source.read(&consumer).await {
            Ok(mut reader) => {
                tracing::debug!(from = next, "reading the stream");
                match read_and_apply::<S>(&mut reader, &mut next, &writer, &stop).await {
                    Ended::Stopped => {
                        source.remove(consumer);
                        return;
                    }
                    Ended::Read(reason) => reason,
                }
            }
            Err(e) => format!("cannot read the stream: {e}"),
        };
        source.remove(consumer);
        tracing::info!(from = next, "replacing the stream reader: {reason}");
        if next > started_at {
            // It made progress: the trouble is new, start the waits over.
            backoff.reset();
        }
        if !backoff.wait(&stop).await {
            return;
        }
    }
}

/// Why [`read_and_apply`] returned.
enum Ended {
    /// The server is stopping, or the writer stopped.
    Stopped,
    /// The reader must be replaced, for this reason.
    Read(String),
}

/// Reads `reader` and applies what it delivers, in batches of what has arrived (up to
/// [`MAX_APPLY`]), advancing `next` after each commit, until the reader fails.
async fn read_and_apply<S: StreamSource>(
    reader: &mut S::Reader,
    next: &mut u64,
    writer: &WriterHandle,
    stop: &CancellationToken,
) -> Ended {
    let mut delivered_through = 0u64;
    loop {
        let mut rows = Vec::new();
        // The sequence after the last one collected; `next` moves to it once they are applied.
        let mut cursor = *next;
        let mut trouble = None;
        loop {
            let item = if rows.is_empty() && cursor == *next {
                tokio::select! {
                    item = reader.next() => item,
                    () = stop.cancelled() => return Ended::Stopped,
                }
            } else {
                match futures_util::FutureExt::now_or_never(reader.next()) {
                    Some(item) => item,
                    None => break,
                }
            };
            let delivered = match item {
                None => {
                    trouble = Some("the stream reader ended".to_string());
                    break;
                }
                Some(Err(e)) => {
                    trouble = Some(format!("reading the stream: {e}"));
                    break;
                }
                Some(Ok(delivered)) => delivered,
            };
            if delivered.consumer_sequence != delivered_through + 1 {
                trouble = Some(format!(
                    "the reader skipped ({delivered_through} -> {})",
                    delivered.consumer_sequence
                ));
                break;
            }
            delivered_through = delivered.consumer_sequence;
            let seq = delivered.stream_sequence;
            if seq < cursor {
                continue;
            }
            if seq > cursor {
                tracing::debug!(
                    from = cursor,
                    to = seq - 1,
                    "the stream no longer holds these messages (retention): not applied"
                );
            }
            cursor = seq + 1;
            match decode_record(&delivered.payload) {
                Ok(record) => rows.push(StoredRow {
                    id: MessageId(seq),
                    message: record,
                }),
                Err(e) => tracing::error!(seq, "not a tidings message, skipped: {e}"),
            }
            if rows.len() >= MAX_APPLY {
                break;
            }
        }
        // What was collected is applied whatever comes next: the next reader starts after it.
        if !rows.is_empty() && !apply(writer, rows, stop).await {
            return Ended::Stopped;
        }
        *next = cursor;
        if let Some(reason) = trouble {
            return Ended::Read(reason);
        }
    }
}

/// Has the writer store and publish `rows`, retrying a failed commit (the replica must not
/// skip anything); false if the writer or the server stopped.
async fn apply(writer: &WriterHandle, rows: Vec<StoredRow>, stop: &CancellationToken) -> bool {
    let first = rows[0].id.0;
    let mut backoff = backoff();
    loop {
        match writer.apply(rows.clone()).await {
            Ok(_) => return true,
            Err(AppendError::Stopped) => return false,
            Err(e) => {
                tracing::error!(from = first, "applying from the stream failed: {e}");
                if !backoff.wait(stop).await {
                    return false;
                }
            }
        }
    }
}

/// Why a replica's holes could not be filled.
#[derive(Debug, thiserror::Error)]
#[error(
    "this node's replica lacks message {sequence}, which the stream still holds, and it could \
     not be read from the stream: {reason}"
)]
pub struct HoleError {
    /// The first sequence that could not be filled.
    pub sequence: u64,
    /// Why.
    pub reason: String,
}

/// Finds the sequences the replica lacks and the stream still holds (at or above its first
/// sequence, above what the replica's own retention deleted) and stores them from the stream,
/// retrying each read for up to `patience`. Returns how many it filled. Run before the node
/// serves: a replay across a hole would skip messages without a word.
pub async fn fill_holes<S: StreamSource>(
    source: &S,
    reader: &StoreReader,
    writer: &WriterHandle,
    patience: Duration,
) -> Result<usize, HoleError> {
    let first = retry(patience, || source.first_sequence())
        .await
        .map_err(|reason| HoleError {
            sequence: 0,
            reason,
        })?;
    let scan = reader.clone();
    let holes = tokio::task::spawn_blocking(move || {
        let from = first.max(scan.pruned_through()?.saturating_add(1));
        scan.missing_ids(from, scan.newest_id()?)
    })
    .await
    .map_err(|e| HoleError {
        sequence: first,
        reason: format!("the scan failed: {e}"),
    })?
    .map_err(|e| HoleError {
        sequence: first,
        reason: format!("the scan failed: {e}"),
    })?;
    let mut filled = 0;
    for (from, through) in holes {
        tracing::warn!(
            from,
            through,
            "the replica lacks these messages: filling them from the stream"
        );
        let mut rows = Vec::new();
        for sequence in from..=through {
            let found = retry(patience, || source.get(sequence))
                .await
                .map_err(|reason| HoleError { sequence, reason })?;
            let Some(payload) = found else {
                // Deleted by retention meanwhile: a hole the stream has too.
                continue;
            };
            match decode_record(&payload) {
                Ok(message) => rows.push(StoredRow {
                    id: MessageId(sequence),
                    message,
                }),
                Err(e) => tracing::error!(sequence, "not a tidings message, skipped: {e}"),
            }
        }
        filled += rows.len();
        writer.fill(rows).await.map_err(|e| HoleError {
            sequence: from,
            reason: format!("storing what was read failed: {e}"),
        })?;
    }
    Ok(filled)
}

/// Runs `attempt` until it succeeds or `patience` has passed (then its last error).
async fn retry<T, F: Future<Output = Result<T, String>>>(
    patience: Duration,
    mut attempt: impl FnMut() -> F,
) -> Result<T, String> {
    let deadline = tokio::time::Instant::now() + patience;
    let mut backoff = backoff();
    loop {
        match attempt().await {
            Ok(value) => return Ok(value),
            Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
            Err(e) => {
                tracing::debug!("retrying a stream request: {e}");
                backoff.sleep().await;
            }
        }
    }
}

static SERIAL: AtomicU64 = AtomicU64::new(0);

/// The stream on JetStream: pull consumers with fresh names, bounded requests.
pub struct JetStreamSource {
    js: jetstream::Context,
    stream: jetstream::stream::Stream,
    /// This node's name, as a consumer-name token.
    node: String,
}

impl JetStreamSource {
    /// Reads `stream` through `js` for the node `node`.
    pub fn new(js: jetstream::Context, stream: jetstream::stream::Stream, node: &str) -> Self {
        Self {
            js,
            stream,
            node: super::name_token(node),
        }
    }
}

/// A pull consumer of the stream, with its name (to delete it).
pub struct PullConsumer {
    name: String,
    consumer: jetstream::consumer::Consumer<pull::Config>,
}

/// What a pull consumer delivers, as [`Delivered`]s.
pub type PullReader = std::pin::Pin<Box<dyn Stream<Item = Result<Delivered, String>> + Send>>;

impl StreamSource for JetStreamSource {
    type Consumer = PullConsumer;
    type Reader = PullReader;

    async fn create(&self, from: u64) -> Result<PullConsumer, String> {
        let name = format!(
            "tidings-{}-{}",
            self.node,
            SERIAL.fetch_add(1, Ordering::Relaxed)
        );
        let config = pull::Config {
            name: Some(name.clone()),
            deliver_policy: DeliverPolicy::ByStartSequence {
                start_sequence: from,
            },
            ack_policy: AckPolicy::None,
            max_deliver: 1,
            memory_storage: true,
            num_replicas: 1,
            inactive_threshold: Duration::from_secs(10),
            ..Default::default()
        };
        let stream = self.stream.cached_info().config.name.clone();
        match tokio::time::timeout(
            REQUEST_TIMEOUT,
            self.js.create_consumer_on_stream(config, stream.as_str()),
        )
        .await
        {
            Ok(Ok(consumer)) => Ok(PullConsumer { name, consumer }),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("creating the stream reader timed out".into()),
        }
    }

    async fn read(&self, consumer: &PullConsumer) -> Result<PullReader, String> {
        let messages = consumer
            .consumer
            .stream()
            .max_messages_per_batch(MAX_APPLY)
            .heartbeat(HEARTBEAT)
            .expires(EXPIRES)
            .messages()
            .await
            .map_err(|e| e.to_string())?;
        Ok(Box::pin(messages.map(|item| {
            let message = item.map_err(|e| e.to_string())?;
            let info = message
                .info()
                .map_err(|e| format!("a message without its sequence: {e}"))?;
            Ok(Delivered {
                stream_sequence: info.stream_sequence,
                consumer_sequence: info.consumer_sequence,
                payload: message.payload.clone(),
            })
        })))
    }

    fn remove(&self, consumer: PullConsumer) {
        let (js, stream) = (
            self.js.clone(),
            self.stream.cached_info().config.name.clone(),
        );
        tokio::spawn(async move {
            // Best effort: it also expires after its inactivity threshold.
            let _ = tokio::time::timeout(
                REQUEST_TIMEOUT,
                js.delete_consumer_from_stream(&consumer.name, &stream),
            )
            .await;
        });
    }

    async fn first_sequence(&self) -> Result<u64, String> {
        let mut stream = self.stream.clone();
        match tokio::time::timeout(REQUEST_TIMEOUT, stream.info()).await {
            Ok(Ok(info)) => Ok(info.state.first_sequence),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("the stream's state did not come in time".into()),
        }
    }

    async fn get(&self, sequence: u64) -> Result<Option<Bytes>, String> {
        use jetstream::stream::RawMessageErrorKind;
        match tokio::time::timeout(REQUEST_TIMEOUT, self.stream.get_raw_message(sequence)).await {
            Ok(Ok(message)) => Ok(Some(message.payload)),
            Ok(Err(e)) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("reading message {sequence} timed out")),
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::message::RetryKey;
    use std::collections::VecDeque;
    use std::sync::{Arc, Mutex, PoisonError};

    use futures_util::stream;

    use super::*;
    use crate::delivery::{Hub, TailLimits};
    use crate::ingest::{WriterConfig, spawn_writer};
    use crate::message::StoredMessage;
    use crate::message::test_support::input;
    use crate::storage::record::encode_record;
    use crate::storage::{Store, TEST_CACHE_BYTES};

    /// What one reader the fake creates does.
    #[derive(Debug, Clone, Copy)]
    enum Script {
        /// Delivers this many messages, then fails.
        FailAfter(usize),
        /// Delivers this many, then skips one delivery (its numbering jumps by two), then
        /// goes on.
        SkipDelivery { after: usize },
        /// `read` fails.
        CannotRead,
    }

    /// A stream in memory: sequences `first..=records.len()`, read by scripted readers.
    struct FakeSource {
        records: Vec<Bytes>,
        first: u64,
        scripts: Mutex<VecDeque<Script>>,
        /// Every reader created, by its start; and how many were removed.
        created: Mutex<Vec<u64>>,
        removed: AtomicU64,
        /// Stops the applier once it has created this many readers (a spinning loop ends).
        stop_after: usize,
        stop: CancellationToken,
    }

    impl FakeSource {
        fn new(messages: u64, first: u64, scripts: &[Script], stop: &CancellationToken) -> Self {
            let records = (1..=messages)
                .map(|n| {
                    let record = StoredMessage::from_input(
                        &input(&format!("m{n}"), Some(&format!("o-{n}"))),
                        n,
                    );
                    Bytes::from(encode_record(&record))
                })
                .collect();
            Self {
                records,
                first,
                scripts: Mutex::new(scripts.iter().copied().collect()),
                created: Mutex::default(),
                removed: AtomicU64::new(0),
                stop_after: 100,
                stop: stop.clone(),
            }
        }

        fn created(&self) -> Vec<u64> {
            self.created
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    impl StreamSource for Arc<FakeSource> {
        type Consumer = (u64, Option<Script>);
        type Reader = std::pin::Pin<Box<dyn Stream<Item = Result<Delivered, String>> + Send>>;

        async fn create(&self, from: u64) -> Result<Self::Consumer, String> {
            let mut created = self.created.lock().unwrap_or_else(PoisonError::into_inner);
            created.push(from);
            if created.len() >= self.stop_after {
                self.stop.cancel();
            }
            let script = self
                .scripts
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pop_front();
            Ok((from, script))
        }

        async fn read(&self, consumer: &Self::Consumer) -> Result<Self::Reader, String> {
            let (from, script) = *consumer;
            if matches!(script, Some(Script::CannotRead)) {
                return Err("no reader today".into());
            }
            let mut items = Vec::new();
            let mut sequence = from.max(self.first);
            let mut consumer_sequence = 0;
            while sequence <= self.records.len() as u64 {
                match script {
                    Some(Script::FailAfter(n)) if items.len() == n => {
                        items.push(Err("the connection broke".to_string()));
                        break;
                    }
                    Some(Script::SkipDelivery { after }) if items.len() == after => {
                        sequence += 1;
                        consumer_sequence += 1;
                        if sequence > self.records.len() as u64 {
                            break;
                        }
                    }
                    _ => {}
                }
                consumer_sequence += 1;
                items.push(Ok(Delivered {
                    stream_sequence: sequence,
                    consumer_sequence,
                    payload: self.records[sequence as usize - 1].clone(),
                }));
                sequence += 1;
            }
            // A live reader waits for more once it has delivered what there is.
            Ok(Box::pin(stream::iter(items).chain(stream::pending())))
        }

        fn remove(&self, _: Self::Consumer) {
            self.removed.fetch_add(1, Ordering::Relaxed);
        }

        async fn first_sequence(&self) -> Result<u64, String> {
            Ok(self.first)
        }

        async fn get(&self, sequence: u64) -> Result<Option<Bytes>, String> {
            Ok((sequence >= self.first)
                .then(|| self.records.get(sequence as usize - 1).cloned())
                .flatten())
        }
    }

    struct Replica {
        _dir: tempfile::TempDir,
        reader: StoreReader,
        hub: Arc<Hub>,
        writer: WriterHandle,
    }

    fn new_replica() -> Replica {
        let dir = tempfile::tempdir().expect("temp dir");
        let (reader, store) =
            Store::open(&dir.path().join("r.redb"), TEST_CACHE_BYTES).expect("open");
        let tail = TailLimits {
            max_messages: 100,
            max_bytes: 1 << 20,
        };
        let hub = Arc::new(Hub::new(store.last_id(), 64, tail, []));
        let (writer, _) = spawn_writer(store, hub.clone(), WriterConfig::default()).expect("spawn");
        Replica {
            _dir: dir,
            reader,
            hub,
            writer,
        }
    }

    /// Runs the applier over `source` until the replica has `through` (or 10 s pass).
    async fn apply_until(source: &Arc<FakeSource>, replica: &Replica, through: u64) {
        let stop = source.stop.clone();
        let applier = tokio::spawn(apply_forever(
            source.clone(),
            1,
            replica.writer.clone(),
            stop.clone(),
        ));
        let reached =
            tokio::time::timeout(Duration::from_secs(10), replica.hub.published(through)).await;
        stop.cancel();
        let _ = applier.await;
        assert!(
            reached.is_ok(),
            "the replica reached {} of {through}; readers started at {:?}",
            replica.hub.last_published(),
            source.created()
        );
    }

    /// The replica's ids and contents, in order.
    fn history(replica: &Replica) -> Vec<(u64, String)> {
        replica
            .reader
            .read_range(0, u64::MAX, usize::MAX, usize::MAX)
            .expect("read")
            .into_iter()
            .map(|row| (row.id.0, row.message.content))
            .collect()
    }

    /// Checks that the replica holds exactly the stream's messages `from..=through`, naming
    /// what it lacks (or holds besides) if not.
    fn assert_holds(replica: &Replica, from: u64, through: u64) {
        let held = history(replica);
        let expected: Vec<(u64, String)> = (from..=through).map(|n| (n, format!("m{n}"))).collect();
        if held != expected {
            let ids: std::collections::BTreeSet<u64> = held.iter().map(|(id, _)| *id).collect();
            let missing: Vec<u64> = (from..=through).filter(|id| !ids.contains(id)).collect();
            panic!(
                "the replica holds {} messages, expected {}; missing {} of them, first {:?}",
                held.len(),
                expected.len(),
                missing.len(),
                &missing[..missing.len().min(10)]
            );
        }
    }

    #[tokio::test]
    async fn a_reader_failing_in_the_middle_of_a_batch_loses_nothing() {
        let stop = CancellationToken::new();
        // Each reader breaks after some messages, all of which arrive in one batch.
        let scripts = [
            Script::FailAfter(7),
            Script::FailAfter(300),
            Script::FailAfter(1),
            Script::FailAfter(0),
            Script::FailAfter(600),
        ];
        let source = Arc::new(FakeSource::new(1000, 1, &scripts, &stop));
        let replica = new_replica();
        apply_until(&source, &replica, 1000).await;
        assert_holds(&replica, 1, 1000);
        // Every reader started where the replica ended.
        assert_eq!(source.created()[..5], [1, 8, 308, 309, 309]);
        // Every reader was removed but the last, which the stop left (it expires by itself).
        assert!(source.removed.load(Ordering::Relaxed) >= 5);
        // And every message is a retry of itself: the dedup index was filled as applied.
        let again = replica
            .reader
            .find_retry(&RetryKey::new(None, "o-500", "m500"))
            .expect("lookup");
        assert_eq!(again, Some(MessageId(500)));
    }

    #[tokio::test]
    async fn a_skipped_delivery_is_read_again_and_retention_s_holes_are_kept() {
        // The consumer numbers its deliveries 1..5, then 7: it skipped one.
        let stop = CancellationToken::new();
        let skip = [Script::SkipDelivery { after: 5 }];
        let source = Arc::new(FakeSource::new(50, 1, &skip, &stop));
        let replica = new_replica();
        apply_until(&source, &replica, 50).await;
        assert_holds(&replica, 1, 50);
        assert_eq!(
            source.created()[..2],
            [1, 6],
            "re-read from the first one missing"
        );

        // Retention took 1..=9 before this replica read them: that hole is the stream's own.
        let stop = CancellationToken::new();
        let source = Arc::new(FakeSource::new(50, 10, &[], &stop));
        let pruned = new_replica();
        apply_until(&source, &pruned, 50).await;
        assert_holds(&pruned, 10, 50);
    }

    #[tokio::test(start_paused = true)]
    async fn a_reader_that_cannot_read_is_removed_and_retried_with_a_pause() {
        let stop = CancellationToken::new();
        let scripts = [Script::CannotRead; 200];
        let source = Arc::new(FakeSource::new(10, 1, &scripts, &stop));
        let replica = new_replica();
        let applier = tokio::spawn(apply_forever(
            source.clone(),
            1,
            replica.writer.clone(),
            stop.clone(),
        ));
        tokio::select! {
            () = tokio::time::sleep(Duration::from_secs(10)) => {}
            () = stop.cancelled() => {}
        }
        stop.cancel();
        let _ = applier.await;
        let created = source.created().len();
        // 50 ms doubling to 2 s: about 9 attempts in 10 s (a loop without a pause makes the
        // fake stop it at 100).
        assert!((5..=12).contains(&created), "{created} readers in 10 s");
        assert_eq!(
            source.removed.load(Ordering::Relaxed),
            created as u64,
            "every reader that could not read was removed"
        );
    }

    #[tokio::test]
    async fn holes_in_a_replica_are_filled_from_the_stream() {
        let stop = CancellationToken::new();
        let source = Arc::new(FakeSource::new(20, 3, &[], &stop));
        let replica = new_replica();
        // The replica has 1..=20 but for 5..=7 and 12 (retention deleted 1..=2 from the
        // stream: the replica keeps its copies).
        let rows: Vec<StoredRow> = (1..=20u64)
            .filter(|n| !(5..=7).contains(n) && *n != 12)
            .map(|n| StoredRow {
                id: MessageId(n),
                message: decode_record(&source.records[n as usize - 1]).expect("record"),
            })
            .collect();
        replica.writer.apply(rows).await.expect("applied");
        let filled = fill_holes(&source, &replica.reader, &replica.writer, Duration::ZERO)
            .await
            .expect("filled");
        assert_eq!(filled, 4);
        assert_holds(&replica, 1, 20);
        assert_eq!(
            replica
                .reader
                .find_retry(&RetryKey::new(None, "o-6", "m6"))
                .expect("lookup"),
            Some(MessageId(6))
        );
        // Nothing left to fill.
        let again = fill_holes(&source, &replica.reader, &replica.writer, Duration::ZERO).await;
        assert_eq!(again.ok(), Some(0));
    }
}
