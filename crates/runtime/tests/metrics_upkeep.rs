//! A process whose `/metrics` nobody scrapes must not keep every histogram
//! sample it ever recorded: the recorder's samples are folded into their
//! buckets in the background.
//!
//! Its own test binary: it counts the process's live heap bytes with a
//! counting global allocator.

use std::{
    alloc::System,
    time::{Duration, Instant},
};

use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static ALLOCATOR: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

const SAMPLES: u64 = 200_000;

#[test]
fn histogram_samples_are_folded_without_a_scrape() {
    let handle = pulse_runtime::metrics::install();
    let histogram = metrics::histogram!("pulse_upkeep_test_seconds");
    let region = Region::new(ALLOCATOR);
    let live = || {
        let change = region.change();
        change.bytes_allocated as i64 + change.bytes_reallocated as i64
            - change.bytes_deallocated as i64
    };
    for _ in 0..SAMPLES {
        histogram.record(0.001);
    }
    let held = live();
    assert!(
        held >= 8 * SAMPLES as i64,
        "recording {SAMPLES} samples holds them until they are folded ({held} bytes)"
    );
    // Liveness, not speed: the upkeep runs every few seconds; a minute
    // without it means it does not run. A sample now and then, as a live
    // process records them: the folded blocks are freed once the recorder's
    // epoch has moved on, which a later fold does.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut recorded = SAMPLES;
    loop {
        histogram.record(0.001);
        recorded += 1;
        let now = live();
        if now < held / 4 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the samples are still held a minute later ({now} of {held} bytes) though nothing scraped /metrics"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let text = handle.render();
    assert!(
        text.contains(&format!("pulse_upkeep_test_seconds_count {recorded}")),
        "folding lost no sample:\n{text}"
    );
}
