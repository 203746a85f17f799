//! `subscribe`: the round trip of a `subscribe`, from writing it to reading
//! its `subscribed`, at a fixed rate (open loop), each on a connection of
//! its own and to a channel of its own: the first subscription of a
//! connection, and a channel the gateway has no subscriber of yet (so its
//! feed subscribes it in Redis before the answer). With a secret, each
//! carries a subscription token (claims `sub`, `channel`, `exp`).

use std::{collections::BTreeMap, sync::Arc, time::Duration};

use tokio::{
    sync::{mpsc, watch},
    time::{Instant, sleep_until},
};
use tokio_util::sync::CancellationToken;

use super::{
    ClientSetup,
    channels::{ANSWER_TIMEOUT, Crowd, open_crowd, subscribe, subscription_token},
    due,
    marks::Marks,
};
use crate::{
    result::SubscribeResult,
    stats::{Samples, round3},
};

/// What the `subscribe` scenario is asked to do.
pub struct SubscribeOptions {
    /// Which server and configuration, for the result.
    pub label: String,
    /// The connections, one per subscribe.
    pub crowd: Crowd,
    /// Channel `i` is this prefix and `i`; its namespace is what is measured.
    pub channel_prefix: String,
    /// Mint a subscription token per subscribe with this HS256 secret.
    pub token_secret: Option<String>,
    /// Subscribes per second.
    pub rate: f64,
    /// The server's pid, for its CPU per subscribe.
    pub server_pid: Option<u32>,
    /// Other processes whose CPU per subscribe to report (Redis).
    pub watch_pids: Vec<(String, u32)>,
}

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(setup: ClientSetup, options: SubscribeOptions) -> anyhow::Result<SubscribeResult> {
    let count = options.crowd.count;
    println!(
        "subscribe [{}]: {count} connections, then one subscribe each to {}N at {}/s{}",
        options.label,
        options.channel_prefix,
        options.rate,
        if options.token_secret.is_some() {
            ", with subscription tokens"
        } else {
            ""
        }
    );
    let stop = CancellationToken::new();
    let (go_tx, go) = watch::channel::<Option<Instant>>(None);
    let (answers_tx, mut answers) = mpsc::unbounded_channel::<Result<Duration, String>>();
    let body = {
        let (stop, prefix, rate) = (stop.clone(), options.channel_prefix.clone(), options.rate);
        let tokens: Option<Arc<str>> = options.token_secret.as_deref().map(Arc::from);
        let crowd = options.crowd.clone();
        move |index: usize, mut conn: crate::client::Conn| {
            let (stop, answers_tx, mut go) = (stop.clone(), answers_tx.clone(), go.clone());
            let channel = format!("{prefix}{index}");
            // Minted before the schedule starts, so that signing is not timed.
            let token = tokens
                .as_deref()
                .map(|secret| subscription_token(secret, &crowd.user(index), &channel));
            async move {
                let Ok(start) = go
                    .wait_for(Option::is_some)
                    .await
                    .map(|start| start.expect("waited for it"))
                else {
                    return;
                };
                sleep_until(due(start, index as u64, rate)).await;
                let answer = subscribe(&mut conn, 1, &channel, token.as_deref()).await;
                let _ = answers_tx.send(answer);
                // Held until the end, so that no unsubscribe overlaps the others.
                tokio::select! {
                    () = stop.cancelled() => {}
                    _ = async { while let Ok(Some(_)) = conn.next_text().await {} } => {}
                }
            }
        }
    };
    let (tasks, mut failures) = open_crowd(&setup, &options.crowd, body).await?;
    let opened = count as u64 - failures.values().sum::<u64>();
    let pids: Vec<u32> = options.server_pid.into_iter().collect();
    let before = Marks::take(&pids, &options.watch_pids, 0)?;
    let _ = go_tx.send(Some(Instant::now() + Duration::from_millis(100)));
    let mut rtt = Samples::with_capacity(count);
    let schedule = Duration::from_secs_f64(count as f64 / options.rate.max(0.001));
    let deadline = Instant::now() + schedule + ANSWER_TIMEOUT + Duration::from_secs(1);
    for _ in 0..opened {
        match tokio::time::timeout_at(deadline, answers.recv()).await {
            Ok(Some(Ok(latency))) => rtt.record(latency),
            Ok(Some(Err(code))) => *failures.entry(code).or_insert(0) += 1,
            Ok(None) | Err(_) => break,
        }
    }
    let after = Marks::take(&pids, &options.watch_pids, rtt.len() as u64)?;
    stop.cancel();
    for task in tasks {
        task.await?;
    }
    let answered = rtt.len() as u64;
    let per_subscribe = |cpu: Duration| {
        if answered == 0 {
            0.0
        } else {
            round3(cpu.as_secs_f64() * 1e6 / answered as f64)
        }
    };
    let summary = rtt.summary();
    println!(
        "subscribe [{}]: {answered} subscribed of {count}; failures {failures:?}; round trip p50 {} ms, p99 {} ms, max {} ms",
        options.label, summary.p50_ms, summary.p99_ms, summary.max_ms
    );
    Ok(SubscribeResult {
        label: options.label,
        namespace: options
            .channel_prefix
            .split_once(':')
            .map_or("(default)", |(namespace, _)| namespace)
            .to_owned(),
        token: options.token_secret.is_some(),
        rate_target: options.rate,
        subscribes: count as u64,
        subscribed: answered,
        failures: failures.into_iter().collect::<BTreeMap<_, _>>(),
        rtt: summary,
        server_cpu_us_per_subscribe: before.server_cpu_until(&after).map(per_subscribe),
        other_cpu_us_per_subscribe: before
            .others_until(&after)
            .into_iter()
            .map(|(name, cpu)| (name, per_subscribe(cpu)))
            .collect(),
    })
}
