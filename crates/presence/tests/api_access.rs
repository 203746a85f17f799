//! Who may call `pulse-presence`: API keys with permissions, TLS and client
//! certificates, and the limits of the gRPC server, over real TCP.

mod support;

use std::{net::SocketAddr, time::Duration};

use pulse_presence::{
    ApiConfig, ApiLimits, Presence,
    access::{ApiKey, Permission, Permissions},
};
use pulse_protocol::{
    api_key::BearerKey,
    proto::presence::v1::{self as pb, presence_client::PresenceClient},
    status::reason_of,
};
use support::{DEADLINE, pki::pki, served::Served};
use tokio::time::timeout;
use tonic::{
    Code,
    transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig},
};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

const ALL: &str = "key-with-every-permission-0001";
const NEXT: &str = "key-rotated-in-next-0000000002";
const READER: &str = "key-that-only-reads-000000003";

/// Serves an in-memory store with `api`.
async fn serve(api: ApiConfig) -> Served {
    Served::start(Presence::in_memory(), api).await
}

fn keys() -> ApiConfig {
    ApiConfig::with_keys(vec![
        ApiKey::new("ops", ALL, Permissions::ALL),
        ApiKey::new("ops-next", NEXT, Permissions::ALL),
        ApiKey::new(
            "dashboard",
            READER,
            [Permission::PresenceRead].into_iter().collect(),
        ),
    ])
}

fn get_user() -> pb::GetUserRequest {
    pb::GetUserRequest {
        user_id: "alice".into(),
    }
}

fn send() -> pb::SendRequest {
    pb::SendRequest {
        user_id: "alice".into(),
        data_json: "{}".into(),
    }
}

#[tokio::test]
async fn a_call_without_a_valid_key_is_unauthenticated_and_never_served() {
    let served = serve(keys()).await;

    let status = PresenceClient::new(served.channel())
        .send(send())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("missing_api_key"));

    let wrong = "key-that-nobody-issued-0000000";
    let status = served.client(wrong).send(send()).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("invalid_api_key"));
    assert!(!status.message().contains(wrong), "{status:?}");

    // A streaming call is refused the same way, before it streams.
    let status = PresenceClient::new(served.channel())
        .watch(pb::WatchRequest {
            user_ids: vec![],
            all: true,
            since: String::new(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    served.shutdown().await;
}

#[tokio::test]
async fn each_key_does_what_its_permissions_allow_and_two_keys_work_at_once() {
    let served = serve(keys()).await;

    // Rotation: the old and the new key both work until the old one is removed.
    for key in [ALL, NEXT] {
        let mut client = served.client(key);
        client.get_user(get_user()).await.unwrap();
        client.send(send()).await.unwrap();
        client
            .disconnect(pb::DisconnectRequest {
                user_id: "alice".into(),
                ..Default::default()
            })
            .await
            .unwrap();
    }

    let mut reader = served.client(READER);
    reader.get_user(get_user()).await.unwrap();
    reader
        .count_online(pb::CountOnlineRequest {})
        .await
        .unwrap();
    // A Snapshot is a read, like the Watch it starts.
    let mut snapshot = reader
        .snapshot(pb::SnapshotRequest {})
        .await
        .unwrap()
        .into_inner();
    let last = timeout(DEADLINE, async {
        let mut last = None;
        while let Some(chunk) = snapshot.message().await.unwrap() {
            last = Some(chunk);
        }
        last
    })
    .await
    .unwrap();
    assert!(
        last.is_some_and(|chunk| !chunk.position.is_empty()),
        "a snapshot ends with its position"
    );
    let status = reader.send(send()).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("permission_denied"));
    assert!(status.message().contains("\"dashboard\""), "{status:?}");
    assert!(status.message().contains("publish"), "{status:?}");
    let status = reader
        .disconnect(pb::DisconnectRequest {
            user_id: "alice".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("connections:manage"),
        "{status:?}"
    );
    served.shutdown().await;
}

#[tokio::test]
async fn health_needs_no_key_and_an_open_api_needs_none_at_all() {
    let served = serve(keys()).await;
    HealthClient::new(served.channel())
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    served.shutdown().await;

    let open = serve(ApiConfig::open()).await;
    PresenceClient::new(open.channel())
        .send(send())
        .await
        .unwrap();
    open.shutdown().await;
}

#[tokio::test]
async fn one_key_holds_at_most_its_share_of_watch_streams() {
    let mut api = keys();
    api.limits.max_watches_per_key = 2;
    let served = serve(api).await;
    let watch = || pb::WatchRequest {
        user_ids: vec![],
        all: true,
        since: String::new(),
    };
    let mut ops = served.client(ALL);
    let first = ops.watch(watch()).await.unwrap().into_inner();
    let second = ops.watch(watch()).await.unwrap().into_inner();
    let status = ops.watch(watch()).await.unwrap_err();
    assert_eq!(status.code(), Code::ResourceExhausted, "{status:?}");
    assert_eq!(reason_of(&status).as_deref(), Some("too_many_watches"));

    // Another key has its own share.
    let mut next = served.client(NEXT);
    let _other = next.watch(watch()).await.unwrap();

    // A closed stream frees its place (the server notices the reset).
    drop(first);
    let reopened = timeout(DEADLINE, async {
        loop {
            match ops.watch(watch()).await {
                Ok(stream) => return stream,
                Err(status) => assert_eq!(status.code(), Code::ResourceExhausted),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("a closed watch frees its slot");
    drop((second, reopened));
    served.shutdown().await;
}

#[tokio::test]
async fn a_request_over_the_size_limit_is_refused() {
    let mut api = keys();
    api.limits = ApiLimits {
        max_request_bytes: 4096,
        ..ApiLimits::default()
    };
    let served = serve(api).await;
    let mut client = served.client(ALL);
    let status = client
        .send(pb::SendRequest {
            user_id: "alice".into(),
            data_json: format!("\"{}\"", "x".repeat(8192)),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::OutOfRange, "{status:?}");
    // A request within the limit on the same connection is served.
    client.send(send()).await.unwrap();
    served.shutdown().await;
}

#[tokio::test]
async fn the_server_announces_its_stream_limit() {
    let mut api = keys();
    api.limits.max_concurrent_streams = 7;
    let served = serve(api).await;
    let tcp = tokio::net::TcpStream::connect(served.addr).await.unwrap();
    let (mut sender, connection) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(connection);
    // The server's SETTINGS arrive with its first frames; poll until then.
    let announced = timeout(DEADLINE, async {
        loop {
            sender = sender.ready().await.unwrap();
            let max = sender.current_max_send_streams();
            if max != usize::MAX {
                return max;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("the server's SETTINGS");
    assert_eq!(announced, 7);
    served.shutdown().await;
}

/// A CA, a server certificate for `localhost` and a client certificate.
async fn tls_channel(
    addr: SocketAddr,
    ca: &str,
    identity: Option<&(String, String)>,
) -> Result<Channel, tonic::transport::Error> {
    let mut tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(ca))
        .domain_name("localhost");
    if let Some((cert, key)) = identity {
        tls = tls.identity(Identity::from_pem(cert, key));
    }
    Channel::from_shared(format!("https://{addr}"))
        .unwrap()
        .tls_config(tls)?
        .connect()
        .await
}

#[tokio::test]
async fn tls_with_client_certificates_admits_only_signed_clients() {
    let pki = pki();
    let mut api = keys();
    api.tls = Some(
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&pki.server.0, &pki.server.1))
            .client_ca_root(Certificate::from_pem(&pki.ca)),
    );
    let served = serve(api).await;

    let channel = tls_channel(served.addr, &pki.ca, Some(&pki.client))
        .await
        .unwrap();
    let mut client = PresenceClient::with_interceptor(channel, BearerKey::new(ALL).unwrap());
    client.get_user(get_user()).await.unwrap();
    // TLS does not replace the key: a signed client still needs one.
    let channel = tls_channel(served.addr, &pki.ca, Some(&pki.client))
        .await
        .unwrap();
    let status = PresenceClient::new(channel)
        .get_user(get_user())
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated);

    // No client certificate, or one the CA did not sign: no call gets through.
    for identity in [None, Some(&pki.stranger)] {
        let refused = match tls_channel(served.addr, &pki.ca, identity).await {
            Err(_) => true,
            Ok(channel) => PresenceClient::with_interceptor(channel, BearerKey::new(ALL).unwrap())
                .get_user(get_user())
                .await
                .is_err(),
        };
        assert!(refused, "a client without a signed certificate was served");
    }
    // Plaintext to a TLS port fails too.
    let plain = Channel::from_shared(format!("http://{}", served.addr))
        .unwrap()
        .connect()
        .await;
    if let Ok(channel) = plain {
        assert!(
            PresenceClient::with_interceptor(channel, BearerKey::new(ALL).unwrap())
                .get_user(get_user())
                .await
                .is_err()
        );
    }
    served.shutdown().await;
}
