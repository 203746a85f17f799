//! The server API over HTTP JSON, for backends that do not speak gRPC:
//! `POST /api/v1/<method_in_snake_case>` with the request as a JSON body,
//! behind the same API keys and the same permission table as gRPC (each
//! route names the gRPC method it mirrors, and the table is asked about
//! that), ending in the same [`Presence`] calls.
//!
//! Served over TLS (with client certificates, when a client CA is set)
//! when the gRPC API is: the same certificate, key and CA.
//!
//! Errors are `{"error":{"code":STR,"message":STR}}` with a fitting status:
//! 400 `invalid_argument`, 401 `missing_api_key`/`invalid_api_key`, 403
//! `permission_denied`, 404 `not_found`, 405 `method_not_allowed`, 413
//! `too_large`, 503 `backend_unavailable`.

use std::{convert::Infallible, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use tokio::{net::TcpListener, sync::watch, time::timeout};
use tracing::{debug, info, warn};

use crate::{
    ApiConfig, Namespaces, Presence, PresenceError,
    access::{Access, Denied, required_for_grpc},
};

/// How long a request's body may take to arrive.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long open requests may take to finish once shutdown begins.
const DRAIN_DEADLINE: Duration = Duration::from_secs(10);

/// Each route, and the gRPC method whose permissions it needs.
const ROUTES: [(&str, &str); 8] = [
    ("/api/v1/publish", "/pulse.channels.v1.Channels/Publish"),
    ("/api/v1/broadcast", "/pulse.channels.v1.Channels/Broadcast"),
    ("/api/v1/history", "/pulse.channels.v1.Channels/History"),
    ("/api/v1/subscribe", "/pulse.channels.v1.Channels/Subscribe"),
    (
        "/api/v1/unsubscribe",
        "/pulse.channels.v1.Channels/Unsubscribe",
    ),
    ("/api/v1/presence", "/pulse.channels.v1.Channels/Presence"),
    (
        "/api/v1/presence_stats",
        "/pulse.channels.v1.Channels/PresenceStats",
    ),
    ("/api/v1/channels", "/pulse.channels.v1.Channels/Channels"),
];

struct Api {
    presence: Presence,
    access: Access,
    namespaces: Arc<Namespaces>,
    max_body_bytes: usize,
    idempotency_window: Duration,
}

/// Serves the HTTP JSON API on `listener` until `shutdown` resolves, then
/// lets open requests finish (at most 10 s).
pub async fn run_http(
    presence: Presence,
    api: ApiConfig,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let tls = api.http_tls.map(tokio_rustls::TlsAcceptor::from);
    let api = Arc::new(Api {
        presence,
        access: api.access,
        namespaces: api.namespaces,
        max_body_bytes: api.limits.max_request_bytes,
        idempotency_window: api.limits.idempotency_window,
    });
    let (stopping, stopped) = watch::channel(false);
    let mut shutdown = std::pin::pin!(shutdown);
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "http api: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let api = api.clone();
        let stopped = stopped.clone();
        let tls = tls.clone();
        connections.spawn(async move {
            let Some(tls) = tls else {
                serve_connection(stream, api, peer, stopped).await;
                return;
            };
            // The handshake under the same deadline as a request's head.
            match timeout(BODY_TIMEOUT, tls.accept(stream)).await {
                Ok(Ok(stream)) => serve_connection(stream, api, peer, stopped).await,
                Ok(Err(error)) => debug!(%error, %peer, "http api: TLS handshake failed"),
                Err(_) => debug!(%peer, "http api: TLS handshake timed out"),
            }
        });
        // Finished connections' results are not kept.
        while connections.try_join_next().is_some() {}
    }
    info!("http api shutting down");
    let _ = stopping.send(true);
    let _ = timeout(DRAIN_DEADLINE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
}

/// Serves one connection's requests until it ends, or until shutdown asks
/// it to finish what it has.
async fn serve_connection<IO>(
    stream: IO,
    api: Arc<Api>,
    peer: SocketAddr,
    mut stopped: watch::Receiver<bool>,
) where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |request| {
        let api = api.clone();
        async move { Ok::<_, Infallible>(api.handle(request, peer).await) }
    });
    let connection = http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(BODY_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                debug!(%error, %peer, "http api connection ended");
            }
        }
        () = async { let _ = stopped.wait_for(|stopping| *stopping).await; } => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

impl Api {
    async fn handle(&self, request: Request<Incoming>, peer: SocketAddr) -> Response<Full<Bytes>> {
        let path = request.uri().path();
        let Some((route, grpc_path)) = ROUTES.iter().find(|(route, _)| *route == path) else {
            return error(StatusCode::NOT_FOUND, "not_found", "no such API method");
        };
        if request.method() != Method::POST {
            return error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "the API takes POST with a JSON body",
            );
        }
        let needed = required_for_grpc(grpc_path).unwrap_or_default();
        let authorization = request
            .headers()
            .get(header::AUTHORIZATION)
            .map(http::HeaderValue::as_bytes);
        if let Err(denied) = self.access.authorize(authorization, needed) {
            let status = match denied {
                Denied::Missing | Denied::Invalid => StatusCode::UNAUTHORIZED,
                Denied::Permission { .. } => StatusCode::FORBIDDEN,
            };
            warn!(%peer, route, reason = denied.reason(), "http api call refused");
            return error(status, denied.reason(), &denied.to_string());
        }
        let body = match timeout(
            BODY_TIMEOUT,
            Limited::new(request.into_body(), self.max_body_bytes).collect(),
        )
        .await
        {
            Ok(Ok(body)) => body.to_bytes(),
            Ok(Err(failed)) if failed.is::<http_body_util::LengthLimitError>() => {
                return error_response_too_large(self.max_body_bytes);
            }
            Ok(Err(failed)) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    "invalid_argument",
                    &format!("body: {failed}"),
                );
            }
            Err(_) => {
                return error(
                    StatusCode::REQUEST_TIMEOUT,
                    "timeout",
                    "the body did not arrive in time",
                );
            }
        };
        let result = match *route {
            "/api/v1/publish" => self.publish(&body).await,
            "/api/v1/broadcast" => self.broadcast(&body).await,
            "/api/v1/history" => self.history(&body).await,
            "/api/v1/subscribe" => self.subscription(&body, true).await,
            "/api/v1/unsubscribe" => self.subscription(&body, false).await,
            "/api/v1/presence" => self.presence(&body, true).await,
            "/api/v1/presence_stats" => self.presence(&body, false).await,
            "/api/v1/channels" => self.channels(&body).await,
            _ => unreachable!("every route is matched above"),
        };
        match result {
            Ok(json) => Response::builder()
                .status(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from(json)))
                .expect("a valid response"),
            Err(failure) => failure.into_response(),
        }
    }

    async fn publish(&self, body: &[u8]) -> Result<String, Failure> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PublishBody {
            channel: String,
            data: Box<RawValue>,
            idempotency_key: Option<String>,
        }
        let request: PublishBody = decode(body)?;
        let options = self.namespaces.publish_options(
            &request.channel,
            request.idempotency_key.as_deref(),
            self.idempotency_window,
        )?;
        let published = self
            .presence
            .publish(&request.channel, &request.data, &options)
            .await?;
        Ok(encode(&PublishAnswer::from(published)))
    }

    async fn broadcast(&self, body: &[u8]) -> Result<String, Failure> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct BroadcastBody {
            channels: Vec<String>,
            data: Box<RawValue>,
            idempotency_key: Option<String>,
        }
        #[derive(Serialize)]
        struct Answer {
            responses: Vec<PublishAnswer>,
        }
        let request: BroadcastBody = decode(body)?;
        let published = crate::channels_service::broadcast(
            &self.presence,
            &self.namespaces,
            &request.channels,
            &request.data,
            request.idempotency_key.as_deref(),
            self.idempotency_window,
        )
        .await?;
        Ok(encode(&Answer {
            responses: published.into_iter().map(PublishAnswer::from).collect(),
        }))
    }

    async fn history(&self, body: &[u8]) -> Result<String, Failure> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct HistoryBody {
            channel: String,
            #[serde(default)]
            after_offset: u64,
            #[serde(default)]
            limit: u32,
        }
        #[derive(Serialize)]
        struct One<'a> {
            offset: u64,
            data: &'a RawValue,
        }
        #[derive(Serialize)]
        struct Answer<'a> {
            publications: Vec<One<'a>>,
            offset: u64,
            epoch: &'a str,
        }
        let request: HistoryBody = decode(body)?;
        let page = crate::channels_service::history(
            &self.presence,
            &self.namespaces,
            &request.channel,
            request.after_offset,
            request.limit,
        )
        .await?;
        Ok(encode(&Answer {
            publications: page
                .publications
                .iter()
                .map(|entry| One {
                    offset: entry.offset,
                    data: &entry.data,
                })
                .collect(),
            offset: page.top.offset,
            epoch: &page.top.epoch,
        }))
    }
}

/// The answer to one publication: `offset` and `epoch` where the namespace
/// keeps history.
#[derive(Serialize)]
struct PublishAnswer {
    instances: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    offset: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    epoch: Option<String>,
}

impl From<crate::Published> for PublishAnswer {
    fn from(published: crate::Published) -> Self {
        Self {
            instances: published.instances,
            offset: published.offset,
            epoch: published.epoch,
        }
    }
}

impl Api {
    async fn subscription(&self, body: &[u8], subscribe: bool) -> Result<String, Failure> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct SubscriptionBody {
            user_id: String,
            channel: String,
        }
        #[derive(Serialize)]
        struct Answer {
            connections: u64,
        }
        let request: SubscriptionBody = decode(body)?;
        let connections = crate::channels_service::set_subscription(
            &self.presence,
            &self.namespaces,
            &request.user_id,
            &request.channel,
            subscribe,
        )
        .await?;
        Ok(encode(&Answer { connections }))
    }
}

impl Api {
    /// `presence` (`list`) or `presence_stats`.
    async fn presence(&self, body: &[u8], list: bool) -> Result<String, Failure> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct PresenceBody {
            channel: String,
        }
        #[derive(Serialize)]
        struct Answer {
            #[serde(skip_serializing_if = "Option::is_none")]
            users: Option<Vec<pulse_protocol::ChannelMember>>,
            #[serde(skip_serializing_if = "Option::is_none")]
            truncated: Option<bool>,
            num_users: u64,
            num_connections: u64,
        }
        let request: PresenceBody = decode(body)?;
        let answer = if list {
            crate::channels_service::channel_presence(
                &self.presence,
                &self.namespaces,
                &request.channel,
            )
            .await?
        } else {
            crate::channels_service::channel_stats(
                &self.presence,
                &self.namespaces,
                &request.channel,
            )
            .await?
        };
        Ok(encode(&Answer {
            truncated: list.then_some(answer.users.is_none()),
            users: if list {
                Some(answer.users.unwrap_or_default())
            } else {
                None
            },
            num_users: answer.num_users,
            num_connections: answer.num_connections,
        }))
    }

    async fn channels(&self, body: &[u8]) -> Result<String, Failure> {
        #[derive(Deserialize, Default)]
        #[serde(deny_unknown_fields, default)]
        struct ChannelsBody {
            prefix: String,
            limit: Option<usize>,
        }
        #[derive(Serialize)]
        struct One {
            channel: String,
            subscribers: u64,
        }
        #[derive(Serialize)]
        struct Answer {
            channels: Vec<One>,
            truncated: bool,
        }
        let request: ChannelsBody = if body.is_empty() {
            ChannelsBody::default()
        } else {
            decode(body)?
        };
        let limit = request
            .limit
            .unwrap_or(crate::channels_service::DEFAULT_CHANNELS_LIMIT);
        let (channels, truncated) = self
            .presence
            .active_channels(&request.prefix, limit)
            .await?;
        Ok(encode(&Answer {
            channels: channels
                .into_iter()
                .map(|(channel, subscribers)| One {
                    channel,
                    subscribers,
                })
                .collect(),
            truncated,
        }))
    }
}

/// Why a call failed after it was admitted.
enum Failure {
    Presence(PresenceError),
    Body(String),
}

impl From<PresenceError> for Failure {
    fn from(error: PresenceError) -> Self {
        Self::Presence(error)
    }
}

impl Failure {
    fn into_response(self) -> Response<Full<Bytes>> {
        match self {
            Self::Body(message) => error(StatusCode::BAD_REQUEST, "invalid_argument", &message),
            Self::Presence(PresenceError::InvalidArgument(message)) => {
                error(StatusCode::BAD_REQUEST, "invalid_argument", &message)
            }
            Self::Presence(PresenceError::Unavailable(message)) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                "backend_unavailable",
                &message,
            ),
        }
    }
}

fn decode<'a, T: Deserialize<'a>>(body: &'a [u8]) -> Result<T, Failure> {
    serde_json::from_slice(body).map_err(|error| Failure::Body(format!("body: {error}")))
}

fn encode(value: &impl Serialize) -> String {
    serde_json::to_string(value).expect("answers always serialise")
}

fn error_response_too_large(limit: usize) -> Response<Full<Bytes>> {
    error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        &format!("the body is over {limit} bytes"),
    )
}

/// `{"error":{"code":..,"message":..}}` with `status`.
fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({"error": {"code": code, "message": message}});
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body.to_string())))
        .expect("a valid response")
}
