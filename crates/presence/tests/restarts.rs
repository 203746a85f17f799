//! Redis restarted with its data, or a replica promoted, after longer than
//! the lease ttl: lease time does not run while Redis is away, so no live
//! gateway is reaped for it, and a dead one still is. Against a private
//! `redis-server` that saves on shutdown, and a private three-master Redis
//! Cluster one of whose masters restarts.

mod support;

use std::time::Duration;

use pulse_presence::{
    Presence, RedisOptions,
    testing::{RedisCluster, RedisServer, unique_namespace},
};
use pulse_protocol::EventKind::*;
use support::{Events, bus_ready, expect, record, register, summary, wait_epoch};

const TTL: Duration = Duration::from_millis(300);

async fn store_with(mut options: RedisOptions) -> Presence {
    options.lease_ttl = TTL;
    let presence = Presence::redis(options).unwrap();
    bus_ready(&presence).await;
    presence
}

/// Reaps once; what it reaped, leaving out the settle markers' instance.
async fn reap_once(presence: &Presence) -> Vec<(String, u64)> {
    let mut reaped = presence.reap_expired().await.unwrap();
    reaped.retain(|(instance, _)| instance != "marker");
    reaped
}

/// Redis shut down with a save and started again from it, after longer than
/// the lease ttl: every lease it holds is past its deadline, but nobody could
/// renew while it was away. The reaper, running before any gateway renews,
/// reaps nobody; a gateway that does not renew afterwards is reaped once its
/// lease runs out, one that renews is not, and the renewal after the restart
/// asks for a re-sync (the saved data may be older than the last writes).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_redis_restart_with_its_data_reaps_no_live_gateway() {
    let mut server = RedisServer::spawn_persistent().await;
    let options = RedisOptions::new(server.url()).with_namespace(unique_namespace());
    let presence = store_with(options).await;
    let mut events = Events::new(&presence);
    for instance in ["alive", "dead"] {
        assert!(!presence.renew_lease(instance).await.unwrap(), "new");
        assert!(presence.renew_lease(instance).await.unwrap());
    }
    register(&presence, "alice", "a1", "alive", 1).await;
    register(&presence, "bob", "b1", "dead", 2).await;
    assert_eq!(events.settle(&presence).await.len(), 4);
    // Both renewed just before Redis goes: each lease has a whole ttl left.
    for instance in ["alive", "dead"] {
        presence.renew_lease(instance).await.unwrap();
    }

    server.shutdown_saving().await;
    // The outage itself: longer than the ttl, so every saved deadline is
    // past when Redis is back.
    tokio::time::sleep(TTL * 3).await;
    server.restart().await;
    wait_epoch(&presence, 2).await;
    // The command connection notices the restart on its first use, then reconnects.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while presence.ping().await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "redis never answered"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    assert_eq!(
        reap_once(&presence).await,
        [],
        "the reaper took leases that could not be renewed while Redis was away"
    );
    assert_eq!(
        presence.user("alice").await.unwrap(),
        [record("alice", "a1", "alive", 1)]
    );
    // The lease connection notices the restart on its own first use: that
    // renewal fails (broken pipe, nothing sent), as a gateway's would, and
    // the next one reaches Redis.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let held = loop {
        match presence.renew_lease("alive").await {
            Ok(held) => break held,
            Err(error) => {
                assert!(
                    tokio::time::Instant::now() < deadline,
                    "the lease connection never came back: {error}"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    assert!(!held, "after a restart the renewal asks for a re-sync");

    // `alive` keeps renewing; `dead` never does, and goes once its lease is
    // out (bucket by bucket: its connection is in one of them).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead one was never reaped"
        );
        assert!(presence.renew_lease("alive").await.unwrap());
        let reaped = reap_once(&presence).await;
        assert!(
            reaped.iter().all(|(instance, _)| instance == "dead"),
            "{reaped:?}"
        );
        if reaped.iter().any(|(_, removed)| *removed > 0) {
            break;
        }
        tokio::time::sleep(TTL / 6).await;
    }
    assert_eq!(
        summary(&events.settle(&presence).await),
        expect(&[
            ("bob", Disconnected, "b1", "dead"),
            ("bob", Offline, "b1", "dead"),
        ])
    );
    assert_eq!(
        presence.user("alice").await.unwrap(),
        [record("alice", "a1", "alive", 1)]
    );
}

/// The same on a Redis Cluster: the master that holds one bucket's leases
/// restarts with its data after longer than the ttl while the others stay
/// up. The first reap after it is back takes no connection; `alive`, which
/// renews from then on, keeps its connection; `dead`, which never renews,
/// loses its own once its lease there runs out.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_master_restarting_with_its_data_reaps_no_live_gateway() {
    // Longer than the other tests': a Cluster client takes a moment to find
    // a restarted node again.
    const TTL: Duration = Duration::from_secs(1);
    // A cluster of its own: other tests must not see a node go away.
    let cluster = RedisCluster::spawn().await;
    let mut options = cluster.options().with_namespace(unique_namespace());
    options.lease_ttl = TTL;
    let presence = Presence::redis(options).unwrap();
    bus_ready(&presence).await;
    // alice and bob share a bucket, hence a slot and a master.
    let bucket = pulse_presence::bucket_of("alice");
    let bob = (0..)
        .map(|n| format!("bob-{n}"))
        .find(|user| pulse_presence::bucket_of(user) == bucket)
        .unwrap();
    register(&presence, "alice", "a1", "alive", 1).await;
    register(&presence, &bob, "b1", "dead", 2).await;
    for instance in ["alive", "dead"] {
        presence.renew_lease(instance).await.unwrap();
    }
    let node = node_of_bucket(&cluster, bucket).await;

    cluster.shutdown_node_saving(node).await;
    // The outage itself: longer than the ttl.
    tokio::time::sleep(TTL * 3).await;
    cluster.restart_node(node).await;

    // The first reap that reaches every master takes no connection (one
    // that fails on the way may have run on some masters: the state below
    // tells).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    let first = loop {
        match presence.reap_expired().await {
            Ok(reaped) => break reaped,
            Err(_) => {
                assert!(tokio::time::Instant::now() < deadline, "never reaped");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(
        first.iter().all(|(_, removed)| *removed == 0),
        "the reaper took connections whose leases could not be renewed while \
         their master was away: {first:?}"
    );
    assert_eq!(
        presence.user("alice").await.unwrap(),
        [record("alice", "a1", "alive", 1)],
        "a live gateway's connection was reaped"
    );
    assert_eq!(presence.user(&bob).await.unwrap().len(), 1);

    // `alive` renews from now on; `dead` is reaped where its connection is
    // once its lease there runs out. (Both lost their leases on the other
    // masters, which stayed up while nobody renewed: no connection there.)
    loop {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the dead one was never reaped"
        );
        presence.renew_lease("alive").await.unwrap();
        let reaped = presence.reap_expired().await.unwrap();
        assert!(
            reaped
                .iter()
                .all(|(instance, removed)| instance == "dead" || *removed == 0),
            "{reaped:?}"
        );
        if reaped.iter().any(|(_, removed)| *removed > 0) {
            break;
        }
        tokio::time::sleep(TTL / 6).await;
    }
    assert!(presence.user(&bob).await.unwrap().is_empty());
    assert_eq!(
        presence.user("alice").await.unwrap(),
        [record("alice", "a1", "alive", 1)]
    );
}

/// Which of the cluster's nodes (an index into its urls) serves `bucket`.
async fn node_of_bucket(cluster: &RedisCluster, bucket: u16) -> usize {
    for (index, url) in cluster.urls().iter().enumerate() {
        let client = redis::Client::open(url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        let slot: i64 = redis::cmd("CLUSTER")
            .arg("KEYSLOT")
            .arg(format!("{{b{bucket}}}"))
            .query_async(&mut connection)
            .await
            .unwrap();
        let keys: i64 = redis::cmd("CLUSTER")
            .arg("COUNTKEYSINSLOT")
            .arg(slot)
            .query_async(&mut connection)
            .await
            .unwrap();
        if keys > 0 {
            return index;
        }
    }
    panic!("no node holds bucket {bucket}'s keys")
}
