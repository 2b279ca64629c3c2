//! Presence across the nodes of a cluster, over plain NATS subjects (ephemeral, like presence
//! itself: at-most-once, nothing stored).
//!
//! Every node publishes its part of the roster every [`EVERY`] on
//! `tidings.STREAM.presence.NODE` and merges the others' into what its clients see; a node not
//! heard of for [`TTL`] (it died, or lost NATS) drops out. Typing notices and renames are
//! relayed on `tidings.STREAM.events` and shown to every client of the other nodes. Node names
//! go into subjects as one token ([`super::name_token`]).

use std::collections::BTreeMap;
use std::time::Duration;

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use socketioxide::SocketIo;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::socket::presence::{Relay, SharedRoster, to_rooms};
use crate::socket::roster::NodeRoster;

/// How often a node tells the others who is online on it.
pub const EVERY: Duration = Duration::from_secs(1);

/// How long a node's part stays without news of it.
pub const TTL: Duration = Duration::from_secs(3);

/// One node's presence message: its part of each room's roster (by room name; the default
/// room is `""`), rooms nobody is in on it left out.
#[derive(Serialize, Deserialize)]
struct Heartbeat {
    node: String,
    rooms: BTreeMap<String, NodeRoster>,
}

/// One relayed event, for the sockets in any of `rooms`.
#[derive(Serialize, Deserialize)]
struct Relayed {
    node: String,
    event: String,
    data: Value,
    rooms: Vec<String>,
}

/// Relayed notices waiting for the NATS connection; beyond, new ones are dropped (they are
/// ephemeral, like a notice to a full socket).
const RELAY_QUEUE: usize = 1024;

/// Typing notices and renames this node's clients send, for the other nodes: queued (bounded)
/// for one task that publishes them in order, so a burst of notices never costs a task each.
pub struct NatsRelay {
    queue: mpsc::Sender<Relayed>,
    node: String,
}

impl NatsRelay {
    /// A relay for the cluster of `stream`, and the task that publishes what it is given
    /// until `stop`.
    pub fn new(
        client: async_nats::Client,
        stream: &str,
        node: &str,
        stop: CancellationToken,
    ) -> (Self, impl std::future::Future<Output = ()> + Send + use<>) {
        let (queue, mut queued) = mpsc::channel::<Relayed>(RELAY_QUEUE);
        let subject = events_subject(stream);
        let publisher = async move {
            loop {
                let relayed = tokio::select! {
                    relayed = queued.recv() => match relayed {
                        Some(relayed) => relayed,
                        None => return,
                    },
                    () = stop.cancelled() => return,
                };
                let Ok(payload) = serde_json::to_vec(&relayed) else {
                    continue;
                };
                // Ephemeral: if NATS is away the notice is simply lost, like a full socket's.
                let _ = client.publish(subject.clone(), payload.into()).await;
            }
        };
        let relay = Self {
            queue,
            node: node.to_string(),
        };
        (relay, publisher)
    }
}

impl Relay for NatsRelay {
    fn relay(&self, event: &'static str, data: Value, rooms: Vec<String>) {
        let relayed = Relayed {
            node: self.node.clone(),
            event: event.to_string(),
            data,
            rooms,
        };
        if self.queue.try_send(relayed).is_err() {
            tracing::debug!("a relayed {event} was dropped: the queue to NATS is full");
        }
    }
}

fn events_subject(stream: &str) -> String {
    format!("tidings.{stream}.events")
}

/// The subject a node's heartbeat goes to: its name as one token (a host name like
/// `ip-10-0-0-1.ec2.internal` has dots, which would make it several and miss `presence.*`).
fn presence_subject(stream: &str, node: &str) -> String {
    format!("tidings.{stream}.presence.{}", super::name_token(node))
}

/// What the other nodes subscribe to: every node's heartbeat.
fn every_presence_subject(stream: &str) -> String {
    format!("tidings.{stream}.presence.*")
}

/// Exchanges presence with the other nodes and shows their relayed events, until `stop`.
pub async fn exchange_forever(
    client: async_nats::Client,
    stream: String,
    node: String,
    roster: SharedRoster,
    io: SocketIo,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut heartbeats = None;
    let mut events = None;
    loop {
        // (Re)subscribe while the subscriptions are missing: the client may start offline.
        if heartbeats.is_none() {
            heartbeats = client.subscribe(every_presence_subject(&stream)).await.ok();
        }
        if events.is_none() {
            events = client.subscribe(events_subject(&stream)).await.ok();
        }
        let next_heartbeat = async {
            match heartbeats.as_mut() {
                Some(subscription) => subscription.next().await,
                None => std::future::pending().await,
            }
        };
        let next_event = async {
            match events.as_mut() {
                Some(subscription) => subscription.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {
                roster.expire_remote(TTL);
                let beat = Heartbeat { node: node.clone(), rooms: roster.local() };
                if let Ok(payload) = serde_json::to_vec(&beat) {
                    let (subject, bytes) = (presence_subject(&stream, &node), payload.len());
                    if let Err(e) = client.publish(subject, payload.into()).await {
                        // Other nodes drop this node's members after missing beats: say why
                        // (for example a heartbeat over the server's max_payload: too many
                        // occupied rooms on this node).
                        tracing::warn!(bytes, "presence heartbeat not sent: {e}");
                    }
                }
            }
            message = next_heartbeat => match message {
                Some(message) => {
                    if let Ok(beat) = serde_json::from_slice::<Heartbeat>(&message.payload)
                        && beat.node != node
                    {
                        roster.set_remote(&beat.node, beat.rooms);
                    }
                }
                None => heartbeats = None,
            },
            message = next_event => match message {
                Some(message) => {
                    if let Ok(relayed) = serde_json::from_slice::<Relayed>(&message.payload)
                        && relayed.node != node
                        && is_relayable(&relayed.event)
                    {
                        to_rooms(&io, relayed.rooms, &relayed.event, &relayed.data);
                    }
                }
                None => events = None,
            },
        }
    }
}

/// Only the ephemeral events a node relays: nothing else may be injected through NATS.
fn is_relayable(event: &str) -> bool {
    use crate::protocol::event::{TYPING, USER_RENAMED};
    event == TYPING || event == USER_RENAMED
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dotted_node_name_is_one_subject_token() {
        let subject = presence_subject("TIDINGS", "ip-10-0-0-1.ec2.internal");
        let tokens: Vec<&str> = subject.split('.').collect();
        assert_eq!(tokens.len(), 4, "{subject}");
        assert_eq!(&tokens[..3], ["tidings", "TIDINGS", "presence"]);
        // What `presence.*` matches: exactly one token after the prefix.
        assert!(!tokens[3].is_empty());
        assert!(!tokens[3].contains(['*', '>', ' ']));
    }
}
