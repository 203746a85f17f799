//! One WebSocket, from upgrade to close: the per-connection state machine
//! (awaiting auth, live, closing).
//!
//! The read side of fastwebsockets is not cancel-safe (a frame header can be
//! half consumed when the future is dropped), so the session never drops a
//! pending read to do something else: it keeps one read future pinned while it
//! writes, pings and watches its deadlines, and only drops it when the
//! connection is over.

use std::{
    net::SocketAddr,
    pin::pin,
    sync::Arc,
    sync::OnceLock,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use pulse_auth::{AuthError, Authenticator, Identity};
use pulse_presence::{ConnectionRecord, Presence};
use pulse_protocol::{ClientMessage, CloseCode, ErrorCode, ServerMessage, event::now_ms};
use tokio::net::TcpStream;
use tokio::{
    sync::{Notify, mpsc},
    time::{Instant, MissedTickBehavior, sleep_until},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info};

use crate::{
    ConnectionManager, LocalConnection, Settings,
    frame::OpCode,
    limits::{RateLimit, UnauthenticatedGuard},
    socket::{End, Incoming, Message, Socket, write_or_kick},
    telemetry,
};

/// A request to close a live connection from outside its session (an
/// internal service's Disconnect, or a full outbound queue). The first
/// request wins; the session notices it even while a write is blocked.
#[derive(Debug, Default)]
pub struct Kick {
    reason: OnceLock<(CloseCode, ErrorCode, String)>,
    notify: Notify,
}

impl Kick {
    /// Asks the session to send an `error` with `code` and `message`, then close with `close`.
    pub fn kick(&self, close: CloseCode, code: ErrorCode, message: impl Into<String>) {
        if self.reason.set((close, code, message.into())).is_ok() {
            // notify_one keeps a permit when the session is not waiting yet.
            self.notify.notify_one();
        }
    }

    /// Whether a kick was requested.
    pub fn is_kicked(&self) -> bool {
        self.reason.get().is_some()
    }

    pub(crate) async fn requested(&self) -> End {
        self.notify.notified().await;
        let (close, code, message) = self.reason.get().expect("set before notifying");
        End::fail(*close, code.clone(), message)
    }
}

/// What every session shares.
pub(crate) struct Shared {
    pub(crate) settings: Settings,
    pub(crate) auth: Authenticator,
    pub(crate) presence: Presence,
    pub(crate) manager: Arc<ConnectionManager>,
    pub(crate) shutdown: CancellationToken,
    pub(crate) readiness: Arc<crate::readiness::Readiness>,
    pub(crate) unauthenticated: Arc<crate::limits::Unauthenticated>,
    pub(crate) metrics: crate::telemetry::Metrics,
}

/// Serves one upgraded socket until it ends, and cleans up after it.
pub(crate) async fn run(
    stream: TcpStream,
    query_token: Option<String>,
    peer: SocketAddr,
    unauthenticated: UnauthenticatedGuard,
    shared: Arc<Shared>,
) {
    let mut socket = Socket::new(stream, &shared.settings);

    let mut identity = match authenticate(&mut socket, query_token, &shared).await {
        Ok(identity) => identity,
        Err(end) => {
            debug!(%peer, reason = end.reason(), "unauthenticated socket closed");
            telemetry::disconnect("auth", end.reason(), end.close_code());
            socket.finish(end).await;
            return;
        }
    };
    drop(unauthenticated);
    // A live connection needs the user and the expiry, not every claim.
    identity.claims = serde_json::Map::new();

    let connection_id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
    let user_id = identity.user_id.clone();
    let record = ConnectionRecord {
        connection_id: connection_id.to_string(),
        user_id: user_id.clone(),
        instance_id: shared.settings.instance_id.clone(),
        connected_at_ms: now_ms(),
    };
    let (outbound, inbox) = mpsc::channel(shared.settings.outbound_queue);
    let kick = Arc::new(Kick::default());
    socket.kick = Some(kick.clone());
    let local = LocalConnection {
        connection_id: connection_id.clone(),
        connected_at_ms: record.connected_at_ms,
        outbound,
        kick: kick.clone(),
    };
    let limit = shared.settings.max_connections_per_user;
    if let Err(held) = shared.manager.try_add(&user_id, local, limit) {
        debug!(%user_id, held, "connection refused: too many for the user");
        telemetry::limit_rejection("connections_per_user");
        let end = End::fail(
            CloseCode::TooMany,
            ErrorCode::TOO_MANY_CONNECTIONS,
            &format!("this user already holds {held} connections; at most {limit} are allowed"),
        );
        socket.finish(end).await;
        return;
    }
    // A presence failure must not cost the client its socket: the connection is
    // live locally either way, and the failure is logged.
    // While Redis is away the lease task reports the outage once and
    // re-registers everything when it returns; one line per socket would drown it.
    // The presence and auth calls are boxed: their futures are large, and
    // inline they would size every session's state machine for its whole life.
    if let Err(error) = Box::pin(shared.presence.register(&record)).await {
        debug!(%user_id, %connection_id, %error, "presence registration failed");
    }
    info!(%user_id, %connection_id, %peer, "connected");
    shared.metrics.connects.increment(1);
    shared.metrics.connections.increment(1.0);

    let end = live(&mut socket, identity, &connection_id, inbox, &shared).await;
    info!(%user_id, %connection_id, reason = end.reason(), "disconnected");
    shared.metrics.connections.decrement(1.0);
    telemetry::disconnect("live", end.reason(), end.close_code());
    // The connection is over once the server decides so: presence drops it
    // before the closing handshake, which may wait on a slow client.
    shared.manager.remove(&user_id, &connection_id);
    if let Err(error) = Box::pin(shared.presence.unregister(&user_id, &connection_id)).await {
        debug!(%user_id, %connection_id, %error, "presence deregistration failed");
    }
    socket.finish(end).await;
}

/// Waits for a valid token: from the query, or from the first message within the deadline.
async fn authenticate(
    socket: &mut Socket,
    query_token: Option<String>,
    shared: &Shared,
) -> Result<Identity, End> {
    let token = match query_token {
        Some(token) => token,
        None => {
            let deadline = Instant::now() + shared.settings.auth_timeout;
            first_message_token(socket, deadline, &shared.shutdown).await?
        }
    };
    validate(&shared.auth, &token).await
}

async fn first_message_token(
    socket: &mut Socket,
    deadline: Instant,
    shutdown: &CancellationToken,
) -> Result<String, End> {
    loop {
        let incoming = {
            let reader = socket.reader();
            tokio::select! {
                biased;
                () = shutdown.cancelled() => return Err(End::going_away()),
                () = sleep_until(deadline) => {
                    return Err(End::fail(
                        CloseCode::Timeout,
                        ErrorCode::AUTH_TIMEOUT,
                        "no authentication within the timeout",
                    ));
                }
                incoming = reader.next() => incoming,
            }
        };
        match socket.control(incoming).await? {
            Some(Message::Text(text)) => {
                return match ClientMessage::decode(&text) {
                    Ok(ClientMessage::Auth { token }) => Ok(token.0),
                    Ok(_) => Err(End::fail(
                        CloseCode::Unauthorized,
                        ErrorCode::MISSING_TOKEN,
                        "authenticate first: send {\"type\":\"auth\",\"token\":...}",
                    )),
                    Err(error) => Err(End::malformed(&error.to_string())),
                };
            }
            Some(Message::Binary(_)) => return Err(End::binary()),
            None => continue,
        }
    }
}

async fn validate(auth: &Authenticator, token: &str) -> Result<Identity, End> {
    let started = std::time::Instant::now();
    let result = Box::pin(auth.validate(token)).await;
    metrics::histogram!("pulse_gateway_auth_seconds").record(started.elapsed().as_secs_f64());
    if let Err(error) = &result {
        metrics::counter!("pulse_gateway_auth_failures_total", "reason" => error.reason())
            .increment(1);
    }
    result.map_err(|error| match error {
        AuthError::Unavailable(_) => End::fail(
            CloseCode::TryAgainLater,
            ErrorCode::AUTH_UNAVAILABLE,
            "authentication is unavailable, try again later",
        ),
        other => End::fail(
            CloseCode::Unauthorized,
            ErrorCode::from(other.reason()),
            &other.to_string(),
        ),
    })
}

/// The live phase: messages both ways, heartbeats, token expiry, kicks, shutdown.
async fn live(
    socket: &mut Socket,
    identity: Identity,
    connection_id: &str,
    mut inbox: mpsc::Receiver<Arc<str>>,
    shared: &Shared,
) -> End {
    let settings = &shared.settings;
    let kick = socket
        .kick
        .clone()
        .expect("set when the connection went live");
    let connected = ServerMessage::Connected {
        connection_id: connection_id.to_owned(),
        user_id: identity.user_id.clone(),
        instance_id: settings.instance_id.clone(),
        heartbeat_interval_ms: u64::try_from(settings.heartbeat_interval.as_millis())
            .unwrap_or(u64::MAX),
    };
    if let Err(end) = socket.send_text(&connected.encode()).await {
        return end;
    }

    let mut heartbeat = tokio::time::interval_at(
        Instant::now() + settings.heartbeat_interval,
        settings.heartbeat_interval,
    );
    heartbeat.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let mut awaiting_pong = false;
    let mut expires_at = expiry_instant(identity.expires_at, settings.token_leeway);
    let user_id = identity.user_id;
    let mut rate = RateLimit::new(settings.max_messages_per_second);
    // Created once so that this connection's place in the drain is drawn once.
    let mut drain = pin!(drain_turn(&shared.shutdown, settings.drain_spread));

    loop {
        // Everything but the read happens inside this select, so the read
        // future survives until it yields a frame.
        let incoming = {
            let Socket {
                reader,
                writer,
                write_timeout,
                ..
            } = socket;
            let reader = reader.as_mut().expect("the reader lives until finish");
            let mut read = pin!(reader.next());
            loop {
                tokio::select! {
                    biased;
                    () = &mut drain => return End::going_away(),
                    end = kick.requested() => return end,
                    incoming = &mut read => break incoming,
                    outbound = inbox.recv() => {
                        // The manager holds the sender until this session removes
                        // the connection, so the queue cannot close before.
                        let Some(text) = outbound else { return End::going_away() };
                        if let Err(end) = write_or_kick(writer, OpCode::Text, text.as_bytes(), *write_timeout, &kick).await {
                            return end;
                        }
                        shared.metrics.messages_out.increment(1);
                    }
                    _ = heartbeat.tick() => {
                        if awaiting_pong {
                            return End::fail(
                                CloseCode::Timeout,
                                ErrorCode::HEARTBEAT_TIMEOUT,
                                "no pong within the heartbeat interval",
                            );
                        }
                        awaiting_pong = true;
                        if let Err(end) = write_or_kick(writer, OpCode::Ping, b"", *write_timeout, &kick).await {
                            return end;
                        }
                    }
                    () = sleep_until(expires_at) => {
                        return End::fail(
                            CloseCode::Unauthorized,
                            ErrorCode::TOKEN_EXPIRED,
                            "token has expired; send a fresh one before exp",
                        );
                    }
                }
            }
        };
        // Any frame from the client shows it is alive, not only a pong: a pong
        // can queue behind a large message.
        awaiting_pong = false;
        if matches!(
            incoming,
            Ok(Incoming::Text(_) | Incoming::Binary(_) | Incoming::Ping(_))
        ) && !rate.allow()
        {
            telemetry::limit_rejection("messages_per_second");
            return End::fail(
                CloseCode::TooMany,
                ErrorCode::RATE_LIMITED,
                &format!(
                    "more than {} messages per second",
                    settings.max_messages_per_second
                ),
            );
        }
        let text = match socket.control(incoming).await {
            Ok(Some(Message::Text(text))) => {
                shared.metrics.messages_in.increment(1);
                text
            }
            Ok(Some(Message::Binary(_))) => return End::binary(),
            Ok(None) => continue,
            Err(end) => return end,
        };
        match ClientMessage::decode(&text) {
            Ok(ClientMessage::Ping { id }) => {
                if let Err(end) = socket.send_text(&ServerMessage::Pong { id }.encode()).await {
                    return end;
                }
                shared.metrics.messages_out.increment(1);
            }
            Ok(ClientMessage::Auth { token }) => {
                match validate(&shared.auth, token.expose()).await {
                    Ok(fresh) if fresh.user_id == user_id => {
                        expires_at = expiry_instant(fresh.expires_at, settings.token_leeway);
                        debug!(%user_id, connection_id, "token refreshed");
                    }
                    Ok(_) => {
                        return End::fail(
                            CloseCode::Forbidden,
                            ErrorCode::new("user_mismatch"),
                            "a refreshed token must name the same user",
                        );
                    }
                    Err(end) => return end,
                }
            }
            Err(error) => return End::malformed(&error.to_string()),
        }
    }
}

/// Completes at this connection's turn to close in a drain: a random point
/// within `spread` after shutdown begins, so that clients do not all
/// reconnect in the same second. The connection serves normally until then.
async fn drain_turn(shutdown: &CancellationToken, spread: Duration) {
    shutdown.cancelled().await;
    let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(u64::MAX);
    if spread_ms > 0 {
        tokio::time::sleep(Duration::from_millis(rand::random_range(0..spread_ms))).await;
    }
}

/// The instant a token with `exp` (seconds since the epoch) stops being accepted.
fn expiry_instant(exp: u64, leeway: Duration) -> Instant {
    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let left = Duration::from_secs(exp.saturating_sub(now_secs)) + leeway;
    // Far-future tokens are capped so the instant arithmetic cannot overflow.
    Instant::now() + left.min(Duration::from_secs(10 * 365 * 24 * 3600))
}

/// The conformance echo (`--echo-path`): no authentication, no presence;
/// every message comes back as it came, through the same framing, limits
/// and closing as a live connection.
pub(crate) async fn echo(stream: TcpStream, shared: Arc<Shared>) {
    let mut socket = Socket::new(stream, &shared.settings);
    let end = loop {
        let incoming = tokio::select! {
            biased;
            () = shared.shutdown.cancelled() => break End::going_away(),
            incoming = socket.reader().next() => incoming,
        };
        let sent = match socket.control(incoming).await {
            Ok(Some(Message::Text(text))) => socket.send_text(&text).await,
            Ok(Some(Message::Binary(data))) => socket.send_binary(&data).await,
            Ok(None) => Ok(()),
            Err(end) => break end,
        };
        if let Err(end) = sent {
            break end;
        }
    };
    socket.finish(end).await;
}
