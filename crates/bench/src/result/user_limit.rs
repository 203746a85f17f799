//! The result of the `user-limit` scenario (issue 15).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::Percentiles;

/// The `user-limit` scenario: trials in which one user opens more sockets
/// at once than `--max-connections-per-user` allows (or exactly as many,
/// the control), spread over gateways that share one presence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct UserLimitResult {
    /// Which run (over the limit, or the control).
    pub label: String,
    /// Gateways the sockets were spread over, round robin.
    pub gateways: u64,
    /// Trials, each with a user of its own.
    pub trials: u64,
    /// Trials (users) that ran at once.
    #[serde(default = "one")]
    pub concurrent_users: u64,
    /// The gateways' `--max-connections-per-user`.
    pub limit: u64,
    /// Sockets opened at once in each trial.
    pub connects_per_trial: u64,
    /// Trials with exactly `min(limit, connects)` live, the rest refused
    /// 4429 `too_many_connections`, nothing else, and presence holding
    /// exactly the live ones.
    pub exact_trials: u64,
    /// The fewest sockets that went live in a trial.
    pub accepted_min: u64,
    /// The most.
    pub accepted_max: u64,
    /// Live sockets over all trials, by gateway (in the order given).
    pub accepted_by_gateway: Vec<u64>,
    /// Sockets answered with an `error` and a close, by `"{close} {code}"`.
    pub refusals: BTreeMap<String, u64>,
    /// Sockets that failed otherwise, by reason.
    pub others: BTreeMap<String, u64>,
    /// Trials where presence held another number of the user's connections
    /// than went live.
    pub presence_mismatches: u64,
    /// The first trial that was not exact, and what it saw.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_inexact: Option<String>,
    /// The upgrade's start (TCP already open) to `connected`.
    pub accepted_handshake: Percentiles,
    /// The upgrade's start to the `error` before the close.
    pub refused_handshake: Percentiles,
    /// How long all the trials took, in seconds.
    pub duration_s: f64,
}

fn one() -> u64 {
    1
}

impl UserLimitResult {
    /// Sockets that should be refused in each trial.
    pub fn over_limit_per_trial(&self) -> u64 {
        self.connects_per_trial.saturating_sub(self.limit)
    }

    /// Whether every trial was exact and nothing but the limit's refusal
    /// was seen.
    pub fn all_exact(&self) -> bool {
        self.trials > 0
            && self.exact_trials == self.trials
            && self.others.is_empty()
            && self.presence_mismatches == 0
            && self
                .refusals
                .keys()
                .all(|reason| reason == "4429 too_many_connections")
    }
}
