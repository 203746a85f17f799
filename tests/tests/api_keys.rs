//! The internal API's keys with the real `pulse-presence` binary: keys from
//! the environment and a keys file are used, refused and denied over gRPC and
//! HTTP without ever reaching a log line, even at debug level; and an API run
//! open on purpose says so in its log and serves callers without a key.

use pulse_e2e::*;
use pulse_protocol::{
    api_key::BearerKey,
    proto::presence::v1::{self as pb, presence_client::PresenceClient},
};
use serde_json::Value;
use tonic::{Code, transport::Channel};

/// Keys as an operator would make them, each unlike the others from its
/// first characters, so a prefix that reaches a log is found too.
const ENV_KEY: &str = "envkey-7f3a9c2e51d04b8e96a1c7d2";
const NEXT_ENV_KEY: &str = "nextkey-0b6e4d9a3c8f27e15d4a9b0c";
const FILE_KEY: &str = "filekey-c41e8a7d2f9b06e35a1d8c4f";
const WRONG_KEY: &str = "wrongkey-93d7b1e6a4c0f28d5b7e1a3c";

async fn channel(presence: &Service) -> Channel {
    Channel::from_shared(presence.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap()
}

fn as_key(
    channel: Channel,
    key: &str,
) -> PresenceClient<tonic::service::interceptor::InterceptedService<Channel, BearerKey>> {
    PresenceClient::with_interceptor(channel, BearerKey::new(key).unwrap())
}

fn get_user() -> pb::GetUserRequest {
    pb::GetUserRequest {
        user_id: "alice".into(),
    }
}

#[tokio::test]
async fn keys_are_used_refused_and_denied_and_never_logged() {
    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    let keys_file = ConfigFile::new(&format!(
        "[[keys]]\nname = \"billing\"\nkey = \"{FILE_KEY}\"\npermissions = [\"publish\"]\n"
    ));
    let presence = Service::start_with_env(
        "pulse-presence",
        &presence_args(redis.url(), &namespace, &[]),
        &[
            ("API_KEYS", &format!("{ENV_KEY},{NEXT_ENV_KEY}")),
            ("API_KEYS_FILE", keys_file.path()),
            // Everything Pulse and its libraries (tonic, hyper, h2, redis)
            // log short of trace.
            ("RUST_LOG", "debug"),
        ],
    )
    .await;
    let http = presence.http_addr().await;
    let channel = channel(&presence).await;

    // Both keys from the environment (rotation) and the file's key work.
    as_key(channel.clone(), ENV_KEY)
        .get_user(get_user())
        .await
        .unwrap();
    as_key(channel.clone(), NEXT_ENV_KEY)
        .get_user(get_user())
        .await
        .unwrap();
    as_key(channel.clone(), FILE_KEY)
        .send(pb::SendRequest {
            user_id: "alice".into(),
            data_json: "{}".into(),
        })
        .await
        .unwrap();
    // The file's key has only `publish`: reading is denied, naming the key.
    let status = as_key(channel.clone(), FILE_KEY)
        .get_user(get_user())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("\"billing\""), "{status:?}");
    // A key nobody issued, and none at all.
    let status = as_key(channel.clone(), WRONG_KEY)
        .get_user(get_user())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert!(!status.message().contains(WRONG_KEY), "{status:?}");
    let status = PresenceClient::new(channel.clone())
        .get_user(get_user())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    // A Watch opened with a key and dropped.
    drop(
        as_key(channel, ENV_KEY)
            .watch(pb::WatchRequest {
                all: true,
                ..Default::default()
            })
            .await
            .unwrap(),
    );
    // The same over HTTP.
    let list = r#"{"prefix":""}"#;
    let (status, body) = post_api_as(http, "/api/v1/channels", Some(ENV_KEY), list).await;
    assert_eq!(status, 200, "{body}");
    let (status, body) = post_api_as(http, "/api/v1/channels", Some(WRONG_KEY), list).await;
    assert_eq!(status, 401, "{body}");
    assert!(!body.contains(WRONG_KEY), "{body}");
    let (status, body) = post_api_as(http, "/api/v1/channels", Some(FILE_KEY), list).await;
    assert_eq!(status, 403, "{body}");

    let logs = presence.logs();
    assert!(
        logs.iter().any(|line| line.contains("\"DEBUG\"")),
        "the binary logged at debug level: {logs:#?}"
    );
    for key in [ENV_KEY, NEXT_ENV_KEY, FILE_KEY, WRONG_KEY] {
        let prefix = &key[..12];
        let leaks: Vec<&String> = logs.iter().filter(|line| line.contains(prefix)).collect();
        assert!(leaks.is_empty(), "{prefix}… in the log: {leaks:#?}");
    }
}

#[tokio::test]
async fn an_open_api_warns_at_start_and_serves_without_a_key() {
    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence = Service::start(
        "pulse-presence",
        &presence_args(redis.url(), &namespace, &["--insecure-open-api"]),
    )
    .await;
    let warnings: Vec<Value> = presence
        .logs()
        .iter()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["level"] == "WARN")
        .collect();
    assert!(
        warnings.iter().any(|line| line["message"]
            .as_str()
            .is_some_and(|message| message.contains("OPEN (--insecure-open-api)"))),
        "{warnings:#?}"
    );

    let channel = channel(&presence).await;
    PresenceClient::new(channel.clone())
        .get_user(get_user())
        .await
        .unwrap();
    PresenceClient::new(channel)
        .disconnect(pb::DisconnectRequest {
            user_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    let http = presence.http_addr().await;
    let (status, body) = post_api_as(http, "/api/v1/channels", None, r#"{"prefix":""}"#).await;
    assert_eq!(status, 200, "{body}");
}
