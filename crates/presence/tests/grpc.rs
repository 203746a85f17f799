//! `pulse.presence.v1.Presence`, health and reflection over real TCP, with a
//! real Redis behind them.

mod support;

use futures_util::StreamExt;
use pulse_presence::{
    ApiConfig, Presence, RedisOptions,
    access::{ApiKey, Permissions},
    testing::{RedisCluster, RedisServer, free_port, unique_namespace},
};
use pulse_protocol::api_key::BearerKey;
use pulse_protocol::{
    event::timestamp_from_ms,
    proto::presence::v1::{self as pb, EventKind, presence_server},
    status::reason_of,
};
use support::{
    DEADLINE, cluster_presence, redis_presence, register,
    served::{Client, Served},
};
use tokio::time::timeout;
use tonic::{Code, Streaming};
use tonic_health::pb::health_check_response::ServingStatus;

/// Serves `presence` with one key, [`KEY`], that may do everything.
async fn serve(presence: Presence) -> Served {
    let api = ApiConfig::with_keys(vec![ApiKey::new("test", KEY, Permissions::ALL)]);
    Served::start(presence, api).await
}

const SERVICE: &str = presence_server::SERVICE_NAME;
/// The key every test client presents.
const KEY: &str = "presence-test-key-0123456789";

/// `CountOnline` over gRPC: users and connections.
async fn online_counts(client: &mut Client) -> (u64, u64) {
    let count = client
        .count_online(pb::CountOnlineRequest {})
        .await
        .unwrap()
        .into_inner();
    (count.users, count.connections)
}

async fn next_kind(stream: &mut Streaming<pb::PresenceEvent>) -> (String, EventKind, String) {
    let event = timeout(DEADLINE, stream.message())
        .await
        .expect("an event in time")
        .expect("no error")
        .expect("the stream is open");
    (event.user_id.clone(), event.kind(), event.connection_id)
}

#[tokio::test]
async fn queries_answer_from_the_store() {
    let server = RedisServer::start().await;
    queries_answer_from(redis_presence(&server).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn queries_answer_from_a_redis_cluster() {
    queries_answer_from(cluster_presence(RedisCluster::start().await).await).await;
}

async fn queries_answer_from(presence: Presence) {
    let served = serve(presence.clone()).await;
    let mut client = served.client(KEY);

    register(&presence, "alice", "c1", "gw-1", 1_712_345_678_901).await;
    register(&presence, "alice", "c2", "gw-2", 1_712_345_678_902).await;
    register(&presence, "bob", "b1", "gw-1", 1_712_345_678_903).await;

    let alice = client
        .get_user(pb::GetUserRequest {
            user_id: "alice".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(alice.online);
    assert_eq!(
        alice.connections,
        [
            pb::Connection {
                connection_id: "c1".into(),
                instance_id: "gw-1".into(),
                connected_at: Some(timestamp_from_ms(1_712_345_678_901)),
            },
            pb::Connection {
                connection_id: "c2".into(),
                instance_id: "gw-2".into(),
                connected_at: Some(timestamp_from_ms(1_712_345_678_902)),
            },
        ]
    );

    let users = client
        .get_users(pb::GetUsersRequest {
            user_ids: vec!["bob".into(), "nobody".into(), "alice".into()],
        })
        .await
        .unwrap()
        .into_inner()
        .users;
    let shape: Vec<_> = users
        .iter()
        .map(|user| (user.user_id.as_str(), user.online, user.connections.len()))
        .collect();
    assert_eq!(
        shape,
        [("bob", true, 1), ("nobody", false, 0), ("alice", true, 2)]
    );

    assert_eq!(online_counts(&mut client).await, (2, 3));
    served.shutdown().await;
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments_with_a_reason() {
    let served = serve(Presence::in_memory()).await;
    let mut client = served.client(KEY);
    let too_many = vec!["u".to_owned(); 1001];

    let statuses = [
        client
            .get_user(pb::GetUserRequest {
                user_id: String::new(),
            })
            .await
            .map(drop),
        client
            .get_users(pb::GetUsersRequest {
                user_ids: too_many.clone(),
            })
            .await
            .map(drop),
        client
            .get_users(pb::GetUsersRequest {
                user_ids: vec!["alice".into(), String::new()],
            })
            .await
            .map(drop),
        client.watch(pb::WatchRequest::default()).await.map(drop),
        client
            .watch(pb::WatchRequest {
                user_ids: vec!["alice".into()],
                all: true,
                since: String::new(),
            })
            .await
            .map(drop),
        client
            .watch(pb::WatchRequest {
                user_ids: too_many,
                all: false,
                since: String::new(),
            })
            .await
            .map(drop),
    ];
    for status in statuses {
        let status = status.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert_eq!(
            reason_of(&status).as_deref(),
            Some("invalid_argument"),
            "{status:?}"
        );
    }
    served.shutdown().await;
}

#[tokio::test]
async fn watch_streams_one_users_events_in_order() {
    let server = RedisServer::start().await;
    let presence = redis_presence(&server).await;
    let served = serve(presence.clone()).await;
    let mut client = served.client(KEY);

    let mut alice = client
        .watch(pb::WatchRequest {
            user_ids: vec!["alice".into()],
            all: false,
            since: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    let mut everyone = client
        .watch(pb::WatchRequest {
            user_ids: vec![],
            all: true,
            since: String::new(),
        })
        .await
        .unwrap()
        .into_inner();

    register(&presence, "bob", "b1", "gw-1", 1).await;
    register(&presence, "alice", "c1", "gw-1", 2).await;
    presence.unregister("alice", "c1").await.unwrap();

    let alice_events = [
        ("alice".to_owned(), EventKind::Connected, "c1".to_owned()),
        ("alice".to_owned(), EventKind::Online, "c1".to_owned()),
        ("alice".to_owned(), EventKind::Disconnected, "c1".to_owned()),
        ("alice".to_owned(), EventKind::Offline, "c1".to_owned()),
    ];
    for expected in &alice_events {
        assert_eq!(&next_kind(&mut alice).await, expected);
    }
    assert_eq!(
        next_kind(&mut everyone).await,
        ("bob".into(), EventKind::Connected, "b1".into())
    );
    assert_eq!(
        next_kind(&mut everyone).await,
        ("bob".into(), EventKind::Online, "b1".into())
    );
    for expected in &alice_events {
        assert_eq!(&next_kind(&mut everyone).await, expected);
    }

    // Shutdown ends open watches with a reason, instead of waiting on them.
    let stop = served.shutdown();
    let (_, ended) = tokio::join!(stop, timeout(DEADLINE, alice.next()));
    let status = ended.unwrap().expect("a final status").unwrap_err();
    assert_eq!(status.code(), Code::Unavailable);
    assert_eq!(reason_of(&status).as_deref(), Some("shutting_down"));
}

/// On a Cluster, one user's events keep their order; different users'
/// events may interleave differently (their buckets may be on different
/// nodes), so the stream of everyone is compared user by user.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn watch_streams_events_from_a_redis_cluster() {
    let presence = cluster_presence(RedisCluster::start().await).await;
    let served = serve(presence.clone()).await;
    let mut client = served.client(KEY);
    let watch = |user_ids: Vec<String>, all: bool| {
        let mut client = client.clone();
        async move {
            client
                .watch(pb::WatchRequest {
                    user_ids,
                    all,
                    since: String::new(),
                })
                .await
                .unwrap()
                .into_inner()
        }
    };
    let mut alice = watch(vec!["alice".into()], false).await;
    let mut everyone = watch(vec![], true).await;

    let users: Vec<String> = (0..12).map(|n| format!("user-{n}")).collect();
    for user in &users {
        register(&presence, user, "c1", "gw-1", 1).await;
    }
    register(&presence, "alice", "a1", "gw-2", 2).await;
    presence.unregister("alice", "a1").await.unwrap();
    for user in &users {
        presence.unregister(user, "c1").await.unwrap();
    }

    let lifecycle = |user: &str, connection: &str| {
        [
            EventKind::Connected,
            EventKind::Online,
            EventKind::Disconnected,
            EventKind::Offline,
        ]
        .map(|kind| (user.to_owned(), kind, connection.to_owned()))
        .to_vec()
    };
    let mut seen = Vec::new();
    for _ in 0..4 {
        seen.push(next_kind(&mut alice).await);
    }
    assert_eq!(seen, lifecycle("alice", "a1"));

    let mut per_user: std::collections::BTreeMap<String, Vec<_>> = Default::default();
    for _ in 0..(users.len() + 1) * 4 {
        let event = next_kind(&mut everyone).await;
        per_user.entry(event.0.clone()).or_default().push(event);
    }
    assert_eq!(per_user.remove("alice").unwrap(), lifecycle("alice", "a1"));
    for user in &users {
        assert_eq!(
            per_user.remove(user).unwrap(),
            lifecycle(user, "c1"),
            "{user}"
        );
    }
    assert!(per_user.is_empty(), "{per_user:?}");

    assert_eq!(online_counts(&mut client).await, (0, 0));
    served.shutdown().await;
}

/// A watcher that falls further behind than the bus buffers (it used to get
/// `ABORTED` + `watch_lagged`) reads what it missed from the event log and
/// gets every event, once, in order.
#[tokio::test]
async fn a_watch_that_falls_behind_catches_up_from_the_log() {
    let presence = Presence::in_memory();
    let served = serve(presence.clone()).await;
    let mut watch = served
        .client(KEY)
        .watch(pb::WatchRequest {
            user_ids: vec![],
            all: true,
            since: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    // More events than the bus buffers, while the client reads none.
    const CONNECTIONS: usize = 20_000;
    for index in 0..CONNECTIONS {
        let connection_id = format!("c{index}");
        register(&presence, "alice", &connection_id, "gw-1", 1).await;
    }
    let mut connected = Vec::new();
    timeout(DEADLINE, async {
        // `online` once, with the first `connected`.
        while connected.len() < CONNECTIONS {
            let event = watch.message().await.unwrap().expect("the stream goes on");
            if event.kind() == pb::EventKind::Connected {
                connected.push(event.connection_id);
            }
        }
    })
    .await
    .unwrap();
    let expected: Vec<String> = (0..CONNECTIONS).map(|index| format!("c{index}")).collect();
    assert_eq!(connected, expected);
    served.shutdown().await;
}

#[tokio::test]
async fn health_is_serving_while_redis_answers() {
    let server = RedisServer::start().await;
    let served = serve(redis_presence(&server).await).await;
    served.wait_health("", ServingStatus::Serving).await;
    served.wait_health(SERVICE, ServingStatus::Serving).await;
    served.shutdown().await;
}

#[tokio::test]
async fn redis_down_is_unavailable_with_a_reason() {
    let url = format!("redis://127.0.0.1:{}", free_port());
    let presence =
        Presence::redis(RedisOptions::new(url).with_namespace(unique_namespace())).unwrap();
    let served = serve(presence).await;

    let status = served
        .client(KEY)
        .get_user(pb::GetUserRequest {
            user_id: "alice".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("backend_unavailable"));
    assert_eq!(served.health("").await, ServingStatus::NotServing);
    assert_eq!(served.health(SERVICE).await, ServingStatus::NotServing);
    served.shutdown().await;
}

#[tokio::test]
async fn reflection_lists_the_presence_service() {
    use tonic_reflection::pb::v1::{
        ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
        server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
    };

    let served = serve(Presence::in_memory()).await;
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let key = BearerKey::new(KEY).unwrap();
    let mut responses = ServerReflectionClient::with_interceptor(served.channel(), key)
        .server_reflection_info(futures_util::stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a service list: {response:?}");
    };
    let names: Vec<_> = list
        .service
        .into_iter()
        .map(|service| service.name)
        .collect();
    assert!(names.iter().any(|name| name == SERVICE), "{names:?}");
    drop(responses);
    served.shutdown().await;
}
