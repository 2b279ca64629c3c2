//! Time in the server's loops: the beat of its periodic tasks ([`Every`]: presence, session
//! upkeep, the cluster's probe), the waits between retries ([`Backoff`]: a full socket buffer,
//! a stream that does not answer), and the wall clock ([`now_ms`], [`since_epoch`]).
//!
//! `while every.tick().await { ... }` runs the body once per period until the server stops.
//! A tick that comes late (a busy machine) delays the next ones rather than bunching them.

use std::future::Future;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

/// See the module docs.
pub struct Every {
    interval: Interval,
    stop: CancellationToken,
}

impl Every {
    /// Ticks every `period` (the first at once) until `stop` is cancelled.
    pub fn new(period: Duration, stop: CancellationToken) -> Self {
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self { interval, stop }
    }

    /// Waits for the next tick: true then, false once the server stops.
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.interval.tick() => true,
            () = self.stop.cancelled() => false,
        }
    }
}

/// Waits between attempts of something that fails: the first wait is `first`, each next one
/// twice as long, up to `max`; [`Backoff::reset`] after a success starts over.
#[derive(Debug, Clone)]
pub struct Backoff {
    first: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    /// Waits of `first`, then doubling, up to `max`.
    pub fn new(first: Duration, max: Duration) -> Self {
        Self {
            first,
            max,
            next: first,
        }
    }

    /// The next wait (and doubles the one after it), for a caller that sleeps by itself.
    pub fn next_wait(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Sleeps for the next wait.
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.next_wait()).await;
    }

    /// Sleeps for the next wait: true then, false if `stop` came first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        self.wait_unless(stop.cancelled()).await
    }

    /// Sleeps for the next wait: true then, false if `stop` resolved first.
    pub async fn wait_unless(&mut self, stop: impl Future<Output = ()>) -> bool {
        tokio::select! {
            () = tokio::time::sleep(self.next_wait()) => true,
            () = stop => false,
        }
    }

    /// After a success: the next wait is the first again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Now, since the Unix epoch (zero if the clock is before it).
pub fn since_epoch() -> Duration {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    u64::try_from(since_epoch().as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_most_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let waits: Vec<u128> = (0..5).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(50));
    }
}
