//! WebSocket clients, as a browser or an app connects: a dev token, the
//! handshake, and the next JSON message.

use std::{net::SocketAddr, time::Duration};

use futures_util::StreamExt;
use serde_json::Value;
use tokio::net::TcpStream;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream, tungstenite::Message};

use crate::SECRET;

/// A WebSocket client connection.
pub type Client = WebSocketStream<MaybeTlsStream<TcpStream>>;

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
