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
        let pid = self.child.id().expect("process is running");
        let status = Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .await
            .expect("kill -TERM");
        assert!(status.success());
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
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
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
