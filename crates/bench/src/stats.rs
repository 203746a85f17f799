//! Latency samples and their percentiles.
//!
//! Every sample is kept (a scenario records at most a few tens of thousands),
//! so percentiles are exact: nearest rank over the sorted samples, no
//! histogram buckets to blur a p99.

use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Latency samples in microseconds.
#[derive(Debug, Clone, Default)]
pub struct Samples {
    micros: Vec<u64>,
}

impl Samples {
    /// An empty set with room for `capacity` samples.
    pub fn with_capacity(capacity: usize) -> Self {
        Self {
            micros: Vec::with_capacity(capacity),
        }
    }

    /// Records one latency.
    pub fn record(&mut self, latency: Duration) {
        self.micros
            .push(u64::try_from(latency.as_micros()).unwrap_or(u64::MAX));
    }

    /// Records one latency given in microseconds.
    pub fn record_micros(&mut self, micros: u64) {
        self.micros.push(micros);
    }

    /// Adds every sample of `other`.
    pub fn merge(&mut self, other: Samples) {
        self.micros.extend(other.micros);
    }

    /// How many samples there are.
    pub fn len(&self) -> usize {
        self.micros.len()
    }

    /// Whether there is no sample.
    pub fn is_empty(&self) -> bool {
        self.micros.is_empty()
    }

    /// The percentiles of the samples.
    pub fn summary(&self) -> Percentiles {
        let mut sorted = self.micros.clone();
        sorted.sort_unstable();
        let sum: u128 = sorted.iter().map(|&micros| u128::from(micros)).sum();
        let mean = if sorted.is_empty() {
            0.0
        } else {
            sum as f64 / sorted.len() as f64
        };
        Percentiles {
            count: sorted.len() as u64,
            p50_ms: ms(nearest_rank(&sorted, 50.0)),
            p90_ms: ms(nearest_rank(&sorted, 90.0)),
            p99_ms: ms(nearest_rank(&sorted, 99.0)),
            max_ms: ms(sorted.last().copied().unwrap_or(0)),
            mean_ms: round3(mean / 1000.0),
        }
    }
}

/// A summary of latencies, in milliseconds with microsecond precision.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// How many samples the summary is of.
    pub count: u64,
    /// The median.
    pub p50_ms: f64,
    /// The 90th percentile.
    pub p90_ms: f64,
    /// The 99th percentile.
    pub p99_ms: f64,
    /// The largest sample.
    pub max_ms: f64,
    /// The arithmetic mean.
    pub mean_ms: f64,
}

/// The nearest-rank percentile `p` (0 < p <= 100) of sorted samples; 0 when empty.
///
/// The smallest sample such that at least `p` percent of the samples are at
/// most it: the 99th percentile of 100 samples is the 99th smallest.
pub fn nearest_rank(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = (p / 100.0 * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(micros: u64) -> f64 {
    round3(micros as f64 / 1000.0)
}

/// Rounds to three decimals, so that JSON shows microseconds and no float noise.
pub fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_of_one_to_a_hundred() {
        let sorted: Vec<u64> = (1..=100).collect();
        assert_eq!(nearest_rank(&sorted, 50.0), 50);
        assert_eq!(nearest_rank(&sorted, 90.0), 90);
        assert_eq!(nearest_rank(&sorted, 99.0), 99);
        assert_eq!(nearest_rank(&sorted, 100.0), 100);
        assert_eq!(nearest_rank(&sorted, 0.1), 1);
    }

    #[test]
    fn nearest_rank_rounds_up_between_samples() {
        let sorted = [10, 20, 30];
        // 50% of 3 is 1.5 samples: the second one covers it.
        assert_eq!(nearest_rank(&sorted, 50.0), 20);
        assert_eq!(nearest_rank(&sorted, 99.0), 30);
        assert_eq!(nearest_rank(&[7], 99.0), 7);
        assert_eq!(nearest_rank(&[], 99.0), 0);
    }

    #[test]
    fn summary_is_in_milliseconds_whatever_the_order() {
        let mut samples = Samples::with_capacity(1000);
        for micros in (1..=1000).rev() {
            samples.record_micros(micros);
        }
        let summary = samples.summary();
        assert_eq!(summary.count, 1000);
        assert_eq!(summary.p50_ms, 0.5);
        assert_eq!(summary.p90_ms, 0.9);
        assert_eq!(summary.p99_ms, 0.99);
        assert_eq!(summary.max_ms, 1.0);
        assert!((summary.mean_ms - 0.5005).abs() < 0.001);
    }

    #[test]
    fn a_single_outlier_shows_in_max_not_in_p99() {
        let mut samples = Samples::default();
        for _ in 0..999 {
            samples.record(Duration::from_micros(200));
        }
        samples.record(Duration::from_secs(1));
        let summary = samples.summary();
        assert_eq!(summary.p99_ms, 0.2);
        assert_eq!(summary.max_ms, 1000.0);
    }

    #[test]
    fn merge_and_empty() {
        let mut a = Samples::default();
        assert!(a.is_empty());
        assert_eq!(a.summary().count, 0);
        assert_eq!(a.summary().p99_ms, 0.0);
        let mut b = Samples::default();
        b.record_micros(1500);
        a.merge(b);
        assert_eq!(a.len(), 1);
        assert_eq!(a.summary().p50_ms, 1.5);
    }
}
