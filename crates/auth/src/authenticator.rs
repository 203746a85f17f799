//! One way for a caller to validate, whichever mode it runs in.

use crate::{client::RemoteValidator, error::AuthError, validator::Identity, validator::Validator};

/// Auth mode for a caller (the gateway): in-process or over gRPC.
#[derive(Debug, Clone)]
pub enum Authenticator {
    /// Validate in this process with the configured keys.
    Local(Validator),
    /// Ask a `pulse-auth` service.
    Remote(RemoteValidator),
}

impl Authenticator {
    /// Validates `token` in whichever mode this is. Local validation is 2 µs
    /// (HS256) to 200 µs (ES256) of CPU, cheap enough to run on the calling
    /// task; it waits on the network only for a rate-limited JWKS refetch.
    pub async fn validate(&self, token: &str) -> Result<Identity, AuthError> {
        match self {
            Self::Local(validator) => validator.validate(token).await,
            Self::Remote(remote) => remote.validate(token).await,
        }
    }
}

impl From<Validator> for Authenticator {
    fn from(validator: Validator) -> Self {
        Self::Local(validator)
    }
}

impl From<RemoteValidator> for Authenticator {
    fn from(remote: RemoteValidator) -> Self {
        Self::Remote(remote)
    }
}
