//! Keeps this instance's lease in presence alive, and repairs presence after
//! Redis comes back or after this instance was reaped while stalled.
//!
//! The task renews every third of the lease ttl. A renewal that finds no lease
//! (reaped, or Redis restarted empty), or the first one that succeeds after
//! failures (Redis was away: registrations and deregistrations meanwhile were
//! lost), re-synchronises: Redis is made to hold exactly the connections this
//! instance has open and their channel memberships, and the events (and
//! `join`/`leave`s) the outage hid are published then.
//! Sockets stay open throughout; the outage is logged once, not per connection.
//!
//! It also re-synchronises every `--resync-interval` when nothing seemed
//! wrong: a Redis failover can lose the last writes to a master without any
//! sign a gateway can see (the lease may survive on the replica), and this
//! bounds how long such a loss can last.

use std::sync::Arc;

use pulse_presence::ConnectionRecord;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::shared::Shared;

/// Renews the lease and re-syncs when needed, until `sessions_over`: not at
/// the start of a drain, since the sockets it has not closed yet must stay
/// registered (the reaper would take them all once the lease ran out).
/// A renewal or re-sync in flight finishes first. The ttl is the presence
/// store's own ([`Presence::lease_ttl`], the one its registrations give the
/// leases they create), so the two cannot differ; in memory there is no
/// lease to keep.
///
/// [`Presence::lease_ttl`]: pulse_presence::Presence::lease_ttl
pub(crate) async fn keep_lease(shared: Arc<Shared>, sessions_over: CancellationToken) {
    let Some(ttl) = shared.presence.lease_ttl() else {
        sessions_over.cancelled().await;
        return;
    };
    let instance_id = shared.settings.instance_id.as_str();
    let mut ticks = tokio::time::interval(ttl / 3);
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let resync_interval = shared.settings.resync_interval;
    // Whether Redis holds what this instance has, as far as we know.
    let mut in_sync = false;
    let mut reported_outage = false;
    let mut last_sync = tokio::time::Instant::now();
    loop {
        tokio::select! {
            () = sessions_over.cancelled() => return,
            _ = ticks.tick() => {}
        }
        match shared.presence.renew_lease(instance_id).await {
            Ok(true)
                if in_sync
                    && (resync_interval.is_zero() || last_sync.elapsed() < resync_interval) =>
            {
                continue;
            }
            Ok(held) => {
                let periodic = held && in_sync;
                last_sync = tokio::time::Instant::now();
                let manager = shared.manager.clone();
                let own = instance_id.to_owned();
                let local = move || records(&manager, &own);
                // From the moment it queues for the lock: joins, leaves and
                // admissions queued behind it wait from then on.
                let started = tokio::time::Instant::now();
                let resync = shared.resync.write().await;
                let synced = match shared.presence.sync_instance(instance_id, local).await {
                    Ok(report) => {
                        let members = || shared.channels.members(&shared.settings.namespaces);
                        shared
                            .presence
                            .sync_members(instance_id, members)
                            .await
                            .map(|channels| (report, channels))
                    }
                    Err(error) => Err(error),
                };
                drop(resync);
                crate::telemetry::resync(
                    if periodic { "periodic" } else { "repair" },
                    synced.is_ok(),
                    started.elapsed(),
                );
                match synced {
                    Ok((report, channels)) => {
                        let repaired = report.registered
                            + report.removed
                            + channels.registered
                            + channels.removed
                            > 0;
                        if periodic && repaired {
                            warn!(
                                registered = report.registered,
                                removed = report.removed,
                                memberships_entered = channels.registered,
                                memberships_removed = channels.removed,
                                "periodic re-sync found presence out of step with this instance's \
                                 connections (writes lost in a Redis failover?) and repaired it"
                            );
                        } else if reported_outage || !held && repaired {
                            info!(
                                registered = report.registered,
                                removed = report.removed,
                                memberships_entered = channels.registered,
                                memberships_removed = channels.removed,
                                lease_was_held = held,
                                "presence re-synchronised with this instance's connections"
                            );
                        }
                        in_sync = true;
                        reported_outage = false;
                    }
                    Err(error) => {
                        in_sync = false;
                        if !reported_outage {
                            warn!(%error, "presence re-sync failed; retrying");
                            reported_outage = true;
                        }
                    }
                }
            }
            Err(error) => {
                in_sync = false;
                if !reported_outage {
                    warn!(
                        %error,
                        open = shared.manager.len(),
                        "presence unreachable: sockets stay open and new ones are accepted; \
                         they are registered when it returns"
                    );
                    reported_outage = true;
                }
            }
        }
    }
}

/// This instance's open connections, as presence records.
fn records(manager: &crate::ConnectionManager, instance_id: &str) -> Vec<ConnectionRecord> {
    manager
        .snapshot()
        .into_iter()
        .map(|(user_id, connection)| ConnectionRecord {
            connection_id: connection.connection_id.to_string(),
            user_id: user_id.to_string(),
            instance_id: instance_id.to_owned(),
            connected_at_ms: connection.connected_at_ms,
        })
        .collect()
}
