//! The probes and the metrics: `GET /healthz` (the process lives), `GET
//! /readyz` (it should get new connections) and `GET /metrics` (Prometheus).
//!
//! They are served on the public listener unless `--admin-listen` gives them
//! a listener of their own, which then answers only them and the public one
//! 404s them: the load balancer and the internet see neither the gateway's
//! internals nor its readiness. The admin listener keeps serving through the
//! drain, so `/readyz` can say `draining` until the last socket is closed.

use std::{convert::Infallible, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, warn};

use crate::{
    routes::{not_found, text},
    shared::Shared,
};

/// The answer to a probe or a scrape; `None` for any other request.
pub(crate) fn respond<B>(request: &Request<B>, shared: &Shared) -> Option<Response<Full<Bytes>>> {
    if request.method() != Method::GET {
        return None;
    }
    match request.uri().path() {
        "/healthz" => Some(text(StatusCode::OK, "ok\n")),
        "/readyz" => Some(ready(shared)),
        "/metrics" => Some(match &shared.settings.metrics {
            Some(handle) => pulse_runtime::metrics::response(handle),
            None => text(StatusCode::NOT_FOUND, "metrics are off\n"),
        }),
        _ => None,
    }
}

/// Serves the probes and metrics on `listener` until `stop`, then lets the
/// requests in flight finish.
pub(crate) async fn serve(listener: TcpListener, shared: Arc<Shared>, stop: CancellationToken) {
    let connections = TaskTracker::new();
    loop {
        let (stream, peer) = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(error) => {
                    warn!(%error, "admin listener accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let (shared, stop) = (shared.clone(), stop.clone());
        connections.spawn(async move {
            let mut builder = http1::Builder::new();
            builder
                .timer(TokioTimer::new())
                .header_read_timeout(shared.settings.handshake_timeout);
            let service = service_fn(move |request: Request<Incoming>| {
                let answer = respond(&request, &shared).unwrap_or_else(not_found);
                async move { Ok::<_, Infallible>(answer) }
            });
            let mut connection =
                std::pin::pin!(builder.serve_connection(TokioIo::new(stream), service));
            let result = tokio::select! {
                result = connection.as_mut() => result,
                () = stop.cancelled() => {
                    connection.as_mut().graceful_shutdown();
                    connection.await
                }
            };
            if let Err(error) = result {
                debug!(%peer, %error, "admin connection ended with an error");
            }
        });
    }
    drop(listener);
    connections.close();
    connections.wait().await;
}

/// 200 when this instance should get new connections, else 503; the body
/// says why, one line per dependency.
fn ready(shared: &Shared) -> Response<Full<Bytes>> {
    let draining = shared.shutdown.is_cancelled();
    let auth = shared.readiness.auth_ok();
    let presence = shared.readiness.presence_ok();
    let status = if !draining && auth {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let word = |ok: bool| if ok { "ok" } else { "unreachable" };
    let body = format!(
        "{}\nauth: {}\npresence: {}\nconnections: {}\n",
        if draining {
            "draining"
        } else if auth {
            "ready"
        } else {
            "not ready"
        },
        word(auth),
        word(presence),
        shared.manager.len(),
    );
    text(status, &body)
}
