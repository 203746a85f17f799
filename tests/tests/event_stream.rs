//! The presence event stream under chaos: three gateways and one
//! `pulse-presence` on one Redis that keeps its data. Users churn WebSocket
//! connections over the gateways from concurrent tasks, keeping their own
//! record of what is open; meanwhile one gateway is killed with SIGKILL (its
//! connections reaped, with events), Redis is shut down with `SHUTDOWN SAVE`
//! and started again with its data, and `pulse-presence` is killed and
//! started again. A consumer takes a `Snapshot` and watches everyone from
//! its position, resuming after every end from the last event it handled;
//! a webhook receiver gets every event POSTed from the start (checking each
//! signature), with the same checks (a repeat allowed only as the same
//! event, at least once).
//!
//! Once the churn is over and everything has settled (each closed socket's
//! session ended at its gateway, the killed gateway reaped, the others
//! re-synchronised after Redis came back), the consumer reads up to a fresh
//! snapshot's position. Then: it never saw `position_expired`; it took every
//! id of the event log exactly once (compared with the log in Redis);
//! `online`/`offline` came exactly at each user's transitions (its
//! [`Ledger`] checks every event as it comes); and its state equals the fresh
//! snapshot, `GetUsers` and the clients' own record, user by user.

use std::time::Duration;

use pulse_e2e::{
    churn::{Churn, ChurnOptions},
    events::{Delivery, Ledger, PresenceState, differences, state_of},
    webhook_receiver::WebhookReceiver,
    *,
};
use pulse_protocol::proto::presence::v1::GetUsersRequest;
use tokio::time::{sleep, timeout};
use tonic::Code;

const USERS: usize = 24;
const GATEWAYS: [&str; 3] = ["events-a", "events-b", "events-c"];
/// The gateway killed with SIGKILL.
const KILLED: usize = 2;
/// How long Redis stays down: longer than a lease renewal period (a third
/// of `--lease-ttl`), so every gateway sees the outage and re-syncs.
const OUTAGE: Duration = Duration::from_millis(1200);
/// The most a liveness wait may take before it fails (never a check).
const PATIENCE: Duration = Duration::from_secs(20);

fn users() -> Vec<String> {
    (0..USERS).map(|u| format!("events-user-{u}")).collect()
}

/// `pulse-presence` on a fixed gRPC port, so a restart is found where it
/// was, with the config file that names the webhook receiver.
async fn start_presence(redis_url: &str, namespace: &str, port: u16, config: &str) -> Service {
    let listen = format!("127.0.0.1:{port}");
    let args = [
        "--listen",
        &listen,
        "--metrics-listen",
        "127.0.0.1:0",
        "--http-listen",
        "127.0.0.1:0",
        "--redis-url",
        redis_url,
        "--redis-namespace",
        namespace,
        "--api-key",
        API_KEY,
        "--reap-interval",
        "500ms",
        "--config",
        config,
    ];
    Service::start("pulse-presence", &args).await
}

/// `GetUsers` of every user, retried while `UNAVAILABLE`, with the
/// instance of each connection.
async fn get_users(client: &Grpc) -> Vec<pulse_protocol::proto::presence::v1::UserPresence> {
    let asked = async {
        loop {
            let request = GetUsersRequest { user_ids: users() };
            match client.clone().get_users(request).await {
                Ok(answer) => return answer.into_inner().users,
                Err(status) if status.code() == Code::Unavailable => {
                    sleep(Duration::from_millis(50)).await;
                }
                Err(status) => panic!("GetUsers: {status:?}"),
            }
        }
    };
    timeout(PATIENCE, asked).await.expect("GetUsers answers")
}

/// Polls `GetUsers` until no connection of the killed gateway is left.
async fn wait_reaped(client: &Grpc) {
    let reaped = async {
        while get_users(client)
            .await
            .iter()
            .flat_map(|u| &u.connections)
            .any(|c| c.instance_id == GATEWAYS[KILLED])
        {
            sleep(Duration::from_millis(50)).await;
        }
    };
    timeout(PATIENCE, reaped)
        .await
        .expect("the killed gateway's connections reaped");
}

/// The webhook target's cursor once its delivery has started.
async fn webhook_cursor(url: &str, namespace: &str) -> String {
    let client = redis::Client::open(url).unwrap();
    let mut connection = client.get_multiplexed_async_connection().await.unwrap();
    let key = format!("{namespace}:webhooks:{{default}}:cursor");
    let started = async {
        loop {
            let cursor: Option<String> = redis::cmd("GET")
                .arg(&key)
                .query_async(&mut connection)
                .await
                .unwrap();
            if let Some(cursor) = cursor {
                return cursor;
            }
            sleep(Duration::from_millis(20)).await;
        }
    };
    timeout(PATIENCE, started)
        .await
        .expect("webhook delivery starts")
}

/// How many times a gateway logged that it re-synchronised presence.
fn resyncs(gateway: &Service) -> usize {
    gateway
        .logs()
        .iter()
        .filter(|line| line.contains("presence re-synchronised"))
        .count()
}

#[tokio::test]
async fn a_resuming_watch_holds_every_event_through_a_kill_and_restarts() {
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    eprintln!("event stream chaos seed {seed}");

    let mut redis = RedisServer::spawn_persistent().await;
    let url = redis.url().to_owned();
    let namespace = unique_namespace();
    let port = pulse_presence::testing::free_port();
    let receiver = WebhookReceiver::start().await;
    let config = ConfigFile::new(&receiver.config());
    let mut presence = start_presence(&url, &namespace, port, config.path()).await;
    // The webhook target starts from where the log is when its delivery
    // starts (its cursor); nobody is online yet, so that is its snapshot.
    let cursor = webhook_cursor(&url, &namespace).await;
    receiver.inbox.lock().unwrap().ledger = Some(
        Ledger::from_snapshot(Vec::new(), &cursor, Delivery::AtLeastOnce)
            .unwrap_or_else(|error| panic!("the webhook cursor: {error}")),
    );
    let mut gateways = Vec::new();
    for id in GATEWAYS {
        let args = [
            "--instance-id",
            id,
            "--lease-ttl",
            "1500ms",
            "--max-connections-per-user",
            "0",
        ];
        gateways.push(Service::gateway(&url, &namespace, &args).await);
    }
    let client = presence_client(presence.grpc_url()).await;
    let churn = Churn::start(
        seed,
        &ChurnOptions {
            gateways: gateways.iter().map(|g| g.addr).collect(),
            users: users(),
            workers: 6,
            pace: Duration::from_millis(40),
            connect_in_ten: 6,
        },
    );

    // The consumer starts once some users are online, so its snapshot holds some.
    sleep(Duration::from_secs(1)).await;
    let first = snapshot_retrying(&client, PATIENCE).await;
    let ledger = Ledger::from_snapshot(first.users.clone(), &first.position, Delivery::ExactlyOnce)
        .unwrap_or_else(|error| panic!("the first snapshot: {error}"));
    let mut consumer = Consumer::start(client.clone(), ledger);

    sleep(Duration::from_secs(2)).await;
    gateways[KILLED].kill().await;
    wait_reaped(&client).await;
    consumer.check_running().await;

    sleep(Duration::from_millis(1500)).await;
    let resyncs_before: Vec<usize> = gateways.iter().map(resyncs).collect();
    redis.shutdown_saving().await;
    sleep(OUTAGE).await;
    redis.restart().await;
    consumer.check_running().await;

    sleep(Duration::from_secs(2)).await;
    let ends_before_restart = consumer.ends.lock().unwrap().len();
    presence.kill().await;
    sleep(Duration::from_millis(300)).await;
    presence = start_presence(&url, &namespace, port, config.path()).await;

    sleep(Duration::from_secs(2)).await;
    let record = churn.record.clone();
    let mut churned = churn.stop().await;

    // Settling: every socket the clients left has its session ended at the
    // gateway; the killed gateway's sockets ended and its connections are
    // reaped; the others re-synchronised after Redis came back. Then the
    // consumer reads up to a fresh snapshot's position.
    for reader in churned.left {
        let ended = timeout(PATIENCE, reader).await;
        ended
            .expect("a gateway ends a session the client left")
            .unwrap();
    }
    for conn in churned
        .open
        .iter_mut()
        .filter(|conn| conn.gateway == KILLED)
    {
        let ended = timeout(PATIENCE, &mut conn.reader).await;
        ended.expect("a killed gateway's socket ends").unwrap();
    }
    wait_reaped(&client).await;
    for (index, gateway) in gateways
        .iter()
        .enumerate()
        .filter(|(index, _)| *index != KILLED)
    {
        let resynced = timeout(PATIENCE, async {
            while resyncs(gateway) <= resyncs_before[index] {
                sleep(Duration::from_millis(20)).await;
            }
        });
        let name = GATEWAYS[index];
        resynced
            .await
            .unwrap_or_else(|_| panic!("{name} re-synchronised after Redis came back"));
    }
    let fresh = snapshot_retrying(&client, PATIENCE).await;
    let target = fresh.parsed_position();
    consumer.reach(&target, PATIENCE).await;
    // The killed pulse-presence held the webhook lease: the new one takes
    // over once it runs out (10 s).
    receiver.reach(&target, Duration::from_secs(30)).await;
    let answered = state_of(&get_users(&client).await);
    let logs = log_ids(&url, &namespace).await;

    // The clients' truth: what they hold open on the gateways that live.
    let mut truth = PresenceState::new();
    for conn in churned.open.iter().filter(|conn| conn.gateway != KILLED) {
        truth
            .entry(conn.user.clone())
            .or_default()
            .insert(conn.id.clone());
    }
    {
        let record = record.lock().unwrap();
        let ended: Vec<_> = record
            .ended_by_server
            .iter()
            .filter(|(_, _, g)| *g != KILLED)
            .collect();
        assert!(
            ended.is_empty(),
            "a gateway that lives ended sockets: {ended:?}"
        );
        assert!(
            !record.ended_by_server.is_empty(),
            "the kill ended no socket: it proves nothing"
        );
        assert_eq!(
            differences(&record.open, &truth),
            Vec::<String>::new(),
            "the clients' record (left) against the sockets they hold (right)"
        );
        eprintln!(
            "churn: {} connects, {} refused (the killed gateway), {} sockets lost with it, {} open at the end over {} users",
            record.connects,
            record.refused,
            record.ended_by_server.len(),
            truth.values().map(|ids| ids.len()).sum::<usize>(),
            truth.len()
        );
    }

    consumer.check_running().await;
    let ends = consumer.ends.lock().unwrap().clone();
    let ledger = consumer.ledger.lock().unwrap();
    eprintln!(
        "consumer: {} events taken; first snapshot {} users; its Watch calls ended {} times: {ends:?}",
        ledger.taken().len(),
        first.users.len(),
        ends.len()
    );
    // The log as Redis holds it: every id after the first snapshot and up
    // to the fresh one, each taken exactly once (a repeat or a gap would
    // have stopped the consumer already).
    ledger.assert_holds(&logs, &target, "taken");
    assert!(
        ledger.owed().is_empty(),
        "online/offline still owed: {:?}",
        ledger.owed()
    );
    for (state, what) in [
        (&fresh.state(), "the fresh snapshot"),
        (&answered, "GetUsers"),
        (&truth, "the clients"),
    ] {
        assert_eq!(
            differences(ledger.state(), state),
            Vec::<String>::new(),
            "the consumer (left) against {what} (right)"
        );
    }
    // Its stream ended when pulse-presence was killed, and never otherwise
    // than by the service going away.
    assert!(
        ends.len() > ends_before_restart,
        "the Watch outlived a kill of pulse-presence: {ends:?}"
    );
    let unexpected: Vec<_> = ends.iter().filter(|end| !end.service_went_away()).collect();
    assert!(
        unexpected.is_empty(),
        "Watch calls ended otherwise than by the service going away: {unexpected:?}"
    );
    drop(ledger);
    // The webhook receiver: the same log, the same state.
    let inbox = receiver.inbox.lock().unwrap();
    let hooked = inbox.ledger.as_ref().expect("given at the start");
    hooked.assert_holds(&logs, &target, "POSTed");
    assert!(
        hooked.owed().is_empty(),
        "webhooks: online/offline still owed"
    );
    assert_eq!(
        differences(hooked.state(), &truth),
        Vec::<String>::new(),
        "the webhook receiver (left) against the clients (right)"
    );
    eprintln!(
        "webhooks: {} events in {} POSTs, {} sent again",
        hooked.taken().len(),
        inbox.posts,
        hooked.repeats()
    );
    drop(inbox);
    consumer.task.abort();
    drop(presence);
}
