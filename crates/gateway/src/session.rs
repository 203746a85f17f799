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

use fastwebsockets::{
    Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite,
};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use pulse_auth::{AuthError, Authenticator, Identity};
use pulse_presence::{ConnectionRecord, Presence};
use pulse_protocol::{ClientMessage, CloseCode, ErrorCode, ServerMessage, event::now_ms};
use tokio::{
    sync::{Notify, mpsc},
    time::{Instant, MissedTickBehavior, sleep_until, timeout},
};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::{ConnectionManager, LocalConnection, Settings};

/// How long to wait for the client's close frame after sending ours.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

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

    async fn requested(&self) -> End {
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
}

type Io = TokioIo<Upgraded>;
type Reader = WebSocketRead<tokio::io::ReadHalf<Io>>;
type Writer = WebSocketWrite<tokio::io::WriteHalf<Io>>;

/// Serves one upgraded socket until it ends, and cleans up after it.
pub(crate) async fn run(
    ws: WebSocket<Io>,
    query_token: Option<String>,
    peer: SocketAddr,
    shared: Arc<Shared>,
) {
    let mut ws = ws;
    // Control frames are answered here, where the writer is, rather than by the
    // library's read half, which has no writer after the split.
    ws.set_auto_pong(false);
    ws.set_auto_close(false);
    ws.set_max_message_size(shared.settings.max_message_bytes);
    let (reader, writer) = ws.split(tokio::io::split);
    let mut socket = Socket {
        reader: Some(FrameReader::new(reader, shared.settings.max_message_bytes)),
        writer,
        write_timeout: shared.settings.write_timeout,
        kick: None,
    };

    let identity = match authenticate(&mut socket, query_token, &shared).await {
        Ok(identity) => identity,
        Err(end) => {
            debug!(%peer, reason = end.reason(), "unauthenticated socket closed");
            socket.finish(end).await;
            return;
        }
    };

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
    shared.manager.add(
        &user_id,
        LocalConnection {
            connection_id: connection_id.clone(),
            connected_at_ms: record.connected_at_ms,
            outbound,
            kick: kick.clone(),
        },
    );
    // A presence failure must not cost the client its socket: the connection is
    // live locally either way, and the failure is logged.
    if let Err(error) = shared.presence.register(&record).await {
        warn!(%user_id, %connection_id, %error, "presence registration failed");
    }
    info!(%user_id, %connection_id, %peer, "connected");

    let end = live(&mut socket, identity, &connection_id, inbox, &shared).await;
    info!(%user_id, %connection_id, reason = end.reason(), "disconnected");
    // The connection is over once the server decides so: presence drops it
    // before the closing handshake, which may wait on a slow client.
    shared.manager.remove(&user_id, &connection_id);
    if let Err(error) = shared.presence.unregister(&user_id, &connection_id).await {
        warn!(%user_id, %connection_id, %error, "presence deregistration failed");
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
            Some(Message::Binary) => return Err(End::binary()),
            None => continue,
        }
    }
}

async fn validate(auth: &Authenticator, token: &str) -> Result<Identity, End> {
    auth.validate(token).await.map_err(|error| match error {
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
                    () = shared.shutdown.cancelled() => return End::going_away(),
                    end = kick.requested() => return end,
                    incoming = &mut read => break incoming,
                    outbound = inbox.recv() => {
                        // The manager holds the sender until this session removes
                        // the connection, so the queue cannot close before.
                        let Some(text) = outbound else { return End::going_away() };
                        let frame = Frame::text(Payload::Borrowed(text.as_bytes()));
                        if let Err(end) = write_or_kick(writer, frame, *write_timeout, &kick).await {
                            return end;
                        }
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
                        let ping = Frame::new(true, OpCode::Ping, None, Payload::Borrowed(b""));
                        if let Err(end) = write_or_kick(writer, ping, *write_timeout, &kick).await {
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
        let text = match socket.control(incoming).await {
            Ok(Some(Message::Text(text))) => text,
            Ok(Some(Message::Binary)) => return End::binary(),
            Ok(None) => continue,
            Err(end) => return end,
        };
        match ClientMessage::decode(&text) {
            Ok(ClientMessage::Ping { id }) => {
                if let Err(end) = socket.send_text(&ServerMessage::Pong { id }.encode()).await {
                    return end;
                }
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

/// The instant a token with `exp` (seconds since the epoch) stops being accepted.
fn expiry_instant(exp: u64, leeway: Duration) -> Instant {
    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let left = Duration::from_secs(exp.saturating_sub(now_secs)) + leeway;
    // Far-future tokens are capped so the instant arithmetic cannot overflow.
    Instant::now() + left.min(Duration::from_secs(10 * 365 * 24 * 3600))
}

/// How a session ends, and what the client is told.
#[derive(Debug)]
pub(crate) enum End {
    /// Send an `error` message, then close with a code.
    Fail {
        close: CloseCode,
        code: ErrorCode,
        message: String,
    },
    /// Close with a WebSocket-level code and reason, no `error` message
    /// (protocol violations, answers to the client's close).
    Close { code: u16, reason: &'static str },
    /// The client closed and was answered, or the transport is gone.
    Gone(&'static str),
}

impl End {
    fn fail(close: CloseCode, code: ErrorCode, message: &str) -> Self {
        Self::Fail {
            close,
            code,
            message: message.to_owned(),
        }
    }

    fn going_away() -> Self {
        Self::fail(
            CloseCode::GoingAway,
            ErrorCode::GOING_AWAY,
            "server shutting down",
        )
    }

    fn malformed(detail: &str) -> Self {
        Self::fail(
            CloseCode::Malformed,
            ErrorCode::MALFORMED_MESSAGE,
            &format!("not a valid message: {detail}"),
        )
    }

    fn binary() -> Self {
        Self::fail(
            CloseCode::Malformed,
            ErrorCode::MALFORMED_MESSAGE,
            "binary frames are not part of the protocol; send JSON text",
        )
    }

    /// A short reason for logs.
    pub(crate) fn reason(&self) -> &str {
        match self {
            Self::Fail { code, .. } => code.as_str(),
            Self::Close { reason, .. } | Self::Gone(reason) => reason,
        }
    }
}

/// A message frame, after control frames have been dealt with.
enum Message {
    Text(String),
    Binary,
}

/// Both halves of a socket.
struct Socket {
    reader: Option<FrameReader>,
    writer: Writer,
    /// How long one write may block on a client that does not read.
    write_timeout: Duration,
    /// Set once the connection is live.
    kick: Option<Arc<Kick>>,
}

impl Socket {
    fn reader(&mut self) -> &mut FrameReader {
        self.reader.as_mut().expect("the reader lives until finish")
    }

    async fn send_text(&mut self, text: &str) -> Result<(), End> {
        write_frame(
            &mut self.writer,
            Frame::text(Payload::Borrowed(text.as_bytes())),
            self.write_timeout,
        )
        .await
    }

    /// Answers control frames and maps read errors; returns the message frames.
    async fn control(&mut self, incoming: Result<Incoming, End>) -> Result<Option<Message>, End> {
        match incoming? {
            Incoming::Text(text) => Ok(Some(Message::Text(text))),
            Incoming::Binary => Ok(Some(Message::Binary)),
            Incoming::Ping(payload) => {
                let pong = Frame::pong(Payload::Owned(payload));
                write_frame(&mut self.writer, pong, self.write_timeout).await?;
                Ok(None)
            }
            Incoming::Pong => Ok(None),
            Incoming::Close(payload) => {
                // Echo a valid close, then the transport is done.
                let reply = match close_reply(&payload) {
                    Ok(()) => Frame::close_raw(Payload::Owned(payload)),
                    Err((code, reason)) => Frame::close(code, reason.as_bytes()),
                };
                let _ = timeout(self.write_timeout, self.writer.write_frame(reply)).await;
                Err(End::Gone("client closed"))
            }
        }
    }

    /// Tells the client why, closes, and waits briefly for its close frame.
    async fn finish(&mut self, end: End) {
        let (code, reason) = match end {
            End::Gone(_) => return,
            End::Close { code, reason } => (code, reason.to_owned()),
            End::Fail {
                close,
                code,
                message,
            } => {
                let error = ServerMessage::error(code, message.clone()).encode();
                if self.send_text(&error).await.is_err() {
                    return;
                }
                (close.code(), message)
            }
        };
        let reason = truncate_reason(&reason);
        let close = Frame::close(code, reason.as_bytes());
        if !matches!(
            timeout(self.write_timeout, self.writer.write_frame(close)).await,
            Ok(Ok(()))
        ) {
            return;
        }
        if let Some(mut reader) = self.reader.take() {
            let _ = timeout(CLOSE_LINGER, async {
                while let Ok(incoming) = reader.next().await {
                    if matches!(incoming, Incoming::Close(_)) {
                        break;
                    }
                }
            })
            .await;
        }
    }
}

async fn write_frame(writer: &mut Writer, frame: Frame<'_>, limit: Duration) -> Result<(), End> {
    match timeout(limit, writer.write_frame(frame)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone("write failed")),
        Err(_) => Err(End::Gone("write timed out")),
    }
}

/// A write that gives way to a kick: a client whose writes block is the one a
/// full queue kicks, and waiting out the write timeout would only delay it.
/// A write abandoned halfway leaves no room for a close frame, so the
/// transport is dropped.
async fn write_or_kick(
    writer: &mut Writer,
    frame: Frame<'_>,
    limit: Duration,
    kick: &Kick,
) -> Result<(), End> {
    tokio::select! {
        result = write_frame(writer, frame, limit) => result,
        _ = kick.requested() => Err(End::Gone("kicked while a write was blocked")),
    }
}

/// A close reason must fit a control frame: 123 bytes, cut on a character boundary.
fn truncate_reason(reason: &str) -> &str {
    let mut end = reason.len().min(123);
    while !reason.is_char_boundary(end) {
        end -= 1;
    }
    &reason[..end]
}

/// Checks a client's close payload; `Err` carries the code and reason to answer with.
fn close_reply(payload: &[u8]) -> Result<(), (u16, &'static str)> {
    match payload.len() {
        0 => Ok(()),
        1 => Err((1002, "close payload of one byte")),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !fastwebsockets::CloseCode::from(code).is_allowed() {
                Err((1002, "invalid close code"))
            } else if std::str::from_utf8(&payload[2..]).is_err() {
                Err((1007, "close reason is not UTF-8"))
            } else {
                Ok(())
            }
        }
    }
}

/// What one read produced.
enum Incoming {
    Text(String),
    Binary,
    Ping(Vec<u8>),
    Pong,
    Close(Vec<u8>),
}

/// Reads frames and reassembles fragmented messages, bounding the whole
/// message (fastwebsockets bounds only each frame).
struct FrameReader {
    reader: Reader,
    max_message_bytes: usize,
    partial: Option<(OpCode, Vec<u8>)>,
}

impl FrameReader {
    fn new(reader: Reader, max_message_bytes: usize) -> Self {
        Self {
            reader,
            max_message_bytes,
            partial: None,
        }
    }

    /// The next message or control frame.
    async fn next(&mut self) -> Result<Incoming, End> {
        let mut never_send = |_frame: Frame<'_>| async { Ok::<(), std::convert::Infallible>(()) };
        loop {
            let frame = self
                .reader
                .read_frame(&mut never_send)
                .await
                .map_err(read_error)?;
            let fin = frame.fin;
            if matches!(frame.opcode, OpCode::Close | OpCode::Pong) && frame.payload.len() > 125 {
                return Err(protocol_error("control frame too large"));
            }
            match frame.opcode {
                OpCode::Ping => return Ok(Incoming::Ping(frame.payload.to_vec())),
                OpCode::Pong => return Ok(Incoming::Pong),
                OpCode::Close => return Ok(Incoming::Close(frame.payload.to_vec())),
                OpCode::Text | OpCode::Binary => {
                    if self.partial.is_some() {
                        return Err(protocol_error("new message inside a fragmented one"));
                    }
                    if fin {
                        return finish_message(frame.opcode, frame.payload.to_vec());
                    }
                    self.partial = Some((frame.opcode, frame.payload.to_vec()));
                }
                OpCode::Continuation => {
                    let Some((opcode, buffer)) = self.partial.as_mut() else {
                        return Err(protocol_error("continuation without a message"));
                    };
                    if buffer.len() + frame.payload.len() > self.max_message_bytes {
                        return Err(End::Close {
                            code: 1009,
                            reason: "message too big",
                        });
                    }
                    buffer.extend_from_slice(&frame.payload);
                    if fin {
                        let opcode = *opcode;
                        let (_, buffer) = self.partial.take().expect("checked above");
                        return finish_message(opcode, buffer);
                    }
                }
            }
        }
    }
}

fn finish_message(opcode: OpCode, payload: Vec<u8>) -> Result<Incoming, End> {
    if opcode == OpCode::Binary {
        return Ok(Incoming::Binary);
    }
    String::from_utf8(payload)
        .map(Incoming::Text)
        .map_err(|_| End::Close {
            code: 1007,
            reason: "text is not UTF-8",
        })
}

fn protocol_error(reason: &'static str) -> End {
    End::Close { code: 1002, reason }
}

fn read_error(error: WebSocketError) -> End {
    match error {
        WebSocketError::FrameTooLarge => End::Close {
            code: 1009,
            reason: "message too big",
        },
        WebSocketError::InvalidUTF8 => End::Close {
            code: 1007,
            reason: "text is not UTF-8",
        },
        WebSocketError::UnexpectedEOF
        | WebSocketError::IoError(_)
        | WebSocketError::ConnectionClosed => End::Gone("connection dropped"),
        WebSocketError::ReservedBitsNotZero => protocol_error("reserved bits set"),
        WebSocketError::ControlFrameFragmented => protocol_error("fragmented control frame"),
        WebSocketError::PingFrameTooLarge => protocol_error("control frame too large"),
        WebSocketError::InvalidValue => protocol_error("reserved opcode"),
        _ => protocol_error("protocol error"),
    }
}
