//! JWT validation: the checks every token passes, in the order that keeps
//! untrusted input cheap to refuse.

use std::{
    fmt,
    str::FromStr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, errors::ErrorKind};
use serde::Deserialize;
use serde_json::{Map, Value};

use crate::{
    config::ConfigError,
    error::{AuthError, claim_name},
    keys::KeySet,
};

/// What a [`Validator`] needs: the key material and the limits it applies.
#[derive(Clone)]
pub struct ValidatorSettings {
    /// The HS256 shared secret. Must not be empty.
    pub secret: Vec<u8>,
    /// Clock skew allowed on `exp` and `nbf`, in whole seconds (a fraction rounds up).
    pub leeway: Duration,
    /// Tokens longer than this many bytes are refused without being parsed.
    pub max_token_bytes: usize,
}

impl fmt::Debug for ValidatorSettings {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ValidatorSettings")
            .field("secret", &"<redacted>")
            .field("leeway", &self.leeway)
            .field("max_token_bytes", &self.max_token_bytes)
            .finish()
    }
}

/// The largest clock skew a [`Validator`] accepts. Skew beyond minutes is a
/// broken clock, and a bound keeps the time arithmetic far from overflow.
pub(crate) const MAX_LEEWAY: Duration = Duration::from_secs(60 * 60);

/// Checks tokens against the configured keys. Cheap to clone: the keys are shared.
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

struct Inner {
    keys: KeySet,
    max_token_bytes: usize,
}

impl fmt::Debug for Validator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Validator")
            .field("max_token_bytes", &self.inner.max_token_bytes)
            .finish_non_exhaustive()
    }
}

/// Who a valid token names.
#[derive(Debug, Clone, PartialEq)]
pub struct Identity {
    /// The `sub` claim, never empty.
    pub user_id: String,
    /// The `exp` claim, seconds since the Unix epoch.
    pub expires_at: u64,
    /// Every claim of the token, `sub` and `exp` included.
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
    /// A validator for the given settings; refuses an empty secret or a zero size limit.
    pub fn new(settings: ValidatorSettings) -> Result<Self, ConfigError> {
        if settings.secret.is_empty() {
            return Err(ConfigError::MissingSecret);
        }
        if settings.max_token_bytes == 0 {
            return Err(ConfigError::MaxTokenBytesZero);
        }
        if settings.leeway > MAX_LEEWAY {
            return Err(ConfigError::LeewayTooLarge {
                max: humantime::format_duration(MAX_LEEWAY).to_string(),
            });
        }
        if settings.secret.len() < 32 {
            tracing::warn!(
                bytes = settings.secret.len(),
                "the HS256 secret is shorter than 32 bytes; fine for development, weak in production"
            );
        }
        let leeway_secs = settings.leeway.as_secs() + u64::from(settings.leeway.subsec_nanos() > 0);
        Ok(Self {
            inner: Arc::new(Inner {
                keys: KeySet::hs256(&settings.secret, leeway_secs),
                max_token_bytes: settings.max_token_bytes,
            }),
        })
    }

    /// The longest token, in bytes, this validator parses.
    pub fn max_token_bytes(&self) -> usize {
        self.inner.max_token_bytes
    }

    /// Checks a compact JWT and returns who it names. Synchronous and CPU only.
    ///
    /// In order: the length (never parsed when too long), the shape, the header's
    /// `alg` against the configured keys, the signature, then `exp`, `nbf` and `sub`.
    pub fn validate(&self, token: &str) -> Result<Identity, AuthError> {
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
        if !self.inner.keys.allows(algorithm) {
            return Err(AuthError::AlgorithmNotAllowed);
        }
        // An allowed algorithm whose kid names no key: no key can have signed it.
        let key = self
            .inner
            .keys
            .select(algorithm, header.kid.as_deref())
            .ok_or(AuthError::BadSignature)?;

        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation)
            .map_err(|err| map_jwt_error(err.kind()))?;
        identity_from_claims(data.claims)
    }
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

/// The one place a jsonwebtoken error becomes an [`AuthError`].
fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::TokenExpired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim_name(claim)),
        ErrorKind::InvalidToken
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed,
        other => {
            // Issuer, audience and subject checks are off and HMAC keys cannot be
            // of the wrong format, so this is a library change worth hearing about.
            tracing::warn!(error = ?other, "unexpected token validation error");
            AuthError::Malformed
        }
    }
}

/// Builds the identity from claims whose signature and times have been checked.
fn identity_from_claims(claims: Map<String, Value>) -> Result<Identity, AuthError> {
    let user_id = match claims.get("sub") {
        Some(Value::String(sub)) if !sub.is_empty() => sub.clone(),
        _ => return Err(AuthError::MissingClaim("sub")),
    };
    let expires_at = claims
        .get("exp")
        .and_then(numeric_date)
        .ok_or(AuthError::MissingClaim("exp"))?;
    Ok(Identity {
        user_id,
        expires_at,
        claims,
    })
}

/// A JWT NumericDate as whole seconds, read the way jsonwebtoken reads it
/// (non-negative, fractions rounded), so the `exp` reported is the `exp` checked.
fn numeric_date(value: &Value) -> Option<u64> {
    if let Some(secs) = value.as_u64() {
        return Some(secs);
    }
    let secs = value.as_f64()?;
    (secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64).then(|| secs.round() as u64)
}

/// Mints an HS256 token with `sub`, `iat` and `exp = now + ttl`: for development
/// and tests, never for production sign-in.
pub fn mint_token(secret: &[u8], user_id: &str, ttl: Duration) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let mut claims = Map::new();
    claims.insert("sub".into(), user_id.into());
    claims.insert("iat".into(), now.into());
    claims.insert("exp".into(), now.saturating_add(ttl.as_secs()).into());
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims,
        &EncodingKey::from_secret(secret),
    )
    // HMAC takes a key of any length and a JSON map always serialises, so
    // signing cannot fail.
    .expect("HS256 signing with a shared secret cannot fail")
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::get_current_timestamp;
    use serde_json::json;

    use super::*;

    const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!";

    fn validator() -> Validator {
        Validator::new(ValidatorSettings {
            secret: SECRET.to_vec(),
            leeway: Duration::from_secs(30),
            max_token_bytes: 8192,
        })
        .unwrap()
    }

    /// Signs arbitrary claims with `alg` and `secret`.
    fn sign(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
        jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn now() -> u64 {
        get_current_timestamp()
    }

    #[test]
    fn a_valid_token_names_its_user_and_keeps_every_claim() {
        let exp = now() + 600;
        let token = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "user-1", "exp": exp, "role": "admin", "org": {"id": 7}}),
        );
        let identity = validator().validate(&token).unwrap();
        assert_eq!(identity.user_id, "user-1");
        assert_eq!(identity.expires_at, exp);
        assert_eq!(identity.claims["role"], "admin");
        assert_eq!(identity.claims["org"], json!({"id": 7}));
        assert_eq!(identity.claims["exp"], json!(exp));
    }

    #[test]
    fn minted_tokens_validate() {
        let token = mint_token(SECRET, "dev-user", Duration::from_secs(3600));
        let identity = validator().validate(&token).unwrap();
        assert_eq!(identity.user_id, "dev-user");
        assert!(identity.expires_at >= now() + 3599);
        assert!(identity.claims.contains_key("iat"));
    }

    #[test]
    fn an_expired_token_is_refused() {
        let token = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "u", "exp": now() - 600}),
        );
        assert_eq!(validator().validate(&token), Err(AuthError::TokenExpired));
    }

    #[test]
    fn leeway_covers_a_token_that_just_expired() {
        let token = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "u", "exp": now() - 5}),
        );
        assert!(validator().validate(&token).is_ok());
    }

    #[test]
    fn a_token_not_valid_yet_is_refused() {
        let token = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "u", "exp": now() + 7200, "nbf": now() + 3600}),
        );
        assert_eq!(validator().validate(&token), Err(AuthError::NotYetValid));
    }

    #[test]
    fn a_token_signed_with_another_secret_is_refused() {
        let token = mint_token(b"some-other-secret", "u", Duration::from_secs(600));
        assert_eq!(validator().validate(&token), Err(AuthError::BadSignature));
    }

    #[test]
    fn an_unsigned_token_is_refused_as_an_algorithm() {
        let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
        let claims = b64(json!({"sub": "u", "exp": now() + 600})
            .to_string()
            .as_bytes());
        for token in [
            format!("{header}.{claims}."),
            format!("{header}.{claims}.c2ln"),
        ] {
            assert_eq!(
                validator().validate(&token),
                Err(AuthError::AlgorithmNotAllowed)
            );
        }
    }

    #[test]
    fn other_algorithms_are_refused_even_with_the_right_secret() {
        let claims = json!({"sub": "u", "exp": now() + 600});
        for alg in [Algorithm::HS384, Algorithm::HS512] {
            let token = sign(alg, SECRET, &claims);
            assert_eq!(
                validator().validate(&token),
                Err(AuthError::AlgorithmNotAllowed)
            );
        }
        // A name jsonwebtoken does not know at all.
        let header = b64(br#"{"alg":"XS999"}"#);
        let token = format!("{header}.{}.c2ln", b64(claims.to_string().as_bytes()));
        assert_eq!(
            validator().validate(&token),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }

    #[test]
    fn what_is_not_a_jwt_is_malformed() {
        let good = mint_token(SECRET, "u", Duration::from_secs(600));
        let (header, rest) = good.split_once('.').unwrap();
        let (claims, signature) = rest.split_once('.').unwrap();
        let cases = [
            String::new(),
            "garbage".into(),
            format!("{header}.{claims}"),
            format!("{good}.extra"),
            format!("!!!.{claims}.{signature}"),
            format!("{header}.{claims}.***"),
            format!("{header}.%%%.{signature}"),
            format!("{}.{claims}.{signature}", b64(b"not json")),
            format!("{}.{claims}.{signature}", b64(br#"{"typ":"JWT"}"#)),
            format!("Bearer {good}"),
        ];
        for token in cases {
            assert_eq!(
                validator().validate(&token),
                Err(AuthError::Malformed),
                "{token:?}"
            );
        }
    }

    #[test]
    fn claims_that_are_not_an_object_are_malformed() {
        let token = sign(Algorithm::HS256, SECRET, &json!(["sub", "u"]));
        assert_eq!(validator().validate(&token), Err(AuthError::Malformed));
    }

    #[test]
    fn a_token_too_large_is_refused_without_parsing() {
        let validator = Validator::new(ValidatorSettings {
            secret: SECRET.to_vec(),
            leeway: Duration::ZERO,
            max_token_bytes: 64,
        })
        .unwrap();
        assert_eq!(validator.max_token_bytes(), 64);
        // Not a JWT at all: a parse would say `Malformed`.
        let token = "x".repeat(65);
        assert_eq!(
            validator.validate(&token),
            Err(AuthError::TokenTooLarge { len: 65, max: 64 })
        );
        assert_eq!(
            validator.validate(&"x".repeat(64)),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn sub_must_be_a_non_empty_string() {
        let exp = now() + 600;
        for claims in [
            json!({"exp": exp}),
            json!({"sub": "", "exp": exp}),
            json!({"sub": 42, "exp": exp}),
            json!({"sub": null, "exp": exp}),
        ] {
            let token = sign(Algorithm::HS256, SECRET, &claims);
            assert_eq!(
                validator().validate(&token),
                Err(AuthError::MissingClaim("sub")),
                "{claims}"
            );
        }
    }

    #[test]
    fn exp_is_required() {
        for claims in [json!({"sub": "u"}), json!({"sub": "u", "exp": "tomorrow"})] {
            let token = sign(Algorithm::HS256, SECRET, &claims);
            assert_eq!(
                validator().validate(&token),
                Err(AuthError::MissingClaim("exp")),
                "{claims}"
            );
        }
    }

    #[test]
    fn a_bad_signature_wins_over_bad_claims() {
        // Claims are only judged once the signature holds.
        let token = sign(Algorithm::HS256, b"other", &json!({"sub": "u", "exp": 1}));
        assert_eq!(validator().validate(&token), Err(AuthError::BadSignature));
    }

    #[test]
    fn fractional_exp_is_read_as_jsonwebtoken_reads_it() {
        let exp = now() + 600;
        let token = sign(
            Algorithm::HS256,
            SECRET,
            &json!({"sub": "u", "exp": exp as f64 + 0.4}),
        );
        assert_eq!(validator().validate(&token).unwrap().expires_at, exp);
    }

    #[test]
    fn errors_are_one_lower_case_line_that_never_shows_the_token() {
        let token = mint_token(b"other", "u", Duration::from_secs(600));
        let err = validator().validate(&token).unwrap_err();
        for err in [
            err,
            AuthError::Malformed,
            AuthError::TokenExpired,
            AuthError::NotYetValid,
            AuthError::AlgorithmNotAllowed,
            AuthError::MissingClaim("sub"),
            AuthError::TokenTooLarge { len: 9, max: 8 },
            AuthError::Unavailable("connection refused".into()),
        ] {
            let text = err.to_string();
            assert!(!text.contains(&token) && !text.ends_with('.') && !text.contains('\n'));
            assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
            assert!(!err.reason().is_empty());
        }
    }

    #[test]
    fn settings_are_checked() {
        let settings = |secret: &[u8], leeway: u64, max: usize| ValidatorSettings {
            secret: secret.to_vec(),
            leeway: Duration::from_secs(leeway),
            max_token_bytes: max,
        };
        let err = Validator::new(settings(b"", 30, 8192)).unwrap_err();
        assert!(
            err.to_string().contains("--jwt-secret / JWT_SECRET"),
            "{err}"
        );
        let err = Validator::new(settings(SECRET, 30, 0)).unwrap_err();
        assert!(
            err.to_string()
                .contains("--max-token-bytes / MAX_TOKEN_BYTES"),
            "{err}"
        );
        let err = Validator::new(settings(SECRET, 86_400, 8192)).unwrap_err();
        assert!(
            err.to_string().contains("--jwt-leeway / JWT_LEEWAY"),
            "{err}"
        );
        let debug = format!("{:?}", settings(SECRET, 30, 8192));
        assert!(!debug.contains("a-test-secret"), "{debug}");
    }
}
