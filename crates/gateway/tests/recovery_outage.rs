//! Recovery on `/ws` while Redis fails under the gateway: a gateway whose
//! Redis subscription is killed while publications flow (or that misses
//! publications made only while it was down) does not deliver past the
//! hole but tells its subscribers, who recover every publication; Redis
//! restarted empty, or a stream that lost its last writes, gives a new
//! epoch and `recovered: false`, never a silent gap.
//!
//! Each test has a `redis-server` of its own (`RedisServer::spawn`, not the
//! shared `REDIS_URL`): `CLIENT KILL TYPE pubsub` cuts every subscription
//! on the server, the other tests' gateways' too.

mod support;

use std::time::Duration;

use pulse_presence::{
    Presence,
    testing::{RedisServer, unique_namespace},
};
use serde_json::json;

use crate::support::{
    recovery::{Reader, history_settings, personal_history_settings, redis_presence, with_history},
    *,
};

/// Publications made only while the gateway's Redis subscription was down
/// (none after it came back to reveal the hole by its offset): the gateway
/// checks the stream when it subscribes again, and its subscriber recovers
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publications_made_while_the_subscription_was_down_are_recovered() {
    let server = RedisServer::spawn().await;
    let namespace = unique_namespace();
    let (gateway, api, mut client, mut reader) = delivered(&server, &namespace, 1).await;

    let mut admin = admin(&server).await;
    kill_subscriptions(&mut admin).await;
    for n in 2..=4 {
        api.publish("feed:1", &data(&json!({ "n": n })), &with_history())
            .await
            .unwrap();
    }
    let key = format!(
        "{namespace}:{{b{}}}:pub:feed:1",
        pulse_presence::bucket_of("feed:1")
    );
    eventually("the gateway subscribes again", || {
        let mut admin = admin.clone();
        let key = key.clone();
        async move {
            let counts: Vec<(String, i64)> = redis::cmd("PUBSUB")
                .arg("SHARDNUMSUB")
                .arg(&key)
                .query_async(&mut admin)
                .await
                .unwrap();
            counts.first().is_some_and(|(_, n)| *n == 1)
        }
    })
    .await;
    reader.read_until(&mut client, 4).await;
    assert_eq!(reader.numbers, [1, 2, 3, 4]);
    gateway.stop().await;
}

/// A gateway on `server`, the test's API, and alice's client subscribed to
/// `feed:1` holding the first `count` publications.
async fn delivered(
    server: &RedisServer,
    namespace: &str,
    count: u64,
) -> (Gateway, Presence, Client, Reader) {
    let gateway =
        Gateway::start_with(history_settings("gw-1"), redis_presence(server, namespace)).await;
    let api = redis_presence(server, namespace);
    let mut client = live(&gateway, &token("alice")).await;
    let mut reader = Reader::default();
    reader.subscribe(&mut client, 1).await;
    for n in 1..=count {
        api.publish("feed:1", &data(&json!({ "n": n })), &with_history())
            .await
            .unwrap();
    }
    reader.read_until(&mut client, count as usize).await;
    (gateway, api, client, reader)
}

async fn admin(server: &RedisServer) -> redis::aio::MultiplexedConnection {
    redis::Client::open(server.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

async fn kill_subscriptions(admin: &mut redis::aio::MultiplexedConnection) {
    let killed: i64 = redis::cmd("CLIENT")
        .arg("KILL")
        .arg("TYPE")
        .arg("pubsub")
        .query_async(admin)
        .await
        .unwrap();
    assert!(killed >= 1);
}

/// The gateway's Redis subscription is killed while publications flow: the
/// ones made before it subscribes again are not delivered live, and the
/// gateway does not deliver past that hole; it tells the subscriber, which
/// recovers every one from history.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_killed_redis_subscription_makes_subscribers_recover() {
    let server = RedisServer::spawn().await;
    let namespace = unique_namespace();
    let (gateway, api, mut client, mut reader) = delivered(&server, &namespace, 5).await;

    kill_subscriptions(&mut admin(&server).await).await;
    // Right after the kill, before the gateway subscribes again.
    for n in 6..=10 {
        api.publish("feed:1", &data(&json!({ "n": n })), &with_history())
            .await
            .unwrap();
    }
    // Then more, once the subscription is back (it is: a publication
    // reaches an instance again).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut n = 11;
    loop {
        let published = api
            .publish("feed:1", &data(&json!({ "n": n })), &with_history())
            .await
            .unwrap();
        n += 1;
        if published.instances == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never subscribed again"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    reader.read_until(&mut client, (n - 1) as usize).await;
    assert_eq!(reader.numbers, (1..n).collect::<Vec<_>>());
    gateway.stop().await;
}

/// Redis restarted without its data while a client was away: it comes
/// back with its old position and is told (`recovered: false`, a new
/// epoch), never given a silent gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn after_redis_restarted_empty_a_client_is_told_it_cannot_recover() {
    let mut server = RedisServer::spawn_persistent().await;
    let namespace = unique_namespace();
    let (gateway, _api, client, reader) = delivered(&server, &namespace, 3).await;
    drop(client);

    let mut admin = admin(&server).await;
    let () = redis::cmd("FLUSHALL")
        .query_async(&mut admin)
        .await
        .unwrap();
    server.shutdown_saving().await;
    server.restart().await;

    let mut client = live(&gateway, &token("alice")).await;
    let since = json!({"offset": reader.offset, "epoch": reader.epoch});
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let answer = loop {
        let answer = support::request(
            &mut client,
            json!({"type": "subscribe", "id": 2, "channel": "feed:1", "since": since}),
        )
        .await;
        // `unavailable` while the gateway reconnects to Redis.
        if answer["type"] == "subscribed" {
            break answer;
        }
        assert_eq!(answer["code"], "unavailable", "{answer}");
        assert!(
            tokio::time::Instant::now() < deadline,
            "Redis never came back"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(answer["recovered"], json!(false), "{answer}");
    assert_eq!(answer["publications"], json!([]));
    assert_ne!(answer["epoch"], json!(reader.epoch), "a new epoch");
    assert_eq!(answer["offset"], json!(0));
    gateway.stop().await;
}

/// A failover that lost the last writes: the promoted replica holds fewer
/// publications than the gateway delivered. When its subscription comes
/// back the gateway sees the stream behind what it delivered: the history
/// gets a new epoch and the subscriber, told to resubscribe, hears
/// `recovered: false` (its position named writes that are gone), instead
/// of taking the new publications' reused offsets for ones it has.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_stream_that_lost_writes_gets_a_new_epoch_and_subscribers_are_told() {
    let server = RedisServer::spawn().await;
    let namespace = unique_namespace();
    let (gateway, api, mut client, reader) = delivered(&server, &namespace, 5).await;

    // The failover: Redis holds 1 to 3 only, in one step, and then the
    // subscription drops. Dropped first, the gateway once came back between
    // the two writes, found the stream behind and started a new epoch,
    // deleting the list the second write was to shorten.
    let mut admin = admin(&server).await;
    let tag = format!(
        "{namespace}:{{b{}}}",
        pulse_presence::channel_bucket("feed:1")
    );
    let (lost,): (Vec<String>,) = redis::pipe()
        .atomic()
        .cmd("HSET")
        .arg(format!("{tag}:meta:feed:1"))
        .arg("o")
        .arg(3)
        .ignore()
        .cmd("RPOP")
        .arg(format!("{tag}:history:feed:1"))
        .arg(2)
        .query_async(&mut admin)
        .await
        .unwrap();
    assert_eq!(lost.len(), 2, "4 and 5 were in the history: {lost:?}");
    kill_subscriptions(&mut admin).await;

    let told = next_json(&mut client).await;
    assert_eq!(
        told,
        json!({"type": "unsubscribed", "channel": "feed:1", "code": "resubscribe"})
    );
    let answer = support::request(
        &mut client,
        json!({"type": "subscribe", "id": 2, "channel": "feed:1", "since": {"offset": 5, "epoch": reader.epoch}}),
    )
    .await;
    assert_eq!(answer["recovered"], json!(false), "{answer}");
    assert_ne!(answer["epoch"], json!(reader.epoch), "a new epoch");
    // What is published next is new, under the new epoch.
    let published = api
        .publish("feed:1", &data(&json!({ "n": 6 })), &with_history())
        .await
        .unwrap();
    assert_eq!(published.epoch.as_deref(), answer["epoch"].as_str());
    let live = next_json(&mut client).await;
    assert_eq!(live["data"], json!({"n": 6}), "{live}");
    gateway.stop().await;
}

/// A `subscribe` with `since` to the personal channel while Redis is away:
/// the request is refused (`unavailable`) and, since its live stream may
/// have gone on meanwhile, the connection is told to subscribe again, after
/// the refusal; the socket stays open.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_personal_recovery_refused_while_redis_is_away_tells_the_client_to_retry() {
    let mut server = RedisServer::spawn_persistent().await;
    let namespace = unique_namespace();
    let gateway = Gateway::start_with(
        personal_history_settings("gw-1"),
        redis_presence(&server, &namespace),
    )
    .await;
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    let connected = next_json(&mut client).await;
    assert_eq!(connected["channel"], "#alice", "{connected}");
    let since = json!({"offset": connected["offset"], "epoch": connected["epoch"]});

    server.shutdown_saving().await;
    let refused = support::request(
        &mut client,
        json!({"type": "subscribe", "id": 1, "channel": "#alice", "since": since}),
    )
    .await;
    assert_eq!(refused["type"], "error", "{refused}");
    assert_eq!(refused["id"], 1, "{refused}");
    assert_eq!(refused["code"], "unavailable", "{refused}");
    let told = next_json(&mut client).await;
    assert_eq!(
        told,
        json!({"type": "unsubscribed", "channel": "#alice", "code": "resubscribe"})
    );
    still_open(&mut client).await;
    server.restart().await;
    gateway.stop().await;
}
