//! `subscriptions`: what a subscription costs a gateway in memory. Opens
//! the connections and reads the gateway's RSS with every one held and no
//! subscription (which also gives the RSS per idle connection with only
//! its personal channel), then has each subscribe to several channels and
//! reads it again: the difference over the subscriptions is the bytes one
//! costs beyond its connection's own. **Shared** channels (every
//! connection subscribes to the same few) measure the subscription proper;
//! **distinct** ones (a channel per subscription) add what a channel with
//! one subscriber costs (its table entry and its feed subscription).

use std::{collections::BTreeMap, time::Duration};

use tokio::{
    sync::{mpsc, watch},
    time::{Instant, sleep, sleep_until},
};
use tokio_util::sync::CancellationToken;

use super::{
    ClientSetup,
    channels::{ANSWER_TIMEOUT, Crowd, open_crowd, subscribe},
    due,
};
use crate::{procfs::Process, result::SubscriptionsResult, stats::round3};

/// What the `subscriptions` scenario is asked to do.
pub struct SubscriptionsOptions {
    /// Which server and configuration, for the result.
    pub label: String,
    /// The connections.
    pub crowd: Crowd,
    /// Channels are this prefix and a number (distinct: the connection's
    /// index, `-` and a number).
    pub channel_prefix: String,
    /// Subscriptions per connection.
    pub per_connection: usize,
    /// A channel per subscription, instead of the same channels for all.
    pub distinct: bool,
    /// Connections per second that start subscribing (each subscribes to
    /// its channels one after the other).
    pub subscribe_rate: f64,
    /// The gateway's pid, for its RSS.
    pub server_pid: u32,
    /// Pause before each RSS reading, for the allocator to return what
    /// the burst before it freed.
    pub settle: Duration,
}

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(
    setup: ClientSetup,
    options: SubscriptionsOptions,
) -> anyhow::Result<SubscriptionsResult> {
    let server = Process::Pid(options.server_pid);
    let count = options.crowd.count;
    let per_connection = options.per_connection;
    let mode = if options.distinct {
        "distinct"
    } else {
        "shared"
    };
    println!(
        "subscriptions [{}]: {count} connections, then {per_connection} {mode} subscriptions each",
        options.label
    );
    let rss_before = server.rss_kib()?;
    let stop = CancellationToken::new();
    let (go_tx, go) = watch::channel::<Option<Instant>>(None);
    let (answers_tx, mut answers) = mpsc::unbounded_channel::<Result<Duration, String>>();
    let body = {
        let (stop, prefix, distinct, rate) = (
            stop.clone(),
            options.channel_prefix.clone(),
            options.distinct,
            options.subscribe_rate,
        );
        move |index: usize, mut conn: crate::client::Conn| {
            let (stop, answers_tx, mut go, prefix) =
                (stop.clone(), answers_tx.clone(), go.clone(), prefix.clone());
            async move {
                let Ok(start) = go
                    .wait_for(Option::is_some)
                    .await
                    .map(|start| start.expect("waited for it"))
                else {
                    return;
                };
                sleep_until(due(start, index as u64, rate)).await;
                for n in 0..per_connection {
                    let channel = if distinct {
                        format!("{prefix}{index}-{n}")
                    } else {
                        format!("{prefix}{n}")
                    };
                    let _ =
                        answers_tx.send(subscribe(&mut conn, n as u64 + 1, &channel, None).await);
                }
                tokio::select! {
                    () = stop.cancelled() => {}
                    _ = async { while let Ok(Some(_)) = conn.next_text().await {} } => {}
                }
            }
        }
    };
    let (tasks, mut failures) = open_crowd(&setup, &options.crowd, body).await?;
    let opened = (count as u64).saturating_sub(failures.values().sum::<u64>());
    sleep(options.settle).await;
    let rss_connected = server.rss_kib()?;
    println!(
        "subscriptions [{}]: {opened} connections held; RSS {rss_before} KiB before, {rss_connected} KiB with them",
        options.label
    );

    let _ = go_tx.send(Some(Instant::now()));
    let wanted = opened * per_connection as u64;
    let schedule = Duration::from_secs_f64(count as f64 / options.subscribe_rate.max(0.001));
    let deadline = Instant::now() + schedule + ANSWER_TIMEOUT * per_connection as u32;
    let mut subscribed = 0u64;
    for _ in 0..wanted {
        match tokio::time::timeout_at(deadline, answers.recv()).await {
            Ok(Some(Ok(_))) => subscribed += 1,
            Ok(Some(Err(code))) => *failures.entry(format!("subscribe: {code}")).or_insert(0) += 1,
            Ok(None) | Err(_) => break,
        }
    }
    sleep(options.settle).await;
    let rss_subscribed = server.rss_kib()?;
    stop.cancel();
    for task in tasks {
        task.await?;
    }
    let rss_per_connection_kib = if opened == 0 {
        0.0
    } else {
        round3(rss_connected.saturating_sub(rss_before) as f64 / opened as f64)
    };
    let bytes_per_subscription = if subscribed == 0 {
        0.0
    } else {
        round3((rss_subscribed as f64 - rss_connected as f64) * 1024.0 / subscribed as f64)
    };
    println!(
        "subscriptions [{}]: {subscribed} subscriptions; RSS {rss_subscribed} KiB: {bytes_per_subscription} B per subscription, {rss_per_connection_kib} KiB per connection; failures {failures:?}",
        options.label
    );
    Ok(SubscriptionsResult {
        label: options.label,
        channels_mode: mode.to_owned(),
        connections: opened,
        per_connection: per_connection as u64,
        subscribed,
        failures: failures.into_iter().collect::<BTreeMap<_, _>>(),
        rss_before_kib: rss_before,
        rss_connected_kib: rss_connected,
        rss_subscribed_kib: rss_subscribed,
        rss_per_connection_kib,
        bytes_per_subscription,
    })
}
