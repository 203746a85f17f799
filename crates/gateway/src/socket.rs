//! The WebSocket under a session: reading whole messages (with the limits
//! fastwebsockets leaves to us), answering control frames, writing with a
//! deadline, and closing with the right code.

use std::{sync::Arc, time::Duration};

use fastwebsockets::{
    Frame, OpCode, Payload, WebSocket, WebSocketError, WebSocketRead, WebSocketWrite,
};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use pulse_protocol::{CloseCode, ErrorCode, ServerMessage};
use tokio::net::{
    TcpStream,
    tcp::{OwnedReadHalf, OwnedWriteHalf},
};
use tokio::time::timeout;

use crate::{Settings, session::Kick};

/// How long to wait for the client's close frame after sending ours.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

type Reader = WebSocketRead<OwnedReadHalf>;
pub(crate) type Writer = WebSocketWrite<OwnedWriteHalf>;

/// Takes the TCP stream back from hyper once the upgrade is done, so that a
/// live socket holds neither hyper's upgrade wrapper nor a lock around a
/// shared stream: the read and write halves are the socket's own. A client
/// that sent bytes before it saw the 101 broke the handshake's order
/// (RFC 6455 4.1) and is refused.
pub(crate) fn take_tcp(
    ws: WebSocket<TokioIo<Upgraded>>,
) -> Result<WebSocket<TcpStream>, &'static str> {
    let upgraded = ws.into_inner().into_inner();
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) if parts.read_buf.is_empty() => Ok(WebSocket::after_handshake(
            parts.io.into_inner(),
            fastwebsockets::Role::Server,
        )),
        Ok(_) => Err("frames arrived before the upgrade completed"),
        Err(_) => Err("the upgraded connection is not a TCP stream"),
    }
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
    pub(crate) fn fail(close: CloseCode, code: ErrorCode, message: &str) -> Self {
        Self::Fail {
            close,
            code,
            message: message.to_owned(),
        }
    }

    pub(crate) fn going_away() -> Self {
        Self::fail(
            CloseCode::GoingAway,
            ErrorCode::GOING_AWAY,
            "server shutting down",
        )
    }

    pub(crate) fn malformed(detail: &str) -> Self {
        Self::fail(
            CloseCode::Malformed,
            ErrorCode::MALFORMED_MESSAGE,
            &format!("not a valid message: {detail}"),
        )
    }

    pub(crate) fn binary() -> Self {
        Self::fail(
            CloseCode::Malformed,
            ErrorCode::MALFORMED_MESSAGE,
            "binary frames are not part of the protocol; send JSON text",
        )
    }

    /// The close code the client is sent, if any.
    pub(crate) fn close_code(&self) -> Option<u16> {
        match self {
            Self::Fail { close, .. } => Some(close.code()),
            Self::Close { code, .. } => Some(*code),
            Self::Gone(_) => None,
        }
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
pub(crate) enum Message {
    Text(String),
    Binary(Vec<u8>),
}

/// Both halves of a socket.
pub(crate) struct Socket {
    pub(crate) reader: Option<FrameReader>,
    pub(crate) writer: Writer,
    /// How long one write may block on a client that does not read.
    pub(crate) write_timeout: Duration,
    /// Set once the connection is live.
    pub(crate) kick: Option<Arc<Kick>>,
}

impl Socket {
    /// Splits an upgraded socket, with the limits of `settings`.
    pub(crate) fn new(mut ws: WebSocket<TcpStream>, settings: &Settings) -> Self {
        // Control frames are answered here, where the writer is, rather than by
        // the library's read half, which has no writer after the split.
        ws.set_auto_pong(false);
        ws.set_auto_close(false);
        // fastwebsockets refuses a frame of exactly its limit (`>=`); ours is
        // "over the limit closes 1009", as for fragmented messages below.
        ws.set_max_message_size(settings.max_message_bytes.saturating_add(1));
        let (reader, writer) = ws.split(TcpStream::into_split);
        Self {
            reader: Some(FrameReader::new(reader, settings.max_message_bytes)),
            writer,
            write_timeout: settings.write_timeout,
            kick: None,
        }
    }

    pub(crate) fn reader(&mut self) -> &mut FrameReader {
        self.reader.as_mut().expect("the reader lives until finish")
    }

    pub(crate) async fn send_text(&mut self, text: &str) -> Result<(), End> {
        write_frame(
            &mut self.writer,
            Frame::text(Payload::Borrowed(text.as_bytes())),
            self.write_timeout,
        )
        .await
    }

    pub(crate) async fn send_binary(&mut self, data: Vec<u8>) -> Result<(), End> {
        let frame = Frame::binary(Payload::Owned(data));
        write_frame(&mut self.writer, frame, self.write_timeout).await
    }

    /// Answers control frames and maps read errors; returns the message frames.
    pub(crate) async fn control(
        &mut self,
        incoming: Result<Incoming, End>,
    ) -> Result<Option<Message>, End> {
        match incoming? {
            Incoming::Text(text) => Ok(Some(Message::Text(text))),
            Incoming::Binary(payload) => Ok(Some(Message::Binary(payload))),
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
    pub(crate) async fn finish(&mut self, end: End) {
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

pub(crate) async fn write_frame(
    writer: &mut Writer,
    frame: Frame<'_>,
    limit: Duration,
) -> Result<(), End> {
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
pub(crate) async fn write_or_kick(
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
        126.. => Err((1002, "control frame too large")),
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
pub(crate) enum Incoming {
    Text(String),
    Binary(Vec<u8>),
    Ping(Vec<u8>),
    Pong,
    Close(Vec<u8>),
}

/// Reads frames and reassembles fragmented messages, bounding the whole
/// message (fastwebsockets bounds only each frame).
pub(crate) struct FrameReader {
    reader: Reader,
    max_message_bytes: usize,
    partial: Option<(OpCode, Vec<u8>)>,
}

impl FrameReader {
    pub(crate) fn new(reader: Reader, max_message_bytes: usize) -> Self {
        Self {
            reader,
            max_message_bytes,
            partial: None,
        }
    }

    /// The next message or control frame.
    pub(crate) async fn next(&mut self) -> Result<Incoming, End> {
        let mut never_send = |_frame: Frame<'_>| async { Ok::<(), std::convert::Infallible>(()) };
        loop {
            let frame = self
                .reader
                .read_frame(&mut never_send)
                .await
                .map_err(read_error)?;
            let fin = frame.fin;
            // An oversized close is still the client's close: `close_reply`
            // answers it and the transport ends without waiting for another.
            if frame.opcode == OpCode::Pong && frame.payload.len() > 125 {
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
        return Ok(Incoming::Binary(payload));
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
