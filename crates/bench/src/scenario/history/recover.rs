//! `recover`: a client that missed publications reconnects, to another
//! gateway, and sends `subscribe` with `since`; timed from writing it to
//! reading the `subscribed` answer, which carries every missed publication
//! (the last one replayed is in it). Beside it, in the same schedule and
//! interleaved one for one, a plain `subscribe` (no `since`) to a channel
//! of the same namespace, positioned the same way: what the recovery adds.
//! (A plain subscribe reads only the stream's position, whatever the
//! stream holds, so its channels get no publications.)
//!
//! 1. Positions: on the first gateway, connections subscribe to every
//!    channel (up to 100 each) and keep the `offset` and `epoch` of each
//!    answer, then go away (the socket is dropped, as a network would).
//! 2. Missed: `missed` publications to each `since-` channel through the
//!    gRPC API, a window of them in flight; each answer must carry an offset.
//! 3. Reconnections: on the second gateway, a connection per channel;
//!    subscribes at a fixed rate (open loop), alternately with `since` and
//!    plain, each on a connection of its own and to a channel the gateway
//!    has no subscriber of yet.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use tokio::{
    sync::{Semaphore, mpsc, watch},
    task::JoinSet,
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;

use super::{ChannelsApi, padded_data, publish_answer, request};
use crate::{
    result::RecoverResult,
    scenario::{
        ClientSetup,
        channels::{ANSWER_TIMEOUT, Crowd, open_crowd},
        due,
        marks::Marks,
        open,
    },
    stats::{Samples, round3},
};

/// Channels one connection subscribes to in the positions step (a
/// connection holds at most 128).
const CHANNELS_PER_CONNECTION: usize = 100;
/// Connections taking positions at once.
const POSITION_CONNECTIONS: usize = 8;
/// Publish calls in flight while the missed publications are made.
const PUBLISH_WINDOW: usize = 64;

/// What the `recover` scenario is asked to do.
pub struct RecoverOptions {
    /// Which configuration, for the result.
    pub label: String,
    /// The gateway the clients were on before (positions).
    pub first: SocketAddr,
    /// The reconnections (gateway 2's `crowd.servers`; `count` is set here).
    pub crowd: Crowd,
    /// Where the missed publications are made.
    pub api: ChannelsApi,
    /// Channels are this prefix, `since-` or `plain-`, and a number; the
    /// namespace must keep at least `missed` publications.
    pub channel_prefix: String,
    /// Subscribes with `since` (as many plain ones).
    pub samples: usize,
    /// Publications missed per channel.
    pub missed: usize,
    /// The length of each publication's data, in bytes.
    pub data_bytes: usize,
    /// Subscribes per second, both kinds together.
    pub rate: f64,
    /// The second gateway's pid, for its CPU per subscribe.
    pub server_pid: Option<u32>,
    /// Other processes whose CPU per subscribe to report (Redis).
    pub watch_pids: Vec<(String, u32)>,
}

/// Where a channel's stream was when the client left it.
#[derive(Debug, Clone, PartialEq)]
struct Position {
    offset: u64,
    epoch: String,
}

/// What one timed subscribe came to.
enum Outcome {
    /// Recovered every missed publication, in order: the round trip and
    /// the answer's size.
    Recovered(Duration, usize),
    /// A plain subscribe answered.
    Plain(Duration),
    /// Anything else, with a reason.
    Failed(String),
}

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(setup: ClientSetup, mut options: RecoverOptions) -> anyhow::Result<RecoverResult> {
    anyhow::ensure!(
        options.samples > 0 && options.missed > 0,
        "--samples and --missed must be at least 1"
    );
    let channels: Vec<String> = (0..options.samples)
        .flat_map(|i| {
            [
                format!("{}since-{i}", options.channel_prefix),
                format!("{}plain-{i}", options.channel_prefix),
            ]
        })
        .collect();
    println!(
        "recover [{}]: {} channels; positions on {}, {} publications missed on each, then reconnections to {} at {}/s",
        options.label,
        channels.len(),
        options.first,
        options.missed,
        options.crowd.servers[0],
        options.rate
    );
    let positions = Arc::new(take_positions(&setup, &options, &channels).await?);
    let recovering: Vec<String> = channels.iter().step_by(2).cloned().collect();
    publish_missed(&options, &recovering).await?;

    options.crowd.count = channels.len();
    let stop = CancellationToken::new();
    let (go_tx, go) = watch::channel::<Option<Instant>>(None);
    let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel::<Outcome>();
    let body = {
        let (stop, channels, positions) = (stop.clone(), Arc::new(channels), positions.clone());
        let (rate, missed) = (options.rate, options.missed as u64);
        move |index: usize, mut conn: crate::client::Conn| {
            let (stop, outcomes_tx, mut go) = (stop.clone(), outcomes_tx.clone(), go.clone());
            let channel = channels[index].clone();
            let since = index.is_multiple_of(2).then(|| positions[index].clone());
            async move {
                let Ok(start) = go
                    .wait_for(Option::is_some)
                    .await
                    .map(|start| start.expect("waited for it"))
                else {
                    return;
                };
                sleep_until(due(start, index as u64, rate)).await;
                let text = subscribe_text(1, &channel, since.as_ref());
                let outcome = match (request(&mut conn, 1, &text).await, &since) {
                    (Err(code), _) => Outcome::Failed(code),
                    (Ok((rtt, _)), None) => Outcome::Plain(rtt),
                    (Ok((rtt, answer)), Some(since)) => {
                        match check_recovery(&answer, since, missed) {
                            Ok(()) => Outcome::Recovered(rtt, answer.len()),
                            Err(reason) => Outcome::Failed(reason),
                        }
                    }
                };
                let _ = outcomes_tx.send(outcome);
                tokio::select! {
                    () = stop.cancelled() => {}
                    _ = async { while let Ok(Some(_)) = conn.next_text().await {} } => {}
                }
            }
        }
    };
    let (tasks, opened_failures) = open_crowd(&setup, &options.crowd, body).await?;
    let mut failures: BTreeMap<String, u64> = opened_failures
        .into_iter()
        .map(|(reason, n)| (format!("reconnect: {reason}"), n))
        .collect();
    let opened = options.crowd.count as u64 - failures.values().sum::<u64>();
    let pids: Vec<u32> = options.server_pid.into_iter().collect();
    let before = Marks::take(&pids, &options.watch_pids, 0)?;
    let _ = go_tx.send(Some(Instant::now() + Duration::from_millis(100)));
    let (mut since, mut plain) = (Samples::default(), Samples::default());
    let (mut recovered, mut not_recovered, mut answer_bytes) = (0u64, 0u64, 0u64);
    let schedule = Duration::from_secs_f64(options.crowd.count as f64 / options.rate);
    let deadline = Instant::now() + schedule + ANSWER_TIMEOUT + Duration::from_secs(1);
    for _ in 0..opened {
        match tokio::time::timeout_at(deadline, outcomes.recv()).await {
            Ok(Some(Outcome::Recovered(rtt, bytes))) => {
                since.record(rtt);
                recovered += 1;
                answer_bytes += bytes as u64;
            }
            Ok(Some(Outcome::Plain(rtt))) => plain.record(rtt),
            Ok(Some(Outcome::Failed(reason))) => {
                if reason.starts_with("not recovered") || reason.starts_with("recovered ") {
                    not_recovered += 1;
                }
                *failures.entry(reason).or_insert(0) += 1;
            }
            Ok(None) | Err(_) => break,
        }
    }
    let answered = (since.len() + plain.len()) as u64;
    let after = Marks::take(&pids, &options.watch_pids, answered)?;
    stop.cancel();
    for task in tasks {
        task.await?;
    }
    let per_subscribe = |cpu: Duration| {
        if answered == 0 {
            0.0
        } else {
            round3(cpu.as_secs_f64() * 1e6 / answered as f64)
        }
    };
    let result = RecoverResult {
        label: options.label,
        namespace: options
            .channel_prefix
            .split_once(':')
            .map_or("(default)", |(namespace, _)| namespace)
            .to_owned(),
        missed: options.missed as u64,
        data_bytes: options.data_bytes as u64,
        rate_target: options.rate,
        samples: options.samples as u64,
        since: since.summary(),
        plain: plain.summary(),
        recovered,
        not_recovered,
        failures,
        answer_bytes: if recovered == 0 {
            0.0
        } else {
            round3(answer_bytes as f64 / recovered as f64)
        },
        server_cpu_us_per_subscribe: before.server_cpu_until(&after).map(per_subscribe),
        other_cpu_us_per_subscribe: before
            .others_until(&after)
            .into_iter()
            .map(|(name, cpu)| (name, per_subscribe(cpu)))
            .collect(),
        foreign_cpu_percent: round3(before.foreign_percent_until(&after)),
    };
    println!(
        "recover [{}]: {} recovered of {}, {} not; with since p50 {} ms p99 {} ms (answers of {} B); plain p50 {} ms p99 {} ms; failures {:?}",
        result.label,
        result.recovered,
        result.samples,
        result.not_recovered,
        result.since.p50_ms,
        result.since.p99_ms,
        result.answer_bytes,
        result.plain.p50_ms,
        result.plain.p99_ms,
        result.failures
    );
    Ok(result)
}

/// Step 1: every channel's position, from `subscribed` answers on the
/// first gateway; the connections are dropped after.
async fn take_positions(
    setup: &ClientSetup,
    options: &RecoverOptions,
    channels: &[String],
) -> anyhow::Result<Vec<Position>> {
    let started = Instant::now();
    let limit = Arc::new(Semaphore::new(POSITION_CONNECTIONS));
    let mut tasks = JoinSet::new();
    for (chunk_index, chunk) in channels.chunks(CHANNELS_PER_CONNECTION).enumerate() {
        let permit = limit.clone().acquire_owned().await?;
        let (setup, chunk, first) = (setup.clone(), chunk.to_vec(), options.first);
        let path = setup.path_for(&format!(
            "{}-before-{chunk_index}",
            options.crowd.user_prefix
        ));
        tasks.spawn(async move {
            let _permit = permit;
            let mut conn = open(&setup, first, chunk_index, &path)
                .await
                .map_err(|reason| anyhow::anyhow!("a positions connection: {reason}"))?
                .conn;
            let mut found = Vec::with_capacity(chunk.len());
            for (n, channel) in chunk.iter().enumerate() {
                let id = n as u64 + 1;
                let (_, answer) = request(&mut conn, id, &subscribe_text(id, channel, None))
                    .await
                    .map_err(|reason| anyhow::anyhow!("subscribe to {channel}: {reason}"))?;
                found.push(position_of(&answer).ok_or_else(|| {
                    anyhow::anyhow!(
                        "{channel}: the answer has no offset and epoch (does the namespace keep history?)"
                    )
                })?);
            }
            anyhow::Ok((chunk_index, found))
        });
    }
    let mut chunks = BTreeMap::new();
    while let Some(joined) = tasks.join_next().await {
        let (index, found) = joined??;
        chunks.insert(index, found);
    }
    println!(
        "recover: {} positions taken in {:.1} s",
        channels.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(chunks.into_values().flatten().collect())
}

/// Step 2: `missed` publications to every one of `channels`, round after round.
async fn publish_missed(options: &RecoverOptions, channels: &[String]) -> anyhow::Result<()> {
    let started = Instant::now();
    let window = Arc::new(Semaphore::new(PUBLISH_WINDOW));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = JoinSet::new();
    let mut seq = 0u64;
    for _ in 0..options.missed {
        for channel in channels {
            let permit = window.clone().acquire_owned().await?;
            let (api, errors, channel) = (options.api.clone(), errors.clone(), channel.clone());
            let data = padded_data(seq, 0, options.data_bytes);
            seq += 1;
            tasks.spawn(async move {
                let _permit = permit;
                match publish_answer(&api, channel, data).await {
                    Ok(answer) if answer.offset > 0 => {}
                    Ok(_) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("recover: a publication without an offset: the namespace keeps no history");
                        }
                    }
                    Err(reason) => {
                        if errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            eprintln!("recover: first failed publish: {reason}");
                        }
                    }
                }
            });
            while tasks.try_join_next().is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
    let errors = errors.load(Ordering::Relaxed);
    anyhow::ensure!(
        errors == 0,
        "{errors} of {seq} publications failed or carried no offset"
    );
    println!(
        "recover: {seq} publications made in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The `subscribe` request, with `since` when given.
fn subscribe_text(id: u64, channel: &str, since: Option<&Position>) -> String {
    let channel = serde_json::Value::from(channel);
    match since {
        Some(since) => format!(
            r#"{{"type":"subscribe","id":{id},"channel":{channel},"since":{{"offset":{},"epoch":{}}}}}"#,
            since.offset,
            serde_json::Value::from(since.epoch.as_str())
        ),
        None => format!(r#"{{"type":"subscribe","id":{id},"channel":{channel}}}"#),
    }
}

/// The `offset` and `epoch` of a `subscribed` answer.
fn position_of(answer: &[u8]) -> Option<Position> {
    let value: serde_json::Value = serde_json::from_slice(answer).ok()?;
    Some(Position {
        offset: value["offset"].as_u64()?,
        epoch: value["epoch"].as_str()?.to_owned(),
    })
}

/// Whether a `subscribed` answer recovered exactly the `missed`
/// publications after `since`, in order; the error says what it held.
fn check_recovery(answer: &[u8], since: &Position, missed: u64) -> Result<(), String> {
    let value: serde_json::Value =
        serde_json::from_slice(answer).map_err(|_| "an answer that is not JSON".to_owned())?;
    if value["recovered"] != serde_json::Value::Bool(true) {
        return Err(format!("not recovered (recovered: {})", value["recovered"]));
    }
    let offsets: Vec<Option<u64>> = value["publications"]
        .as_array()
        .map(|publications| {
            publications
                .iter()
                .map(|publication| publication["offset"].as_u64())
                .collect()
        })
        .unwrap_or_default();
    let expected: Vec<Option<u64>> = (since.offset + 1..=since.offset + missed)
        .map(Some)
        .collect();
    if offsets != expected {
        return Err(format!(
            "recovered {} publications, not offsets {} to {}",
            offsets.len(),
            since.offset + 1,
            since.offset + missed
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn position() -> Position {
        Position {
            offset: 4,
            epoch: "e1".into(),
        }
    }

    #[test]
    fn a_subscribe_with_since_names_the_position() {
        let text = subscribe_text(3, "hist:a", Some(&position()));
        let value: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["since"]["offset"], 4);
        assert_eq!(value["since"]["epoch"], "e1");
        let message: pulse_protocol::ClientMessage = serde_json::from_str(&text).unwrap();
        assert!(matches!(
            message,
            pulse_protocol::ClientMessage::Subscribe { since: Some(_), .. }
        ));
        assert_eq!(
            subscribe_text(3, "hist:a", None),
            r#"{"type":"subscribe","id":3,"channel":"hist:a"}"#
        );
    }

    #[test]
    fn the_position_comes_from_the_answer() {
        let answer = br#"{"type":"subscribed","id":1,"channel":"hist:a","offset":4,"epoch":"e1"}"#;
        assert_eq!(position_of(answer), Some(position()));
        assert_eq!(
            position_of(br#"{"type":"subscribed","id":1,"channel":"bench:a"}"#),
            None
        );
    }

    #[test]
    fn a_recovery_holds_exactly_what_was_missed() {
        let answer = |recovered: bool, offsets: &[u64]| {
            let publications: Vec<serde_json::Value> = offsets
                .iter()
                .map(|offset| serde_json::json!({"offset": offset, "data": {"seq": 1}}))
                .collect();
            serde_json::json!({"type": "subscribed", "id": 1, "channel": "hist:a",
                "offset": 6, "epoch": "e1", "recovered": recovered, "publications": publications})
            .to_string()
        };
        assert_eq!(
            check_recovery(answer(true, &[5, 6]).as_bytes(), &position(), 2),
            Ok(())
        );
        assert!(check_recovery(answer(false, &[]).as_bytes(), &position(), 2).is_err());
        assert!(check_recovery(answer(true, &[5]).as_bytes(), &position(), 2).is_err());
        assert!(check_recovery(answer(true, &[6, 5]).as_bytes(), &position(), 2).is_err());
    }
}
