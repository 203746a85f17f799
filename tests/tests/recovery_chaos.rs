//! The recovery chaos run, through the real binaries, on one Redis and on a
//! three-master Redis Cluster: a publisher sends a numbered sequence at a
//! steady rate to a channel (HTTP `publish`) and to a user's personal
//! channel (`#alice`, as `Send` would); the user's client holds both, and
//! every few hundred milliseconds its TCP connection is cut (no close
//! frame) and it reconnects to the next gateway with `since`; midway the
//! gateway it is on is killed with kill -9. At the end the client holds
//! every number of both sequences exactly once, in order.

use std::{collections::HashMap, net::SocketAddr, time::Duration};

use futures_util::{SinkExt, StreamExt};
use pulse_e2e::*;
use pulse_presence::testing::RedisCluster;
use serde_json::{Value, json};
use tokio::time::{Instant, timeout};
use tokio_tungstenite::tungstenite::Message;

const CONFIG: &str = r#"
[namespaces.room]
history_size = 1000
history_ttl = "10m"
[personal]
history_size = 1000
history_ttl = "10m"
"#;

const ROOM: &str = "room:chaos";
const PERSONAL: &str = "#alice";
/// Numbers per sequence.
const COUNT: u64 = 250;
/// One number of each sequence per tick.
const TICK: Duration = Duration::from_millis(20);
/// How long the client stays on one connection.
const HOP: Duration = Duration::from_millis(450);

/// The client's view of one channel.
#[derive(Default)]
struct Stream {
    numbers: Vec<u64>,
    offset: u64,
    epoch: String,
    /// A `subscribe` with `since` is on its way: live publications wait
    /// for its answer (the personal channel's start right after
    /// `connected`, and the answer replays from before them: the README's
    /// rule for clients).
    held: Option<Vec<(u64, u64)>>,
}

impl Stream {
    /// Takes one publication: the next offset, or (for `replayed_ok`, a
    /// live one held while the answer replayed from before it) one taken
    /// already. Any other doubling or gap fails.
    fn take(&mut self, channel: &str, offset: u64, n: u64, replayed_ok: bool) {
        if replayed_ok && offset <= self.offset {
            return;
        }
        assert_eq!(
            offset,
            self.offset + 1,
            "{channel}: offset {offset} after {} (a gap or a doubling)",
            self.offset
        );
        self.offset = offset;
        self.numbers.push(n);
    }
}

fn number(data: &Value) -> u64 {
    data["n"].as_u64().unwrap()
}

/// What the client does with one frame; `Some(channel)` when the server
/// told it to subscribe to `channel` again.
fn on_frame(streams: &mut HashMap<&'static str, Stream>, frame: &Value) -> Option<&'static str> {
    let channel = match frame["channel"].as_str() {
        Some(ROOM) => ROOM,
        Some(PERSONAL) => PERSONAL,
        _ => panic!("unexpected {frame}"),
    };
    let stream = streams.get_mut(channel).unwrap();
    match frame["type"].as_str().unwrap() {
        "publication" => {
            let (offset, n) = (frame["offset"].as_u64().unwrap(), number(&frame["data"]));
            match &mut stream.held {
                Some(held) => held.push((offset, n)),
                None => stream.take(channel, offset, n, false),
            }
            None
        }
        "subscribed" => {
            let epoch = frame["epoch"].as_str().unwrap().to_owned();
            if frame.get("recovered").is_some() {
                assert_eq!(frame["recovered"], json!(true), "{channel}: {frame}");
                assert_eq!(epoch, stream.epoch, "{channel}: the same history");
                for publication in frame["publications"].as_array().unwrap() {
                    stream.take(
                        channel,
                        publication["offset"].as_u64().unwrap(),
                        number(&publication["data"]),
                        false,
                    );
                }
                assert_eq!(frame["offset"].as_u64().unwrap(), stream.offset);
            } else {
                stream.offset = frame["offset"].as_u64().unwrap();
            }
            stream.epoch = epoch;
            for (offset, n) in stream.held.take().unwrap_or_default() {
                stream.take(channel, offset, n, true);
            }
            None
        }
        "unsubscribed" => {
            assert_eq!(frame["code"], "resubscribe", "{frame}");
            Some(channel)
        }
        other => panic!("unexpected {other}: {frame}"),
    }
}

async fn subscribe(
    client: &mut Client,
    streams: &mut HashMap<&'static str, Stream>,
    channel: &str,
) {
    let stream = streams.get_mut(channel).unwrap();
    let mut request = json!({"type": "subscribe", "id": 1, "channel": channel});
    if !stream.epoch.is_empty() {
        request["since"] = json!({"offset": stream.offset, "epoch": stream.epoch});
        stream.held = Some(Vec::new());
    }
    // A gateway killed under the client: the reconnect notices.
    let _ = client.send(Message::text(request.to_string())).await;
}

/// Publishes `n` on both sequences, retrying (idempotently) until it is taken.
async fn publish(http: SocketAddr, n: u64) {
    for channel in [ROOM, PERSONAL] {
        let body = json!({"channel": channel, "data": {"n": n}, "idempotency_key": format!("{channel}-{n}")});
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let (status, answer) = post_api(http, "/api/v1/publish", &body.to_string()).await;
            if status == 200 {
                break;
            }
            assert!(Instant::now() < deadline, "publish {n}: {status} {answer}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

async fn run(redis_url: &str, cluster: bool) {
    let config = ConfigFile::new(CONFIG);
    let namespace = unique_namespace();
    let mut extra = vec!["--config", config.path()];
    if cluster {
        extra.push("--redis-cluster");
    }
    let presence = Service::presence(redis_url, &namespace, &extra).await;
    let http = presence.http_addr().await;
    let mut gateways = Vec::new();
    for instance in ["gw-a", "gw-b", "gw-c"] {
        let mut args = extra.clone();
        args.extend(["--instance-id", instance, "--lease-ttl", "1s"]);
        gateways.push(Some(Service::gateway(redis_url, &namespace, &args).await));
    }

    let mut streams: HashMap<&'static str, Stream> =
        [(ROOM, Stream::default()), (PERSONAL, Stream::default())].into();
    // Starts once both streams have a position (before, a number would be
    // before the client's start).
    let mut publisher = None;

    let mut on = 0;
    let mut hops = 0;
    let mut killed = false;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let addr = gateways[on].as_ref().unwrap().addr;
        let mut client = connect(addr, &format!("?token={}", token("alice"))).await;
        let connected = timeout(Duration::from_secs(10), client.next()).await;
        let Ok(Some(Ok(Message::Text(connected)))) = connected else {
            panic!("no connected from {addr}: {connected:?}");
        };
        let connected: Value = serde_json::from_str(&connected).unwrap();
        assert_eq!(connected["type"], "connected", "{connected}");
        let personal = streams.get_mut(PERSONAL).unwrap();
        if personal.epoch.is_empty() {
            // The first connection: the personal stream starts here.
            personal.offset = connected["offset"].as_u64().unwrap();
            personal.epoch = connected["epoch"].as_str().unwrap().to_owned();
        } else {
            subscribe(&mut client, &mut streams, PERSONAL).await;
        }
        subscribe(&mut client, &mut streams, ROOM).await;

        // Read until the hop (or the kill, midway, of this very gateway).
        let hop_at = Instant::now() + HOP;
        let kill_now = !killed && hops == 6;
        loop {
            let done = streams.values().all(|s| s.numbers.len() == COUNT as usize);
            if done || Instant::now() >= hop_at || kill_now {
                break;
            }
            let frame = match timeout(Duration::from_millis(50), client.next()).await {
                Err(_) => continue,
                Ok(Some(Ok(Message::Text(text)))) => serde_json::from_str::<Value>(&text).unwrap(),
                Ok(Some(Ok(_))) => continue,
                Ok(other) => panic!("the connection to {addr} ended: {other:?}"),
            };
            if let Some(channel) = on_frame(&mut streams, &frame) {
                subscribe(&mut client, &mut streams, channel).await;
            }
            if publisher.is_none() && !streams[ROOM].epoch.is_empty() {
                publisher = Some(tokio::spawn(async move {
                    let mut ticks = tokio::time::interval(TICK);
                    for n in 1..=COUNT {
                        ticks.tick().await;
                        publish(http, n).await;
                    }
                }));
            }
        }
        if kill_now {
            gateways[on].as_mut().unwrap().kill().await;
            gateways[on] = None;
            killed = true;
            // Whatever it had in flight is gone with it; the reads end.
            while let Ok(Some(Ok(_))) = timeout(Duration::from_secs(5), client.next()).await {}
        }
        // Cut the TCP connection: no close frame.
        drop(client);
        for stream in streams.values_mut() {
            // An answer that never came: the next subscribe asks again.
            stream.held = None;
        }
        if streams.values().all(|s| s.numbers.len() == COUNT as usize) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still missing: room {} of {COUNT}, personal {} of {COUNT}",
            streams[ROOM].numbers.len(),
            streams[PERSONAL].numbers.len()
        );
        hops += 1;
        on = (1..=gateways.len())
            .map(|step| (on + step) % gateways.len())
            .find(|&next| gateways[next].is_some())
            .unwrap();
    }
    publisher.expect("the publisher started").await.unwrap();
    let expected: Vec<u64> = (1..=COUNT).collect();
    assert_eq!(streams[ROOM].numbers, expected, "the channel");
    assert_eq!(streams[PERSONAL].numbers, expected, "the personal channel");
    assert!(killed, "a gateway was killed midway");
    assert!(hops >= 8, "the client moved {hops} times");
}

#[tokio::test]
async fn one_redis() {
    let redis = RedisServer::start().await;
    run(redis.url(), false).await;
}

#[tokio::test]
async fn redis_cluster() {
    let cluster = RedisCluster::start().await;
    run(&cluster.urls().join(","), true).await;
}
