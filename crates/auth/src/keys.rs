//! The keys a [`Validator`](crate::Validator) accepts signatures from, and
//! the choice of key for a token.
//!
//! Every key carries the algorithms it allows, and a token is only ever
//! checked with a key that allows the token's `alg`: that is what rules out
//! `alg: none` and HS/RS key confusion, whatever the header says.

use jsonwebtoken::{Algorithm, DecodingKey, Validation, errors::ErrorKind};
use serde_json::{Map, Value};

use crate::error::AuthError;

/// One key: what it verifies, and the checks a token signed with it passes.
pub(crate) struct VerificationKey {
    /// The `kid` a token names to pick this key. Keys without one (a shared
    /// secret, a PEM key) answer tokens whatever their `kid`.
    pub(crate) kid: Option<String>,
    /// The key material. `DecodingKey` zeroises itself on drop and redacts its `Debug`.
    key: DecodingKey,
    /// The key's algorithms (only these may verify with it), `exp` required,
    /// `nbf` honoured, leeway applied.
    validation: Validation,
}

impl VerificationKey {
    pub(crate) fn new(
        kid: Option<String>,
        key: DecodingKey,
        algorithms: &[Algorithm],
        leeway_secs: u64,
    ) -> Self {
        let mut validation = Validation::new(algorithms[0]);
        validation.algorithms = algorithms.to_vec();
        validation.leeway = leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        // Issuer and audience are checked by the validator's claim policy,
        // which can tell a missing claim from a wrong one; jsonwebtoken would
        // otherwise also refuse every token that carries an `aud` at all.
        validation.validate_aud = false;
        Self {
            kid,
            key,
            validation,
        }
    }

    pub(crate) fn allows(&self, algorithm: Algorithm) -> bool {
        self.validation.algorithms.contains(&algorithm)
    }
}

/// Verifies `token` (whose header says `algorithm` and `kid`) with the keys
/// that may have signed it, and returns its claims once the signature, `exp`
/// and `nbf` hold.
///
/// A `kid` that names keys limits the choice to them, and their algorithms
/// must include the token's. Otherwise the candidates are the keys without a
/// `kid` (all keys, for a token without one) that allow the algorithm, tried
/// in turn. `jwks` says whether an unknown `kid` may yet appear in a JWKS,
/// which makes the answer [`AuthError::UnknownKey`] and a refetch worthwhile.
pub(crate) fn verify(
    token: &str,
    algorithm: Algorithm,
    kid: Option<&str>,
    configured: &[VerificationKey],
    fetched: &[VerificationKey],
    jwks: bool,
) -> Result<Map<String, Value>, AuthError> {
    let all = || configured.iter().chain(fetched);
    if let Some(kid) = kid {
        let named: Vec<&VerificationKey> = all()
            .filter(|key| key.kid.as_deref() == Some(kid))
            .collect();
        if !named.is_empty() {
            // The kid pins the key: an HS256 token naming an RSA key's kid is
            // refused here, not tried against some other key.
            let allowed: Vec<&VerificationKey> = named
                .into_iter()
                .filter(|key| key.allows(algorithm))
                .collect();
            if allowed.is_empty() {
                return Err(AuthError::AlgorithmNotAllowed);
            }
            return first_verifying(token, allowed)?.ok_or(AuthError::BadSignature);
        }
    }
    let unknown_kid = kid.is_some() && jwks;
    let candidates: Vec<&VerificationKey> = all()
        .filter(|key| (kid.is_none() || key.kid.is_none()) && key.allows(algorithm))
        .collect();
    if candidates.is_empty() {
        return Err(if unknown_kid {
            AuthError::UnknownKey
        } else {
            AuthError::AlgorithmNotAllowed
        });
    }
    first_verifying(token, candidates)?.ok_or(if unknown_kid {
        AuthError::UnknownKey
    } else {
        AuthError::BadSignature
    })
}

/// The claims from the first key whose signature matches; `None` when none does.
/// Once a signature matches, that key's verdict on `exp` and `nbf` is final.
fn first_verifying(
    token: &str,
    keys: Vec<&VerificationKey>,
) -> Result<Option<Map<String, Value>>, AuthError> {
    for key in keys {
        match jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &key.validation) {
            Ok(data) => return Ok(Some(data.claims)),
            Err(err) if matches!(err.kind(), ErrorKind::InvalidSignature) => {}
            Err(err) => return Err(map_jwt_error(err.kind())),
        }
    }
    Ok(None)
}

/// The one place a jsonwebtoken error becomes an [`AuthError`].
fn map_jwt_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::BadSignature,
        ErrorKind::ExpiredSignature => AuthError::TokenExpired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::AlgorithmNotAllowed,
        ErrorKind::MissingRequiredClaim(claim) => AuthError::MissingClaim(claim.clone().into()),
        ErrorKind::InvalidToken
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_) => AuthError::Malformed,
        // A key that does not parse was checked when it was loaded, so this
        // is a signature the key's verifier cannot even read.
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => AuthError::BadSignature,
        other => {
            // Issuer, audience and subject checks are off in jsonwebtoken, so
            // this is a library change worth hearing about.
            tracing::warn!(error = ?other, "unexpected token validation error");
            AuthError::Malformed
        }
    }
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const HMAC: &[Algorithm] = &[Algorithm::HS256];

    fn secret(kid: Option<&str>, secret: &[u8]) -> VerificationKey {
        VerificationKey::new(
            kid.map(str::to_owned),
            DecodingKey::from_secret(secret),
            HMAC,
            0,
        )
    }

    fn token(kid: Option<&str>, secret: &[u8]) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_owned);
        let claims = json!({"sub": "u", "exp": jsonwebtoken::get_current_timestamp() + 600});
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    }

    fn check(
        token: &str,
        kid: Option<&str>,
        keys: &[VerificationKey],
        jwks: bool,
    ) -> Result<(), AuthError> {
        verify(token, Algorithm::HS256, kid, keys, &[], jwks).map(|_| ())
    }

    #[test]
    fn a_kid_picks_its_key_and_only_its_key() {
        let keys = [secret(Some("a"), b"key-a"), secret(Some("b"), b"key-b")];
        assert_eq!(
            check(&token(Some("a"), b"key-a"), Some("a"), &keys, false),
            Ok(())
        );
        // Signed with b's key but naming a: refused, not rescued by key b.
        assert_eq!(
            check(&token(Some("a"), b"key-b"), Some("a"), &keys, false),
            Err(AuthError::BadSignature)
        );
    }

    #[test]
    fn keys_without_a_kid_answer_any_kid_and_are_tried_in_turn() {
        let keys = [secret(None, b"first"), secret(None, b"second")];
        assert_eq!(
            check(&token(Some("x"), b"second"), Some("x"), &keys, false),
            Ok(())
        );
        assert_eq!(check(&token(None, b"second"), None, &keys, false), Ok(()));
        assert_eq!(
            check(&token(None, b"third"), None, &keys, false),
            Err(AuthError::BadSignature)
        );
    }

    /// A token with kid `z`, signed with a key nobody holds, checked against
    /// `keys` beside a JWKS and without one.
    fn stray_kid(keys: &[VerificationKey]) -> [Result<(), AuthError>; 2] {
        let stray = token(Some("z"), b"key-z");
        [true, false].map(|jwks| check(&stray, Some("z"), keys, jwks))
    }

    #[test]
    fn an_unknown_kid_is_unknown_only_where_a_jwks_could_hold_it() {
        let keys = [secret(Some("a"), b"key-a")];
        assert_eq!(
            stray_kid(&keys),
            [
                Err(AuthError::UnknownKey),
                Err(AuthError::AlgorithmNotAllowed)
            ]
        );
        // A kid-less token may use a key with a kid: the algorithm still pins it.
        assert_eq!(check(&token(None, b"key-a"), None, &keys, true), Ok(()));
    }

    #[test]
    fn a_signature_no_kidless_key_matches_is_unknown_beside_a_jwks() {
        let keys = [secret(None, b"static")];
        assert_eq!(
            stray_kid(&keys),
            [Err(AuthError::UnknownKey), Err(AuthError::BadSignature)]
        );
    }
}
