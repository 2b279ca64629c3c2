//! Concurrency: clients connecting mid-flood (offset 0 and random offsets) each end with the
//! exact, gap-free, duplicate-free sequence; every message sent is stored once, each
//! sender's in the order it sent them; live subscribers that lag catch up from the store.
//!
//! The tests of this file run one at a time (each takes `SERIAL`): the metrics they read to
//! prove which path they exercised are the process's, and each flood wants the CPU.

mod common;

use common::*;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tidings::Config;

const FLOODERS: u64 = 3;
const PER_FLOODER: u64 = 1500;
const LATE_CLIENTS: usize = 10;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

const FELL_BEHIND: &str = "tidings_live_fell_behind_total";
const LAGGED: &str = "tidings_live_broadcaster_lagged_total";
const TAIL_MISSES: &str = "tidings_tail_cache_misses_total";

/// The flood's metrics: how often each path ran during it.
struct Paths {
    fell_behind: u64,
    lagged: u64,
    tail_misses: u64,
}

async fn flood_while_clients_join(
    mut config: Config,
) -> Result<Paths, Box<dyn std::error::Error + Send + Sync>> {
    // Flooding is the point here, not the per-connection limit (tests/limits.rs has that).
    config.rate_limit = 0.0;
    let server = TestServer::start_with(config).await;
    let before = get(&server.url, "/metrics").await.1;
    let total = FLOODERS * PER_FLOODER;
    let seed = fastrand::u64(..);
    println!("seed {seed}");
    let mut rng = fastrand::Rng::with_seed(seed);

    let mut flooders = Vec::new();
    for f in 0..FLOODERS {
        let mut client = server.connect(0).await;
        flooders.push(tokio::spawn(async move {
            for i in 0..PER_FLOODER {
                let args = [json!(format!("f{f}-{i}")), json!(format!("f{f}-{i}"))];
                // Mostly fire-and-forget (a burst), every 50th awaits its ack (a retrying client).
                if i % 50 == 49 {
                    client
                        .emit_with_ack("chat message", &args, WAIT)
                        .await
                        .expect("ack");
                } else {
                    client.emit("chat message", &args).await.expect("emit");
                }
            }
            client
        }));
    }

    // An observer tracks the newest id, so joiners can pick offsets a real client could hold.
    let newest = Arc::new(AtomicU64::new(0));
    let mut observer = server.connect(0).await;
    let observed = newest.clone();
    let observer = tokio::spawn(async move {
        while observed.load(Ordering::Relaxed) < total {
            let (_, id) = observer.next_chat(WAIT).await.expect("observer message");
            observed.store(id, Ordering::Relaxed);
        }
    });

    // Clients join at random moments of the flood, from 0 or from a random offset.
    let mut joiners = Vec::new();
    for j in 0..LATE_CLIENTS {
        tokio::time::sleep(Duration::from_millis(rng.u64(5..60))).await;
        let offset = if j % 2 == 0 {
            0
        } else {
            rng.u64(0..=newest.load(Ordering::Relaxed))
        };
        let mut client = server.connect(offset).await;
        joiners.push(tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut last = offset;
            while last < total {
                let (content, id) = client.next_chat(WAIT).await.expect("message");
                seen.push((content, id));
                last = id;
            }
            (offset, seen)
        }));
    }

    for flooder in flooders {
        flooder.await?;
    }
    observer.await?;
    let mut reference_client = server.connect(0).await;
    let canonical = receive(&mut reference_client, total as usize).await;
    let ids: Vec<u64> = canonical.iter().map(|(_, id)| *id).collect();
    assert_eq!(ids, (1..=total).collect::<Vec<_>>(), "ids are 1..=total");
    // What is stored is exactly what was sent, each once, and each flooder's messages in the
    // order it sent them (fire-and-forget events are handled concurrently by socketioxide).
    let mut by_flooder: BTreeMap<u64, Vec<u64>> = BTreeMap::new();
    for (content, _) in &canonical {
        let (f, i) = content
            .strip_prefix('f')
            .and_then(|rest| rest.split_once('-'))
            .and_then(|(f, i)| Some((f.parse().ok()?, i.parse().ok()?)))
            .unwrap_or_else(|| panic!("a message nobody sent: {content:?}"));
        by_flooder.entry(f).or_default().push(i);
    }
    for f in 0..FLOODERS {
        assert_eq!(
            by_flooder.remove(&f).unwrap_or_default(),
            (0..PER_FLOODER).collect::<Vec<_>>(),
            "flooder {f}'s messages, each once, in its order (seed {seed})"
        );
    }
    assert!(by_flooder.is_empty(), "unknown senders: {by_flooder:?}");

    for joiner in joiners {
        let (offset, seen) = joiner.await?;
        assert_eq!(
            seen.as_slice(),
            &canonical[offset as usize..],
            "client from offset {offset} (seed {seed})"
        );
    }
    let after = get(&server.url, "/metrics").await.1;
    let ran = |name| counter(&after, name) - counter(&before, name);
    let paths = Paths {
        fell_behind: ran(FELL_BEHIND),
        lagged: ran(LAGGED),
        tail_misses: ran(TAIL_MISSES),
    };
    println!(
        "paths: fell behind {}, broadcaster lagged {}, tail cache misses {}",
        paths.fell_behind, paths.lagged, paths.tail_misses
    );
    server.stop().await;
    Ok(paths)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_joining_mid_flood_see_every_message_once_in_order() -> TestResult {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    flood_while_clients_join(Config::with_db(dir.path().join("chat.redb"))).await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_broadcaster_sends_everyone_to_catch_up_without_gaps() -> TestResult {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let mut config = Config::with_db(dir.path().join("chat.redb"));
    // The smallest live buffer: the broadcaster falls behind the writer's batches and every
    // live client catches up; replays take many small batches.
    config.live_buffer = 16;
    config.replay_batch = 3;
    let paths = flood_while_clients_join(config).await?;
    assert!(
        paths.lagged > 0,
        "the broadcaster never lagged: the test missed its path"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_falling_out_of_live_delivery_catch_up_and_rejoin_without_gaps() -> TestResult {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let mut config = Config::with_db(dir.path().join("chat.redb"));
    // The smallest socket buffer: the broadcaster finds members full all the time and takes
    // them out; with no tail cache they catch up from the database, then join again.
    config.socket_buffer = 16;
    config.tail_cache_messages = 0;
    config.replay_batch = 5;
    let paths = flood_while_clients_join(config).await?;
    assert!(
        paths.fell_behind > 0,
        "nobody fell behind: the test missed its path"
    );
    assert!(paths.tail_misses > 0, "nothing was read from the database");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_sends_into_full_buffers_are_all_acked() -> TestResult {
    // Every client keeps hundreds of messages in flight while receiving everyone's
    // broadcasts through the smallest socket buffer: its acks compete for slots with its
    // deliveries all the time. Every ack must arrive (a lost ack disconnects the client).
    const CLIENTS: u64 = 4;
    const EACH: u64 = 300;
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir()?;
    let mut config = Config::with_db(dir.path().join("chat.redb"));
    config.rate_limit = 0.0;
    config.socket_buffer = 16;
    let server = TestServer::start_with(config).await;
    let mut tasks = Vec::new();
    for c in 0..CLIENTS {
        let mut client = server.connect(0).await;
        tasks.push(tokio::spawn(async move {
            let mut pending = Vec::new();
            for i in 0..EACH {
                let text = format!("c{c}-{i}");
                let args = [json!(text), json!(text)];
                pending.push(client.emit_pipelined("chat message", &args).await?);
            }
            let mut ids = Vec::new();
            for ack in pending {
                let reply = tokio::time::timeout(WAIT, ack)
                    .await
                    .map_err(|_| "an ack never came")?
                    .map_err(|_| "disconnected before its ack")?;
                ids.push(reply[0]["id"].as_u64().ok_or(format!("ack {reply:?}"))?);
            }
            let seen = receive(&mut client, (CLIENTS * EACH) as usize).await;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>((ids, seen))
        }));
    }
    let mut all_ids = Vec::new();
    for task in tasks {
        let (ids, seen) = task.await??;
        let seen_ids: Vec<u64> = seen.iter().map(|(_, id)| *id).collect();
        assert_eq!(seen_ids, (1..=CLIENTS * EACH).collect::<Vec<_>>());
        all_ids.extend(ids);
    }
    all_ids.sort_unstable();
    assert_eq!(all_ids, (1..=CLIENTS * EACH).collect::<Vec<_>>());
    server.stop().await;
    Ok(())
}
