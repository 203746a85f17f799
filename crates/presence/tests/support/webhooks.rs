//! A webhook receiver for the tests, on a fixed port that can go down and
//! come back, and the helpers the webhook tests share: a target, delivery
//! run in the background, churn, and waiting for and reading what arrived.

use std::{
    collections::{BTreeMap, HashSet},
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use hyper::StatusCode;
use pulse_presence::{
    Presence, RedisOptions,
    testing::{RedisServer, serve_webhooks},
    webhooks::{Target, run_webhooks, sign},
};
use pulse_protocol::{EventKind, event::now_ms};
use serde::Deserialize;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle, time::timeout};

use super::{DEADLINE, bus_ready, record};

pub const SECRET: &[u8] = b"a webhook secret for tests";

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
pub struct Received {
    pub id: String,
    pub kind: String,
    pub user_id: String,
    pub connection_id: String,
    pub position: String,
}

#[derive(Deserialize)]
struct Batch {
    events: Vec<Received>,
}

/// Every event a receiver accepted, in arrival order, and how many POSTs
/// failed their signature check (there must be none).
#[derive(Default)]
pub struct Inbox {
    pub events: Vec<Received>,
    pub bad_signatures: usize,
    /// POSTs being answered now, and the most there ever were at once.
    in_flight: usize,
    pub most_in_flight: usize,
    /// How long the next POST waits before it is answered (once).
    pub hold_next: Option<Duration>,
}

/// A receiver on a fixed port that can go down (its listener closed, so
/// connections are refused) and come back.
pub struct Receiver {
    addr: SocketAddr,
    pub inbox: Arc<Mutex<Inbox>>,
    task: Option<JoinHandle<()>>,
}

impl Receiver {
    pub async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut receiver = Self {
            addr,
            inbox: Arc::default(),
            task: None,
        };
        receiver.serve(listener);
        receiver
    }

    fn serve(&mut self, listener: TcpListener) {
        let inbox = self.inbox.clone();
        self.task = Some(serve_webhooks(listener, move |header, body| {
            let inbox = inbox.clone();
            async move {
                let hold = {
                    let mut inbox = inbox.lock().unwrap();
                    inbox.in_flight += 1;
                    inbox.most_in_flight = inbox.most_in_flight.max(inbox.in_flight);
                    inbox.hold_next.take()
                };
                if let Some(hold) = hold {
                    tokio::time::sleep(hold).await;
                }
                let verified = sign::verify(
                    SECRET,
                    &header,
                    &body,
                    now_ms() / 1000,
                    sign::DEFAULT_TOLERANCE,
                );
                let mut inbox = inbox.lock().unwrap();
                inbox.in_flight -= 1;
                if verified.is_ok() {
                    let batch: Batch = serde_json::from_slice(&body).unwrap();
                    inbox.events.extend(batch.events);
                    StatusCode::NO_CONTENT
                } else {
                    inbox.bad_signatures += 1;
                    StatusCode::UNAUTHORIZED
                }
            }
        }));
    }

    pub fn stop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }

    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }

    pub fn url(&self) -> String {
        format!("http://{}/pulse-events", self.addr)
    }

    pub fn events(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().events.clone()
    }
}

pub fn target(url: String, events: &[EventKind]) -> Target {
    Target {
        name: "test".into(),
        url,
        secret: SECRET.to_vec(),
        events: events.iter().copied().collect(),
        timeout: Duration::from_secs(2),
        max_batch: 50,
    }
}

pub const ALL: [EventKind; 4] = [
    EventKind::Connected,
    EventKind::Disconnected,
    EventKind::Online,
    EventKind::Offline,
];

/// Runs webhook delivery until the returned sender is dropped or fired.
pub fn deliver(presence: &Presence, target: Target) -> oneshot::Sender<()> {
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(run_webhooks(presence.clone(), vec![target], async {
        let _ = stopped.await;
    }));
    stop
}

/// Waits until a replica holds the target's lease and has stored where it
/// starts: a new target starts from now, so events before that are not
/// its to deliver.
pub async fn wait_delivering(server: &RedisServer, namespace: &str) {
    let client = ::redis::Client::open(server.url()).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{namespace}:webhooks:{{test}}:cursor");
    timeout(DEADLINE, async {
        loop {
            let cursor: Option<String> = ::redis::cmd("GET")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap();
            if cursor.is_some() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a replica starts delivering");
}

/// `users` each connect and disconnect once per round (connection `c<round>`):
/// 4 events a round.
pub async fn churn(presence: &Presence, users: &[String], rounds: std::ops::Range<usize>) {
    for round in rounds {
        for user in users {
            let connection = format!("c{round}");
            presence
                .register(&record(user, &connection, "gw-1", 1))
                .await
                .unwrap();
            presence.unregister(user, &connection).await.unwrap();
        }
    }
}

/// Waits until the receiver holds `count` distinct event ids.
pub async fn wait_for(receiver: &Receiver, count: usize, within: Duration) -> Vec<Received> {
    timeout(within, async {
        loop {
            let events = receiver.events();
            let distinct: HashSet<_> = events.iter().map(|event| event.id.clone()).collect();
            if distinct.len() >= count {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        let got: HashSet<_> = receiver.events().into_iter().map(|e| e.id).collect();
        panic!("the receiver holds {} of {count} events", got.len())
    })
}

/// Deduplicated by id (a duplicate must be the same event), then each
/// user's kinds in arrival order.
pub fn per_user(events: &[Received]) -> BTreeMap<String, Vec<String>> {
    let mut seen: BTreeMap<String, Received> = BTreeMap::new();
    let mut users: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for event in events {
        if let Some(first) = seen.get(&event.id) {
            assert_eq!(
                (
                    first.kind.as_str(),
                    first.user_id.as_str(),
                    first.connection_id.as_str()
                ),
                (
                    event.kind.as_str(),
                    event.user_id.as_str(),
                    event.connection_id.as_str()
                ),
                "a duplicate id with another event"
            );
            continue;
        }
        seen.insert(event.id.clone(), event.clone());
        users
            .entry(event.user_id.clone())
            .or_default()
            .push(format!("{} {}", event.kind, event.connection_id));
    }
    users
}

pub fn lifecycle(rounds: usize) -> Vec<String> {
    (0..rounds)
        .flat_map(|round| {
            ["connected", "online", "disconnected", "offline"]
                .map(|kind| format!("{kind} c{round}"))
        })
        .collect()
}

pub async fn redis_presence(server: &RedisServer, namespace: &str) -> Presence {
    let presence =
        Presence::redis(RedisOptions::new(server.url()).with_namespace(namespace)).unwrap();
    bus_ready(&presence).await;
    presence
}
