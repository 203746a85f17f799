//! Whether a connection may subscribe to a channel, in the four ways a
//! namespace's `authorize` names: any authenticated user, the connection
//! token's `channels` claim (exact names and `prefix*`), a subscription
//! token (`sub`, `channel`, `exp`), or the application's hook.

use pulse_auth::AuthError;
use pulse_presence::Authorize;
use pulse_protocol::{ErrorCode, Token};
use serde_json::Value;

use super::{Live, channels::Refusal};
use crate::hooks::Verdict;

impl Live {
    pub(super) async fn authorize(
        &mut self,
        mode: Authorize,
        channel: &str,
        token: Option<Token>,
    ) -> Result<(), Refusal> {
        match mode {
            Authorize::Any => Ok(()),
            Authorize::Claim => {
                let claim = self
                    .channels
                    .as_ref()
                    .and_then(|state| state.claim.as_deref());
                if claim.is_some_and(|claim| claim_allows(claim, channel)) {
                    Ok(())
                } else {
                    Err(Refusal::new(
                        ErrorCode::PERMISSION_DENIED,
                        "the connection token's `channels` claim does not name this channel",
                    ))
                }
            }
            Authorize::Token => {
                let Some(token) = token else {
                    return Err(Refusal::new(
                        ErrorCode::PERMISSION_DENIED,
                        "this namespace needs a subscription token (`token`)",
                    ));
                };
                let identity = Box::pin(self.shared.auth.validate(token.expose()))
                    .await
                    .map_err(|error| match error {
                        AuthError::Unavailable(_) => Refusal::new(
                            ErrorCode::AUTH_UNAVAILABLE,
                            "the subscription token could not be checked: authentication is unavailable; try again",
                        ),
                        other => Refusal::new(
                            ErrorCode::PERMISSION_DENIED,
                            format!("subscription token: {}: {other}", other.reason()),
                        ),
                    })?;
                if *identity.user_id != *self.user_id {
                    return Err(Refusal::new(
                        ErrorCode::PERMISSION_DENIED,
                        "the subscription token is for another user",
                    ));
                }
                if identity.claims.get("channel").and_then(Value::as_str) != Some(channel) {
                    return Err(Refusal::new(
                        ErrorCode::PERMISSION_DENIED,
                        "the subscription token is for another channel (its `channel` claim)",
                    ));
                }
                Ok(())
            }
            Authorize::Hook => {
                let Some(hook) = &self.shared.hook else {
                    // The config file's check makes `[hooks]` present.
                    return Err(Refusal::new(
                        ErrorCode::UNAVAILABLE,
                        "no authorization hook is configured",
                    ));
                };
                match hook
                    .authorize(&self.user_id, channel, &self.connection_id)
                    .await
                {
                    Verdict::Allowed => Ok(()),
                    Verdict::Denied(reason) => {
                        Err(Refusal::new(ErrorCode::PERMISSION_DENIED, reason))
                    }
                    Verdict::Unavailable(message) => {
                        Err(Refusal::new(ErrorCode::UNAVAILABLE, message))
                    }
                }
            }
        }
    }
}

/// The `channels` claim: an array of strings (anything else counts as none).
pub(super) fn channels_claim(claims: &serde_json::Map<String, Value>) -> Option<Box<[Box<str>]>> {
    let list = claims.get("channels")?.as_array()?;
    Some(
        list.iter()
            .filter_map(Value::as_str)
            .map(Box::from)
            .collect(),
    )
}

/// Whether a `channels` claim names `channel`, exactly or by a `prefix*`.
fn claim_allows(claim: &[Box<str>], channel: &str) -> bool {
    claim.iter().any(|entry| match entry.strip_suffix('*') {
        Some(prefix) => channel.starts_with(prefix),
        None => **entry == *channel,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_name_channels_exactly_or_by_prefix() {
        let claim: Vec<Box<str>> = vec!["room:1".into(), "order:42:*".into()];
        assert!(claim_allows(&claim, "room:1"));
        assert!(!claim_allows(&claim, "room:12"));
        assert!(claim_allows(&claim, "order:42:items"));
        assert!(!claim_allows(&claim, "order:43:items"));
        assert!(!claim_allows(&[], "room:1"));
    }
}
