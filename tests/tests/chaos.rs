//! Chaos: three gateways, many random connects and disconnects from concurrent
//! tasks, one gateway killed with SIGKILL and one Redis restart (empty), then
//! presence is compared with the clients' own record and with the state a
//! `Watch` stream builds, user by user.

use std::{
    collections::{BTreeMap, BTreeSet, HashMap, HashSet},
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::StreamExt;
use pulse_e2e::*;
use pulse_protocol::{
    proto::presence::v1::{EventKind, GetUsersRequest, PresenceEvent, WatchRequest},
    status::reason_of,
};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tonic::Code;

const USERS: usize = 24;
const WORKERS: usize = 6;
const STEPS_PER_WORKER: usize = 90;
/// The pause between a worker's steps, so that the run spans the kill, the
/// reaping and the Redis restart.
const PACE: Duration = Duration::from_millis(30);

type Truth = Arc<Mutex<BTreeMap<String, BTreeSet<String>>>>;

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

#[tokio::test]
async fn presence_survives_churn_a_kill_and_a_redis_restart() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("chaos seed {seed}");

    let redis = RedisServer::spawn().await;
    let port = redis.port().unwrap();
    let url = redis.url().to_owned();
    let namespace = unique_namespace();
    let presence = Service::presence(&url, &namespace, &["--reap-interval", "500ms"]).await;
    let mut gateways = Vec::new();
    for id in ["chaos-a", "chaos-b", "chaos-c"] {
        gateways.push(
            Service::gateway(
                &url,
                &namespace,
                &[
                    "--instance-id",
                    id,
                    "--lease-ttl",
                    "1500ms",
                    "--heartbeat-interval",
                    "2s",
                    "--max-connections-per-user",
                    "0",
                ],
            )
            .await,
        );
    }
    let addrs: Vec<_> = gateways.iter().map(|g| g.addr).collect();
    let client = pulse_e2e::presence_client(presence.grpc_url()).await;

    // The watcher rebuilds per-user state from the stream, re-watching and
    // re-querying whenever the stream ends (a Redis restart ends it).
    let watched: Truth = Arc::default();
    let watcher = tokio::spawn(watch_forever(client.clone(), watched.clone()));

    // The clients' own record: what is open, as the clients see it.
    let truth: Truth = Arc::default();
    // Worker 0 signals the kill early in the run and the Redis restart late.
    let (chaos_tx, mut chaos_rx) = mpsc::channel::<()>(2);
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let truth = truth.clone();
        let addrs = addrs.clone();
        let chaos_tx = chaos_tx.clone();
        workers.push(tokio::spawn(async move {
            let mut rng = Rng(seed.wrapping_add(worker as u64 * 7919) | 1);
            // (user, connection id, gateway index, socket)
            let mut open: Vec<(String, String, usize, Client)> = Vec::new();
            for step in 0..STEPS_PER_WORKER {
                if worker == 0 && (step == 10 || step == STEPS_PER_WORKER - 10) {
                    let _ = chaos_tx.send(()).await;
                }
                tokio::time::sleep(PACE).await;
                let roll = rng.below(10);
                if roll < 6 || open.is_empty() {
                    let user = format!("chaos-user-{}", rng.below(USERS));
                    let gateway = rng.below(addrs.len());
                    let Ok(Ok((mut socket, _))) = tokio::time::timeout(
                        Duration::from_secs(10),
                        tokio_tungstenite::connect_async(format!(
                            "ws://{}/ws?token={}",
                            addrs[gateway],
                            token(&user)
                        )),
                    )
                    .await
                    else {
                        continue; // the killed gateway refuses
                    };
                    let Some(id) = connected_id(&mut socket).await else {
                        continue;
                    };
                    truth
                        .lock()
                        .unwrap()
                        .entry(user.clone())
                        .or_default()
                        .insert(id.clone());
                    open.push((user, id, gateway, socket));
                } else {
                    let (user, id, _, mut socket) = open.swap_remove(rng.below(open.len()));
                    if roll < 8 {
                        let _ = socket.close(None).await;
                    }
                    drop(socket); // otherwise a TCP drop without a close frame
                    truth
                        .lock()
                        .unwrap()
                        .get_mut(&user)
                        .map(|ids| ids.remove(&id));
                }
            }
            open
        }));
    }
    drop(chaos_tx);

    // Early: kill one gateway without goodbye, and see the reaper remove its
    // connections (Redis still holds them until then).
    chaos_rx.recv().await;
    gateways[2].kill().await;
    let reaped = async {
        loop {
            let all = client
                .clone()
                .get_users(GetUsersRequest {
                    user_ids: (0..USERS).map(|u| format!("chaos-user-{u}")).collect(),
                })
                .await;
            if let Ok(all) = all
                && all
                    .into_inner()
                    .users
                    .iter()
                    .all(|u| u.connections.iter().all(|c| c.instance_id != "chaos-c"))
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(20), reaped)
        .await
        .expect("the killed gateway reaped");
    // Late: Redis restarts empty while the churn goes on.
    chaos_rx.recv().await;
    redis.stop().await;
    tokio::time::sleep(Duration::from_millis(500)).await; // an outage that lasts a while
    let _redis = RedisServer::spawn_on(port).await;

    let mut survivors = Vec::new();
    for worker in workers {
        survivors.extend(worker.await.unwrap());
    }
    // Sockets on the killed gateway are gone: the clients' record drops them.
    for (user, id, gateway, _) in &survivors {
        if *gateway == 2 {
            truth
                .lock()
                .unwrap()
                .get_mut(user)
                .map(|ids| ids.remove(id));
        }
    }

    // The surviving clients keep reading, as a live client does: reading
    // answers the gateway's pings, so a slow convergence (a loaded machine)
    // does not let the heartbeat close the sockets the record counts open.
    let survivors: Vec<_> = survivors
        .into_iter()
        .map(|(_, _, _, mut client)| {
            tokio::spawn(async move { while let Some(Ok(_)) = client.next().await {} })
        })
        .collect();

    let users: Vec<String> = (0..USERS).map(|u| format!("chaos-user-{u}")).collect();
    let expected = |truth: &Truth| -> BTreeMap<String, BTreeSet<String>> {
        let truth = truth.lock().unwrap();
        users
            .iter()
            .map(|u| (u.clone(), truth.get(u).cloned().unwrap_or_default()))
            .collect()
    };
    let want = expected(&truth);
    let mut last = String::new();
    let converged = async {
        loop {
            let actual = presence_of(&client, &users).await;
            let seen = watched.lock().unwrap().clone();
            let seen: BTreeMap<String, BTreeSet<String>> = users
                .iter()
                .map(|u| (u.clone(), seen.get(u).cloned().unwrap_or_default()))
                .collect();
            if actual.as_ref() == Some(&want) && seen == want {
                return;
            }
            last = format!("presence {actual:?}\nwatch {seen:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    if tokio::time::timeout(Duration::from_secs(30), converged)
        .await
        .is_err()
    {
        panic!("no convergence (seed {seed})\nclients {want:?}\n{last}");
    }
    let open: usize = want.values().map(BTreeSet::len).sum();
    eprintln!(
        "chaos converged: {open} connections open across {} users",
        want.values().filter(|s| !s.is_empty()).count()
    );
    // The watcher runs until aborted; if it stopped, one of its checks failed.
    if watcher.is_finished() {
        watcher.await.expect("the watcher's checks held");
        panic!("the watcher stopped early");
    }
    watcher.abort();
    for reader in survivors {
        reader.abort();
    }
}

/// Reads the `connected` message; `None` when the socket ends first.
async fn connected_id(socket: &mut Client) -> Option<String> {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), socket.next())
            .await
            .ok()??
        {
            Ok(Message::Text(text)) => {
                let value: serde_json::Value = serde_json::from_str(&text).ok()?;
                return value["connection_id"].as_str().map(str::to_owned);
            }
            Ok(Message::Ping(_)) => continue,
            _ => return None,
        }
    }
}

/// Every user's connection ids, or `None` while presence is unavailable.
async fn presence_of(
    client: &pulse_e2e::Grpc,
    users: &[String],
) -> Option<BTreeMap<String, BTreeSet<String>>> {
    let answer = client
        .clone()
        .get_users(GetUsersRequest {
            user_ids: users.to_vec(),
        })
        .await
        .ok()?
        .into_inner();
    Some(
        answer
            .users
            .into_iter()
            .map(|u| {
                (
                    u.user_id,
                    u.connections.into_iter().map(|c| c.connection_id).collect(),
                )
            })
            .collect(),
    )
}

/// Keeps `state` equal to what a watcher learns: watch, then query, then
/// apply events; on the stream's end, start over. Checks on the way that
/// `online` and `offline` come exactly at the transitions.
async fn watch_forever(client: pulse_e2e::Grpc, state: Truth) {
    loop {
        let Ok(stream) = client
            .clone()
            .watch(WatchRequest {
                user_ids: vec![],
                all: true,
                since: String::new(),
            })
            .await
        else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        let users: Vec<String> = (0..USERS).map(|u| format!("chaos-user-{u}")).collect();
        let Some(snapshot) = presence_of(&client, &users).await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        *state.lock().unwrap() = snapshot;
        // Events published between the watch and the snapshot may already be
        // in it; a user is checked strictly from its first event that changes
        // the watcher's state. From then on `online` must come right after the
        // `connected` that made the set non-empty, `offline` right after the
        // `disconnected` that emptied it, and never otherwise.
        let mut synced: HashSet<String> = HashSet::new();
        let mut owed: HashMap<String, EventKind> = HashMap::new();
        while let Some(item) = stream.next().await {
            let event: PresenceEvent = match item {
                Ok(event) => event,
                Err(status) => {
                    // Redis restarted empty lost the event log with the
                    // state: the Watch says so (its position expired); or
                    // pulse-presence cannot reach Redis.
                    let expired = status.code() == Code::FailedPrecondition
                        && reason_of(&status).as_deref() == Some("position_expired");
                    assert!(
                        expired || status.code() == Code::Unavailable,
                        "watch ended with {status:?} ({:?})",
                        reason_of(&status)
                    );
                    break;
                }
            };
            let user = event.user_id.clone();
            let mut state = state.lock().unwrap();
            let ids = state.entry(user.clone()).or_default();
            let kind = event.kind();
            if let Some(expected) = owed.get(&user).copied()
                && synced.contains(&user)
            {
                assert_eq!(
                    kind, expected,
                    "{user}: {expected:?} must come right after its transition"
                );
            }
            match kind {
                EventKind::Connected => {
                    let was_empty = ids.is_empty();
                    if ids.insert(event.connection_id.clone()) {
                        synced.insert(user.clone());
                        if was_empty {
                            owed.insert(user, EventKind::Online);
                        }
                    }
                }
                EventKind::Disconnected => {
                    if ids.remove(&event.connection_id) {
                        synced.insert(user.clone());
                        if ids.is_empty() {
                            owed.insert(user, EventKind::Offline);
                        }
                    }
                }
                EventKind::Online | EventKind::Offline => {
                    let owed_now = owed.remove(&user);
                    if synced.contains(&user) {
                        assert_eq!(owed_now, Some(kind), "{user}: an extra {kind:?}");
                    }
                    assert_eq!(
                        ids.is_empty(),
                        kind == EventKind::Offline,
                        "{user}: {kind:?} with connections {ids:?}"
                    );
                }
                EventKind::Join | EventKind::Leave => {
                    panic!("no channel has presence in this run: {event:?}")
                }
                EventKind::Unspecified => panic!("an unspecified event"),
            }
        }
    }
}
