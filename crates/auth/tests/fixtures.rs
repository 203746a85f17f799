//! Tokens and keys made by another implementation (PyJWT and `cryptography`,
//! see scripts/fixtures/make_jwt_fixtures.py), checked against the verdict
//! the script wrote down for each. Cases that need a JWKS run in `jwks.rs`.

mod support;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use pulse_auth::{AuthError, Identity, Validator};
use serde_json::Value;
use support::{Case, manifest, settings};

fn check(case: &Case, result: Result<Identity, AuthError>) {
    match (&case.expect.user_id, &case.expect.reason, result) {
        (Some(user), None, Ok(identity)) => assert_eq!(&identity.user_id, user, "{}", case.name),
        (None, Some(reason), Err(err)) => {
            assert_eq!(err.reason(), reason, "{}: {err} ({})", case.name, case.note)
        }
        (_, _, result) => panic!(
            "{}: expected {:?}, got {result:?} ({})",
            case.name, case.expect, case.note
        ),
    }
}

#[tokio::test]
async fn every_static_key_case_gets_its_verdict() {
    let cases: Vec<Case> = manifest()
        .cases
        .into_iter()
        .filter(|case| case.config.jwks.is_none())
        .collect();
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    for case in &cases {
        let validator = Validator::new(settings(&case.config, None)).unwrap();
        check(case, validator.validate_cached(&case.token));
        // Without a JWKS the async path is the same check.
        check(case, validator.validate(&case.token).await);
    }
}

#[test]
fn every_algorithm_is_covered_valid_and_refused() {
    let cases = manifest().cases;
    for alg in [
        "HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256",
        "ES384", "EdDSA",
    ] {
        let name = format!("{}_valid", alg.to_lowercase());
        assert!(cases.iter().any(|case| case.name == name), "no {name}");
    }
    for name in [
        "alg_none",
        "hs256_signed_with_rsa_public_pem",
        "rs256_where_only_hs_is_configured",
        "iss_wrong",
        "aud_wrong",
        "nbf_future",
        "custom_user_claim",
        "rs256_wrong_key",
        "expired",
    ] {
        assert!(cases.iter().any(|case| case.name == name), "no {name}");
    }
}

#[test]
fn fixture_tokens_do_not_expire_unless_meant_to() {
    // 2100-01-01: the fixtures must outlive this code.
    const YEAR_2100: u64 = 4_102_444_800;
    for case in manifest().cases {
        let payload = case.token.split('.').nth(1).unwrap();
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap();
        match claims.get("exp").and_then(Value::as_u64) {
            Some(exp) if case.expect.reason.as_deref() == Some("token_expired") => {
                assert!(exp < YEAR_2100, "{}", case.name)
            }
            Some(exp) => assert!(exp >= YEAR_2100, "{} expires at {exp}", case.name),
            None => assert_eq!(
                case.expect.reason.as_deref(),
                Some("missing_claim"),
                "{}",
                case.name
            ),
        }
    }
}

#[test]
fn several_sources_at_once_accept_each_kind() {
    let manifest = manifest();
    // The `_among_all` cases run with the secret and every PEM key configured.
    let among_all: Vec<_> = manifest
        .cases
        .iter()
        .filter(|case| case.name.ends_with("_valid_among_all"))
        .collect();
    assert_eq!(among_all.len(), 12);
    let validator = Validator::new(settings(&among_all[0].config, None)).unwrap();
    for case in among_all {
        assert!(
            validator.validate_cached(&case.token).is_ok(),
            "{}",
            case.name
        );
    }
    assert!(!manifest.issuer.is_empty() && !manifest.audience.is_empty());
}
