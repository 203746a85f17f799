//! What holds across the fleet without each gateway keeping a copy of the
//! fleet: the per-user connection limit, exact when one user connects to
//! three gateways at the same moment, a `Disconnect` that blocks the
//! user's new connections on every instance, and one user id length limit
//! at the handshake, in presence and in the API.

use std::time::Duration;

use futures_util::{StreamExt, future::join_all};
use pulse_e2e::{Client, RedisServer, Service, connect, eventually, next_json, token};
use pulse_presence::{Presence, RedisOptions};
use pulse_protocol::{
    proto::presence::v1::{
        DisconnectRequest, GetUserRequest, GetUsersRequest, SendRequest, WatchRequest,
    },
    status::reason_of,
};
use tokio_tungstenite::tungstenite::Message;

/// How a connection attempt ended: live, or closed with a code and the
/// `error` message's code.
#[derive(Debug)]
enum Outcome {
    Connected(Box<Client>),
    Refused {
        close: u16,
        code: String,
        message: String,
    },
}

/// Opens a socket and reads how the gateway answers it.
async fn attempt(gateway: std::net::SocketAddr, user: &str) -> Outcome {
    let mut client = connect(gateway, &format!("?token={}", token(user))).await;
    let first = next_json(&mut client).await;
    match first["type"].as_str() {
        Some("connected") => Outcome::Connected(Box::new(client)),
        Some("error") => {
            let code = first["code"].as_str().unwrap_or_default().to_owned();
            let message = first["message"].as_str().unwrap_or_default().to_owned();
            let close = close_code(&mut client).await;
            Outcome::Refused {
                close,
                code,
                message,
            }
        }
        _ => panic!("unexpected first message {first}"),
    }
}

async fn close_code(client: &mut Client) -> u16 {
    loop {
        match tokio::time::timeout(Duration::from_secs(10), client.next())
            .await
            .expect("a close within 10 s")
        {
            Some(Ok(Message::Close(Some(frame)))) => return u16::from(frame.code),
            Some(Ok(_)) => continue,
            other => panic!("socket ended without a close frame: {other:?}"),
        }
    }
}

/// One user opens 12 sockets at the same moment, four on each of three
/// gateways, with a limit of 5: exactly 5 go live and 7 are refused 4429
/// `too_many_connections`, whatever the bus has told each gateway yet.
/// When one closes, exactly one place is free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_per_user_limit_is_exact_across_three_gateways_at_once() {
    const LIMIT: usize = 5;
    let redis = RedisServer::start().await;
    let namespace = pulse_e2e::unique_namespace();
    let limit = LIMIT.to_string();
    let mut gateways = Vec::new();
    for instance in ["fleet-a", "fleet-b", "fleet-c"] {
        gateways.push(
            Service::gateway(
                redis.url(),
                &namespace,
                &[
                    "--instance-id",
                    instance,
                    "--max-connections-per-user",
                    &limit,
                ],
            )
            .await,
        );
    }
    let addrs: Vec<_> = gateways.iter().map(|gateway| gateway.addr).collect();
    let attempts = addrs
        .iter()
        .flat_map(|addr| std::iter::repeat_n(*addr, 4))
        .map(|addr| tokio::spawn(attempt(addr, "mallory")));
    let outcomes: Vec<Outcome> = join_all(attempts)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();

    let mut live = Vec::new();
    let mut refused = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::Connected(client) => live.push(client),
            Outcome::Refused { close, code, .. } => refused.push((close, code)),
        }
    }
    assert_eq!(live.len(), LIMIT, "refused: {refused:?}");
    assert_eq!(refused.len(), 12 - LIMIT);
    for (close, code) in &refused {
        assert_eq!((*close, code.as_str()), (4429, "too_many_connections"));
    }
    let presence =
        Presence::redis(RedisOptions::new(redis.url()).with_namespace(namespace.clone())).unwrap();
    assert_eq!(presence.user("mallory").await.unwrap().len(), LIMIT);

    // Full: another attempt on any gateway is refused.
    for addr in &addrs {
        assert!(matches!(
            attempt(*addr, "mallory").await,
            Outcome::Refused { close: 4429, .. }
        ));
    }
    // One closes; one place is free, on any gateway, and only one.
    let mut first = live.pop().unwrap();
    first.close(None).await.unwrap();
    eventually("a place freed", Duration::from_secs(10), || async {
        presence.user("mallory").await.unwrap().len() == LIMIT - 1
    })
    .await;
    let again = join_all(addrs.iter().map(|addr| attempt(*addr, "mallory"))).await;
    let connected = again
        .iter()
        .filter(|outcome| matches!(outcome, Outcome::Connected(_)))
        .count();
    assert_eq!(connected, 1, "{again:?}");
    assert_eq!(presence.user("mallory").await.unwrap().len(), LIMIT);
}

fn block_request(user_id: &str, reason: &str, seconds: i64, nanos: i32) -> DisconnectRequest {
    DisconnectRequest {
        user_id: user_id.into(),
        connection_id: String::new(),
        reason: reason.into(),
        block_for: Some(prost_types::Duration { seconds, nanos }),
    }
}

/// `Disconnect` with `block_for` closes the user's sockets and refuses their
/// new ones on every gateway (4403 `blocked`, with the reason) until the
/// block ends; other users are not affected; a bad duration is
/// `INVALID_ARGUMENT` with a reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn disconnect_can_block_a_user_on_every_gateway() {
    let redis = RedisServer::start().await;
    let namespace = pulse_e2e::unique_namespace();
    let presence_service = Service::presence(redis.url(), &namespace, &[]).await;
    let mut presence = pulse_e2e::presence_client(presence_service.grpc_url()).await;
    let a = Service::gateway(redis.url(), &namespace, &["--instance-id", "block-a"]).await;
    let b = Service::gateway(redis.url(), &namespace, &["--instance-id", "block-b"]).await;

    let Outcome::Connected(mut mallory) = attempt(a.addr, "mallory").await else {
        panic!("mallory is not blocked yet");
    };
    let closed = presence
        .disconnect(block_request("mallory", "spamming the lobby", 3600, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(closed.connections, 1);
    let error = next_json(&mut mallory).await;
    assert_eq!(
        (error["code"].as_str(), error["message"].as_str()),
        (Some("disconnected"), Some("spamming the lobby"))
    );
    assert_eq!(close_code(&mut mallory).await, 4403);

    for (gateway, service) in [(a.addr, &a), (b.addr, &b)] {
        match attempt(gateway, "mallory").await {
            Outcome::Refused {
                close,
                code,
                message,
            } => {
                assert_eq!((close, code.as_str()), (4403, "blocked"), "{message}");
                assert!(message.contains("spamming the lobby"), "{message}");
            }
            Outcome::Connected(_) => panic!(
                "a blocked user connected on {gateway}; its log:\n{}\npulse-presence's log:\n{}",
                service.logs().join("\n"),
                presence_service.logs().join("\n")
            ),
        }
    }
    assert!(matches!(
        attempt(b.addr, "bob").await,
        Outcome::Connected(_)
    ));

    // A block ends by itself; one for a user who is offline counts no socket.
    let short = presence
        .disconnect(block_request("eve", "cool down", 1, 0))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(short.connections, 0);
    assert!(matches!(
        attempt(a.addr, "eve").await,
        Outcome::Refused { close: 4403, .. }
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let _eve = loop {
        if let Outcome::Connected(client) = attempt(b.addr, "eve").await {
            break client;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "eve's block did not end"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    for (seconds, nanos) in [(-1, 0), (0, -1), (31 * 24 * 3600, 0), (1, 1_000_000_000)] {
        let status = presence
            .disconnect(block_request("bob", "x", seconds, nanos))
            .await
            .expect_err("a bad block_for is refused");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        assert_eq!(reason_of(&status).as_deref(), Some("invalid_argument"));
        assert!(status.message().contains("block_for"), "{status:?}");
    }
    // Refused requests changed nothing: bob still connects.
    assert!(matches!(
        attempt(a.addr, "bob").await,
        Outcome::Connected(_)
    ));
}

/// The longest user id (256 bytes) connects, is registered and can be
/// reached by `Send`; one byte more is refused at the handshake (4401
/// `user_id_too_long`) rather than living as a socket presence cannot
/// manage, and every API call naming it is `INVALID_ARGUMENT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn user_ids_have_one_length_limit_everywhere() {
    let redis = RedisServer::start().await;
    let namespace = pulse_e2e::unique_namespace();
    let presence_service = Service::presence(redis.url(), &namespace, &[]).await;
    let mut presence = pulse_e2e::presence_client(presence_service.grpc_url()).await;
    let gateway = Service::gateway(redis.url(), &namespace, &[]).await;
    let longest = "é".repeat(128);
    assert_eq!(longest.len(), 256);
    let over = format!("{longest}x");

    let Outcome::Connected(mut client) = attempt(gateway.addr, &longest).await else {
        panic!("the longest user id is refused");
    };
    let user = pulse_e2e::get_user(&mut presence, &longest).await;
    assert_eq!(user.connections.len(), 1);
    let sent = presence
        .send(SendRequest {
            user_id: longest.clone(),
            data_json: "42".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(sent.connections, 1);
    assert_eq!(next_json(&mut client).await["data"], 42);

    // Over the limit, and far over it (past what presence took before).
    for user_id in [over.clone(), "u".repeat(2000)] {
        match attempt(gateway.addr, &user_id).await {
            Outcome::Refused {
                close,
                code,
                message,
            } => {
                assert_eq!(
                    (close, code.as_str()),
                    (4401, "user_id_too_long"),
                    "{message}"
                );
                assert!(message.contains("256"), "{message}");
            }
            Outcome::Connected(_) => panic!("a {}-byte user id connected", user_id.len()),
        }
    }

    let expect_invalid = |what: &str, result: Result<(), tonic::Status>| {
        let status = result.expect_err(what);
        assert_eq!(
            status.code(),
            tonic::Code::InvalidArgument,
            "{what}: {status:?}"
        );
        assert_eq!(reason_of(&status).as_deref(), Some("invalid_argument"));
        assert!(status.message().contains("256"), "{what}: {status:?}");
    };
    let mut api = presence.clone();
    expect_invalid(
        "GetUser",
        api.get_user(GetUserRequest {
            user_id: over.clone(),
        })
        .await
        .map(drop),
    );
    expect_invalid(
        "GetUsers",
        api.get_users(GetUsersRequest {
            user_ids: vec![longest.clone(), over.clone()],
        })
        .await
        .map(drop),
    );
    expect_invalid(
        "Watch",
        api.watch(WatchRequest {
            user_ids: vec![over.clone()],
            all: false,
            since: String::new(),
        })
        .await
        .map(drop),
    );
    expect_invalid(
        "Send",
        api.send(SendRequest {
            user_id: over.clone(),
            data_json: "1".into(),
        })
        .await
        .map(drop),
    );
    expect_invalid(
        "Disconnect",
        api.disconnect(block_request(&over, "x", 0, 0))
            .await
            .map(drop),
    );
}
