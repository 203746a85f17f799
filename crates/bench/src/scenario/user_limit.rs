//! `user-limit`: the per-user connection limit (`--max-connections-per-user`)
//! under a burst of one user's connections on several gateways at once.
//!
//! Each trial takes a new user and opens `connects` sockets for it, spread
//! round robin over the gateways: every TCP connection is opened first,
//! then all the upgrades (each with the same token) are written together,
//! behind a barrier, so that the registrations meet in Redis. Every socket
//! is followed to its first message: `connected`, or an `error` and the
//! close after it. Exactly `min(limit, connects)` must be live, the rest
//! refused with 4429 `too_many_connections`, and presence must hold as many
//! of the user's connections as went live. Then every socket is dropped and
//! the trial waits until presence holds none of the user's before it ends.
//! Several trials (users) may run at once (`concurrent_users`), for load.

use std::{collections::BTreeMap, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use futures_util::{StreamExt, future::join_all, stream};
use pulse_presence::{Presence, RedisOptions};
use tokio::{
    sync::Barrier,
    time::{Instant, sleep, timeout},
};

use super::{ClientSetup, OPEN_TIMEOUT, is_connected};
use crate::{
    client::{Conn, tcp_connect},
    result::UserLimitResult,
    stats::Samples,
};

/// The refusal the limit must give: close code and `error` code.
pub const LIMIT_REFUSAL: &str = "4429 too_many_connections";

/// How long a trial waits for presence to forget the user's connections.
const GONE_TIMEOUT: Duration = Duration::from_secs(10);

/// What the `user-limit` scenario is asked to do.
#[derive(Debug, Clone)]
pub struct UserLimitOptions {
    /// Which run this is (over the limit, or the control at the limit).
    pub label: String,
    /// The gateways, all on one Redis namespace with the same limit.
    pub gateways: Vec<SocketAddr>,
    /// Their Redis, to read the user's connections from presence.
    pub redis_url: String,
    /// Their namespace.
    pub namespace: String,
    /// The gateways' `--max-connections-per-user`.
    pub limit: usize,
    /// Sockets one user opens at once in each trial.
    pub connects: usize,
    /// Trials, each with a user of its own.
    pub trials: usize,
    /// Trials (users) at once: load beside each trial's own burst.
    pub concurrent_users: usize,
    /// User ids are this prefix and the trial's number.
    pub user_prefix: String,
}

/// How one socket of a trial ended up.
enum Outcome {
    /// `connected`, after this long from the upgrade's start.
    Accepted(Conn, Duration, usize),
    /// An `error` and a close: `"{close} {code}"`, after this long.
    Refused(String, Duration),
    /// Anything else.
    Other(String),
}

/// What one trial saw.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TrialCounts {
    /// Sockets that went live.
    pub accepted: usize,
    /// Refusals with [`LIMIT_REFUSAL`].
    pub limit_refusals: usize,
    /// Any other refusal or failure.
    pub others: usize,
    /// The user's connections in presence with the live ones held.
    pub in_presence: usize,
}

impl TrialCounts {
    /// Whether the trial is what the limit promises: `min(limit, connects)`
    /// live, every other socket refused with [`LIMIT_REFUSAL`], and
    /// presence holding exactly the live ones.
    pub fn exact(&self, limit: usize, connects: usize) -> bool {
        let live = limit.min(connects);
        self.accepted == live
            && self.limit_refusals == connects - live
            && self.others == 0
            && self.in_presence == live
    }
}

/// Runs the trials and returns the figures, printing a line per trial that
/// is not exact and one every tenth of the way.
pub async fn run(setup: ClientSetup, options: UserLimitOptions) -> anyhow::Result<UserLimitResult> {
    anyhow::ensure!(!options.gateways.is_empty(), "no gateway to connect to");
    anyhow::ensure!(options.connects > 0, "--connects must be at least 1");
    let presence =
        Presence::redis(RedisOptions::new(&options.redis_url).with_namespace(&options.namespace))
            .context("the gateways' presence")?;
    let setup = Arc::new(setup);
    let (limit, connects) = (options.limit, options.connects);
    println!(
        "user-limit [{}]: {} trials, {} at a time, {connects} sockets of one user at once over {} gateways, limit {limit}",
        options.label,
        options.trials,
        options.concurrent_users.max(1),
        options.gateways.len()
    );
    let mut accepted_handshake = Samples::with_capacity(options.trials * limit.min(connects));
    let mut refused_handshake = Samples::with_capacity(options.trials * connects);
    let mut refusals = BTreeMap::<String, u64>::new();
    let mut others = BTreeMap::<String, u64>::new();
    let mut accepted_by_gateway = vec![0u64; options.gateways.len()];
    let (mut exact_trials, mut accepted_min, mut accepted_max) = (0u64, usize::MAX, 0usize);
    let (mut presence_mismatches, mut first_inexact) = (0u64, None);
    let (mut done, tenth) = (0usize, (options.trials / 10).max(1));
    let started = Instant::now();
    let mut trials = stream::iter(0..options.trials)
        .map(|trial| one_trial(&setup, &options, &presence, trial))
        .buffer_unordered(options.concurrent_users.max(1));
    while let Some(seen) = trials.next().await {
        let seen = seen?;
        let counts = &seen.counts;
        for (latency, gateway) in &seen.accepted {
            accepted_handshake.record(*latency);
            accepted_by_gateway[*gateway] += 1;
        }
        for (reason, latency) in seen.refused {
            refused_handshake.record(latency);
            *refusals.entry(reason).or_default() += 1;
        }
        for reason in seen.others {
            *others.entry(reason).or_default() += 1;
        }
        if counts.in_presence != counts.accepted {
            presence_mismatches += 1;
        }
        accepted_min = accepted_min.min(counts.accepted);
        accepted_max = accepted_max.max(counts.accepted);
        if counts.exact(limit, connects) {
            exact_trials += 1;
        } else {
            let what = format!("trial {} ({}): {counts:?}", seen.trial, seen.user);
            println!("user-limit [{}]: NOT exact: {what}", options.label);
            first_inexact.get_or_insert(what);
        }
        done += 1;
        if done % tenth == 0 {
            println!(
                "user-limit [{}]: {done} trials, {exact_trials} exact, {:.1} s",
                options.label,
                started.elapsed().as_secs_f64()
            );
        }
    }
    drop(trials);
    let accepted = accepted_handshake.summary();
    let refused = refused_handshake.summary();
    println!(
        "user-limit [{}]: {exact_trials}/{} trials exact; accepted {}..{} per trial; refusals {refusals:?}; others {others:?}",
        options.label,
        options.trials,
        accepted_min.min(accepted_max),
        accepted_max
    );
    println!(
        "user-limit [{}]: upgrade to first message, accepted p50 {} ms p99 {} ms; refused p50 {} ms p99 {} ms",
        options.label, accepted.p50_ms, accepted.p99_ms, refused.p50_ms, refused.p99_ms
    );
    Ok(UserLimitResult {
        label: options.label,
        gateways: options.gateways.len() as u64,
        trials: options.trials as u64,
        concurrent_users: options.concurrent_users.max(1) as u64,
        limit: limit as u64,
        connects_per_trial: connects as u64,
        exact_trials,
        accepted_min: accepted_min.min(accepted_max) as u64,
        accepted_max: accepted_max as u64,
        accepted_by_gateway,
        refusals,
        others,
        presence_mismatches,
        first_inexact,
        accepted_handshake: accepted,
        refused_handshake: refused,
        duration_s: crate::stats::round3(started.elapsed().as_secs_f64()),
    })
}

/// What one trial saw, socket by socket.
struct Trial {
    trial: usize,
    user: String,
    counts: TrialCounts,
    /// Upgrade to `connected`, and the gateway's index, per live socket.
    accepted: Vec<(Duration, usize)>,
    /// `"{close} {code}"` and upgrade to `error`, per refused socket.
    refused: Vec<(String, Duration)>,
    /// What else happened, per socket.
    others: Vec<String>,
}

/// One trial: a new user's sockets at once, the user's connections in
/// presence with the live ones held, then every socket dropped and the
/// wait until presence holds none of them.
async fn one_trial(
    setup: &Arc<ClientSetup>,
    options: &UserLimitOptions,
    presence: &Presence,
    trial: usize,
) -> anyhow::Result<Trial> {
    let connects = options.connects;
    let user = format!("{}-{trial}", options.user_prefix);
    let path = Arc::new(setup.path_for(&user));
    let barrier = Arc::new(Barrier::new(connects));
    let attempts = (0..connects).map(|index| {
        let (setup, path, barrier) = (setup.clone(), path.clone(), barrier.clone());
        let gateway = index % options.gateways.len();
        let server = options.gateways[gateway];
        let source = trial * connects + index;
        tokio::spawn(async move { attempt(&setup, server, source, &path, &barrier, gateway).await })
    });
    let mut seen = Trial {
        trial,
        user,
        counts: TrialCounts::default(),
        accepted: Vec::new(),
        refused: Vec::new(),
        others: Vec::new(),
    };
    let mut live = Vec::with_capacity(options.limit.min(connects));
    for outcome in join_all(attempts).await {
        match outcome.context("a connection task panicked")? {
            Outcome::Accepted(conn, latency, gateway) => {
                seen.counts.accepted += 1;
                seen.accepted.push((latency, gateway));
                live.push(conn);
            }
            Outcome::Refused(reason, latency) => {
                if reason == LIMIT_REFUSAL {
                    seen.counts.limit_refusals += 1;
                } else {
                    seen.counts.others += 1;
                }
                seen.refused.push((reason, latency));
            }
            Outcome::Other(reason) => {
                seen.counts.others += 1;
                seen.others.push(reason);
            }
        }
    }
    seen.counts.in_presence = presence.user(&seen.user).await?.len();
    // Dropping the sockets ends them; the gateways unregister them.
    drop(live);
    wait_gone(presence, &seen.user).await?;
    Ok(seen)
}

/// One socket: TCP first, then the upgrade when every socket of the trial
/// is ready, then its first message (and the close, when refused).
async fn attempt(
    setup: &ClientSetup,
    server: SocketAddr,
    index: usize,
    path: &str,
    barrier: &Barrier,
    gateway: usize,
) -> Outcome {
    let stream = timeout(OPEN_TIMEOUT, tcp_connect(server, setup.source(index))).await;
    // Everyone waits here, whatever happened, so that the barrier opens.
    barrier.wait().await;
    let stream = match stream {
        Ok(Ok(stream)) => stream,
        Ok(Err(error)) => return Outcome::Other(format!("tcp connect: {}", error.kind())),
        Err(_) => return Outcome::Other("tcp connect timed out".to_owned()),
    };
    let started = Instant::now();
    let first = async {
        let mut conn = Conn::handshake(setup.kind, stream, server, path)
            .await
            .map_err(|error| format!("upgrade: {}", short(&error.to_string())))?;
        match conn.next_text().await {
            Ok(Some(first)) => Ok((conn, first)),
            Ok(None) => Err("closed before the first message".to_owned()),
            Err(error) => Err(format!("read: {}", short(&error.to_string()))),
        }
    };
    let (mut conn, first) = match timeout(OPEN_TIMEOUT, first).await {
        Ok(Ok(opened)) => opened,
        Ok(Err(reason)) => return Outcome::Other(reason),
        Err(_) => return Outcome::Other("timed out".to_owned()),
    };
    let latency = started.elapsed();
    if is_connected(&first) {
        return Outcome::Accepted(conn, latency, gateway);
    }
    let code = serde_json::from_slice::<serde_json::Value>(&first)
        .ok()
        .filter(|message| message["type"] == "error")
        .and_then(|message| message["code"].as_str().map(str::to_owned));
    let Some(code) = code else {
        return Outcome::Other(format!(
            "first message: {}",
            short(&String::from_utf8_lossy(&first))
        ));
    };
    match timeout(OPEN_TIMEOUT, conn.close_code()).await {
        Ok(Ok(Some(close))) => Outcome::Refused(format!("{close} {code}"), latency),
        Ok(Ok(None)) => Outcome::Refused(format!("no close code {code}"), latency),
        Ok(Err(error)) => Outcome::Other(format!("{code}, then {}", short(&error.to_string()))),
        Err(_) => Outcome::Other(format!("{code}, then no close")),
    }
}

/// Waits until presence holds none of `user`'s connections.
async fn wait_gone(presence: &Presence, user: &str) -> anyhow::Result<()> {
    let deadline = Instant::now() + GONE_TIMEOUT;
    loop {
        let held = presence.user(user).await?.len();
        if held == 0 {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "{user} still has {held} connections in presence {} s after its sockets closed",
            GONE_TIMEOUT.as_secs()
        );
        sleep(Duration::from_millis(5)).await;
    }
}

fn short(text: &str) -> String {
    text.chars().take(60).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_trial_is_exact_only_with_the_limit_live_and_the_rest_refused_4429() {
        let counts = |accepted, limit_refusals, others, in_presence| TrialCounts {
            accepted,
            limit_refusals,
            others,
            in_presence,
        };
        assert!(counts(5, 7, 0, 5).exact(5, 12));
        assert!(!counts(6, 6, 0, 6).exact(5, 12), "one over the limit");
        assert!(!counts(4, 8, 0, 4).exact(5, 12), "one under the limit");
        assert!(
            !counts(5, 6, 1, 5).exact(5, 12),
            "a refusal of another kind"
        );
        assert!(!counts(5, 7, 0, 6).exact(5, 12), "presence holds one more");
        // The control: as many sockets as the limit, none refused.
        assert!(counts(5, 0, 0, 5).exact(5, 5));
        assert!(!counts(4, 1, 0, 4).exact(5, 5));
    }
}
