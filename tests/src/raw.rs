//! WebSocket and HTTP over a bare TCP stream, for the junk a client library
//! refuses to send: hand-made frames, partial requests, garbage bytes.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    time::timeout,
};

/// How long any one read waits for the server.
pub const READ_LIMIT: Duration = Duration::from_secs(10);

pub const CONTINUATION: u8 = 0x0;
pub const TEXT: u8 = 0x1;
pub const BINARY: u8 = 0x2;
pub const CLOSE: u8 = 0x8;
pub const PING: u8 = 0x9;
pub const PONG: u8 = 0xA;
/// The FIN bit of a frame's first byte.
pub const FIN: u8 = 0x80;

/// The mask every client frame here uses.
const MASK: [u8; 4] = [0x37, 0xfa, 0x21, 0x3d];

/// How a frame states its payload length.
#[derive(Debug, Clone, Copy)]
pub enum Length {
    /// The shortest encoding, as the RFC requires.
    Minimal,
    /// The 16-bit form (126), whatever the length.
    Extended16,
    /// The 64-bit form (127) with this value, whatever the payload sent.
    Declared64(u64),
}

/// A masked client frame: `first` is FIN, RSV and opcode bits.
pub fn frame(first: u8, payload: &[u8]) -> Vec<u8> {
    frame_with(first, Some(MASK), payload, Length::Minimal)
}

/// A client frame with every part chosen.
pub fn frame_with(first: u8, mask: Option<[u8; 4]>, payload: &[u8], length: Length) -> Vec<u8> {
    let mask_bit = if mask.is_some() { 0x80 } else { 0 };
    let mut bytes = vec![first];
    match length {
        Length::Minimal if payload.len() < 126 => bytes.push(mask_bit | payload.len() as u8),
        Length::Minimal | Length::Extended16 if payload.len() <= usize::from(u16::MAX) => {
            bytes.push(mask_bit | 126);
            bytes.extend_from_slice(&(payload.len() as u16).to_be_bytes());
        }
        Length::Minimal | Length::Extended16 => {
            bytes.push(mask_bit | 127);
            bytes.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        }
        Length::Declared64(declared) => {
            bytes.push(mask_bit | 127);
            bytes.extend_from_slice(&declared.to_be_bytes());
        }
    }
    match mask {
        Some(mask) => {
            bytes.extend_from_slice(&mask);
            bytes.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        }
        None => bytes.extend_from_slice(payload),
    }
    bytes
}

/// A close frame's payload: the code, then the reason.
pub fn close_payload(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    payload
}

/// A frame from the server.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerFrame {
    pub fin: bool,
    pub opcode: u8,
    pub payload: Vec<u8>,
}

impl ServerFrame {
    /// The code of a close frame (1005, "no status", for an empty one).
    pub fn close_code(&self) -> u16 {
        assert_eq!(self.opcode, CLOSE, "not a close frame: {self:?}");
        match self.payload.get(..2) {
            Some(code) => u16::from_be_bytes([code[0], code[1]]),
            None => 1005,
        }
    }
}

/// How the server closed: the close frame's code, and the code of the
/// `error` message sent before it, if any.
#[derive(Debug, Clone, PartialEq)]
pub struct Closed {
    pub code: u16,
    pub error: Option<String>,
}

/// A TCP connection that speaks WebSocket by hand.
pub struct RawSocket {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl RawSocket {
    /// Connects and completes a WebSocket handshake at `target` (a path
    /// and query); panics unless the answer is 101.
    pub async fn upgrade(addr: SocketAddr, target: &str) -> Self {
        let mut socket = Self::connect(addr).await;
        socket.handshake(addr, target).await;
        socket
    }

    /// Completes a WebSocket handshake on this connection; panics unless 101.
    pub async fn handshake(&mut self, addr: SocketAddr, target: &str) {
        self.send(upgrade_request(addr, target, "13").as_bytes())
            .await;
        let (status, _) = self
            .response_head()
            .await
            .expect("a response to the upgrade");
        let shown: String = target.chars().take(80).collect();
        assert_eq!(status, 101, "upgrade at {shown}");
    }

    /// Connects a bare TCP stream.
    pub async fn connect(addr: SocketAddr) -> Self {
        Self::from_stream(TcpStream::connect(addr).await.expect("connect"))
    }

    /// Wraps an already-connected stream.
    pub fn from_stream(stream: TcpStream) -> Self {
        Self {
            stream,
            buffer: Vec::new(),
        }
    }

    /// Writes bytes as they are. A write the server refused (it closed
    /// first) is not an error here: what it answered is read next.
    pub async fn send(&mut self, bytes: &[u8]) {
        let _ = self.stream.write_all(bytes).await;
    }

    /// Reads more bytes into the buffer; false at EOF or a reset.
    async fn fill(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        match timeout(READ_LIMIT, self.stream.read(&mut chunk)).await {
            Ok(Ok(0) | Err(_)) => false,
            Ok(Ok(n)) => {
                self.buffer.extend_from_slice(&chunk[..n]);
                true
            }
            Err(_) => panic!("the server neither answered nor closed within {READ_LIMIT:?}"),
        }
    }

    /// Reads an HTTP response head: the status and the head's text.
    /// `None` when the server closed without answering.
    pub async fn response_head(&mut self) -> Option<(u16, String)> {
        loop {
            if let Some(end) = self.buffer.windows(4).position(|w| w == b"\r\n\r\n") {
                let head: Vec<u8> = self.buffer.drain(..end + 4).collect();
                let head = String::from_utf8_lossy(&head).into_owned();
                let status = head
                    .split(' ')
                    .nth(1)
                    .and_then(|code| code.parse().ok())
                    .unwrap_or_else(|| panic!("not an HTTP response: {head:?}"));
                return Some((status, head));
            }
            if !self.fill().await {
                assert!(
                    self.buffer.is_empty(),
                    "the server closed mid-response: {:?}",
                    String::from_utf8_lossy(&self.buffer)
                );
                return None;
            }
        }
    }

    /// The next frame from the server; `None` at EOF.
    pub async fn read_frame(&mut self) -> Option<ServerFrame> {
        loop {
            if let Some((frame, used)) = parse_server_frame(&self.buffer) {
                self.buffer.drain(..used);
                return Some(frame);
            }
            if !self.fill().await {
                return None;
            }
        }
    }

    /// Reads past data, pings and pongs to the close frame; returns its
    /// code and the `error` message's code, if one came before it.
    /// Panics if the transport ends without a close frame.
    pub async fn expect_close(&mut self) -> Closed {
        let mut error = None;
        loop {
            let frame = self
                .read_frame()
                .await
                .expect("a close frame before the transport ended");
            match frame.opcode {
                CLOSE => {
                    return Closed {
                        code: frame.close_code(),
                        error,
                    };
                }
                TEXT => {
                    let message: serde_json::Value =
                        serde_json::from_slice(&frame.payload).expect("JSON text");
                    if message["type"] == "error" {
                        error = message["code"].as_str().map(str::to_owned);
                    }
                }
                _ => {}
            }
        }
    }

    /// Reads to the end: the close frame, if one came before the
    /// transport ended (a reset counts as an end).
    pub async fn close_or_eof(&mut self) -> Option<Closed> {
        let mut error = None;
        while let Some(frame) = self.read_frame().await {
            match frame.opcode {
                CLOSE => {
                    return Some(Closed {
                        code: frame.close_code(),
                        error,
                    });
                }
                TEXT if frame.payload.starts_with(br#"{"type":"error""#) => {
                    let message: serde_json::Value =
                        serde_json::from_slice(&frame.payload).expect("JSON text");
                    error = message["code"].as_str().map(str::to_owned);
                }
                _ => {}
            }
        }
        None
    }

    /// The server ends the transport: EOF (or a reset) within the read limit.
    pub async fn expect_eof(&mut self) {
        self.buffer.clear();
        while self.fill().await {
            self.buffer.clear();
        }
    }
}

/// A WebSocket upgrade request for `target` with this `Sec-WebSocket-Version`.
pub fn upgrade_request(addr: SocketAddr, target: &str, version: &str) -> String {
    format!(
        "GET {target} HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: {version}\r\n\r\n"
    )
}

/// One server frame from the front of `bytes`, and how many bytes it took.
fn parse_server_frame(bytes: &[u8]) -> Option<(ServerFrame, usize)> {
    let [first, second, ..] = *bytes else {
        return None;
    };
    assert_eq!(second & 0x80, 0, "the server masked a frame");
    let (len, header) = match second & 0x7f {
        126 => (
            u64::from(u16::from_be_bytes(bytes.get(2..4)?.try_into().ok()?)),
            4,
        ),
        127 => (u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?), 10),
        len => (u64::from(len), 2),
    };
    let end = header + usize::try_from(len).ok()?;
    let payload = bytes.get(header..end)?.to_vec();
    let frame = ServerFrame {
        fin: first & FIN != 0,
        opcode: first & 0x0f,
        payload,
    };
    Some((frame, end))
}

/// Deterministic junk: `len` bytes from a xorshift generator seeded with `seed`.
pub fn junk(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}
