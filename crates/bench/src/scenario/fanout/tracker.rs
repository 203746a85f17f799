//! Each publication's reads: how many subscribers read it, and when the
//! first and the last did, counted lock-free by the receiving tasks.

use std::{
    sync::atomic::{AtomicU32, AtomicU64, Ordering},
    time::Duration,
};

use tokio::{
    sync::Semaphore,
    time::{Instant, sleep},
};

use crate::stats::Samples;

/// After the last publication, deliveries are awaited as long as they keep
/// coming (a server behind its schedule drains a backlog: late is not
/// lost); once none came for this long, what is missing counts as lost.
const QUIET: Duration = Duration::from_secs(2);
/// The longest wait for a backlog to drain.
const MAX_DRAIN: Duration = Duration::from_secs(60);

/// Each publication's reads so far.
pub(super) struct Tracker {
    /// Subscribers per channel: the reads that complete a publication.
    expected: u32,
    count: Vec<AtomicU32>,
    /// Call start to the earliest and the latest read, in microseconds.
    first: Vec<AtomicU64>,
    last: Vec<AtomicU64>,
    pub(super) delivered: AtomicU64,
    /// Publications from this one on give a permit back once complete.
    pub(super) windowed_from: AtomicU64,
    pub(super) window: Semaphore,
}

impl Tracker {
    pub(super) fn new(expected: usize, capacity: usize) -> Self {
        Self {
            expected: u32::try_from(expected).unwrap_or(u32::MAX),
            count: (0..capacity).map(|_| AtomicU32::new(0)).collect(),
            first: (0..capacity).map(|_| AtomicU64::new(u64::MAX)).collect(),
            last: (0..capacity).map(|_| AtomicU64::new(0)).collect(),
            delivered: AtomicU64::new(0),
            windowed_from: AtomicU64::new(u64::MAX),
            window: Semaphore::new(0),
        }
    }

    pub(super) fn record(&self, seq: u64, latency_micros: u64) {
        let Ok(at) = usize::try_from(seq) else { return };
        let Some(count) = self.count.get(at) else {
            return;
        };
        self.first[at].fetch_min(latency_micros, Ordering::Relaxed);
        self.last[at].fetch_max(latency_micros, Ordering::Relaxed);
        self.delivered.fetch_add(1, Ordering::Relaxed);
        if count.fetch_add(1, Ordering::AcqRel) + 1 == self.expected
            && seq >= self.windowed_from.load(Ordering::Relaxed)
        {
            self.window.add_permits(1);
        }
    }

    /// Waits until every publication in `seqs` is complete, or deliveries
    /// stopped coming for [`QUIET`], or [`MAX_DRAIN`] passed.
    pub(super) async fn drain(&self, seqs: std::ops::Range<u64>) {
        let wanted = seqs.end - seqs.start;
        let deadline = Instant::now() + MAX_DRAIN;
        let mut seen = self.delivered.load(Ordering::Relaxed);
        let mut moved = Instant::now();
        while self.complete(seqs.clone()) < wanted && Instant::now() < deadline {
            sleep(Duration::from_millis(20)).await;
            let now = self.delivered.load(Ordering::Relaxed);
            if now != seen {
                (seen, moved) = (now, Instant::now());
            } else if moved.elapsed() >= QUIET {
                break;
            }
        }
    }

    pub(super) fn complete(&self, seqs: std::ops::Range<u64>) -> u64 {
        seqs.filter(|&seq| self.count[seq as usize].load(Ordering::Acquire) >= self.expected)
            .count() as u64
    }

    pub(super) fn delivered_in(&self, seqs: std::ops::Range<u64>) -> u64 {
        seqs.map(|seq| u64::from(self.count[seq as usize].load(Ordering::Acquire)))
            .sum()
    }

    /// Call start to first read of every publication read at all, and to
    /// last read of every complete one.
    pub(super) fn latencies(&self, seqs: std::ops::Range<u64>) -> (Samples, Samples) {
        let (mut first, mut last) = (Samples::default(), Samples::default());
        for seq in seqs {
            let at = seq as usize;
            let count = self.count[at].load(Ordering::Acquire);
            if count > 0 {
                first.record_micros(self.first[at].load(Ordering::Relaxed));
            }
            if count >= self.expected {
                last.record_micros(self.last[at].load(Ordering::Relaxed));
            }
        }
        (first, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_publication_is_complete_once_every_subscriber_read_it() {
        let tracker = Tracker::new(3, 4);
        tracker.windowed_from.store(2, Ordering::Relaxed);
        for latency in [500, 200, 900] {
            tracker.record(0, latency);
        }
        tracker.record(1, 100);
        for _ in 0..3 {
            tracker.record(2, 50);
        }
        tracker.record(9, 1);
        assert_eq!(tracker.complete(0..4), 2);
        assert_eq!(tracker.delivered_in(0..4), 7);
        assert_eq!(
            tracker.delivered.load(Ordering::Relaxed),
            7,
            "out of range is not counted"
        );
        assert_eq!(
            tracker.window.available_permits(),
            1,
            "only windowed publications give permits"
        );
        let (first, last) = tracker.latencies(0..3);
        assert_eq!(first.summary().count, 3);
        assert_eq!(last.summary().count, 2);
        assert_eq!(last.summary().max_ms, 0.9);
        assert_eq!(first.summary().p50_ms, 0.1);
    }
}
