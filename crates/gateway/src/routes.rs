//! Which request goes where: `/ws` (and the echo path) to the upgrade, the
//! probes and metrics unless the admin port has them, `/auth/login`, and
//! 404 for the rest.

use std::{net::SocketAddr, sync::Arc};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use tokio_util::task::TaskTracker;

use crate::{admin, listener, login, shared::Shared};

/// Answers one HTTP request from `peer`; an upgrade's session is spawned on
/// `tracker`.
pub(crate) async fn route(
    request: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    probes_here: bool,
) -> Response<Full<Bytes>> {
    let echo = shared.settings.echo_path.as_deref() == Some(request.uri().path());
    match (request.method(), request.uri().path()) {
        (&Method::GET, path) if path == "/ws" || echo => {
            listener::upgrade(request, peer, shared, tracker, echo)
        }
        // The probes and metrics, unless they have the admin port.
        (&Method::GET, "/healthz" | "/readyz" | "/metrics") if probes_here => {
            admin::respond(&request, &shared).unwrap_or_else(not_found)
        }
        (&Method::POST, "/auth/login") => match &shared.settings.dev_login {
            Some(dev_login) => {
                login::handle(dev_login, request, shared.settings.handshake_timeout).await
            }
            None => not_found(),
        },
        _ => not_found(),
    }
}

/// A plain-text response.
pub(crate) fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "text/plain; charset=utf-8".parse().expect("static header"),
    );
    response
}

/// The answer to a path this gateway does not serve.
pub(crate) fn not_found() -> Response<Full<Bytes>> {
    text(StatusCode::NOT_FOUND, "not found\n")
}
