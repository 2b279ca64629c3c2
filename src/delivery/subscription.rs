//! The rooms one socket receives, each with its join mark: the socket gets a room's messages
//! with ids above its mark (the room's newest id when it joined; 0 for the rooms it connected
//! with, whose older messages its replay covers from its offset). Older ones it reads with
//! `history`, so its delivery stays in one id order, whatever rooms it joins, and the offset
//! socket.io-client keeps never moves back.
//!
//! Shared by the socket's handlers (join, leave), its catch-up reader and the live
//! broadcaster; a plain map under a short lock.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::Notify;

use crate::message::Message;
use crate::storage::RoomCursor;

/// A room as delivery knows it: its name, `None` for the default room (as stored).
pub type RoomKey = Option<String>;

/// See the module docs.
#[derive(Debug, Default)]
pub struct Subscription {
    rooms: Mutex<HashMap<RoomKey, u64>>,
    /// Woken when a room leaves the set (an ack waiting for the socket's own copy of a message
    /// of that room stops waiting).
    left: Notify,
}

impl Subscription {
    /// The rooms `rooms`, each from the start (mark 0).
    pub fn new(rooms: impl IntoIterator<Item = RoomKey>) -> Self {
        Self::with_marks(rooms.into_iter().map(|room| (room, 0)))
    }

    /// The rooms `rooms`, each with its mark (a recovered session's).
    pub fn with_marks(rooms: impl IntoIterator<Item = (RoomKey, u64)>) -> Self {
        Self {
            rooms: Mutex::new(rooms.into_iter().collect()),
            left: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<RoomKey, u64>> {
        // Single map operations: never half done.
        self.rooms.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the socket gets `message`: its room is in the set and its id above the mark.
    pub fn wants(&self, message: &Message) -> bool {
        self.lock()
            .get(&message.room)
            .is_some_and(|mark| message.id.0 > *mark)
    }

    /// Runs `f` on the rooms and their marks, under one lock (the broadcaster's picks).
    pub fn with_rooms<R>(&self, f: impl FnOnce(&HashMap<RoomKey, u64>) -> R) -> R {
        f(&self.lock())
    }

    /// Whether `room` is in the set.
    pub fn contains(&self, room: &RoomKey) -> bool {
        self.lock().contains_key(room)
    }

    /// `room`'s mark, if it is in the set.
    pub fn mark(&self, room: &RoomKey) -> Option<u64> {
        self.lock().get(room).copied()
    }

    /// Adds `room` with `mark`; a room already in the set keeps its mark. Returns whether it
    /// was added.
    pub fn join(&self, room: RoomKey, mark: u64) -> bool {
        let mut rooms = self.lock();
        if rooms.contains_key(&room) {
            return false;
        }
        rooms.insert(room, mark);
        true
    }

    /// Removes `room`; returns whether it was in the set.
    pub fn leave(&self, room: &RoomKey) -> bool {
        let removed = self.lock().remove(room).is_some();
        if removed {
            self.left.notify_waiters();
        }
        removed
    }

    /// The rooms, with their marks.
    pub fn rooms(&self) -> Vec<(RoomKey, u64)> {
        self.lock()
            .iter()
            .map(|(room, mark)| (room.clone(), *mark))
            .collect()
    }

    /// How many rooms.
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether it has no room.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Where a read of the set's messages after `after` starts, room by room.
    pub fn cursors(&self, after: u64) -> Vec<RoomCursor> {
        self.lock()
            .iter()
            .map(|(room, mark)| RoomCursor {
                room: room.clone(),
                after: after.max(*mark),
            })
            .collect()
    }

    /// Resolves once `room` is not in the set.
    pub async fn left(&self, room: &RoomKey) {
        loop {
            let left = self.left.notified();
            if !self.contains(room) {
                return;
            }
            left.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::MessageId;

    fn message(id: u64, room: Option<&str>) -> Message {
        Message {
            id: MessageId(id),
            content: String::new(),
            author: None,
            user: None,
            event: None,
            time: 0,
            room: room.map(String::from),
        }
    }

    #[test]
    fn a_socket_gets_its_rooms_above_their_marks() {
        let subscription = Subscription::new([None, Some("dev".to_string())]);
        assert!(subscription.wants(&message(1, None)));
        assert!(subscription.wants(&message(2, Some("dev"))));
        assert!(!subscription.wants(&message(3, Some("ops"))));
        assert!(subscription.join(Some("ops".into()), 10));
        assert!(
            !subscription.join(Some("ops".into()), 20),
            "keeps its first mark"
        );
        assert!(!subscription.wants(&message(10, Some("ops"))));
        assert!(subscription.wants(&message(11, Some("ops"))));
        let mut cursors = subscription.cursors(5);
        cursors.sort_by(|a, b| a.room.cmp(&b.room));
        let after: Vec<u64> = cursors.iter().map(|c| c.after).collect();
        assert_eq!(after, [5, 5, 10]);
        assert!(subscription.leave(&Some("dev".into())));
        assert!(!subscription.wants(&message(12, Some("dev"))));
        assert!(!subscription.leave(&Some("dev".into())));
        assert_eq!(subscription.len(), 2);
    }

    #[tokio::test]
    async fn waiting_for_a_room_to_be_left() {
        let subscription = std::sync::Arc::new(Subscription::new([Some("dev".to_string())]));
        let waiting = {
            let subscription = subscription.clone();
            tokio::spawn(async move { subscription.left(&Some("dev".into())).await })
        };
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        subscription.leave(&Some("dev".into()));
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("woken")
            .expect("task");
    }
}
