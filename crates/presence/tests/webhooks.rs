//! Webhooks against real receivers over TCP: every event arrives, in order
//! per user, through a receiver that is down for 30 s; two replicas never
//! deliver at once and hand over without a loss, nor while a slow receiver
//! keeps a POST waiting past the lease's time; the README's Node receiver
//! accepts what Pulse signs and refuses a wrong secret, an old timestamp
//! and a changed body.

mod support;

use std::{
    collections::{BTreeSet, HashSet},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Request, StatusCode};
use pulse_presence::{
    testing::{RedisServer, unique_namespace},
    webhooks::{Target, sign},
};
use pulse_protocol::{EventKind, event::now_ms};
use support::{
    DEADLINE, record,
    webhooks::{
        ALL, Receiver, SECRET, churn, deliver, lifecycle, per_user, redis_presence, target,
        wait_delivering, wait_for,
    },
};
use tokio::time::timeout;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_event_arrives_in_order_through_a_receiver_down_for_30s() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = redis_presence(&server, &namespace).await;
    let mut receiver = Receiver::start().await;
    let _delivery = deliver(&presence, target(receiver.url(), &ALL));
    wait_delivering(&server, &namespace).await;
    let users: Vec<String> = (0..8).map(|n| format!("hook-{n}")).collect();

    churn(&presence, &users, 0..2).await;
    wait_for(&receiver, users.len() * 8, DEADLINE).await;

    receiver.stop();
    churn(&presence, &users, 2..5).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    receiver.restart().await;
    // Retries back off to at most 30 s, so allow for one full wait.
    let events = wait_for(&receiver, users.len() * 20, Duration::from_secs(60)).await;

    let users_seen = per_user(&events);
    for user in &users {
        assert_eq!(users_seen[user], lifecycle(5), "{user}");
    }
    assert_eq!(receiver.inbox.lock().unwrap().bad_signatures, 0);
    assert!(events.iter().all(|event| event.position.starts_with("p1.")));
}

/// Two replicas deliver to one target: one holds the lease, so each event
/// is POSTed once; when it stops, the other takes over from the stored
/// cursor, and nothing is lost.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_never_deliver_at_once_and_hand_over_without_a_loss() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let first = redis_presence(&server, &namespace).await;
    let second = redis_presence(&server, &namespace).await;
    let receiver = Receiver::start().await;
    let stop_first = deliver(
        &first,
        target(receiver.url(), &[EventKind::Online, EventKind::Offline]),
    );
    wait_delivering(&server, &namespace).await;
    // The first takes the lease before the second starts trying.
    churn(&first, &["warmup".to_owned()], 0..1).await;
    wait_for(&receiver, 2, DEADLINE).await;
    let _second = deliver(
        &second,
        target(receiver.url(), &[EventKind::Online, EventKind::Offline]),
    );

    let users: Vec<String> = (0..6).map(|n| format!("pair-{n}")).collect();
    churn(&first, &users, 0..2).await;
    let events = wait_for(&receiver, 2 + users.len() * 4, DEADLINE).await;
    // While both run, only the lease holder POSTs: nothing twice.
    let ids: Vec<_> = events.iter().map(|event| event.id.clone()).collect();
    let distinct: BTreeSet<_> = ids.iter().cloned().collect();
    assert_eq!(ids.len(), distinct.len(), "an event POSTed twice");

    drop(stop_first);
    churn(&second, &users, 2..4).await;
    // The first releases its lease as it stops, and the second goes on from
    // the stored cursor (it may send again the batch the first one had not
    // marked done when it stopped: same ids).
    let events = wait_for(&receiver, 2 + users.len() * 8, Duration::from_secs(40)).await;
    let seen = per_user(&events);
    for user in &users {
        let expected: Vec<String> = (0..4)
            .flat_map(|round| [format!("online c{round}"), format!("offline c{round}")])
            .collect();
        assert_eq!(seen[user], expected, "{user}");
    }
}

/// A receiver slower than the lease's time to live (10 s) keeps one POST
/// waiting: the delivering replica renews its lease meanwhile, so the other
/// replica never sends the same batch beside it (out of order, twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_slow_receiver_keeps_the_lease_with_the_replica_waiting_on_it() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let first = redis_presence(&server, &namespace).await;
    let second = redis_presence(&server, &namespace).await;
    let receiver = Receiver::start().await;
    let slow = Target {
        timeout: Duration::from_secs(30),
        ..target(receiver.url(), &ALL)
    };
    let _first = deliver(&first, slow.clone());
    wait_delivering(&server, &namespace).await;
    let _second = deliver(&second, slow);

    receiver.inbox.lock().unwrap().hold_next = Some(Duration::from_secs(14));
    churn(&first, &["slow-1".to_owned()], 0..1).await;
    wait_for(&receiver, 4, Duration::from_secs(40)).await;
    churn(&first, &["slow-2".to_owned()], 0..1).await;
    let events = wait_for(&receiver, 8, DEADLINE).await;

    let inbox = receiver.inbox.lock().unwrap();
    assert_eq!(inbox.most_in_flight, 1, "two POSTs at once");
    let ids: Vec<_> = inbox.events.iter().map(|event| &event.id).collect();
    let distinct: HashSet<_> = ids.iter().collect();
    assert_eq!(ids.len(), distinct.len(), "an event POSTed twice");
    let seen = per_user(&events);
    assert_eq!(seen["slow-1"], lifecycle(1));
    assert_eq!(seen["slow-2"], lifecycle(1));
}

/// Redis restarted empty under a delivery: the cursor and the lease are
/// gone with the logs, and the replica goes on with what the new logs hold
/// (the events of a gateway's re-sync, say) instead of starting "from now"
/// and skipping them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_redis_restarted_empty_delivery_goes_on_with_the_new_log() {
    let server = RedisServer::spawn().await;
    let port = server.port().unwrap();
    let namespace = unique_namespace();
    let presence = redis_presence(&server, &namespace).await;
    let receiver = Receiver::start().await;
    let _delivery = deliver(&presence, target(receiver.url(), &ALL));
    wait_delivering(&server, &namespace).await;
    churn(&presence, &["before-wipe".to_owned()], 0..1).await;
    wait_for(&receiver, 4, DEADLINE).await;

    server.stop().await;
    let server = RedisServer::spawn_on(port).await;
    let connection = record("after-wipe", "c1", "gw-1", 1);
    support::retry_unavailable(|| presence.register(&connection)).await;
    // The running delivery sends these, then finds its lease gone with the
    // data, stops, and takes the lease again a few seconds later: what
    // happens meanwhile must not be skipped.
    wait_for(&receiver, 6, Duration::from_secs(30)).await;
    presence
        .register(&record("meanwhile", "c1", "gw-1", 1))
        .await
        .unwrap();
    let events = wait_for(&receiver, 8, Duration::from_secs(30)).await;
    for user in ["after-wipe", "meanwhile"] {
        let kinds: Vec<_> = events
            .iter()
            .filter(|event| event.user_id == user)
            .map(|event| event.kind.as_str())
            .collect();
        assert_eq!(kinds, ["connected", "online"], "{user}");
    }
    drop(server);
}

/// The README's receiver (examples/webhooks/receiver.mjs) accepts what Pulse
/// delivers, and refuses a wrong secret, an old timestamp and a changed body.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_readme_receiver_checks_signatures() {
    let port = pulse_presence::testing::free_port();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../examples/webhooks/receiver.mjs"
    );
    // The README shows this very code.
    let code = std::fs::read_to_string(script).unwrap();
    let code = &code[code.find("import ").unwrap()..];
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../../README.md")).unwrap();
    assert!(
        readme.contains(code),
        "README's receiver differs from {script}"
    );
    let mut node = tokio::process::Command::new("node")
        .arg(script)
        .env("PULSE_WEBHOOK_SECRET", std::str::from_utf8(SECRET).unwrap())
        .env("PORT", port.to_string())
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs (Node 20 is part of the machine)");
    let mut lines =
        tokio::io::AsyncBufReadExt::lines(tokio::io::BufReader::new(node.stdout.take().unwrap()));
    let first = timeout(DEADLINE, lines.next_line()).await.unwrap().unwrap();
    assert_eq!(first.as_deref(), Some("listening"));

    let url = format!("http://127.0.0.1:{port}/");
    let post = |body: &'static [u8], header: String| {
        let url = url.clone();
        async move {
            let client =
                hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                    .build_http::<Full<Bytes>>();
            let request = Request::post(url)
                .header(sign::SIGNATURE_HEADER, header)
                .body(Full::new(Bytes::from_static(body)))
                .unwrap();
            client.request(request).await.unwrap().status()
        }
    };
    let body: &[u8] = br#"{"events":[]}"#;
    let now = now_ms() / 1000;
    assert_eq!(
        post(body, sign::signature(SECRET, now, body)).await,
        StatusCode::NO_CONTENT
    );
    assert_eq!(
        post(body, sign::signature(b"not the right secret", now, body)).await,
        StatusCode::UNAUTHORIZED,
        "a wrong secret"
    );
    assert_eq!(
        post(body, sign::signature(SECRET, now - 600, body)).await,
        StatusCode::UNAUTHORIZED,
        "an old timestamp"
    );
    assert_eq!(
        post(br#"{"events":[{}]}"#, sign::signature(SECRET, now, body)).await,
        StatusCode::UNAUTHORIZED,
        "a changed body"
    );
    assert_eq!(
        post(body, String::new()).await,
        StatusCode::UNAUTHORIZED,
        "no signature"
    );

    // And what Pulse delivers, it accepts and prints.
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = redis_presence(&server, &namespace).await;
    let _delivery = deliver(&presence, target(url.clone(), &[EventKind::Online]));
    wait_delivering(&server, &namespace).await;
    presence
        .register(&record("node-user", "c1", "gw-1", 1))
        .await
        .unwrap();
    let line = timeout(DEADLINE, lines.next_line())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(line.ends_with(" online node-user"), "{line}");
}
