//! A rolling deploy, seen from presence: during a SIGTERM drain longer than
//! the lease, a socket whose turn to close has not come stays registered,
//! is never reaped, and is reached by `Send`; it goes offline when it closes.

mod support;

use std::{collections::BTreeMap, time::Duration};

use pulse_gateway::Settings;
use pulse_presence::{
    Presence, RedisOptions, bucket_of,
    testing::{RedisServer, unique_namespace},
};
use pulse_protocol::EventKind;
use serde_json::value::RawValue;
use tokio::sync::oneshot;

use crate::support::*;

const TTL: Duration = Duration::from_millis(300);
const REAP_INTERVAL: Duration = Duration::from_millis(100);

fn presence(url: &str, namespace: &str, lease_ttl: Duration) -> Presence {
    let mut options = RedisOptions::new(url).with_namespace(namespace);
    options.lease_ttl = lease_ttl;
    Presence::redis(options).unwrap()
}

async fn present(presence: &Presence, user: &str) -> bool {
    !presence.user(user).await.unwrap().is_empty()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_gateway_keeps_open_sockets_present_and_reachable() {
    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    // Three sockets close 0, 2 and 4 s into the drain, far longer than the
    // lease; the reaper runs all along, as `pulse-presence` does.
    let settings = Settings {
        drain_spread: Duration::from_secs(6),
        drain_timeout: Duration::from_secs(20),
        ..Settings::new("gw-drain")
    };
    let gateway = Gateway::start_with(settings, presence(redis.url(), &namespace, TTL)).await;
    let observer = presence(redis.url(), &namespace, TTL);
    let (stop_reaper, reaper_stopped) = oneshot::channel::<()>();
    let reaper = tokio::spawn(pulse_presence::run_reaper(
        observer.clone(),
        REAP_INTERVAL,
        async move {
            let _ = reaper_stopped.await;
        },
    ));

    let users = ["u0", "u1", "u2"];
    let mut clients = Vec::new();
    for user in users {
        let mut client = gateway.connect(&format!("?token={}", token(user))).await;
        assert_eq!(next_json(&mut client).await["type"], "connected");
        clients.push(client);
    }
    for user in users {
        eventually("registered", || present(&observer, user)).await;
    }
    let mut events = observer.subscribe();

    // SIGTERM.
    let draining = tokio::spawn(gateway.stop());

    // A witness in each user's bucket: a connection of an instance that
    // never renews, with a lease twice the gateway's, made after the drain
    // began. Once the reaper has taken them all, any lease of the gateway's
    // that was not renewed since the drain began has run out and been
    // reaped too.
    let witness = presence(redis.url(), &namespace, TTL * 2);
    let mut probes = Vec::new();
    for user in users {
        let probe = (0..)
            .map(|n| format!("probe-{n}"))
            .find(|probe| bucket_of(probe) == bucket_of(user) && !probes.contains(probe))
            .unwrap();
        witness
            .register(&pulse_presence::ConnectionRecord {
                connection_id: format!("{probe}-c"),
                user_id: probe.clone(),
                instance_id: "probe".to_owned(),
                connected_at_ms: 1,
            })
            .await
            .unwrap();
        probes.push(probe);
    }
    for probe in &probes {
        eventually("the reaper took the witness", || async {
            !present(&observer, probe).await
        })
        .await;
    }

    // Whoever is still registered must still be served: `Send` reaches it.
    let mut still_present = Vec::new();
    for (n, user) in users.iter().enumerate() {
        if present(&observer, user).await {
            still_present.push(n);
        }
    }
    assert!(
        still_present.len() >= 2,
        "sockets whose turn had not come were reaped during the drain: only {still_present:?} \
         still present"
    );
    for &n in &still_present {
        let data = RawValue::from_string(format!("{{\"n\":{n}}}")).unwrap();
        assert_eq!(observer.send(users[n], data).await.unwrap(), 1);
        let message = next_json(&mut clients[n]).await;
        assert_eq!(message["type"], "publication", "{message}");
        assert_eq!(message["data"]["n"], n, "{message}");
    }
    // Whoever is gone had its turn: its socket is closed with 1001.
    for (n, client) in clients.iter_mut().enumerate() {
        if !still_present.contains(&n) {
            expect_error_then_close(client, "going_away", 1001).await;
        }
    }
    // Nobody still served was announced offline.
    let mut offline: BTreeMap<String, usize> = BTreeMap::new();
    while let Ok(event) = events.try_recv() {
        if event.kind == EventKind::Offline {
            *offline.entry(event.user_id).or_default() += 1;
        }
    }
    for &n in &still_present {
        assert!(!offline.contains_key(users[n]), "{offline:?}");
    }

    // Each of them closes at its turn, and only then goes offline.
    for &n in &still_present {
        expect_error_then_close(&mut clients[n], "going_away", 1001).await;
        eventually("offline once closed", || async {
            !present(&observer, users[n]).await
        })
        .await;
    }
    let report = draining.await.unwrap();
    assert!(report.completed);
    assert_eq!(report.open_at_shutdown, 3);
    let _ = stop_reaper.send(());
    reaper.await.unwrap();
}
