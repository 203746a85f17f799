//! What only a Redis Cluster can show: one user's keys share a slot, the
//! buckets spread over every master, and commands reach instances whose
//! sharded channels live on different masters. The shared behaviour runs on
//! the cluster in `backend_suite.rs` (`cluster::*`) and `leases.rs`.

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};

use pulse_presence::{Presence, testing::RedisCluster};
use pulse_protocol::Command;
use serde_json::value::RawValue;
use support::{DEADLINE, record, register};
use tokio::time::timeout;

/// A plain connection to each node, by URL.
async fn nodes(cluster: &RedisCluster) -> Vec<(String, redis::aio::MultiplexedConnection)> {
    let mut nodes = Vec::new();
    for url in cluster.urls() {
        let client = redis::Client::open(url.as_str()).unwrap();
        nodes.push((
            url.clone(),
            client.get_multiplexed_async_connection().await.unwrap(),
        ));
    }
    nodes
}

/// Every key of `namespace` on one node (SCAN, a node at a time).
async fn keys_on(
    connection: &mut redis::aio::MultiplexedConnection,
    namespace: &str,
) -> Vec<String> {
    let mut keys = Vec::new();
    let mut cursor = 0_u64;
    loop {
        let (next, batch): (u64, Vec<String>) = redis::cmd("SCAN")
            .arg(cursor)
            .arg("MATCH")
            .arg(format!("{namespace}:*"))
            .arg("COUNT")
            .arg(1000)
            .query_async(connection)
            .await
            .unwrap();
        keys.extend(batch);
        if next == 0 {
            return keys;
        }
        cursor = next;
    }
}

async fn keyslot(connection: &mut redis::aio::MultiplexedConnection, key: &str) -> u16 {
    redis::cmd("CLUSTER")
        .arg("KEYSLOT")
        .arg(key)
        .query_async(connection)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_users_keys_live_in_one_slot_on_one_node() {
    let cluster = RedisCluster::start().await;
    let namespace = pulse_presence::testing::unique_namespace();
    let presence = Presence::redis(cluster.options().with_namespace(&namespace)).unwrap();
    support::bus_ready(&presence).await;
    register(&presence, "alice", "c1", "gw-1", 1).await;
    register(&presence, "alice", "c2", "gw-2", 2).await;

    let mut holders = Vec::new();
    for (url, mut connection) in nodes(cluster).await {
        let keys = keys_on(&mut connection, &namespace).await;
        if keys.is_empty() {
            continue;
        }
        let mut slots = BTreeSet::new();
        for key in &keys {
            slots.insert(keyslot(&mut connection, key).await);
        }
        holders.push((url, keys.len(), slots));
    }
    // The user hash, two instance indexes, the online set, the counter, the
    // lease set and its clock, the event log: eight keys, one slot, one node.
    assert_eq!(holders.len(), 1, "{holders:?}");
    let (_, count, slots) = &holders[0];
    assert_eq!(*count, 8, "{holders:?}");
    assert_eq!(slots.len(), 1, "{holders:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn buckets_spread_over_every_master() {
    let cluster = RedisCluster::start().await;
    let namespace = pulse_presence::testing::unique_namespace();
    let presence = Presence::redis(cluster.options().with_namespace(&namespace)).unwrap();
    support::bus_ready(&presence).await;
    futures_util::future::try_join_all((0..400).map(|n| {
        let presence = presence.clone();
        async move {
            presence
                .register(&record(&format!("user-{n}"), &format!("c{n}"), "gw-1", 1))
                .await
        }
    }))
    .await
    .unwrap();

    let mut per_node = BTreeMap::new();
    for (url, mut connection) in nodes(cluster).await {
        per_node.insert(url, keys_on(&mut connection, &namespace).await.len());
    }
    assert_eq!(per_node.len(), 3);
    assert!(per_node.values().all(|keys| *keys > 0), "{per_node:?}");
    // Every key of a namespace is in some bucket: user hashes (400) plus, per
    // bucket used, an instance index, an online set, a counter and leases.
    let total: usize = per_node.values().sum();
    assert!(total > 400, "{per_node:?}");
    assert_eq!(presence.count_online().await.unwrap().users, 400);
    assert_eq!(presence.count_online().await.unwrap().connections, 400);
}

/// Instance ids whose command channels are on each of the three masters.
async fn instances_on_every_master(cluster: &RedisCluster) -> Vec<String> {
    let (_, mut connection) = nodes(cluster).await.remove(0);
    // CLUSTER SLOTS: [[start, end, [host, port, id], ...], ...]
    let ranges: Vec<(u16, u16, (String, u16))> = {
        let value: Vec<redis::Value> = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut connection)
            .await
            .unwrap();
        value
            .into_iter()
            .map(|range| {
                let fields: Vec<redis::Value> = redis::from_redis_value(range).unwrap();
                let start: u16 = redis::from_redis_value(fields[0].clone()).unwrap();
                let end: u16 = redis::from_redis_value(fields[1].clone()).unwrap();
                let master: Vec<redis::Value> = redis::from_redis_value(fields[2].clone()).unwrap();
                let host: String = redis::from_redis_value(master[0].clone()).unwrap();
                let port: u16 = redis::from_redis_value(master[1].clone()).unwrap();
                (start, end, (host, port))
            })
            .collect()
    };
    let mut by_master: HashMap<(String, u16), String> = HashMap::new();
    for n in 0..1000 {
        let instance = format!("gw-{n}");
        // The channel's slot is its hash tag's: the instance id.
        let slot = keyslot(&mut connection, &format!("{{{instance}}}")).await;
        let (_, _, master) = ranges
            .iter()
            .find(|(start, end, _)| (*start..=*end).contains(&slot))
            .expect("every slot is served");
        by_master.entry(master.clone()).or_insert(instance);
        if by_master.len() == 3 {
            break;
        }
    }
    assert_eq!(by_master.len(), 3, "instance ids on every master");
    by_master.into_values().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn commands_reach_instances_on_every_master() {
    let cluster = RedisCluster::start().await;
    let namespace = pulse_presence::testing::unique_namespace();
    let sender = Presence::redis(cluster.options().with_namespace(&namespace)).unwrap();
    support::bus_ready(&sender).await;
    let instances = instances_on_every_master(cluster).await;

    // One process per instance, each listening on its own channel.
    let mut gateways = Vec::new();
    for instance in &instances {
        let gateway = Presence::redis(cluster.options().with_namespace(&namespace)).unwrap();
        let commands = gateway.listen_commands(instance);
        // Subscribed to its channel once the bus has (re)subscribed with the
        // listener: wait until a send is taken.
        gateways.push((gateway, commands));
    }
    for (n, instance) in instances.iter().enumerate() {
        register(&sender, "alice", &format!("c{n}"), instance, 1).await;
    }
    // An instance that nobody listens for takes nothing and counts nothing.
    register(&sender, "alice", "lost", "gw-nobody", 1).await;

    let data = RawValue::from_string("{\"hi\":1}".to_owned()).unwrap();
    let reached = timeout(DEADLINE, async {
        loop {
            let reached = sender.send("alice", data.clone()).await.unwrap();
            if reached == 3 {
                return reached;
            }
            assert!(reached < 3, "only listening instances count: {reached}");
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("every instance subscribed in time");
    assert_eq!(reached, 3);
    for (_, commands) in &mut gateways {
        // Earlier attempts may have reached some instances already; each got
        // at least one send, and only sends for alice.
        let command = timeout(DEADLINE, commands.recv()).await.unwrap().unwrap();
        assert!(matches!(command, Command::Send { ref user_id, .. } if user_id == "alice"));
    }
    // One connection, on one master's instance.
    let (n, instance) = instances.iter().enumerate().next_back().unwrap();
    let kicked = sender
        .disconnect("alice", Some(&format!("c{n}")), "bye")
        .await
        .unwrap();
    assert_eq!(kicked, 1, "{instance}");
    assert_eq!(
        sender
            .disconnect("alice", Some("lost"), "bye")
            .await
            .unwrap(),
        0
    );
    assert_eq!(sender.disconnect("nobody", None, "bye").await.unwrap(), 0);
}

#[tokio::test]
async fn a_bad_cluster_seed_list_is_an_invalid_argument() {
    for options in [
        pulse_presence::RedisOptions::new("redis://127.0.0.1:1,redis://127.0.0.1:2"),
        pulse_presence::RedisOptions::cluster(["redis://127.0.0.1:1", "nonsense"]),
    ] {
        assert!(matches!(
            Presence::redis(options),
            Err(pulse_presence::PresenceError::InvalidArgument(_))
        ));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_store_reaches_the_cluster_through_any_one_seed() {
    let cluster = RedisCluster::start().await;
    for seed in cluster.urls() {
        let mut options = pulse_presence::RedisOptions::cluster([seed]);
        options.namespace = pulse_presence::testing::unique_namespace();
        let presence = Presence::redis(options).unwrap();
        support::bus_ready(&presence).await;
        // Every master answers.
        presence.ping().await.unwrap();
        let mut events = support::Events::new(&presence);
        for n in 0..20 {
            register(&presence, &format!("u{n}"), "c", "gw", 1).await;
        }
        assert_eq!(presence.count_online().await.unwrap().users, 20);
        // Events of users on every master reach a bus subscribed on one node.
        let seen = events.settle(&presence).await;
        assert_eq!(seen.len(), 40, "20 connected, 20 online");
    }
}

/// A seed that nothing listens on is skipped: the pool's cluster client and
/// the bus both move on to the next seed.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_dead_seed_is_skipped() {
    let cluster = RedisCluster::start().await;
    let dead = format!("redis://127.0.0.1:{}", pulse_presence::testing::free_port());
    let mut options =
        pulse_presence::RedisOptions::cluster([dead.as_str(), cluster.urls()[1].as_str()]);
    options.namespace = pulse_presence::testing::unique_namespace();
    let presence = Presence::redis(options).unwrap();
    support::bus_ready(&presence).await;
    let mut events = support::Events::new(&presence);
    register(&presence, "alice", "c1", "gw-1", 1).await;
    assert_eq!(presence.user("alice").await.unwrap().len(), 1);
    assert_eq!(events.settle(&presence).await.len(), 2, "connected, online");
}

/// The whole cluster goes away: queries answer `Unavailable` (never a stale
/// answer), and when an empty cluster is back on the same ports the renewal
/// finds no lease and a re-sync makes it hold the instance's connections
/// again, as the gateway's lease task does.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_cluster_that_comes_back_empty_is_resynced() {
    let cluster = RedisCluster::spawn().await;
    let ports = cluster.ports().to_vec();
    let presence = Presence::redis(cluster.options()).unwrap();
    support::bus_ready(&presence).await;
    let alice = record("alice", "c1", "gw-1", 1);
    presence.register(&alice).await.unwrap();
    presence.renew_lease("gw-1").await.unwrap();
    assert!(presence.renew_lease("gw-1").await.unwrap(), "held");

    drop(cluster);
    let down = timeout(DEADLINE, presence.user("alice")).await.unwrap();
    assert!(
        matches!(down, Err(pulse_presence::PresenceError::Unavailable(_))),
        "{down:?}"
    );
    assert!(
        timeout(DEADLINE, presence.count_online())
            .await
            .unwrap()
            .is_err()
    );
    assert!(
        timeout(DEADLINE, presence.renew_lease("gw-1"))
            .await
            .unwrap()
            .is_err()
    );

    let _back = RedisCluster::spawn_on(&ports).await;
    support::wait_epoch(&presence, 2).await;
    let held = timeout(DEADLINE, async {
        loop {
            if let Ok(held) = presence.renew_lease("gw-1").await {
                return held;
            }
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the store reaches the cluster again");
    assert!(!held, "an empty cluster holds no lease");
    let mut events = support::Events::new(&presence);
    let report = presence
        .sync_instance("gw-1", || vec![alice.clone()])
        .await
        .unwrap();
    assert_eq!(report.registered, 1);
    assert_eq!(presence.user("alice").await.unwrap(), [alice]);
    assert_eq!(
        support::summary(&events.settle(&presence).await),
        support::expect(&[
            ("alice", pulse_protocol::EventKind::Connected, "c1", "gw-1"),
            ("alice", pulse_protocol::EventKind::Online, "c1", "gw-1"),
        ])
    );
}

/// Every master is asked for its memory settings, and a master that may
/// evict keys is named by its address.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_master_that_evicts_keys_is_named() {
    let cluster = RedisCluster::spawn().await;
    let presence = Presence::redis(cluster.options()).unwrap();
    assert_eq!(presence.evicting_nodes().await.unwrap(), Vec::new());
    let mut nodes = nodes(&cluster).await;
    let (url, connection) = &mut nodes[1];
    let () = redis::cmd("CONFIG")
        .arg("SET")
        .arg("maxmemory")
        .arg("100mb")
        .arg("maxmemory-policy")
        .arg("allkeys-lfu")
        .query_async(connection)
        .await
        .unwrap();
    let evicting = presence.evicting_nodes().await.unwrap();
    assert_eq!(evicting.len(), 1, "{evicting:?}");
    assert_eq!(evicting[0].policy, "allkeys-lfu");
    let address = evicting[0].node.clone().expect("a master's address");
    assert!(
        url.ends_with(&address),
        "{address} is the master whose settings changed ({url})"
    );
}
