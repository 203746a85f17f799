//! `pulse-echo`: the floor. A bare hyper 1 + fastwebsockets server that
//! upgrades `/ws`, greets, and echoes every data frame, with nothing of
//! Pulse's: no auth, no presence, no heartbeats, no split socket, no queues.
//!
//! It greets each socket with `{"type":"connected"}` as soon as it is open so
//! that the load generator's code and its latency end point (TCP connect to
//! the server's first message) are the same as against the gateway; a
//! `{"type":"ping","id":N}` comes back as itself, which the `ping` scenario
//! accepts as the answer.

use std::{convert::Infallible, time::Duration};

use bytes::Bytes;
use fastwebsockets::{Frame, OpCode, Payload, WebSocket, WebSocketError};
use http::{Request, Response, StatusCode};
use http_body_util::Empty;
use hyper::{body::Incoming, server::conn::http1, service::service_fn, upgrade::Upgraded};
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

/// The first message on every socket.
pub const GREETING: &[u8] = br#"{"type":"connected"}"#;

/// Serves on an already-bound listener until `shutdown` completes; open
/// sockets end with the process.
pub async fn run(listener: TcpListener, shutdown: impl Future<Output = ()>) -> std::io::Result<()> {
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(stream));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
}

async fn serve_connection(stream: TcpStream) {
    let service = service_fn(|request| async move { Ok::<_, Infallible>(route(request)) });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

fn route(mut request: Request<Incoming>) -> Response<Empty<Bytes>> {
    if request.uri().path() != "/ws" {
        return status(StatusCode::NOT_FOUND);
    }
    if !fastwebsockets::upgrade::is_upgrade_request(&request) {
        return status(StatusCode::UPGRADE_REQUIRED);
    }
    match fastwebsockets::upgrade::upgrade(&mut request) {
        Ok((response, upgrade)) => {
            tokio::spawn(async move {
                if let Ok(ws) = upgrade.await {
                    let _ = echo(ws).await;
                }
            });
            response
        }
        Err(_) => status(StatusCode::BAD_REQUEST),
    }
}

async fn echo(mut ws: WebSocket<TokioIo<Upgraded>>) -> Result<(), WebSocketError> {
    ws.write_frame(Frame::text(Payload::Borrowed(GREETING)))
        .await?;
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            // The library has answered the close already.
            OpCode::Close => return Ok(()),
            // A fresh frame: the one read keeps the client's masking key,
            // and a server must not mask.
            OpCode::Text | OpCode::Binary | OpCode::Continuation => {
                ws.write_frame(Frame::new(frame.fin, frame.opcode, None, frame.payload))
                    .await?
            }
            _ => {}
        }
    }
}

fn status(code: StatusCode) -> Response<Empty<Bytes>> {
    let mut response = Response::new(Empty::new());
    *response.status_mut() = code;
    response
}
