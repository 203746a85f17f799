//! Instance leases, the reaper and re-synchronisation, against a real Redis
//! (`redis::<case>`) and a real three-master Redis Cluster (`cluster::<case>`).

mod support;

use std::{
    collections::BTreeMap,
    sync::{
        Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use pulse_presence::{
    Presence, RedisOptions, SyncReport,
    testing::{RedisCluster, RedisServer, unique_namespace},
};
use pulse_protocol::EventKind::*;
use support::{Events, bus_ready, expect, one_user_per_bucket, record, register, replay, summary};

const TTL: Duration = Duration::from_millis(300);

/// Where a test's stores connect.
enum Target {
    Redis(Box<RedisServer>),
    Cluster(&'static RedisCluster),
}

macro_rules! both_targets {
    ($($case:ident),* $(,)?) => {
        mod redis {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let server = pulse_presence::testing::RedisServer::start().await;
                    super::$case(super::Target::Redis(Box::new(server))).await;
                }
            )*
        }
        mod cluster {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $case() {
                    let cluster = pulse_presence::testing::RedisCluster::start().await;
                    super::$case(super::Target::Cluster(cluster)).await;
                }
            )*
        }
    };
}

both_targets!(
    a_lease_is_new_then_held,
    an_expired_instance_is_reaped_exactly_once,
    sync_makes_redis_hold_exactly_what_the_instance_has,
    graceful_deregistration_gives_up_the_lease,
    a_reaped_lease_is_noticed_whatever_registrations_came_since,
    a_resync_never_brings_back_a_closed_connection,
    a_renewal_does_not_wait_behind_the_shared_connection,
    a_resync_puts_back_an_index_entry_lost_on_its_own,
);

async fn store(target: &Target, namespace: &str) -> Presence {
    let options = match target {
        Target::Redis(server) => RedisOptions::new(server.url()),
        Target::Cluster(cluster) => cluster.options(),
    };
    let mut options = options.with_namespace(namespace);
    options.lease_ttl = TTL;
    let presence = Presence::redis(options).unwrap();
    bus_ready(&presence).await;
    presence
}

/// A renewal is answered while the store's shared connection is busy (as
/// with a burst of registrations, or a drain's deregistrations): renewals
/// have a connection of their own. On the shared one it waited behind the
/// `BLPOP` (5 s) and failed at its 3 s answer timeout.
async fn a_renewal_does_not_wait_behind_the_shared_connection(target: Target) {
    let presence = store(&target, &unique_namespace()).await;
    assert!(!presence.renew_lease("gw-hold").await.unwrap());
    let holder = presence.clone();
    let held = tokio::spawn(async move { holder.hold_shared_connection(5).await });
    let urls = urls(&target);
    // Until Redis is blocked on it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    'waiting: loop {
        for url in &urls {
            let client = ::redis::Client::open(url.as_str()).unwrap();
            let mut connection = client.get_multiplexed_async_connection().await.unwrap();
            let clients: String = ::redis::cmd("CLIENT")
                .arg("LIST")
                .query_async(&mut connection)
                .await
                .unwrap();
            if clients.contains("cmd=blpop") {
                break 'waiting;
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hold never began"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        presence.renew_lease("gw-hold").await.unwrap(),
        "the lease is renewed while the shared connection is busy"
    );
    held.abort();
}

async fn a_lease_is_new_then_held(target: Target) {
    let presence = store(&target, &unique_namespace()).await;
    assert!(
        !presence.renew_lease("gw-1").await.unwrap(),
        "a new lease was not held"
    );
    assert!(presence.renew_lease("gw-1").await.unwrap());
    assert!(presence.renew_lease("gw-1").await.unwrap());
}

/// An instance that stops renewing is reaped once, with its events published
/// once, even with three reapers racing; a live instance is left alone.
/// Reapers race bucket by bucket, so two may each reap part of an instance;
/// together they remove each connection once.
async fn an_expired_instance_is_reaped_exactly_once(target: Target) {
    let namespace = unique_namespace();
    let presence = store(&target, &namespace).await;
    let mut events = Events::new(&presence);

    register(&presence, "alice", "a1", "dead", 1).await;
    register(&presence, "alice", "a2", "alive", 2).await;
    register(&presence, "bob", "b1", "dead", 3).await;
    register(&presence, "bob", "b2", "dead", 4).await;
    presence.renew_lease("alive").await.unwrap();
    assert_eq!(
        events.settle(&presence).await.len(),
        6,
        "4 connected, 2 online"
    );

    // Three replicas reap while `alive` keeps renewing and `dead` does not.
    let reapers: Vec<Presence> = vec![
        presence.clone(),
        store(&target, &namespace).await,
        store(&target, &namespace).await,
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    // Markers of the settle step register under their own instance; only
    // the dead gateway matters here.
    let mut removed: BTreeMap<String, u64> = BTreeMap::new();
    let mut rounds_after = 0;
    // Until the dead instance's connections are gone, then one more round
    // that must find nothing more to remove.
    while rounds_after < 2 {
        assert!(tokio::time::Instant::now() < deadline, "never reaped");
        presence.renew_lease("alive").await.unwrap();
        let rounds = futures_util::future::join_all(reapers.iter().map(|r| r.reap_expired())).await;
        for (instance, connections) in rounds.into_iter().flat_map(Result::unwrap) {
            if instance != "marker" {
                *removed.entry(instance).or_default() += connections;
            }
        }
        if removed.get("dead").is_some_and(|removed| *removed >= 3) {
            rounds_after += 1;
        }
        tokio::time::sleep(TTL / 6).await;
    }
    assert_eq!(
        removed,
        BTreeMap::from([("dead".to_owned(), 3)]),
        "each connection removed once, whichever reaper took it"
    );

    let mut seen = summary(&events.settle(&presence).await);
    seen.sort();
    let mut wanted = expect(&[
        ("alice", Disconnected, "a1", "dead"),
        ("bob", Disconnected, "b1", "dead"),
        ("bob", Disconnected, "b2", "dead"),
        ("bob", Offline, "b1", "dead"),
    ]);
    wanted.sort();
    // bob's offline names whichever of his connections went last.
    let bob_offline = seen.iter().position(|e| e.1 == Offline).unwrap();
    seen[bob_offline].2 = "b1".to_owned();
    seen.sort();
    assert_eq!(seen, wanted);
    assert_eq!(
        presence.user("alice").await.unwrap(),
        [record("alice", "a2", "alive", 2)]
    );
    assert!(presence.user("bob").await.unwrap().is_empty());
    assert_eq!(presence.count_online().await.unwrap().connections, 1);
}

async fn sync_makes_redis_hold_exactly_what_the_instance_has(target: Target) {
    let presence = store(&target, &unique_namespace()).await;
    let mut events = Events::new(&presence);
    // Redis thinks gw-1 holds c1 and c2; gw-1 really holds c2 and c3 (c1
    // closed and c3 opened while Redis was away).
    register(&presence, "alice", "c1", "gw-1", 1).await;
    register(&presence, "alice", "c2", "gw-1", 2).await;
    events.settle(&presence).await;

    let local = vec![
        record("alice", "c2", "gw-1", 2),
        record("carol", "c3", "gw-1", 3),
    ];
    let report = presence
        .sync_instance("gw-1", || local.clone())
        .await
        .unwrap();
    assert_eq!(
        report,
        SyncReport {
            registered: 1,
            removed: 1
        }
    );
    // Removals and registrations go out together, so only each user's own
    // events have an order (on a Cluster, two users may be on two nodes).
    let mut seen = summary(&events.settle(&presence).await);
    seen.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        seen,
        expect(&[
            ("alice", Disconnected, "c1", "gw-1"),
            ("carol", Connected, "c3", "gw-1"),
            ("carol", Online, "c3", "gw-1"),
        ])
    );
    let again = presence
        .sync_instance("gw-1", || local.clone())
        .await
        .unwrap();
    assert_eq!(again, SyncReport::default(), "idempotent");
}

async fn graceful_deregistration_gives_up_the_lease(target: Target) {
    let presence = store(&target, &unique_namespace()).await;
    presence.renew_lease("gw-1").await.unwrap();
    register(&presence, "alice", "c1", "gw-1", 1).await;
    assert_eq!(presence.unregister_instance("gw-1").await.unwrap(), 1);
    assert!(
        !presence.renew_lease("gw-1").await.unwrap(),
        "the lease went with it"
    );
}

/// A re-sync puts back an instance's index entry that Redis lost on its own
/// while the user's hash kept the connection (an evicted key; an atomic
/// registration never leaves one without the other). The register script
/// took the connection for registered and changed nothing, so the index
/// stayed without it, and a purge of the instance (the reaper's, once the
/// gateway died) left the user online for good.
async fn a_resync_puts_back_an_index_entry_lost_on_its_own(target: Target) {
    let namespace = unique_namespace();
    let presence = store(&target, &namespace).await;
    presence.renew_lease("gw-1").await.unwrap();
    register(&presence, "alice", "c1", "gw-1", 1).await;
    register(&presence, "alice", "c2", "gw-2", 2).await;
    let index = format!(
        "{namespace}:{{b{}}}:instance:gw-1",
        pulse_presence::bucket_of("alice")
    );
    let mut lost = 0;
    for url in urls(&target) {
        let client = ::redis::Client::open(url.as_str()).unwrap();
        let mut connection = client.get_multiplexed_async_connection().await.unwrap();
        // The nodes that do not hold the key answer MOVED.
        lost += ::redis::cmd("HDEL")
            .arg(&index)
            .arg("c1")
            .query_async::<u64>(&mut connection)
            .await
            .unwrap_or(0);
    }
    assert_eq!(lost, 1, "the index entry is gone");

    let report = presence
        .sync_instance("gw-1", || vec![record("alice", "c1", "gw-1", 1)])
        .await
        .unwrap();
    assert_eq!(report.removed, 0);
    // The gateway goes: its purge finds the connection, and only its own.
    assert_eq!(presence.unregister_instance("gw-1").await.unwrap(), 1);
    assert_eq!(
        presence.user("alice").await.unwrap(),
        [record("alice", "c2", "gw-2", 2)]
    );
}

/// Every node's URL.
fn urls(target: &Target) -> Vec<String> {
    match target {
        Target::Redis(server) => vec![server.url().to_owned()],
        Target::Cluster(cluster) => cluster.urls().to_vec(),
    }
}

/// Reaps until `instance` has lost at least one connection to the reaper.
async fn reap_until_reaped(presence: &Presence, instance: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let reaped = presence.reap_expired().await.unwrap();
        if reaped
            .iter()
            .any(|(id, removed)| id == instance && *removed > 0)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{instance} was never reaped"
        );
        tokio::time::sleep(TTL / 6).await;
    }
}

/// A gateway that stalled past its lease and was reaped must hear so at its
/// next renewal, so that it registers again what the reaper removed, even
/// when its own registrations since then touched every bucket (each one
/// makes sure the instance holds a lease in its bucket).
async fn a_reaped_lease_is_noticed_whatever_registrations_came_since(target: Target) {
    let presence = store(&target, &unique_namespace()).await;
    assert!(!presence.renew_lease("gw-1").await.unwrap(), "new");
    register(&presence, "alice", "a1", "gw-1", 1).await;
    assert!(presence.renew_lease("gw-1").await.unwrap());

    // gw-1 stalls past its ttl and is reaped.
    reap_until_reaped(&presence, "gw-1").await;
    assert!(presence.user("alice").await.unwrap().is_empty());

    // Before its next renewal, its accept loop registers new sockets, one
    // in every bucket.
    for (n, user) in one_user_per_bucket("busy").iter().enumerate() {
        register(&presence, user, &format!("n{n}"), "gw-1", 2).await;
    }
    assert!(
        !presence.renew_lease("gw-1").await.unwrap(),
        "the renewal did not notice that the lease had been lost"
    );
    assert!(presence.renew_lease("gw-1").await.unwrap(), "held again");
}

/// A connection that closes after the gateway took its snapshot for a
/// re-sync, and whose deregistration lands before the re-sync's registration
/// (finding nothing to remove), is not left behind as a phantom.
async fn a_resync_never_brings_back_a_closed_connection(target: Target) {
    let presence = store(&target, &unique_namespace()).await;
    let mut events = Events::new(&presence);
    // gw-1 holds a1 (alice) and b1 (bob), which opened while Redis was away:
    // Redis has neither.
    let open = Mutex::new(vec![
        record("alice", "a1", "gw-1", 1),
        record("bob", "b1", "gw-1", 2),
    ]);
    let snapshots = AtomicUsize::new(0);
    // The gateway's view, as the re-sync reads it. Right after the first
    // snapshot a1 closes, as a session does: out of the gateway, then its
    // deregistration, which finds nothing in Redis yet.
    let local = || {
        let snapshot = open.lock().unwrap().clone();
        if snapshots.fetch_add(1, Ordering::SeqCst) == 0 {
            open.lock().unwrap().retain(|r| r.connection_id != "a1");
            tokio::task::block_in_place(|| {
                tokio::runtime::Handle::current().block_on(presence.unregister("alice", "a1"))
            })
            .unwrap();
        }
        snapshot
    };
    presence.sync_instance("gw-1", local).await.unwrap();

    assert_eq!(
        presence.user("alice").await.unwrap(),
        [],
        "a closed connection came back"
    );
    assert_eq!(
        presence.user("bob").await.unwrap(),
        [record("bob", "b1", "gw-1", 2)]
    );
    assert_eq!(presence.count_online().await.unwrap().connections, 1);
    // Whatever was published tells a consistent story: online and offline
    // exactly at the transitions, and only bob still connected.
    let seen = events.settle(&presence).await;
    let open_counts = replay(&seen);
    assert_eq!(
        open_counts.get("alice").copied().unwrap_or(0),
        0,
        "{seen:?}"
    );
    assert_eq!(open_counts.get("bob").copied(), Some(1), "{seen:?}");
    // Nothing is left to repair.
    let open_now = open.lock().unwrap().clone();
    let again = presence
        .sync_instance("gw-1", || open_now.clone())
        .await
        .unwrap();
    assert_eq!(again, SyncReport::default());
}

/// A re-sync reads an instance's connections (`HGETALL`) and memberships
/// (`HKEYS`) a wave of buckets at a time, each once the last has answered
/// (four first; the waves' sizes: `redis_store::tests`).
/// Sent at once, the 128 reads of each kind for a gateway holding 15,000
/// connections with five subscriptions each held Redis for 15 and 33-37 ms
/// at every re-sync (a PING's wait, by hand), and every command of every
/// client waited behind them. Here Redis's answers are held back: the first
/// wave goes, and the rest waits for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resync_reads_its_buckets_a_wave_at_a_time() {
    let server = RedisServer::start().await;
    let proxy = HoldingProxy::start(server.url()).await;
    let mut options = RedisOptions::new(proxy.url()).with_namespace(unique_namespace());
    options.lease_ttl = TTL;
    let presence = Presence::redis(options).unwrap();
    bus_ready(&presence).await;
    // Every connection the store makes is open before the answers stop.
    presence.count_online().await.unwrap();

    for (command, memberships) in [("HGETALL", false), ("HKEYS", true)] {
        proxy.hold_answers_from(command);
        let reading = {
            let presence = presence.clone();
            tokio::spawn(async move {
                if memberships {
                    presence.sync_members("gw-waves", Vec::new).await
                } else {
                    presence.sync_instance("gw-waves", Vec::new).await
                }
            })
        };
        proxy.wait_for(command, 1).await;
        // Not a synchronisation: with the answers held, the waves stop at
        // the first (the next waits for its answers, up to the 3 s response
        // timeout), whenever it is counted. The pause gives a burst of all
        // 128, as the reads were sent before, the time to arrive whole.
        tokio::time::sleep(Duration::from_millis(30)).await;
        let sent = proxy.count(command);
        assert!(
            sent < 128,
            "{sent} {command} commands sent before the first was answered"
        );
        proxy.release_answers();
        assert_eq!(
            reading.await.unwrap().unwrap(),
            SyncReport::default(),
            "nothing to repair"
        );
        assert_eq!(proxy.count(command), 128, "every bucket read once");
    }
}

/// A TCP proxy in front of Redis that counts the commands clients send
/// and can hold Redis's answers back from the first of a given command on
/// (what a re-sync sends before its reads, it needs answered).
struct HoldingProxy {
    addr: std::net::SocketAddr,
    sent: std::sync::Arc<Mutex<Vec<u8>>>,
    hold_from: std::sync::Arc<Mutex<Option<(String, usize)>>>,
    hold: tokio::sync::watch::Sender<bool>,
}

/// `command` as a client sends it: a RESP bulk string.
fn resp_bulk(command: &str) -> Vec<u8> {
    format!("${}\r\n{command}\r\n", command.len()).into_bytes()
}

fn occurrences(sent: &[u8], needle: &[u8]) -> usize {
    sent.windows(needle.len())
        .filter(|window| *window == needle)
        .count()
}

impl HoldingProxy {
    async fn start(redis_url: &str) -> Self {
        use tokio::{
            io::{AsyncReadExt, AsyncWriteExt},
            net::{TcpListener, TcpStream},
        };
        let target: std::net::SocketAddr = redis_url
            .trim_start_matches("redis://")
            .parse()
            .expect("a redis://host:port URL");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let sent = std::sync::Arc::new(Mutex::new(Vec::new()));
        let hold_from = std::sync::Arc::new(Mutex::new(None::<(String, usize)>));
        let (hold, _) = tokio::sync::watch::channel(false);
        let (log, held, armed) = (sent.clone(), hold.clone(), hold_from.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let server = TcpStream::connect(target).await.unwrap();
                let (mut client_read, mut client_write) = client.into_split();
                let (mut server_read, mut server_write) = server.into_split();
                let (log, armed, holder) = (log.clone(), armed.clone(), held.clone());
                tokio::spawn(async move {
                    let mut buffer = vec![0; 64 * 1024];
                    while let Ok(read @ 1..) = client_read.read(&mut buffer).await {
                        let arrived = {
                            let mut log = log.lock().unwrap();
                            log.extend_from_slice(&buffer[..read]);
                            armed
                                .lock()
                                .unwrap()
                                .as_ref()
                                .is_some_and(|(command, before)| {
                                    occurrences(&log, &resp_bulk(command)) > *before
                                })
                        };
                        // Held before Redis can see the command, so that
                        // its answer is held too.
                        if arrived {
                            holder.send_replace(true);
                        }
                        if server_write.write_all(&buffer[..read]).await.is_err() {
                            break;
                        }
                    }
                });
                let mut held = held.subscribe();
                tokio::spawn(async move {
                    let mut buffer = vec![0; 64 * 1024];
                    while let Ok(read @ 1..) = server_read.read(&mut buffer).await {
                        if held.wait_for(|hold| !hold).await.is_err()
                            || client_write.write_all(&buffer[..read]).await.is_err()
                        {
                            break;
                        }
                    }
                });
            }
        });
        Self {
            addr,
            sent,
            hold_from,
            hold,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Holds every answer back once a client sends `command` again.
    fn hold_answers_from(&self, command: &str) {
        let before = self.count(command);
        *self.hold_from.lock().unwrap() = Some((command.to_owned(), before));
    }

    fn release_answers(&self) {
        *self.hold_from.lock().unwrap() = None;
        self.hold.send_replace(false);
    }

    /// How many `command`s clients have sent.
    fn count(&self, command: &str) -> usize {
        occurrences(&self.sent.lock().unwrap(), &resp_bulk(command))
    }

    async fn wait_for(&self, command: &str, at_least: usize) {
        for _ in 0..1000 {
            if self.count(command) >= at_least {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("no {command} within 10 s");
    }
}
