//! Minimal HTTP/1.1 requests over a bare TCP stream: the gateway's login,
//! `pulse-presence`'s HTTP API and the metrics endpoints.

use std::net::SocketAddr;

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};

use crate::API_KEY;

/// A minimal HTTP/1.1 GET (a metrics scrape); returns the status and the body.
pub async fn get(addr: SocketAddr, path: &str) -> (u16, String) {
    exchange(
        addr,
        format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"),
    )
    .await
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

/// [`post_json`] to `pulse-presence`'s HTTP API with `key`, or without an
/// `Authorization` header.
pub async fn post_api_as(
    addr: SocketAddr,
    path: &str,
    key: Option<&str>,
    body: &str,
) -> (u16, String) {
    let header = key.map_or(String::new(), |key| {
        format!("Authorization: Bearer {key}\r\n")
    });
    post(addr, path, &header, body).await
}

async fn post(addr: SocketAddr, path: &str, headers: &str, body: &str) -> (u16, String) {
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{headers}Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    exchange(addr, request).await
}

/// Writes `request` on a new connection and reads the response to the end
/// (every request here says `Connection: close`): the status and the body.
async fn exchange(addr: SocketAddr, request: String) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
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
