//! The claim checks after the signature, `exp` and `nbf` hold: `iat`, `iss`,
//! `aud`, and the claim that names the user.

use std::borrow::Cow;

use jsonwebtoken::get_current_timestamp;
use serde_json::{Map, Value};

use pulse_protocol::MAX_USER_ID_BYTES;

use crate::{error::AuthError, validator::Identity};

/// What a verified token's claims must say.
pub(crate) struct ClaimPolicy {
    /// Accepted `iss` values; empty when `iss` is not checked.
    pub(crate) issuers: Vec<String>,
    /// Accepted `aud` values; empty when `aud` is not checked.
    pub(crate) audiences: Vec<String>,
    /// The claim whose string value is the user id.
    pub(crate) user_claim: String,
    pub(crate) leeway_secs: u64,
}

impl ClaimPolicy {
    /// The identity in `claims`, whose signature and times have been checked.
    pub(crate) fn identity(&self, claims: Map<String, Value>) -> Result<Identity, AuthError> {
        // A token issued in the future comes from a broken clock or a forger
        // planning ahead; either way it is not valid yet.
        if let Some(iat) = claims.get("iat") {
            let iat = numeric_date(iat).ok_or(AuthError::Malformed)?;
            if iat > get_current_timestamp().saturating_add(self.leeway_secs) {
                return Err(AuthError::NotYetValid);
            }
        }
        if !self.issuers.is_empty() {
            match claims.get("iss") {
                None => return Err(AuthError::missing("iss")),
                Some(Value::String(iss)) if self.issuers.contains(iss) => {}
                Some(_) => return Err(AuthError::WrongIssuer),
            }
        }
        if !self.audiences.is_empty() {
            let ours = |aud: &Value| {
                aud.as_str()
                    .is_some_and(|aud| self.audiences.iter().any(|a| a == aud))
            };
            match claims.get("aud") {
                None => return Err(AuthError::missing("aud")),
                Some(aud @ Value::String(_)) if ours(aud) => {}
                Some(Value::Array(auds)) if auds.iter().any(ours) => {}
                Some(_) => return Err(AuthError::WrongAudience),
            }
        }
        let user_id = match claims.get(&self.user_claim) {
            Some(Value::String(user)) if !user.is_empty() => user.clone(),
            _ => return Err(AuthError::MissingClaim(self.claim_name())),
        };
        // A user id presence and the API would refuse must not become a
        // socket nothing can reach: refused here, like any bad claim.
        if user_id.len() > MAX_USER_ID_BYTES {
            return Err(AuthError::UserIdTooLong {
                len: user_id.len(),
                max: MAX_USER_ID_BYTES,
            });
        }
        let expires_at = claims
            .get("exp")
            .and_then(numeric_date)
            .ok_or(AuthError::missing("exp"))?;
        Ok(Identity {
            user_id,
            expires_at,
            claims,
        })
    }

    fn claim_name(&self) -> Cow<'static, str> {
        match self.user_claim.as_str() {
            "sub" => Cow::Borrowed("sub"),
            other => Cow::Owned(other.to_owned()),
        }
    }
}

/// A JWT NumericDate as whole seconds, read the way jsonwebtoken reads it
/// (non-negative, fractions rounded), so the `exp` reported is the `exp` checked.
pub(crate) fn numeric_date(value: &Value) -> Option<u64> {
    if let Some(secs) = value.as_u64() {
        return Some(secs);
    }
    let secs = value.as_f64()?;
    (secs.is_finite() && secs >= 0.0 && secs < u64::MAX as f64).then(|| secs.round() as u64)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn policy(issuers: &[&str], audiences: &[&str], user_claim: &str) -> ClaimPolicy {
        ClaimPolicy {
            issuers: issuers.iter().map(|s| s.to_string()).collect(),
            audiences: audiences.iter().map(|s| s.to_string()).collect(),
            user_claim: user_claim.into(),
            leeway_secs: 30,
        }
    }

    fn claims(value: Value) -> Map<String, Value> {
        let Value::Object(mut map) = value else {
            unreachable!()
        };
        map.entry("exp").or_insert(json!(4_102_444_800u64));
        map
    }

    #[test]
    fn issuer_is_checked_only_when_configured() {
        let open = policy(&[], &[], "sub");
        assert!(
            open.identity(claims(json!({"sub": "u", "iss": "any"})))
                .is_ok()
        );
        let strict = policy(&["https://a/", "https://b/"], &[], "sub");
        assert!(
            strict
                .identity(claims(json!({"sub": "u", "iss": "https://b/"})))
                .is_ok()
        );
        for (iss, err) in [
            (json!("https://c/"), AuthError::WrongIssuer),
            (json!(["https://a/"]), AuthError::WrongIssuer),
            (json!(7), AuthError::WrongIssuer),
        ] {
            let result = strict.identity(claims(json!({"sub": "u", "iss": iss})));
            assert_eq!(result, Err(err), "{iss}");
        }
        assert_eq!(
            strict.identity(claims(json!({"sub": "u"}))),
            Err(AuthError::missing("iss"))
        );
    }

    #[test]
    fn audience_may_be_a_string_or_a_list() {
        let open = policy(&[], &[], "sub");
        assert!(
            open.identity(claims(json!({"sub": "u", "aud": "else"})))
                .is_ok()
        );
        let strict = policy(&[], &["pulse"], "sub");
        for aud in [json!("pulse"), json!(["x", "pulse"])] {
            assert!(
                strict
                    .identity(claims(json!({"sub": "u", "aud": aud})))
                    .is_ok()
            );
        }
        for aud in [json!("x"), json!(["x", 1]), json!([]), json!({"pulse": 1})] {
            let result = strict.identity(claims(json!({"sub": "u", "aud": aud})));
            assert_eq!(result, Err(AuthError::WrongAudience), "{aud}");
        }
        assert_eq!(
            strict.identity(claims(json!({"sub": "u"}))),
            Err(AuthError::missing("aud"))
        );
    }

    #[test]
    fn iat_in_the_future_beyond_the_leeway_is_not_valid_yet() {
        let now = get_current_timestamp();
        let policy = policy(&[], &[], "sub");
        assert!(
            policy
                .identity(claims(json!({"sub": "u", "iat": now + 20})))
                .is_ok()
        );
        assert_eq!(
            policy.identity(claims(json!({"sub": "u", "iat": now + 120}))),
            Err(AuthError::NotYetValid)
        );
        assert_eq!(
            policy.identity(claims(json!({"sub": "u", "iat": "yesterday"}))),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn the_user_comes_from_the_configured_claim() {
        let policy = policy(&[], &[], "https://example.test/uid");
        let identity = policy
            .identity(claims(
                json!({"sub": "s", "https://example.test/uid": "u-1"}),
            ))
            .unwrap();
        assert_eq!(identity.user_id, "u-1");
        for bad in [
            json!({"sub": "s"}),
            json!({"https://example.test/uid": ""}),
            json!({"https://example.test/uid": 5}),
        ] {
            assert_eq!(
                policy.identity(claims(bad)),
                Err(AuthError::MissingClaim("https://example.test/uid".into()))
            );
        }
    }

    #[test]
    fn a_user_id_over_pulses_limit_is_refused() {
        let policy = policy(&[], &[], "sub");
        let longest = "ü".repeat(MAX_USER_ID_BYTES / 2);
        let identity = policy.identity(claims(json!({"sub": longest}))).unwrap();
        assert_eq!(identity.user_id.len(), MAX_USER_ID_BYTES);
        let over = format!("{longest}x");
        assert_eq!(
            policy.identity(claims(json!({"sub": over}))),
            Err(AuthError::UserIdTooLong {
                len: MAX_USER_ID_BYTES + 1,
                max: MAX_USER_ID_BYTES
            })
        );
    }
}
