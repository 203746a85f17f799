use std::collections::BTreeMap;

use super::*;
use crate::{
    report::{RunInfo, render_channels, render_history},
    stats::{Percentiles, Samples},
};

fn percentiles(micros: &[u64]) -> Percentiles {
    let mut samples = Samples::default();
    for &m in micros {
        samples.record_micros(m);
    }
    samples.summary()
}

fn publish(label: &str, path: &str, p99_micros: u64, with_offset: u64) -> PublishResult {
    PublishResult {
        label: label.into(),
        path: path.into(),
        channels: 1_000,
        data_bytes: 100,
        rate_target: 1_000.0,
        rate_achieved: 1_000.0,
        calls: 10_000,
        errors: 0,
        with_offset,
        call: percentiles(&[p99_micros]),
        cpu_us_per_call: BTreeMap::from([("redis".to_owned(), 30.0)]),
        client_cpu_us_per_call: 50.0,
        foreign_cpu_percent: 2.0,
    }
}

fn spread(label: &str, last_read_micros: u64) -> FanoutResult {
    FanoutResult {
        label: label.into(),
        phase: FanoutPhase::Rate,
        servers: 2,
        channels: 10_000,
        subscribers_per_channel: 1,
        subscribed: 10_000,
        failures: BTreeMap::new(),
        rate_target: 5_000.0,
        rate_achieved: 5_000.0,
        window: 0,
        duration_s: 10.0,
        publications: 50_000,
        publish_errors: 0,
        complete: 50_000,
        deliveries: 50_000,
        deliveries_expected: 50_000,
        deliveries_per_second: 5_000.0,
        last_read: percentiles(&[last_read_micros]),
        first_read: percentiles(&[last_read_micros]),
        publish_call: percentiles(&[1_500]),
        server_cpu_us_per_delivery: Some(60.0),
        server_cpu_percent: Some(30.0),
        server_writes_per_delivery: Some(1.1),
        other_cpu_us_per_delivery: BTreeMap::new(),
        client_cpu_us_per_delivery: 80.0,
        foreign_cpu_percent: 5.0,
        subscribe_meanwhile: None,
    }
}

fn recover(recovered: u64) -> RecoverResult {
    RecoverResult {
        label: PULSE.into(),
        namespace: "benchhist".into(),
        missed: 100,
        data_bytes: 100,
        rate_target: 200.0,
        samples: 1_000,
        since: percentiles(&[4_000]),
        plain: percentiles(&[1_000]),
        recovered,
        not_recovered: 1_000 - recovered,
        failures: BTreeMap::new(),
        answer_bytes: 12_500.0,
        server_cpu_us_per_subscribe: Some(300.0),
        other_cpu_us_per_subscribe: BTreeMap::new(),
        foreign_cpu_percent: 1.0,
    }
}

fn memory(data_bytes: u64, list_node: Option<i64>, usage: f64, info: f64) -> HistoryMemoryResult {
    HistoryMemoryResult {
        label: PULSE.into(),
        channels: 200,
        per_channel: 200,
        stagger: 100,
        data_bytes,
        stored: 20_000,
        list_node,
        hist_bytes: 3_000_000,
        meta_bytes: 20_000,
        used_memory_before: 1_000_000,
        used_memory_after: 4_100_000,
        usage_per_publication: usage,
        info_per_publication: info,
    }
}

fn results() -> Vec<BenchResult> {
    vec![
        BenchResult::Publish(publish(PULSE_HISTORY, "grpc", 2_500, 10_000)),
        BenchResult::Publish(publish(PULSE, "grpc", 1_000, 0)),
        BenchResult::Publish(publish(REDIS_FLOOR, "redis", 200, 10_000)),
        BenchResult::Fanout(spread(PULSE, 2_000)),
        BenchResult::Fanout(spread(PULSE_HISTORY, 2_500)),
        BenchResult::Recover(recover(1_000)),
        BenchResult::HistoryMemory(memory(100, None, 150.0, 155.0)),
        BenchResult::HistoryMemory(memory(1_024, Some(-2), 1_200.0, 1_150.0)),
        BenchResult::HistoryMemory(memory(1_024, Some(-3), 1_100.0, 1_090.0)),
    ]
}

#[test]
fn each_history_target_names_its_floor_and_by_how_much_it_is_missed() {
    let text = render_history(&results(), &RunInfo::default());
    assert!(
        text.contains("### Targets (issue 13: history and recovery)"),
        "{text}"
    );
    assert!(
        text.contains(
            "p99 at 1,000/s, 1,000 channels, 100 B of data: ≤ 2 ms | 2.5 ms | 1 ms without history; 0.2 ms Redis alone (RPUSH + LTRIM + SPUBLISH, one round trip) | 2.50× | **FAIL** (by 0.5 ms, 1.2× the limit) |"
        ),
        "{text}"
    );
    assert!(
        text.contains("API call p99 ≤ 2 ms | 1.5 ms | 1.5 ms without history | 1.00× | **PASS** |"),
        "{text}"
    );
    assert!(
        text.contains(
            "the subscriber's read p99 ≤ 3 ms | 2.5 ms | 2 ms without history | 1.25× | **PASS** |"
        ),
        "{text}"
    );
    assert!(
        text.contains("p99 ≤ 10 ms | 4 ms | 1 ms a plain `subscribe` | 4.00× | **PASS** |"),
        "{text}"
    );
    // The larger of the two readings, minus the data.
    assert!(
        text.contains("(100 B of data; 100 kept per channel; the larger of `MEMORY USAGE` and `INFO memory`) | 55 B | the data itself, 100 B | n/a | **PASS** |"),
        "{text}"
    );
    assert!(
        text.contains(
            "(1,024 B of data; 100 kept per channel; list nodes of 8 KiB (Redis's default); the larger of `MEMORY USAGE` and `INFO memory`) | 176 B | the data itself, 1,024 B | n/a | **FAIL** (by 76 B, 1.8× the limit) |"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "(1,024 B of data; 100 kept per channel; list nodes of 16 KiB, `list-max-listpack-size -3`; the larger of `MEMORY USAGE` and `INFO memory`) | 76 B | the data itself, 1,024 B | n/a | **PASS** |"
        ),
        "{text}"
    );
    assert!(
        text.contains("| 200 × 200 (+ `i % 100`) | 16 KiB | 20,000 | 1,024 B |"),
        "{text}"
    );
    assert!(
        text.contains("| 200 × 200 (+ `i % 100`) | not read | 20,000 | 100 B |"),
        "{text}"
    );
    assert!(text.contains("### Publish calls (`publish`)"), "{text}");
    assert!(
        text.contains("### Recovery after a reconnect (`recover`)"),
        "{text}"
    );
    assert!(
        text.contains("| pulse-history | 10,000 × 1, 2 | 5,000 (5,000) | 50000 / 50000 (0) | 1.5 / 1.5 ms | 2.5 / 2.5 / 2.5 ms |"),
        "{text}"
    );
    assert!(
        text.contains("### Redis memory per stored publication (`history-memory`)"),
        "{text}"
    );
}

#[test]
fn the_cluster_runs_get_a_table_of_their_own_and_leave_the_single_redis_targets_alone() {
    let mut results = results();
    let text = render_history(&results, &RunInfo::default());
    assert!(
        !text.contains("Redis Cluster"),
        "no cluster runs, no table: {text}"
    );
    let mut cluster_recover = recover(990);
    cluster_recover.label = PULSE_CLUSTER.into();
    results.extend([
        BenchResult::Publish(publish(PULSE_HISTORY_CLUSTER, "grpc", 1_800, 10_000)),
        BenchResult::Publish(publish(PULSE_CLUSTER, "grpc", 1_200, 0)),
        BenchResult::Fanout(spread(PULSE_CLUSTER, 2_200)),
        BenchResult::Fanout(spread(PULSE_HISTORY_CLUSTER, 3_300)),
        BenchResult::Recover(cluster_recover),
    ]);
    let text = render_history(&results, &RunInfo::default());
    let (one, cluster) = text
        .split_once("### Targets on a three-master Redis Cluster (the same targets)")
        .expect("a cluster table");
    // The single-Redis table still reads its own runs.
    assert!(
        one.contains("≤ 2 ms | 2.5 ms | 1 ms without history; 0.2 ms Redis alone"),
        "{one}"
    );
    assert!(
        one.contains("| 4 ms | 1 ms a plain `subscribe` | 4.00× | **PASS** |"),
        "{one}"
    );
    let cluster = cluster.split("###").next().unwrap();
    assert!(
        cluster.contains("≤ 2 ms | 1.8 ms | 1.2 ms without history | 1.50× | **PASS** |"),
        "{cluster}"
    );
    assert!(
        cluster.contains("read p99 ≤ 3 ms | 3.3 ms | 2.2 ms without history | 1.50× | **FAIL**"),
        "{cluster}"
    );
    assert!(cluster.contains("990 of 1000 recovered"), "{cluster}");
    assert!(!cluster.contains("Redis memory"), "{cluster}");
    assert!(
        text.contains("| pulse-history-cluster | 10,000 × 1, 2 |"),
        "{text}"
    );
}

#[test]
fn a_recovery_that_lost_publications_fails_whatever_its_speed() {
    let mut runs = results();
    runs.push(BenchResult::Recover(recover(990)));
    let text = render_history(&runs, &RunInfo::default());
    assert!(text.contains("**FAIL** (990 of 1000 recovered)"), "{text}");
}

#[test]
fn a_history_publish_answered_without_offsets_fails() {
    let runs = vec![BenchResult::Publish(publish(
        PULSE_HISTORY,
        "grpc",
        500,
        10,
    ))];
    let text = render_history(&runs, &RunInfo::default());
    assert!(
        text.contains("**FAIL** (0 failed calls, 10 of 10000 answers with an offset)"),
        "{text}"
    );
    assert!(
        text.contains("not run without history; not run Redis alone"),
        "{text}"
    );
}

#[test]
fn without_history_results_the_section_is_left_out() {
    let runs = vec![BenchResult::Fanout(spread(PULSE, 2_000))];
    let text = render_history(&runs, &RunInfo::default());
    assert!(!text.contains("issue 13"), "{text}");
}

#[test]
fn the_channels_block_leaves_the_history_results_to_their_own() {
    let text = render_channels(&results(), &RunInfo::default());
    assert!(!text.contains("issue 13"), "{text}");
    assert!(!text.contains(r#""scenario":"recover""#), "{text}");
    let history = render_history(&results(), &RunInfo::default());
    assert!(history.contains(r#""scenario":"recover""#), "{history}");
    assert!(history.contains(r#""label":"pulse-history""#), "{history}");
}
