//! Time in the server's loops: the beat of its periodic tasks ([`Every`]: presence, session
//! upkeep, the cluster's probe), the waits between retries ([`Backoff`]), and the wall clock
//! ([`now_ms`]).
//!
//! `while every.tick().await { ... }` runs the body once per period until the server stops.
//! A tick that comes late (a busy machine) delays the next ones rather than bunching them.

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

    /// The next wait (and doubles the one after it).
    fn take(&mut self) -> Duration {
        let wait = self.next;
        self.next = (self.next * 2).min(self.max);
        wait
    }

    /// Sleeps for the next wait.
    pub async fn sleep(&mut self) {
        tokio::time::sleep(self.take()).await;
    }

    /// Sleeps for the next wait: true then, false if `stop` came first.
    pub async fn wait(&mut self, stop: &CancellationToken) -> bool {
        tokio::select! {
            () = tokio::time::sleep(self.take()) => true,
            () = stop.cancelled() => false,
        }
    }

    /// After a success: the next wait is the first again.
    pub fn reset(&mut self) {
        self.next = self.first;
    }
}

/// Now, in milliseconds since the Unix epoch (0 if the clock is before it).
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_double_up_to_the_most_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let waits: Vec<u128> = (0..5).map(|_| backoff.take().as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.take(), Duration::from_millis(50));
    }
}
