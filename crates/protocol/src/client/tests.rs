use proptest::prelude::*;
use serde_json::json;

use super::*;

#[test]
fn decodes_the_documented_client_messages() {
    assert_eq!(
        ClientMessage::decode(r#"{"type":"auth","token":"a.b.c"}"#).unwrap(),
        ClientMessage::Auth {
            token: Token("a.b.c".into())
        }
    );
    assert_eq!(
        ClientMessage::decode(r#"{"type":"ping","id":7}"#).unwrap(),
        ClientMessage::Ping { id: Some(json!(7)) }
    );
    assert_eq!(
        ClientMessage::decode(r#"{"type":"ping"}"#).unwrap(),
        ClientMessage::Ping { id: None }
    );
}

#[test]
fn rejects_what_is_not_a_known_message() {
    for text in [
        "",
        "null",
        "[]",
        "{}",
        r#"{"type":"subscribe"}"#,
        r#"{"type":"auth"}"#,
        r#"{"type":"auth","token":5}"#,
        r#"{"token":"a.b.c"}"#,
        "{\"type\":\"ping\"",
    ] {
        assert!(ClientMessage::decode(text).is_err(), "{text:?} decoded");
    }
}

#[test]
fn encodes_the_documented_server_messages() {
    let connected = ServerMessage::Connected {
        connection_id: "c1".into(),
        user_id: "u1".into(),
        instance_id: "i1".into(),
        heartbeat_interval_ms: 30_000,
        channel: "#u1".into(),
        offset: None,
        epoch: None,
    };
    assert_eq!(
        serde_json::from_str::<Value>(&connected.encode()).unwrap(),
        json!({"type":"connected","connection_id":"c1","user_id":"u1","instance_id":"i1","heartbeat_interval_ms":30000,"channel":"#u1"})
    );
    let with_history = ServerMessage::Connected {
        connection_id: "c1".into(),
        user_id: "u1".into(),
        instance_id: "i1".into(),
        heartbeat_interval_ms: 30_000,
        channel: "#u1".into(),
        offset: Some(4),
        epoch: Some("e".into()),
    };
    assert_eq!(
        serde_json::from_str::<Value>(&with_history.encode()).unwrap()["offset"],
        json!(4)
    );
    assert_eq!(
        ServerMessage::Pong { id: None }.encode(),
        r#"{"type":"pong"}"#
    );
    assert_eq!(
        ServerMessage::error(ErrorCode::TOKEN_EXPIRED, "token has expired").encode(),
        r#"{"type":"error","code":"token_expired","message":"token has expired"}"#
    );
}

#[test]
fn decodes_the_channel_requests() {
    assert_eq!(
        ClientMessage::decode(
            r#"{"type":"subscribe","id":1,"channel":"room:7","since":{"offset":4,"epoch":"e1"}}"#
        )
        .unwrap(),
        ClientMessage::Subscribe {
            id: 1,
            channel: "room:7".into(),
            token: None,
            since: Some(StreamPosition {
                offset: 4,
                epoch: "e1".into()
            }),
        }
    );
    assert_eq!(
        ClientMessage::decode(r#"{"type":"publish","id":2,"channel":"c","data":null}"#).unwrap(),
        ClientMessage::Publish {
            id: 2,
            channel: "c".into(),
            data: Value::Null
        }
    );
}

#[test]
fn a_malformed_request_is_answered_not_closed() {
    for (text, id) in [
        (r#"{"type":"subscribe","id":7}"#, Some(7)),
        (r#"{"type":"subscribe","id":7,"channel":5}"#, Some(7)),
        (r#"{"type":"subscribe","channel":"a"}"#, None),
        (r#"{"type":"subscribe","id":"x","channel":"a"}"#, None),
        (
            r#"{"type":"subscribe","id":3,"channel":"a","since":{"offset":"1"}}"#,
            Some(3),
        ),
        (r#"{"type":"publish","id":9,"channel":"a"}"#, Some(9)),
        (r#"{"type":"unsubscribe","id":4}"#, Some(4)),
        (r#"{"type":"presence","id":5,"channel":[]}"#, Some(5)),
    ] {
        match ClientMessage::decode_frame(text) {
            Ok(Decoded::BadRequest { id: got, message }) => {
                assert_eq!(got, id, "{text}");
                assert!(message.starts_with("malformed "), "{message}");
            }
            other => panic!("{text}: {other:?}"),
        }
    }
    // What is not a request at all stays a protocol violation.
    for text in [
        "{}",
        r#"{"type":"nope","id":1}"#,
        r#"{"type":"auth"}"#,
        "[]",
    ] {
        assert!(ClientMessage::decode_frame(text).is_err(), "{text}");
    }
    assert!(matches!(
        ClientMessage::decode_frame(r#"{"type":"ping"}"#),
        Ok(Decoded::Message(ClientMessage::Ping { id: None }))
    ));
}

#[test]
fn encodes_the_channel_answers() {
    assert_eq!(
        ServerMessage::refusal(Some(3), ErrorCode::UNKNOWN_NAMESPACE, "no such namespace").encode(),
        r#"{"type":"error","id":3,"code":"unknown_namespace","message":"no such namespace"}"#
    );
    assert_eq!(
        ServerMessage::Subscribed {
            id: Some(1),
            channel: "room:1".into(),
            offset: Some(7),
            epoch: Some("e1".into()),
            recovered: Some(false),
            publications: Some(Vec::new()),
        }
        .encode(),
        r#"{"type":"subscribed","id":1,"channel":"room:1","offset":7,"epoch":"e1","recovered":false,"publications":[]}"#
    );
    assert_eq!(
        ServerMessage::Unsubscribed {
            id: None,
            channel: "room:1".into(),
            code: Some(ErrorCode::PERMISSION_DENIED)
        }
        .encode(),
        r#"{"type":"unsubscribed","channel":"room:1","code":"permission_denied"}"#
    );
    assert_eq!(
        ServerMessage::Published {
            id: 4,
            offset: None
        }
        .encode(),
        r#"{"type":"published","id":4}"#
    );
}

#[test]
fn token_debug_never_shows_the_token() {
    let message = ClientMessage::Auth {
        token: Token("secret.jwt.value".into()),
    };
    assert!(!format!("{message:?}").contains("secret"));
}

#[test]
fn close_codes_round_trip() {
    for code in [
        1000, 1001, 1002, 1007, 1009, 1013, 4400, 4401, 4403, 4408, 4429,
    ] {
        assert_eq!(CloseCode::from_code(code).unwrap().code(), code);
    }
    assert_eq!(CloseCode::from_code(1006), None);
}

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        "[ -~]{0,12}".prop_map(Value::from),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-z]{1,6}", inner, 0..4)
                .prop_map(|map| Value::Object(map.into_iter().collect())),
        ]
    })
}

fn client_message() -> impl Strategy<Value = ClientMessage> {
    prop_oneof![
        "\\PC{0,64}".prop_map(|token| ClientMessage::Auth {
            token: Token(token)
        }),
        // `null` is the same on the wire as no id at all, so ids are never null here.
        prop::option::of(json_value().prop_filter("null id", |v| !v.is_null()))
            .prop_map(|id| ClientMessage::Ping { id }),
        (
            any::<u64>(),
            "\\PC{0,20}",
            prop::option::of("[a-z.]{1,20}"),
            prop::option::of((any::<u64>(), "[a-z0-9]{0,8}"))
        )
            .prop_map(|(id, channel, token, since)| ClientMessage::Subscribe {
                id,
                channel,
                token: token.map(Token),
                since: since.map(|(offset, epoch)| StreamPosition { offset, epoch }),
            }),
        (any::<u64>(), "\\PC{0,20}")
            .prop_map(|(id, channel)| ClientMessage::Unsubscribe { id, channel }),
        (any::<u64>(), "\\PC{0,20}")
            .prop_map(|(id, channel)| ClientMessage::Presence { id, channel }),
        (any::<u64>(), "\\PC{0,20}", json_value())
            .prop_map(|(id, channel, data)| ClientMessage::Publish { id, channel, data }),
    ]
}

fn server_message() -> impl Strategy<Value = ServerMessage> {
    prop_oneof![
        ("\\PC{0,16}", "\\PC{0,16}", "\\PC{0,16}", any::<u64>()).prop_map(
            |(connection_id, user_id, instance_id, heartbeat_interval_ms)| {
                ServerMessage::Connected {
                    channel: format!("#{user_id}"),
                    connection_id,
                    user_id,
                    instance_id,
                    heartbeat_interval_ms,
                    offset: None,
                    epoch: None,
                }
            }
        ),
        prop::option::of(json_value().prop_filter("null id", |v| !v.is_null()))
            .prop_map(|id| ServerMessage::Pong { id }),
        (prop::option::of(any::<u64>()), "[a-z_]{1,20}", "\\PC{0,40}").prop_map(
            |(id, code, message)| ServerMessage::Error {
                id,
                code: ErrorCode::from(code),
                message
            }
        ),
        (
            prop::option::of(any::<u64>()),
            "\\PC{0,20}",
            prop::option::of(any::<bool>())
        )
            .prop_map(|(id, channel, recovered)| ServerMessage::Subscribed {
                id,
                channel,
                offset: recovered.map(|_| 3),
                epoch: recovered.map(|_| "e".to_owned()),
                recovered,
                publications: recovered.map(|_| Vec::new()),
            }),
        (
            prop::option::of(any::<u64>()),
            "\\PC{0,20}",
            prop::option::of("[a-z_]{1,12}")
        )
            .prop_map(|(id, channel, code)| ServerMessage::Unsubscribed {
                id,
                channel,
                code: code.map(ErrorCode::from)
            }),
        ("\\PC{0,20}", prop::option::of(any::<u64>()), json_value()).prop_map(
            |(channel, offset, data)| ServerMessage::Publication {
                channel,
                offset,
                data
            }
        ),
        (any::<u64>(), prop::option::of(any::<u64>()))
            .prop_map(|(id, offset)| ServerMessage::Published { id, offset }),
    ]
}

proptest! {
    #[test]
    fn client_messages_round_trip(message in client_message()) {
        let text = serde_json::to_string(&message).unwrap();
        prop_assert_eq!(ClientMessage::decode(&text).unwrap(), message);
    }

    #[test]
    fn server_messages_round_trip(message in server_message()) {
        let decoded: ServerMessage = serde_json::from_str(&message.encode()).unwrap();
        prop_assert_eq!(decoded, message);
    }

    #[test]
    fn decoding_arbitrary_text_never_panics(text in "\\PC{0,200}") {
        let _ = ClientMessage::decode(&text);
    }
}
