//! `pulse.channels.v1.Channels` over gRPC and the same calls over HTTP JSON,
//! over real TCP with a real Redis: what they publish reaches a subscribed
//! feed, and every refusal has its status and reason.

mod support;

use pulse_protocol::{
    proto::channels::v1::{self as pb, channels_client::ChannelsClient},
    status::reason_of,
};
use serde_json::json;
use support::channels_api::{KEY, READ_ONLY_KEY, Served};
use tonic::Code;

#[tokio::test]
async fn grpc_publish_and_broadcast_reach_subscribers() {
    let mut served = Served::start().await;
    let answer = served
        .client(KEY)
        .publish(pb::PublishRequest {
            channel: "room:1".into(),
            data_json: r#"{"text":"hi","big":12345678901234567890}"#.into(),
            ..pb::PublishRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.instances, 1);
    let delivery = served.delivery().await;
    assert_eq!(
        &*delivery.frame,
        r#"{"type":"publication","channel":"room:1","data":{"text":"hi","big":12345678901234567890}}"#
    );

    let answer = served
        .client(KEY)
        .broadcast(pb::BroadcastRequest {
            channels: vec!["room:2".into(), "order:7".into(), "room:3".into()],
            data_json: "7".into(),
            ..pb::BroadcastRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    let counts: Vec<u64> = answer.responses.iter().map(|r| r.instances).collect();
    assert_eq!(counts, [1, 1, 0], "room:3 has no subscriber");
    let mut got = vec![
        served.delivery().await.channel.to_string(),
        served.delivery().await.channel.to_string(),
    ];
    got.sort();
    assert_eq!(got, ["order:7", "room:2"]);

    // A personal channel is always publishable; it travels like Send, to
    // the user's connections (none here).
    let answer = served
        .client(KEY)
        .publish(pb::PublishRequest {
            channel: "#alice".into(),
            data_json: "1".into(),
            ..pb::PublishRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(answer.instances, 0);
}

#[tokio::test]
async fn grpc_refusals_carry_their_reason() {
    let served = Served::start().await;
    let publish = |key: &'static str, channel: &'static str, data: &'static str| {
        let mut client = served.client(key);
        async move {
            client
                .publish(pb::PublishRequest {
                    channel: channel.into(),
                    data_json: data.into(),
                    ..pb::PublishRequest::default()
                })
                .await
                .unwrap_err()
        }
    };
    let status = publish(KEY, "nope:1", "1").await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert!(
        status.message().contains("unknown_namespace"),
        "{}",
        status.message()
    );
    let status = publish(KEY, "lobby", "1").await;
    assert!(
        status.message().contains("unknown_namespace"),
        "no default namespace: {}",
        status.message()
    );
    let status = publish(KEY, "room:a b", "1").await;
    assert_eq!(status.code(), Code::InvalidArgument);
    let status = publish(KEY, "room:1", "{not json").await;
    assert_eq!(status.code(), Code::InvalidArgument);
    assert_eq!(reason_of(&status).as_deref(), Some("invalid_argument"));
    let status = publish(READ_ONLY_KEY, "room:1", "1").await;
    assert_eq!(status.code(), Code::PermissionDenied);
    let status = ChannelsClient::new(served.grpc.clone())
        .publish(pb::PublishRequest {
            channel: "room:1".into(),
            data_json: "1".into(),
            ..pb::PublishRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);
    let status = served
        .client(KEY)
        .broadcast(pb::BroadcastRequest {
            channels: vec![],
            data_json: "1".into(),
            ..pb::BroadcastRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument);
}

#[tokio::test]
async fn http_publish_and_broadcast_reach_subscribers() {
    let mut served = Served::start().await;
    let (status, body) = served
        .http(
            "POST",
            "/api/v1/publish",
            Some(KEY),
            r#"{"channel":"room:1","data":{"status":"paid","n":12345678901234567890}}"#,
        )
        .await;
    assert_eq!((status, body), (200, json!({"instances": 1})));
    assert_eq!(
        &*served.delivery().await.frame,
        r#"{"type":"publication","channel":"room:1","data":{"status":"paid","n":12345678901234567890}}"#
    );
    let (status, body) = served
        .http(
            "POST",
            "/api/v1/broadcast",
            Some(KEY),
            r#"{"channels":["room:2","room:9"],"data":"x"}"#,
        )
        .await;
    assert_eq!(
        (status, body),
        (
            200,
            json!({"responses": [{"instances": 1}, {"instances": 0}]})
        )
    );
    assert_eq!(&*served.delivery().await.channel, "room:2");
}

#[tokio::test]
async fn http_subscribe_records_the_users_subscription() {
    let served = Served::start().await;
    let (status, body) = served
        .http(
            "POST",
            "/api/v1/subscribe",
            Some(KEY),
            r#"{"user_id":"carol","channel":"room:5"}"#,
        )
        .await;
    assert_eq!(
        (status, body),
        (200, json!({"connections": 0})),
        "carol has no open connection"
    );
    assert_eq!(
        served.presence.server_subscriptions("carol").await.unwrap(),
        ["room:5"]
    );
    let (status, _) = served
        .http(
            "POST",
            "/api/v1/unsubscribe",
            Some(KEY),
            r#"{"user_id":"carol","channel":"room:5"}"#,
        )
        .await;
    assert_eq!(status, 200);
    assert!(
        served
            .presence
            .server_subscriptions("carol")
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn http_refusals_have_a_status_and_a_code() {
    let served = Served::start().await;
    let ok_body = r#"{"channel":"room:1","data":1}"#;
    let big = format!(r#"{{"channel":"room:1","data":"{}"}}"#, "x".repeat(5000));
    for (method, path, key, body, status, code) in [
        (
            "POST",
            "/api/v1/publish",
            None,
            ok_body,
            401,
            "missing_api_key",
        ),
        (
            "POST",
            "/api/v1/publish",
            Some("wrong-key-0123456789abcd"),
            ok_body,
            401,
            "invalid_api_key",
        ),
        (
            "POST",
            "/api/v1/publish",
            Some(READ_ONLY_KEY),
            ok_body,
            403,
            "permission_denied",
        ),
        ("POST", "/api/v1/nope", Some(KEY), ok_body, 404, "not_found"),
        (
            "GET",
            "/api/v1/publish",
            Some(KEY),
            "",
            405,
            "method_not_allowed",
        ),
        (
            "POST",
            "/api/v1/publish",
            Some(KEY),
            "{not json",
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/v1/publish",
            Some(KEY),
            r#"{"channel":"room:1"}"#,
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/v1/publish",
            Some(KEY),
            r#"{"channel":"nope:1","data":1}"#,
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/v1/publish",
            Some(KEY),
            r#"{"channel":"","data":1}"#,
            400,
            "invalid_argument",
        ),
        (
            "POST",
            "/api/v1/publish",
            Some(KEY),
            big.as_str(),
            413,
            "too_large",
        ),
    ] {
        let (got_status, got) = served.http(method, path, key, body).await;
        assert_eq!(got_status, status, "{method} {path} {body:.40}: {got}");
        assert_eq!(got["error"]["code"], json!(code), "{method} {path}: {got}");
        assert!(
            got["error"]["message"]
                .as_str()
                .is_some_and(|m| !m.is_empty())
        );
        if let Some(key) = key {
            assert!(!got.to_string().contains(key), "a key in an answer");
        }
    }
}

/// `History` over gRPC: pages from the oldest kept on, the newest first and
/// on back, a range; a read-only key may read; a namespace without history
/// and a page too large are refused with their reason.
#[tokio::test]
async fn grpc_history_pages_both_ways() {
    let served = Served::start().await;
    for n in 1..=7 {
        let answer = served
            .client(KEY)
            .publish(pb::PublishRequest {
                channel: "feed:1".into(),
                data_json: json!({ "n": n }).to_string(),
                ..pb::PublishRequest::default()
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(answer.offset, n);
    }
    let history = |request: pb::HistoryRequest| {
        let mut client = served.client(READ_ONLY_KEY);
        async move {
            client
                .history(request)
                .await
                .map(tonic::Response::into_inner)
        }
    };
    let offsets = |page: &pb::HistoryResponse| -> Vec<(u64, String)> {
        page.publications
            .iter()
            .map(|p| (p.offset, p.data_json.clone()))
            .collect()
    };
    let oldest = history(pb::HistoryRequest {
        channel: "feed:1".into(),
        limit: 2,
        ..pb::HistoryRequest::default()
    })
    .await
    .unwrap();
    assert_eq!((oldest.offset, oldest.epoch.len()), (7, 12));
    assert_eq!(
        offsets(&oldest),
        [(3, r#"{"n":3}"#.to_owned()), (4, r#"{"n":4}"#.to_owned())],
        "five kept"
    );
    let page = |after_offset, before_offset, limit, newest_first| pb::HistoryRequest {
        channel: "feed:1".into(),
        after_offset,
        before_offset,
        limit,
        newest_first,
    };
    for (request, expected, why) in [
        (page(0, 0, 2, true), [7, 6].as_slice(), "the newest first"),
        (page(0, 6, 2, true), &[5, 4], "and back from there"),
        (page(4, 7, 0, false), &[5, 6], "a range, the default limit"),
        (page(4, 7, 1, true), &[6], "a range from its newest"),
    ] {
        let answer = history(request).await.unwrap();
        let offsets: Vec<u64> = answer.publications.iter().map(|p| p.offset).collect();
        assert_eq!(offsets, expected, "{why}");
    }

    for (channel, limit, why) in [
        ("room:1", 10, "no history in its namespace"),
        ("feed:1", 1001, "a page of at most 1000"),
        ("feed:a b", 10, "a bad name"),
    ] {
        let status = history(pb::HistoryRequest {
            channel: channel.into(),
            limit,
            ..pb::HistoryRequest::default()
        })
        .await
        .unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{why}");
        assert_eq!(
            reason_of(&status).as_deref(),
            Some("invalid_argument"),
            "{why}"
        );
    }
}

/// `History` over HTTP JSON: the same pages, each publication's data as
/// JSON.
#[tokio::test]
async fn http_history_pages_both_ways() {
    let served = Served::start().await;
    for n in 1..=3 {
        let (status, _) = served
            .http(
                "POST",
                "/api/v1/publish",
                Some(KEY),
                &json!({"channel": "feed:2", "data": {"n": n}}).to_string(),
            )
            .await;
        assert_eq!(status, 200);
    }
    let history =
        |body: &'static str| served.http("POST", "/api/v1/history", Some(READ_ONLY_KEY), body);
    let (status, body) = history(r#"{"channel":"feed:2","newest_first":true,"limit":2}"#).await;
    assert_eq!(status, 200, "{body}");
    let epoch = body["epoch"].as_str().unwrap().to_owned();
    assert_eq!(
        body,
        json!({"publications": [{"offset": 3, "data": {"n": 3}}, {"offset": 2, "data": {"n": 2}}],
               "offset": 3, "epoch": epoch})
    );
    let (status, body) =
        history(r#"{"channel":"feed:2","after_offset":1,"before_offset":3}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["publications"],
        json!([{"offset": 2, "data": {"n": 2}}])
    );
    let (status, body) = history(r#"{"channel":"feed:2","reverse":true}"#).await;
    assert_eq!(status, 400, "an unknown field: {body}");
    assert_eq!(body["error"]["code"], "invalid_argument");
}
