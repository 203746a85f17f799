//! `pulse-auth` as a real gRPC server on 127.0.0.1:0, called the way the gateway calls it.

mod support;

use std::time::{Duration, Instant};

use pulse_auth::{
    AuthError, Authenticator, RemoteValidator, Validator, ValidatorSettings, mint_token, run,
};
use serde_json::json;
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};
use tonic::transport::Channel;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

const SECRET: &[u8] = b"integration-secret-at-least-32-bytes";
const TIMEOUT: Duration = Duration::from_secs(5);

/// A running server: its URL, the trigger that stops it, and its task.
struct Server {
    url: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), tonic::transport::Error>>,
}

impl Server {
    async fn start() -> Self {
        Self::with(Validator::new(ValidatorSettings::with_secret(SECRET)).unwrap()).await
    }

    async fn with(validator: Validator) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        // The listener is bound before `run` starts, so clients may connect at
        // once: the kernel queues them until the server accepts.
        let task = tokio::spawn(run(validator, listener, async {
            let _ = stopped.await;
        }));
        Self { url, stop, task }
    }

    fn remote(&self) -> RemoteValidator {
        RemoteValidator::new(&self.url, TIMEOUT).unwrap()
    }

    async fn channel(&self) -> Channel {
        Channel::from_shared(self.url.clone())
            .unwrap()
            .connect()
            .await
            .unwrap()
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        let result = tokio::time::timeout(TIMEOUT, self.task)
            .await
            .expect("run returns promptly after shutdown")
            .unwrap();
        assert!(result.is_ok(), "{result:?}");
    }
}

fn now() -> u64 {
    jsonwebtoken::get_current_timestamp()
}

fn sign(secret: &[u8], claims: &serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        claims,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap()
}

#[tokio::test]
async fn validate_over_grpc_matches_the_library() {
    let server = Server::start().await;
    let remote = server.remote();

    let exp = now() + 600;
    let token = sign(
        SECRET,
        &json!({"sub": "user-7", "exp": exp, "roles": ["admin"], "org": {"id": 3, "name": "acme"}}),
    );
    let identity = remote.validate(&token).await.unwrap();
    assert_eq!(identity.user_id, "user-7");
    assert_eq!(identity.expires_at, exp);
    assert_eq!(identity.claims["roles"], json!(["admin"]));
    assert_eq!(identity.claims["org"], json!({"id": 3, "name": "acme"}));
    assert_eq!(identity.claims["exp"], json!(exp));

    // Through the caller-facing enum too.
    let minted = mint_token(SECRET, "dev", Duration::from_secs(60));
    let remote_answer = Authenticator::Remote(remote.clone())
        .validate(&minted)
        .await;
    let local = Validator::new(ValidatorSettings {
        leeway: Duration::ZERO,
        ..ValidatorSettings::with_secret(SECRET)
    })
    .unwrap();
    let local_answer = Authenticator::Local(local).validate(&minted).await;
    assert_eq!(remote_answer.unwrap(), local_answer.unwrap());

    server.stop().await;
}

#[tokio::test]
async fn refusals_cross_the_wire_as_the_same_error() {
    let server = Server::start().await;
    let remote = server.remote();

    let expired = sign(SECRET, &json!({"sub": "u", "exp": now() - 3600}));
    assert_eq!(
        remote.validate(&expired).await,
        Err(AuthError::TokenExpired)
    );

    let forged = mint_token(b"not-the-secret", "u", Duration::from_secs(600));
    assert_eq!(remote.validate(&forged).await, Err(AuthError::BadSignature));

    let early = sign(
        SECRET,
        &json!({"sub": "u", "exp": now() + 7200, "nbf": now() + 3600}),
    );
    assert_eq!(remote.validate(&early).await, Err(AuthError::NotYetValid));

    let anonymous = sign(SECRET, &json!({"exp": now() + 600}));
    assert_eq!(
        remote.validate(&anonymous).await,
        Err(AuthError::MissingClaim("sub".into()))
    );

    assert_eq!(remote.validate("").await, Err(AuthError::Malformed));
    assert_eq!(
        remote.validate("not.a.jwt").await,
        Err(AuthError::Malformed)
    );

    let huge = "x".repeat(9000);
    assert_eq!(
        remote.validate(&huge).await,
        Err(AuthError::TokenTooLarge {
            len: 9000,
            max: 8192
        })
    );

    let long_user = mint_token(SECRET, &"u".repeat(300), Duration::from_secs(600));
    assert_eq!(
        remote.validate(&long_user).await,
        Err(AuthError::UserIdTooLong { len: 300, max: 256 })
    );

    server.stop().await;
}

#[tokio::test]
async fn every_reason_crosses_the_wire_for_tokens_from_another_implementation() {
    let manifest = support::manifest();
    let every_key = || ValidatorSettings {
        secret: Some(support::secret()),
        public_keys: ["rsa.pem", "ec_p256.pem", "ec_p384.pem", "ed25519.pem"]
            .map(support::public_key)
            .to_vec(),
        ..ValidatorSettings::default()
    };
    let with_issuer = ValidatorSettings {
        issuers: vec![manifest.issuer.clone()],
        ..every_key()
    };
    let with_audience = ValidatorSettings {
        audiences: vec![manifest.audience.clone()],
        ..every_key()
    };
    let cases = [
        (
            with_issuer,
            &[
                ("iss_wrong", Err(AuthError::WrongIssuer)),
                ("iss_missing", Err(AuthError::MissingClaim("iss".into()))),
                ("iss_matches", Ok("user-iss")),
                ("alg_none", Err(AuthError::AlgorithmNotAllowed)),
                ("rs256_wrong_key", Err(AuthError::BadSignature)),
                (
                    "hs256_signed_with_rsa_public_pem",
                    Err(AuthError::BadSignature),
                ),
            ][..],
        ),
        (
            with_audience,
            &[
                ("aud_wrong", Err(AuthError::WrongAudience)),
                ("aud_missing", Err(AuthError::MissingClaim("aud".into()))),
                ("aud_matches", Ok("user-aud")),
                ("aud_list_contains_ours", Ok("user-aud-list")),
                ("nbf_future", Err(AuthError::NotYetValid)),
                ("expired", Err(AuthError::TokenExpired)),
            ][..],
        ),
    ];
    for (settings, expectations) in cases {
        let server = Server::with(Validator::new(settings).unwrap()).await;
        let remote = server.remote();
        for (name, expected) in expectations {
            let result = remote.validate(&support::token(name)).await;
            match (result, expected) {
                (Ok(identity), Ok(user)) => {
                    assert_eq!(identity.user_id, *user, "{name}");
                    assert_eq!(identity.claims["exp"], json!(4_102_444_800u64), "{name}");
                }
                (result, expected) => {
                    assert_eq!(
                        result.map(|i| i.user_id),
                        expected.clone().map(str::to_owned),
                        "{name}"
                    )
                }
            }
        }
        server.stop().await;
    }

    // A custom user claim, and unknown_key from a JWKS.
    let jwks =
        support::JwksServer::start(support::Serve::Body(support::jwks_file("rotation_1.json")))
            .await;
    let validator = Validator::new(ValidatorSettings {
        public_keys: vec![support::public_key("rsa.pem")],
        jwks: Some(pulse_auth::JwksSettings::new(jwks.url())),
        user_claim: "uid".into(),
        ..ValidatorSettings::default()
    })
    .unwrap();
    let server = Server::with(validator).await;
    let remote = server.remote();
    let identity = remote
        .validate(&support::token("custom_user_claim"))
        .await
        .unwrap();
    assert_eq!(identity.user_id, "u-42");
    assert_eq!(identity.claims["email"], json!("a@example.test"));
    assert_eq!(
        remote.validate(&support::token("jwks_unknown_kid")).await,
        Err(AuthError::UnknownKey)
    );
    assert_eq!(
        remote.validate(&support::token("rot_1")).await,
        Err(AuthError::MissingClaim("uid".into()))
    );
    server.stop().await;
}

#[tokio::test]
async fn a_jwks_not_loaded_yet_is_unavailable_over_grpc() {
    let jwks =
        support::JwksServer::start(support::Serve::Status(http::StatusCode::BAD_GATEWAY)).await;
    let validator = Validator::new(ValidatorSettings {
        jwks: Some(pulse_auth::JwksSettings::new(jwks.url())),
        ..ValidatorSettings::default()
    })
    .unwrap();
    let server = Server::with(validator).await;
    match server.remote().validate(&support::token("rot_1")).await {
        // The client cannot tell this from a service that is down: both are "retry".
        Err(AuthError::Unavailable(message)) => {
            assert!(message.contains("Unavailable"), "{message}")
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    server.stop().await;
}

#[tokio::test]
async fn health_reports_serving() {
    let server = Server::start().await;
    let mut health = HealthClient::new(server.channel().await);
    for service in ["", "pulse.auth.v1.Auth"] {
        let response = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(response.status(), ServingStatus::Serving, "{service:?}");
    }
    drop(health);
    server.stop().await;
}

#[tokio::test]
async fn health_is_not_serving_until_a_jwks_has_loaded() {
    // A JWKS endpoint where nothing listens: it never loads.
    let closed = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let validator = Validator::new(ValidatorSettings {
        jwks: Some(pulse_auth::JwksSettings::new(format!(
            "http://{closed}/jwks.json"
        ))),
        ..ValidatorSettings::default()
    })
    .unwrap();
    assert!(!validator.is_ready());
    let server = Server::with(validator).await;
    let mut health = HealthClient::new(server.channel().await);
    let response = health
        .check(HealthCheckRequest {
            service: "pulse.auth.v1.Auth".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(response.status(), ServingStatus::NotServing);
    drop(health);
    server.stop().await;
}

#[tokio::test]
async fn reflection_lists_the_auth_service() {
    let server = Server::start().await;
    let mut reflection = ServerReflectionClient::new(server.channel().await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("unexpected reflection answer: {response:?}");
    };
    let names: Vec<_> = list.service.into_iter().map(|s| s.name).collect();
    assert!(names.iter().any(|n| n == "pulse.auth.v1.Auth"), "{names:?}");
    assert!(
        names.iter().any(|n| n == "grpc.health.v1.Health"),
        "{names:?}"
    );
    drop(responses);
    drop(reflection);
    server.stop().await;
}

#[tokio::test]
async fn a_closed_port_is_unavailable_within_the_timeout() {
    // Bind and drop: nothing listens on the port afterwards.
    let port = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let timeout = Duration::from_secs(2);
    let remote = RemoteValidator::new(&format!("http://127.0.0.1:{port}"), timeout).unwrap();
    let token = mint_token(SECRET, "u", Duration::from_secs(60));
    let started = Instant::now();
    let result = tokio::time::timeout(timeout * 3, remote.validate(&token))
        .await
        .expect("the call is bounded by the client's own timeout");
    assert!(started.elapsed() <= timeout + Duration::from_secs(1));
    match result {
        Err(AuthError::Unavailable(message)) => {
            assert!(!message.contains(&token), "{message}");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn a_server_that_never_answers_is_unavailable_within_the_timeout() {
    // Bound but never accepted: the kernel completes the TCP handshake and
    // nothing ever speaks HTTP/2, so only the client's timeout ends the call.
    let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let timeout = Duration::from_millis(300);
    let url = format!("http://{}", silent.local_addr().unwrap());
    let remote = RemoteValidator::new(&url, timeout).unwrap();
    let started = Instant::now();
    let result = tokio::time::timeout(Duration::from_secs(10), remote.validate("a.b.c"))
        .await
        .expect("the call is bounded by the client's own timeout");
    assert!(
        matches!(result, Err(AuthError::Unavailable(_))),
        "{result:?}"
    );
    assert!(started.elapsed() < timeout * 4, "{:?}", started.elapsed());
    drop(silent);
}

#[test]
fn bad_urls_and_timeouts_name_their_setting() {
    for url in [
        "",
        "not a url",
        "127.0.0.1:50051",
        "ftp://host:1",
        "https://host:1",
    ] {
        let err = RemoteValidator::new(url, TIMEOUT).unwrap_err().to_string();
        assert!(err.starts_with("--auth-url / AUTH_URL"), "{url:?}: {err}");
    }
    let err = RemoteValidator::new("http://127.0.0.1:1", Duration::ZERO).unwrap_err();
    assert!(
        err.to_string().starts_with("--auth-timeout / AUTH_TIMEOUT"),
        "{err}"
    );
}
