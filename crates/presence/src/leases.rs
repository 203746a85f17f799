//! Instance leases, the reaper, and re-synchronisation: how presence stays
//! true when an instance dies without saying goodbye or Redis loses its data.
//!
//! Each gateway instance renews a lease in Redis every third of its ttl
//! ([`Presence::renew_lease`]). An instance that dies (kill -9, a lost node,
//! a cut network) stops renewing; once its lease expires, the reaper
//! ([`Presence::reap_expired`], run by `pulse-presence` every reap interval)
//! removes its connections with `disconnected` and `offline` events. When a
//! renewal finds no lease it wrote itself (the instance was reaped while
//! stalled, even if its registrations re-created the lease since; Redis came
//! back empty, or restarted with its data, or failed over) or follows a
//! failed one (Redis was away), the instance re-synchronises
//! ([`Presence::sync_instance`]) so that Redis holds exactly its open
//! connections again, publishing the events the outage hid.
//!
//! Lease time runs only while the Redis process that holds the deadlines
//! does: after a restart with data or a failover, the scripts give every
//! lease back the time it had left (see `lua/prelude.lua`), so no live
//! instance is reaped because it could not renew while Redis was away.

use std::time::Duration;

use tokio::time::MissedTickBehavior;
use tracing::{info, warn};

use crate::{Backend, ConnectionRecord, Presence, PresenceError, SyncReport, check_id, observe};

impl Presence {
    /// How long an instance's lease lasts without renewal: the
    /// [`RedisOptions::lease_ttl`] this store was built with, which the
    /// registration script also gives the leases it creates, so the renewing
    /// side reads it here rather than keeping a copy that could differ.
    /// `None` in memory, where there are no leases.
    ///
    /// [`RedisOptions::lease_ttl`]: crate::RedisOptions::lease_ttl
    pub fn lease_ttl(&self) -> Option<std::time::Duration> {
        match &self.inner.backend {
            Backend::Memory(_) => None,
            Backend::Redis(store) => Some(store.lease_ttl()),
        }
    }

    /// Renews `instance_id`'s lease. `Ok(false)` means it held none that a
    /// renewal had written (new, expired, reaped, re-created by a
    /// registration since, carried over a Redis restart or failover, or
    /// Redis lost its data): the caller must re-sync.
    /// Always `Ok(true)` in memory, where nothing can be lost.
    pub async fn renew_lease(&self, instance_id: &str) -> Result<bool, PresenceError> {
        check_id("instance id", instance_id)?;
        match &self.inner.backend {
            Backend::Memory(_) => Ok(true),
            Backend::Redis(store) => observe("renew_lease", store.renew_lease(instance_id)).await,
        }
    }

    /// Keeps the store's shared Redis connection busy for `seconds`, as a
    /// burst of other commands would; for tests of what must not wait
    /// behind it. Does nothing in memory.
    ///
    /// # Errors
    ///
    /// [`PresenceError::Unavailable`] when Redis does not answer.
    #[cfg(any(test, feature = "testing"))]
    pub async fn hold_shared_connection(&self, seconds: u64) -> Result<(), PresenceError> {
        match &self.inner.backend {
            Backend::Memory(_) => Ok(()),
            Backend::Redis(store) => store.hold_shared_connection(seconds).await,
        }
    }

    /// Reaps every instance whose lease expired; returns each reaped instance
    /// with how many connections it held. Safe to run from several processes
    /// at once: each instance is reaped, and its events published, once.
    pub async fn reap_expired(&self) -> Result<Vec<(String, u64)>, PresenceError> {
        match &self.inner.backend {
            Backend::Memory(_) => Ok(Vec::new()),
            Backend::Redis(store) => observe("reap", store.reap()).await,
        }
    }

    /// Makes the store hold exactly the connections `local` returns for
    /// `instance_id`, registering what is missing and removing what is stale,
    /// with the usual events. `local` is called after the store's view is
    /// read, so a connection registered meanwhile is never taken for stale,
    /// and again once the registrations landed: a connection registered here
    /// that `local` no longer returns closed meanwhile (its own
    /// deregistration may have come first and found nothing) and is removed
    /// again, so a re-sync never brings back a closed connection.
    /// Idempotent; in memory there is nothing to repair.
    pub async fn sync_instance(
        &self,
        instance_id: &str,
        local: impl Fn() -> Vec<ConnectionRecord>,
    ) -> Result<SyncReport, PresenceError> {
        check_id("instance id", instance_id)?;
        match &self.inner.backend {
            Backend::Memory(_) => Ok(SyncReport::default()),
            Backend::Redis(store) => observe("sync", store.sync_instance(instance_id, local)).await,
        }
    }
}

/// Runs the reaper every `interval` until `shutdown` completes. Logs each
/// reaped instance, and a Redis outage once (not on every attempt).
pub async fn run_reaper(
    presence: Presence,
    interval: Duration,
    shutdown: impl Future<Output = ()>,
) {
    let mut ticks = tokio::time::interval(interval);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut failing = false;
    loop {
        tokio::select! {
            () = &mut shutdown => return,
            _ = ticks.tick() => {}
        }
        match presence.reap_expired().await {
            Ok(reaped) => {
                if failing {
                    info!("reaper reaches redis again");
                    failing = false;
                }
                for (instance_id, connections) in reaped {
                    warn!(%instance_id, connections, "reaped an instance whose lease expired");
                    metrics::counter!("pulse_presence_leases_reaped_total").increment(1);
                    metrics::counter!("pulse_presence_connections_reaped_total")
                        .increment(connections);
                }
            }
            Err(error) => {
                if !failing {
                    warn!(%error, "reaper cannot reach redis; retrying every interval");
                    failing = true;
                }
            }
        }
    }
}
