//! The keys a [`Validator`](crate::Validator) accepts signatures from.
//!
//! Today the set holds one HS256 shared secret. It is a list of entries, each
//! naming its algorithm and optionally its `kid`, so that public keys and a
//! JWKS can join it later without the validation path changing shape.

use jsonwebtoken::{Algorithm, DecodingKey, Validation};

/// Every key a token may be signed with, and the checks that go with each.
pub(crate) struct KeySet {
    keys: Vec<VerificationKey>,
}

/// One key: what it verifies, and the claim checks a token signed with it passes.
pub(crate) struct VerificationKey {
    /// The `kid` a token names to pick this key; `None` matches any `kid`.
    kid: Option<String>,
    algorithm: Algorithm,
    /// The key material. `DecodingKey` zeroises itself on drop and redacts its `Debug`.
    pub(crate) key: DecodingKey,
    /// The algorithm pinned to this key, `exp` required, `nbf` honoured, leeway applied.
    pub(crate) validation: Validation,
}

impl KeySet {
    /// A set holding one HMAC-SHA256 shared secret.
    pub(crate) fn hs256(secret: &[u8], leeway_secs: u64) -> Self {
        Self {
            keys: vec![VerificationKey::new(
                None,
                Algorithm::HS256,
                DecodingKey::from_secret(secret),
                leeway_secs,
            )],
        }
    }

    /// Whether any key verifies `algorithm`: an algorithm no key uses is refused
    /// before any signature work.
    pub(crate) fn allows(&self, algorithm: Algorithm) -> bool {
        self.keys.iter().any(|key| key.algorithm == algorithm)
    }

    /// The key for a token whose header names `algorithm` and, optionally, `kid`.
    pub(crate) fn select(
        &self,
        algorithm: Algorithm,
        kid: Option<&str>,
    ) -> Option<&VerificationKey> {
        self.keys.iter().find(|key| {
            key.algorithm == algorithm
                && match (&key.kid, kid) {
                    (Some(want), Some(got)) => want == got,
                    // A key without a kid answers for any token of its algorithm, as
                    // a single configured secret must; a kid-less token may use a
                    // key with a kid, since the algorithm still pins it.
                    _ => true,
                }
        })
    }
}

impl VerificationKey {
    fn new(kid: Option<String>, algorithm: Algorithm, key: DecodingKey, leeway_secs: u64) -> Self {
        let mut validation = Validation::new(algorithm);
        validation.leeway = leeway_secs;
        validation.validate_exp = true;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        // No audience is configured yet, and jsonwebtoken would otherwise refuse
        // every token that carries an `aud` at all. Audience checks come with
        // the key-source options.
        validation.validate_aud = false;
        Self {
            kid,
            algorithm,
            key,
            validation,
        }
    }
}
