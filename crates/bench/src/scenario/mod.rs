//! The scenarios and what they share: source addresses, tokens, pacing, and
//! opening one connection up to the server's first message.

pub mod channels;
pub mod connect;
pub mod events;
pub mod fanout;
pub mod fleet;
pub mod history;
pub mod marks;
pub mod ping;
pub mod presence;
pub mod send;
pub mod subscribe;
pub mod subscriptions;
pub mod user_limit;

use std::{
    net::{IpAddr, Ipv4Addr, SocketAddr},
    sync::OnceLock,
    time::Duration,
};

use bytes::Bytes;
use tokio::time::Instant;

use crate::client::{ClientKind, Conn, tcp_connect};

/// How long one connection may take from TCP connect to the first message.
pub const OPEN_TIMEOUT: Duration = Duration::from_secs(10);

/// Token lifetime: longer than any scenario.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// What every scenario is told about its clients.
#[derive(Debug, Clone)]
pub struct ClientSetup {
    /// The client implementation.
    pub kind: ClientKind,
    /// The HS256 secret to mint tokens with; `None` sends no token.
    pub jwt_secret: Option<String>,
    /// Local addresses the connections are spread over, round robin.
    pub sources: Vec<IpAddr>,
}

impl ClientSetup {
    /// The request path (`/ws?token=...`) for `user`.
    pub fn path_for(&self, user: &str) -> String {
        match &self.jwt_secret {
            Some(secret) => format!("/ws?token={}", mint_token(secret.as_bytes(), user)),
            None => "/ws".to_owned(),
        }
    }

    /// The source address of the `index`th connection.
    pub fn source(&self, index: usize) -> Option<IpAddr> {
        if self.sources.is_empty() {
            None
        } else {
            Some(self.sources[index % self.sources.len()])
        }
    }
}

/// An HS256 token for `user` (`sub`, `iat`, `exp` an hour later), as
/// `pulse-auth mint` makes them. Minted here rather than through `pulse-auth`
/// so that the load generator builds on its own.
pub fn mint_token(secret: &[u8], user: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let claims = serde_json::json!({
        "sub": user,
        "iat": now,
        "exp": now + TOKEN_TTL.as_secs(),
    });
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .expect("HS256 signing with a shared secret cannot fail")
}

/// `count` consecutive IPv4 addresses from `first` (127.0.0.1, 127.0.0.2, ...),
/// all of which must be in 127.0.0.0/8: the bench sends traffic to and from
/// loopback only.
pub fn loopback_sources(first: Ipv4Addr, count: u32) -> anyhow::Result<Vec<IpAddr>> {
    let start = u32::from(first);
    (0..count)
        .map(|offset| {
            let ip = Ipv4Addr::from(
                start
                    .checked_add(offset)
                    .ok_or_else(|| anyhow::anyhow!("source addresses overflow"))?,
            );
            anyhow::ensure!(
                ip.is_loopback(),
                "source address {ip} is outside 127.0.0.0/8"
            );
            Ok(IpAddr::V4(ip))
        })
        .collect()
}

/// Refuses a server address outside loopback.
pub fn ensure_loopback(server: SocketAddr) -> anyhow::Result<()> {
    anyhow::ensure!(
        server.ip().is_loopback(),
        "{server} is not a loopback address: the bench only targets 127.0.0.0/8 and ::1"
    );
    Ok(())
}

/// When the `index`th event of a schedule at `rate` per second is due.
pub fn due(start: Instant, index: u64, rate: f64) -> Instant {
    start + Duration::from_secs_f64(index as f64 / rate)
}

/// Microseconds since this process's first call: a clock shared by the sender
/// of a message and its receiver, both in this process.
pub fn clock_micros() -> u64 {
    static EPOCH: OnceLock<std::time::Instant> = OnceLock::new();
    let epoch = *EPOCH.get_or_init(std::time::Instant::now);
    u64::try_from(epoch.elapsed().as_micros()).unwrap_or(u64::MAX)
}

/// An open connection and when its first message arrived.
pub struct Opened {
    /// The socket.
    pub conn: Conn,
    /// The server's first message (`connected`, or the echo server's greeting).
    pub first: Bytes,
    /// TCP connect start to the first message.
    pub latency: Duration,
}

/// Opens one connection and waits for the server's first message, which must
/// be `connected` (the echo server greets with a message of that type too).
/// The error is a short reason, for counting failures.
pub async fn open(
    setup: &ClientSetup,
    server: SocketAddr,
    index: usize,
    path: &str,
) -> Result<Opened, String> {
    let started = Instant::now();
    let attempt = async {
        let stream = tcp_connect(server, setup.source(index))
            .await
            .map_err(|error| format!("tcp connect: {}", io_reason(&error)))?;
        let mut conn = Conn::handshake(setup.kind, stream, server, path)
            .await
            .map_err(|error| format!("upgrade: {}", short(&error.to_string())))?;
        let first = match conn.next_text().await {
            Ok(Some(first)) => first,
            Ok(None) => return Err("closed before the first message".to_owned()),
            Err(error) => return Err(format!("read: {}", short(&error.to_string()))),
        };
        Ok((conn, first))
    };
    let (conn, first) = tokio::time::timeout(OPEN_TIMEOUT, attempt)
        .await
        .map_err(|_| "timed out".to_owned())??;
    let latency = started.elapsed();
    if !is_connected(&first) {
        return Err(format!("refused: {}", error_code(&first)));
    }
    Ok(Opened {
        conn,
        first,
        latency,
    })
}

/// Whether a server message is `connected`.
pub fn is_connected(message: &[u8]) -> bool {
    serde_json::from_slice::<serde_json::Value>(message)
        .is_ok_and(|value| value["type"] == "connected")
}

fn error_code(message: &[u8]) -> String {
    serde_json::from_slice::<serde_json::Value>(message)
        .ok()
        .and_then(|value| value["code"].as_str().map(str::to_owned))
        .unwrap_or_else(|| "unexpected first message".to_owned())
}

fn io_reason(error: &std::io::Error) -> String {
    match error.raw_os_error() {
        Some(24) => "too many open files".to_owned(),
        Some(99) => "no free local port".to_owned(),
        _ => error.kind().to_string(),
    }
}

fn short(text: &str) -> String {
    text.chars().take(60).collect()
}

/// The interceptor that puts the API key on every call to `pulse-presence`.
pub(crate) fn bearer(key: &str) -> anyhow::Result<pulse_protocol::api_key::BearerKey> {
    pulse_protocol::api_key::BearerKey::new(key)
        .ok_or_else(|| anyhow::anyhow!("--api-key: not printable ASCII"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_stay_in_loopback() {
        let sources = loopback_sources(Ipv4Addr::new(127, 0, 1, 254), 3).unwrap();
        assert_eq!(
            sources,
            vec![
                IpAddr::from([127, 0, 1, 254]),
                IpAddr::from([127, 0, 1, 255]),
                IpAddr::from([127, 0, 2, 0]),
            ]
        );
        assert!(loopback_sources(Ipv4Addr::new(127, 255, 255, 255), 2).is_err());
        assert!(loopback_sources(Ipv4Addr::new(10, 0, 0, 1), 1).is_err());
        assert!(ensure_loopback("192.168.1.1:80".parse().unwrap()).is_err());
        ensure_loopback("127.0.0.1:80".parse().unwrap()).unwrap();
    }

    #[test]
    fn schedule_is_evenly_spaced() {
        let start = Instant::now();
        assert_eq!(due(start, 0, 1000.0), start);
        assert_eq!(
            due(start, 1500, 1000.0),
            start + Duration::from_millis(1500)
        );
    }

    #[test]
    fn connected_messages_are_recognised() {
        assert!(is_connected(br#"{"type":"connected","user_id":"u"}"#));
        assert!(!is_connected(br#"{"type":"error","code":"bad_signature"}"#));
        assert_eq!(
            error_code(br#"{"type":"error","code":"bad_signature"}"#),
            "bad_signature"
        );
    }

    #[test]
    fn tokens_only_with_a_secret() {
        let mut setup = ClientSetup {
            kind: ClientKind::Fws,
            jwt_secret: None,
            sources: vec![],
        };
        assert_eq!(setup.path_for("u"), "/ws");
        assert_eq!(setup.source(3), None);
        setup.jwt_secret = Some("s".into());
        assert!(setup.path_for("u").starts_with("/ws?token=ey"));
    }
}
