//! Shared by the integration tests: the committed fixtures (made by
//! scripts/fixtures/make_jwt_fixtures.py with PyJWT) and a JWKS endpoint on
//! 127.0.0.1:0 whose answer a test can swap or break.

// Each test binary uses its own part of this module.
#![allow(dead_code)]

use std::{
    convert::Infallible,
    path::PathBuf,
    str::FromStr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use bytes::Bytes;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::{body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;
use pulse_auth::{Algorithm, JwksSettings, PublicKey, ValidatorSettings};
use serde::Deserialize;
use tokio::{net::TcpListener, task::JoinHandle};

/// tokens.json: every case the fixture script wrote.
#[derive(Deserialize)]
pub(crate) struct Manifest {
    pub(crate) issuer: String,
    pub(crate) audience: String,
    pub(crate) cases: Vec<Case>,
}

/// One token, the keys and checks to validate it with, and the verdict.
#[derive(Deserialize, Clone)]
pub(crate) struct Case {
    pub(crate) name: String,
    pub(crate) note: String,
    pub(crate) token: String,
    pub(crate) config: CaseConfig,
    pub(crate) expect: Expect,
}

#[derive(Deserialize, Clone, Default)]
pub(crate) struct CaseConfig {
    #[serde(default)]
    pub(crate) secret: bool,
    pub(crate) secret_algorithms: Option<Vec<String>>,
    #[serde(default)]
    pub(crate) public_keys: Vec<String>,
    /// The JWKS file (under fixtures/jwks/) the case expects to be served.
    pub(crate) jwks: Option<String>,
    pub(crate) issuer: Option<String>,
    pub(crate) audience: Option<String>,
    pub(crate) user_claim: Option<String>,
}

/// Either `user_id` (accepted) or `reason` (refused).
#[derive(Deserialize, Clone, Debug)]
pub(crate) struct Expect {
    pub(crate) user_id: Option<String>,
    pub(crate) reason: Option<String>,
}

pub(crate) fn fixtures_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

pub(crate) fn manifest() -> Manifest {
    let text = std::fs::read_to_string(fixtures_dir().join("tokens.json")).unwrap();
    serde_json::from_str(&text).unwrap()
}

pub(crate) fn case(name: &str) -> Case {
    manifest()
        .cases
        .into_iter()
        .find(|case| case.name == name)
        .unwrap_or_else(|| panic!("no fixture case {name}"))
}

pub(crate) fn token(name: &str) -> String {
    case(name).token
}

pub(crate) fn jwks_file(name: &str) -> Vec<u8> {
    std::fs::read(fixtures_dir().join("jwks").join(name)).unwrap()
}

pub(crate) fn secret() -> Vec<u8> {
    std::fs::read(fixtures_dir().join("keys/hs_secret.txt")).unwrap()
}

pub(crate) fn public_key(name: &str) -> PublicKey {
    PublicKey::from_pem_file(&fixtures_dir().join("keys").join(name)).unwrap()
}

/// The settings a case asks for; `jwks_url` stands in for its JWKS file.
pub(crate) fn settings(config: &CaseConfig, jwks_url: Option<&str>) -> ValidatorSettings {
    let mut settings = ValidatorSettings::default();
    if config.secret {
        settings.secret = Some(secret());
    }
    if let Some(algorithms) = &config.secret_algorithms {
        settings.secret_algorithms = algorithms
            .iter()
            .map(|alg| Algorithm::from_str(alg).unwrap())
            .collect();
    }
    settings.public_keys = config
        .public_keys
        .iter()
        .map(|name| public_key(name))
        .collect();
    if config.jwks.is_some() {
        let url = jwks_url.expect("this case needs a JWKS server");
        settings.jwks = Some(JwksSettings::new(url));
    }
    settings.issuers = config.issuer.iter().cloned().collect();
    settings.audiences = config.audience.iter().cloned().collect();
    if let Some(claim) = &config.user_claim {
        settings.user_claim = claim.clone();
    }
    settings
}

/// JWKS settings for tests: `refresh` and `refetch` as given, a short timeout.
pub(crate) fn jwks_settings(url: &str, refresh: Duration, refetch: Duration) -> JwksSettings {
    JwksSettings {
        refresh_interval: refresh,
        min_refetch_interval: refetch,
        timeout: Duration::from_secs(2),
        ..JwksSettings::new(url)
    }
}

/// What the JWKS endpoint answers.
#[derive(Clone)]
pub(crate) enum Serve {
    /// 200 with this body.
    Body(Vec<u8>),
    /// This status and an empty body.
    Status(StatusCode),
    /// Headers and a body that is not JSON.
    Garbage,
    /// Nothing, ever: the client's timeout must end the request.
    Hang,
}

/// A JWKS endpoint on 127.0.0.1:0 that counts the requests it gets.
pub(crate) struct JwksServer {
    url: String,
    serve: Arc<Mutex<Serve>>,
    fetches: Arc<AtomicUsize>,
    task: JoinHandle<()>,
}

impl JwksServer {
    pub(crate) async fn start(serve: Serve) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!(
            "http://{}/.well-known/jwks.json",
            listener.local_addr().unwrap()
        );
        let serve = Arc::new(Mutex::new(serve));
        let fetches = Arc::new(AtomicUsize::new(0));
        let (state, count) = (serve.clone(), fetches.clone());
        let task = tokio::spawn(async move {
            // Connections live in the set, so stopping the server ends them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let (state, count) = (state.clone(), count.clone());
                let service = service_fn(move |request: Request<Incoming>| {
                    let (state, count) = (state.clone(), count.clone());
                    async move {
                        count.fetch_add(1, Ordering::SeqCst);
                        let serve = state.lock().unwrap().clone();
                        answer(request, serve).await
                    }
                });
                connections.spawn(async move {
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Self {
            url,
            serve,
            fetches,
            task,
        }
    }

    pub(crate) fn url(&self) -> &str {
        &self.url
    }

    pub(crate) fn set(&self, serve: Serve) {
        *self.serve.lock().unwrap() = serve;
    }

    pub(crate) fn fetches(&self) -> usize {
        self.fetches.load(Ordering::SeqCst)
    }
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn answer(
    request: Request<Incoming>,
    serve: Serve,
) -> Result<Response<Full<Bytes>>, Infallible> {
    assert_eq!(request.uri().path(), "/.well-known/jwks.json");
    let response = |status: StatusCode, body: Vec<u8>| {
        Response::builder()
            .status(status)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .unwrap()
    };
    Ok(match serve {
        Serve::Body(body) => response(StatusCode::OK, body),
        Serve::Status(status) => response(status, Vec::new()),
        Serve::Garbage => response(StatusCode::OK, b"<html>maintenance</html>".to_vec()),
        Serve::Hang => std::future::pending().await,
    })
}

/// Polls `condition` until it holds, failing the test after `within`.
pub(crate) async fn eventually<F: FnMut() -> bool>(within: Duration, what: &str, mut condition: F) {
    let deadline = Instant::now() + within;
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
