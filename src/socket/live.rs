//! Live delivery: one broadcaster task hands every newly stored message to every socket that
//! is caught up.
//!
//! A socket is in the live set only while it has been sent everything up to `last_sent`. The
//! broadcaster takes the hub's messages in id order and, holding the set's lock, queues each
//! batch to every member (with the headroom of [`super::outgoing`]), then moves `last_sent`.
//! A member whose buffer is full (its client reads slowly) is taken out and told; its own
//! delivery task then catches it up from the tail cache or the store at the client's pace and
//! joins again. Joining happens under the same lock and only at `last_sent`, so a socket never
//! misses or repeats a message at either switch.
//!
//! One task doing the sends, instead of one task per socket waking for every message, is what
//! keeps the cost of a delivery low when messages come one at a time. It does not read the
//! store and does not decide what a client asked for (that is the delivery task's job).

use std::collections::HashMap;
use std::sync::Arc;

use socketioxide::extract::SocketRef;
use socketioxide::socket::Sid;
use tokio::sync::broadcast::error::{RecvError, TryRecvError};
use tokio::sync::{Mutex, Notify, broadcast};
use tokio_util::sync::CancellationToken;

use super::outgoing::{self, NotQueued, SendLock};
use super::{CHAT_MESSAGE, EmittedCursor};
use crate::hub::{Hub, LiveMessage};
use crate::telemetry;

/// Most messages the broadcaster queues per socket in one pass.
const MAX_BATCH: usize = 256;

/// Members served between yields, so the connections' writers woken so far get to run.
const YIELD_EVERY: usize = 128;

/// A caught-up socket.
pub struct Member {
    /// Where to queue messages.
    pub socket: SocketRef,
    /// What has been queued to it; the broadcaster skips ids up to it and advances it.
    pub emitted: Arc<EmittedCursor>,
    /// Taken while queueing to it.
    pub sending: SendLock,
    /// Notified when the broadcaster takes it out of the set (it fell behind).
    pub fell_behind: Arc<Notify>,
}

struct LiveState {
    /// Every member has been queued every message up to this id.
    last_sent: u64,
    members: HashMap<Sid, Member>,
}

/// See the module docs.
pub struct LiveSet {
    state: Mutex<LiveState>,
}

impl LiveSet {
    /// The set, and the broadcaster that serves it until `stop` is cancelled (or the hub
    /// closes). Subscribing here, before any socket exists, makes `last_sent` exactly the
    /// point the broadcaster's stream starts after.
    pub fn start(
        hub: Arc<Hub>,
        stop: CancellationToken,
    ) -> (Arc<Self>, impl Future<Output = ()> + Send + 'static) {
        let (last_sent, receiver) = hub.subscribe();
        let live = Arc::new(Self {
            state: Mutex::new(LiveState {
                last_sent,
                members: HashMap::new(),
            }),
        });
        let broadcaster = broadcast_forever(live.clone(), hub, receiver, stop);
        (live, broadcaster)
    }

    /// Adds `member` if it has been queued everything the broadcaster has sent (its cursor is
    /// at `last_sent` or beyond); otherwise returns `last_sent`, the id to catch up to first.
    pub async fn try_join(&self, sid: Sid, member: Member) -> Result<(), u64> {
        let mut state = self.state.lock().await;
        if member.emitted.get() < state.last_sent {
            return Err(state.last_sent);
        }
        state.members.insert(sid, member);
        Ok(())
    }

    /// Removes a socket (it closed).
    pub async fn leave(&self, sid: Sid) {
        self.state.lock().await.members.remove(&sid);
    }
}

/// Receives the hub's messages in order and hands each batch to every member.
async fn broadcast_forever(
    live: Arc<LiveSet>,
    hub: Arc<Hub>,
    mut receiver: broadcast::Receiver<Arc<LiveMessage>>,
    stop: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            first = receiver.recv() => first,
            () = stop.cancelled() => return,
        };
        let mut lagged = false;
        let mut batch = match first {
            Ok(message) => vec![message],
            Err(RecvError::Lagged(_)) => {
                lagged = true;
                Vec::new()
            }
            Err(RecvError::Closed) => return,
        };
        while !lagged && batch.len() < MAX_BATCH {
            match receiver.try_recv() {
                Ok(message) => batch.push(message),
                Err(TryRecvError::Lagged(_)) => lagged = true,
                Err(_) => break,
            }
        }
        let mut state = live.state.lock().await;
        if !batch.is_empty() {
            send_to_members(&mut state, &batch).await;
        }
        if lagged {
            // Messages were lost to this receiver: nobody may stay in the set (they would
            // miss them). Everyone catches up from the store and joins at the new start.
            tracing::warn!(
                members = state.members.len(),
                "live broadcaster fell behind; every client catches up from the store"
            );
            for (_, member) in state.members.drain() {
                metrics::counter!(telemetry::LIVE_FELL_BEHIND).increment(1);
                member.fell_behind.notify_one();
            }
            // A fresh receiver and the exact id it starts after; everything up to that id
            // is in the cache or the store for the members to catch up from.
            let (start, fresh) = hub.subscribe();
            receiver = fresh;
            state.last_sent = state.last_sent.max(start);
        }
    }
}

/// Queues `batch` to every member, taking out those whose buffer is full or who closed.
async fn send_to_members(state: &mut LiveState, batch: &[Arc<LiveMessage>]) {
    let mut out = Vec::new();
    for (n, (sid, member)) in state.members.iter().enumerate() {
        let emitted = member.emitted.get();
        let pending = &batch[batch.partition_point(|m| m.id.0 <= emitted)..];
        if !pending.is_empty() {
            let queued = outgoing::emit_chats_leaving_headroom(
                &member.socket,
                &member.sending,
                CHAT_MESSAGE,
                pending,
            );
            match queued {
                Ok(queued) => {
                    member
                        .emitted
                        .advance(pending[queued.min(pending.len()) - 1].id.0);
                    if queued < pending.len() {
                        out.push((*sid, true));
                    }
                }
                Err(NotQueued::Full) => out.push((*sid, true)),
                Err(NotQueued::Closed) => out.push((*sid, false)),
            }
        }
        if n % YIELD_EVERY == YIELD_EVERY - 1 {
            tokio::task::yield_now().await;
        }
    }
    for (sid, behind) in out {
        if let Some(member) = state.members.remove(&sid)
            && behind
        {
            metrics::counter!(telemetry::LIVE_FELL_BEHIND).increment(1);
            member.fell_behind.notify_one();
        }
    }
    if let Some(last) = batch.last() {
        state.last_sent = state.last_sent.max(last.id.0);
    }
}
