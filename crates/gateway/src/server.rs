//! A gateway's life: built from its settings, serving (the background
//! tasks, then the accept loop) until shutdown, then the drain and the sweep.
//! Accepting is in `listener.rs`, routing in `routes.rs`, the drain's
//! closing order in `drain.rs`, the commands in `commands.rs`.

use std::{sync::Arc, time::Duration};

use pulse_auth::Authenticator;
use pulse_presence::FeedEvent;
use pulse_presence::Presence;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{info, warn};

use crate::{
    ConnectionManager, Settings, admin, channels::run_fan_out, commands::run_commands,
    drain::DrainReport, drain::drain, listener, shared::Shared,
};

/// How long `serve` waits for its command subscription before accepting.
const COMMANDS_READY_WAIT: Duration = Duration::from_secs(2);
/// How long the end of a drain waits for a lease renewal or re-sync in
/// flight (each Redis command gives up after 3 s) before the final sweep.
const LEASE_STOP_WAIT: Duration = Duration::from_secs(3);

/// A gateway: its shared state, before and while it serves.
pub struct Gateway {
    pub(crate) shared: Arc<Shared>,
    admin: Option<TcpListener>,
    /// The publications of this instance's channels, for the fan-out task.
    deliveries: mpsc::UnboundedReceiver<FeedEvent>,
}

impl Gateway {
    /// A gateway with these settings, validating tokens with `auth` and
    /// keeping presence in `presence`.
    pub fn new(settings: Settings, auth: Authenticator, presence: Presence) -> Self {
        if let Some(history) = settings.namespaces.personal.history() {
            // Personal channels are subscribed like channels, with offsets.
            presence.set_personal_history(history);
        }
        let (shared, deliveries) = Shared::new(settings, auth, presence);
        Self {
            shared: Arc::new(shared),
            admin: None,
            deliveries,
        }
    }

    /// Serves `/healthz`, `/readyz` and `/metrics` on this listener (the
    /// admin port) and no longer on the public one.
    pub fn with_admin_listener(mut self, listener: TcpListener) -> Self {
        self.admin = Some(listener);
        self
    }

    /// The connections this gateway holds.
    pub fn manager(&self) -> Arc<ConnectionManager> {
        self.shared.manager.clone()
    }

    /// Serves on an already-bound listener until `shutdown` completes, then
    /// drains: stops accepting, closes every socket with 1001, deregisters
    /// them from presence and returns. Until its socket closes, a connection
    /// stays registered and reachable by commands: the lease and the command
    /// task outlive the sessions.
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send,
    ) -> Result<DrainReport, std::io::Error> {
        let Self {
            shared,
            admin,
            deliveries,
        } = self;
        // With an admin listener the probes and metrics are served there
        // only, through the drain, and stop once it is over.
        let probes_here = admin.is_none();
        let admin_stop = CancellationToken::new();
        let admin = admin.map(|listener| {
            tokio::spawn(admin::serve(listener, shared.clone(), admin_stop.clone()))
        });
        let presence = shared.presence.clone();
        let instance_id = shared.settings.instance_id.clone();
        tokio::spawn({
            let presence = presence.clone();
            async move { presence.warn_if_redis_evicts().await }
        });
        // A restart with the same instance id must not leave the previous life's
        // connections behind.
        match presence.unregister_instance(&instance_id).await {
            Ok(0) => {}
            Ok(stale) => info!(%instance_id, stale, "removed connections left by a previous run"),
            Err(error) => {
                warn!(%instance_id, %error, "could not clear a previous run's connections")
            }
        }

        let tracker = TaskTracker::new();
        tracker.spawn(
            shared
                .readiness
                .clone()
                .run(presence.clone(), shared.shutdown.clone()),
        );
        // The lease and the commands serve the sessions until the last one
        // ended, drain included: a socket still open must neither be reaped
        // (a false offline) nor miss a Send.
        let sessions_over = CancellationToken::new();
        let background = TaskTracker::new();
        background.spawn(crate::lease::keep_lease(
            shared.clone(),
            sessions_over.clone(),
        ));
        let commands = presence.listen_commands(&instance_id);
        background.spawn(run_commands(
            shared.clone(),
            commands,
            sessions_over.clone(),
        ));
        background.spawn(run_fan_out(
            shared.channels.clone(),
            deliveries,
            shared.settings.outbound_queue,
            shared.metrics.clone(),
            sessions_over.clone(),
        ));
        background.close();
        // A socket greeted before this instance listens on its command
        // channel could be sent a message that finds nobody. Connections
        // meanwhile wait in the listen backlog. Redis being away must not
        // keep the gateway from serving, so the wait is bounded.
        if tokio::time::timeout(COMMANDS_READY_WAIT, presence.commands_ready(&instance_id))
            .await
            .is_err()
        {
            warn!(
                wait = ?COMMANDS_READY_WAIT,
                "not yet subscribed to this instance's command channel (redis unreachable?); \
                 serving anyway, commands arrive once it is"
            );
        }

        listener::accept_until(listener, shutdown, &shared, &tracker, probes_here).await;

        let open_at_shutdown = shared.manager.len();
        info!(open = open_at_shutdown, "draining");
        shared.shutdown.cancel();
        tracker.spawn(drain(shared.clone()));
        tracker.close();
        let completed = tokio::time::timeout(shared.settings.drain_timeout, tracker.wait())
            .await
            .is_ok();
        sessions_over.cancel();
        // A re-sync in flight must land before the sweep, or it could bring
        // back what the sweep removes.
        if tokio::time::timeout(LEASE_STOP_WAIT, background.wait())
            .await
            .is_err()
        {
            warn!(wait = ?LEASE_STOP_WAIT, "the lease task did not stop in time");
        }
        // Whatever a session could not deregister itself goes now.
        if let Err(error) = presence.unregister_instance(&instance_id).await {
            warn!(%instance_id, %error, "could not deregister this instance's connections");
        }
        admin_stop.cancel();
        if let Some(admin) = admin {
            let _ = admin.await;
        }
        Ok(DrainReport {
            open_at_shutdown,
            completed,
        })
    }
}

/// Builds a [`Gateway`] and serves it; see [`Gateway::serve`].
pub async fn run(
    settings: Settings,
    auth: Authenticator,
    presence: Presence,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<DrainReport, std::io::Error> {
    Gateway::new(settings, auth, presence)
        .serve(listener, shutdown)
        .await
}
