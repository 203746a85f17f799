//! The WebSocket under a session: reading whole messages (with the limits
//! the protocol needs), answering control frames, writing with a deadline,
//! and closing with the right code. The framing itself is in [`crate::frame`].

use std::{
    task::{Context, Poll, ready},
    time::Duration,
};

use fastwebsockets::WebSocket;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use pulse_protocol::{CloseCode, ErrorCode, ServerMessage};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::{
    Settings,
    frame::{self, OpCode, ReadError, Reader, Violation, Writer},
    mailbox::Mailbox,
};

/// How long to wait for the client's close frame after sending ours.
const CLOSE_LINGER: Duration = Duration::from_secs(2);

/// Takes the TCP stream back from hyper once the upgrade is done, so that a
/// live socket holds neither hyper's upgrade wrapper, nor a lock around a
/// shared stream, nor fastwebsockets' buffers: the read and write halves are
/// the socket's own. A client that sent bytes before it saw the 101 broke
/// the handshake's order (RFC 6455 4.1) and is refused.
pub(crate) fn take_tcp(ws: WebSocket<TokioIo<Upgraded>>) -> Result<TcpStream, &'static str> {
    let upgraded = ws.into_inner().into_inner();
    match upgraded.downcast::<TokioIo<TcpStream>>() {
        Ok(parts) if parts.read_buf.is_empty() => Ok(parts.io.into_inner()),
        Ok(_) => Err("frames arrived before the upgrade completed"),
        Err(_) => Err("the upgraded connection is not a TCP stream"),
    }
}

/// How a session ends, and what the client is told. A kick is one too:
/// the mailbox keeps the `Fail` it was asked for until the session takes it.
#[derive(Debug, Clone)]
pub(crate) enum End {
    /// Send an `error` message, then close with a code.
    Fail {
        close: CloseCode,
        code: ErrorCode,
        message: String,
    },
    /// The client broke the WebSocket protocol: close with the violation's
    /// code and reason, no `error` message.
    Violation(Violation),
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
    pub(crate) fn close_code(&self) -> Option<CloseCode> {
        match self {
            Self::Fail { close, .. } => Some(*close),
            Self::Violation(violation) => Some(violation.close_code()),
            Self::Gone(_) => None,
        }
    }

    /// A short reason for logs.
    pub(crate) fn reason(&self) -> &str {
        match self {
            Self::Fail { code, .. } => code.as_str(),
            Self::Violation(violation) => violation.reason(),
            Self::Gone(reason) => reason,
        }
    }
}

/// A message frame, after control frames have been dealt with.
pub(crate) enum Message {
    Text(String),
    Binary(Vec<u8>),
}

/// Both halves of a socket. Each write takes the longest it may block on
/// a client that does not read (`--write-timeout`) from the caller, which has
/// the settings: a live connection's state is kept as small as it can be.
pub(crate) struct Socket {
    pub(crate) reader: Option<FrameReader>,
    pub(crate) writer: Writer,
}

impl Socket {
    /// Splits an upgraded socket, with the limits of `settings`.
    pub(crate) fn new(stream: TcpStream, settings: &Settings) -> Self {
        let (reader, writer) = stream.into_split();
        Self {
            reader: Some(FrameReader::new(Reader::new(
                reader,
                settings.max_message_bytes,
            ))),
            writer: Writer::new(writer),
        }
    }

    pub(crate) fn reader(&mut self) -> &mut FrameReader {
        self.reader.as_mut().expect("the reader lives until finish")
    }

    pub(crate) async fn send_text(&mut self, text: &str, limit: Duration) -> Result<(), End> {
        write_frame(&mut self.writer, OpCode::Text, text.as_bytes(), limit).await
    }

    pub(crate) async fn send_binary(&mut self, data: &[u8], limit: Duration) -> Result<(), End> {
        write_frame(&mut self.writer, OpCode::Binary, data, limit).await
    }

    /// Answers control frames and maps read errors; returns the message frames.
    pub(crate) async fn control(
        &mut self,
        incoming: Result<Incoming, End>,
        limit: Duration,
    ) -> Result<Option<Message>, End> {
        match incoming? {
            Incoming::Text(text) => Ok(Some(Message::Text(text))),
            Incoming::Binary(payload) => Ok(Some(Message::Binary(payload))),
            Incoming::Ping(payload) => {
                write_frame(&mut self.writer, OpCode::Pong, &payload, limit).await?;
                Ok(None)
            }
            Incoming::Pong | Incoming::Fragment => Ok(None),
            Incoming::Close(payload) => {
                // Echo a valid close, then the transport is done.
                let reply = match close_reply(&payload) {
                    Ok(()) => payload,
                    Err(violation) => {
                        frame::close_payload(violation.close_code(), violation.reason())
                    }
                };
                let _ = timeout(limit, self.writer.write(OpCode::Close, &reply)).await;
                Err(End::Gone("client closed"))
            }
        }
    }

    /// Tells the client why, closes, and waits briefly for its close frame.
    pub(crate) async fn finish(&mut self, end: End, limit: Duration) {
        let close = match end {
            End::Gone(_) => return,
            End::Violation(violation) => {
                frame::close_payload(violation.close_code(), violation.reason())
            }
            End::Fail {
                close,
                code,
                message,
            } => {
                let error = ServerMessage::error(code, message.clone()).encode();
                if self.send_text(&error, limit).await.is_err() {
                    return;
                }
                frame::close_payload(close, truncate_reason(&message))
            }
        };
        if !matches!(
            timeout(limit, self.writer.write(OpCode::Close, &close)).await,
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
    opcode: OpCode,
    payload: &[u8],
    limit: Duration,
) -> Result<(), End> {
    written(timeout(limit, writer.write(opcode, payload)).await)
}

/// How a write within its time limit ended.
fn written(result: Result<std::io::Result<()>, tokio::time::error::Elapsed>) -> Result<(), End> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(End::Gone("write failed")),
        Err(_) => Err(End::Gone("write timed out")),
    }
}

/// [`write_or_kick`] for several frames at once ([`Writer::write_all`]).
pub(crate) async fn write_all_or_kick(
    writer: &mut Writer,
    opcode: OpCode,
    payloads: &[impl AsRef<[u8]>],
    limit: Duration,
    mailbox: &Mailbox,
) -> Result<(), End> {
    tokio::select! {
        result = timeout(limit, writer.write_all(opcode, payloads)) => written(result),
        _ = mailbox.kicked() => Err(End::Gone("kicked while a write was blocked")),
    }
}

/// A write that gives way to a kick: a client whose writes block is the one a
/// full queue kicks, and waiting out the write timeout would only delay it.
/// A write abandoned halfway leaves no room for a close frame, so the
/// transport is dropped.
pub(crate) async fn write_or_kick(
    writer: &mut Writer,
    opcode: OpCode,
    payload: &[u8],
    limit: Duration,
    mailbox: &Mailbox,
) -> Result<(), End> {
    tokio::select! {
        result = write_frame(writer, opcode, payload, limit) => result,
        _ = mailbox.kicked() => Err(End::Gone("kicked while a write was blocked")),
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

/// Checks a client's close payload; `Err` is the violation to answer with.
fn close_reply(payload: &[u8]) -> Result<(), Violation> {
    match payload.len() {
        0 => Ok(()),
        1 => Err(Violation::CloseOfOneByte),
        126.. => Err(Violation::ControlTooLarge),
        _ => {
            let code = u16::from_be_bytes([payload[0], payload[1]]);
            if !close_code_allowed(code) {
                Err(Violation::InvalidCloseCode)
            } else if std::str::from_utf8(&payload[2..]).is_err() {
                Err(Violation::CloseReasonNotUtf8)
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
    /// A frame of a fragmented message that does not finish it: the message
    /// is still being put together, but the frame counts toward the rate.
    Fragment,
}

/// Whether a client may send `code` in a close frame (RFC 6455 7.4): the
/// defined codes but 1004-1006 and 1015, and the registered and private
/// ranges 3000-4999.
fn close_code_allowed(code: u16) -> bool {
    matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
}

/// Reads frames and reassembles fragmented messages, bounding the whole
/// message (a frame is bounded by the reader).
pub(crate) struct FrameReader {
    reader: Reader,
    /// A fragmented message being reassembled (boxed: rare, and the idle
    /// state should not pay for it).
    partial: Option<Box<(OpCode, Vec<u8>)>>,
}

impl FrameReader {
    pub(crate) fn new(reader: Reader) -> Self {
        Self {
            reader,
            partial: None,
        }
    }

    /// The next message, control frame or unfinished fragment (so that every
    /// frame the client sends is seen, and counted, by the session).
    /// Cancel-safe: a frame is taken whole or not at all, and a partial
    /// message stays here.
    pub(crate) async fn next(&mut self) -> Result<Incoming, End> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    /// [`FrameReader::next`] as a poll, for a session that waits on several
    /// things with no future per connection.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Incoming, End>> {
        let frame = ready!(self.reader.poll_next(cx)).map_err(read_error)?;
        Poll::Ready(self.take(frame))
    }

    /// What one frame makes of the message being put together.
    fn take(&mut self, frame: frame::Frame) -> Result<Incoming, End> {
        match frame.opcode {
            OpCode::Ping => Ok(Incoming::Ping(frame.payload)),
            OpCode::Pong => Ok(Incoming::Pong),
            OpCode::Close => Ok(Incoming::Close(frame.payload)),
            OpCode::Text | OpCode::Binary => {
                if self.partial.is_some() {
                    return Err(End::Violation(Violation::NewMessageInFragmented));
                }
                if frame.fin {
                    return finish_message(frame.opcode, frame.payload);
                }
                self.partial = Some(Box::new((frame.opcode, frame.payload)));
                Ok(Incoming::Fragment)
            }
            OpCode::Continuation => {
                let Some((opcode, buffer)) = self.partial.as_deref_mut() else {
                    return Err(End::Violation(Violation::OrphanContinuation));
                };
                if buffer.len() + frame.payload.len() > self.reader.max_frame() {
                    return Err(End::Violation(Violation::TooLarge));
                }
                buffer.extend_from_slice(&frame.payload);
                if !frame.fin {
                    return Ok(Incoming::Fragment);
                }
                let opcode = *opcode;
                let (_, buffer) = *self.partial.take().expect("checked above");
                finish_message(opcode, buffer)
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
        .map_err(|_| End::Violation(Violation::TextNotUtf8))
}

fn read_error(error: ReadError) -> End {
    match error {
        ReadError::Violation(violation) => End::Violation(violation),
        ReadError::Closed => End::Gone("connection dropped"),
    }
}

#[cfg(test)]
mod tests {
    use super::close_code_allowed;

    #[test]
    fn close_codes_a_client_may_send() {
        for code in [1000, 1001, 1002, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(close_code_allowed(code), "{code}");
        }
        for code in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, u16::MAX] {
            assert!(!close_code_allowed(code), "{code}");
        }
    }
}
