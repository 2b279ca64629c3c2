//! Per-connection rate limiting: a token bucket, as a pure value (time is passed in), so it
//! is unit-tested without sleeping. The socket layer keeps one per connection.

use std::time::{Duration, Instant};

/// Sends allowed per second on average and in one burst; a rate of 0 disables the limit.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Tokens added per second.
    pub per_second: f64,
    /// Bucket size: how many sends may come at once after a quiet spell.
    pub burst: f64,
}

/// The answer to one send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Go ahead.
    Allowed,
    /// Over the limit: try again after this long. `strikes` counts the refusals not yet
    /// forgiven: each refusal adds one, each allowed request forgives one, so a client that
    /// keeps sending faster than its rate gathers them however many of its requests the
    /// refilling bucket lets through, and one that waits when told sheds them.
    Limited {
        /// When a token will be available.
        retry_after: Duration,
        /// Refusals not yet forgiven, this one included.
        strikes: u32,
    },
}

/// See the module docs.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    limit: RateLimit,
    tokens: f64,
    updated: Instant,
    strikes: u32,
}

impl TokenBucket {
    /// A full bucket at `now`.
    pub fn new(limit: RateLimit, now: Instant) -> Self {
        Self {
            limit,
            tokens: limit.burst,
            updated: now,
            strikes: 0,
        }
    }

    /// Takes one token if there is one.
    pub fn take(&mut self, now: Instant) -> Verdict {
        if self.limit.per_second <= 0.0 {
            return Verdict::Allowed;
        }
        let elapsed = now.saturating_duration_since(self.updated).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.limit.per_second).min(self.limit.burst);
        self.updated = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            self.strikes = self.strikes.saturating_sub(1);
            Verdict::Allowed
        } else {
            self.strikes = self.strikes.saturating_add(1);
            let missing = 1.0 - self.tokens;
            // `--rate-limit` is validated, but a bucket must not panic on a rate so slow that
            // the wait overflows a `Duration`: it waits "for ever" instead.
            let retry_after = Duration::try_from_secs_f64(missing / self.limit.per_second)
                .unwrap_or(Duration::MAX);
            Verdict::Limited {
                retry_after,
                strikes: self.strikes,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_steady_rate() {
        let start = Instant::now();
        let limit = RateLimit {
            per_second: 10.0,
            burst: 3.0,
        };
        let mut bucket = TokenBucket::new(limit, start);
        for _ in 0..3 {
            assert_eq!(bucket.take(start), Verdict::Allowed);
        }
        match bucket.take(start) {
            Verdict::Limited {
                retry_after,
                strikes,
            } => {
                assert_eq!(strikes, 1);
                assert!(
                    (retry_after.as_secs_f64() - 0.1).abs() < 1e-6,
                    "{retry_after:?}"
                );
            }
            Verdict::Allowed => panic!("should be limited"),
        }
        assert!(matches!(
            bucket.take(start),
            Verdict::Limited { strikes: 2, .. }
        ));
        // 100 ms later one token is back, and it forgives one strike.
        let later = start + Duration::from_millis(100);
        assert_eq!(bucket.take(later), Verdict::Allowed);
        assert!(matches!(
            bucket.take(later),
            Verdict::Limited { strikes: 2, .. }
        ));
        // A long pause refills only up to the burst.
        let much_later = later + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(bucket.take(much_later), Verdict::Allowed);
        }
        assert!(matches!(bucket.take(much_later), Verdict::Limited { .. }));
    }

    #[test]
    fn a_client_sending_faster_than_its_rate_gathers_strikes_though_some_get_through() {
        // 10/s, a burst of 2; the client sends 50/s: one in five gets a token.
        let start = Instant::now();
        let limit = RateLimit {
            per_second: 10.0,
            burst: 2.0,
        };
        let mut bucket = TokenBucket::new(limit, start);
        let mut strikes = 0;
        for n in 0..100u64 {
            if let Verdict::Limited { strikes: s, .. } =
                bucket.take(start + Duration::from_millis(20 * n))
            {
                strikes = s;
            }
        }
        assert!(
            strikes >= 50,
            "{strikes} strikes after 100 requests at 5x the rate"
        );
        // One that waits when told sheds them again.
        let mut later = start + Duration::from_secs(3);
        for _ in 0..strikes {
            later += Duration::from_millis(100);
            assert_eq!(bucket.take(later), Verdict::Allowed);
        }
        // All forgiven: refusals count from one again (the loop ended at the first).
        while bucket.take(later) == Verdict::Allowed {}
        assert!(matches!(
            bucket.take(later),
            Verdict::Limited { strikes: 2, .. }
        ));
    }

    #[test]
    fn zero_rate_disables() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(
            RateLimit {
                per_second: 0.0,
                burst: 0.0,
            },
            now,
        );
        for _ in 0..1000 {
            assert_eq!(bucket.take(now), Verdict::Allowed);
        }
    }

    #[test]
    fn a_vanishingly_slow_rate_waits_without_panicking() {
        let now = Instant::now();
        let mut bucket = TokenBucket::new(
            RateLimit {
                per_second: 1e-20,
                burst: 1.0,
            },
            now,
        );
        assert_eq!(bucket.take(now), Verdict::Allowed);
        assert!(matches!(
            bucket.take(now),
            Verdict::Limited {
                retry_after: Duration::MAX,
                strikes: 1
            }
        ));
    }
}
