//! `pulse.presence.v1.Presence` over gRPC, with the standard health and
//! reflection services, behind the API-key layer ([`crate::access`]), with
//! optional TLS and the limits of [`ApiLimits`].

use std::{future::Future, pin::Pin, time::Duration};

use futures_util::Stream;
use pulse_protocol::{
    event::timestamp_from_ms,
    proto::{
        FILE_DESCRIPTOR_SET,
        presence::v1::{
            self as pb,
            presence_server::{self, PresenceServer},
        },
    },
    status::status_with_reason,
};
use pulse_runtime::health::HealthWatch;
use serde_json::value::RawValue;
use tokio::{net::TcpListener, sync::watch, time::sleep};
use tonic::{
    Code, Request, Response, Status,
    transport::{Server, ServerTlsConfig, server::TcpIncoming},
};
use tonic_health::{ServingStatus, server::HealthReporter};
use tracing::{info, warn};

use pulse_protocol::proto::channels::v1::channels_server::ChannelsServer;

mod snapshot;
mod watcher;

use watcher::Watcher;

use crate::{
    ConnectionRecord, Presence, PresenceError,
    access::{Access, Caller},
    channels_service::ChannelsService,
    grpc_access::AccessLayer,
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

struct PresenceService {
    presence: Presence,
    stopping: watch::Receiver<bool>,
    watch_slots: WatchSlots,
}

/// The stream `Watch` returns.
type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::PresenceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl presence_server::Presence for PresenceService {
    async fn get_user(
        &self,
        request: Request<pb::GetUserRequest>,
    ) -> Result<Response<pb::UserPresence>, Status> {
        let user_id = request.into_inner().user_id;
        let connections = self.presence.user(&user_id).await.map_err(to_status)?;
        let mut presence = user_presence(user_id, connections);
        if !presence.online {
            presence.last_seen = self
                .presence
                .last_seen(&presence.user_id)
                .await
                .map_err(to_status)?
                .map(timestamp_from_ms);
        }
        Ok(Response::new(presence))
    }

    async fn get_users(
        &self,
        request: Request<pb::GetUsersRequest>,
    ) -> Result<Response<pb::GetUsersResponse>, Status> {
        let user_ids = request.into_inner().user_ids;
        check_id_count(user_ids.len())?;
        let users = self.presence.users(&user_ids).await.map_err(to_status)?;
        Ok(Response::new(pb::GetUsersResponse {
            users: user_ids
                .into_iter()
                .zip(users)
                .map(|(user_id, connections)| user_presence(user_id, connections))
                .collect(),
        }))
    }

    async fn count_online(
        &self,
        _request: Request<pb::CountOnlineRequest>,
    ) -> Result<Response<pb::CountOnlineResponse>, Status> {
        let count = self.presence.count_online().await.map_err(to_status)?;
        Ok(Response::new(pb::CountOnlineResponse {
            users: count.users,
            connections: count.connections,
        }))
    }

    async fn send(
        &self,
        request: Request<pb::SendRequest>,
    ) -> Result<Response<pb::SendResponse>, Status> {
        let request = request.into_inner();
        if request.user_id.is_empty() {
            return Err(invalid_argument("user_id must not be empty"));
        }
        // RawValue checks that the text is one JSON value and keeps it as sent.
        let data = RawValue::from_string(request.data_json)
            .map_err(|error| invalid_argument(&format!("data_json is not JSON: {error}")))?;
        let connections = self
            .presence
            .send(&request.user_id, data)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::SendResponse { connections }))
    }

    async fn disconnect(
        &self,
        request: Request<pb::DisconnectRequest>,
    ) -> Result<Response<pb::DisconnectResponse>, Status> {
        let request = request.into_inner();
        if request.user_id.is_empty() {
            return Err(invalid_argument("user_id must not be empty"));
        }
        let connection_id = Some(request.connection_id.as_str()).filter(|id| !id.is_empty());
        let reason = if request.reason.is_empty() {
            "disconnected by the server"
        } else {
            request.reason.as_str()
        };
        // The block first, so that a client that reconnects the moment it
        // is kicked is already refused.
        if let Some(block_for) = block_duration(request.block_for)? {
            self.presence
                .block(&request.user_id, block_for, reason)
                .await
                .map_err(to_status)?;
        }
        let connections = self
            .presence
            .disconnect(&request.user_id, connection_id, reason)
            .await
            .map_err(to_status)?;
        Ok(Response::new(pb::DisconnectResponse { connections }))
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        request: Request<pb::WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        // Watches are counted per key, or per client address when the API is open.
        let holder = match request.extensions().get::<Caller>() {
            Some(Caller {
                key_name: Some(name),
            }) => format!("key {name:?}"),
            _ => request
                .remote_addr()
                .map_or_else(|| "unknown".to_owned(), |addr| addr.ip().to_string()),
        };
        let slot = self.watch_slots.acquire(holder).ok_or_else(|| {
            status_with_reason(
                Code::ResourceExhausted,
                ERROR_DOMAIN,
                "too_many_watches",
                &format!(
                    "at most {} Watch streams at once per API key; close one first",
                    self.watch_slots.max()
                ),
            )
        })?;
        let request = request.into_inner();
        let filter: Option<std::collections::HashSet<String>> =
            match (request.all, request.user_ids.is_empty()) {
                (true, true) => None,
                (false, false) => {
                    check_id_count(request.user_ids.len())?;
                    if request.user_ids.iter().any(String::is_empty) {
                        return Err(invalid_argument("user_ids must not contain an empty id"));
                    }
                    for user_id in &request.user_ids {
                        crate::check_user_id(user_id).map_err(to_status)?;
                    }
                    Some(request.user_ids.into_iter().collect())
                }
                (false, true) => return Err(invalid_argument("name some user_ids, or set all")),
                (true, false) => {
                    return Err(invalid_argument("set either user_ids or all, not both"));
                }
            };
        let buckets = match &filter {
            None => self.presence.log_buckets(),
            Some(users) => users
                .iter()
                .map(|user| self.presence.log_of(user))
                .collect(),
        };
        let since = match request.since.as_str() {
            "" => None,
            text => Some(
                text.parse()
                    .map_err(|error| bad_position(&format!("since: {error}")))?,
            ),
        };
        let tail =
            self.presence
                .tail_events(buckets, since)
                .await
                .map_err(|error| match error {
                    PresenceError::InvalidArgument(message) => bad_position(&message),
                    error => to_status(error),
                })?;
        let watcher = Watcher {
            tail,
            stopping: self.stopping.clone(),
            filter,
            _slot: slot,
        };
        Ok(Response::new(watcher.into_stream()))
    }

    type SnapshotStream = snapshot::SnapshotStream;

    async fn snapshot(
        &self,
        _request: Request<pb::SnapshotRequest>,
    ) -> Result<Response<Self::SnapshotStream>, Status> {
        Ok(Response::new(snapshot::snapshot(self.presence.clone())))
    }
}

fn bad_position(message: &str) -> Status {
    status_with_reason(Code::InvalidArgument, ERROR_DOMAIN, "bad_position", message)
}

fn user_presence(user_id: String, connections: Vec<ConnectionRecord>) -> pb::UserPresence {
    pb::UserPresence {
        user_id,
        online: !connections.is_empty(),
        connections: connections
            .into_iter()
            .map(|record| pb::Connection {
                connection_id: record.connection_id,
                instance_id: record.instance_id,
                connected_at: Some(timestamp_from_ms(record.connected_at_ms)),
            })
            .collect(),
        last_seen: None,
    }
}

/// `block_for` as a duration: `None` when unset or zero; negative or
/// malformed is `INVALID_ARGUMENT` (the upper bound is [`Presence::block`]'s).
fn block_duration(block_for: Option<prost_types::Duration>) -> Result<Option<Duration>, Status> {
    let Some(block_for) = block_for else {
        return Ok(None);
    };
    let invalid = || {
        invalid_argument(&format!(
            "block_for must be a non-negative duration, got {}s {}ns",
            block_for.seconds, block_for.nanos
        ))
    };
    let seconds = u64::try_from(block_for.seconds).map_err(|_| invalid())?;
    let nanos = u32::try_from(block_for.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .ok_or_else(invalid)?;
    let duration = Duration::new(seconds, nanos);
    Ok((!duration.is_zero()).then_some(duration))
}

fn check_id_count(count: usize) -> Result<(), Status> {
    if count > MAX_IDS {
        return Err(invalid_argument(&format!(
            "at most {MAX_IDS} user_ids per request, got {count}"
        )));
    }
    Ok(())
}

pub(crate) fn invalid_argument(message: &str) -> Status {
    status_with_reason(
        Code::InvalidArgument,
        ERROR_DOMAIN,
        "invalid_argument",
        message,
    )
}

/// The one place a store error becomes a gRPC status.
pub(crate) fn to_status(error: PresenceError) -> Status {
    match error {
        PresenceError::InvalidArgument(message) => invalid_argument(&message),
        PresenceError::Unavailable(message) => status_with_reason(
            Code::Unavailable,
            ERROR_DOMAIN,
            "backend_unavailable",
            &message,
        ),
    }
}
