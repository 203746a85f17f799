//! Why a token was refused, as one enum shared by the library, the service and the client.

/// Why a token was refused. Messages never contain the token.
#[derive(Debug, thiserror::Error, Clone, PartialEq)]
pub enum AuthError {
    /// Not a compact JWS of three base64url segments with JSON header and claims.
    #[error("token is not a well-formed jwt")]
    Malformed,
    /// `exp` is in the past, beyond the leeway.
    #[error("token has expired")]
    TokenExpired,
    /// `nbf` is in the future, beyond the leeway.
    #[error("token is not valid yet")]
    NotYetValid,
    /// The signature does not match any configured key.
    #[error("token signature does not match")]
    BadSignature,
    /// The header names an algorithm no configured key uses (`none` included).
    #[error("token algorithm is not allowed")]
    AlgorithmNotAllowed,
    /// A claim the token must carry is absent or of the wrong type.
    #[error("token lacks the required claim `{0}`")]
    MissingClaim(&'static str),
    /// The token is longer than the configured maximum.
    #[error("token is {len} bytes, more than the {max} allowed")]
    TokenTooLarge {
        /// The token's length in bytes.
        len: usize,
        /// The configured maximum.
        max: usize,
    },
    /// The remote auth service could not answer.
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
            Self::AlgorithmNotAllowed => "algorithm_not_allowed",
            Self::MissingClaim(_) => "missing_claim",
            Self::TokenTooLarge { .. } => "token_too_large",
            Self::Unavailable(_) => "auth_unavailable",
        }
    }
}

/// The claim names Pulse reports as missing, as static strings for [`AuthError::MissingClaim`].
pub(crate) fn claim_name(name: &str) -> &'static str {
    match name {
        "sub" => "sub",
        "exp" => "exp",
        "nbf" => "nbf",
        "iat" => "iat",
        "iss" => "iss",
        "aud" => "aud",
        _ => "unknown",
    }
}
