//! How far delivery to one socket has got: the highest message id queued to it.
//!
//! A `chat message` handler acks only once the socket's own copy of the message has been
//! queued (so the client sees the message before its ack), and waits here for that. The
//! socket's delivery task (while it catches up) and the live broadcaster (while it is live)
//! advance the cursor after every run they queue, which happens for every message on every
//! socket: advancing must cost nothing when nobody waits (an atomic max and a
//! load), and a waiter is woken once, when its id is reached, not on every advance.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};

use tokio::sync::oneshot;

/// See the module docs.
pub struct EmittedCursor {
    /// The highest id queued to the socket.
    id: AtomicU64,
    /// Set while `waiting` may be non-empty; checked by `advance` before taking the lock.
    has_waiters: AtomicBool,
    /// Ids being waited for, each with the waiter to wake when it is reached.
    waiting: Mutex<Vec<(u64, oneshot::Sender<()>)>>,
}

impl EmittedCursor {
    /// A cursor at `id` (the client's starting offset).
    pub fn new(id: u64) -> Self {
        Self {
            id: AtomicU64::new(id),
            has_waiters: AtomicBool::new(false),
            waiting: Mutex::new(Vec::new()),
        }
    }

    /// The highest id queued so far.
    pub fn get(&self) -> u64 {
        self.id.load(Ordering::SeqCst)
    }

    /// Records that everything up to `id` has been queued; wakes those waiting for it. The
    /// cursor never moves back: an `id` below it (a live pass that ends below what the
    /// socket's catch-up already queued) changes nothing.
    pub fn advance(&self, id: u64) {
        // SeqCst pairs with `reached`: a waiter sets the flag before reading the id, so
        // either it sees this id or this call sees its flag.
        let before = self.id.fetch_max(id, Ordering::SeqCst);
        if before >= id {
            return;
        }
        if !self.has_waiters.load(Ordering::SeqCst) {
            return;
        }
        let mut waiting = self.lock();
        let mut next = 0;
        while next < waiting.len() {
            if waiting[next].0 <= id {
                let (_, waiter) = waiting.swap_remove(next);
                // The waiter may have given up (its socket closed): nothing to do then.
                let _ = waiter.send(());
            } else {
                next += 1;
            }
        }
        self.has_waiters
            .store(!waiting.is_empty(), Ordering::SeqCst);
    }

    /// Waits until `id` has been queued. Returns at once if it already has. The future
    /// does not resolve if delivery stops first: callers race it against the socket closing.
    pub async fn reached(&self, id: u64) {
        let receiver = {
            let mut waiting = self.lock();
            self.has_waiters.store(true, Ordering::SeqCst);
            if self.id.load(Ordering::SeqCst) >= id {
                self.has_waiters
                    .store(!waiting.is_empty(), Ordering::SeqCst);
                return;
            }
            let (sender, receiver) = oneshot::channel();
            waiting.push((id, sender));
            receiver
        };
        // A sender is only dropped unsent with the cursor, which the caller keeps alive.
        let _ = receiver.await;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, oneshot::Sender<()>)>> {
        // The list is only pushed to and filtered: never inconsistent.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use std::time::Duration;

    #[tokio::test]
    async fn reached_returns_at_once_for_an_id_already_queued() {
        let cursor = EmittedCursor::new(7);
        tokio::time::timeout(Duration::from_secs(5), cursor.reached(7))
            .await
            .expect("no wait for an id already queued");
    }

    /// Polls `future` once, without a runtime: whether it is ready.
    fn ready(future: &mut std::pin::Pin<Box<impl Future<Output = ()>>>) -> bool {
        let mut context = std::task::Context::from_waker(std::task::Waker::noop());
        future.as_mut().poll(&mut context).is_ready()
    }

    #[test]
    fn waiters_wake_when_their_id_is_reached_and_not_before() {
        let cursor = EmittedCursor::new(0);
        let mut early = Box::pin(cursor.reached(2));
        let mut late = Box::pin(cursor.reached(5));
        assert!(
            !ready(&mut early) && !ready(&mut late),
            "nothing queued yet"
        );
        cursor.advance(1);
        assert!(!ready(&mut early) && !ready(&mut late), "1 is not 2");
        cursor.advance(3);
        assert!(ready(&mut early), "woken at 3");
        assert!(!ready(&mut late), "3 is not 5");
        cursor.advance(5);
        assert!(ready(&mut late), "woken at 5");
        assert!(!cursor.has_waiters.load(Ordering::SeqCst));
    }

    #[test]
    fn the_cursor_never_moves_back() {
        let cursor = EmittedCursor::new(7);
        cursor.advance(3);
        assert_eq!(cursor.get(), 7, "a pass ending below it leaves it");
        let mut waiter = Box::pin(cursor.reached(8));
        cursor.advance(5);
        assert!(!ready(&mut waiter), "5 is not 8");
        cursor.advance(8);
        assert!(ready(&mut waiter));
        assert_eq!(cursor.get(), 8);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn no_wakeup_is_lost_to_a_concurrent_advance() {
        for round in 0..2_000u64 {
            let cursor = Arc::new(EmittedCursor::new(0));
            let advancer = {
                let cursor = cursor.clone();
                std::thread::spawn(move || cursor.advance(1))
            };
            tokio::time::timeout(Duration::from_secs(5), cursor.reached(1))
                .await
                .unwrap_or_else(|_| panic!("wake-up lost in round {round}"));
            advancer.join().expect("advancer ran");
        }
    }
}
