//! `pulse.presence.v1.Presence` over gRPC, with the standard health and
//! reflection services, behind the API-key layer ([`crate::access`]), with
//! optional TLS and the limits of [`ApiLimits`].

use std::{future::Future, time::Duration};

use pulse_protocol::proto::{
    FILE_DESCRIPTOR_SET,
    presence::v1::presence_server::{self, PresenceServer},
};
use pulse_runtime::health::HealthWatch;
use tokio::{net::TcpListener, sync::watch, time::sleep};
use tonic::transport::{Server, ServerTlsConfig, server::TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use pulse_protocol::proto::channels::v1::channels_server::ChannelsServer;

mod calls;
mod snapshot;
mod status;
mod watcher;

use calls::PresenceService;
pub(crate) use status::{invalid_argument, to_status};

use crate::{
    Presence, access::Access, channels_service::ChannelsService, grpc_access::AccessLayer,
    watch_slots::WatchSlots,
};

/// The `ErrorInfo` domain of every status this service returns.
pub const ERROR_DOMAIN: &str = "pulse.presence";
/// The most user ids one `GetUsers` or `Watch` request may name.
pub const MAX_IDS: usize = 1000;

/// How often the health service asks the backend whether it answers.
const HEALTH_INTERVAL: Duration = Duration::from_secs(1);
/// The longest a unary call may take; store calls give up well before this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// How often idle HTTP/2 connections are pinged, so a `Watch` whose client
/// vanished without closing is noticed and dropped.
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// How long open calls may take to finish once shutdown begins.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// How the internal API is served: who may call it, over TLS or not, and
/// its limits. Tests build it directly.
#[derive(Debug, Clone)]
pub struct ApiConfig {
    /// The keys callers must present, or [`Access::Open`].
    pub access: Access,
    /// TLS (and client certificates, when it names a client CA); `None`
    /// serves plaintext HTTP/2.
    pub tls: Option<ServerTlsConfig>,
    /// The same for the HTTP API (rustls under hyper); `None` serves
    /// plaintext HTTP/1.1.
    pub http_tls: Option<std::sync::Arc<rustls::ServerConfig>>,
    /// Limits on what one caller may hold or send.
    pub limits: ApiLimits,
    /// The channel namespaces the API may publish to.
    pub namespaces: std::sync::Arc<crate::Namespaces>,
}

impl ApiConfig {
    /// Calls need one of `keys`; plaintext; default limits. For tests: the
    /// binary builds its configuration from flags (`config.rs`).
    #[cfg(any(test, feature = "testing"))]
    pub fn with_keys(keys: Vec<crate::access::ApiKey>) -> Self {
        Self {
            access: Access::Keys(keys.into()),
            tls: None,
            http_tls: None,
            limits: ApiLimits::default(),
            namespaces: std::sync::Arc::default(),
        }
    }

    /// Anyone may call (`--insecure-open-api`); plaintext; default limits.
    pub fn open() -> Self {
        Self {
            access: Access::Open,
            tls: None,
            http_tls: None,
            limits: ApiLimits::default(),
            namespaces: std::sync::Arc::default(),
        }
    }
}

/// Limits of the gRPC server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiLimits {
    /// HTTP/2 streams (calls) one connection may have open at once.
    pub max_concurrent_streams: u32,
    /// `Watch` streams open at once per API key (per client IP when the API
    /// is open).
    pub max_watches_per_key: usize,
    /// The largest request message, in bytes.
    pub max_request_bytes: usize,
    /// How long a `Publish` or `Broadcast` idempotency key is remembered.
    pub idempotency_window: std::time::Duration,
}

impl Default for ApiLimits {
    fn default() -> Self {
        Self {
            max_concurrent_streams: 128,
            max_watches_per_key: 32,
            max_request_bytes: 4 << 20,
            idempotency_window: std::time::Duration::from_secs(300),
        }
    }
}

/// Serves `pulse.presence.v1.Presence`, `grpc.health.v1.Health` and server
/// reflection on `listener` until `shutdown` completes, then drains.
///
/// Every call but health's must carry an API key that allows it (see
/// [`crate::access::required_for_grpc`]); refused calls get
/// `UNAUTHENTICATED` or `PERMISSION_DENIED` and never reach the service.
///
/// Health reports `SERVING` (for `""` and for the presence service) while the
/// backend answers [`Presence::ping`], checked every second, and
/// `NOT_SERVING` otherwise and once shutdown begins. On shutdown, open `Watch`
/// streams end with `UNAVAILABLE` (reason `shutting_down`) so that clients
/// move to another instance, and calls still open after a 10 s drain are cut.
pub async fn run(
    presence: Presence,
    api: ApiConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), tonic::transport::Error> {
    let (stopping_tx, stopping) = watch::channel(false);
    let (health, health_service) = tonic_health::server::health_reporter();
    set_health(&health, ServingStatus::NotServing).await;

    let reflection_v1 = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1()
        .inspect_err(|error| warn!(%error, "serving without reflection v1"))
        .ok();
    let reflection_v1alpha = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
        .build_v1alpha()
        .inspect_err(|error| warn!(%error, "serving without reflection v1alpha"))
        .ok();

    let service = PresenceService {
        presence: presence.clone(),
        stopping: stopping.clone(),
        watch_slots: WatchSlots::new(api.limits.max_watches_per_key),
    };
    let signal = {
        let health = health.clone();
        async move {
            shutdown.await;
            info!("presence service shutting down");
            set_health(&health, ServingStatus::NotServing).await;
            // Ends every open Watch, which graceful shutdown would otherwise wait on forever.
            let _ = stopping_tx.send(true);
        }
    };
    let mut builder = Server::builder();
    if let Some(tls) = api.tls {
        builder = builder.tls_config(tls)?;
    }
    let server = builder
        .timeout(REQUEST_TIMEOUT)
        .http2_keepalive_interval(Some(KEEPALIVE_INTERVAL))
        .max_concurrent_streams(api.limits.max_concurrent_streams)
        .layer(AccessLayer::new(api.access))
        .add_service(health_service)
        .add_optional_service(reflection_v1)
        .add_optional_service(reflection_v1alpha)
        .add_service(
            PresenceServer::new(service).max_decoding_message_size(api.limits.max_request_bytes),
        )
        .add_service(
            ChannelsServer::new(ChannelsService {
                presence: presence.clone(),
                namespaces: api.namespaces.clone(),
                idempotency_window: api.limits.idempotency_window,
            })
            .max_decoding_message_size(api.limits.max_request_bytes),
        )
        .serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), signal);

    let drain_deadline = {
        let mut stopping = stopping.clone();
        async move {
            let _ = stopping.wait_for(|stopping| *stopping).await;
            sleep(DRAIN_DEADLINE).await;
        }
    };
    tokio::select! {
        result = server => result,
        () = drain_deadline => {
            warn!(deadline = ?DRAIN_DEADLINE, "drain deadline passed; closing the remaining calls");
            Ok(())
        }
        () = watch_health(presence, health, stopping) => Ok(()),
    }
}

/// The names health reports for: the server as a whole and the presence service.
const HEALTH_SERVICES: &[&str] = &["", presence_server::SERVICE_NAME];

/// Sets the health of the server as a whole and of the presence service.
async fn set_health(health: &HealthReporter, status: ServingStatus) {
    for service in HEALTH_SERVICES {
        health.set_service_status(*service, status).await;
    }
}

/// Mirrors whether the backend answers [`Presence::ping`] into the health
/// service until shutdown begins (policy: [`pulse_runtime::health`]), then
/// waits for the server to finish (it never ends the `select!` in [`run`]
/// itself).
async fn watch_health(presence: Presence, health: HealthReporter, stopping: watch::Receiver<bool>) {
    let watch = HealthWatch {
        reporter: health,
        services: HEALTH_SERVICES,
        subject: "presence backend",
        interval: HEALTH_INTERVAL,
    };
    // `run` reported NOT_SERVING before serving.
    watch
        .run(
            false,
            || {
                let presence = presence.clone();
                async move { presence.ping().await }
            },
            stopping,
        )
        .await;
    std::future::pending::<()>().await;
}
