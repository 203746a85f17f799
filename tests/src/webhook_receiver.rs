//! A webhook receiver for the whole-system tests: it checks every POST's
//! signature and hands each event to a [`Ledger`] (at least once: a repeat
//! must be the same event), the same checks a `Watch` consumer gets.

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use hyper::StatusCode;
use pulse_presence::{testing::serve_webhooks, webhooks::sign};
use pulse_protocol::{
    event::{Position, now_ms},
    proto::presence::v1::{EventKind, PresenceEvent},
};
use serde::Deserialize;
use tokio::{net::TcpListener, task::JoinHandle};

use crate::events::Ledger;

#[derive(Deserialize)]
struct Batch {
    events: Vec<Received>,
}

#[derive(Deserialize)]
struct Received {
    id: String,
    kind: String,
    user_id: String,
    connection_id: String,
    instance_id: String,
    position: String,
}

/// What the receiver holds: the ledger once the test has given it one (no
/// event may come before), and every rule an event broke.
#[derive(Default)]
pub struct Inbox {
    pub ledger: Option<Ledger>,
    pub errors: Vec<String>,
    pub posts: usize,
}

/// A receiver on `127.0.0.1`, served until dropped.
pub struct WebhookReceiver {
    pub addr: SocketAddr,
    pub inbox: Arc<Mutex<Inbox>>,
    task: JoinHandle<()>,
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn kind(name: &str) -> Result<EventKind, String> {
    Ok(match name {
        "connected" => EventKind::Connected,
        "disconnected" => EventKind::Disconnected,
        "online" => EventKind::Online,
        "offline" => EventKind::Offline,
        "join" => EventKind::Join,
        "leave" => EventKind::Leave,
        other => return Err(format!("an unknown kind {other:?}")),
    })
}

fn take(inbox: &mut Inbox, header: &str, body: &[u8]) -> StatusCode {
    inbox.posts += 1;
    if let Err(error) = sign::verify(
        SECRET.as_bytes(),
        header,
        body,
        now_ms() / 1000,
        sign::DEFAULT_TOLERANCE,
    ) {
        inbox
            .errors
            .push(format!("a POST whose signature fails: {error}"));
        return StatusCode::UNAUTHORIZED;
    }
    let batch: Batch = match serde_json::from_slice(body) {
        Ok(batch) => batch,
        Err(error) => {
            inbox
                .errors
                .push(format!("a body that does not parse: {error}"));
            return StatusCode::BAD_REQUEST;
        }
    };
    for received in batch.events {
        let Some(ledger) = inbox.ledger.as_mut() else {
            inbox
                .errors
                .push(format!("event {} before the start", received.id));
            continue;
        };
        let event = kind(&received.kind).map(|kind| PresenceEvent {
            user_id: received.user_id,
            kind: kind as i32,
            connection_id: received.connection_id,
            instance_id: received.instance_id,
            at: None,
            id: received.id,
            position: received.position,
            channel: String::new(),
        });
        if let Err(error) = event.and_then(|event| ledger.apply(&event)) {
            inbox.errors.push(error);
        }
    }
    StatusCode::NO_CONTENT
}

/// The secret the receiver checks signatures with.
pub const SECRET: &str = "a webhook secret for the chaos run";

impl WebhookReceiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let inbox: Arc<Mutex<Inbox>> = Arc::default();
        let shared = inbox.clone();
        let task = serve_webhooks(listener, move |header, body| {
            let status = take(&mut shared.lock().unwrap(), &header, &body);
            async move { status }
        });
        Self { addr, inbox, task }
    }

    /// The `[webhooks]` section of a config file that POSTs every kind here.
    pub fn config(&self) -> String {
        format!(
            "[webhooks]\nurl = \"http://{}/pulse-events\"\nsecret = \"{SECRET}\"\nevents = [\"connected\", \"disconnected\", \"online\", \"offline\"]\n",
            self.addr
        )
    }

    /// Waits until the ledger has taken everything up to `target`, failing
    /// on the first broken rule or when nothing arrives for `stall`.
    ///
    /// # Panics
    ///
    /// As said.
    pub async fn reach(&self, target: &Position, stall: Duration) {
        let mut last = (0, Instant::now());
        loop {
            {
                let inbox = self.inbox.lock().unwrap();
                assert!(
                    inbox.errors.is_empty(),
                    "the webhook receiver: {:?}",
                    inbox.errors
                );
                let ledger = inbox
                    .ledger
                    .as_ref()
                    .expect("the receiver was given its start");
                if ledger.reached(target) {
                    return;
                }
                let taken = ledger.taken().len();
                if taken != last.0 {
                    last = (taken, Instant::now());
                }
                assert!(
                    last.1.elapsed() < stall,
                    "the webhook receiver took nothing for {stall:?}: at {}, {target} wanted ({} POSTs)",
                    ledger.position(),
                    inbox.posts
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
