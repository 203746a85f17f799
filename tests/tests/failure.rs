//! Presence under failure with real processes: a gateway killed with SIGKILL
//! while it holds hundreds of connections, and one frozen (SIGSTOP) past its
//! lease that comes back, and Redis away with its data for longer than the
//! lease.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use futures_util::StreamExt;
use pulse_e2e::*;
use pulse_protocol::proto::presence::v1::EventKind;

const USERS: usize = 100;
const TABS: usize = 3;

#[tokio::test]
async fn a_killed_gateway_is_reaped_with_events_within_the_lease() {
    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = Service::presence(redis.url(), &namespace, &["--reap-interval", "500ms"]).await;
    let mut gateway = Service::gateway(
        redis.url(),
        &namespace,
        &["--instance-id", "doomed", "--lease-ttl", "3s"],
    )
    .await;
    let mut client = pulse_e2e::presence_client(presence.grpc_url()).await;
    let mut watch = watch(&mut client, &[]).await;

    // 100 users with 3 tabs each: 300 sockets, all held open.
    let mut sockets = Vec::new();
    for user in 0..USERS {
        let query = format!("?token={}", token(&format!("user-{user}")));
        for _ in 0..TABS {
            let mut socket = connect(gateway.addr, &query).await;
            assert_eq!(next_json(&mut socket).await["type"], "connected");
            sockets.push(socket);
        }
    }
    eventually("300 registered", Duration::from_secs(30), || async {
        online_counts(&client).await.unwrap().1 == (USERS * TABS) as u64
    })
    .await;
    // Drain the connect events so that what follows is the death alone.
    let mut seen = 0;
    while seen < USERS * TABS + USERS {
        next_watch(&mut watch).await;
        seen += 1;
    }

    gateway.kill().await;
    let killed = Instant::now();
    let mut disconnected: HashMap<String, usize> = HashMap::new();
    let mut offline: HashMap<String, usize> = HashMap::new();
    while offline.len() < USERS || disconnected.values().sum::<usize>() < USERS * TABS {
        let event = next_watch(&mut watch).await;
        assert_eq!(event.instance_id, "doomed");
        match event.kind() {
            EventKind::Disconnected => *disconnected.entry(event.user_id).or_default() += 1,
            EventKind::Offline => *offline.entry(event.user_id).or_default() += 1,
            other => panic!("unexpected {other:?} after the kill"),
        }
    }
    let elapsed = killed.elapsed();
    eprintln!(
        "kill -9 to the last offline event for {} connections: {elapsed:?}",
        USERS * TABS
    );
    assert!(
        disconnected.values().all(|&n| n == TABS),
        "{TABS} disconnected per user"
    );
    assert!(offline.values().all(|&n| n == 1), "one offline per user");
    assert_eq!(online_counts(&client).await.unwrap(), (0, 0), "no phantoms");
    drop(sockets);
}

/// A gateway that stalls longer than its lease (SIGSTOP) is reaped: its
/// users go offline, since nobody can reach them. When it runs again it
/// learns at its next renewal that its lease was lost and registers its
/// sockets again: each user comes back online once, `Send` reaches them, and
/// a socket closed afterwards leaves no phantom.
#[tokio::test]
async fn a_gateway_frozen_past_its_lease_is_reaped_then_registers_its_sockets_again() {
    const FROZEN_USERS: usize = 5;
    let redis = RedisServer::start().await;
    let OneGateway {
        presence: _presence,
        gateway,
        mut client,
        mut watch,
        mut sockets,
        ..
    } = OneGateway::start(redis.url(), "frozen", "ice", FROZEN_USERS).await;
    let kinds = |events: &mut HashMap<(String, i32), usize>,
                 event: pulse_protocol::proto::presence::v1::PresenceEvent| {
        *events.entry((event.user_id, event.kind)).or_default() += 1;
    };

    gateway.signal("STOP").await;
    let mut reaped = HashMap::new();
    while reaped.len() < 2 * FROZEN_USERS {
        let event = next_watch(&mut watch).await;
        assert!(
            matches!(event.kind(), EventKind::Disconnected | EventKind::Offline),
            "{event:?} while the gateway is frozen"
        );
        kinds(&mut reaped, event);
    }
    assert_eq!(online_counts(&client).await.unwrap(), (0, 0), "reaped");

    gateway.signal("CONT").await;
    let mut back = HashMap::new();
    while back.len() < 2 * FROZEN_USERS {
        let event = next_watch(&mut watch).await;
        assert!(
            matches!(event.kind(), EventKind::Connected | EventKind::Online),
            "{event:?} after the gateway runs again"
        );
        kinds(&mut back, event);
    }
    assert!(back.values().all(|&n| n == 1), "once each: {back:?}");
    assert_eq!(
        online_counts(&client).await.unwrap(),
        (FROZEN_USERS as u64, FROZEN_USERS as u64)
    );
    let user = get_user(&mut client, "ice-0").await;
    assert_eq!(user.connections.len(), 1, "{user:?}");
    assert_eq!(user.connections[0].instance_id, "frozen");

    // The sockets were served all along: Send reaches one, and closing
    // another takes its user offline.
    let sent = client
        .send(pulse_protocol::proto::presence::v1::SendRequest {
            user_id: "ice-1".into(),
            data_json: r#"{"thawed":true}"#.into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.connections, 1, "{sent:?}");
    let message = next_json(&mut sockets[1]).await;
    assert_eq!(message["data"]["thawed"], true, "{message}");
    sockets[2].close(None).await.unwrap();
    let mut gone = HashMap::new();
    while gone.len() < 2 {
        let event = next_watch(&mut watch).await;
        assert_eq!(event.user_id, "ice-2", "{event:?}");
        kinds(&mut gone, event);
    }
    eventually("ice-2 offline", Duration::from_secs(10), || async {
        online_counts(&client).await.unwrap() == (FROZEN_USERS as u64 - 1, FROZEN_USERS as u64 - 1)
    })
    .await;
}

/// Redis goes away, with its data, for three times the gateway's lease and
/// comes back: nobody could renew meanwhile, so lease time did not run. No
/// live gateway is reaped, nobody's event says `disconnected` or `offline`,
/// and every user is still online with their socket served.
#[tokio::test]
async fn redis_restarted_with_its_data_after_three_leases_reaps_no_live_gateway() {
    redis_away_for_three_leases(Outage::RestartWithData).await;
}

/// The same when the primary dies and, three leases later, its replica is
/// promoted and the address moves to it (as Sentinel or a virtual IP does):
/// another Redis process, with everything the primary had.
#[tokio::test]
async fn a_replica_promoted_after_three_leases_reaps_no_live_gateway() {
    redis_away_for_three_leases(Outage::FailoverToReplica).await;
}

/// How Redis goes away.
#[derive(Clone, Copy)]
enum Outage {
    /// `SHUTDOWN SAVE`, then started again on its port with its data.
    RestartWithData,
    /// The primary killed; its replica promoted (`REPLICAOF NO ONE`) and a
    /// proxy's address moved to it.
    FailoverToReplica,
}

async fn redis_away_for_three_leases(outage: Outage) {
    const USERS: usize = 5;
    const AWAY: Duration = Duration::from_secs(3);
    let mut redis = match outage {
        Outage::RestartWithData => RedisServer::spawn_persistent().await,
        Outage::FailoverToReplica => RedisServer::spawn().await,
    };
    let replica = match outage {
        Outage::RestartWithData => None,
        Outage::FailoverToReplica => Some(replica_of(&redis).await),
    };
    let proxy = Proxy::start(address(redis.url())).await;
    let url = match outage {
        Outage::RestartWithData => redis.url().to_owned(),
        Outage::FailoverToReplica => proxy.redis_url(),
    };
    let OneGateway {
        presence,
        gateway,
        mut client,
        watch,
        mut sockets,
        position,
    } = OneGateway::start(&url, "patient", "calm", USERS).await;
    drop(watch);
    let resynced = |gateway: &Service| {
        gateway
            .logs()
            .iter()
            .filter(|line| line.contains("presence re-synchronised"))
            .count()
    };
    let resyncs_before = resynced(&gateway);

    // The replica, when there is one, is the failover's.
    match &replica {
        None => {
            redis.shutdown_saving().await;
            tokio::time::sleep(AWAY).await;
            redis.restart().await;
        }
        Some(replica) => {
            // Every write of the primary reached the replica first.
            let mut primary = connection(redis.url()).await;
            let acked: i64 = redis::cmd("WAIT")
                .arg(1)
                .arg(5000)
                .query_async(&mut primary)
                .await
                .unwrap();
            assert_eq!(acked, 1, "the replica acknowledged every write");
            redis.stop().await;
            proxy.switch(None);
            tokio::time::sleep(AWAY).await;
            let mut promoted = connection(replica.url()).await;
            redis::cmd("REPLICAOF")
                .arg("NO")
                .arg("ONE")
                .query_async::<()>(&mut promoted)
                .await
                .unwrap();
            proxy.switch(Some(address(replica.url())));
        }
    }

    // The gateway renews (and re-syncs) once Redis is back; by then any
    // reap of a lease taken as expired would have happened.
    eventually(
        "the gateway re-synchronised",
        Duration::from_secs(20),
        || async { resynced(&gateway) > resyncs_before },
    )
    .await;
    // Markers: each user opens a second socket after the outage. Events are
    // in order per user, so whatever happened to a user in between (a reap
    // would be `disconnected`, `offline`) comes before their marker.
    let mut markers = Vec::new();
    for user in 0..USERS {
        markers.push(open(&gateway, &format!("calm-{user}")).await);
    }
    // pulse-presence may still be reconnecting to Redis: retry a while.
    let mut attempts = 0;
    let mut events = loop {
        match client
            .watch(pulse_protocol::proto::presence::v1::WatchRequest {
                all: true,
                since: position.clone(),
                ..Default::default()
            })
            .await
        {
            Ok(stream) => break stream.into_inner(),
            Err(status) => {
                attempts += 1;
                assert!(attempts < 200, "Watch refused for 20 s: {status:?}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    };
    let mut marked = std::collections::HashSet::new();
    while marked.len() < USERS {
        let event = next_watch(&mut events).await;
        assert!(
            matches!(event.kind(), EventKind::Connected),
            "only the markers' connects after the outage, not {event:?}"
        );
        assert!(marked.insert(event.user_id.clone()), "{event:?}");
    }
    let metrics: std::net::SocketAddr = presence
        .log_field("serving metrics", "metrics_addr")
        .expect("pulse-presence logs its metrics address")
        .parse()
        .unwrap();
    let (_, body) = get(metrics, "/metrics").await;
    let reaped = body
        .lines()
        .find_map(|line| line.strip_prefix("pulse_presence_leases_reaped_total "));
    assert!(
        reaped.is_none_or(|count| count.trim() == "0"),
        "no lease reaped: {reaped:?}"
    );
    for user in 0..USERS {
        let seen = get_user(&mut client, &format!("calm-{user}")).await;
        assert_eq!(seen.connections.len(), 2, "{seen:?}");
    }
    let sent = client
        .send(pulse_protocol::proto::presence::v1::SendRequest {
            user_id: "calm-3".into(),
            data_json: "1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.connections, 2, "the socket from before the outage too");
    assert_eq!(next_json(&mut sockets[3]).await["data"], 1);
    assert_eq!(next_json(&mut markers[3]).await["data"], 1);
}

/// `pulse-presence` (reaping every 200 ms) and one gateway with a 1 s lease,
/// with `users` users (`<prefix>-<n>`) holding a socket each on it, and a
/// `Watch` of everyone that has read their connects.
struct OneGateway {
    presence: Service,
    gateway: Service,
    client: Grpc,
    watch: tonic::Streaming<pulse_protocol::proto::presence::v1::PresenceEvent>,
    sockets: Vec<Client>,
    /// The position of the last connect read.
    position: String,
}

impl OneGateway {
    async fn start(url: &str, instance: &str, prefix: &str, users: usize) -> Self {
        let namespace = unique_namespace();
        let presence = Service::presence(url, &namespace, &["--reap-interval", "200ms"]).await;
        let gateway = Service::gateway(
            url,
            &namespace,
            &["--instance-id", instance, "--lease-ttl", "1s"],
        )
        .await;
        let mut client = pulse_e2e::presence_client(presence.grpc_url()).await;
        let mut watch = watch(&mut client, &[]).await;
        let mut sockets = Vec::new();
        for user in 0..users {
            sockets.push(open(&gateway, &format!("{prefix}-{user}")).await);
        }
        let mut position = String::new();
        for _ in 0..2 * users {
            position = next_watch(&mut watch).await.position;
        }
        Self {
            presence,
            gateway,
            client,
            watch,
            sockets,
            position,
        }
    }
}

/// A socket of `user` on `gateway`, once it is `connected`.
async fn open(gateway: &Service, user: &str) -> Client {
    let mut socket = connect(gateway.addr, &format!("?token={}", token(user))).await;
    assert_eq!(next_json(&mut socket).await["type"], "connected");
    socket
}

/// A private `redis-server` replicating `primary`, once it is in sync. In a
/// directory of its own: a replica keeps the copy it receives in
/// `dump.rdb` in its working directory, which would be this source tree.
async fn replica_of(primary: &RedisServer) -> RedisServer {
    let replica = RedisServer::spawn_persistent().await;
    let mut connection = connection(replica.url()).await;
    let port = primary.port().expect("a private primary");
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(port)
        .query_async::<()>(&mut connection)
        .await
        .unwrap();
    eventually("the replica in sync", Duration::from_secs(20), || {
        let mut connection = connection.clone();
        async move {
            let info: String = redis::cmd("INFO")
                .arg("replication")
                .query_async(&mut connection)
                .await
                .unwrap();
            info.contains("master_link_status:up")
        }
    })
    .await;
    replica
}

async fn connection(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// `127.0.0.1:PORT` of a `redis://127.0.0.1:PORT` URL.
fn address(url: &str) -> std::net::SocketAddr {
    url.trim_start_matches("redis://").parse().unwrap()
}

async fn next_watch(
    watch: &mut tonic::Streaming<pulse_protocol::proto::presence::v1::PresenceEvent>,
) -> pulse_protocol::proto::presence::v1::PresenceEvent {
    tokio::time::timeout(Duration::from_secs(30), watch.next())
        .await
        .expect("an event within 30 s")
        .expect("the watch is open")
        .expect("an event, not an error")
}
