//! The webhook receiver of the `webhooks` scenario: an HTTP/1 server
//! (`pulse_presence::testing::serve_webhooks`) that reads each POST's body, checks its `Pulse-Signature` with the
//! secret (`pulse_presence::webhooks::sign::verify`, what a Rust receiver
//! would call), notes when each event arrived (by user and kind, the first
//! time; a repeated id is counted), and answers 204 (401 to a bad
//! signature).

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use hyper::StatusCode;
use pulse_presence::{testing::serve_webhooks, webhooks::sign};
use serde::Deserialize;
use tokio::{net::TcpListener, task::JoinHandle, time::Instant};

#[derive(Deserialize)]
struct Batch {
    events: Vec<Received>,
}

#[derive(Deserialize)]
struct Received {
    id: String,
    kind: String,
    user_id: String,
}

/// What the receiver took.
#[derive(Default)]
pub struct Inbox {
    /// When each event (user, kind) first arrived.
    pub arrivals: HashMap<(String, String), Instant>,
    /// Each user's kinds, in the order they arrived (repeats left out).
    pub order: HashMap<String, Vec<String>>,
    /// Event ids taken.
    pub ids: HashSet<String>,
    /// Events received again.
    pub repeats: u64,
    /// POSTs whose signature failed.
    pub bad_signatures: u64,
    /// POSTs.
    pub posts: u64,
}

/// Takes one POST's body; the status to answer.
pub fn take(
    inbox: &mut Inbox,
    secret: &[u8],
    header: &str,
    body: &[u8],
    at: Instant,
) -> StatusCode {
    inbox.posts += 1;
    let now = pulse_protocol::event::now_ms() / 1000;
    if sign::verify(secret, header, body, now, sign::DEFAULT_TOLERANCE).is_err() {
        inbox.bad_signatures += 1;
        return StatusCode::UNAUTHORIZED;
    }
    let Ok(batch) = serde_json::from_slice::<Batch>(body) else {
        return StatusCode::BAD_REQUEST;
    };
    for event in batch.events {
        if !inbox.ids.insert(event.id) {
            inbox.repeats += 1;
            continue;
        }
        inbox
            .order
            .entry(event.user_id.clone())
            .or_default()
            .push(event.kind.clone());
        inbox
            .arrivals
            .entry((event.user_id, event.kind))
            .or_insert(at);
    }
    StatusCode::NO_CONTENT
}

/// A receiver listening on `listen`, served until dropped.
pub struct Receiver {
    /// What it took.
    pub inbox: Arc<Mutex<Inbox>>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    /// Binds `listen` and serves.
    pub async fn start(listen: SocketAddr, secret: String) -> anyhow::Result<Self> {
        let listener = TcpListener::bind(listen).await?;
        let inbox: Arc<Mutex<Inbox>> = Arc::default();
        let shared = inbox.clone();
        let secret: Arc<[u8]> = secret.into_bytes().into();
        let task = serve_webhooks(listener, move |header, body| {
            let at = Instant::now();
            let status = take(
                &mut shared.lock().expect("no panics while locked"),
                &secret,
                &header,
                &body,
                at,
            );
            async move { status }
        });
        Ok(Self { inbox, task })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signed_posts_are_taken_and_others_refused() {
        let secret = b"a secret of 16 bytes or more";
        let body = br#"{"events":[{"id":"b1-1-1","kind":"connected","user_id":"u","connection_id":"c","instance_id":"i","at":"x","position":"p"},{"id":"b1-1-2","kind":"online","user_id":"u","connection_id":"c","instance_id":"i","at":"x","position":"p"}]}"#;
        let now = pulse_protocol::event::now_ms() / 1000;
        let header = sign::signature(secret, now, body);
        let mut inbox = Inbox::default();
        let at = Instant::now();
        assert_eq!(
            take(&mut inbox, secret, &header, body, at),
            StatusCode::NO_CONTENT
        );
        assert_eq!(inbox.order["u"], ["connected", "online"]);
        // The same POST again: repeats, not new events.
        assert_eq!(
            take(&mut inbox, secret, &header, body, at),
            StatusCode::NO_CONTENT
        );
        assert_eq!(inbox.repeats, 2);
        assert_eq!(inbox.ids.len(), 2);
        assert_eq!(
            take(
                &mut inbox,
                b"another secret, long enough",
                &header,
                body,
                at
            ),
            StatusCode::UNAUTHORIZED
        );
        assert_eq!(inbox.bad_signatures, 1);
        assert_eq!(inbox.posts, 3);
    }
}
