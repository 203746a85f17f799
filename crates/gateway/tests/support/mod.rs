//! Test support: a gateway on 127.0.0.1:0 and a WebSocket client that speaks to it over TCP.

#![allow(dead_code, unreachable_pub)]

pub mod recovery;

use std::{net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use pulse_auth::{Authenticator, Validator, ValidatorSettings};
use pulse_gateway::{DrainReport, Settings};
use pulse_presence::Presence;
use serde_json::{Value, value::RawValue};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::oneshot,
    task::JoinHandle,
};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream, connect_async_with_config,
    tungstenite::{Message, protocol::CloseFrame},
};

pub const SECRET: &[u8] = b"test-secret";

pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

pub struct Gateway {
    pub addr: SocketAddr,
    pub presence: Presence,
    shutdown: Option<oneshot::Sender<()>>,
    task: Option<JoinHandle<Result<DrainReport, std::io::Error>>>,
}

impl Gateway {
    pub async fn start(settings: Settings) -> Self {
        Self::start_with(settings, Presence::in_memory()).await
    }

    pub async fn start_with(settings: Settings, presence: Presence) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let validator = Validator::new(ValidatorSettings {
            leeway: Duration::from_secs(0),
            ..ValidatorSettings::with_secret(SECRET)
        })
        .unwrap();
        let (tx, rx) = oneshot::channel();
        let task = tokio::spawn(pulse_gateway::run(
            settings,
            Authenticator::Local(validator),
            presence.clone(),
            listener,
            async move {
                let _ = rx.await;
            },
        ));
        Self {
            addr,
            presence,
            shutdown: Some(tx),
            task: Some(task),
        }
    }

    pub fn url(&self, query: &str) -> String {
        format!("ws://{}/ws{query}", self.addr)
    }

    /// A client over a socket without Nagle's algorithm, as browsers open
    /// them: two messages sent back to back leave at once, rather than the
    /// second waiting for the first's (delayed) ACK. Tests on paused time
    /// need that: while a message sits in the client's kernel buffer the
    /// runtime looks idle and the clock jumps ahead.
    pub async fn connect(&self, query: &str) -> Client {
        connect_async_with_config(self.url(query), None, true)
            .await
            .expect("websocket handshake")
            .0
    }

    /// Signals shutdown and waits for the gateway to finish draining.
    pub async fn stop(mut self) -> DrainReport {
        self.shutdown.take().unwrap().send(()).ok();
        self.task.take().unwrap().await.unwrap().unwrap()
    }
}

pub fn settings() -> Settings {
    let mut settings = Settings::new("test-instance");
    // Shutdown spreads closes over this window; keep the tests' drains short.
    settings.drain_spread = Duration::from_millis(200);
    settings
}

pub fn token(user: &str) -> String {
    pulse_auth::mint_token(SECRET, user, Duration::from_secs(3600))
}

/// The next text message as it came, skipping pings; panics on anything else.
pub async fn next_text(client: &mut Client) -> String {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("no message within 10 s")
        {
            Some(Ok(Message::Text(text))) => return text.to_string(),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            other => panic!("expected a text message, got {other:?}"),
        }
    }
}

/// The next text message as JSON, skipping pings; panics on anything else.
pub async fn next_json(client: &mut Client) -> Value {
    serde_json::from_str(&next_text(client).await).unwrap()
}

/// Reads until the close frame and returns it; panics if the socket ends without one.
pub async fn close_frame(client: &mut Client) -> CloseFrame {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("no close within 10 s")
        {
            Some(Ok(Message::Close(Some(frame)))) => {
                // Let tungstenite send its queued close reply, as a browser would at once.
                let _ = client.flush().await;
                return frame;
            }
            Some(Ok(Message::Close(None))) => panic!("close frame without a code"),
            Some(Ok(_)) => continue,
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    }
}

/// Expects an `error` message with `code`, then a close frame with `close_code`.
pub async fn expect_error_then_close(client: &mut Client, code: &str, close_code: u16) {
    let error = next_json(client).await;
    assert_eq!(error["type"], "error", "{error}");
    assert_eq!(error["code"], code, "{error}");
    assert_eq!(u16::from(close_frame(client).await.code), close_code);
}

pub async fn send_json(client: &mut Client, value: Value) {
    client.send(Message::text(value.to_string())).await.unwrap();
}

/// Polls `condition` until it holds, for at most 10 s.
pub async fn eventually<F, Fut>(what: &str, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A minimal HTTP/1.1 GET (a probe, a metrics scrape): the status and the
/// whole response, head and body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream
        .write_all(
            format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    read_response(&mut stream).await
}

/// Reads a response to the end (within 20 s): the status and the whole
/// response, head and body.
pub async fn read_response(stream: &mut TcpStream) -> (u16, String) {
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut response))
        .await
        .expect("an answer within 20 s")
        .unwrap();
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    (status, response)
}

// Channels: the requests every channel test makes.

pub fn data(value: &Value) -> Box<RawValue> {
    RawValue::from_string(value.to_string()).unwrap()
}

pub fn token_with(user: &str, claims: Value) -> String {
    let Value::Object(extra) = claims else {
        panic!("claims are an object")
    };
    pulse_auth::mint_token_with_claims(SECRET, user, Duration::from_secs(3600), extra)
}

/// Connects as `user` and reads `connected`.
pub async fn live(gateway: &Gateway, token: &str) -> Client {
    let mut client = gateway.connect(&format!("?token={token}")).await;
    assert_eq!(next_json(&mut client).await["type"], "connected");
    client
}

/// Sends a request and returns its answer (the next text frame).
pub async fn request(client: &mut Client, request: Value) -> Value {
    send_json(client, request).await;
    next_json(client).await
}

pub async fn subscribe(client: &mut Client, id: u64, channel: &str) -> Value {
    request(
        client,
        serde_json::json!({"type": "subscribe", "id": id, "channel": channel}),
    )
    .await
}

/// The socket is still usable: a ping comes back.
pub async fn still_open(client: &mut Client) {
    assert_eq!(
        request(
            client,
            serde_json::json!({"type": "ping", "id": "still-open"})
        )
        .await,
        serde_json::json!({"type": "pong", "id": "still-open"})
    );
}

/// What Redis at `url` reports of a connection blocked in `BLPOP` (as
/// `Presence::hold_shared_connection` blocks the store's shared one): `None`
/// while there is none, else the bytes of commands waiting behind it in its
/// query buffer (sent by the client, read by Redis, not yet run).
pub async fn queued_behind_hold(url: &str) -> Option<usize> {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let list: String = redis::cmd("CLIENT")
        .arg("LIST")
        .query_async(&mut connection)
        .await
        .unwrap();
    list.lines()
        .find(|line| line.split(' ').any(|field| field == "cmd=blpop"))
        .and_then(|line| {
            line.split(' ')
                .find_map(|field| field.strip_prefix("qbuf="))
                .and_then(|bytes| bytes.parse().ok())
        })
}
