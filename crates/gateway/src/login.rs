//! The dev login: `POST /auth/login` with an email and a password, answered
//! with a token. On only when a users file is configured; the file holds
//! argon2 hashes, never plain passwords.
//!
//! argon2 is costly on purpose (about 19 MiB and tens of milliseconds per
//! check with the default parameters), so a burst of logins must not start
//! a check each: at most `--dev-login-concurrency` run at once and the rest
//! get 503 at once, without queueing. A body must arrive whole within
//! `--handshake-timeout` and within 16 KiB, so a client that trickles one
//! holds nothing for long.

use std::{collections::HashMap, path::Path, sync::Arc, time::Duration};

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use bytes::Bytes;
use http::{Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use serde::Deserialize;
use serde_json::json;
use tokio::sync::Semaphore;
use tracing::info;

use crate::{ConfigError, telemetry};

/// The largest login request body taken.
const MAX_BODY_BYTES: usize = 16 * 1024;
/// Password verifications at once unless configured.
pub const DEFAULT_MAX_VERIFICATIONS: usize = 4;

/// The dev login: users with argon2 password hashes, and the key that signs their tokens.
#[derive(Clone)]
pub struct DevLogin {
    users: Arc<HashMap<String, DevUser>>,
    secret: Arc<[u8]>,
    token_ttl: Duration,
    /// Verified when the email is unknown, so a miss costs as much as a hit.
    decoy_hash: Arc<str>,
    /// One permit per password check that may run at once.
    verifications: Arc<Semaphore>,
    max_verifications: usize,
}

impl std::fmt::Debug for DevLogin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DevLogin")
            .field("users", &self.users.len())
            .field("token_ttl", &self.token_ttl)
            .finish_non_exhaustive()
    }
}

#[derive(Debug, Clone, Deserialize)]
struct DevUser {
    user_id: String,
    password_hash: String,
}

/// The users file: `{"users": [{"email", "user_id", "password_hash"}]}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    users: Vec<UserEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    email: String,
    user_id: String,
    password_hash: String,
}

impl DevLogin {
    /// Reads a users file; every entry must carry a valid argon2 PHC hash.
    pub fn load(path: &Path, secret: &[u8], token_ttl: Duration) -> Result<Self, ConfigError> {
        let bad = |reason: String| ConfigError::Invalid {
            setting: "--dev-users / DEV_USERS_FILE",
            reason: format!("{}: {reason}", path.display()),
        };
        let text = std::fs::read_to_string(path).map_err(|error| bad(error.to_string()))?;
        Self::from_json(&text, secret, token_ttl).map_err(bad)
    }

    /// Parses the users file's text.
    pub fn from_json(text: &str, secret: &[u8], token_ttl: Duration) -> Result<Self, String> {
        let file: UsersFile = serde_json::from_str(text).map_err(|error| error.to_string())?;
        let mut users = HashMap::new();
        for entry in file.users {
            PasswordHash::new(&entry.password_hash).map_err(|error| {
                format!(
                    "user {}: password_hash is not an argon2 hash: {error}",
                    entry.email
                )
            })?;
            if entry.user_id.is_empty() {
                return Err(format!("user {}: empty user_id", entry.email));
            }
            let email = entry.email.to_lowercase();
            let user = DevUser {
                user_id: entry.user_id,
                password_hash: entry.password_hash,
            };
            if users.insert(email.clone(), user).is_some() {
                return Err(format!("user {email} is listed twice"));
            }
        }
        Ok(Self {
            users: Arc::new(users),
            secret: secret.into(),
            token_ttl,
            decoy_hash: hash_password("decoy password").into(),
            verifications: Arc::new(Semaphore::new(DEFAULT_MAX_VERIFICATIONS)),
            max_verifications: DEFAULT_MAX_VERIFICATIONS,
        })
    }

    /// At most `max` password verifications at once (at least one).
    pub fn with_max_verifications(mut self, max: usize) -> Self {
        self.max_verifications = max.max(1);
        self.verifications = Arc::new(Semaphore::new(self.max_verifications));
        self
    }

    /// Password verifications running now.
    pub fn verifications_in_progress(&self) -> usize {
        self.max_verifications - self.verifications.available_permits()
    }

    /// Checks a password and, when it matches, mints a token for the user:
    /// the user id and the token.
    pub async fn login(&self, email: &str, password: &str) -> Result<(String, String), LoginError> {
        // Held by the check itself, not by this future: a client that hangs
        // up does not free the place while argon2 still runs.
        let permit = self
            .verifications
            .clone()
            .try_acquire_owned()
            .map_err(|_| LoginError::Busy)?;
        let user = self.users.get(&email.to_lowercase()).cloned();
        let hash = user
            .as_ref()
            .map_or_else(|| self.decoy_hash.to_string(), |u| u.password_hash.clone());
        let password = password.to_owned();
        // argon2 is deliberately slow: keep it off the async workers.
        let verified = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            PasswordHash::new(&hash).is_ok_and(|parsed| {
                Argon2::default()
                    .verify_password(password.as_bytes(), &parsed)
                    .is_ok()
            })
        })
        .await
        .unwrap_or(false);
        let user = user
            .filter(|_| verified)
            .ok_or(LoginError::InvalidCredentials)?;
        let token = pulse_auth::mint_token(&self.secret, &user.user_id, self.token_ttl);
        Ok((user.user_id, token))
    }
}

/// Why a login got no token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// The email is unknown or the password wrong (which, is not said).
    #[error("unknown email or wrong password")]
    InvalidCredentials,
    /// As many password checks as allowed are running; nothing was checked.
    #[error("too many logins are being checked at once; retry in a moment")]
    Busy,
}

/// An argon2id PHC hash of a password, with a random salt, for the users file.
pub fn hash_password(password: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .expect("argon2 with default parameters hashes any password")
        .to_string()
}

#[derive(Deserialize)]
struct LoginRequest {
    email: String,
    password: String,
}

/// Serves `POST /auth/login`; the body must arrive within `body_timeout`.
pub(crate) async fn handle(
    login: &DevLogin,
    request: Request<Incoming>,
    body_timeout: Duration,
) -> Response<Full<Bytes>> {
    let collected = tokio::time::timeout(
        body_timeout,
        Limited::new(request.into_body(), MAX_BODY_BYTES).collect(),
    )
    .await;
    let body = match collected {
        Ok(Ok(body)) => body.to_bytes(),
        Ok(Err(error)) if error.is::<http_body_util::LengthLimitError>() => {
            return json_response(
                StatusCode::PAYLOAD_TOO_LARGE,
                &json!({"error": "body_too_large", "message": "the login body is limited to 16 KiB"}),
            );
        }
        Ok(Err(_)) => {
            return json_response(
                StatusCode::BAD_REQUEST,
                &json!({"error": "bad_request", "message": "the login body could not be read"}),
            );
        }
        Err(_) => {
            let mut response = json_response(
                StatusCode::REQUEST_TIMEOUT,
                &json!({"error": "body_timeout", "message": format!(
                    "the login body did not arrive within {}",
                    humantime::format_duration(body_timeout)
                )}),
            );
            // The rest of the body may still come: do not read it as a next request.
            response.headers_mut().insert(
                header::CONNECTION,
                header::HeaderValue::from_static("close"),
            );
            return response;
        }
    };
    let Ok(credentials) = serde_json::from_slice::<LoginRequest>(&body) else {
        return json_response(
            StatusCode::BAD_REQUEST,
            &json!({"error": "bad_request", "message": "expected {\"email\": ..., \"password\": ...}"}),
        );
    };
    match login.login(&credentials.email, &credentials.password).await {
        Ok((user_id, token)) => {
            info!(%user_id, "dev login");
            json_response(
                StatusCode::OK,
                &json!({"token": token, "user_id": user_id, "expires_in": login.token_ttl.as_secs()}),
            )
        }
        Err(error @ LoginError::InvalidCredentials) => json_response(
            StatusCode::UNAUTHORIZED,
            &json!({"error": "invalid_credentials", "message": error.to_string()}),
        ),
        Err(error @ LoginError::Busy) => {
            telemetry::limit_rejection("dev_login_concurrency");
            let mut response = json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "login_busy", "message": error.to_string()}),
            );
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from_static("1"));
            response
        }
    }
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        "application/json".parse().expect("static header"),
    );
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users_file(hash: &str) -> String {
        json!({"users": [{"email": "Test@Test.com", "user_id": "test-user", "password_hash": hash}]})
            .to_string()
    }

    #[tokio::test]
    async fn a_right_password_gets_a_token_for_the_user() {
        let login = DevLogin::from_json(
            &users_file(&hash_password("test123")),
            b"s",
            Duration::from_secs(60),
        )
        .unwrap();
        let (user_id, token) = login.login("test@test.com", "test123").await.unwrap();
        assert_eq!(user_id, "test-user");
        assert_eq!(token.split('.').count(), 3);
        for (email, password) in [("test@test.com", "wrong"), ("nobody@test.com", "test123")] {
            assert_eq!(
                login.login(email, password).await,
                Err(LoginError::InvalidCredentials)
            );
        }
        assert_eq!(login.verifications_in_progress(), 0);
    }

    #[test]
    fn a_plain_password_in_the_file_is_refused() {
        let error = DevLogin::from_json(&users_file("test123"), b"s", Duration::from_secs(60))
            .err()
            .unwrap();
        assert!(error.contains("not an argon2 hash"), "{error}");
    }
}
