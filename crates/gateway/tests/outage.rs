//! Presence under failure, seen from the gateway: Redis goes away and comes
//! back empty, and no socket notices; an instance restarts under its id.

mod support;

use std::time::Duration;

use pulse_auth::{Authenticator, Validator, ValidatorSettings};
use pulse_gateway::{Gateway as GatewayCore, Settings};
use pulse_presence::{
    Presence, RedisOptions,
    testing::{RedisServer, unique_namespace},
};
use serde_json::json;
use tokio::sync::oneshot;

use crate::support::*;

fn presence(url: &str, namespace: &str) -> Presence {
    let mut options = RedisOptions::new(url).with_namespace(namespace);
    options.lease_ttl = Duration::from_millis(600);
    Presence::redis(options).unwrap()
}

fn validator() -> Authenticator {
    Authenticator::Local(
        Validator::new(ValidatorSettings {
            leeway: Duration::ZERO,
            ..ValidatorSettings::with_secret(SECRET)
        })
        .unwrap(),
    )
}

async fn ids(presence: &Presence, user: &str) -> Vec<String> {
    let mut ids: Vec<String> = presence
        .user(user)
        .await
        .map(|records| records.into_iter().map(|r| r.connection_id).collect())
        .unwrap_or_else(|_| vec!["<redis unavailable>".to_owned()]);
    ids.sort();
    ids
}

/// A gateway serving on a free port until `stop` is sent or dropped.
struct Running {
    addr: std::net::SocketAddr,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<pulse_gateway::DrainReport>>,
}

impl Running {
    async fn start(settings: Settings, presence: Presence) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let core = GatewayCore::new(settings, validator(), presence);
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(core.serve(listener, async move {
            let _ = stopped.await;
        }));
        Self { addr, stop, task }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

async fn ping(client: &mut Client, id: u32) {
    send_json(client, json!({"type": "ping", "id": id})).await;
    assert_eq!(next_json(client).await, json!({"type": "pong", "id": id}));
}

#[tokio::test]
async fn redis_restarting_empty_closes_no_socket_and_presence_comes_back_true() {
    let redis = RedisServer::spawn().await;
    let port = redis.port().expect("a private server");
    let url = redis.url().to_owned();
    let namespace = unique_namespace();

    let settings = Settings {
        drain_spread: Duration::from_millis(100),
        ..Settings::new("gw-outage")
    };
    let gateway = Running::start(settings, presence(&url, &namespace)).await;
    let addr = gateway.addr;
    let connect = |user: &str| {
        let url = format!("ws://{addr}/ws?token={}", token(user));
        async move { tokio_tungstenite::connect_async(url).await.unwrap().0 }
    };

    let mut alice1 = connect("alice").await;
    let alice1_id = next_json(&mut alice1).await["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut alice2 = connect("alice").await;
    next_json(&mut alice2).await;
    let mut bob = connect("bob").await;
    next_json(&mut bob).await;
    let observer = presence(&url, &namespace);
    eventually("three registered", || async {
        ids(&observer, "alice").await.len() == 2
    })
    .await;

    // Redis goes away with everything it held.
    redis.stop().await;
    for (n, client) in [&mut alice1, &mut alice2, &mut bob].into_iter().enumerate() {
        ping(client, n as u32).await;
    }
    // New sockets are still accepted, and old ones still close cleanly.
    let mut carol = connect("carol").await;
    let carol_id = next_json(&mut carol).await["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    drop(alice2);

    // Redis comes back empty on the same port.
    let _redis = RedisServer::spawn_on(port).await;
    eventually("presence equals the truth again", || async {
        ids(&observer, "alice").await == [alice1_id.clone()]
            && ids(&observer, "carol").await == [carol_id.clone()]
            && ids(&observer, "bob").await.len() == 1
    })
    .await;
    assert_eq!(observer.count_online().await.unwrap().connections, 3);
    // Not one socket was closed by the outage.
    for (n, client) in [&mut alice1, &mut bob, &mut carol].into_iter().enumerate() {
        ping(client, 10 + n as u32).await;
    }

    gateway.stop().await;
    assert_eq!(observer.count_online().await.unwrap().connections, 0);
}

#[tokio::test]
async fn a_restart_under_the_same_instance_id_leaves_no_phantoms() {
    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    let observer = presence(redis.url(), &namespace);
    // A previous life of gw-r left a connection behind (it died without
    // deregistering, and its lease has not expired yet).
    observer
        .register(&pulse_presence::ConnectionRecord {
            connection_id: "ghost".into(),
            user_id: "alice".into(),
            instance_id: "gw-r".into(),
            connected_at_ms: 1,
        })
        .await
        .unwrap();
    assert_eq!(ids(&observer, "alice").await, ["ghost"]);

    let settings = Settings {
        drain_spread: Duration::from_millis(100),
        ..Settings::new("gw-r")
    };
    let gateway = Running::start(settings, presence(redis.url(), &namespace)).await;
    let addr = gateway.addr;
    let mut client =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={}", token("alice")))
            .await
            .unwrap()
            .0;
    let id = next_json(&mut client).await["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(ids(&observer, "alice").await, [id]);
    gateway.stop().await;
}

/// A write Redis lost without a sign (a failover to a replica that had not
/// received it, simulated here by deleting the user's state behind the
/// gateway's back) is repaired by the periodic re-sync, with its events.
#[tokio::test]
async fn the_periodic_resync_repairs_state_that_redis_lost_silently() {
    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    let settings = Settings {
        resync_interval: Duration::from_millis(400),
        drain_spread: Duration::from_millis(100),
        ..Settings::new("gw-resync")
    };
    let gateway = Running::start(settings, presence(redis.url(), &namespace)).await;
    let addr = gateway.addr;
    let url = format!("ws://{addr}/ws?token={}", token("alice"));
    let mut alice = tokio_tungstenite::connect_async(url).await.unwrap().0;
    let alice_id = next_json(&mut alice).await["connection_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let observer = presence(redis.url(), &namespace);
    eventually("registered", || async {
        ids(&observer, "alice").await == [alice_id.clone()]
    })
    .await;
    let mut events = observer.subscribe();

    // The lease is intact; only the user's state is gone, as after a
    // failover that lost the last writes.
    observer.unregister("alice", &alice_id).await.unwrap();
    assert!(ids(&observer, "alice").await.is_empty());

    eventually("the periodic re-sync put it back", || async {
        ids(&observer, "alice").await == [alice_id.clone()]
    })
    .await;
    // The repair is announced like any connect: connected, then online.
    let mut kinds = Vec::new();
    while kinds.len() < 4 {
        let event = tokio::time::timeout(Duration::from_secs(10), events.recv())
            .await
            .expect("events")
            .unwrap();
        if event.user_id == "alice" {
            kinds.push(event.kind);
        }
    }
    use pulse_protocol::EventKind::*;
    assert_eq!(kinds, [Disconnected, Offline, Connected, Online]);
    ping(&mut alice, 1).await;
    gateway.stop().await;
}
