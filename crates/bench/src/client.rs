//! The WebSocket client side of the load generator, in three interchangeable
//! implementations so that the lightest can be measured and chosen.
//!
//! - [`ClientKind::Fws`]: the HTTP upgrade written and read by hand over the
//!   `TcpStream`, then fastwebsockets framing straight on the socket: no hyper,
//!   no extra task, no boxed `Upgraded`. The default.
//! - [`ClientKind::FwsHyper`]: `fastwebsockets::handshake::client`, which runs
//!   the upgrade through hyper's client (one spawned connection task per socket
//!   during the handshake) and frames over hyper's `Upgraded`.
//! - [`ClientKind::Tungstenite`]: `tokio-tungstenite` with small buffers.
//!
//! None of them verifies `Sec-WebSocket-Accept` beyond what its library does:
//! the server is ours, on loopback.

use std::{
    future::Future,
    io,
    net::{IpAddr, SocketAddr},
    pin::Pin,
    task::{Context, Poll},
};

use anyhow::{Context as _, bail};
use bytes::{Buf, Bytes, BytesMut};
use fastwebsockets::{Frame, OpCode, Payload, Role, WebSocket};
use futures_util::{SinkExt, StreamExt};
use http_body_util::Empty;
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf},
    net::{TcpSocket, TcpStream},
};
use tokio_tungstenite::{
    WebSocketStream,
    tungstenite::{Message, protocol::WebSocketConfig},
};

/// Which WebSocket client implementation to use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ClientKind {
    /// Hand-written upgrade, then fastwebsockets on the raw `TcpStream`.
    Fws,
    /// `fastwebsockets::handshake::client` through hyper.
    FwsHyper,
    /// `tokio-tungstenite`.
    Tungstenite,
}

impl ClientKind {
    /// The name used on the command line and in results.
    pub fn name(self) -> &'static str {
        match self {
            Self::Fws => "fws",
            Self::FwsHyper => "fws-hyper",
            Self::Tungstenite => "tungstenite",
        }
    }
}

/// One open client WebSocket.
pub enum Conn {
    /// See [`ClientKind::Fws`].
    Fws(Box<WebSocket<Prefixed>>),
    /// See [`ClientKind::FwsHyper`].
    FwsHyper(Box<WebSocket<TokioIo<Upgraded>>>),
    /// See [`ClientKind::Tungstenite`].
    Tungstenite(Box<WebSocketStream<TcpStream>>),
}

/// Opens a TCP connection to `server`, from `source` when given (port chosen
/// by the kernel), with `TCP_NODELAY`.
pub async fn tcp_connect(server: SocketAddr, source: Option<IpAddr>) -> io::Result<TcpStream> {
    let socket = if server.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(source) = source {
        // Lets a source port whose previous connection is in TIME_WAIT be
        // reused, so back-to-back runs do not run out of ports.
        socket.set_reuseaddr(true)?;
        socket.bind(SocketAddr::new(source, 0))?;
    }
    let stream = socket.connect(server).await?;
    stream.set_nodelay(true)?;
    Ok(stream)
}

impl Conn {
    /// Performs the WebSocket upgrade for `path` (with its query) over `stream`.
    pub async fn handshake(
        kind: ClientKind,
        stream: TcpStream,
        server: SocketAddr,
        path: &str,
    ) -> anyhow::Result<Self> {
        match kind {
            ClientKind::Fws => Ok(Self::Fws(Box::new(
                raw_handshake(stream, server, path).await?,
            ))),
            ClientKind::FwsHyper => {
                let request = http::Request::builder()
                    .method("GET")
                    .uri(path)
                    .header("Host", server.to_string())
                    .header("Upgrade", "websocket")
                    .header("Connection", "upgrade")
                    .header(
                        "Sec-WebSocket-Key",
                        fastwebsockets::handshake::generate_key(),
                    )
                    .header("Sec-WebSocket-Version", "13")
                    .body(Empty::<Bytes>::new())?;
                let (ws, _) =
                    fastwebsockets::handshake::client(&SpawnExecutor, request, stream).await?;
                Ok(Self::FwsHyper(Box::new(ws)))
            }
            ClientKind::Tungstenite => {
                let config = WebSocketConfig::default()
                    .read_buffer_size(4096)
                    .write_buffer_size(0);
                let (ws, _) = tokio_tungstenite::client_async_with_config(
                    format!("ws://{server}{path}"),
                    stream,
                    Some(config),
                )
                .await?;
                Ok(Self::Tungstenite(Box::new(ws)))
            }
        }
    }

    /// The next text message; `None` once the server closed or the socket ended.
    /// Pings are answered along the way.
    pub async fn next_text(&mut self) -> anyhow::Result<Option<Bytes>> {
        match self {
            Self::Fws(ws) => fws_next_text(ws).await,
            Self::FwsHyper(ws) => fws_next_text(ws).await,
            Self::Tungstenite(ws) => loop {
                match ws.next().await {
                    None | Some(Ok(Message::Close(_))) => return Ok(None),
                    Some(Ok(Message::Text(text))) => return Ok(Some(Bytes::from(text))),
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(error.into()),
                }
            },
        }
    }

    /// Reads until the server's close frame and returns its code; `None`
    /// when the socket ended without one (or with one that carries no code).
    /// Text and other frames before it are skipped.
    pub async fn close_code(&mut self) -> anyhow::Result<Option<u16>> {
        match self {
            Self::Fws(ws) => fws_close_code(ws).await,
            Self::FwsHyper(ws) => fws_close_code(ws).await,
            Self::Tungstenite(ws) => loop {
                match ws.next().await {
                    None => return Ok(None),
                    Some(Ok(Message::Close(frame))) => {
                        return Ok(frame.map(|frame| u16::from(frame.code)));
                    }
                    Some(Ok(_)) => continue,
                    Some(Err(error)) => return Err(error.into()),
                }
            },
        }
    }

    /// Sends one text message.
    pub async fn send_text(&mut self, text: &str) -> anyhow::Result<()> {
        match self {
            Self::Fws(ws) => ws
                .write_frame(Frame::text(Payload::Borrowed(text.as_bytes())))
                .await
                .map_err(Into::into),
            Self::FwsHyper(ws) => ws
                .write_frame(Frame::text(Payload::Borrowed(text.as_bytes())))
                .await
                .map_err(Into::into),
            Self::Tungstenite(ws) => ws.send(Message::text(text)).await.map_err(Into::into),
        }
    }
}

async fn fws_next_text<S>(ws: &mut WebSocket<S>) -> anyhow::Result<Option<Bytes>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fws_read_until(ws, |opcode, payload| match opcode {
        OpCode::Text => Some(Some(Bytes::copy_from_slice(payload))),
        OpCode::Close => Some(None),
        _ => None,
    })
    .await
}

async fn fws_close_code<S>(ws: &mut WebSocket<S>) -> anyhow::Result<Option<u16>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    fws_read_until(ws, |opcode, payload| {
        (opcode == OpCode::Close).then(|| {
            payload
                .get(..2)
                .map(|code| u16::from_be_bytes([code[0], code[1]]))
        })
    })
    .await
}

/// Reads frames until `pick` makes an answer of one (by its opcode and
/// payload); `None` when the connection closed first.
async fn fws_read_until<S, T>(
    ws: &mut WebSocket<S>,
    mut pick: impl FnMut(OpCode, &[u8]) -> Option<Option<T>>,
) -> anyhow::Result<Option<T>>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        let frame = match ws.read_frame().await {
            Ok(frame) => frame,
            Err(fastwebsockets::WebSocketError::ConnectionClosed) => return Ok(None),
            Err(error) => return Err(error.into()),
        };
        if let Some(answer) = pick(frame.opcode, &frame.payload) {
            return Ok(answer);
        }
    }
}

/// Writes the upgrade request, reads the response head, and keeps whatever
/// followed it (the server's first frame often arrives in the same segment).
async fn raw_handshake(
    mut stream: TcpStream,
    server: SocketAddr,
    path: &str,
) -> anyhow::Result<WebSocket<Prefixed>> {
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {server}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: {}\r\nSec-WebSocket-Version: 13\r\n\r\n",
        fastwebsockets::handshake::generate_key()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buffer = BytesMut::with_capacity(512);
    let head_end = loop {
        if stream.read_buf(&mut buffer).await? == 0 {
            bail!("connection closed during the upgrade");
        }
        if let Some(end) = head_end(&buffer) {
            break end;
        }
        if buffer.len() > 8192 {
            bail!("upgrade response head larger than 8 KiB");
        }
    };
    let status = status_code(&buffer[..head_end]).context("malformed upgrade response")?;
    if status != 101 {
        bail!("upgrade refused with HTTP {status}");
    }
    buffer.advance(head_end);
    let stream = Prefixed {
        prefix: buffer.freeze(),
        stream,
    };
    Ok(WebSocket::after_handshake(stream, Role::Client))
}

/// The length of an HTTP response head, blank line included, once complete.
pub fn head_end(buffer: &[u8]) -> Option<usize> {
    buffer
        .windows(4)
        .position(|window| window == b"\r\n\r\n")
        .map(|at| at + 4)
}

/// The status code of an HTTP/1.1 response head.
pub fn status_code(head: &[u8]) -> Option<u16> {
    let line = head.split(|&byte| byte == b'\r').next()?;
    let mut parts = line.split(|&byte| byte == b' ');
    let version = parts.next()?;
    if !version.starts_with(b"HTTP/1.") {
        return None;
    }
    std::str::from_utf8(parts.next()?).ok()?.parse().ok()
}

/// A `TcpStream` that first yields bytes already read past the upgrade response.
pub struct Prefixed {
    prefix: Bytes,
    stream: TcpStream,
}

impl AsyncRead for Prefixed {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if !self.prefix.is_empty() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for Prefixed {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Runs hyper's client connection tasks on tokio.
struct SpawnExecutor;

impl<Fut> hyper::rt::Executor<Fut> for SpawnExecutor
where
    Fut: Future + Send + 'static,
    Fut::Output: Send + 'static,
{
    fn execute(&self, future: Fut) {
        tokio::spawn(future);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn response_head_and_status() {
        let response = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n\x81\x02hi";
        let end = head_end(response).unwrap();
        assert_eq!(&response[end..], b"\x81\x02hi");
        assert_eq!(status_code(&response[..end]), Some(101));
        assert_eq!(head_end(b"HTTP/1.1 101 Switching\r\n"), None);
        assert_eq!(status_code(b"HTTP/1.1 404 Not Found\r\n\r\n"), Some(404));
        assert_eq!(status_code(b"garbage"), None);
    }
}
