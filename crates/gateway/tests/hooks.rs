//! `authorize = "hook"`: the gateway asks the application's
//! `pulse.hooks.v1.Hooks/Authorize` over real gRPC. Yes subscribes, no is
//! `permission_denied` with the hook's reason, and a hook that is slow or
//! down is `unavailable`, never a subscription let through.

mod support;

use std::{sync::Arc, time::Duration};

use pulse_gateway::Settings;
use pulse_presence::Namespaces;
use pulse_protocol::proto::hooks::v1::{
    AuthorizeRequest, AuthorizeResponse,
    hooks_server::{Hooks, HooksServer},
};
use serde_json::{Value, json};
use tokio::{net::TcpListener, sync::oneshot};
use tonic::{Request, Response, Status};

use crate::support::*;

/// The application's hook: `doc:open-*` for anyone, `doc:slow` answers
/// after two seconds, `doc:broken` fails, anything else is refused.
struct AppHook;

#[tonic::async_trait]
impl Hooks for AppHook {
    async fn authorize(
        &self,
        request: Request<AuthorizeRequest>,
    ) -> Result<Response<AuthorizeResponse>, Status> {
        let request = request.into_inner();
        assert!(!request.connection_id.is_empty());
        match request.channel.as_str() {
            "doc:slow" => tokio::time::sleep(Duration::from_secs(2)).await,
            "doc:broken" => return Err(Status::internal("database down")),
            _ => {}
        }
        let allowed = request.channel.starts_with("doc:open-");
        Ok(Response::new(AuthorizeResponse {
            allowed,
            reason: if allowed {
                String::new()
            } else {
                format!("{} may not read {}", request.user_id, request.channel)
            },
        }))
    }
}

/// Serves the hook on a free port until the sender is dropped.
async fn serve_hook() -> (String, oneshot::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(HooksServer::new(AppHook))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    (url, stop)
}

fn hook_settings(url: &str) -> Settings {
    let config = format!(
        "[namespaces.doc]\nauthorize = \"hook\"\n[hooks]\nauthorize_url = \"{url}\"\ntimeout = \"300ms\"\n"
    );
    let mut settings = settings();
    settings.namespaces = Arc::new(Namespaces::parse(&config, "test.toml").unwrap());
    settings
}

async fn subscribe(client: &mut Client, id: u64, channel: &str) -> Value {
    send_json(
        client,
        json!({"type": "subscribe", "id": id, "channel": channel}),
    )
    .await;
    next_json(client).await
}

#[tokio::test]
async fn the_hook_decides_and_its_absence_refuses() {
    let (url, stop) = serve_hook().await;
    let gateway = Gateway::start(hook_settings(&url)).await;
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    next_json(&mut client).await;

    assert_eq!(
        subscribe(&mut client, 1, "doc:open-1").await,
        json!({"type": "subscribed", "id": 1, "channel": "doc:open-1"})
    );
    assert_eq!(
        subscribe(&mut client, 2, "doc:secret").await,
        json!({"type": "error", "id": 2, "code": "permission_denied", "message": "alice may not read doc:secret"})
    );
    let slow = subscribe(&mut client, 3, "doc:slow").await;
    assert_eq!(
        (&slow["id"], &slow["code"]),
        (&json!(3), &json!("unavailable")),
        "{slow}"
    );
    let broken = subscribe(&mut client, 4, "doc:broken").await;
    assert_eq!(broken["code"], "unavailable", "{broken}");

    // The hook goes away: nothing is let through, the socket stays.
    drop(stop);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut id = 5;
    loop {
        let answer = subscribe(&mut client, id, "doc:open-2").await;
        if answer["code"] == "unavailable" {
            break;
        }
        // A call already on its way to the stopping server may still pass.
        assert_eq!(answer["type"], "subscribed", "{answer}");
        send_json(
            &mut client,
            json!({"type": "unsubscribe", "id": id + 1, "channel": "doc:open-2"}),
        )
        .await;
        next_json(&mut client).await;
        assert!(
            tokio::time::Instant::now() < deadline,
            "the hook never looked down"
        );
        id += 2;
    }
    send_json(&mut client, json!({"type": "ping", "id": "after"})).await;
    assert_eq!(
        next_json(&mut client).await,
        json!({"type": "pong", "id": "after"})
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_hook_that_never_existed_refuses_with_unavailable() {
    // A port nothing listens on.
    let port = pulse_presence::testing::free_port();
    let gateway = Gateway::start(hook_settings(&format!("http://127.0.0.1:{port}"))).await;
    let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
    next_json(&mut client).await;
    assert_eq!(
        subscribe(&mut client, 1, "doc:open-1").await["code"],
        "unavailable"
    );
    gateway.stop().await;
}

/// A certificate authority and a `localhost` certificate it signed, as PEM.
fn pki() -> (String, (String, String)) {
    use rcgen::{BasicConstraints, CertificateParams, IsCa, KeyPair};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let cert = CertificateParams::new(vec!["localhost".to_owned()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    (ca.pem(), (cert.pem(), key.serialize_pem()))
}

/// An `https://` hook: reached over TLS when its authority is the one
/// `ca_file` names, refused with `unavailable` when it is not (a hook
/// whose certificate cannot be checked never lets a subscription through).
#[tokio::test]
async fn an_https_hook_is_reached_over_tls_and_only_with_a_trusted_certificate() {
    use tonic::transport::{Identity, ServerTlsConfig};
    let (ca, (cert, key)) = pki();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (_stop, stopped) = oneshot::channel::<()>();
    tokio::spawn(
        tonic::transport::Server::builder()
            .tls_config(ServerTlsConfig::new().identity(Identity::from_pem(cert, key)))
            .unwrap()
            .add_service(HooksServer::new(AppHook))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener),
                async {
                    let _ = stopped.await;
                },
            ),
    );
    let dir = std::env::temp_dir().join(format!("pulse-hook-tls-{port}"));
    std::fs::create_dir_all(&dir).unwrap();
    let trusted = dir.join("ca.pem");
    std::fs::write(&trusted, &ca).unwrap();
    let stranger = dir.join("other-ca.pem");
    std::fs::write(&stranger, pki().0).unwrap();

    for (ca_file, expected) in [(&trusted, "subscribed"), (&stranger, "error")] {
        let config = format!(
            "[namespaces.doc]\nauthorize = \"hook\"\n[hooks]\nauthorize_url = \"https://localhost:{port}\"\ntimeout = \"2s\"\nca_file = \"{}\"\n",
            ca_file.display()
        );
        let mut settings = settings();
        settings.namespaces = Arc::new(Namespaces::parse(&config, "test.toml").unwrap());
        let gateway = Gateway::start(settings).await;
        let mut client = gateway.connect(&format!("?token={}", token("alice"))).await;
        next_json(&mut client).await;
        let answer = subscribe(&mut client, 1, "doc:open-1").await;
        assert_eq!(answer["type"], expected, "{answer}");
        if expected == "error" {
            assert_eq!(answer["code"], "unavailable", "{answer}");
        }
        gateway.stop().await;
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
