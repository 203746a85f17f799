//! `pulse-fanout`: the floor of channel fan-out (issue 12). A bare hyper 1 +
//! fastwebsockets server, like `pulse-echo`, whose sockets subscribe to
//! channels and which, on `POST /publish`, encodes the publication's frame
//! once and hands the same bytes to every subscriber: the work a gateway
//! must do for a publication minus routing (no auth, no presence, no Redis,
//! no namespaces, no API keys).
//!
//! Per socket, as in the gateway: a bounded queue (its mailbox, capacity
//! [`FloorOptions::queue`], like `--outbound-queue`) that the publisher
//! pushes the shared frame into, and a task that writes what waits. By
//! default each frame goes out in its own `writev` (what the gateway does);
//! with [`FloorOptions::coalesce`] the writer takes every frame waiting and
//! sends them in one, to show what that saves when a socket falls behind by
//! more than one frame; with [`FloorOptions::direct`] the publisher writes
//! a frame itself to a socket that has nothing waiting, so that the
//! socket's task is woken only for what the kernel did not take, to show
//! what the wake-up per delivery costs.
//!
//! The protocol is the gateway's, as far as the load generator needs it:
//! `{"type":"connected"}` when a socket opens; `{"type":"subscribe","id":N,
//! "channel":C}` answered `{"type":"subscribed","id":N,"channel":C}`;
//! `POST /publish` with `{"channel":C,"data":JSON}` answered
//! `{"subscribers":N}` once the frame is in every subscriber's queue (the
//! gateway's API answers once Redis took the publication, before any socket
//! is written to, too). A queue found full closes that socket (the gateway
//! closes it with 4429), counted and logged.

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        Arc, Mutex, MutexGuard,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use bytes::{BufMut, Bytes, BytesMut};
use fastwebsockets::{OpCode, Role, WebSocket, after_handshake_split};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::{body::Incoming, server::conn::http1, service::service_fn, upgrade::Upgraded};
use hyper_util::rt::TokioIo;
use serde::Deserialize;
use serde_json::value::RawValue;
use tokio::{
    io::AsyncWriteExt,
    net::{TcpListener, TcpStream, tcp::OwnedReadHalf},
};

use crate::echo::GREETING;

mod outbox;

use outbox::{Outbox, Pushed, write_loop};

/// The largest `POST /publish` body taken.
const MAX_BODY: usize = 1 << 20;

/// How the floor writes.
#[derive(Debug, Clone, Copy)]
pub struct FloorOptions {
    /// Several frames waiting for one socket go out in one vectored write,
    /// instead of one write each.
    pub coalesce: bool,
    /// The publisher writes to a socket with nothing waiting itself,
    /// instead of waking its task.
    pub direct: bool,
    /// Frames that may wait for one socket; one more closes it.
    pub queue: usize,
}

impl Default for FloorOptions {
    fn default() -> Self {
        Self {
            coalesce: false,
            direct: false,
            queue: 256,
        }
    }
}

/// The subscriptions and the options every socket shares.
struct Floor {
    options: FloorOptions,
    channels: Mutex<HashMap<Box<str>, Vec<Arc<Outbox>>>>,
    overflows: AtomicU64,
}

impl Floor {
    fn table(&self) -> MutexGuard<'_, HashMap<Box<str>, Vec<Arc<Outbox>>>> {
        self.channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Queues one publication for every subscriber of `channel`; returns
    /// how many there were.
    fn publish(&self, channel: &str, data: &RawValue) -> usize {
        let text = pulse_protocol::channel::publication_frame(channel, None, data);
        let frame = text_frame(text.as_bytes());
        let table = self.table();
        let Some(subscribers) = table.get(channel) else {
            return 0;
        };
        for outbox in subscribers {
            if outbox.push(frame.clone(), self.options.queue, self.options.direct)
                == Pushed::Overflowed
                && self.overflows.fetch_add(1, Ordering::Relaxed) == 0
            {
                tracing::warn!(channel, "a subscriber's queue is full; closing it");
            }
        }
        subscribers.len()
    }

    fn unsubscribe_all(&self, channels: &[Box<str>], outbox: &Arc<Outbox>) {
        let mut table = self.table();
        for channel in channels {
            if let Some(subscribers) = table.get_mut(channel) {
                subscribers.retain(|other| !Arc::ptr_eq(other, outbox));
                if subscribers.is_empty() {
                    table.remove(channel);
                }
            }
        }
    }
}

/// A server text frame (FIN, unmasked) holding `payload`, encoded once.
pub fn text_frame(payload: &[u8]) -> Bytes {
    let mut frame = BytesMut::with_capacity(payload.len() + 10);
    frame.put_u8(0x81);
    match payload.len() {
        len @ 0..=125 => frame.put_u8(len as u8),
        len @ 126..=65535 => {
            frame.put_u8(126);
            frame.put_u16(len as u16);
        }
        len => {
            frame.put_u8(127);
            frame.put_u64(len as u64);
        }
    }
    frame.put_slice(payload);
    frame.freeze()
}

/// Serves on an already-bound listener until `shutdown` completes; open
/// sockets end with the process.
pub async fn run(
    listener: TcpListener,
    options: FloorOptions,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let floor = Arc::new(Floor {
        options,
        channels: Mutex::default(),
        overflows: AtomicU64::new(0),
    });
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => {
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(serve_connection(stream, floor.clone()));
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

async fn serve_connection(stream: TcpStream, floor: Arc<Floor>) {
    let service = service_fn(move |request| {
        let floor = floor.clone();
        async move { Ok::<_, Infallible>(route(request, floor).await) }
    });
    let _ = http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .with_upgrades()
        .await;
}

async fn route(mut request: Request<Incoming>, floor: Arc<Floor>) -> Response<Full<Bytes>> {
    match (request.method().as_str(), request.uri().path()) {
        ("POST", "/publish") => publish(request, &floor).await,
        (_, "/ws") if fastwebsockets::upgrade::is_upgrade_request(&request) => {
            match fastwebsockets::upgrade::upgrade(&mut request) {
                Ok((response, upgrade)) => {
                    tokio::spawn(async move {
                        if let Ok(ws) = upgrade.await {
                            serve_socket(ws, floor).await;
                        }
                    });
                    response.map(|_| Full::default())
                }
                Err(_) => answer(StatusCode::BAD_REQUEST, "not a valid upgrade"),
            }
        }
        (_, "/ws") => answer(StatusCode::UPGRADE_REQUIRED, "upgrade required"),
        _ => answer(StatusCode::NOT_FOUND, "not found"),
    }
}

#[derive(Deserialize)]
struct PublishBody {
    channel: String,
    data: Box<RawValue>,
}

async fn publish(request: Request<Incoming>, floor: &Floor) -> Response<Full<Bytes>> {
    let body = match Limited::new(request.into_body(), MAX_BODY).collect().await {
        Ok(body) => body.to_bytes(),
        Err(_) => return answer(StatusCode::PAYLOAD_TOO_LARGE, "body over 1 MiB or cut"),
    };
    let body: PublishBody = match serde_json::from_slice(&body) {
        Ok(body) => body,
        Err(error) => {
            return answer(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"channel\":C,\"data\":JSON}}: {error}"),
            );
        }
    };
    let subscribers = floor.publish(&body.channel, &body.data);
    answer(
        StatusCode::OK,
        &format!("{{\"subscribers\":{subscribers}}}"),
    )
}

fn answer(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::copy_from_slice(body.as_bytes())));
    *response.status_mut() = status;
    response
}

/// Takes the TCP stream back from hyper (as the gateway does), greets, and
/// runs the socket's reader here and its writer on a task of its own.
async fn serve_socket(ws: WebSocket<TokioIo<Upgraded>>, floor: Arc<Floor>) {
    let upgraded = ws.into_inner().into_inner();
    let Ok(parts) = upgraded.downcast::<TokioIo<TcpStream>>() else {
        return;
    };
    if !parts.read_buf.is_empty() {
        // Frames before the 101: the client broke the handshake's order.
        return;
    }
    let (read, mut write) = parts.io.into_inner().into_split();
    if write.write_all(&text_frame(GREETING)).await.is_err() {
        return;
    }
    let outbox = Arc::new(Outbox::new(write));
    tokio::spawn(write_loop(outbox.clone(), floor.options.coalesce));
    let subscribed = read_loop(read, &floor, &outbox).await;
    outbox.close();
    floor.unsubscribe_all(&subscribed, &outbox);
}

#[derive(Deserialize)]
struct Subscribe {
    #[serde(rename = "type")]
    kind: String,
    id: u64,
    channel: String,
}

/// Reads the client's requests until it closes; returns the channels it
/// subscribed to. Anything but a `subscribe` is ignored.
async fn read_loop(read: OwnedReadHalf, floor: &Floor, outbox: &Arc<Outbox>) -> Vec<Box<str>> {
    // fastwebsockets parses and unmasks; its write side is never used (a
    // sink), since every write goes through the outbox.
    let (mut reader, _) = after_handshake_split(read, tokio::io::sink(), Role::Server);
    reader.set_auto_close(false);
    reader.set_auto_pong(false);
    let mut subscribed = Vec::new();
    let mut ignore = |_| async { Ok::<(), std::io::Error>(()) };
    while let Ok(frame) = reader.read_frame(&mut ignore).await {
        match frame.opcode {
            OpCode::Close => break,
            OpCode::Text => {}
            _ => continue,
        }
        let Ok(request) = serde_json::from_slice::<Subscribe>(&frame.payload) else {
            continue;
        };
        if request.kind != "subscribe" {
            continue;
        }
        let channel: Box<str> = request.channel.into();
        floor
            .table()
            .entry(channel.clone())
            .or_default()
            .push(outbox.clone());
        let answer = serde_json::json!({
            "type": "subscribed",
            "id": request.id,
            "channel": &*channel,
        });
        subscribed.push(channel);
        outbox.push(
            text_frame(answer.to_string().as_bytes()),
            floor.options.queue,
            false,
        );
    }
    subscribed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_carry_their_length_in_the_smallest_form() {
        assert_eq!(&text_frame(b"hi")[..], b"\x81\x02hi");
        let medium = text_frame(&[b'x'; 300]);
        assert_eq!(&medium[..4], &[0x81, 126, 1, 44]);
        assert_eq!(medium.len(), 304);
        let large = text_frame(&vec![b'x'; 70_000]);
        assert_eq!(&large[..2], &[0x81, 127]);
        assert_eq!(u64::from_be_bytes(large[2..10].try_into().unwrap()), 70_000);
    }
}
