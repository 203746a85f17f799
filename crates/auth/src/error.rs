//! Why a token was refused, as one enum shared by the library, the service and the client.

use std::borrow::Cow;

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum AuthError {
    /// Not a compact JWS of three base64url segments with JSON header and claims.
    #[error("token is not a well-formed jwt")]
    Malformed,
    /// `exp` is in the past, beyond the leeway.
    #[error("token has expired")]
    TokenExpired,
    /// `nbf` or `iat` is in the future, beyond the leeway.
    #[error("token is not valid yet")]
    NotYetValid,
    /// The signature does not match the key the token was checked with.
    #[error("token signature does not match")]
    BadSignature,
    /// The header's `kid` names no key this validator has, even after a
    /// refetch of the JWKS (or without one, when a refetch was too recent).
    #[error("token names a signing key that is not known")]
    UnknownKey,
    /// The header names an algorithm the key it selects does not allow (`none` included).
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// `iss` is not one of the configured issuers.
    #[error("token issuer is not accepted")]
    WrongIssuer,
    /// `aud` names none of the configured audiences.
    #[error("token audience is not accepted")]
    WrongAudience,
    /// A claim the token must carry is absent or of the wrong type.
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(Cow<'static, str>),
    /// The token is longer than the configured maximum.
    #[error("token is {len} bytes, more than the {max} allowed")]
    TokenTooLarge {
        /// The token's length in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The user claim is longer than Pulse takes
    /// ([`pulse_protocol::MAX_USER_ID_BYTES`]).
    #[error("the token's user id is {len} bytes, more than the {max} allowed")]
    UserIdTooLong {
        /// The user id's length in bytes.
        len: usize,
        /// The most allowed.
        max: usize,
    },
    /// No verdict could be reached: the remote auth service could not answer,
    /// or the JWKS that would hold the token's key has never been loaded.
    #[error("auth service unavailable: {0}")]
    Unavailable(String),
}

impl AuthError {
    /// The machine-readable reason, as sent in the gRPC `ErrorInfo` and to clients.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::Malformed => "malformed",
            Self::TokenExpired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::BadSignature => "bad_signature",
            Self::UnknownKey => "unknown_key",
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::WrongIssuer => "wrong_issuer",
            Self::WrongAudience => "wrong_audience",
            Self::MissingClaim(_) => "missing_claim",
            Self::TokenTooLarge { .. } => "token_too_large",
            Self::UserIdTooLong { .. } => "user_id_too_long",
            Self::Unavailable(_) => "auth_unavailable",
        }
    }

    /// A missing claim, by a name known at compile time.
    pub(crate) fn missing(claim: &'static str) -> Self {
        Self::MissingClaim(Cow::Borrowed(claim))
    }
}

/// A setting that stops `pulse-auth` (or a caller of this library) at start.
/// Each message is one line that names the setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No key source was given.
    #[error(
        "--jwt-secret / JWT_SECRET, --jwt-public-key / JWT_PUBLIC_KEY or --jwks-url / JWKS_URL is required: refusing to start without a key to check tokens against"
    )]
    MissingKeySource,
    /// Signing (the `mint` command, the gateway's dev login) needs the shared secret.
    #[error("--jwt-secret / JWT_SECRET is required to sign tokens")]
    MissingSecret,
    /// A setting that must not be empty is.
    #[error("{setting} must not be empty")]
    EmptyValue {
        /// The flag and environment variable.
        setting: &'static str,
    },
    /// The secret's algorithms are not HMAC ones.
    #[error(
        "--jwt-secret-algorithms / JWT_SECRET_ALGORITHMS: {value} is not a non-empty list of HS256, HS384 and HS512"
    )]
    SecretAlgorithms {
        /// The value given.
        value: String,
    },
    /// A public key file cannot be used.
    #[error("--jwt-public-key / JWT_PUBLIC_KEY: {source_name}: {reason}")]
    PublicKey {
        /// The file (or other source) the key came from.
        source_name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The JWKS URL is not an `http(s)://host/...` URL.
    #[error("--jwks-url / JWKS_URL: invalid url {url:?}: {reason}")]
    JwksUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// A JWKS was configured outside a Tokio runtime, where its refresher cannot run.
    #[error(
        "--jwks-url / JWKS_URL: the key refresher needs a tokio runtime; build the validator inside one"
    )]
    JwksRuntime,
    /// A duration that must be positive is zero.
    #[error("{setting} must be more than zero")]
    DurationZero {
        /// The flag and environment variable.
        setting: &'static str,
    },
    /// The token size limit is zero.
    #[error("--max-token-bytes / MAX_TOKEN_BYTES must be at least 1")]
    MaxTokenBytesZero,
    /// The leeway is beyond what any clock skew explains.
    #[error("--jwt-leeway / JWT_LEEWAY must be at most {max}")]
    LeewayTooLarge {
        /// The largest leeway accepted, in human form.
        max: String,
    },
    /// The listen address could not be bound.
    #[error("--listen / LISTEN_ADDR: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: std::net::SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The auth service URL is not an `http://host:port` URL.
    #[error("--auth-url / AUTH_URL: invalid url {url:?}: {reason}")]
    AuthUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request timeout for the auth service is zero.
    #[error("--auth-timeout / AUTH_TIMEOUT must be more than zero")]
    AuthTimeoutZero,
}
