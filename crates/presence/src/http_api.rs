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
use tokio::{net::TcpListener, sync::watch, time::timeout};
use tracing::{debug, info, warn};

use crate::{
    ApiConfig, Namespaces, Presence,
    access::{Access, Denied, required_for_grpc},
};

mod json;
mod methods;

use json::{error, error_response_too_large};

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
}
