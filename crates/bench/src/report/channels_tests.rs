use std::collections::BTreeMap;

use super::*;
use crate::{
    report::{
        CHANNELS_END_MARKER, CHANNELS_START_MARKER, RunInfo, render, render_channels, splice,
        splice_between,
    },
    result::PingResult,
    stats::{Percentiles, Samples},
};

fn percentiles(micros: &[u64]) -> Percentiles {
    let mut samples = Samples::default();
    for &m in micros {
        samples.record_micros(m);
    }
    samples.summary()
}

fn fanout(label: &str, phase: FanoutPhase, subscribers: u64, channels: u64) -> FanoutResult {
    FanoutResult {
        label: label.into(),
        phase,
        servers: 1,
        channels,
        subscribers_per_channel: subscribers,
        subscribed: subscribers * channels,
        failures: BTreeMap::new(),
        rate_target: if phase == FanoutPhase::Rate {
            10.0
        } else {
            0.0
        },
        rate_achieved: 10.0,
        window: 8,
        duration_s: 10.0,
        publications: 100,
        publish_errors: 0,
        complete: 100,
        deliveries: 100 * subscribers,
        deliveries_expected: 100 * subscribers,
        deliveries_per_second: 250_000.0,
        last_read: percentiles(&[80_000, 90_000]),
        first_read: percentiles(&[1_000]),
        publish_call: percentiles(&[500]),
        server_cpu_us_per_delivery: Some(4.0),
        server_cpu_percent: Some(100.0),
        server_writes_per_delivery: Some(1.0),
        other_cpu_us_per_delivery: BTreeMap::new(),
        client_cpu_us_per_delivery: 3.0,
        foreign_cpu_percent: 12.5,
        subscribe_meanwhile: None,
    }
}

fn results() -> Vec<BenchResult> {
    let mut pulse_sat = fanout(PULSE, FanoutPhase::Saturation, 10_000, 1);
    pulse_sat.server_cpu_us_per_delivery = Some(6.0);
    pulse_sat.deliveries_per_second = 200_000.0;
    let mut coalesced = fanout(FANOUT_FLOOR_COALESCE, FanoutPhase::Saturation, 10_000, 1);
    coalesced.server_writes_per_delivery = Some(0.25);
    let mut pulse_rate = fanout(PULSE, FanoutPhase::Rate, 10_000, 1);
    pulse_rate.last_read = percentiles(&[100_000, 110_000]);
    let mut small = fanout(PULSE, FanoutPhase::Rate, 1_000, 1);
    small.rate_target = 50.0;
    small.last_read = percentiles(&[20_000]);
    let mut spread = fanout(PULSE, FanoutPhase::Rate, 1, 10_000);
    spread.servers = 2;
    spread.rate_target = 5_000.0;
    spread.last_read = percentiles(&[4_000]);
    vec![
        BenchResult::Fanout(fanout(FANOUT_FLOOR, FanoutPhase::Rate, 10_000, 1)),
        BenchResult::Fanout(fanout(FANOUT_FLOOR, FanoutPhase::Saturation, 10_000, 1)),
        BenchResult::Fanout(coalesced),
        BenchResult::Fanout(pulse_rate),
        BenchResult::Fanout(pulse_sat),
        BenchResult::Fanout(small),
        BenchResult::Fanout(spread),
        BenchResult::Subscribe(SubscribeResult {
            label: PULSE.into(),
            namespace: "bench".into(),
            token: false,
            rate_target: 500.0,
            subscribes: 2000,
            subscribed: 2000,
            failures: BTreeMap::new(),
            rtt: percentiles(&[1_500]),
            server_cpu_us_per_subscribe: Some(40.0),
            other_cpu_us_per_subscribe: BTreeMap::from([("redis".to_owned(), 20.0)]),
        }),
        BenchResult::Subscriptions(SubscriptionsResult {
            label: PULSE.into(),
            channels_mode: "shared".into(),
            connections: 5_000,
            per_connection: 10,
            subscribed: 50_000,
            failures: BTreeMap::new(),
            rss_before_kib: 10_000,
            rss_connected_kib: 16_500,
            rss_subscribed_kib: 26_500,
            rss_per_connection_kib: 1.3,
            bytes_per_subscription: 204.8,
        }),
    ]
}

#[test]
fn each_target_is_judged_against_the_floor_of_the_same_run() {
    let text = render_channels(&results(), &RunInfo::default());
    assert!(
        text.contains("gateway CPU per delivery at saturation ≤ 1.3 × the floor's | 6 µs | 4 µs | 1.50× | **FAIL** |"),
        "{text}"
    );
    assert!(
        text.contains(
            "at saturation ≥ 0.8 × the floor's | 200,000/s | 250,000/s | 0.80× | **PASS** |"
        ),
        "{text}"
    );
    assert!(
        text.contains("last subscriber's read p99 at 10/s ≤ 1.3 × the floor's | 110 ms | 90 ms | 1.22× | **PASS** |"),
        "{text}"
    );
    assert!(
        text.contains("one channel, 1,000 subscribers: publish → last read p99 at 50/s ≤ 25 ms | 20 ms | n/a | n/a | **PASS** |"),
        "{text}"
    );
    assert!(
        text.contains("≤ 1.3 × the coalescing floor's | 1 | 0.25 | 4.00× | **FAIL** |"),
        "{text}"
    );
    assert!(
        text.contains("10,000 channels × 1 subscriber over 2 gateways, 5,000/s through gRPC: publish → delivery p99 ≤ 3 ms | 4 ms | n/a | n/a | **FAIL** |"),
        "{text}"
    );
    assert!(text.contains("(subscriptions to channels other connections hold too) | 205 B | n/a | n/a | **FAIL** |"), "{text}");
    // What was not run is said to be so, not invented.
    assert!(text.contains("(each to a channel of its own, the channel's cost included) | not run | n/a | n/a | not measured |"), "{text}");
    assert!(
        text.contains("with a subscription token: ≤ 5 ms | not run | n/a | n/a | not measured |"),
        "{text}"
    );
    assert!(
        text.contains("an open namespace: ≤ 2 ms | 1.5 ms | n/a | n/a | **PASS** |"),
        "{text}"
    );
    assert!(
        text.contains("personal channel ≤ 1.5 KiB (5,000 held) | 1.3 KiB | n/a | n/a | **PASS** |"),
        "{text}"
    );
    assert!(text.contains("up to 12.5 % of a core"), "{text}");
    assert_eq!(text.matches("RESULT {").count(), results().len());
}

#[test]
fn the_two_blocks_hold_their_own_results_and_markers() {
    let mut all = results();
    all.push(BenchResult::Ping(PingResult {
        label: PULSE.into(),
        connections: 50,
        rate_target: 1000.0,
        rate_achieved: 1000.0,
        sent: 10,
        received: 10,
        rtt: percentiles(&[300]),
    }));
    // The gateway's connect burst of the same run, when there is one, gives
    // the idle connection's memory (it holds more connections).
    all.push(
        BenchResult::from_line(
            r#"RESULT {"scenario":"connect","label":"pulse","client":"fws","connections_target":19500,"connected":19500,"failures":{},"sources":8,"rate_target":20000.0,"rate_achieved":15563.968,"max_inflight":128,"foreign_cpu_percent":0.0,"handshake":{"count":19500,"p50_ms":7.746,"p90_ms":10.483,"p99_ms":26.025,"max_ms":33.881,"mean_ms":8.164},"handshake_from_schedule":{"count":19500,"p50_ms":174.919,"p90_ms":261.722,"p99_ms":280.058,"max_ms":285.023,"mean_ms":165.037},"server_cpu_us_per_connection":42.051,"server_rss_before_kib":12888,"server_rss_after_kib":38948,"server_rss_per_connection_kib":1.336,"idle_window_s":0.0,"server_idle_cpu_percent":null,"dropped_while_held":0,"other_cpu_us_per_connection":{"redis":14.872},"client_cpu_us_per_connection":40.513,"client_rss_per_connection_kib":7.793}"#,
        )
        .unwrap()
        .unwrap(),
    );
    let main = render(&all, &RunInfo::default());
    assert_eq!(main.matches("RESULT {").count(), 2, "{main}");
    assert!(!main.contains("issue 12"), "{main}");
    let channels = render_channels(&all, &RunInfo::default());
    assert_eq!(channels.matches("RESULT {").count(), all.len() - 2);
    assert!(
        channels.contains("personal channel ≤ 1.5 KiB (19,500 held) | 1.336 KiB |"),
        "{channels}"
    );

    let document = format!(
        "# Benchmarks\n\n{}\ngateway tables\n{}\n\n## Channels\n\n{CHANNELS_START_MARKER}\nold\n{CHANNELS_END_MARKER}\n\nnotes\n",
        crate::report::START_MARKER,
        crate::report::END_MARKER
    );
    let spliced = splice_between(&document, "new", CHANNELS_START_MARKER, CHANNELS_END_MARKER);
    assert_eq!(spliced, document.replace("\nold\n", "\nnew\n"));
    assert_eq!(
        splice(&spliced, "gateway tables"),
        spliced,
        "the gateway's block is its own"
    );
}
