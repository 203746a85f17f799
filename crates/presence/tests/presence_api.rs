//! The channel presence calls of `pulse.channels.v1.Channels` (Presence,
//! PresenceStats, Channels) over gRPC and HTTP JSON, over real TCP with a
//! real Redis.

mod support;

use pulse_protocol::proto::channels::v1 as pb;
use serde_json::json;
use support::channels_api::{KEY, READ_ONLY_KEY, Served};
use tonic::Code;

/// Records a connection of `user` on gateway `gw-1` as subscribed to `channel`.
async fn enter(served: &Served, channel: &str, connection: &str, user: &str) {
    let record = pulse_presence::MemberRecord {
        channel: channel.into(),
        connection_id: connection.into(),
        user_id: user.into(),
        join_leave_cap: 0,
    };
    served
        .presence
        .enter_channel(&record, "gw-1", 0)
        .await
        .unwrap();
}

/// `Channels/Presence` of `channel` with `key`.
async fn presence_of(served: &Served, key: &str, channel: &str) -> pb::PresenceResponse {
    served
        .client(key)
        .presence(pb::PresenceRequest {
            channel: channel.into(),
        })
        .await
        .unwrap()
        .into_inner()
}

/// Presence, PresenceStats and Channels over gRPC and HTTP, read-only keys
/// allowed, a namespace without presence refused with its reason.
#[tokio::test]
async fn presence_queries_over_grpc_and_http() {
    let served = Served::start().await;
    for (channel, connection, user) in [
        ("doc:1", "c1", "alice"),
        ("doc:1", "c2", "alice"),
        ("doc:1", "c3", "bob"),
        ("room:1", "c1", "alice"),
    ] {
        enter(&served, channel, connection, user).await;
    }
    let answer = presence_of(&served, READ_ONLY_KEY, "doc:1").await;
    let users: Vec<(String, u64)> = answer
        .users
        .iter()
        .map(|u| (u.user_id.clone(), u.connections))
        .collect();
    assert_eq!(users, [("alice".into(), 2), ("bob".into(), 1)]);
    assert_eq!(
        (answer.num_users, answer.num_connections, answer.truncated),
        (2, 3, false)
    );
    let refused = served
        .client(KEY)
        .presence(pb::PresenceRequest {
            channel: "room:1".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(
        refused.message().contains("presence_disabled"),
        "{refused:?}"
    );
    let stats = served
        .client(KEY)
        .presence_stats(pb::PresenceStatsRequest {
            channel: "room:1".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!((stats.num_users, stats.num_connections), (1, 1));
    let listed = served
        .client(KEY)
        .channels(pb::ChannelsRequest {
            prefix: "doc:".into(),
            limit: 0,
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.channels.len(), 1);
    assert_eq!(
        (
            listed.channels[0].channel.as_str(),
            listed.channels[0].subscribers
        ),
        ("doc:1", 3)
    );

    assert_eq!(
        served
            .http(
                "POST",
                "/api/v1/presence",
                Some(READ_ONLY_KEY),
                r#"{"channel":"doc:1"}"#
            )
            .await,
        (
            200,
            json!({"users": [{"user_id": "alice", "connections": 2}, {"user_id": "bob", "connections": 1}],
                   "truncated": false, "num_users": 2, "num_connections": 3})
        )
    );
    assert_eq!(
        served
            .http(
                "POST",
                "/api/v1/presence_stats",
                Some(KEY),
                r#"{"channel":"doc:1"}"#
            )
            .await,
        (200, json!({"num_users": 2, "num_connections": 3}))
    );
    assert_eq!(
        served
            .http("POST", "/api/v1/channels", Some(KEY), "{}")
            .await,
        (
            200,
            json!({"channels": [{"channel": "doc:1", "subscribers": 3}, {"channel": "room:1", "subscribers": 1}],
                   "truncated": false})
        )
    );
    let (status, body) = served
        .http(
            "POST",
            "/api/v1/presence",
            Some(KEY),
            r#"{"channel":"nope:1"}"#,
        )
        .await;
    assert_eq!(
        (status, &body["error"]["code"]),
        (400, &json!("invalid_argument"))
    );
    // One more user passes doc's presence_max_users of 2: counts only.
    enter(&served, "doc:1", "c4", "carol").await;
    let answer = presence_of(&served, KEY, "doc:1").await;
    assert!(answer.users.is_empty() && answer.truncated);
    assert_eq!((answer.num_users, answer.num_connections), (3, 4));
}
