//! Validation over gRPC: what the gateway uses when `--auth-url` is set.

use std::time::Duration;

use pulse_protocol::proto::auth::v1::{ValidateRequest, auth_client::AuthClient};
use tonic::{
    Code, Status,
    transport::{Channel, Endpoint},
};
use tonic_types::StatusExt;

use crate::{
    claims::struct_to_map,
    error::{AuthError, ConfigError},
    service::{DOMAIN, METADATA_CLAIM, METADATA_LEN, METADATA_MAX},
    validator::Identity,
};

/// A client of `pulse.auth.v1.Auth`: one lazily connected, multiplexed HTTP/2
/// channel that reconnects on its own. Cheap to clone; clones share the channel.
#[derive(Debug, Clone)]
pub struct RemoteValidator {
    client: AuthClient<Channel>,
}

impl RemoteValidator {
    /// A client of the service at `url` (`http://host:port`). Nothing connects
    /// until the first call; `request_timeout` bounds connecting and each call.
    ///
    /// Call it from within a Tokio runtime: the channel's worker is spawned here.
    pub fn new(url: &str, request_timeout: Duration) -> Result<Self, ConfigError> {
        let invalid = |reason: &str| ConfigError::AuthUrl {
            url: url.to_owned(),
            reason: reason.to_owned(),
        };
        if request_timeout.is_zero() {
            return Err(ConfigError::AuthTimeoutZero);
        }
        let endpoint =
            Endpoint::from_shared(url.to_owned()).map_err(|err| invalid(&err.to_string()))?;
        match endpoint.uri().scheme_str() {
            Some("http") => {}
            Some("https") => return Err(invalid("https is not supported by this build, use http")),
            _ => return Err(invalid("expected http://host:port")),
        }
        if endpoint.uri().host().is_none_or(str::is_empty) {
            return Err(invalid("expected http://host:port"));
        }
        let channel = endpoint
            .connect_timeout(request_timeout)
            .timeout(request_timeout)
            .connect_lazy();
        Ok(Self {
            client: AuthClient::new(channel),
        })
    }

    /// Asks the service about `token`. A refusal comes back as the same
    /// [`AuthError`] the service decided on; anything else that goes wrong (no
    /// connection, a timeout, an unexpected status) is [`AuthError::Unavailable`].
    pub async fn validate(&self, token: &str) -> Result<Identity, AuthError> {
        // The client is a handle onto the shared channel; a clone per call is
        // how tonic lets calls run concurrently through `&self`.
        let mut client = self.client.clone();
        let request = ValidateRequest {
            token: token.to_owned(),
        };
        let response = client
            .validate(request)
            .await
            .map_err(|status| error_from_status(&status, token.len()))?
            .into_inner();
        let expires_at = u64::try_from(response.expires_at).map_err(|_| {
            AuthError::Unavailable("auth service answered with a negative expires_at".into())
        })?;
        Ok(Identity {
            user_id: response.user_id,
            expires_at,
            claims: response.claims.map(struct_to_map).unwrap_or_default(),
        })
    }
}

/// The one place a status from the service becomes an [`AuthError`].
fn error_from_status(status: &Status, token_len: usize) -> AuthError {
    if status.code() == Code::Unauthenticated
        && let Some(info) = status.get_details_error_info()
        && info.domain == DOMAIN
    {
        let figure = |key: &str| info.metadata.get(key).and_then(|n| n.parse().ok());
        let refusal = match info.reason.as_str() {
            "malformed" => Some(AuthError::Malformed),
            "token_expired" => Some(AuthError::TokenExpired),
            "token_not_yet_valid" => Some(AuthError::NotYetValid),
            "bad_signature" => Some(AuthError::BadSignature),
            "unknown_key" => Some(AuthError::UnknownKey),
            "algorithm_not_allowed" => Some(AuthError::AlgorithmNotAllowed),
            "wrong_issuer" => Some(AuthError::WrongIssuer),
            "wrong_audience" => Some(AuthError::WrongAudience),
            "missing_claim" => Some(AuthError::MissingClaim(
                info.metadata
                    .get(METADATA_CLAIM)
                    .map_or("unknown".into(), |claim| claim.clone().into()),
            )),
            "token_too_large" => Some(AuthError::TokenTooLarge {
                len: figure(METADATA_LEN).unwrap_or(token_len),
                max: figure(METADATA_MAX).unwrap_or(0),
            }),
            "user_id_too_long" => Some(AuthError::UserIdTooLong {
                len: figure(METADATA_LEN).unwrap_or(0),
                max: figure(METADATA_MAX).unwrap_or(pulse_protocol::MAX_USER_ID_BYTES),
            }),
            _ => None,
        };
        if let Some(refusal) = refusal {
            return refusal;
        }
    }
    // An UNAUTHENTICATED without a pulse.auth reason comes from something in
    // between (a proxy refusing the gateway itself), not from a verdict on the token.
    AuthError::Unavailable(describe(status))
}

/// A one-line account of a failed call, for logs and for `Unavailable`.
fn describe(status: &Status) -> String {
    let code = status.code();
    let message = status.message();
    if message.is_empty() {
        format!("{code:?}")
    } else {
        format!("{code:?}: {message}")
    }
}
