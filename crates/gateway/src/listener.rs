//! Accepting: the accept loop (with `TCP_NODELAY`), one HTTP/1 connection
//! served per accepted socket (after a PROXY header where one is due), and
//! the WebSocket upgrade that hands the bare `TcpStream` to a session.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::task::TaskTracker;
use tracing::{debug, warn};

use crate::{
    limits, proxy,
    routes::{route, text},
    session,
    shared::Shared,
    telemetry,
};

/// How long the accept loop backs off after a failed accept.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Accepts sockets until `shutdown` completes, each served on `tracker`;
/// `probes_here` when the probes are served on this listener.
pub(crate) async fn accept_until(
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
    shared: &Arc<Shared>,
    tracker: &TaskTracker,
    probes_here: bool,
) {
    let nodelay_inherited = nodelay_on_listener(&listener);
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if !nodelay_inherited {
                        let _ = stream.set_nodelay(true);
                    }
                    tracker.spawn(serve_connection(stream, peer, shared.clone(), tracker.clone(), probes_here));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    warn!(%error, "accept failed");
                    tokio::time::sleep(ACCEPT_BACKOFF).await;
                }
            },
        }
    }
}

/// On Linux an accepted socket inherits `TCP_NODELAY` from its listener:
/// set once there, it saves a system call on every connection. `false` where
/// each accepted socket must set it itself.
fn nodelay_on_listener(listener: &TcpListener) -> bool {
    cfg!(target_os = "linux")
        && socket2::SockRef::from(listener)
            .set_tcp_nodelay(true)
            .is_ok()
}

/// Serves one accepted socket's HTTP/1 requests, upgrades included, until
/// it closes; once shutdown begins, finishes the request in flight and closes.
async fn serve_connection(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    probes_here: bool,
) {
    // Behind a load balancer that speaks the PROXY protocol its header
    // comes first, before any HTTP, and names the client.
    let Some(peer) =
        crate::proxy_protocol::accept(&mut stream, peer, &shared.settings, &shared.shutdown).await
    else {
        return;
    };
    let shutdown = shared.shutdown.clone();
    let handshake_timeout = shared.settings.handshake_timeout;
    let service = service_fn(move |request| {
        let shared = shared.clone();
        let tracker = tracker.clone();
        async move { Ok::<_, Infallible>(route(request, peer, shared, tracker, probes_here).await) }
    });
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(handshake_timeout);
    let mut connection = std::pin::pin!(
        builder
            .serve_connection(TokioIo::new(stream), service)
            .with_upgrades()
    );
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = shutdown.cancelled() => {
            // Finish the request in flight, if any, then close.
            connection.as_mut().graceful_shutdown();
            connection.await
        }
    };
    if let Err(error) = result {
        debug!(%peer, %error, "http connection ended with an error");
    }
}

/// Answers a `GET /ws` (or the echo path): refused while shutting down, for
/// a disallowed origin, a request that is no upgrade, or too many
/// unauthenticated sockets from the client; otherwise the 101, and the
/// session on `tracker` once the upgrade completes.
pub(crate) fn upgrade(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<Shared>,
    tracker: TaskTracker,
    echo: bool,
) -> Response<Full<Bytes>> {
    if shared.shutdown.is_cancelled() {
        return text(StatusCode::SERVICE_UNAVAILABLE, "server shutting down\n");
    }
    if !limits::origin_allowed(request.headers(), &shared.settings.allowed_origins) {
        telemetry::limit_rejection("origin");
        return text(StatusCode::FORBIDDEN, "origin not allowed\n");
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        let mut response = text(
            StatusCode::UPGRADE_REQUIRED,
            "this endpoint takes WebSocket upgrades only\n",
        );
        response
            .headers_mut()
            .insert(header::UPGRADE, "websocket".parse().expect("static header"));
        return response;
    }
    // Behind trusted proxies the client is who they say it is.
    let peer = proxy::client_addr(peer, request.headers(), &shared.settings.trusted_proxies);
    let Some(unauthenticated) = shared
        .unauthenticated
        .admit(peer.ip(), shared.settings.max_unauthenticated_per_ip)
    else {
        telemetry::limit_rejection("unauthenticated_per_ip");
        return text(
            StatusCode::TOO_MANY_REQUESTS,
            "too many unauthenticated sockets from this address\n",
        );
    };
    let query_token = request.uri().query().and_then(|query| {
        form_urlencoded::parse(query.as_bytes())
            .find(|(key, _)| key == "token")
            .map(|(_, value)| value.into_owned())
    });
    match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok((response, upgrade)) => {
            let sessions = tracker.clone();
            tracker.spawn(async move {
                let stream = match upgrade.await.map_err(|error| error.to_string()) {
                    Ok(ws) => crate::socket::take_tcp(ws).map_err(str::to_owned),
                    Err(error) => Err(error),
                };
                match stream {
                    Ok(stream) if echo => session::echo(stream, shared).await,
                    // A task of its own, so that the session's task is
                    // sized for the session alone, not for the upgrade.
                    Ok(stream) => {
                        sessions.spawn(session::run(
                            stream,
                            query_token,
                            peer,
                            unauthenticated,
                            shared,
                        ));
                    }
                    Err(error) => debug!(%peer, %error, "upgrade did not complete"),
                }
            });
            response.map(|_| Full::new(Bytes::new()))
        }
        // RFC 6455 4.4: name the version this server speaks.
        Err(fastwebsockets::WebSocketError::InvalidSecWebsocketVersion) => {
            let mut response = text(
                StatusCode::UPGRADE_REQUIRED,
                "unsupported Sec-WebSocket-Version; this server speaks 13\n",
            );
            response.headers_mut().insert(
                "Sec-WebSocket-Version",
                http::HeaderValue::from_static("13"),
            );
            response
        }
        Err(error) => text(
            StatusCode::BAD_REQUEST,
            &format!("bad websocket handshake: {error}\n"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inherited = nodelay_on_listener(&listener);
        let _client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        if !inherited {
            stream.set_nodelay(true).unwrap();
        }
        assert!(stream.nodelay().unwrap());
    }
}
