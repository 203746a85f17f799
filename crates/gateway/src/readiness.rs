//! `/healthz` and `/readyz`: whether the process lives, and whether it should
//! get new connections.
//!
//! Readiness is checked in the background (every [`CHECK_INTERVAL`]) so that a
//! probe never waits on a dependency. The gateway is ready when it is not
//! draining and can authenticate (in-process keys, or a `pulse-auth` that
//! answers its health check). Redis is reported but does not make the gateway
//! unready: a gateway keeps serving and accepting through a Redis outage, and
//! taking every replica out of the load balancer at once would turn a presence
//! outage into a full one.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use pulse_presence::Presence;
use tokio_util::sync::CancellationToken;
use tonic::transport::{Channel, Endpoint};
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tracing::{info, warn};

/// How often dependencies are checked.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);
/// How long one check may take.
const CHECK_TIMEOUT: Duration = Duration::from_secs(1);

/// The latest dependency checks.
#[derive(Debug)]
pub struct Readiness {
    auth_ok: AtomicBool,
    presence_ok: AtomicBool,
    auth: Option<HealthClient<Channel>>,
}

impl Readiness {
    /// Readiness for a gateway that authenticates through `auth_url`
    /// (`None`: in-process, always able to authenticate).
    pub fn new(auth_url: Option<&str>) -> Self {
        let auth = auth_url
            .and_then(|url| Endpoint::from_shared(url.to_owned()).ok())
            .map(|endpoint| {
                HealthClient::new(
                    endpoint
                        .connect_timeout(CHECK_TIMEOUT)
                        .timeout(CHECK_TIMEOUT)
                        .connect_lazy(),
                )
            });
        Self {
            auth_ok: AtomicBool::new(auth.is_none()),
            presence_ok: AtomicBool::new(true),
            auth,
        }
    }

    /// Whether tokens can be validated, as of the last check.
    pub fn auth_ok(&self) -> bool {
        self.auth_ok.load(Ordering::Relaxed)
    }

    /// Whether presence answers, as of the last check.
    pub fn presence_ok(&self) -> bool {
        self.presence_ok.load(Ordering::Relaxed)
    }

    /// Checks now and then every [`CHECK_INTERVAL`] until `stop`.
    pub(crate) async fn run(self: Arc<Self>, presence: Presence, stop: CancellationToken) {
        let mut ticks = tokio::time::interval(CHECK_INTERVAL);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let presence_ok = tokio::time::timeout(CHECK_TIMEOUT, presence.ping())
                .await
                .is_ok_and(|result| result.is_ok());
            if presence_ok != self.presence_ok.swap(presence_ok, Ordering::Relaxed) {
                if presence_ok {
                    info!("presence backend answers again");
                } else {
                    warn!(
                        "presence backend does not answer; sockets stay open, presence is degraded"
                    );
                }
            }
            if let Some(client) = &self.auth {
                let answer = client
                    .clone()
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                let auth_ok = answer
                    .is_ok_and(|response| response.into_inner().status() == ServingStatus::Serving);
                if auth_ok != self.auth_ok.swap(auth_ok, Ordering::Relaxed) {
                    if auth_ok {
                        info!("pulse-auth answers again; ready");
                    } else {
                        warn!("pulse-auth does not answer; not ready");
                    }
                }
            }
        }
    }
}
