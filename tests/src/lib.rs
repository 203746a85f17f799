//! Support for Pulse's whole-system tests: start the real binaries on
//! `127.0.0.1:0`, read back the ports they bound, and talk to them as clients do.
//!
//! The binaries must be built first (`cargo build --workspace --bins`, which
//! `scripts/test.sh` does).

#![forbid(unsafe_code)]

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{ExitStatus, Stdio},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::{
    io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader},
    net::TcpStream,
    process::{Child, Command},
    sync::oneshot,
};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

pub use pulse_presence::testing::{RedisServer, unique_namespace};

/// The shared secret the tests sign tokens with.
pub const SECRET: &str = "e2e-test-secret";

/// The API key [`Service::presence`] accepts, with every permission.
pub const API_KEY: &str = "e2e-test-api-key-0123456789";

/// A `pulse.presence.v1.Presence` client that presents [`API_KEY`].
pub type Grpc = pulse_protocol::proto::presence::v1::presence_client::PresenceClient<
    tonic::service::interceptor::InterceptedService<
        tonic::transport::Channel,
        pulse_protocol::api_key::BearerKey,
    >,
>;

/// Connects a [`Grpc`] client to `url` (`http://host:port`); panics when it cannot.
pub async fn presence_client(url: String) -> Grpc {
    let channel = tonic::transport::Channel::from_shared(url)
        .expect("a valid URL")
        .connect()
        .await
        .expect("pulse-presence accepts connections");
    pulse_protocol::proto::presence::v1::presence_client::PresenceClient::with_interceptor(
        channel,
        pulse_protocol::api_key::BearerKey::new(API_KEY).expect("an ASCII key"),
    )
}

/// A WebSocket client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// The path of a workspace binary, next to the test executable's `deps/` folder.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("test executables live in target/<profile>/deps");
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (scripts/test.sh does)",
        path.display()
    );
    path
}

/// A running Pulse binary. Killed when dropped.
pub struct Service {
    child: Child,
    /// The address it bound, read back from its `listening` log line.
    pub addr: SocketAddr,
    logs: Arc<Mutex<Vec<String>>>,
}

impl Service {
    /// Starts `binary` with `args` and a clean environment (nothing leaks in
    /// from the test's own, such as `REDIS_URL`), with JSON logs, and waits for
    /// its `listening` line.
    pub async fn start(binary_name: &str, args: &[&str]) -> Self {
        let mut child = Command::new(binary(binary_name))
            .args(args)
            .env_clear()
            .env("LOG_FORMAT", "json")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|error| panic!("starting {binary_name}: {error}"));
        let logs = Arc::new(Mutex::new(Vec::new()));
        let (addr_tx, addr_rx) = oneshot::channel();
        let mut addr_tx = Some(addr_tx);
        let stdout = child.stdout.take().expect("piped stdout");
        let stderr = child.stderr.take().expect("piped stderr");
        let sink = logs.clone();
        let echo = std::env::var_os("PULSE_E2E_LOGS").is_some();
        let name = binary_name.to_owned();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if echo {
                    eprintln!("[{name}] {line}");
                }
                if let Some(addr) = listening_addr(&line)
                    && let Some(tx) = addr_tx.take()
                {
                    let _ = tx.send(addr);
                }
                sink.lock().unwrap().push(line);
            }
        });
        let sink = logs.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let addr = match tokio::time::timeout(Duration::from_secs(30), addr_rx).await {
            Ok(Ok(addr)) => addr,
            _ => panic!(
                "{binary_name} did not report a listening address; its output:\n{}",
                logs.lock().unwrap().join("\n")
            ),
        };
        Self { child, addr, logs }
    }

    /// `pulse-auth` on loopback ports (gRPC and metrics), with [`SECRET`].
    pub async fn auth() -> Self {
        Self::start(
            "pulse-auth",
            &[
                "--listen",
                "127.0.0.1:0",
                "--metrics-listen",
                "127.0.0.1:0",
                "--jwt-secret",
                SECRET,
            ],
        )
        .await
    }

    /// `pulse-presence` on loopback ports (gRPC and metrics) for a Redis and
    /// namespace, taking [`API_KEY`], with `extra` flags.
    pub async fn presence(redis_url: &str, namespace: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--metrics-listen",
            "127.0.0.1:0",
            "--redis-url",
            redis_url,
            "--redis-namespace",
            namespace,
            "--api-key",
            API_KEY,
            "--http-listen",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        Self::start("pulse-presence", &args).await
    }

    /// The address of `pulse-presence`'s HTTP API, read back from its
    /// `serving the HTTP API` log line (logged just after `listening`).
    pub async fn http_addr(&self) -> SocketAddr {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let found = self.logs.lock().unwrap().iter().find_map(|line| {
                let value: Value = serde_json::from_str(line).ok()?;
                if value.get("message")?.as_str()? != "serving the HTTP API" {
                    return None;
                }
                value.get("http_addr")?.as_str()?.parse().ok()
            });
            if let Some(addr) = found {
                return addr;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "pulse-presence did not log its HTTP API address"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `pulse-gateway` on a loopback port with in-process auth ([`SECRET`]) and
    /// Redis presence in `namespace`, with `extra` flags.
    pub async fn gateway(redis_url: &str, namespace: &str, extra: &[&str]) -> Self {
        let mut args = vec![
            "--listen",
            "127.0.0.1:0",
            "--jwt-secret",
            SECRET,
            "--redis-url",
            redis_url,
            "--redis-namespace",
            namespace,
        ];
        args.extend_from_slice(extra);
        Self::start("pulse-gateway", &args).await
    }

    /// Every line the process printed so far.
    pub fn logs(&self) -> Vec<String> {
        self.logs.lock().unwrap().clone()
    }

    /// The string `field` of the first log line whose message contains `message`.
    pub fn log_field(&self, message: &str, field: &str) -> Option<String> {
        self.logs().iter().find_map(|line| {
            let value: Value = serde_json::from_str(line).ok()?;
            if !value.get("message")?.as_str()?.contains(message) {
                return None;
            }
            Some(value.get(field)?.as_str()?.to_owned())
        })
    }

    /// `http://addr`, for gRPC clients.
    pub fn grpc_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// SIGKILL: the process dies without saying goodbye.
    pub async fn kill(&mut self) {
        self.child.kill().await.expect("kill");
    }

    /// SIGTERM, then waits for the process to exit.
    pub async fn terminate(&mut self) -> ExitStatus {
        self.sigterm().await;
        self.wait_exit().await
    }

    /// Sends SIGTERM (a graceful shutdown begins) and returns at once.
    pub async fn sigterm(&self) {
        let pid = self.child.id().expect("process is running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill -TERM");
        assert!(status.success());
    }

    /// Waits (at most 30 s) for the process to exit, after [`Service::sigterm`].
    pub async fn wait_exit(&mut self) -> ExitStatus {
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("process exits within 30 s of SIGTERM")
            .expect("wait")
    }
}

fn listening_addr(line: &str) -> Option<SocketAddr> {
    let value: Value = serde_json::from_str(line).ok()?;
    let message = value.get("message")?.as_str()?;
    if !message.contains("listening") {
        return None;
    }
    value.get("addr")?.as_str()?.parse().ok()
}

/// A dev token for `user`, valid for an hour, signed with [`SECRET`].
pub fn token(user: &str) -> String {
    pulse_auth::mint_token(SECRET.as_bytes(), user, Duration::from_secs(3600))
}

/// Opens a WebSocket to `addr` at `/ws` with `query`.
pub async fn connect(addr: SocketAddr, query: &str) -> Client {
    tokio_tungstenite::connect_async(format!("ws://{addr}/ws{query}"))
        .await
        .expect("websocket handshake")
        .0
}

/// The next text message as JSON, skipping pings and pongs.
pub async fn next_json(client: &mut Client) -> Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("no message within 10 s")
        {
            Some(Ok(Message::Text(text))) => return serde_json::from_str(&text).unwrap(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// A minimal HTTP/1.1 POST with a JSON body; returns the status and the body.
pub async fn post_json(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    post(addr, path, "", body).await
}

/// [`post_json`] to `pulse-presence`'s HTTP API, with [`API_KEY`].
pub async fn post_api(addr: SocketAddr, path: &str, body: &str) -> (u16, String) {
    post(
        addr,
        path,
        &format!("Authorization: Bearer {API_KEY}\r\n"),
        body,
    )
    .await
}

async fn post(addr: SocketAddr, path: &str, headers: &str, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .expect("an HTTP status line");
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.to_owned())
        .unwrap_or_default();
    (status, body)
}

/// Polls `condition` until it holds, for at most `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Service {
    /// The process id, to read `/proc/<pid>/status` (memory) in tests.
    pub fn pid(&self) -> u32 {
        self.child.id().expect("process is running")
    }
}

/// A field of `/proc/<pid>/status` in KiB (`VmRSS`, `VmHWM`: resident memory now and at its peak).
pub fn proc_status_kib(pid: u32, field: &str) -> u64 {
    let status =
        std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc/<pid>/status");
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"))
}

/// WebSocket and HTTP over a bare TCP stream, for the junk a client library
/// refuses to send: hand-made frames, partial requests, garbage bytes.
pub mod raw {
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
}

/// `Presence/GetUser` for `user_id`, over gRPC; panics on an error status.
pub async fn get_user(
    presence: &mut Grpc,
    user_id: &str,
) -> pulse_protocol::proto::presence::v1::UserPresence {
    presence
        .get_user(pulse_protocol::proto::presence::v1::GetUserRequest {
            user_id: user_id.into(),
        })
        .await
        .unwrap()
        .into_inner()
}
