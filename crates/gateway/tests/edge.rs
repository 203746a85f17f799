//! Abuse at the edge that the first limits missed: frames that were never
//! counted (pongs, fragments, frames before `auth`), token refreshes (their
//! own rate, and `pulse-auth` away while the current token is still good),
//! the dev login (a bound on password checks at once, a body deadline), and
//! the admin port that takes the probes and metrics off the public one.

mod support;

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use futures_util::SinkExt;
use pulse_auth::{Authenticator, RemoteValidator, Validator, ValidatorSettings};
use pulse_gateway::{DevLogin, Gateway as GatewayCore};
use pulse_presence::Presence;
use serde_json::json;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
    sync::oneshot,
};
use tokio_tungstenite::tungstenite::{
    Message,
    protocol::frame::{
        Frame,
        coding::{Data, OpCode},
    },
};

use crate::support::*;

fn validator() -> Validator {
    Validator::new(ValidatorSettings {
        leeway: Duration::ZERO,
        ..ValidatorSettings::with_secret(SECRET)
    })
    .unwrap()
}

/// Sends a ping and expects either its pong or, when `limited`, `error`
/// `rate_limited` and close 4429 instead.
async fn ping_answered(client: &mut Client, limited: bool) {
    send_json(client, json!({"type": "ping", "id": "after"})).await;
    if limited {
        expect_error_then_close(client, "rate_limited", 4429).await;
    } else {
        let pong = next_json(client).await;
        assert_eq!(
            (&pong["type"], &pong["id"]),
            (&"pong".into(), &"after".into())
        );
    }
}

#[tokio::test]
async fn unsolicited_pongs_count_toward_the_message_rate() {
    let mut settings = settings();
    settings.max_messages_per_second = 5;
    let gateway = Gateway::start(settings).await;
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    next_json(&mut client).await;
    // A burst is twice the rate: 10. Thirty pongs are over it.
    for _ in 0..30 {
        client.send(Message::Pong(Bytes::new())).await.unwrap();
    }
    ping_answered(&mut client, true).await;
    gateway.stop().await;
}

#[tokio::test]
async fn every_fragment_counts_toward_the_message_rate() {
    let mut settings = settings();
    settings.max_messages_per_second = 5;
    let gateway = Gateway::start(settings).await;
    let query = format!("?token={}", token("alice"));
    let fragment = |data: &'static [u8], opcode: Data, fin: bool| {
        Message::Frame(Frame::message(
            Bytes::from_static(data),
            OpCode::Data(opcode),
            fin,
        ))
    };

    // A ping in three fragments is three frames, well within the burst.
    let mut client = gateway.connect(&query).await;
    next_json(&mut client).await;
    for (data, opcode, fin) in [
        (&b"{\"type\":"[..], Data::Text, false),
        (b"\"ping\",", Data::Continue, false),
        (b"\"id\":3}", Data::Continue, true),
    ] {
        client.send(fragment(data, opcode, fin)).await.unwrap();
    }
    assert_eq!(next_json(&mut client).await["id"], 3);

    // One message of thirty empty fragments and an end is over it.
    let mut client = gateway.connect(&query).await;
    next_json(&mut client).await;
    client
        .send(fragment(b"{\"type\":\"ping\",", Data::Text, false))
        .await
        .unwrap();
    for _ in 0..30 {
        client
            .send(fragment(b"", Data::Continue, false))
            .await
            .unwrap();
    }
    client
        .send(fragment(b"\"id\":1}", Data::Continue, true))
        .await
        .unwrap();
    expect_error_then_close(&mut client, "rate_limited", 4429).await;
    gateway.stop().await;
}

#[tokio::test]
async fn frames_before_auth_count_toward_the_message_rate() {
    let mut settings = settings();
    settings.max_messages_per_second = 5;
    let gateway = Gateway::start(settings).await;
    let mut client = gateway.connect("").await;
    for _ in 0..30 {
        client.send(Message::Pong(Bytes::new())).await.unwrap();
    }
    send_json(
        &mut client,
        json!({"type": "auth", "token": token("alice")}),
    )
    .await;
    expect_error_then_close(&mut client, "rate_limited", 4429).await;
    gateway.stop().await;
}

#[tokio::test]
async fn token_refreshes_over_their_limit_are_refused_and_the_socket_stays() {
    let mut settings = settings();
    settings.max_token_refreshes_per_minute = 2;
    let gateway = Gateway::start(settings).await;
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    next_json(&mut client).await;
    // Two are taken silently; the third is refused.
    for _ in 0..3 {
        send_json(
            &mut client,
            json!({"type": "auth", "token": token("alice")}),
        )
        .await;
    }
    let refused = next_json(&mut client).await;
    assert_eq!(
        (&refused["type"], &refused["code"]),
        (&"error".into(), &"rate_limited".into()),
        "{refused}"
    );
    ping_answered(&mut client, false).await;
    gateway.stop().await;
}

/// `pulse-auth` on loopback, until the sender is used or dropped.
async fn pulse_auth() -> (SocketAddr, oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        pulse_auth::run(validator(), listener, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (addr, stop, task)
}

async fn serve(
    core: GatewayCore,
    public: TcpListener,
) -> (oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        core.serve(public, async move {
            let _ = stopped.await;
        })
        .await
        .unwrap();
    });
    (stop, task)
}

/// On paused time: the expiry is a tokio timer, so the test waits for it
/// without taking its seconds.
#[tokio::test(start_paused = true)]
async fn a_refresh_while_pulse_auth_is_away_keeps_the_socket_until_its_token_expires() {
    let (auth_addr, stop_auth, auth_task) = pulse_auth().await;
    let remote =
        RemoteValidator::new(&format!("http://{auth_addr}"), Duration::from_secs(2)).unwrap();
    let mut settings = settings();
    settings.token_leeway = Duration::ZERO;
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = public.local_addr().unwrap();
    let core = GatewayCore::new(
        settings,
        Authenticator::Remote(remote),
        Presence::in_memory(),
    );
    let (stop, task) = serve(core, public).await;

    let short = pulse_auth::mint_token(SECRET, "alice", Duration::from_secs(3));
    let (mut client, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={short}"))
        .await
        .unwrap();
    assert_eq!(next_json(&mut client).await["type"], "connected");

    stop_auth.send(()).unwrap();
    auth_task.await.unwrap();
    send_json(
        &mut client,
        json!({"type": "auth", "token": token("alice")}),
    )
    .await;
    let answer = next_json(&mut client).await;
    assert_eq!(
        (&answer["type"], &answer["code"]),
        (&"error".into(), &"auth_unavailable".into()),
        "{answer}"
    );
    // Still served on the token it has...
    ping_answered(&mut client, false).await;
    // ...until that one expires.
    expect_error_then_close(&mut client, "token_expired", 4401).await;
    stop.send(()).unwrap();
    task.await.unwrap();
}

fn dev_login() -> DevLogin {
    let users = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy/dev-users.json");
    DevLogin::load(std::path::Path::new(users), SECRET, Duration::from_secs(60)).unwrap()
}

const LOGIN: &str = r#"{"email":"test@test.com","password":"test123"}"#;

/// POSTs a login body and returns the status and the whole response.
async fn post_login(addr: SocketAddr, body: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!(
        "POST /auth/login HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(&mut stream).await
}

#[tokio::test]
async fn password_checks_beyond_the_bound_get_503_at_once() {
    let login = dev_login().with_max_verifications(1);
    let mut settings = settings();
    settings.dev_login = Some(login.clone());
    let gateway = Gateway::start(settings).await;
    let addr = gateway.addr;
    let first = tokio::spawn(post_login(addr, LOGIN));
    eventually("the first check to start", || {
        let login = login.clone();
        async move { login.verifications_in_progress() == 1 }
    })
    .await;
    // argon2 takes a while (seconds in a debug build): this one comes while
    // the first is being checked.
    let (status, response) = post_login(addr, LOGIN).await;
    assert_eq!(status, 503, "{response}");
    assert!(response.contains("\"login_busy\""), "{response}");
    assert!(
        response.to_ascii_lowercase().contains("retry-after: 1"),
        "{response}"
    );
    let (status, response) = first.await.unwrap();
    assert_eq!(status, 200, "{response}");
    // The place is free again.
    let (status, response) = post_login(addr, LOGIN).await;
    assert_eq!(status, 200, "{response}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_login_body_that_trickles_is_cut_off() {
    let mut settings = settings();
    settings.dev_login = Some(dev_login());
    settings.handshake_timeout = Duration::from_millis(500);
    let gateway = Gateway::start(settings).await;
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream
        .write_all(b"POST /auth/login HTTP/1.1\r\nHost: x\r\nContent-Length: 60\r\n\r\n{\"email\"")
        .await
        .unwrap();
    let (mut reader, mut writer) = stream.into_split();
    // One byte every 200 ms would take ten seconds to finish the body.
    let trickle = tokio::spawn(async move {
        for _ in 0..52 {
            if writer.write_all(b" ").await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), reader.read_to_end(&mut response))
        .await
        .expect("cut off before the body could finish")
        .ok();
    let response = String::from_utf8_lossy(&response);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
    assert!(response.contains("\"body_timeout\""), "{response}");
    trickle.abort();
    gateway.stop().await;
}

#[tokio::test]
async fn a_login_body_over_16_kib_is_refused_unread() {
    let mut settings = settings();
    settings.dev_login = Some(dev_login());
    let gateway = Gateway::start(settings).await;
    let body = format!(r#"{{"email":"{}","password":"x"}}"#, "a".repeat(16 * 1024));
    let (status, response) = post_login(gateway.addr, &body).await;
    assert_eq!(status, 413, "{response}");
    assert!(response.contains("\"body_too_large\""), "{response}");
    gateway.stop().await;
}

#[tokio::test]
async fn the_admin_port_takes_the_probes_and_metrics_off_the_public_one() {
    let mut settings = settings();
    settings.metrics = Some(pulse_runtime::metrics::install());
    settings.drain_spread = Duration::from_millis(500);
    let public = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (addr, admin_addr) = (public.local_addr().unwrap(), admin.local_addr().unwrap());
    let core = GatewayCore::new(
        settings,
        Authenticator::Local(validator()),
        Presence::in_memory(),
    )
    .with_admin_listener(admin);
    let (stop, task) = serve(core, public).await;

    for path in ["/healthz", "/readyz", "/metrics"] {
        let (status, response) = http_get(admin_addr, path).await;
        assert_eq!(status, 200, "admin {path}: {response}");
        let (status, response) = http_get(addr, path).await;
        assert_eq!(status, 404, "public {path}: {response}");
    }
    assert!(
        http_get(admin_addr, "/metrics")
            .await
            .1
            .contains("pulse_gateway_")
    );
    assert_eq!(
        http_get(admin_addr, "/ws").await.0,
        404,
        "only probes on the admin port"
    );

    // Sockets are still served on the public port; one that never answers
    // the close holds the drain open for a moment.
    let (mut client, _) =
        tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={}", token("alice")))
            .await
            .unwrap();
    assert_eq!(next_json(&mut client).await["type"], "connected");
    stop.send(()).unwrap();
    // While it drains, the admin port tells the load balancer so.
    eventually("/readyz on the admin port says draining", || async {
        let (status, body) = http_get(admin_addr, "/readyz").await;
        status == 503 && body.contains("draining")
    })
    .await;
    task.await.unwrap();
    assert!(
        TcpStream::connect(admin_addr).await.is_err(),
        "closed with the gateway"
    );
    drop(client);
}
