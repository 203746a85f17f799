//! One WebSocket, from upgrade to close: the per-connection state machine
//! (awaiting auth, live, closing).
//!
//! A live connection spends nearly all its life waiting, so the waiting is
//! what is made small: the session task holds a pointer to its `Live`
//! state and waits on one `poll_fn` (socket readability, its [`Mailbox`],
//! one timer for heartbeat and token expiry). The work a wake-up brings
//! (parsing, writing with a deadline, validating a refreshed token) runs in a
//! boxed future that exists only while it runs. The task stays at a few
//! hundred bytes; see `the_session_task_stays_small`.
//!
//! The reader is cancel-safe (`frame/io.rs`), so nothing the session stops
//! waiting for loses a byte.

use std::{
    future::poll_fn,
    net::SocketAddr,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
};

use pulse_presence::ConnectionRecord;
use pulse_protocol::{
    Channel, ClientMessage, CloseCode, Decoded, ErrorCode, ServerMessage, event::now_ms,
};
use tokio::{
    net::TcpStream,
    time::{Instant, Sleep, sleep_until},
};
use tracing::{debug, info};

use crate::{
    LocalConnection,
    frame::OpCode,
    limits::{RateLimit, Rates, UnauthenticatedGuard},
    mailbox::{Delivery, Mailbox},
    shared::Shared,
    socket::{End, Incoming, Message, Socket, write_all_or_kick, write_or_kick},
    telemetry,
};

mod auth;
mod authorize;
mod channels;
mod echo;
mod members;
mod recovery;
mod refresh;

use auth::{authenticate, expiry_instant, validate};
use channels::ChannelState;
pub(crate) use echo::echo;

/// Serves one upgraded socket until it ends, and cleans up after it.
///
/// The arguments travel in a box: an async fn keeps its arguments in its
/// state for its whole life, and these are needed only until the socket
/// is live.
pub(crate) fn run(
    stream: TcpStream,
    query_token: Option<String>,
    peer: SocketAddr,
    unauthenticated: UnauthenticatedGuard,
    shared: Arc<Shared>,
) -> impl Future<Output = ()> + Send + 'static {
    let start = Box::new(Start {
        stream,
        query_token,
        peer,
        unauthenticated,
        shared,
    });
    async move {
        let Some(mut live) = Box::pin(open(start)).await else {
            return;
        };
        let mut wake = Wake::Start;
        let end = loop {
            if let Err(end) = Box::pin(live.handle(wake)).await {
                break end;
            }
            wake = poll_fn(|cx| live.poll_wake(cx)).await;
        };
        Box::pin(live.close(end)).await;
    }
}

/// An upgraded socket, before it is authenticated.
struct Start {
    stream: TcpStream,
    query_token: Option<String>,
    peer: SocketAddr,
    unauthenticated: UnauthenticatedGuard,
    shared: Arc<Shared>,
}

/// Authenticates the socket and makes it a live connection: in the manager,
/// registered with presence. `None` when the socket was closed instead.
async fn open(start: Box<Start>) -> Option<Box<Live>> {
    let Start {
        stream,
        query_token,
        peer,
        unauthenticated,
        shared,
    } = *start;
    let mut socket = Socket::new(stream, &shared.settings);
    // Frames count from the first one, before authentication too.
    let mut rate = RateLimit::new(Rates::of(&shared.settings));
    let identity = match authenticate(&mut socket, query_token, &mut rate, &shared).await {
        Ok(identity) => identity,
        Err(end) => {
            debug!(%peer, reason = end.reason(), "unauthenticated socket closed");
            telemetry::disconnect("auth", end.reason(), end.close_code());
            socket.finish(end, shared.settings.write_timeout).await;
            return None;
        }
    };
    drop(unauthenticated);

    let settings = &shared.settings;
    let connection_id: Arc<str> = uuid::Uuid::now_v7().to_string().into();
    let user_id: Arc<str> = identity.user_id.into();
    let connected_at_ms = now_ms();
    let mailbox = Arc::new(Mailbox::new());
    let local = LocalConnection {
        connection_id: connection_id.clone(),
        connected_at_ms,
        mailbox: mailbox.clone(),
    };
    let record = ConnectionRecord {
        connection_id: connection_id.to_string(),
        user_id: user_id.to_string(),
        instance_id: settings.instance_id.clone(),
        connected_at_ms,
    };
    let server_subscriptions =
        match crate::admission::admit(&shared, &user_id, local, &record).await {
            Ok(server_subscriptions) => server_subscriptions,
            Err(end) => {
                socket.finish(end, settings.write_timeout).await;
                return None;
            }
        };
    info!(%user_id, %connection_id, %peer, "connected");
    shared.metrics.connects.increment(1);
    shared.metrics.connections.increment(1.0);

    let now = Instant::now();
    let next_ping = now + settings.heartbeat_interval;
    let expires_at = expiry_instant(identity.expires_at, settings.token_leeway);
    Some(Box::new(Live {
        socket,
        mailbox,
        user_id,
        connection_id,
        timer: Box::pin(sleep_until(next_ping.min(expires_at))),
        next_ping,
        expires_at,
        awaiting_pong: false,
        rate,
        channels: ChannelState::for_connection(&identity.claims, server_subscriptions),
        shared,
    }))
}

/// Takes one frame's share of the connection's rate: every frame the client
/// sends counts (messages, each fragment of one, pings, pongs) but its close.
fn charge(rate: &mut RateLimit, rates: Rates, incoming: &Result<Incoming, End>) -> Result<(), End> {
    if matches!(incoming, Ok(Incoming::Close(_)) | Err(_)) || rate.allow_frame(rates) {
        return Ok(());
    }
    telemetry::limit_rejection("messages_per_second");
    Err(End::fail(
        CloseCode::TooMany,
        ErrorCode::RATE_LIMITED,
        &format!(
            "more than {} messages per second (each frame counts)",
            rates.per_second
        ),
    ))
}

/// What woke a live connection.
enum Wake {
    /// It just went live: greet the client.
    Start,
    /// A message or control frame from the client, or why none will come.
    Incoming(Result<Incoming, End>),
    /// A message queued for it, or a kick.
    Delivery(Delivery),
    /// The heartbeat or the token's expiry is due.
    Timer,
}

/// A live connection's state, on the heap for the connection's life.
struct Live {
    socket: Socket,
    mailbox: Arc<Mailbox>,
    user_id: Arc<str>,
    connection_id: Arc<str>,
    /// One timer for the next heartbeat and the token's expiry, whichever is first.
    timer: Pin<Box<Sleep>>,
    next_ping: Instant,
    expires_at: Instant,
    /// A ping went out and no frame has come since.
    awaiting_pong: bool,
    rate: RateLimit,
    /// Its channel subscriptions and `channels` claim; `None` until it has either.
    channels: Option<Box<ChannelState>>,
    shared: Arc<Shared>,
}

impl Live {
    /// Waits for the next thing to do, in order: a kick (Disconnect, a full
    /// queue, the drain), the client's frames, queued messages, the timer.
    fn poll_wake(&mut self, cx: &mut Context<'_>) -> Poll<Wake> {
        if let Poll::Ready(end) = self.mailbox.poll_kick(cx) {
            return Poll::Ready(Wake::Delivery(Delivery::Kick(end)));
        }
        if let Poll::Ready(incoming) = self.socket.reader().poll_next(cx) {
            return Poll::Ready(Wake::Incoming(incoming));
        }
        if let Poll::Ready(delivery) = self.mailbox.poll_delivery(cx) {
            return Poll::Ready(Wake::Delivery(delivery));
        }
        if self.timer.as_mut().poll(cx).is_ready() {
            return Poll::Ready(Wake::Timer);
        }
        Poll::Pending
    }

    /// Does what one wake-up asks; `Err` ends the connection.
    async fn handle(&mut self, wake: Wake) -> Result<(), End> {
        match wake {
            Wake::Start => self.greet().await,
            Wake::Incoming(incoming) => self.incoming(incoming).await,
            Wake::Delivery(Delivery::Message(text)) => {
                self.write(OpCode::Text, text.as_bytes()).await?;
                self.shared.metrics.messages_out.increment(1);
                Ok(())
            }
            Wake::Delivery(Delivery::Batch(frames)) => {
                let limit = self.shared.settings.write_timeout;
                let payloads: Vec<&[u8]> = frames.iter().map(|frame| frame.as_bytes()).collect();
                write_all_or_kick(
                    &mut self.socket.writer,
                    OpCode::Text,
                    &payloads,
                    limit,
                    &self.mailbox,
                )
                .await?;
                self.shared
                    .metrics
                    .messages_out
                    .increment(frames.len() as u64);
                Ok(())
            }
            Wake::Delivery(Delivery::Subscription(channel, true)) => {
                self.server_subscribe(channel).await
            }
            Wake::Delivery(Delivery::Subscription(channel, false)) => {
                self.server_unsubscribe(&channel).await
            }
            Wake::Delivery(Delivery::Reposition(channel)) => self.reposition(channel).await,
            Wake::Delivery(Delivery::Kick(end)) => Err(end),
            Wake::Timer => self.timer_fired().await,
        }
    }

    async fn greet(&mut self) -> Result<(), End> {
        // A connection that went live after the drain took its list of
        // connections is not on it: it ends here instead.
        if self.shared.shutdown.is_cancelled() {
            return Err(End::going_away());
        }
        let personal = match self.shared.presence.personal_history() {
            Some(history) => Some(self.open_personal(history).await?),
            None => None,
        };
        let settings = &self.shared.settings;
        let connected = ServerMessage::Connected {
            connection_id: self.connection_id.to_string(),
            user_id: self.user_id.to_string(),
            instance_id: settings.instance_id.clone(),
            heartbeat_interval_ms: u64::try_from(settings.heartbeat_interval.as_millis())
                .unwrap_or(u64::MAX),
            channel: Channel::personal(&self.user_id),
            offset: personal.as_ref().map(|release| release.top.offset),
            epoch: personal.as_ref().map(|release| release.top.epoch.clone()),
        };
        self.socket
            .send_text(&connected.encode(), settings.write_timeout)
            .await?;
        if let Some(release) = &personal {
            self.release(release);
        }
        self.join_server_subscriptions().await
    }

    async fn timer_fired(&mut self) -> Result<(), End> {
        let now = Instant::now();
        if now >= self.expires_at {
            return Err(End::fail(
                CloseCode::Unauthorized,
                ErrorCode::TOKEN_EXPIRED,
                "token has expired; send a fresh one before exp",
            ));
        }
        if now >= self.next_ping {
            if self.awaiting_pong {
                return Err(End::fail(
                    CloseCode::Timeout,
                    ErrorCode::HEARTBEAT_TIMEOUT,
                    "no pong within the heartbeat interval",
                ));
            }
            self.awaiting_pong = true;
            self.next_ping = now + self.shared.settings.heartbeat_interval;
            self.write(OpCode::Ping, b"").await?;
        }
        self.rearm();
        Ok(())
    }

    /// Points the timer at the next heartbeat or the expiry, whichever is first.
    fn rearm(&mut self) {
        let deadline = self.next_ping.min(self.expires_at);
        if self.timer.deadline() != deadline {
            self.timer.as_mut().reset(deadline);
        }
    }

    /// A write that gives way to a kick.
    async fn write(&mut self, opcode: OpCode, payload: &[u8]) -> Result<(), End> {
        let timeout = self.shared.settings.write_timeout;
        write_or_kick(
            &mut self.socket.writer,
            opcode,
            payload,
            timeout,
            &self.mailbox,
        )
        .await
    }

    async fn incoming(&mut self, incoming: Result<Incoming, End>) -> Result<(), End> {
        let settings = &self.shared.settings;
        // Any frame from the client shows it is alive, not only a pong: a pong
        // can queue behind a large message.
        self.awaiting_pong = false;
        charge(&mut self.rate, Rates::of(settings), &incoming)?;
        let text = match self
            .socket
            .control(incoming, settings.write_timeout)
            .await?
        {
            Some(Message::Text(text)) => {
                self.shared.metrics.messages_in.increment(1);
                text
            }
            Some(Message::Binary(_)) => return Err(End::binary()),
            None => return Ok(()),
        };
        match ClientMessage::decode_frame(&text) {
            Ok(Decoded::BadRequest { id, message }) => self.bad_request(id, message).await,
            Ok(Decoded::Message(ClientMessage::Ping { id })) => {
                self.socket
                    .send_text(
                        &ServerMessage::Pong { id }.encode(),
                        self.shared.settings.write_timeout,
                    )
                    .await?;
                self.shared.metrics.messages_out.increment(1);
                Ok(())
            }
            Ok(Decoded::Message(ClientMessage::Auth { token })) => {
                self.refresh(token.expose()).await
            }
            Ok(Decoded::Message(request)) => self.channel_request(request).await,
            Err(error) => Err(End::malformed(&error.to_string())),
        }
    }

    /// The one place a live connection ends: out of the manager and
    /// presence first (the server has decided), then the closing handshake,
    /// which may wait on a slow client.
    async fn close(mut self: Box<Self>, end: End) {
        let shared = &self.shared;
        info!(user_id = %self.user_id, connection_id = %self.connection_id, reason = end.reason(), "disconnected");
        shared.metrics.connections.decrement(1.0);
        telemetry::disconnect("live", end.reason(), end.close_code());
        {
            // Out of the manager and out of presence as one step for a
            // re-sync: one that read Redis in between would find the
            // connection there and not here, and remove it itself, as state
            // presence lost (a false "out of step" at every mass close).
            let _sync = shared.resync.read().await;
            shared.manager.remove(&self.user_id, &self.connection_id);
            self.leave_every_channel().await;
            if let Err(error) = shared
                .presence
                .unregister(&self.user_id, &self.connection_id)
                .await
            {
                debug!(user_id = %self.user_id, connection_id = %self.connection_id, %error, "presence deregistration failed");
            }
        }
        self.socket.finish(end, shared.settings.write_timeout).await;
    }
}

#[cfg(test)]
mod tests {
    use std::net::Ipv4Addr;

    use pulse_auth::{Authenticator, Validator, ValidatorSettings};
    use pulse_presence::Presence;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::{Gateway, Settings};

    /// What a live connection costs while it waits is its task plus its
    /// [`Live`]: both must stay small, or every idle socket pays for it.
    #[tokio::test]
    async fn the_session_task_stays_small() {
        let validator = Validator::new(ValidatorSettings::with_secret(
            "a-test-secret-of-at-least-32-bytes!!",
        ))
        .unwrap();
        let gateway = Gateway::new(
            Settings::new("size-test"),
            Authenticator::Local(validator),
            Presence::in_memory(),
        );
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await.unwrap();
        let stream = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let peer = stream.local_addr().unwrap();
        let guard = gateway
            .shared
            .unauthenticated
            .admit(peer.ip(), 0)
            .expect("no limit");
        let session = run(stream, None, peer, guard, gateway.shared.clone());
        let task = std::mem::size_of_val(&session);
        let live = std::mem::size_of::<Live>();
        println!("session future {task} bytes, Live {live} bytes");
        // With tokio's task header and trailer, a future of up to about
        // 140 bytes keeps the task at 256 (it is 128-byte aligned).
        assert!(task <= 64, "the session future grew to {task} bytes");
        // 192 is an allocator size class; one byte more costs 32 or 64.
        assert!(live <= 192, "Live grew to {live} bytes");
        drop(session);
    }
}
