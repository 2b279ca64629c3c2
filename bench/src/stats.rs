//! Latency recording: a lock-free log-linear histogram (under 0.8 % relative error, exact below
//! 256 µs and for the maximum) that many connection tasks record into at once.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Sub-buckets per power of two above the exact range.
const SUB_BITS: u32 = 7;
const SUB: u64 = 1 << SUB_BITS;
/// Values below this are recorded exactly.
const EXACT: u64 = SUB * 2;
const BUCKETS: usize = (EXACT + (64 - SUB_BITS as u64 - 1) * SUB) as usize;

/// A concurrent histogram of microsecond values.
pub struct Histogram {
    buckets: Box<[AtomicU64]>,
    count: AtomicU64,
    max: AtomicU64,
}

/// Percentiles of a histogram, in microseconds.
#[derive(Debug, Clone, Copy, Default)]
pub struct Summary {
    pub p50_us: u64,
    pub p99_us: u64,
    pub max_us: u64,
}

impl Summary {
    pub fn p50_ms(&self) -> f64 {
        self.p50_us as f64 / 1000.0
    }
    pub fn p99_ms(&self) -> f64 {
        self.p99_us as f64 / 1000.0
    }
    pub fn max_ms(&self) -> f64 {
        self.max_us as f64 / 1000.0
    }
}

impl Default for Histogram {
    fn default() -> Self {
        Self::new()
    }
}

fn index(v: u64) -> usize {
    if v < EXACT {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - SUB_BITS;
    let mantissa = (v >> shift) - SUB;
    (EXACT + u64::from(shift - 1) * SUB + mantissa) as usize
}

/// The middle of the values bucket `i` holds.
fn value(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let shift = (i - EXACT) / SUB + 1;
    let mantissa = (i - EXACT) % SUB + SUB;
    (mantissa << shift) + (1 << shift) / 2
}

/// The smallest value bucket `i` holds.
fn lowest(i: usize) -> u64 {
    let i = i as u64;
    if i < EXACT {
        return i;
    }
    let shift = (i - EXACT) / SUB + 1;
    let mantissa = (i - EXACT) % SUB + SUB;
    mantissa << shift
}

impl Histogram {
    pub fn new() -> Self {
        Self {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            max: AtomicU64::new(0),
        }
    }

    /// Records one value in microseconds.
    pub fn record_us(&self, us: u64) {
        self.buckets[index(us)].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.max.fetch_max(us, Ordering::Relaxed);
    }

    /// Records one duration.
    pub fn record(&self, d: Duration) {
        self.record_us(u64::try_from(d.as_micros()).unwrap_or(u64::MAX));
    }

    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// p50, p99 (nearest rank, bucket midpoints) and the exact maximum.
    pub fn summary(&self) -> Summary {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        summarize(&counts, self.max.load(Ordering::Relaxed))
    }

    /// The summary and count of what was recorded since the last `take`, and a fresh start:
    /// per-interval percentiles while recorders keep recording (a value recorded meanwhile
    /// counts in this interval or the next, never in both).
    pub fn take(&self) -> (Summary, u64) {
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.swap(0, Ordering::Relaxed))
            .collect();
        self.count.store(0, Ordering::Relaxed);
        // A value whose bucket was taken may have raised the maximum only after the swap:
        // the top bucket taken bounds it then.
        let top = counts.iter().rposition(|&c| c > 0).map_or(0, lowest);
        let max = self.max.swap(0, Ordering::Relaxed).max(top);
        (summarize(&counts, max), counts.iter().sum())
    }
}

/// Percentiles of bucket counts whose largest value is `max`.
fn summarize(counts: &[u64], max: u64) -> Summary {
    let count: u64 = counts.iter().sum();
    if count == 0 {
        return Summary::default();
    }
    let rank = |q: f64| ((q * count as f64).ceil() as u64).clamp(1, count);
    let (r50, r99) = (rank(0.50), rank(0.99));
    let (mut p50, mut p99, mut seen) = (None, None, 0);
    for (i, bucket) in counts.iter().enumerate() {
        seen += bucket;
        if p50.is_none() && seen >= r50 {
            p50 = Some(value(i).min(max));
        }
        if seen >= r99 {
            p99 = Some(value(i).min(max));
            break;
        }
    }
    Summary {
        p50_us: p50.unwrap_or(max),
        p99_us: p99.unwrap_or(max),
        max_us: max,
    }
}

/// The median of some numbers (the lower middle for an even count); `None` when empty.
pub fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get((sorted.len().max(1) - 1) / 2).copied()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_monotonic_and_tight() {
        let mut last = 0;
        for v in (0..5_000_000u64).step_by(7) {
            let i = index(v);
            assert!(i >= last, "index must not decrease at {v}");
            last = i;
            let mid = value(i) as f64;
            assert!(lowest(i) <= v, "{v} is below its bucket's lowest value");
            assert!(
                (mid - v as f64).abs() <= (v as f64) / 128.0 + 1.0,
                "{v} -> {mid}"
            );
        }
        assert!(index(u64::MAX) < BUCKETS);
    }

    #[test]
    fn percentiles() {
        let h = Histogram::new();
        for v in 1..=1000 {
            h.record_us(v);
        }
        let s = h.summary();
        assert_eq!(h.count(), 1000);
        assert!((496..=504).contains(&s.p50_us), "{s:?}");
        assert!((982..=998).contains(&s.p99_us), "{s:?}");
        assert_eq!(s.max_us, 1000);
        assert_eq!(median(&[3.0, 1.0, 2.0]), Some(2.0));
        let (taken, n) = h.take();
        assert_eq!(n, 1000);
        assert_eq!(
            (taken.p50_us, taken.p99_us, taken.max_us),
            (s.p50_us, s.p99_us, 1000)
        );
        h.record_us(7);
        let (next, n) = h.take();
        assert_eq!((n, next.p99_us, next.max_us), (1, 7, 7));
        assert_eq!(h.take().1, 0);
        assert_eq!(median(&[]), None);
    }
}
