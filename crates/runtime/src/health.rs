//! The one health-watch loop of the gRPC services: a readiness check run on a
//! timer and mirrored into `grpc.health.v1.Health`.
//!
//! Failure policy, the same for every service:
//! - the caller reports its starting status before it serves, and passes it
//!   in, so that no caller sees the health service's default `SERVING` for a
//!   replica that cannot answer;
//! - the check runs at once, then every `interval`; a check slower than the
//!   interval delays the next one rather than bursting to catch up;
//! - the status changes only on a transition, for every service name given;
//! - a failing check after a passing one (or as the first) logs one warning
//!   with the check's error, and passing again logs one info line; a check
//!   that keeps failing logs nothing more;
//! - once `stopping` turns true (or its sender is gone) the loop ends, and a
//!   check that finishes after that is discarded: shutdown wins, and the
//!   caller reports `NOT_SERVING` itself.

use std::{fmt::Display, future::Future, time::Duration};

use tokio::{
    sync::watch,
    time::{MissedTickBehavior, interval},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

/// What one service's health watch reports to and how often it checks.
#[derive(Debug, Clone)]
pub struct HealthWatch {
    /// The health service's reporter.
    pub reporter: HealthReporter,
    /// Every service name the status is set for (`""` is the server as a whole).
    pub services: &'static [&'static str],
    /// What is checked, for the log lines (`"presence backend"`, `"key sources"`).
    pub subject: &'static str,
    /// The time between checks.
    pub interval: Duration,
}

impl HealthWatch {
    /// Sets `status` for every service name.
    pub async fn report(&self, status: ServingStatus) {
        for service in self.services {
            self.reporter.set_service_status(*service, status).await;
        }
    }

    /// Runs `check` under the policy in the [module docs](self) until
    /// `stopping` turns true; `reported` is whether the status already
    /// reported is `SERVING`.
    pub async fn run<C, F, E>(
        self,
        reported: bool,
        mut check: C,
        mut stopping: watch::Receiver<bool>,
    ) where
        C: FnMut() -> F,
        F: Future<Output = Result<(), E>>,
        E: Display,
    {
        let mut ticks = interval(self.interval);
        ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let mut reported = reported;
        let mut last_passed: Option<bool> = None;
        loop {
            tokio::select! {
                _ = ticks.tick() => {}
                _ = stopping.wait_for(|stopping| *stopping) => return,
            }
            let result = check().await;
            // The check may have finished after shutdown began; shutdown wins.
            if *stopping.borrow() {
                return;
            }
            let passed = result.is_ok();
            match (&result, last_passed) {
                (Err(error), None | Some(true)) => {
                    warn!(subject = self.subject, %error, "health check fails; health is NOT_SERVING");
                }
                (Ok(()), Some(false)) => {
                    info!(
                        subject = self.subject,
                        "health check passes again; health is SERVING"
                    );
                }
                _ => {}
            }
            last_passed = Some(passed);
            if passed != reported {
                let status = if passed {
                    ServingStatus::Serving
                } else {
                    ServingStatus::NotServing
                };
                self.report(status).await;
                reported = passed;
            }
        }
    }
}
