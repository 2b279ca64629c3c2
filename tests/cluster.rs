//! Cluster mode against a real 3-server NATS JetStream cluster and tidings nodes on loopback:
//! one total order on every node, exactly-once across nodes and restarts, no acked message
//! lost or duplicated when a node or the stream's leader is killed, catching up after a
//! restart, and no ack (but reads) without quorum.
//!
//! They need `nats-server`: `cargo test` shows them as ignored with that reason; CI runs them
//! with `cargo test --test cluster -- --ignored`, and they fail loudly if it is missing.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::client::{Client, ClientError, Incoming};
use common::cluster::{NatsCluster, Node};
use common::*;
use serde_json::{Value, json};

struct Rig {
    _dir: tempfile::TempDir,
    nats: NatsCluster,
    nodes: Vec<Node>,
}

/// `nodes` tidings nodes on a fresh NATS cluster. Their names have dots, as host names do
/// (the default name is the host's): presence and consumer names must cope.
async fn rig(nodes: usize) -> Rig {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = NatsCluster::start(dir.path());
    let urls = nats.urls();
    let nodes: Vec<Node> = (0..nodes)
        .map(|n| {
            let name = format!("node{n}.tidings.test");
            Node::start(&name, &dir.path().join(format!("{name}.redb")), &urls, &[])
        })
        .collect();
    for node in &nodes {
        node.wait_ready().await;
    }
    Rig {
        _dir: dir,
        nats,
        nodes,
    }
}

/// Everything `client` receives until it has `total` messages, as (content, id).
async fn receive_all(client: &mut Client, total: usize) -> Vec<(String, u64)> {
    let mut seen = Vec::with_capacity(total);
    while seen.len() < total {
        seen.push(client.next_chat(WAIT).await.expect("a message"));
    }
    seen
}

async fn send(client: &mut Client, content: &str, offset: &str) -> Result<Value, ClientError> {
    let ack = client
        .emit_with_ack("chat message", &[json!(content), json!(offset)], WAIT)
        .await?;
    Ok(ack.into_iter().next().unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn every_node_delivers_the_same_total_order() -> TestResult {
    const EACH: usize = 60;
    let rig = rig(3).await;
    // A reader on every node, then a sender on every node, all at once.
    let mut readers = Vec::new();
    for node in &rig.nodes {
        readers.push(Client::connect(&node.url, &json!({ "serverOffset": 0 })).await?);
    }
    let mut senders = Vec::new();
    for (n, node) in rig.nodes.iter().enumerate() {
        let mut client = Client::connect(&node.url, &json!({})).await?;
        senders.push(tokio::spawn(async move {
            let mut acks = Vec::new();
            for i in 0..EACH {
                let text = format!("n{n}-{i}");
                let pending = client
                    .emit_pipelined("chat message", &[json!(text), json!(text)])
                    .await
                    .expect("emit");
                acks.push(pending);
            }
            let mut ids = Vec::new();
            for ack in acks {
                let reply = tokio::time::timeout(WAIT, ack)
                    .await
                    .expect("an ack")
                    .expect("connected");
                ids.push(reply[0]["id"].as_u64().expect("an id"));
            }
            ids
        }));
    }
    let mut acked = Vec::new();
    for sender in senders {
        acked.extend(sender.await?);
    }
    acked.sort_unstable();
    let total = 3 * EACH;
    assert_eq!(
        acked,
        (1..=total as u64).collect::<Vec<_>>(),
        "ids 1..=total"
    );
    let mut views = Vec::new();
    for reader in &mut readers {
        views.push(receive_all(reader, total).await);
    }
    for view in &views[1..] {
        assert_eq!(
            view, &views[0],
            "every node, the same messages in the same order"
        );
    }
    // Each sender's messages in its own order.
    let mut by_sender: BTreeMap<String, Vec<usize>> = BTreeMap::new();
    for (content, _) in &views[0] {
        let (n, i) = content.split_once('-').expect("n{n}-{i}");
        by_sender
            .entry(n.to_string())
            .or_default()
            .push(i.parse().expect("a number"));
    }
    for order in by_sender.values() {
        assert_eq!(order, &(0..EACH).collect::<Vec<_>>());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn a_retry_on_another_node_and_after_a_restart_gets_the_original_id() -> TestResult {
    let mut rig = rig(2).await;
    let urls = rig.nats.urls();
    let mut a = Client::connect(&rig.nodes[0].url, &json!({})).await?;
    let original = send(&mut a, "hello", "retry-1").await?;
    let id = original["id"].as_u64().ok_or("an id")?;
    assert_eq!(original.get("duplicate"), None);
    let mut b = Client::connect(&rig.nodes[1].url, &json!({})).await?;
    assert_eq!(
        send(&mut b, "hello", "retry-1").await?,
        json!({ "id": id, "duplicate": true })
    );
    // Same offset, other text: a new message (the single node's rule).
    let other = send(&mut b, "hello again", "retry-1").await?;
    assert_eq!(other["id"].as_u64(), Some(id + 1));
    // Two retries racing on two nodes at once (JetStream's message id settles it).
    let (ra, rb) = tokio::join!(
        send(&mut a, "race", "race-1"),
        send(&mut b, "race", "race-1")
    );
    let (ra, rb) = (ra?, rb?);
    assert_eq!(ra["id"], rb["id"], "{ra} / {rb}");
    assert_eq!(
        [ra.get("duplicate"), rb.get("duplicate")]
            .iter()
            .filter(|d| d.is_some())
            .count(),
        1,
        "one stored, one answered as a duplicate: {ra} / {rb}"
    );
    // After node B restarts, the retry is still a duplicate.
    drop(b);
    rig.nodes[1].stop();
    rig.nodes[1].restart(&urls, &[]);
    rig.nodes[1].wait_ready().await;
    let mut b = Client::connect(&rig.nodes[1].url, &json!({})).await?;
    assert_eq!(
        send(&mut b, "hello", "retry-1").await?,
        json!({ "id": id, "duplicate": true })
    );
    // Stored once: the whole history, from either node.
    let mut reader = Client::connect(&rig.nodes[1].url, &json!({ "serverOffset": 0 })).await?;
    let history = receive_all(&mut reader, 3).await;
    assert_eq!(
        history.iter().map(|(c, _)| c.as_str()).collect::<Vec<_>>(),
        ["hello", "hello again", "race"]
    );
    reader.expect_silence(Duration::from_millis(300)).await?;
    Ok(())
}

/// What one sender had acked (text -> id), every message it received in order, and how
/// often it reconnected.
type Outcome = (BTreeMap<String, u64>, Vec<(String, u64)>, usize);

/// A client that sends acked messages to the first reachable node of `urls`, reconnecting
/// to the next one (from its last seen id) when its node goes away, and retrying an unacked
/// message with the same offset.
async fn resilient_sender(k: usize, urls: Vec<String>, stop: Arc<AtomicBool>) -> Outcome {
    let mut acked = BTreeMap::new();
    let mut view: Vec<(String, u64)> = Vec::new();
    let mut reconnects = 0;
    let mut which = k % urls.len();
    let deadline = Instant::now() + Duration::from_secs(120);
    let connect = |which: usize, offset: u64| {
        let url = urls[which].clone();
        async move { Client::connect(&url, &json!({ "serverOffset": offset })).await }
    };
    let mut client = connect(which, 0).await.expect("connect");
    let mut next = 0usize;
    let mut pending: Option<String> = None;
    loop {
        assert!(Instant::now() < deadline, "sender {k} made no progress");
        if pending.is_none() {
            if stop.load(Ordering::SeqCst) {
                break;
            }
            pending = Some(format!("s{k}-{next}"));
            next += 1;
        }
        let text = pending.clone().unwrap_or_default();
        let reply = client
            .emit_with_ack(
                "chat message",
                &[json!(text), json!(text)],
                Duration::from_secs(3),
            )
            .await;
        // Whatever arrived meanwhile continues the view exactly.
        while let Ok((content, id)) = client.next_chat(Duration::from_millis(1)).await {
            let expected = view.last().map_or(1, |(_, last)| last + 1);
            assert_eq!(id, expected, "sender {k}: gap or duplicate");
            view.push((content, id));
        }
        match reply {
            Ok(ack) if ack[0]["id"].is_u64() => {
                acked.insert(text, ack[0]["id"].as_u64().unwrap_or(0));
                pending = None;
            }
            Ok(ack) => panic!("sender {k}: unexpected ack {ack:?}"),
            Err(ClientError::Timeout(_)) => {}
            Err(_) => {
                // The node went away: the next one, from the last id seen.
                reconnects += 1;
                loop {
                    which = (which + 1) % urls.len();
                    let offset = view.last().map_or(0, |(_, id)| *id);
                    if let Ok(fresh) = connect(which, offset).await {
                        client = fresh;
                        break;
                    }
                    assert!(Instant::now() < deadline, "sender {k} cannot reconnect");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
    // Catch up to everything stored, to compare views.
    (acked, view, reconnects)
}

/// Checks the senders' outcomes against the history one node serves: every acked message
/// stored once under its id, every view a gap-free prefix of that history. The history is
/// read up to the stream's last sequence (not until a pause: on a loaded machine a pause is
/// not the end).
async fn check_outcomes(
    nats: &NatsCluster,
    url: &str,
    outcomes: &[Outcome],
) -> Result<(usize, usize), Box<dyn std::error::Error + Send + Sync>> {
    let details = nats.stream_details("TIDINGS").await.ok_or("the stream")?;
    let end = details["state"]["last_seq"]
        .as_u64()
        .ok_or("the stream's end")?;
    let mut reader = Client::connect(url, &json!({ "serverOffset": 0 })).await?;
    let mut history: Vec<(String, u64)> = Vec::new();
    while history.last().map_or(0, |(_, id)| *id) < end {
        let message = reader
            .next_chat(Duration::from_secs(60))
            .await
            .map_err(|e| format!("the history stopped at {} of {end}: {e}", history.len()))?;
        history.push(message);
    }
    let ids: Vec<u64> = history.iter().map(|(_, id)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase");
    let mut copies: BTreeMap<&str, usize> = BTreeMap::new();
    for (content, _) in &history {
        *copies.entry(content.as_str()).or_default() += 1;
    }
    let duplicated = copies.values().filter(|n| **n > 1).count();
    let by_content: BTreeMap<&str, u64> = history.iter().map(|(c, id)| (c.as_str(), *id)).collect();
    let mut lost = 0;
    let mut acked = 0;
    for (sent, view, _) in outcomes {
        for (text, id) in sent {
            acked += 1;
            if by_content.get(text.as_str()) != Some(id) {
                lost += 1;
            }
        }
        assert!(
            view.iter()
                .zip(&history)
                .all(|(seen, stored)| seen == stored),
            "a client's view differs from the stored order"
        );
    }
    assert_eq!(lost, 0, "every acked message is stored under its id");
    assert_eq!(duplicated, 0, "nothing stored twice");
    Ok((acked, history.len()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn killing_a_node_under_load_loses_and_duplicates_nothing() -> TestResult {
    let mut rig = rig(3).await;
    let urls: Vec<String> = rig.nodes.iter().map(|n| n.url.clone()).collect();
    let stop = Arc::new(AtomicBool::new(false));
    // Two senders start on node 0, one on node 1.
    let senders: Vec<_> = [0usize, 3, 1]
        .into_iter()
        .map(|k| tokio::spawn(resilient_sender(k, urls.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    rig.nodes[0].kill();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    for sender in senders {
        outcomes.push(sender.await?);
    }
    let reconnects: usize = outcomes.iter().map(|o| o.2).sum();
    assert!(
        reconnects >= 2,
        "the senders on the killed node moved ({reconnects})"
    );
    let (acked, stored) = check_outcomes(&rig.nats, &rig.nodes[1].url, &outcomes).await?;
    println!("node kill: {acked} acked, {stored} stored, {reconnects} reconnects");
    assert!(acked >= 20, "progress before and after the kill ({acked})");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn killing_the_stream_leader_loses_and_duplicates_nothing() -> TestResult {
    let mut rig = rig(2).await;
    let urls: Vec<String> = rig.nodes.iter().map(|n| n.url.clone()).collect();
    let leader = rig
        .nats
        .stream_leader("TIDINGS")
        .await
        .ok_or("the stream has a leader")?;
    let stop = Arc::new(AtomicBool::new(false));
    let senders: Vec<_> = (0..3)
        .map(|k| tokio::spawn(resilient_sender(k, urls.clone(), stop.clone())))
        .collect();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    rig.nats.kill(leader);
    let killed = Instant::now();
    // Ingest resumes: a fresh client gets an ack within the failover.
    let mut probe = Client::connect(&urls[1], &json!({})).await?;
    let mut resumed = None;
    for attempt in 0..40 {
        let text = format!("after-kill-{attempt}");
        if let Ok(Ok(ack)) = tokio::time::timeout(
            Duration::from_secs(3),
            probe.emit_with_ack("chat message", &[json!(text), json!(text)], WAIT),
        )
        .await
            && ack[0]["id"].is_u64()
        {
            resumed = Some(killed.elapsed());
            break;
        }
    }
    let resumed = resumed.ok_or("ingest never resumed after the leader was killed")?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::SeqCst);
    let mut outcomes = Vec::new();
    for sender in senders {
        outcomes.push(sender.await?);
    }
    let (acked, stored) = check_outcomes(&rig.nats, &urls[1], &outcomes).await?;
    println!("leader kill: ingest resumed after {resumed:?}; {acked} acked, {stored} stored");
    // The killed server comes back and catches up; nothing changes for the clients.
    rig.nats.restart(leader);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn a_restarted_node_catches_up_and_serves_the_same_history() -> TestResult {
    let mut rig = rig(2).await;
    let urls = rig.nats.urls();
    rig.nodes[1].stop();
    let mut a = Client::connect(&rig.nodes[0].url, &json!({})).await?;
    for i in 0..150 {
        let text = format!("while-away-{i}");
        a.emit("chat message", &[json!(text), json!(text)]).await?;
    }
    let last = send(&mut a, "last", "last").await?;
    assert_eq!(last["id"], json!(151));
    rig.nodes[1].restart(&urls, &[]);
    rig.nodes[1].wait_ready().await;
    let mut from_a = Client::connect(&rig.nodes[0].url, &json!({ "serverOffset": 0 })).await?;
    let mut from_b = Client::connect(&rig.nodes[1].url, &json!({ "serverOffset": 0 })).await?;
    let history = receive_all(&mut from_a, 151).await;
    assert_eq!(receive_all(&mut from_b, 151).await, history);
    // A client whose offset this node has not applied yet (it came from another node) is
    // not treated as coming from another database: it gets what follows, once applied.
    let mut ahead = Client::connect(&rig.nodes[1].url, &json!({ "serverOffset": 151 })).await?;
    let next = send(&mut a, "next", "next").await?;
    assert_eq!(
        ahead.next_chat(WAIT).await?,
        ("next".into(), next["id"].as_u64().unwrap_or(0))
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn without_quorum_nothing_is_acked_reads_work_and_the_node_recovers() -> TestResult {
    let mut rig = rig(1).await;
    let node = &rig.nodes[0];
    let mut client = Client::connect(&node.url, &json!({})).await?;
    assert_eq!(send(&mut client, "before", "q-1").await?["id"], json!(1));
    rig.nats.kill(1);
    rig.nats.kill(2);
    // Not ready within seconds (a load balancer moves senders away)...
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, body) = get(&node.url, "/healthz").await;
        if status == 503 {
            assert!(body.contains("unavailable"), "{body}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still ready without quorum: {body}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // ...no ack...
    let during = client
        .emit_with_ack(
            "chat message",
            &[json!("during"), json!("q-2")],
            Duration::from_secs(2),
        )
        .await;
    assert!(
        matches!(during, Err(ClientError::Timeout(_))),
        "no ack without quorum: {during:?}"
    );
    // ...but reads and replay work from the local replica.
    let mut reader = Client::connect(&node.url, &json!({ "serverOffset": 0 })).await?;
    assert_eq!(reader.next_chat(WAIT).await?, ("before".into(), 1));
    // NATS comes back: the node is ready again by itself, and the retry is stored once.
    rig.nats.restart(1);
    rig.nats.restart(2);
    node.wait_ready().await;
    let mut retry = None;
    for _ in 0..20 {
        if let Ok(ack) = send(&mut client, "during", "q-2").await
            && ack["id"].is_u64()
        {
            retry = Some(ack);
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let retry = retry.ok_or("the retry was never acked")?;
    let mut fresh = Client::connect(&node.url, &json!({ "serverOffset": 0 })).await?;
    let history = receive_all(&mut fresh, 2).await;
    assert_eq!(
        history[1],
        ("during".into(), retry["id"].as_u64().unwrap_or(0))
    );
    fresh.expect_silence(Duration::from_millis(500)).await?;
    Ok(())
}

#[test]
#[ignore = "needs nats-server; CI runs it with --ignored"]
fn a_file_of_another_stream_or_a_single_node_history_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let nats = NatsCluster::start(dir.path());
    // A single-node database with history.
    let single = dir.path().join("single.redb");
    {
        let (_, mut writer) = tidings::storage::Store::open(&single, 1 << 20).expect("create");
        let input = tidings::message::ChatInput {
            content: "solo".into(),
            client_offset: None,
            author: None,
            user: None,
            event: None,
            room: None,
        };
        writer.append_batch(&[input], 1).expect("append");
    }
    let stderr = refused_in_one_line(
        std::process::Command::new(binary())
            .args(["--host", "127.0.0.1", "--port", "0", "--replicas", "3"])
            .args(["--cluster", &nats.urls()])
            .arg("--db")
            .arg(&single),
    );
    assert!(stderr.contains("single-node history"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn presence_spans_the_nodes_and_a_dead_node_drops_out() -> TestResult {
    let mut rig = rig(2).await;
    let mut ada = Client::connect(&rig.nodes[0].url, &json!({ "nickname": "ada" })).await?;
    let _bo = Client::connect(&rig.nodes[1].url, &json!({ "nickname": "bo" })).await?;
    let _anonymous = Client::connect(&rig.nodes[1].url, &json!({})).await?;
    // Ada, on node 0, sees bo and the anonymous client of node 1.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut announced = Vec::new();
    loop {
        let presence = ada.next_named("presence", WAIT).await?;
        announced.extend(
            presence[0]["joined"]
                .as_array()
                .cloned()
                .unwrap_or_default(),
        );
        if presence[0]["users"] == json!(["ada", "bo"]) && presence[0]["count"] == json!(3) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never saw node 1's clients: {presence:?}"
        );
    }
    assert!(announced.contains(&json!("bo")), "{announced:?}");
    // Typing relayed across nodes.
    // Typing at once, before its own presence snapshot: the server lists a socket before it
    // tells the client it is connected, so this is relayed too.
    let bo_typing = Client::connect(&rig.nodes[1].url, &json!({ "nickname": "cy" })).await?;
    bo_typing.emit("typing", &[json!(true)]).await?;
    assert_eq!(
        ada.next_named("typing", WAIT).await?,
        vec![json!({ "room": "general", "nickname": "cy", "typing": true })]
    );
    // Node 1 dies: within seconds its clients are gone from node 0's presence.
    rig.nodes[1].kill();
    let killed = Instant::now();
    loop {
        let presence = ada.next_named("presence", WAIT).await?;
        if presence[0]["count"] == json!(1) {
            assert_eq!(presence[0]["users"], json!(["ada"]));
            break;
        }
        // Its part expires after TTL (3 s) without a heartbeat, and the next presence tick
        // (1 s) says so; generous on a loaded machine.
        assert!(
            killed.elapsed() < Duration::from_secs(15),
            "node 1 never dropped out"
        );
    }
    println!(
        "presence: a dead node dropped out after {:?}",
        killed.elapsed()
    );
    Ok(())
}

/// Sends `content` to `room` with `offset` through `client`; the ack.
async fn send_to(
    client: &mut Client,
    room: &str,
    content: &str,
    offset: &str,
) -> Result<Value, ClientError> {
    let ack = client
        .emit_with_ack(
            "chat message",
            &[json!(content), json!(offset), json!({ "room": room })],
            WAIT,
        )
        .await?;
    Ok(ack.into_iter().next().unwrap_or(Value::Null))
}

/// The next `chat message`'s (content, id, room).
async fn next_in_room(client: &mut Client) -> Result<(String, u64, String), ClientError> {
    let args = client.next_named("chat message", WAIT).await?;
    Ok((
        args[0].as_str().unwrap_or_default().to_string(),
        args[1].as_u64().unwrap_or(0),
        args[2]["room"].as_str().unwrap_or_default().to_string(),
    ))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn retention_per_room_maps_onto_the_stream_and_every_replica() -> TestResult {
    let dir = tempfile::tempdir()?;
    let nats = NatsCluster::start(dir.path());
    let urls = nats.urls();
    let nodes: Vec<Node> = (0..2)
        .map(|n| {
            let name = format!("node{n}");
            let db = dir.path().join(format!("{name}.redb"));
            Node::start(&name, &db, &urls, &["--retain-messages", "5"])
        })
        .collect();
    for node in &nodes {
        node.wait_ready().await;
    }
    let details = nats.stream_details("TIDINGS").await.ok_or("the stream")?;
    assert_eq!(
        details["config"]["max_msgs_per_subject"],
        json!(5),
        "{details}"
    );
    assert_eq!(details["config"]["max_msgs"], json!(-1), "{details}");
    // ops gets 1..=3, the default room 4..=13: it keeps its newest 5, ops all of its 3.
    let mut client =
        Client::connect(&nodes[0].url, &json!({ "rooms": ["ops", "general"] })).await?;
    for i in 1..=3 {
        assert_eq!(
            send_to(&mut client, "ops", &format!("p{i}"), &format!("p{i}")).await?["id"],
            json!(i)
        );
    }
    for i in 4..=13 {
        assert_eq!(
            send(&mut client, &format!("m{i}"), &format!("o{i}")).await?["id"],
            json!(i)
        );
    }
    let details = nats.stream_details("TIDINGS").await.ok_or("the stream")?;
    assert_eq!(
        (&details["state"]["messages"], &details["state"]["last_seq"]),
        (&json!(8), &json!(13)),
        "the stream keeps 3 of ops and 5 of the default room: {details}"
    );
    // Every replica prunes the same way (retention runs at start and every 10 s).
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut reader = Client::connect(&node.url, &json!({ "serverOffset": 0 })).await?;
            let first = reader.next_chat(WAIT).await?;
            if first.1 == 9 {
                let sync = reader.next_named("sync", WAIT).await?;
                assert_eq!(sync[0]["complete"], json!(false), "{sync:?}");
                break;
            }
            assert!(Instant::now() < deadline, "{} never pruned", node.name);
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
        let mut ops =
            Client::connect(&node.url, &json!({ "rooms": ["ops"], "serverOffset": 0 })).await?;
        for i in 1..=3 {
            assert_eq!(next_in_room(&mut ops).await?.1, i);
        }
        let sync = ops.next_named("sync", WAIT).await?;
        assert_eq!(
            sync[0]["complete"],
            json!(true),
            "ops lost nothing: {sync:?}"
        );
    }
    // A node that joins now never gets 4..=8 (the stream deleted them first) and cannot tell
    // their rooms: its own retention deletes nothing (it holds 5 of the default room), yet a
    // replay from 0 is not complete, in the default room nor in any other.
    let db = dir.path().join("late.redb");
    let late = Node::start("late", &db, &urls, &["--retain-messages", "5"]);
    late.wait_ready().await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut reader = Client::connect(&late.url, &json!({ "serverOffset": 0 })).await?;
        let mut ids = Vec::new();
        let sync = loop {
            match reader.next(WAIT).await? {
                Incoming::Event(name, args) if name == "chat message" => {
                    ids.push(args[1].as_u64().unwrap_or(0));
                }
                Incoming::Event(name, args) if name == "sync" => break args,
                _ => {}
            }
        };
        if ids == [9, 10, 11, 12, 13] {
            assert_eq!(
                sync[0]["complete"],
                json!(false),
                "4..=8 are lost: {sync:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "the late node has {ids:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let mut ops =
        Client::connect(&late.url, &json!({ "rooms": ["ops"], "serverOffset": 0 })).await?;
    for i in 1..=3 {
        assert_eq!(next_in_room(&mut ops).await?.1, i);
    }
    let sync = ops.next_named("sync", WAIT).await?;
    assert_eq!(
        sync[0]["complete"],
        json!(false),
        "the late node cannot tell that 4..=8 were not ops's: {sync:?}"
    );
    Ok(())
}

/// Rooms across nodes: each room's messages reach its members on every node, once, in id
/// order; a join on one node sees what another node stored; exactly once per room across
/// nodes; a room's history from any node; presence per room spans the nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn rooms_span_the_nodes() -> TestResult {
    let rig = rig(2).await;
    let (zero, one) = (&rig.nodes[0].url, &rig.nodes[1].url);
    let mut a =
        Client::connect(zero, &json!({ "rooms": ["dev", "ops"], "nickname": "ada" })).await?;
    let mut b = Client::connect(one, &json!({ "rooms": ["dev"], "nickname": "bo" })).await?;
    let mut c = Client::connect(one, &json!({ "rooms": ["ops", "general"] })).await?;
    assert_eq!(
        send_to(&mut a, "dev", "d1", "o1").await?,
        json!({ "id": 1 })
    );
    assert_eq!(
        send_to(&mut c, "ops", "p2", "o2").await?,
        json!({ "id": 2 })
    );
    assert_eq!(
        send_to(&mut b, "dev", "d3", "o3").await?,
        json!({ "id": 3 })
    );
    assert_eq!(send(&mut c, "g4", "o4").await?, json!({ "id": 4 }));
    // The same offset and content in another room, on another node: another message; in the
    // same room on another node: a retry.
    assert_eq!(
        send_to(&mut c, "ops", "d1", "o1").await?,
        json!({ "id": 5 })
    );
    assert_eq!(
        send_to(&mut b, "dev", "d1", "o1").await?,
        json!({ "id": 1, "duplicate": true })
    );
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_in_room(&mut a).await?.1);
    }
    assert_eq!(
        seen,
        [1, 2, 3, 5],
        "a: dev and ops, from both nodes, in id order"
    );
    assert_eq!(next_in_room(&mut b).await?.1, 1);
    assert_eq!(next_in_room(&mut b).await?.1, 3);
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(next_in_room(&mut c).await?.1);
    }
    assert_eq!(seen, [2, 4, 5]);
    // A join on node 1 of a room node 0 wrote to: its last, then history from node 1.
    let ack = c.emit_with_ack("join", &[json!("dev")], WAIT).await?;
    assert_eq!(ack[0], json!({ "room": "dev", "last": 3 }));
    let page = c
        .emit_with_ack("history", &[json!({ "room": "dev", "before": 4 })], WAIT)
        .await?;
    let ids: Vec<u64> = page[0]["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|m| m["id"].as_u64().unwrap_or(0))
        .collect();
    assert_eq!(ids, [1, 3]);
    send_to(&mut a, "dev", "d6", "o6").await?;
    assert_eq!(next_in_room(&mut c).await?, ("d6".into(), 6, "dev".into()));
    // Presence per room, across nodes: dev has ada (node 0) and bo (node 1).
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let presence = b.next_named("presence", WAIT).await?;
        if presence[0]["room"] == json!("dev") && presence[0]["users"] == json!(["ada", "bo"]) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never saw dev's presence span the nodes: {presence:?}"
        );
    }
    Ok(())
}

/// A node is killed while its clients are in several rooms: they reconnect to the other
/// node with their last id and their rooms, and each has every message of its rooms once, in
/// id order, as the stream holds them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn a_node_killed_while_its_clients_are_in_several_rooms_loses_nothing() -> TestResult {
    let mut rig = rig(2).await;
    let survivor = rig.nodes[1].url.clone();
    let rooms = [
        json!(["dev", "ops"]),
        json!(["ops", "general"]),
        json!(["dev"]),
    ];
    let mut readers = Vec::new();
    for list in &rooms {
        readers.push(Client::connect(&rig.nodes[0].url, &json!({ "rooms": list })).await?);
    }
    let mut writer =
        Client::connect(&survivor, &json!({ "rooms": ["dev", "ops", "general"] })).await?;
    let mut sent = Vec::new();
    for n in 0..60 {
        let room = ["dev", "ops", "general"][n % 3];
        let ack = send_to(&mut writer, room, &format!("{room}-{n}"), &format!("o{n}")).await?;
        sent.push((ack["id"].as_u64().ok_or("an id")?, room));
        if n == 30 {
            rig.nodes[0].kill();
        }
    }
    for (list, reader) in rooms.iter().zip(readers.iter_mut()) {
        let wanted: Vec<u64> = sent
            .iter()
            .filter(|(_, room)| list.as_array().is_some_and(|l| l.contains(&json!(room))))
            .map(|(id, _)| *id)
            .collect();
        // What it got before the kill, then the rest from the other node.
        let mut got = Vec::new();
        while let Ok(Ok((_, id, _))) =
            tokio::time::timeout(Duration::from_millis(300), next_in_room(reader)).await
        {
            got.push(id);
        }
        let last = got.last().copied().unwrap_or(0);
        let mut again =
            Client::connect(&survivor, &json!({ "rooms": list, "serverOffset": last })).await?;
        while got.len() < wanted.len() {
            got.push(next_in_room(&mut again).await?.1);
        }
        again.expect_silence(Duration::from_millis(200)).await?;
        assert_eq!(got, wanted, "rooms {list}: every message once, in id order");
    }
    Ok(())
}

/// Deletes rows `ids` of the default room from a stopped node's file (the messages table and
/// the room table), as the applier of earlier builds could lose them (it dropped what it had
/// read when its reader failed).
fn punch_hole(db: &std::path::Path, ids: std::ops::RangeInclusive<u64>) {
    let messages: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("messages");
    let by_room: redb::TableDefinition<(&str, u64), &[u8]> =
        redb::TableDefinition::new("room_messages");
    let file = redb::Database::open(db).expect("open the node's file");
    let write = file.begin_write().expect("write");
    {
        let mut table = write.open_table(messages).expect("messages");
        let mut rooms = write.open_table(by_room).expect("room_messages");
        for id in ids {
            table.remove(id).expect("remove");
            rooms.remove(("", id)).expect("remove from the room");
        }
    }
    write.commit().expect("commit");
}

/// A replica that lacks messages the stream still holds fills them from the stream before it
/// serves: its history is the other node's, with no gap. (Before, it served the hole: a
/// replay skipped the messages, and nothing ever brought them back.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn a_replica_with_a_hole_fills_it_from_the_stream_before_it_serves() -> TestResult {
    let mut rig = rig(2).await;
    let urls = rig.nats.urls();
    let mut a = Client::connect(&rig.nodes[0].url, &json!({})).await?;
    for i in 1..=30 {
        assert_eq!(
            send(&mut a, &format!("m{i}"), &format!("o{i}")).await?["id"],
            json!(i)
        );
    }
    // Node 1 has all 30, then loses 10..=14 and 20 from its file while stopped.
    let mut b = Client::connect(&rig.nodes[1].url, &json!({ "serverOffset": 0 })).await?;
    let history = receive_all(&mut b, 30).await;
    b.close().await;
    rig.nodes[1].stop();
    punch_hole(&rig.nodes[1].db, 10..=14);
    punch_hole(&rig.nodes[1].db, 20..=20);
    rig.nodes[1].restart(&urls, &[]);
    rig.nodes[1].wait_ready().await;
    let mut b = Client::connect(&rig.nodes[1].url, &json!({ "serverOffset": 0 })).await?;
    assert_eq!(receive_all(&mut b, 30).await, history);
    b.expect_silence(Duration::from_millis(300)).await?;
    // And a retry of a mended message is still a retry.
    let retry = send(&mut a, "m12", "o12").await?;
    assert_eq!(retry, json!({ "id": 12, "duplicate": true }));
    Ok(())
}

/// JetStream forgets a message id after its duplicate window; a retry that comes later is
/// answered by the node's replica (its dedup index), on any node. The stream is created here
/// with a 1 s window so the test can wait it out. (Without the replica's look-up the retry
/// would be stored again, as message 2.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn a_retry_after_the_duplicate_window_is_answered_by_the_replica() -> TestResult {
    use async_nats::jetstream::stream;
    let dir = tempfile::tempdir()?;
    let nats = NatsCluster::start(dir.path());
    let urls = nats.urls();
    let client = async_nats::connect(urls.split(',').next().unwrap_or_default()).await?;
    let js = async_nats::jetstream::new(client);
    // What a node creates (cluster/stream.rs), but for the window.
    js.create_stream(stream::Config {
        name: "TIDINGS".into(),
        subjects: vec!["tidings.TIDINGS.msgs".into()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        duplicate_window: Duration::from_secs(1),
        max_messages: -1,
        discard: stream::DiscardPolicy::Old,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    })
    .await?;
    let nodes: Vec<Node> = (0..2)
        .map(|n| {
            let name = format!("node{n}");
            Node::start(&name, &dir.path().join(format!("{name}.redb")), &urls, &[])
        })
        .collect();
    for node in &nodes {
        node.wait_ready().await;
    }
    let mut a = Client::connect(&nodes[0].url, &json!({})).await?;
    let mut b = Client::connect(&nodes[1].url, &json!({ "serverOffset": 0 })).await?;
    assert_eq!(send(&mut a, "hello", "o-1").await?, json!({ "id": 1 }));
    // Node 1 has it; then the window passes.
    assert_eq!(b.next_chat(WAIT).await?, ("hello".into(), 1));
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    for node in &nodes {
        node.wait_ready().await;
    }
    assert_eq!(
        send(&mut b, "hello", "o-1").await?,
        json!({ "id": 1, "duplicate": true }),
        "a retry past the window, on the other node"
    );
    assert_eq!(
        send(&mut a, "hello", "o-1").await?,
        json!({ "id": 1, "duplicate": true }),
        "and on the node that stored it"
    );
    let details = nats.stream_details("TIDINGS").await.ok_or("the stream")?;
    assert_eq!(
        details["state"]["last_seq"],
        json!(1),
        "stored once: {details}"
    );
    Ok(())
}

/// A stream created before rooms (one subject, a stream-wide limit, no default room named)
/// is updated in place by the first node of this build: a subject per room, the limit per
/// room, the default room named; its messages are the default room's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn a_stream_from_before_rooms_is_updated_and_its_messages_are_the_default_room_s()
-> TestResult {
    use async_nats::jetstream::stream;
    let dir = tempfile::tempdir()?;
    let nats = NatsCluster::start(dir.path());
    let urls = nats.urls();
    let client = async_nats::connect(urls.split(',').next().unwrap_or_default()).await?;
    let js = async_nats::jetstream::new(client);
    // What the build before rooms created, with --retain-messages 100.
    js.create_stream(stream::Config {
        name: "TIDINGS".into(),
        description: Some("tidings message log".into()),
        subjects: vec!["tidings.TIDINGS.msgs".into()],
        storage: stream::StorageType::File,
        num_replicas: 3,
        duplicate_window: Duration::from_secs(120),
        max_messages: 100,
        discard: stream::DiscardPolicy::Old,
        deny_delete: true,
        deny_purge: true,
        ..Default::default()
    })
    .await?;
    // Two messages as that build published them: version-2 records, no room.
    for (n, text) in ["old one", "old two"].into_iter().enumerate() {
        let fields = (text, None::<String>, n as u64, None::<String>);
        let record = postcard::to_extend(&fields, vec![2u8])?;
        js.publish("tidings.TIDINGS.msgs", record.into())
            .await?
            .await?;
    }
    let node = Node::start(
        "node0",
        &dir.path().join("node0.redb"),
        &urls,
        &["--retain-messages", "100"],
    );
    node.wait_ready().await;
    let details = nats.stream_details("TIDINGS").await.ok_or("the stream")?;
    assert_eq!(
        details["config"]["subjects"],
        json!(["tidings.TIDINGS.msgs", "tidings.TIDINGS.msgs.*"]),
        "{details}"
    );
    assert_eq!(details["config"]["max_msgs_per_subject"], json!(100));
    let mut reader = Client::connect(&node.url, &json!({ "serverOffset": 0 })).await?;
    assert_eq!(
        next_in_room(&mut reader).await?,
        ("old one".into(), 1, "general".into())
    );
    assert_eq!(
        next_in_room(&mut reader).await?,
        ("old two".into(), 2, "general".into())
    );
    let mut dev = Client::connect(&node.url, &json!({ "rooms": ["dev"] })).await?;
    assert_eq!(
        send_to(&mut dev, "dev", "new", "n1").await?,
        json!({ "id": 3 })
    );
    Ok(())
}

/// A NATS cluster for nodes that check signed tokens with one shared secret.
struct SignedCluster {
    dir: tempfile::TempDir,
    nats: NatsCluster,
    secret: String,
    signer: tidings::identity::Signer,
    now: u64,
}

/// The secret every node of a [`SignedCluster`] verifies with.
const CLUSTER_SECRET: &str = "a cluster-wide secret of more than 32 bytes";

impl SignedCluster {
    fn start() -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        use tidings::identity::{ClaimRules, Signer};
        let dir = tempfile::tempdir()?;
        let secret = dir.path().join("secret");
        std::fs::write(&secret, format!("{CLUSTER_SECRET}\n"))?;
        let secret = secret.to_str().ok_or("temp path is not UTF-8")?.to_string();
        let nats = NatsCluster::start(dir.path());
        let signer = Signer::from_secret(CLUSTER_SECRET.as_bytes(), None, ClaimRules::default())?;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        Ok(Self {
            dir,
            nats,
            secret,
            signer,
            now,
        })
    }

    /// Node `name` with `--auth MODE` and the shared secret, and `more` flags; ready.
    async fn node(&self, name: &str, mode: &str, more: &[&str]) -> Node {
        let mut flags = vec!["--auth", mode, "--jwt-secret-file", &self.secret];
        flags.extend_from_slice(more);
        let node = Node::start(
            name,
            &self.dir.path().join(format!("{name}.redb")),
            &self.nats.urls(),
            &flags,
        );
        node.wait_ready().await;
        node
    }

    /// A token for `sub` (shown as `name`), valid ten minutes.
    fn token(
        &self,
        sub: &str,
        name: Option<&str>,
    ) -> Result<String, Box<dyn std::error::Error + Send + Sync>> {
        Ok(self.signer.sign(sub, name, self.now, 600)?)
    }
}

/// `--auth required` on every node: a verified sender's identity is in the stream, so every
/// node delivers it and shows it in history; two users' messages under the same offset and
/// content stay two messages, and a user's retry through another node is a duplicate (the
/// user is in the `Nats-Msg-Id` and the replicas' dedup key alike).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn verified_identities_cross_the_nodes() -> TestResult {
    let cluster = SignedCluster::start()?;
    let nodes = vec![
        cluster.node("auth0", "required", &[]).await,
        cluster.node("auth1", "required", &[]).await,
    ];
    let token = |sub: &str, name: Option<&str>| cluster.token(sub, name);
    let (zero, one) = (&nodes[0].url, &nodes[1].url);
    // Without a token, no node lets a client in.
    let refused = Client::connect(one, &json!({})).await;
    assert!(refused.is_err(), "a client without a token connected");
    let mut alice =
        Client::connect(zero, &json!({ "token": token("u-alice", Some("Alice"))? })).await?;
    let mut bob = Client::connect(one, &json!({ "token": token("u-bob", None)? })).await?;
    let ack = alice
        .emit_with_ack(
            "chat message",
            &[json!("hi"), json!("o-1"), json!({ "author": "Mallory" })],
            WAIT,
        )
        .await?;
    assert_eq!(ack, vec![json!({ "id": 1 })]);
    let args = bob.next_named("chat message", WAIT).await?;
    assert_eq!((&args[0], &args[1]), (&json!("hi"), &json!(1)));
    assert_eq!(args[2]["author"], json!("Alice"), "{args:?}");
    assert_eq!(args[2]["user"], json!("u-alice"), "{args:?}");
    // Bob sends the same content under the same offset: his own message.
    assert_eq!(send(&mut bob, "hi", "o-1").await?, json!({ "id": 2 }));
    // Alice retries through the other node: the original.
    let mut alice_on_one =
        Client::connect(one, &json!({ "token": token("u-alice", Some("Alice"))? })).await?;
    assert_eq!(
        send(&mut alice_on_one, "hi", "o-1").await?,
        json!({ "id": 1, "duplicate": true })
    );
    // History on node 1 shows the verified fields that node 0 took.
    let page = bob
        .emit_with_ack("history", &[json!({ "limit": 10 })], WAIT)
        .await?;
    let messages = &page[0]["messages"];
    assert_eq!(messages[0]["user"], json!("u-alice"), "{page:?}");
    assert_eq!(messages[0]["author"], json!("Alice"));
    assert_eq!(messages[1]["user"], json!("u-bob"));
    assert_eq!(messages[1]["author"], json!("u-bob"));
    drop(nodes);
    drop(cluster);
    Ok(())
}

/// Emits `event (args, ack)` from `client` every 50 ms until the ack is `want`, for at most
/// `WAIT`; fails with the last ack otherwise.
async fn until_answer(
    client: &mut Client,
    event: &str,
    args: &[Value],
    want: Value,
) -> Result<(), String> {
    let deadline = Instant::now() + WAIT;
    loop {
        let got = client
            .emit_with_ack(event, args, WAIT)
            .await
            .map_err(|e| e.to_string())?;
        if got.first() == Some(&want) {
            return Ok(());
        }
        if Instant::now() > deadline {
            return Err(format!("{event}: wanted {want}, got {got:?}"));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nats-server; CI runs it with --ignored"]
async fn moderation_crosses_the_nodes_and_a_rebuilt_replica_keeps_it() -> TestResult {
    let cluster = SignedCluster::start()?;
    let admin: &[&str] = &["--server-admin", "root"];
    let nodes = vec![
        cluster.node("mod0", "optional", admin).await,
        cluster.node("mod1", "optional", admin).await,
    ];
    let auth =
        |sub: &str, rooms: Value| -> Result<Value, Box<dyn std::error::Error + Send + Sync>> {
            Ok(json!({ "token": cluster.token(sub, None)?, "rooms": rooms }))
        };
    let (zero, one) = (&nodes[0].url, &nodes[1].url);
    let mut alice = Client::connect(zero, &auth("alice", json!([]))?).await?;
    let created = alice
        .emit_with_ack(
            "create room",
            &[json!({ "room": "ops", "private": true })],
            WAIT,
        )
        .await?;
    assert_eq!(
        created,
        vec![json!({ "room": "ops", "ok": true, "last": 0 })]
    );
    // Node 1 learns it from the stream: the room is private there too.
    let mut bob = Client::connect(one, &auth("bob", json!([]))?).await?;
    until_answer(
        &mut bob,
        "join",
        &[json!("ops")],
        json!({ "error": "not allowed" }),
    )
    .await?;
    let invited = alice
        .emit_with_ack("invite", &[json!({ "room": "ops", "user": "bob" })], WAIT)
        .await?;
    assert_eq!(invited, vec![json!({ "ok": true })]);
    until_answer(
        &mut bob,
        "join",
        &[json!("ops")],
        json!({ "room": "ops", "last": 2 }),
    )
    .await?;
    // Bob's message, taken by node 1, deleted by its room's owner on node 0.
    let sent = bob
        .emit_with_ack(
            "chat message",
            &[json!("secret"), json!("o-1"), json!({ "room": "ops" })],
            WAIT,
        )
        .await?;
    assert_eq!(sent, vec![json!({ "id": 3 })]);
    let deleted = alice
        .emit_with_ack("delete message", &[json!({ "room": "ops", "id": 3 })], WAIT)
        .await?;
    assert_eq!(deleted, vec![json!({ "ok": true })]);
    let notice = bob.next_named("message deleted", WAIT).await?;
    assert_eq!(
        (&notice[0]["room"], &notice[0]["id"], &notice[0]["by"]),
        (&json!("ops"), &json!(3), &json!("alice")),
        "{notice:?}"
    );
    let page = bob
        .emit_with_ack("history", &[json!({ "room": "ops", "limit": 10 })], WAIT)
        .await?;
    assert_eq!(page, vec![json!({ "messages": [], "hasMore": false })]);
    // A retry through either node is the original, not a new message.
    let retry = bob
        .emit_with_ack(
            "chat message",
            &[json!("secret"), json!("o-1"), json!({ "room": "ops" })],
            WAIT,
        )
        .await?;
    assert_eq!(retry, vec![json!({ "id": 3, "duplicate": true })]);
    // The stream erased it (its deletion, later in the stream, stays).
    let deadline = Instant::now() + WAIT;
    loop {
        let details = cluster
            .nats
            .stream_details("TIDINGS")
            .await
            .unwrap_or_default();
        if details["state"]["num_deleted"].as_u64() == Some(1) {
            assert_eq!(details["config"]["deny_delete"], json!(false), "{details}");
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the stream still holds it: {details}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // A kick on node 0 takes bob's socket on node 1 out of the room.
    let kicked = alice
        .emit_with_ack("kick", &[json!({ "room": "ops", "user": "bob" })], WAIT)
        .await?;
    assert_eq!(kicked, vec![json!({ "ok": true })]);
    loop {
        let change = bob.next_named("room changed", WAIT).await?;
        if change[0]["action"] == json!("kick") {
            assert_eq!(change[0]["user"], json!("bob"));
            break;
        }
    }
    until_answer(
        &mut bob,
        "chat message",
        &[json!("still here?"), json!("o-2"), json!({ "room": "ops" })],
        json!({ "error": "not in room ops: join it first" }),
    )
    .await?;
    // A node that starts on an empty file rebuilds everything from the stream: the deleted
    // message stays deleted, the room private, bob out.
    let fresh = cluster.node("mod2", "optional", admin).await;
    let mut root = Client::connect(&fresh.url, &auth("root", json!(["ops"]))?).await?;
    let page = root
        .emit_with_ack("history", &[json!({ "room": "ops", "limit": 10 })], WAIT)
        .await?;
    assert_eq!(page, vec![json!({ "messages": [], "hasMore": false })]);
    let mut bob_again = Client::connect(&fresh.url, &auth("bob", json!([]))?).await?;
    let refused = bob_again
        .emit_with_ack("join", &[json!("ops")], WAIT)
        .await?;
    assert_eq!(refused, vec![json!({ "error": "not allowed" })]);
    let retry = bob_again
        .emit_with_ack(
            "chat message",
            &[json!("secret"), json!("o-1"), json!({ "room": "ops" })],
            WAIT,
        )
        .await?;
    assert_eq!(
        retry,
        vec![json!({ "error": "not in room ops: join it first" })]
    );
    drop(fresh);
    drop(nodes);
    drop(cluster);
    Ok(())
}
