//! The HTTP side: accepting TCP, routing, upgrading `/ws`, and the drain.

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use pulse_auth::Authenticator;
use pulse_presence::Presence;
use pulse_protocol::{CloseCode, Command, ErrorCode, command::message_frame};
use rand::seq::SliceRandom;
use tokio::{net::TcpListener, sync::mpsc};
use tokio_util::{sync::CancellationToken, task::TaskTracker};
use tracing::{debug, info, warn};

use crate::{
    ConnectionManager, Mailbox, PushError, Settings, admin, limits, login, proxy,
    readiness::Readiness, session, telemetry,
};

/// How long `serve` waits for its command subscription before accepting.
const COMMANDS_READY_WAIT: Duration = Duration::from_secs(2);
/// How long the end of a drain waits for a lease renewal or re-sync in
/// flight (each Redis command gives up after 3 s) before the final sweep.
const LEASE_STOP_WAIT: Duration = Duration::from_secs(3);

/// What happened during shutdown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DrainReport {
    /// Sockets open when shutdown began.
    pub open_at_shutdown: usize,
    /// Whether every session finished before the drain timeout.
    pub completed: bool,
}

/// A gateway: its shared state, before and while it serves.
pub struct Gateway {
    pub(crate) shared: Arc<session::Shared>,
    admin: Option<TcpListener>,
}

impl Gateway {
    /// A gateway with these settings, validating tokens with `auth` and
    /// keeping presence in `presence`.
    pub fn new(settings: Settings, auth: Authenticator, presence: Presence) -> Self {
        let readiness = Arc::new(Readiness::new(settings.auth_url.as_deref()));
        Self {
            shared: Arc::new(session::Shared {
                readiness,
                settings,
                auth,
                presence,
                manager: Arc::new(ConnectionManager::new()),
                unauthenticated: Arc::default(),
                metrics: crate::telemetry::Metrics::new(),
                shutdown: CancellationToken::new(),
                resync: tokio::sync::RwLock::new(()),
            }),
            admin: None,
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
        let Self { shared, admin } = self;
        // With an admin listener the probes and metrics are served there
        // only, through the drain, and stop once it is over.
        let probes_here = admin.is_none();
        let admin_stop = CancellationToken::new();
        let admin = admin.map(|listener| {
            tokio::spawn(admin::serve(listener, shared.clone(), admin_stop.clone()))
        });
        let presence = shared.presence.clone();
        let instance_id = shared.settings.instance_id.clone();
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
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
            }
        }
        drop(listener);

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

/// On Linux an accepted socket inherits `TCP_NODELAY` from its listener:
/// set once there, it saves a system call on every connection. `false` where
/// each accepted socket must set it itself.
fn nodelay_on_listener(listener: &TcpListener) -> bool {
    cfg!(target_os = "linux")
        && socket2::SockRef::from(listener)
            .set_tcp_nodelay(true)
            .is_ok()
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

async fn serve_connection(
    mut stream: tokio::net::TcpStream,
    peer: SocketAddr,
    shared: Arc<session::Shared>,
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
    let shared_shutdown = shared.shutdown.clone();
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
    let shutdown = shared_shutdown.clone();
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

async fn route(
    mut request: Request<Incoming>,
    peer: SocketAddr,
    shared: Arc<session::Shared>,
    tracker: TaskTracker,
    probes_here: bool,
) -> Response<Full<Bytes>> {
    let echo = shared.settings.echo_path.as_deref() == Some(request.uri().path());
    match (request.method(), request.uri().path()) {
        (&Method::GET, path) if path == "/ws" || echo => {
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
            let peer =
                proxy::client_addr(peer, request.headers(), &shared.settings.trusted_proxies);
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
        // The probes and metrics, unless they have the admin port.
        (&Method::GET, "/healthz" | "/readyz" | "/metrics") if probes_here => {
            admin::respond(&request, &shared)
                .unwrap_or_else(|| text(StatusCode::NOT_FOUND, "not found\n"))
        }
        (&Method::POST, "/auth/login") => match &shared.settings.dev_login {
            Some(dev_login) => {
                login::handle(dev_login, request, shared.settings.handshake_timeout).await
            }
            None => text(StatusCode::NOT_FOUND, "not found\n"),
        },
        _ => text(StatusCode::NOT_FOUND, "not found\n"),
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

/// Closes every live connection with `going_away`, evenly spread over
/// `--drain-spread` after shutdown begins (the k-th of n at k/n of it), in a
/// random order, so that clients reconnect at a steady rate rather than all
/// in the same second. A connection serves normally until its turn: still
/// registered, renewed by the lease, reached by commands. Connections that
/// go live after this list was taken see the shutdown themselves.
async fn drain(shared: Arc<session::Shared>) {
    let mut mailboxes: Vec<Arc<Mailbox>> = shared
        .manager
        .snapshot()
        .into_iter()
        .map(|(_, connection)| connection.mailbox)
        .collect();
    mailboxes.shuffle(&mut rand::rng());
    let count = u32::try_from(mailboxes.len()).unwrap_or(u32::MAX);
    let spread = shared.settings.drain_spread;
    let started = tokio::time::Instant::now();
    for (k, mailbox) in (0_u32..).zip(mailboxes) {
        tokio::time::sleep_until(started + spread * k / count).await;
        mailbox.kick(
            CloseCode::GoingAway,
            ErrorCode::GOING_AWAY,
            "server shutting down",
        );
    }
}

/// Carries out the commands internal services address to this instance,
/// until `sessions_over`: through the drain, for the sockets still open.
async fn run_commands(
    shared: Arc<session::Shared>,
    mut commands: mpsc::Receiver<Command>,
    sessions_over: CancellationToken,
) {
    loop {
        let command = tokio::select! {
            () = sessions_over.cancelled() => return,
            command = commands.recv() => match command {
                Some(command) => command,
                None => return,
            },
        };
        match command {
            Command::Send { user_id, data } => {
                // Encoded once, shared by every connection of the user.
                let frame: Arc<str> = message_frame(&data).into();
                shared.manager.for_each_connection(&user_id, |connection| {
                    match connection.mailbox.push(frame.clone(), shared.settings.outbound_queue) {
                        Ok(()) => {}
                        Err(PushError::Full) => {
                            shared.metrics.queue_overflows.increment(1);
                            if connection.mailbox.kick(
                                CloseCode::TooMany,
                                ErrorCode::SLOW_CONSUMER,
                                "too many messages waiting: the connection does not read fast enough",
                            ) {
                                warn!(%user_id, connection_id = %connection.connection_id, "outbound queue full; closing a slow consumer");
                            }
                        }
                        // The session is ending; at most once means it goes without.
                        Err(PushError::Closing) => {}
                    }
                });
            }
            Command::Disconnect {
                user_id,
                connection_id,
                reason,
            } => {
                shared.manager.for_each_connection(&user_id, |connection| {
                    if connection_id
                        .as_deref()
                        .is_none_or(|id| id == &*connection.connection_id)
                    {
                        info!(%user_id, connection_id = %connection.connection_id, %reason, "disconnect requested");
                        connection.mailbox.kick(
                            CloseCode::Forbidden,
                            ErrorCode::DISCONNECTED,
                            reason.clone(),
                        );
                    }
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_sockets_have_nodelay() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let inherited = nodelay_on_listener(&listener);
        let _client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (stream, _) = listener.accept().await.unwrap();
        if !inherited {
            stream.set_nodelay(true).unwrap();
        }
        assert!(stream.nodelay().unwrap());
    }
}
