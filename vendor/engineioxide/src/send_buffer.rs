//! A socket's send buffer: a bounded queue of packets from any number of senders (the
//! application, the heartbeat, the transports) to the one transport that writes them.
//!
//! It does what tokio's bounded `mpsc` channel did here (`try_send`, a `send` that waits for
//! room, permits, `close`, `capacity`) with one difference that matters for a server holding
//! many idle connections: it allocates as it fills and gives the memory back once drained.
//! tokio's channel allocated ~1.8 KB per socket up front (its cache-padded state and a first
//! block of 32 slots) for the socket's whole life.
//!
//! It lives inside its socket, so there is no sender or receiver handle: the receiving
//! methods ([`recv`](SendBuffer::recv), [`try_recv`](SendBuffer::try_recv),
//! [`poll_recv`](SendBuffer::poll_recv)) must be called by one task at a time, which the
//! socket ensures with its `internal_rx` lock.

use std::collections::VecDeque;
use std::future::poll_fn;
use std::pin::pin;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll};

use futures_util::task::AtomicWaker;
use tokio::sync::Notify;
use tokio::sync::mpsc::error::{SendError, TryRecvError, TrySendError};

/// A drained queue keeps its allocation up to this many slots; a larger one is freed, so that
/// a burst does not stay resident on an idle connection.
const KEPT_SLOTS: usize = 8;

/// A bounded multi-producer, single-consumer queue that allocates only what it holds.
pub(crate) struct SendBuffer<T> {
    state: Mutex<State<T>>,
    /// The receiving task, woken when an item is queued or the buffer is closed.
    receiver: AtomicWaker,
    /// Senders waiting for room, and tasks waiting for the close, woken when the buffer stops
    /// being full or is closed.
    changed: Notify,
}

struct State<T> {
    queue: VecDeque<T>,
    /// Slots held by permits not used yet.
    reserved: usize,
    max: usize,
    closed: bool,
}

impl<T> State<T> {
    fn is_full(&self) -> bool {
        self.queue.len() + self.reserved >= self.max
    }
}

/// A slot reserved in a [`SendBuffer`]: [`send`](Permit::send) fills it without waiting;
/// dropped unused, it frees the slot.
pub(crate) struct Permit<'a, T> {
    buffer: &'a SendBuffer<T>,
}

impl<T> SendBuffer<T> {
    /// An empty buffer holding at most `max` items (queued or reserved).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            state: Mutex::new(State {
                queue: VecDeque::new(),
                reserved: 0,
                max,
                closed: false,
            }),
            receiver: AtomicWaker::new(),
            changed: Notify::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // No code panics while holding the lock: the state stays consistent.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Queues `item` if there is room and the buffer is open.
    pub(crate) fn try_send(&self, item: T) -> Result<(), TrySendError<T>> {
        {
            let mut state = self.lock();
            if state.closed {
                return Err(TrySendError::Closed(item));
            }
            if state.is_full() {
                return Err(TrySendError::Full(item));
            }
            state.queue.push_back(item);
        }
        self.receiver.wake();
        Ok(())
    }

    /// Queues `item`, waiting for room while the buffer is full; fails once it is closed.
    pub(crate) async fn send(&self, item: T) -> Result<(), SendError<T>> {
        let mut item = item;
        loop {
            // Registered before looking, so a slot freed in between is not missed.
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            match self.try_send(item) {
                Ok(()) => return Ok(()),
                Err(TrySendError::Closed(back)) => return Err(SendError(back)),
                Err(TrySendError::Full(back)) => item = back,
            }
            changed.await;
        }
    }

    /// Reserves a slot if there is room and the buffer is open.
    pub(crate) fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError<()>> {
        let mut state = self.lock();
        if state.closed {
            return Err(TrySendError::Closed(()));
        }
        if state.is_full() {
            return Err(TrySendError::Full(()));
        }
        state.reserved += 1;
        Ok(Permit { buffer: self })
    }

    /// The items that can be queued now (the maximum less those queued and reserved).
    pub(crate) fn capacity(&self) -> usize {
        let state = self.lock();
        state.max.saturating_sub(state.queue.len() + state.reserved)
    }

    /// Closes the buffer: nothing more can be queued or reserved (permits already given may
    /// still send), what is queued can still be received, then [`recv`](Self::recv) ends.
    pub(crate) fn close(&self) {
        self.lock().closed = true;
        self.receiver.wake();
        self.changed.notify_waiters();
    }

    /// Whether the buffer is closed.
    pub(crate) fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Completes once the buffer is closed.
    pub(crate) async fn closed(&self) {
        loop {
            let mut changed = pin!(self.changed.notified());
            changed.as_mut().enable();
            if self.is_closed() {
                return;
            }
            changed.await;
        }
    }

    /// Takes the oldest item; `Disconnected` once the buffer is closed and drained.
    pub(crate) fn try_recv(&self) -> Result<T, TryRecvError> {
        let (item, was_full) = {
            let mut state = self.lock();
            let was_full = state.is_full();
            let Some(item) = state.queue.pop_front() else {
                return Err(if state.closed {
                    TryRecvError::Disconnected
                } else {
                    TryRecvError::Empty
                });
            };
            if state.queue.is_empty() && state.queue.capacity() > KEPT_SLOTS {
                state.queue = VecDeque::new();
            }
            (item, was_full)
        };
        if was_full {
            self.changed.notify_waiters();
        }
        Ok(item)
    }

    /// Polls for the oldest item; `None` once the buffer is closed and drained.
    pub(crate) fn poll_recv(&self, cx: &mut Context<'_>) -> Poll<Option<T>> {
        match self.try_recv() {
            Ok(item) => return Poll::Ready(Some(item)),
            Err(TryRecvError::Disconnected) => return Poll::Ready(None),
            Err(TryRecvError::Empty) => {}
        }
        self.receiver.register(cx.waker());
        // Looked at again: an item queued before the registration did not wake this task.
        match self.try_recv() {
            Ok(item) => Poll::Ready(Some(item)),
            Err(TryRecvError::Disconnected) => Poll::Ready(None),
            Err(TryRecvError::Empty) => Poll::Pending,
        }
    }

    /// Waits for the oldest item; `None` once the buffer is closed and drained.
    pub(crate) async fn recv(&self) -> Option<T> {
        poll_fn(|cx| self.poll_recv(cx)).await
    }
}

impl<T> Permit<'_, T> {
    /// Queues `item` in the reserved slot.
    pub(crate) fn send(self, item: T) {
        {
            let mut state = self.buffer.lock();
            state.reserved -= 1;
            state.queue.push_back(item);
        }
        self.buffer.receiver.wake();
        // The slot is now used: dropping the permit must not free it again.
        std::mem::forget(self);
    }
}

impl<T> Drop for Permit<'_, T> {
    fn drop(&mut self) {
        let was_full = {
            let mut state = self.buffer.lock();
            let was_full = state.is_full();
            state.reserved -= 1;
            was_full
        };
        if was_full {
            self.buffer.changed.notify_waiters();
        }
    }
}

impl<T> std::fmt::Debug for SendBuffer<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let state = self.lock();
        f.debug_struct("SendBuffer")
            .field("queued", &state.queue.len())
            .field("reserved", &state.reserved)
            .field("max", &state.max)
            .field("closed", &state.closed)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use futures_util::FutureExt;

    use super::*;

    #[test]
    fn items_come_out_in_order_and_the_bound_holds() {
        let buffer = SendBuffer::new(3);
        assert_eq!(buffer.capacity(), 3);
        buffer.try_send(1).unwrap();
        let permit = buffer.try_reserve().unwrap();
        buffer.try_send(2).unwrap();
        assert_eq!(buffer.capacity(), 0);
        assert!(matches!(buffer.try_send(3), Err(TrySendError::Full(3))));
        assert!(matches!(buffer.try_reserve(), Err(TrySendError::Full(()))));
        permit.send(4);
        assert_eq!(buffer.try_recv(), Ok(1));
        assert_eq!(buffer.try_recv(), Ok(2));
        assert_eq!(buffer.try_recv(), Ok(4));
        assert_eq!(buffer.try_recv(), Err(TryRecvError::Empty));
        assert_eq!(buffer.capacity(), 3);
    }

    #[test]
    fn an_unused_permit_frees_its_slot() {
        let buffer = SendBuffer::<u32>::new(1);
        let permit = buffer.try_reserve().unwrap();
        assert_eq!(buffer.capacity(), 0);
        drop(permit);
        assert_eq!(buffer.capacity(), 1);
        assert!(buffer.try_send(1).is_ok());
    }

    #[test]
    fn closing_refuses_new_items_and_lets_the_queued_ones_out() {
        let buffer = SendBuffer::new(4);
        buffer.try_send(1).unwrap();
        let permit = buffer.try_reserve().unwrap();
        buffer.close();
        assert!(buffer.is_closed());
        assert!(matches!(buffer.try_send(2), Err(TrySendError::Closed(2))));
        assert!(matches!(
            buffer.try_reserve(),
            Err(TrySendError::Closed(()))
        ));
        // A permit given before the close still sends, as with tokio's channel.
        permit.send(3);
        assert_eq!(buffer.try_recv(), Ok(1));
        assert_eq!(buffer.try_recv(), Ok(3));
        assert_eq!(buffer.try_recv(), Err(TryRecvError::Disconnected));
        assert_eq!(buffer.recv().now_or_never(), Some(None));
        assert_eq!(buffer.closed().now_or_never(), Some(()));
    }

    #[test]
    fn a_drained_buffer_gives_its_memory_back() {
        let buffer = SendBuffer::new(128);
        assert_eq!(buffer.lock().queue.capacity(), 0);
        for i in 0..100 {
            buffer.try_send(i).unwrap();
        }
        while buffer.try_recv().is_ok() {}
        assert_eq!(buffer.lock().queue.capacity(), 0);
        // A small queue keeps its few slots: no allocation per packet on a quiet socket.
        buffer.try_send(1).unwrap();
        let kept = buffer.lock().queue.capacity();
        assert!(kept > 0 && kept <= KEPT_SLOTS);
        buffer.try_recv().unwrap();
        assert_eq!(buffer.lock().queue.capacity(), kept);
    }

    #[tokio::test]
    async fn the_receiver_wakes_for_an_item_and_for_the_close() {
        let buffer = Arc::new(SendBuffer::new(4));
        let receiver = tokio::spawn({
            let buffer = buffer.clone();
            async move { (buffer.recv().await, buffer.recv().await) }
        });
        tokio::task::yield_now().await;
        buffer.try_send(7).unwrap();
        tokio::task::yield_now().await;
        buffer.close();
        let received = tokio::time::timeout(Duration::from_secs(5), receiver)
            .await
            .expect("the receiver woke")
            .expect("the receiver did not panic");
        assert_eq!(received, (Some(7), None));
    }

    #[tokio::test]
    async fn a_sender_waits_for_room_then_sends() {
        let buffer = Arc::new(SendBuffer::new(1));
        buffer.try_send(1).unwrap();
        let sender = tokio::spawn({
            let buffer = buffer.clone();
            async move { buffer.send(2).await }
        });
        tokio::task::yield_now().await;
        assert!(!sender.is_finished());
        assert_eq!(buffer.try_recv(), Ok(1));
        tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .expect("the sender woke")
            .expect("the sender did not panic")
            .expect("the buffer was open");
        assert_eq!(buffer.try_recv(), Ok(2));
    }

    #[tokio::test]
    async fn a_waiting_sender_fails_when_the_buffer_closes() {
        let buffer = Arc::new(SendBuffer::new(1));
        buffer.try_send(1).unwrap();
        let sender = tokio::spawn({
            let buffer = buffer.clone();
            async move { buffer.send(2).await }
        });
        let closed = tokio::spawn({
            let buffer = buffer.clone();
            async move { buffer.closed().await }
        });
        tokio::task::yield_now().await;
        buffer.close();
        let sent = tokio::time::timeout(Duration::from_secs(5), sender)
            .await
            .expect("the sender woke")
            .expect("the sender did not panic");
        assert!(matches!(sent, Err(SendError(2))));
        tokio::time::timeout(Duration::from_secs(5), closed)
            .await
            .expect("the close was seen")
            .expect("the task did not panic");
    }

    #[tokio::test]
    async fn many_senders_and_one_receiver_lose_and_repeat_nothing() {
        let buffer = Arc::new(SendBuffer::new(8));
        let senders: Vec<_> = (0..4u32)
            .map(|sender| {
                let buffer = buffer.clone();
                tokio::spawn(async move {
                    for i in 0..1_000u32 {
                        buffer.send((sender, i)).await.expect("open");
                    }
                })
            })
            .collect();
        let mut next = [0u32; 4];
        for _ in 0..4_000 {
            let (sender, i) = tokio::time::timeout(Duration::from_secs(5), buffer.recv())
                .await
                .expect("an item came")
                .expect("open");
            assert_eq!(i, next[sender as usize], "sender {sender}'s items in order");
            next[sender as usize] += 1;
        }
        for sender in senders {
            sender.await.expect("the sender did not panic");
        }
        assert_eq!(buffer.try_recv(), Err(TryRecvError::Empty));
    }
}
