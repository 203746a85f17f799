//! JWT validation: the checks every token passes, in the order that keeps
//! untrusted input cheap to refuse.

use std::{
    fmt,
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    error::{AuthError, ConfigError},
    jwks::{Jwks, JwksSettings},
    keys::{self, VerificationKey},
    pem::PublicKey,
    policy::ClaimPolicy,
};

/// The HMAC algorithms, all allowed for a shared secret unless narrowed.
pub const HMAC_ALGORITHMS: &[Algorithm] = &[Algorithm::HS256, Algorithm::HS384, Algorithm::HS512];

/// What a [`Validator`] needs: its key sources, the claims it checks and the
/// limits it applies. At least one key source (secret, public key or JWKS) is
/// required; several may be given at once.
///
/// Start from [`ValidatorSettings::with_secret`] or [`Default`] (no key
/// source, the flags' defaults) and override fields.
#[derive(Clone)]
pub struct ValidatorSettings {
    /// An HMAC shared secret. Must not be empty.
    pub secret: Option<Vec<u8>>,
    /// The algorithms tokens signed with the secret may name: some of HS256,
    /// HS384 and HS512.
    pub secret_algorithms: Vec<Algorithm>,
    /// Public keys; each allows the algorithms of its type.
    pub public_keys: Vec<PublicKey>,
    /// A JWKS endpoint, fetched and refreshed by a task the validator owns.
    pub jwks: Option<JwksSettings>,
    /// Accepted `iss` values; when empty, `iss` is not checked.
    pub issuers: Vec<String>,
    /// Accepted `aud` values (a token's `aud` must name one); when empty, `aud` is not checked.
    pub audiences: Vec<String>,
    /// The claim that holds the user id, a non-empty string.
    pub user_claim: String,
    /// Clock skew allowed on `exp`, `nbf` and `iat`, in whole seconds (a fraction rounds up).
    pub leeway: Duration,
    /// Tokens longer than this many bytes are refused without being parsed.
    pub max_token_bytes: usize,
}

impl ValidatorSettings {
    /// The default `user_claim` (and `--user-claim`'s).
    pub const DEFAULT_USER_CLAIM: &str = "sub";
    /// The default `leeway` (and `--jwt-leeway`'s).
    pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(30);
    /// The default `max_token_bytes` (and `--max-token-bytes`'s).
    pub const DEFAULT_MAX_TOKEN_BYTES: usize = 8192;
}

impl Default for ValidatorSettings {
    fn default() -> Self {
        Self {
            secret: None,
            secret_algorithms: HMAC_ALGORITHMS.to_vec(),
            public_keys: Vec::new(),
            jwks: None,
            issuers: Vec::new(),
            audiences: Vec::new(),
            user_claim: Self::DEFAULT_USER_CLAIM.to_owned(),
            leeway: Self::DEFAULT_LEEWAY,
            max_token_bytes: Self::DEFAULT_MAX_TOKEN_BYTES,
        }
    }
}

impl ValidatorSettings {
    /// The defaults with one shared secret as the key source.
    pub fn with_secret(secret: impl Into<Vec<u8>>) -> Self {
        Self {
            secret: Some(secret.into()),
            ..Self::default()
        }
    }
}

impl fmt::Debug for ValidatorSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatorSettings")
            .field("secret", &self.secret.as_ref().map(|_| "<redacted>"))
            .field("secret_algorithms", &self.secret_algorithms)
            .field("public_keys", &self.public_keys)
            .field("jwks", &self.jwks)
            .field("issuers", &self.issuers)
            .field("audiences", &self.audiences)
            .field("user_claim", &self.user_claim)
            .field("leeway", &self.leeway)
            .field("max_token_bytes", &self.max_token_bytes)
            .finish()
    }
}

/// The largest clock skew a [`Validator`] accepts. Skew beyond minutes is a
/// broken clock, and a bound keeps the time arithmetic far from overflow.
pub(crate) const MAX_LEEWAY: Duration = Duration::from_secs(60 * 60);

/// Checks tokens against the configured keys. Cheap to clone: clones share
/// the keys and the JWKS refresher, which stops when the last clone is dropped.
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

struct Inner {
    /// The secret and the PEM keys: fixed for the validator's life.
    keys: Vec<VerificationKey>,
    jwks: Option<Arc<Jwks>>,
    policy: ClaimPolicy,
    max_token_bytes: usize,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("keys", &self.inner.keys.len())
            .field("jwks", &self.inner.jwks.is_some())
            .field("max_token_bytes", &self.inner.max_token_bytes)
            .finish_non_exhaustive()
    }
}

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The user claim (`sub` unless configured otherwise), never empty.
    pub user_id: String,
    /// The `exp` claim, seconds since the Unix epoch.
    pub expires_at: u64,
    /// Every claim of the token, the user claim and `exp` included.
    pub claims: Map<String, Value>,
}

/// The header fields read before any signature work. Other fields are ignored.
#[derive(Deserialize)]
struct PeekedHeader {
    alg: String,
    #[serde(default)]
    kid: Option<String>,
}

impl Validator {
    /// A validator for `settings`, which are checked here; each error names
    /// its flag.
    ///
    /// With a JWKS this spawns the task that fetches and refreshes it, so it
    /// must be called within a Tokio runtime; it returns at once, before the
    /// first fetch ends. Until then, tokens that need a JWKS key are answered
    /// [`AuthError::Unavailable`] by [`Self::validate_cached`], while
    /// [`Self::validate`] waits for that fetch.
    pub fn new(settings: ValidatorSettings) -> Result<Self, ConfigError> {
        if settings.secret.is_none() && settings.public_keys.is_empty() && settings.jwks.is_none() {
            return Err(ConfigError::MissingKeySource);
        }
        if settings.max_token_bytes == 0 {
            return Err(ConfigError::MaxTokenBytesZero);
        }
        if settings.leeway > MAX_LEEWAY {
            return Err(ConfigError::LeewayTooLarge {
                max: humantime::format_duration(MAX_LEEWAY).to_string(),
            });
        }
        let nonempty = |values: &[String], setting| match values.iter().any(String::is_empty) {
            true => Err(ConfigError::EmptyValue { setting }),
            false => Ok(()),
        };
        nonempty(&settings.issuers, "--issuer / JWT_ISSUER")?;
        nonempty(&settings.audiences, "--audience / JWT_AUDIENCE")?;
        nonempty(
            std::slice::from_ref(&settings.user_claim),
            "--user-claim / JWT_USER_CLAIM",
        )?;

        let leeway_secs = settings.leeway.as_secs() + u64::from(settings.leeway.subsec_nanos() > 0);
        let mut keys = Vec::new();
        if let Some(secret) = &settings.secret {
            keys.push(secret_key(
                secret,
                &settings.secret_algorithms,
                leeway_secs,
            )?);
        }
        for public in &settings.public_keys {
            tracing::info!(
                source = public.source(),
                kind = public.kind(),
                "public key loaded"
            );
            let key =
                VerificationKey::new(None, public.key.clone(), public.algorithms, leeway_secs);
            keys.push(key);
        }
        let jwks = settings
            .jwks
            .map(|jwks| Jwks::start(jwks, leeway_secs))
            .transpose()?;
        Ok(Self {
            inner: Arc::new(Inner {
                keys,
                jwks,
                policy: ClaimPolicy {
                    issuers: settings.issuers,
                    audiences: settings.audiences,
                    user_claim: settings.user_claim,
                    leeway_secs,
                },
                max_token_bytes: settings.max_token_bytes,
            }),
        })
    }

    /// Whether every configured key source can answer now: false only while
    /// a configured JWKS has never been fetched (tokens that need it are
    /// answered `Unavailable` until then). Health reports this.
    pub fn is_ready(&self) -> bool {
        self.inner.jwks.as_ref().is_none_or(|jwks| jwks.loaded())
    }

    /// The longest token, in bytes, this validator parses.
    pub fn max_token_bytes(&self) -> usize {
        self.inner.max_token_bytes
    }

    /// Checks a compact JWT and returns who it names.
    ///
    /// As [`Self::validate_cached`], except that a token whose `kid` is not in
    /// the JWKS (or that arrives before the first fetch) waits for a refetch
    /// and is then checked again. Refetches are rate-limited and shared by
    /// every token waiting at the time, and bounded by the JWKS timeout.
    pub async fn validate(&self, token: &str) -> Result<Identity, AuthError> {
        let Some(jwks) = &self.inner.jwks else {
            return self.validate_cached(token);
        };
        let attempts = jwks.attempts();
        match self.validate_cached(token) {
            Err(AuthError::UnknownKey | AuthError::Unavailable(_)) => {
                jwks.refetch_for_unknown_kid(attempts).await;
                self.validate_cached(token)
            }
            other => other,
        }
    }

    /// Checks a compact JWT with the keys in hand, never waiting on the
    /// network. Synchronous and CPU only.
    ///
    /// In order: the length (never parsed when too long), the shape, the
    /// header's `alg` and `kid` against the keys, the signature, then `exp`,
    /// `nbf`, `iat`, `iss`, `aud` and the user claim.
    pub fn validate_cached(&self, token: &str) -> Result<Identity, AuthError> {
        let max = self.inner.max_token_bytes;
        if token.len() > max {
            return Err(AuthError::TokenTooLarge {
                len: token.len(),
                max,
            });
        }
        let header = peek_header(token)?;
        // `Algorithm::from_str` knows no `none`, so an unsigned token lands here too.
        let algorithm =
            Algorithm::from_str(&header.alg).map_err(|_| AuthError::AlgorithmNotAllowed)?;
        let jwks = self.inner.jwks.as_deref();
        let fetched = jwks.map(Jwks::keys);
        let claims = keys::verify(
            token,
            algorithm,
            header.kid.as_deref(),
            &self.inner.keys,
            fetched.as_deref().unwrap_or_default(),
            jwks.is_some(),
        )
        .map_err(|err| match (err, jwks) {
            // With no JWKS in hand yet, "no key for this token" is no verdict.
            (AuthError::UnknownKey | AuthError::AlgorithmNotAllowed, Some(jwks))
                if !jwks.loaded() =>
            {
                AuthError::Unavailable("the keys from --jwks-url are not loaded yet".to_owned())
            }
            (err, _) => err,
        })?;
        self.inner.policy.identity(claims)
    }
}

/// The shared secret as a key, allowing only HMAC algorithms.
fn secret_key(
    secret: &[u8],
    algorithms: &[Algorithm],
    leeway_secs: u64,
) -> Result<VerificationKey, ConfigError> {
    if secret.is_empty() {
        return Err(ConfigError::EmptyValue {
            setting: "--jwt-secret / JWT_SECRET",
        });
    }
    if algorithms.is_empty() || algorithms.iter().any(|alg| !HMAC_ALGORITHMS.contains(alg)) {
        return Err(ConfigError::SecretAlgorithms {
            value: format!("{algorithms:?}"),
        });
    }
    if secret.len() < 32 {
        tracing::warn!(
            bytes = secret.len(),
            "the HMAC secret is shorter than 32 bytes; fine for development, weak in production"
        );
    }
    Ok(VerificationKey::new(
        None,
        DecodingKey::from_secret(secret),
        algorithms,
        leeway_secs,
    ))
}

/// Splits the token into exactly three base64url segments and reads the header.
fn peek_header(token: &str) -> Result<PeekedHeader, AuthError> {
    let mut segments = token.split('.');
    let (Some(header), Some(payload), Some(signature), None) = (
        segments.next(),
        segments.next(),
        segments.next(),
        segments.next(),
    ) else {
        return Err(AuthError::Malformed);
    };
    let header = URL_SAFE_NO_PAD
        .decode(header)
        .map_err(|_| AuthError::Malformed)?;
    for segment in [payload, signature] {
        URL_SAFE_NO_PAD
            .decode(segment)
            .map_err(|_| AuthError::Malformed)?;
    }
    serde_json::from_slice(&header).map_err(|_| AuthError::Malformed)
}

/// Mints an HS256 token with `sub`, `iat` and `exp = now + ttl`: for development
/// and tests, never for production sign-in.
pub fn mint_token(secret: &[u8], user_id: &str, ttl: Duration) -> String {
    mint_token_with_claims(secret, user_id, ttl, Map::new())
}

/// [`mint_token`] with more claims: a `channels` list for a connection token,
/// or the `channel` of a subscription token. `sub` is set over what `extra`
/// holds; `iat` and `exp` only where it has none (a test's expired token).
pub fn mint_token_with_claims(
    secret: &[u8],
    user_id: &str,
    ttl: Duration,
    extra: Map<String, Value>,
) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut claims = extra;
    claims.insert("sub".into(), user_id.into());
    claims.entry("iat").or_insert_with(|| now.into());
    claims
        .entry("exp")
        .or_insert_with(|| now.saturating_add(ttl.as_secs()).into());
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    // HMAC takes a key of any length and a JSON map always serialises, so
    // signing cannot fail.
    .expect("HS256 signing with a shared secret cannot fail")
}
