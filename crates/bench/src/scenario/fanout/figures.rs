//! A phase's figures, from the marks at its two ends and the tracker.

use std::{collections::BTreeMap, sync::atomic::Ordering, time::Duration};

use super::{Calls, FanoutOptions};
use crate::{
    result::{FanoutPhase, FanoutResult},
    scenario::marks::Marks,
    stats::{Samples, round3},
};

pub(super) struct FiguresIn<'a> {
    pub(super) publications: u64,
    pub(super) complete: u64,
    pub(super) deliveries: u64,
    pub(super) rate_achieved: f64,
    pub(super) first: Samples,
    pub(super) last: Samples,
    pub(super) calls: &'a Calls,
}

pub(super) fn figures(
    options: &FanoutOptions,
    phase: FanoutPhase,
    before: &Marks,
    after: &Marks,
    input: FiguresIn<'_>,
) -> FanoutResult {
    let wall = after.at.duration_since(before.at);
    let deliveries = input.deliveries;
    let per_delivery = |cpu: Duration| {
        if deliveries == 0 {
            0.0
        } else {
            round3(cpu.as_secs_f64() * 1e6 / deliveries as f64)
        }
    };
    let server_cpu = before.server_cpu_until(after);
    FanoutResult {
        label: options.label.clone(),
        phase,
        servers: options.crowd.servers.len() as u64,
        channels: options.channels as u64,
        subscribers_per_channel: options.subscribers as u64,
        subscribed: 0,
        failures: BTreeMap::new(),
        rate_target: if phase == FanoutPhase::Rate {
            options.rate
        } else {
            0.0
        },
        rate_achieved: input.rate_achieved,
        window: if phase == FanoutPhase::Saturation {
            options.window as u64
        } else {
            0
        },
        duration_s: round3(wall.as_secs_f64()),
        publications: input.publications,
        publish_errors: input.calls.errors.load(Ordering::Relaxed),
        complete: input.complete,
        deliveries,
        deliveries_expected: input.publications * options.subscribers as u64,
        deliveries_per_second: if wall.is_zero() {
            0.0
        } else {
            round3(deliveries as f64 / wall.as_secs_f64())
        },
        last_read: input.last.summary(),
        first_read: input.first.summary(),
        publish_call: input
            .calls
            .samples
            .lock()
            .expect("no panics while locked")
            .summary(),
        server_cpu_us_per_delivery: server_cpu.map(per_delivery),
        server_cpu_percent: server_cpu.map(|cpu| round3(crate::procfs::cpu_percent(cpu, wall))),
        server_writes_per_delivery: before
            .server_writes_until(after)
            .filter(|_| deliveries > 0)
            .map(|writes| round3(writes as f64 / deliveries as f64)),
        other_cpu_us_per_delivery: before
            .others_until(after)
            .into_iter()
            .map(|(name, cpu)| (name, per_delivery(cpu)))
            .collect(),
        client_cpu_us_per_delivery: per_delivery(before.client_cpu_until(after)),
        foreign_cpu_percent: round3(before.foreign_percent_until(after)),
        subscribe_meanwhile: None,
    }
}

pub(super) fn print_result(result: &FanoutResult) {
    println!(
        "fanout [{}] {:?}: {} publications ({} complete, {} failed calls), {} deliveries of {} expected, {}/s; \
         last read p50 {} ms p99 {} ms max {} ms; server CPU {:?} µs/delivery, {:?} writes/delivery; load generator {} µs/delivery; others {} %",
        result.label,
        result.phase,
        result.publications,
        result.complete,
        result.publish_errors,
        result.deliveries,
        result.deliveries_expected,
        result.deliveries_per_second,
        result.last_read.p50_ms,
        result.last_read.p99_ms,
        result.last_read.max_ms,
        result.server_cpu_us_per_delivery,
        result.server_writes_per_delivery,
        result.client_cpu_us_per_delivery,
        result.foreign_cpu_percent
    );
}
