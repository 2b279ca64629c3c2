//! The beat of the server's periodic tasks (presence, session upkeep, the cluster's probe):
//! `while every.tick().await { ... }` runs the body once per period until the server stops.
//! A tick that comes late (a busy machine) delays the next ones rather than bunching them.

use std::time::Duration;

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
