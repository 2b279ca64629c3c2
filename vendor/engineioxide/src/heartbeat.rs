//! The heartbeat of every v4 session of an engine, driven by one task.
//!
//! Each session is pinged every `ping_interval` and closed if the client does not answer
//! within `ping_timeout` of a ping. This used to be a task per session (its future, its task
//! cell and its `Interval`'s timer, ~880 bytes for the session's whole life, and a wake-up per
//! ping for each); here one task keeps every session's next deadline in a [`DelayQueue`] (a
//! few dozen bytes each) and wakes when the nearest one is due.
//!
//! The first ping goes out `interval` after the handshake, as engine.io's reference server
//! sends it (its `schedulePing` at open) and as the protocol's test suites expect: a client
//! first sees what the application sends, and a client that never answers is closed
//! `interval + timeout` after the handshake. What it keeps from the task per session: pings
//! follow at a fixed cadence (`interval` after the previous one; when the answer comes later
//! than that, which a timeout longer than the interval allows, within an interval of the
//! answer); the client has `timeout` from the ping to answer (from when the ping was due: the
//! timeline does not drift with the driver's wake-ups); no ping while the session is
//! upgrading; a ping that finds the send buffer full waits for room (in a task of its own,
//! until the deadline), since a slow reader is not a gone client. An answer that came before
//! the ping does not count for it.
//!
//! The queue holds [`Weak`] references: a closed session's socket is freed when it closes,
//! and its entry is dropped at its next deadline. The driver holds no lock; sessions reach it
//! through a channel.

use std::future::poll_fn;
use std::sync::{Arc, Weak};
use std::time::Duration;

use engineioxide_core::Packet;
use futures_util::FutureExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::time::DelayQueue;

use crate::socket::{DisconnectReason, QueuedPacket, Socket};

/// The handle sessions are given to: a channel to the driver task, spawned with it.
pub(crate) struct Heartbeats<D: Default + Send + Sync + 'static> {
    /// A new session, and when its heartbeat started (its handshake).
    sessions: mpsc::UnboundedSender<(Weak<Socket<D>>, Instant)>,
}

impl<D: Default + Send + Sync + 'static> Heartbeats<D> {
    /// Spawns the driver; it ends when this handle is dropped and every session it watches
    /// has closed.
    pub(crate) fn spawn(interval: Duration, timeout: Duration) -> Self {
        let (sessions, new) = mpsc::unbounded_channel();
        tokio::spawn(drive(new, interval, timeout));
        Self { sessions }
    }

    /// Starts `socket`'s heartbeat: its first ping `interval` from now.
    pub(crate) fn watch(&self, socket: &Arc<Socket<D>>) {
        // Now, not when the driver reads it: the interval counts from the handshake.
        let started = Instant::now();
        if self
            .sessions
            .send((Arc::downgrade(socket), started))
            .is_err()
        {
            // Only if the driver task panicked: the session would never time out.
            #[cfg(feature = "tracing")]
            tracing::error!(sid = ?socket.id, "the heartbeat driver is gone");
        }
    }
}

/// What a session waits for next.
#[derive(Clone, Copy)]
enum Phase {
    /// Its ping, due at the given instant.
    Ping(Instant),
    /// The answer to the ping due at the given instant (sent then, or as soon as the driver
    /// got to it).
    Pong(Instant),
}

struct Session<D: Default + Send + Sync + 'static> {
    socket: Weak<Socket<D>>,
    phase: Phase,
}

async fn drive<D: Default + Send + Sync + 'static>(
    mut new: mpsc::UnboundedReceiver<(Weak<Socket<D>>, Instant)>,
    interval: Duration,
    timeout: Duration,
) {
    let mut queue = DelayQueue::new();
    let mut accepting = true;
    loop {
        let (session, now) = tokio::select! {
            socket = new.recv(), if accepting => match socket {
                Some((socket, started)) => {
                    // The first ping is an interval after the handshake.
                    let due = started + interval;
                    queue.insert_at(Session { socket, phase: Phase::Ping(due) }, due);
                    continue;
                }
                None => {
                    accepting = false;
                    continue;
                }
            },
            Some(expired) = poll_fn(|cx| queue.poll_expired(cx)) => (expired.into_inner(), Instant::now()),
            else => break,
        };
        if let Some((session, due)) = step(session, now, interval, timeout) {
            queue.insert_at(session, due);
        }
    }
}

/// Handles `session` at its deadline (`now`): sends its ping, or checks for its answer.
/// Returns it with its next deadline, or `None` if it ends (closed, or timed out).
fn step<D: Default + Send + Sync + 'static>(
    session: Session<D>,
    now: Instant,
    interval: Duration,
    timeout: Duration,
) -> Option<(Session<D>, Instant)> {
    let socket = session.socket.upgrade()?;
    if socket.cancellation_token.is_cancelled() {
        return None;
    }
    match session.phase {
        Phase::Ping(due) => {
            if socket.is_upgrading() {
                let next = (due + interval).max(now);
                return Some((
                    Session {
                        phase: Phase::Ping(next),
                        ..session
                    },
                    next,
                ));
            }
            // An answer that came before this ping does not answer it.
            let _ = socket.client_heartbeat.notified().now_or_never();
            #[cfg(feature = "tracing")]
            tracing::trace!(sid = ?socket.id, "emitting ping");
            // The client's time counts from when the ping was due, not from when the driver
            // got to it: the session's timeline (a ping every interval from the handshake,
            // each answered within the timeout) does not drift with the driver's wake-ups.
            let deadline = due + timeout;
            match socket
                .send_buffer
                .try_send(QueuedPacket::from(Packet::Ping))
            {
                Ok(()) => {}
                Err(mpsc::error::TrySendError::Full(_)) => {
                    // A full buffer means the client reads slowly, not that it is gone: the
                    // ping waits for room, within the client's time to answer.
                    let socket = socket.clone();
                    tokio::spawn(async move {
                        let ping = socket.send_buffer.send(QueuedPacket::from(Packet::Ping));
                        let _ = tokio::time::timeout_at(deadline, ping).await;
                    });
                }
                Err(mpsc::error::TrySendError::Closed(_)) => return None,
            }
            let check = deadline.min(due + interval).max(now);
            Some((
                Session {
                    phase: Phase::Pong(due),
                    ..session
                },
                check,
            ))
        }
        Phase::Pong(due) => {
            if socket.client_heartbeat.notified().now_or_never().is_some() {
                #[cfg(feature = "tracing")]
                tracing::trace!(sid = ?socket.id, "pong received");
                let next = (due + interval).max(now);
                if next <= now {
                    return step(
                        Session {
                            phase: Phase::Ping(now),
                            ..session
                        },
                        now,
                        interval,
                        timeout,
                    );
                }
                return Some((
                    Session {
                        phase: Phase::Ping(next),
                        ..session
                    },
                    next,
                ));
            }
            let deadline = due + timeout;
            if now < deadline {
                // The ping's time came before its deadline (a timeout longer than the
                // interval): look again an interval later, so that a late answer is followed
                // by the next ping within an interval, as a client answering late expects.
                let next = (now + interval).min(deadline);
                return Some((
                    Session {
                        phase: Phase::Pong(due),
                        ..session
                    },
                    next,
                ));
            }
            #[cfg(feature = "tracing")]
            tracing::debug!(sid = ?socket.id, "heartbeat timeout");
            socket.close(DisconnectReason::HeartbeatTimeout);
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use engineioxide_core::{ProtocolVersion, TransportType};

    use super::*;
    use crate::config::EngineIoConfig;

    type Closed = Arc<Mutex<Vec<DisconnectReason>>>;

    fn socket(buffer: usize) -> (Arc<Socket<()>>, Closed) {
        let closed = Closed::default();
        let config = EngineIoConfig::builder().max_buffer_size(buffer).build();
        let socket = Socket::new(
            ProtocolVersion::V4,
            TransportType::Websocket,
            &config,
            http::Request::<()>::default().into_parts().0,
            Box::new({
                let closed = closed.clone();
                move |_, reason| closed.lock().unwrap().push(reason)
            }),
            false,
        );
        (Arc::new(socket), closed)
    }

    fn pings(socket: &Socket<()>) -> usize {
        let mut n = 0;
        while let Ok(packet) = socket.send_buffer.try_recv() {
            assert!(matches!(
                engineioxide_core::PacketBuf::from(packet).as_slice(),
                [Packet::Ping]
            ));
            n += 1;
        }
        n
    }

    const INTERVAL: Duration = Duration::from_millis(250);
    const TIMEOUT: Duration = Duration::from_millis(200);

    #[tokio::test(start_paused = true)]
    async fn a_client_that_answers_is_pinged_every_interval() {
        let heartbeats = Heartbeats::spawn(INTERVAL, TIMEOUT);
        let (socket, closed) = socket(8);
        heartbeats.watch(&socket);
        tokio::time::sleep(INTERVAL - Duration::from_millis(1)).await;
        assert_eq!(pings(&socket), 0, "no ping before the first interval");
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(
            pings(&socket),
            1,
            "the first ping goes out after an interval"
        );
        for round in 0..10 {
            socket.client_heartbeat.notify_one();
            tokio::time::sleep(INTERVAL).await;
            assert_eq!(pings(&socket), 1, "round {round}: one ping per interval");
        }
        assert!(closed.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_client_that_does_not_answer_is_closed_at_the_timeout() {
        let heartbeats = Heartbeats::spawn(INTERVAL, TIMEOUT);
        let (socket, closed) = socket(8);
        heartbeats.watch(&socket);
        // The first ping at INTERVAL, its deadline TIMEOUT later.
        tokio::time::sleep(INTERVAL + TIMEOUT - Duration::from_millis(10)).await;
        assert!(closed.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            *closed.lock().unwrap(),
            [DisconnectReason::HeartbeatTimeout]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn the_deadline_counts_from_when_the_ping_was_due() {
        let heartbeats = Heartbeats::spawn(INTERVAL, TIMEOUT);
        let (socket, closed) = socket(8);
        heartbeats.watch(&socket);
        tokio::task::yield_now().await;
        // The driver gets to the first ping (due at 250 ms) late, at 400 ms: its deadline is
        // still 450 ms, not 600.
        tokio::time::advance(INTERVAL + Duration::from_millis(150)).await;
        tokio::task::yield_now().await;
        assert_eq!(pings(&socket), 1);
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert!(closed.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(
            *closed.lock().unwrap(),
            [DisconnectReason::HeartbeatTimeout]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn an_answer_before_the_ping_does_not_count() {
        let heartbeats = Heartbeats::spawn(INTERVAL, TIMEOUT);
        let (socket, closed) = socket(8);
        heartbeats.watch(&socket);
        // The first ping at 250 ms, answered.
        tokio::time::sleep(INTERVAL + Duration::from_millis(1)).await;
        socket.client_heartbeat.notify_one();
        // After the first ping's check (at 450 ms), before the second ping (at 500 ms): the
        // second ping does not count it.
        tokio::time::sleep(Duration::from_millis(229)).await;
        socket.client_heartbeat.notify_one();
        // The second ping at 500 ms, its deadline at 700 ms.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert!(closed.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            *closed.lock().unwrap(),
            [DisconnectReason::HeartbeatTimeout]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn with_a_timeout_longer_than_the_interval_the_cadence_is_the_interval() {
        let timeout = INTERVAL * 3;
        let heartbeats = Heartbeats::spawn(INTERVAL, timeout);
        let (socket, closed) = socket(8);
        heartbeats.watch(&socket);
        tokio::time::sleep(INTERVAL + Duration::from_millis(1)).await;
        assert_eq!(pings(&socket), 1);
        socket.client_heartbeat.notify_one();
        tokio::time::sleep(INTERVAL).await;
        assert_eq!(pings(&socket), 1);
        // Answered late (the ping of 500 ms, at 1,001 ms, after the next ping's time): the
        // next ping follows within an interval of the answer (at 1,250 ms).
        tokio::time::sleep(INTERVAL * 2).await;
        assert_eq!(pings(&socket), 0, "no ping while one is unanswered");
        socket.client_heartbeat.notify_one();
        tokio::time::sleep(INTERVAL + Duration::from_millis(10)).await;
        assert_eq!(pings(&socket), 1);
        // Not answered: no new ping until the answer or the timeout (2,000 ms), then closed.
        tokio::time::sleep(timeout - Duration::from_millis(30)).await;
        assert_eq!(pings(&socket), 0);
        assert!(closed.lock().unwrap().is_empty());
        tokio::time::sleep(Duration::from_millis(40)).await;
        assert_eq!(
            *closed.lock().unwrap(),
            [DisconnectReason::HeartbeatTimeout]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn no_ping_while_upgrading() {
        let heartbeats = Heartbeats::spawn(INTERVAL, TIMEOUT);
        let (socket, closed) = socket(8);
        socket.start_upgrade();
        heartbeats.watch(&socket);
        tokio::time::sleep(INTERVAL * 4 - Duration::from_millis(100)).await;
        assert_eq!(pings(&socket), 0);
        assert!(closed.lock().unwrap().is_empty());
        // The upgrade failed: the heartbeat resumes at its next tick (1,000 ms).
        socket.cancel_upgrade();
        tokio::time::sleep(Duration::from_millis(110)).await;
        assert_eq!(pings(&socket), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_ping_waits_for_room_in_a_full_buffer() {
        let heartbeats = Heartbeats::spawn(INTERVAL, TIMEOUT);
        let (socket, closed) = socket(1);
        socket
            .send_buffer
            .try_send(QueuedPacket::from(Packet::Noop))
            .unwrap();
        heartbeats.watch(&socket);
        // The ping is due at INTERVAL and waits for room.
        tokio::time::sleep(INTERVAL + Duration::from_millis(50)).await;
        // The client reads: the ping goes out and is answered in time.
        assert!(socket.send_buffer.try_recv().is_ok());
        tokio::time::sleep(Duration::from_millis(1)).await;
        assert_eq!(pings(&socket), 1);
        socket.client_heartbeat.notify_one();
        tokio::time::sleep(TIMEOUT).await;
        assert!(closed.lock().unwrap().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_closed_session_is_dropped_and_the_driver_ends() {
        let heartbeats = Heartbeats::spawn(INTERVAL, TIMEOUT);
        let (socket, closed) = socket(8);
        heartbeats.watch(&socket);
        tokio::time::sleep(Duration::from_millis(1)).await;
        let weak = Arc::downgrade(&socket);
        socket.cancellation_token.cancel();
        drop(socket);
        assert!(
            weak.upgrade().is_none(),
            "the driver holds no strong reference"
        );
        drop(heartbeats);
        tokio::time::sleep(INTERVAL + TIMEOUT).await;
        let tasks = tokio::runtime::Handle::current()
            .metrics()
            .num_alive_tasks();
        assert_eq!(tasks, 0, "the driver ended");
        assert!(closed.lock().unwrap().is_empty());
    }
}
