//! Recovery on `/ws` with real WebSocket clients, for a namespace with
//! history: `subscribe` with `since` replays what was missed and goes on
//! live with no gap and no doubling at the seam (publications keep coming
//! while clients reconnect to either of two gateways); a gateway whose
//! Redis subscription is killed while publications flow does not deliver
//! past the hole but tells its subscribers, who recover every publication.

mod support;

use std::{sync::Arc, time::Duration};

use pulse_gateway::Settings;
use pulse_presence::{
    HistoryOptions, Namespaces, Presence, PublishOptions, RedisOptions,
    testing::{RedisServer, unique_namespace},
};
use serde_json::{Value, json};
use tokio::task::JoinHandle;

use crate::support::*;

const CONFIG: &str = r#"
[namespaces.feed]
allow_publish = true
history_size = 1000
history_ttl = "10m"
"#;

const HISTORY: HistoryOptions = HistoryOptions {
    size: 1000,
    ttl: Duration::from_secs(600),
};

fn history_settings(instance: &str) -> Settings {
    let mut settings = settings();
    settings.instance_id = instance.to_owned();
    settings.namespaces = Arc::new(Namespaces::parse(CONFIG, "test.toml").unwrap());
    settings
}

/// A presence client of `server` under `namespace` (each gateway and the
/// test's API get their own, as separate processes would).
fn redis_presence(server: &RedisServer, namespace: &str) -> Presence {
    Presence::redis(RedisOptions::new(server.url()).with_namespace(namespace.to_owned())).unwrap()
}

fn with_history() -> PublishOptions<'static> {
    PublishOptions {
        history: Some(HISTORY),
        ..PublishOptions::default()
    }
}

/// A client's view of one channel: the numbers it got, and its position.
#[derive(Default)]
struct Reader {
    numbers: Vec<u64>,
    offset: u64,
    epoch: String,
}

impl Reader {
    /// Takes one publication (live or replayed); panics on a doubled or
    /// missing offset.
    fn take(&mut self, offset: u64, data: &Value) {
        assert_eq!(
            offset,
            self.offset + 1,
            "offsets follow each other (got {offset} after {})",
            self.offset
        );
        self.offset = offset;
        self.numbers.push(data["n"].as_u64().unwrap());
    }

    /// Subscribes (with `since` after the first time) and takes the answer.
    async fn subscribe(&mut self, client: &mut Client, id: u64) {
        let mut request = json!({"type": "subscribe", "id": id, "channel": "feed:1"});
        if !self.epoch.is_empty() {
            request["since"] = json!({"offset": self.offset, "epoch": self.epoch});
        }
        let answer = support::request(client, request).await;
        assert_eq!(answer["type"], "subscribed", "{answer}");
        let epoch = answer["epoch"].as_str().unwrap().to_owned();
        if self.epoch.is_empty() {
            self.offset = answer["offset"].as_u64().unwrap();
        } else {
            assert_eq!(answer["recovered"], json!(true), "{answer}");
            assert_eq!(epoch, self.epoch);
            for publication in answer["publications"].as_array().unwrap() {
                self.take(
                    publication["offset"].as_u64().unwrap(),
                    &publication["data"],
                );
            }
            assert_eq!(answer["offset"].as_u64().unwrap(), self.offset);
        }
        self.epoch = epoch;
    }

    /// Reads until it holds `n` numbers (resubscribing when told to).
    async fn read_until(&mut self, client: &mut Client, n: usize) {
        let mut id = 100;
        while self.numbers.len() < n {
            let message = next_json(client).await;
            match message["type"].as_str() {
                Some("publication") => {
                    self.take(message["offset"].as_u64().unwrap(), &message["data"]);
                }
                Some("unsubscribed") => {
                    assert_eq!(message["code"], "resubscribe", "{message}");
                    id += 1;
                    self.subscribe(client, id).await;
                }
                _ => panic!("unexpected {message}"),
            }
        }
    }
}

fn publisher(presence: Presence, count: u64, pause: Duration) -> JoinHandle<()> {
    tokio::spawn(async move {
        for n in 1..=count {
            presence
                .publish("feed:1", &data(&json!({ "n": n })), &with_history())
                .await
                .unwrap();
            tokio::time::sleep(pause).await;
        }
    })
}

#[tokio::test]
async fn a_subscribe_with_since_replays_what_was_missed_then_goes_on_live() {
    let gateway = Gateway::start(history_settings("gw-1")).await;
    let mut client = live(&gateway, &token("alice")).await;
    let mut reader = Reader::default();
    reader.subscribe(&mut client, 1).await;
    assert_eq!(reader.offset, 0, "a new channel");
    let publish = |n: u64| {
        let presence = gateway.presence.clone();
        async move {
            presence
                .publish("feed:1", &data(&json!({ "n": n })), &with_history())
                .await
                .unwrap()
        }
    };
    for n in 1..=3 {
        assert_eq!(publish(n).await.offset, Some(n));
    }
    reader.read_until(&mut client, 3).await;
    drop(client);

    for n in 4..=6 {
        publish(n).await;
    }
    let mut client = live(&gateway, &token("alice")).await;
    reader.subscribe(&mut client, 2).await;
    assert_eq!(reader.numbers, [1, 2, 3, 4, 5, 6], "replayed in order");
    publish(7).await;
    reader.read_until(&mut client, 7).await;

    // A client's own publish gets its offset.
    let answer = support::request(
        &mut client,
        json!({"type": "publish", "id": 9, "channel": "feed:1", "data": {"n": 8}}),
    )
    .await;
    assert_eq!(answer, json!({"type": "published", "id": 9, "offset": 8}));
    reader.read_until(&mut client, 8).await;

    // Another epoch: not recovered, and told the current one.
    let answer = support::request(
        &mut client,
        json!({"type": "subscribe", "id": 10, "channel": "feed:2", "since": {"offset": 3, "epoch": "gone"}}),
    )
    .await;
    assert_eq!(answer["recovered"], json!(false), "{answer}");
    assert_eq!(answer["publications"], json!([]));
    assert!(answer["epoch"].as_str().is_some_and(|e| e != "gone"));
    gateway.stop().await;
}

/// Publications keep coming while a client drops its connection and
/// subscribes again with `since` on the other gateway, over and over: it
/// ends with every number once, in order (the seam between the replay and
/// the live stream neither loses nor doubles one).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_seam_holds_while_publications_keep_coming() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = || redis_presence(&server, &namespace);
    let gateways = [
        Gateway::start_with(history_settings("gw-1"), presence()).await,
        Gateway::start_with(history_settings("gw-2"), presence()).await,
    ];
    let total = 400;
    let mut reader = Reader::default();
    let mut client = live(&gateways[0], &token("alice")).await;
    reader.subscribe(&mut client, 1).await;
    let publishing = publisher(presence(), total, Duration::from_millis(2));
    let mut round = 0;
    while reader.numbers.len() < total as usize {
        let target = (reader.numbers.len() + 25).min(total as usize);
        reader.read_until(&mut client, target).await;
        drop(client);
        round += 1;
        client = live(&gateways[round % 2], &token("alice")).await;
        reader.subscribe(&mut client, 1).await;
    }
    publishing.await.unwrap();
    assert_eq!(reader.numbers, (1..=total).collect::<Vec<_>>());
    assert!(round >= 10, "it moved {round} times");
    for gateway in gateways {
        gateway.stop().await;
    }
}

/// Publications made only while the gateway's Redis subscription was down
/// (none after it came back to reveal the hole by its offset): the gateway
/// checks the stream when it subscribes again, and its subscriber recovers
/// them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn publications_made_while_the_subscription_was_down_are_recovered() {
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = || redis_presence(&server, &namespace);
    let gateway = Gateway::start_with(history_settings("gw-1"), presence()).await;
    let mut client = live(&gateway, &token("alice")).await;
    let mut reader = Reader::default();
    reader.subscribe(&mut client, 1).await;
    let api = presence();
    api.publish("feed:1", &data(&json!({ "n": 1 })), &with_history())
        .await
        .unwrap();
    reader.read_until(&mut client, 1).await;

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
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = || redis_presence(&server, &namespace);
    let gateway = Gateway::start_with(history_settings("gw-1"), presence()).await;
    let mut client = live(&gateway, &token("alice")).await;
    let mut reader = Reader::default();
    reader.subscribe(&mut client, 1).await;
    let api = presence();
    for n in 1..=5 {
        api.publish("feed:1", &data(&json!({ "n": n })), &with_history())
            .await
            .unwrap();
    }
    reader.read_until(&mut client, 5).await;

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

/// With `[personal] history_size`, what `Send` publishes to a user while
/// they are away is recovered by a `subscribe` to their personal channel
/// with `since`, from `connected`'s position, on another gateway; and
/// publications keep arriving live, once, around the recovery.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_send_made_while_the_user_was_away_is_recovered() {
    const PERSONAL: &str = "[personal]\nhistory_size = 100\nhistory_ttl = \"10m\"\n";
    let settings = |instance: &str| {
        let mut settings = settings();
        settings.instance_id = instance.to_owned();
        settings.namespaces = Arc::new(Namespaces::parse(PERSONAL, "test.toml").unwrap());
        settings
    };
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = || redis_presence(&server, &namespace);
    let one = Gateway::start_with(settings("gw-1"), presence()).await;
    let two = Gateway::start_with(settings("gw-2"), presence()).await;
    let api = presence();
    api.set_personal_history(HISTORY);

    let mut client = one.connect(&format!("?token={}", token("alice"))).await;
    let connected = next_json(&mut client).await;
    assert_eq!(connected["type"], "connected");
    assert_eq!(connected["offset"], json!(0));
    let epoch = connected["epoch"].as_str().unwrap().to_owned();
    eventually("alice is registered", || {
        let api = api.clone();
        async move { api.user("alice").await.unwrap().len() == 1 }
    })
    .await;
    assert_eq!(api.send("alice", data(&json!({"n": 1}))).await.unwrap(), 1);
    let live = next_json(&mut client).await;
    assert_eq!(
        live,
        json!({"type": "publication", "channel": "#alice", "offset": 1, "data": {"n": 1}})
    );
    drop(client);
    eventually("alice is gone", || {
        let api = api.clone();
        async move { api.user("alice").await.unwrap().is_empty() }
    })
    .await;
    for n in 2..=3 {
        assert_eq!(
            api.send("alice", data(&json!({ "n": n }))).await.unwrap(),
            0
        );
    }
    let mut client = two.connect(&format!("?token={}", token("alice"))).await;
    let connected = next_json(&mut client).await;
    assert_eq!(connected["offset"], json!(3), "{connected}");
    let answer = support::request(
        &mut client,
        json!({"type": "subscribe", "id": 1, "channel": "#alice", "since": {"offset": 1, "epoch": epoch}}),
    )
    .await;
    assert_eq!(answer["recovered"], json!(true), "{answer}");
    assert_eq!(
        answer["publications"],
        json!([{"offset": 2, "data": {"n": 2}}, {"offset": 3, "data": {"n": 3}}])
    );
    api.send("alice", data(&json!({"n": 4}))).await.unwrap();
    // Live; or, should this gateway's Redis subscription have dropped
    // meanwhile (a loaded machine misses a ping), told to recover it.
    let live = next_json(&mut client).await;
    let four = if live["type"] == "unsubscribed" {
        assert_eq!(live["code"], "resubscribe", "{live}");
        let answer = support::request(
            &mut client,
            json!({"type": "subscribe", "id": 2, "channel": "#alice", "since": {"offset": 3, "epoch": answer["epoch"]}}),
        )
        .await;
        answer["publications"][0].clone()
    } else {
        live
    };
    assert_eq!(four["offset"], json!(4), "{four}");
    assert_eq!(four["data"], json!({"n": 4}), "{four}");
    one.stop().await;
    two.stop().await;
}

/// The personal channel is live from `connected` on, so frames of it may
/// wait in the connection's queue when the client's `subscribe` with
/// `since` is answered: the answer comes after them, and nothing that it
/// replays arrives again after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nothing_a_personal_replay_holds_arrives_again_after_it() {
    const PERSONAL: &str = "[personal]\nhistory_size = 1000\nhistory_ttl = \"10m\"\n";
    let mut settings = settings();
    settings.namespaces = Arc::new(Namespaces::parse(PERSONAL, "test.toml").unwrap());
    let gateway = Gateway::start(settings).await;
    let presence = gateway.presence.clone();
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    let connected = next_json(&mut client).await;
    let epoch = connected["epoch"].as_str().unwrap().to_owned();
    // Big frames the client does not read yet: the socket's buffers fill
    // and the rest waits in the connection's queue.
    let burst = 200;
    let padding = "x".repeat(60 * 1024);
    for n in 1..=burst {
        presence
            .send("alice", data(&json!({ "n": n, "padding": padding })))
            .await
            .unwrap();
    }
    send_json(
        &mut client,
        json!({"type": "subscribe", "id": 1, "channel": "#alice", "since": {"offset": 0, "epoch": epoch}}),
    )
    .await;
    let answered = loop {
        let frame = next_json(&mut client).await;
        match frame["type"].as_str() {
            Some("subscribed") => {
                assert_eq!(frame["recovered"], json!(true), "{frame}");
                break frame["offset"].as_u64().unwrap();
            }
            // Live before the answer: the client holds these (README).
            Some("publication") => {}
            _ => panic!("unexpected {frame}"),
        }
    };
    // A marker after the answer: what comes before it is what followed
    // the answer.
    presence
        .send("alice", data(&json!({ "n": "marker" })))
        .await
        .unwrap();
    let mut after = Vec::new();
    loop {
        let frame = next_json(&mut client).await;
        assert_eq!(frame["type"], "publication", "{frame}");
        if frame["data"]["n"] == "marker" {
            break;
        }
        after.push(frame["offset"].as_u64().unwrap());
    }
    assert!(
        after.iter().all(|&offset| offset > answered),
        "after the answer (offset {answered}) came {after:?}"
    );
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
    let server = RedisServer::start().await;
    let namespace = unique_namespace();
    let (gateway, api, mut client, reader) = delivered(&server, &namespace, 5).await;

    // The failover: the subscription drops, and Redis holds 1 to 3 only.
    let mut admin = admin(&server).await;
    kill_subscriptions(&mut admin).await;
    let tag = format!(
        "{namespace}:{{b{}}}",
        pulse_presence::channel_bucket("feed:1")
    );
    let () = redis::cmd("HSET")
        .arg(format!("{tag}:meta:feed:1"))
        .arg("o")
        .arg(3)
        .query_async(&mut admin)
        .await
        .map(|_: i64| ())
        .unwrap();
    let _: i64 = redis::cmd("XDEL")
        .arg(format!("{tag}:hist:feed:1"))
        .arg("4-0")
        .arg("5-0")
        .query_async(&mut admin)
        .await
        .unwrap();

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
