use std::collections::BTreeMap;

use super::*;
use crate::{
    result::{PingResult, SendResult},
    stats::Samples,
};

fn percentiles(micros: &[u64]) -> crate::stats::Percentiles {
    let mut samples = Samples::default();
    for &m in micros {
        samples.record_micros(m);
    }
    samples.summary()
}

fn connect_result(label: &str, rate: f64, rss: f64) -> BenchResult {
    BenchResult::Connect(ConnectResult {
        label: label.into(),
        client: "fws".into(),
        connections_target: 19_500,
        connected: 19_500,
        failures: BTreeMap::new(),
        sources: 16,
        rate_target: 15_000.0,
        rate_achieved: rate,
        max_inflight: 128,
        foreign_cpu_percent: 1.0,
        handshake: percentiles(&[1000, 2000, 40_000]),
        handshake_from_schedule: percentiles(&[1000, 2000, 90_000]),
        server_cpu_us_per_connection: Some(50.0),
        server_rss_before_kib: Some(10_000),
        server_rss_after_kib: Some(10_000 + (rss * 19_500.0) as u64),
        server_rss_per_connection_kib: Some(rss),
        idle_window_s: 30.0,
        server_idle_cpu_percent: Some(1.0),
        dropped_while_held: 0,
        other_cpu_us_per_connection: BTreeMap::from([("redis".to_owned(), 20.0)]),
        client_cpu_us_per_connection: 20.0,
        client_rss_per_connection_kib: 9.0,
        other_instances_connections: None,
    })
}

#[test]
fn verdicts_say_by_how_much() {
    assert_eq!(
        verdict(16_000.0, Goal::AtLeast(15_000.0), "/s"),
        "**met** (107 % of the target)"
    );
    assert_eq!(
        verdict(12_000.0, Goal::AtLeast(15_000.0), "/s"),
        "**missed** by 3,000/s (80 % of the target)"
    );
    assert_eq!(
        verdict(0.5, Goal::AtMost(1.0), " ms"),
        "**met** (50 % of the limit)"
    );
    assert_eq!(
        verdict(6.0, Goal::AtMost(1.5), " KiB"),
        "**missed** by 4.5 KiB (4.0× the limit)"
    );
}

#[test]
fn numbers_are_grouped_and_trimmed() {
    assert_eq!(number(19_500.0), "19,500");
    assert_eq!(number(1_234_567.4), "1,234,567");
    assert_eq!(number(-2_500.0), "-2,500");
    assert_eq!(number(0.25), "0.25");
    assert_eq!(number(12.34), "12.3");
    assert_eq!(number(3.0), "3");
    assert_eq!(number(0.0), "0");
    assert_eq!(number(f64::NAN), "n/a");
}

#[test]
fn render_has_targets_ratios_and_raw_lines() {
    let results = vec![
        connect_result(FLOOR, 20_000.0, 6.0),
        connect_result(PULSE, 12_000.0, 9.0),
        BenchResult::Ping(PingResult {
            label: FLOOR.into(),
            connections: 50,
            rate_target: 1000.0,
            rate_achieved: 1000.0,
            sent: 10_000,
            received: 10_000,
            rtt: percentiles(&[100, 200]),
        }),
        BenchResult::Ping(PingResult {
            label: PULSE.into(),
            connections: 50,
            rate_target: 1000.0,
            rate_achieved: 1000.0,
            sent: 10_000,
            received: 10_000,
            rtt: percentiles(&[300, 400]),
        }),
        BenchResult::Send(SendResult {
            label: PULSE.into(),
            users: 100,
            connections: 200,
            gateways: 2,
            rate_target: 1000.0,
            rate_achieved: 1000.0,
            sent: 10_000,
            grpc_errors: 0,
            reported: 20_000,
            delivered: 20_000,
            latency: percentiles(&[1000, 2500]),
            grpc_call: percentiles(&[800]),
        }),
    ];
    let info = RunInfo {
        command: "scripts/bench.sh".into(),
        machine: "2 cores".into(),
        date: "today".into(),
        setup: String::new(),
    };
    let text = render(&results, &info);
    assert!(text.contains("- Command: `scripts/bench.sh`"));
    assert!(text.contains(
        "| connect + auth + presence, in-process auth + Redis: ≥ 15,000/s | 12,000/s | **missed** by 3,000/s (80 % of the target) |"
    ));
    assert!(text.contains("| gateway RSS per idle authenticated connection: ≤ 1.5 KiB | 9 KiB | **missed** by 7.5 KiB (6.0× the limit) |"));
    // The gRPC-auth run did not happen: said so, not invented.
    assert!(text.contains("gRPC auth + Redis: ≥ 10,000/s | not run | not measured |"));
    // Pulse over the floor, same run.
    assert!(text.contains("| server RSS per held connection | 6 KiB | 9 KiB | 1.50× |"));
    assert!(text.contains("| 0.4 ms | 0.2 ms | 2.00× |"));
    assert!(text.contains(
        "Send to user across two gateways p99 at 1,000 msg/s: ≤ 3 ms | 2.5 ms | **met**"
    ));
    assert_eq!(text.matches("RESULT {").count(), results.len());
}

#[test]
fn splice_replaces_only_between_markers() {
    let document = "# Benchmarks\n\nintro\n\n<!-- bench:start -->\nold tables\n<!-- bench:end -->\n\n## Token validation (pulse-auth)\n\ntheirs\n";
    let spliced = splice(document, "new tables\n");
    assert_eq!(
        spliced,
        "# Benchmarks\n\nintro\n\n<!-- bench:start -->\nnew tables\n<!-- bench:end -->\n\n## Token validation (pulse-auth)\n\ntheirs\n"
    );
    // Idempotent.
    assert_eq!(splice(&spliced, "new tables"), spliced);
}

#[test]
fn splice_appends_markers_when_missing() {
    assert_eq!(
        splice("", "tables"),
        "# Benchmarks\n\n<!-- bench:start -->\ntables\n<!-- bench:end -->\n"
    );
    assert_eq!(
        splice(
            "# Benchmarks\n\n## Token validation (pulse-auth)\n\ntheirs\n",
            "tables"
        ),
        "# Benchmarks\n\n## Token validation (pulse-auth)\n\ntheirs\n\n<!-- bench:start -->\ntables\n<!-- bench:end -->\n"
    );
}

#[test]
fn the_median_run_is_reported_with_the_idle_window_of_its_run() {
    let with_rate = |rate: f64, idle: f64| match connect_result(PULSE, rate, 10.0) {
        BenchResult::Connect(mut run) => {
            run.idle_window_s = idle;
            run.server_idle_cpu_percent = Some(idle / 10.0);
            BenchResult::Connect(run)
        }
        _ => unreachable!(),
    };
    let results = vec![
        with_rate(8_000.0, 30.0),
        with_rate(12_000.0, 0.0),
        with_rate(10_000.0, 0.0),
    ];
    let median = median_connect(&results, PULSE).unwrap();
    assert_eq!(median.rate_achieved, 10_000.0);
    assert_eq!(median.idle_window_s, 30.0);
    assert_eq!(median.server_idle_cpu_percent, Some(3.0));
    assert!(median_connect(&results, FLOOR).is_none());
    let text = render(&results, &RunInfo::default());
    assert!(
        text.contains("pulse: 8,000/s (p99 40 ms, others 1 %), 12,000/s (p99 40 ms, others 1 %), 10,000/s (p99 40 ms, others 1 %)")
    );
}

#[test]
fn the_fleet_section_compares_the_two_runs() {
    let fleet = |label: &str, others: u64, rss_after: u64| {
        let BenchResult::Connect(mut run) = connect_result(label, 5_000.0, 1.3) else {
            unreachable!()
        };
        run.connected = 10_000;
        run.server_rss_after_kib = Some(rss_after);
        run.other_instances_connections = Some(others);
        BenchResult::Connect(run)
    };
    let met = [
        fleet(FLEET_ALONE, 0, 30_000),
        fleet(FLEET_CROWDED, 50_000, 30_600),
    ];
    let text = render(&met, &RunInfo::default());
    assert!(
        text.contains("50,000 held by other instances vs none: within 5 % | 2 % | **met**"),
        "{text}"
    );
    assert!(
        text.contains("| 50,000 | 10,000 | 10,000 KiB | 30,600 KiB |"),
        "{text}"
    );
    assert!(text.contains("+2.0 %"), "{text}");

    let missed = [
        fleet(FLEET_ALONE, 0, 30_000),
        fleet(FLEET_CROWDED, 50_000, 45_000),
    ];
    let text = render(&missed, &RunInfo::default());
    assert!(text.contains("| 50 % | **missed**"), "{text}");
    // Without the runs, the row says so and the section is left out.
    let text = render(&missed[..1], &RunInfo::default());
    assert!(
        text.contains("vs none: within 5 % | not run | not measured |"),
        "{text}"
    );
    assert!(!text.contains("rest of the fleet"), "{text}");
}
