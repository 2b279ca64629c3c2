//! Time in the server's loops: the beat of its periodic tasks ([`Every`]: presence, session
//! upkeep, the cluster's probe), the waits between retries ([`Backoff`]: a full socket buffer,
//! a stream that does not answer), a budget of log lines per minute ([`LogBudget`]: refused
//! tokens, refused origins), and the wall clock ([`now_ms`], [`since_epoch`]).
//!
//! `while every.tick().await { ... }` runs the body once per period until the server stops.
//! A tick that comes late (a busy machine) delays the next ones rather than bunching them.

use std::future::Future;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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

/// At most so many log lines a minute about one kind of refusal, so that a flood of bad
/// requests cannot fill the log; the line after a suppressed run says how many were not logged.
#[derive(Debug)]
pub struct LogBudget {
    per_minute: u32,
    state: Mutex<BudgetState>,
}

#[derive(Debug)]
struct BudgetState {
    window_start: Instant,
    logged: u32,
    suppressed: u64,
}

impl LogBudget {
    /// A budget of `per_minute` lines.
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            state: Mutex::new(BudgetState {
                window_start: Instant::now(),
                logged: 0,
                suppressed: 0,
            }),
        }
    }

    /// Whether one more line may be logged now: `Some(n)`, with the `n` lines not logged since
    /// the last one; `None` (counted) over the budget.
    pub fn take(&self) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.window_start.elapsed() >= Duration::from_secs(60) {
            state.window_start = Instant::now();
            state.logged = 0;
        }
        if state.logged >= self.per_minute {
            state.suppressed += 1;
            return None;
        }
        state.logged += 1;
        Some(std::mem::take(&mut state.suppressed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_budget_lets_so_many_lines_a_minute_and_counts_the_rest() {
        let budget = LogBudget::new(10);
        let taken: Vec<Option<u64>> = (0..25).map(|_| budget.take()).collect();
        assert_eq!(taken.iter().filter(|t| t.is_some()).count(), 10);
        assert!(taken[10..].iter().all(Option::is_none));
        // A minute later the next line may go, with the count of those that did not.
        budget
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .window_start -= Duration::from_secs(61);
        assert_eq!(budget.take(), Some(15));
        assert_eq!(budget.take(), Some(0));
    }

    #[test]
    fn waits_double_up_to_the_most_and_start_over_after_a_reset() {
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(300));
        let waits: Vec<u128> = (0..5).map(|_| backoff.next_wait().as_millis()).collect();
        assert_eq!(waits, [50, 100, 200, 300, 300]);
        backoff.reset();
        assert_eq!(backoff.next_wait(), Duration::from_millis(50));
    }
}
