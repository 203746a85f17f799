//! JWKS documents into verification keys.
//!
//! Each entry is read on its own, so that one key of a kind Pulse does not
//! take (an encryption key, a curve it lacks, a type from the future) costs
//! only that key, never the whole set. A key's algorithms come from its type
//! as for PEM keys (see [`crate::PublicKey`]), narrowed to its `alg` when it
//! has one. Shared secrets (`kty: oct`) are never taken from a JWKS: a
//! published key set is readable by anyone, and a secret in it would let
//! anyone sign tokens.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{
    Algorithm, DecodingKey,
    jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse},
};
use serde::Deserialize;
use serde_json::Value;

use crate::{
    keys::VerificationKey,
    pem::{RSA_ALGORITHMS, check_rsa, probe, rsa_bits},
};

/// More keys than any identity provider publishes: a bound on the work a
/// kid-less token can cause and on what a hostile endpoint can make us hold.
pub(crate) const MAX_JWKS_KEYS: usize = 64;

/// The usable keys of a JWKS document, and why the others were skipped.
pub(crate) struct ParsedJwks {
    pub(crate) keys: Vec<VerificationKey>,
    /// `(kid, reason)` for every entry left out.
    pub(crate) skipped: Vec<(String, String)>,
}

/// Reads a JWKS document. Fails when it is not one, or holds no usable key:
/// either way the caller keeps the keys it had.
pub(crate) fn parse_jwks(body: &[u8], leeway_secs: u64) -> Result<ParsedJwks, String> {
    #[derive(Deserialize)]
    struct Document {
        keys: Vec<Value>,
    }
    let document: Document =
        serde_json::from_slice(body).map_err(|err| format!("not a JWKS document: {err}"))?;
    let mut parsed = ParsedJwks {
        keys: Vec::new(),
        skipped: Vec::new(),
    };
    for entry in document.keys {
        let kid = entry.get("kid").and_then(Value::as_str).map(str::to_owned);
        let label = kid.clone().unwrap_or_else(|| "(no kid)".to_owned());
        if parsed.keys.len() == MAX_JWKS_KEYS {
            parsed
                .skipped
                .push((label, format!("beyond the first {MAX_JWKS_KEYS} keys")));
            continue;
        }
        match key_from_jwk(entry) {
            Ok((key, algorithms)) => {
                parsed
                    .keys
                    .push(VerificationKey::new(kid, key, &algorithms, leeway_secs));
            }
            Err(reason) => parsed.skipped.push((label, reason)),
        }
    }
    if parsed.keys.is_empty() {
        return Err(format!(
            "holds no usable signing key ({} skipped)",
            parsed.skipped.len()
        ));
    }
    Ok(parsed)
}

/// One JWK as a key and its algorithms, or why it cannot be one.
fn key_from_jwk(entry: Value) -> Result<(DecodingKey, Vec<Algorithm>), String> {
    let jwk: Jwk = serde_json::from_value(entry).map_err(|err| format!("not a JWK: {err}"))?;
    if let Some(usage) = &jwk.common.public_key_use
        && *usage != PublicKeyUse::Signature
    {
        return Err("not a signing key (use is not sig)".to_owned());
    }
    if let Some(operations) = &jwk.common.key_operations
        && !operations.contains(&KeyOperations::Verify)
    {
        return Err("not a verification key (key_ops lacks verify)".to_owned());
    }
    let (key, by_type) = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let n = decode(&rsa.n, "n")?;
            let e = decode(&rsa.e, "e")?;
            check_rsa(rsa_bits(&n), &e).map_err(|reason| reason.replacen("is ", "", 1))?;
            (DecodingKey::from_rsa_raw_components(&n, &e), RSA_ALGORITHMS)
        }
        AlgorithmParameters::EllipticCurve(ec) => {
            let algorithm: &'static [Algorithm] = match ec.curve {
                EllipticCurve::P256 => &[Algorithm::ES256],
                EllipticCurve::P384 => &[Algorithm::ES384],
                _ => return Err(format!("unsupported curve {:?}", ec.curve)),
            };
            let key = DecodingKey::from_ec_components(&ec.x, &ec.y)
                .map_err(|_| "x or y is not base64url".to_owned())?;
            probe(&key, algorithm[0]).map_err(|_| "not a valid point on its curve".to_owned())?;
            (key, algorithm)
        }
        AlgorithmParameters::OctetKeyPair(okp) => {
            if okp.curve != EllipticCurve::Ed25519 {
                return Err(format!("unsupported curve {:?}", okp.curve));
            }
            // jsonwebtoken's EdDSA verifier slices the first 32 bytes without
            // checking the length, so anything else must stop here.
            if decode(&okp.x, "x")?.len() != 32 {
                return Err("not a valid Ed25519 key".to_owned());
            }
            let key = DecodingKey::from_ed_components(&okp.x)
                .map_err(|_| "x is not base64url".to_owned())?;
            probe(&key, Algorithm::EdDSA).map_err(|_| "not a valid Ed25519 key".to_owned())?;
            (key, &[Algorithm::EdDSA][..])
        }
        AlgorithmParameters::OctetKey(_) => {
            return Err("a shared secret, which a published JWKS must not hold".to_owned());
        }
        _ => return Err("an unsupported key type".to_owned()),
    };
    let algorithms = match jwk.common.key_algorithm {
        None => by_type.to_vec(),
        Some(named) => {
            let algorithm = Algorithm::try_from(named)
                .map_err(|_| format!("alg {named} is not a signing algorithm"))?;
            if !by_type.contains(&algorithm) {
                return Err(format!("alg {named} does not fit the key type"));
            }
            vec![algorithm]
        }
    };
    Ok((key, algorithms))
}

fn decode(field: &str, name: &str) -> Result<Vec<u8>, String> {
    URL_SAFE_NO_PAD
        .decode(field.trim_end_matches('='))
        .map_err(|_| format!("{name} is not base64url"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(name: &str) -> Vec<u8> {
        let path = format!("{}/tests/fixtures/jwks/{name}", env!("CARGO_MANIFEST_DIR"));
        std::fs::read(path).unwrap()
    }

    #[test]
    fn a_mixed_set_keeps_what_it_can_use() {
        let parsed = parse_jwks(&fixture("mixed.json"), 0).unwrap();
        let kids: Vec<_> = parsed.keys.iter().map(|k| k.kid.clone().unwrap()).collect();
        assert_eq!(kids, ["jwks-rsa-1", "jwks-ec-1", "jwks-ed-1"]);
        let rsa = &parsed.keys[0];
        assert!(RSA_ALGORITHMS.iter().all(|alg| rsa.allows(*alg)));
        assert!(!rsa.allows(Algorithm::HS256));
        let ec = &parsed.keys[1];
        assert!(ec.allows(Algorithm::ES256) && !ec.allows(Algorithm::ES384));
        assert!(parsed.keys[2].allows(Algorithm::EdDSA));

        let skipped: Vec<_> = parsed.skipped.iter().map(|(kid, _)| kid.as_str()).collect();
        assert_eq!(
            skipped,
            [
                "jwks-oct-1",
                "jwks-enc-1",
                "jwks-p521-1",
                "jwks-pq-1",
                "jwks-mislabelled-1"
            ]
        );
        let reasons: Vec<_> = parsed.skipped.iter().map(|(_, r)| r.as_str()).collect();
        assert!(reasons[0].contains("shared secret"), "{reasons:?}");
        assert!(reasons[1].contains("not a signing key"), "{reasons:?}");
        assert!(reasons[4].contains("does not fit"), "{reasons:?}");
    }

    #[test]
    fn documents_without_usable_keys_fail() {
        for body in [
            &b"not json"[..],
            br#"{"keys": "no"}"#,
            br#"{"keys": []}"#,
            br#"{"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}"#,
            br#"{"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "AAAA"}]}"#,
            br#"{"keys": [{"kty": "EC", "crv": "P-256", "x": "AAAA", "y": "AAAA"}]}"#,
            br#"{"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}]}"#,
        ] {
            assert!(
                parse_jwks(body, 0).is_err(),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn the_number_of_keys_is_bounded() {
        let one = serde_json::from_slice::<Value>(&fixture("rotation_3.json")).unwrap()["keys"][0]
            .clone();
        let keys: Vec<Value> = (0..MAX_JWKS_KEYS + 3).map(|_| one.clone()).collect();
        let body = serde_json::to_vec(&serde_json::json!({ "keys": keys })).unwrap();
        let parsed = parse_jwks(&body, 0).unwrap();
        assert_eq!(parsed.keys.len(), MAX_JWKS_KEYS);
        assert_eq!(parsed.skipped.len(), 3);
    }
}
