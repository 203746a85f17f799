//! The durable event log over gRPC: `Watch` resuming with `since` on every
//! backend, `Snapshot`'s position, `GetUser`'s `last_seen`, and a bad or
//! expired position refused with its reason.

#[macro_use]
mod support;

use std::time::Duration;

use futures_util::StreamExt;
use pulse_presence::{ApiConfig, EventLogOptions, Presence};
use pulse_protocol::{proto::presence::v1 as pb, status::reason_of};
use support::{DEADLINE, register, served::Served};
use tokio::time::timeout;
use tonic::Code;

every_backend!(watch_resumes_from_a_position_over_grpc);

async fn watch_resumes_from_a_position_over_grpc(presence: Presence) {
    let served = Served::start(presence.clone(), ApiConfig::open()).await;
    let mut client = pb::presence_client::PresenceClient::new(served.channel());
    let watch = |since: &str| pb::WatchRequest {
        user_ids: vec!["gail".into()],
        all: false,
        since: since.to_owned(),
    };
    let mut first = client.watch(watch("")).await.unwrap().into_inner();
    register(&presence, "gail", "c1", "gw-1", 1).await;
    let connected = timeout(DEADLINE, first.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(connected.kind(), pb::EventKind::Connected);
    assert!(connected.id.starts_with('b'), "{connected:?}");
    drop(first);

    // Missed while no Watch was open.
    presence.unregister("gail", "c1").await.unwrap();
    let mut resumed = client
        .watch(watch(&connected.position))
        .await
        .unwrap()
        .into_inner();
    let mut kinds = Vec::new();
    for _ in 0..3 {
        let event = timeout(DEADLINE, resumed.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        kinds.push(event.kind());
    }
    assert_eq!(
        kinds,
        [
            pb::EventKind::Online,
            pb::EventKind::Disconnected,
            pb::EventKind::Offline
        ]
    );

    // GetUser of the offline user says when they left.
    let user = client
        .get_user(pb::GetUserRequest {
            user_id: "gail".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(!user.online && user.last_seen.is_some(), "{user:?}");

    // A snapshot's position covers everyone.
    let mut chunks = client
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let mut position = String::new();
    while let Some(chunk) = timeout(DEADLINE, chunks.next()).await.unwrap() {
        position = chunk.unwrap().position;
    }
    assert!(position.starts_with("p1."), "{position:?}");
    register(&presence, "gail", "c2", "gw-1", 3).await;
    let mut after = client.watch(watch(&position)).await.unwrap().into_inner();
    let event = timeout(DEADLINE, after.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        (event.kind(), event.connection_id.as_str()),
        (pb::EventKind::Connected, "c2")
    );

    // Garbage is refused with a reason; the socket of the API stays usable.
    let status = client.watch(watch("p1.***")).await.unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("bad_position"));
    served.shutdown().await;
}

/// A gRPC Watch from a position whose events were trimmed ends with
/// `FAILED_PRECONDITION` + `position_expired`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_expired_position_fails_the_watch_with_a_reason() {
    let presence = Presence::in_memory();
    presence.set_event_log_options(EventLogOptions {
        retention: Duration::from_millis(1),
        last_seen: EventLogOptions::DEFAULT_LAST_SEEN,
    });
    let served = Served::start(presence.clone(), ApiConfig::open()).await;
    let mut client = pb::presence_client::PresenceClient::new(served.channel());
    let watch = |since: String| pb::WatchRequest {
        user_ids: vec![],
        all: true,
        since,
    };
    let mut first = client
        .watch(watch(String::new()))
        .await
        .unwrap()
        .into_inner();
    register(&presence, "hal", "c1", "gw-1", 1).await;
    let event = timeout(DEADLINE, first.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    drop(first);
    presence.unregister("hal", "c1").await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    register(&presence, "ida", "c1", "gw-1", 2).await;

    let mut resumed = client
        .watch(watch(event.position))
        .await
        .unwrap()
        .into_inner();
    let status = timeout(DEADLINE, resumed.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap_err();
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("position_expired"));
    served.shutdown().await;
}
