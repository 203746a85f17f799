//! The JWKS source against a real HTTP endpoint on 127.0.0.1:0: fixture
//! tokens, rotation without a restart, rate-limited refetches for unknown
//! kids, and outages that keep the last good keys.

mod support;

use std::time::Duration;

use http::StatusCode;
use pulse_auth::{AuthError, Validator, ValidatorSettings};
use support::{JwksServer, Serve, eventually, jwks_file, jwks_settings, manifest, settings, token};

const LONG: Duration = Duration::from_secs(3600);
const WITHIN: Duration = Duration::from_secs(10);

fn jwks_validator(server: &JwksServer, refresh: Duration, refetch: Duration) -> Validator {
    Validator::new(ValidatorSettings {
        jwks: Some(jwks_settings(server.url(), refresh, refetch)),
        ..ValidatorSettings::default()
    })
    .unwrap()
}

#[tokio::test]
async fn fixture_tokens_against_a_served_key_set() {
    let server = JwksServer::start(Serve::Body(jwks_file("mixed.json"))).await;
    let cases: Vec<_> = manifest()
        .cases
        .into_iter()
        .filter(|case| case.config.jwks.as_deref() == Some("mixed.json"))
        .collect();
    assert!(cases.len() >= 10, "only {} cases", cases.len());
    for case in cases {
        let validator = Validator::new(settings(&case.config, Some(server.url()))).unwrap();
        let result = validator.validate(&case.token).await;
        match (&case.expect.user_id, &case.expect.reason, result) {
            (Some(user), None, Ok(identity)) => {
                assert_eq!(&identity.user_id, user, "{}", case.name)
            }
            (None, Some(reason), Err(err)) => {
                assert_eq!(err.reason(), reason, "{}: {err}", case.name)
            }
            (_, _, result) => panic!("{}: expected {:?}, got {result:?}", case.name, case.expect),
        }
    }
}

#[tokio::test]
async fn a_new_kid_is_accepted_after_one_refetch_without_a_restart() {
    let server = JwksServer::start(Serve::Body(jwks_file("rotation_1.json"))).await;
    let validator = jwks_validator(&server, LONG, LONG);
    // The first call waits for the first fetch rather than refusing.
    assert_eq!(
        validator.validate(&token("rot_1")).await.unwrap().user_id,
        "user-rot-1"
    );
    assert_eq!(server.fetches(), 1);

    // The provider publishes rot-2 and starts signing with it.
    server.set(Serve::Body(jwks_file("rotation_2.json")));
    assert_eq!(
        validator.validate_cached(&token("rot_2")),
        Err(AuthError::UnknownKey)
    );
    assert_eq!(server.fetches(), 1, "validate_cached never fetches");
    assert_eq!(
        validator.validate(&token("rot_2")).await.unwrap().user_id,
        "user-rot-2"
    );
    assert_eq!(server.fetches(), 2);
    // Both keys now validate from the cache; rot-2 is an EC key, rot-1 RSA.
    assert!(validator.validate_cached(&token("rot_1")).is_ok());
    assert!(validator.validate_cached(&token("rot_2")).is_ok());
    assert_eq!(server.fetches(), 2);
}

#[tokio::test]
async fn the_periodic_refresh_adds_and_retires_keys() {
    let server = JwksServer::start(Serve::Body(jwks_file("rotation_1.json"))).await;
    let validator = jwks_validator(&server, Duration::from_millis(100), LONG);
    assert!(validator.validate(&token("rot_1")).await.is_ok());

    // rot-1 retired, rot-2 in: only the background refresh can tell, since
    // validate_cached never fetches.
    server.set(Serve::Body(jwks_file("rotation_3.json")));
    eventually(WITHIN, "rot-2 to appear", || {
        validator.validate_cached(&token("rot_2")).is_ok()
    })
    .await;
    assert_eq!(
        validator.validate_cached(&token("rot_1")),
        Err(AuthError::UnknownKey)
    );
}

#[tokio::test]
async fn unknown_kid_refetches_are_shared_and_rate_limited() {
    let server = JwksServer::start(Serve::Body(jwks_file("rotation_1.json"))).await;
    let validator = jwks_validator(&server, LONG, LONG);
    assert!(validator.validate(&token("rot_1")).await.is_ok());
    assert_eq!(server.fetches(), 1);

    // A burst of tokens with a kid nobody published: one refetch between them.
    let stray = token("jwks_unknown_kid");
    let mut burst = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let (validator, stray) = (validator.clone(), stray.clone());
        burst.spawn(async move { validator.validate(&stray).await });
    }
    while let Some(result) = burst.join_next().await {
        assert_eq!(result.unwrap(), Err(AuthError::UnknownKey));
    }
    assert_eq!(server.fetches(), 2);

    // Within the interval, more unknown kids cost no request at all, even
    // when the key has meanwhile been published.
    server.set(Serve::Body(jwks_file("rotation_2.json")));
    for _ in 0..20 {
        assert_eq!(validator.validate(&stray).await, Err(AuthError::UnknownKey));
    }
    assert_eq!(
        validator.validate(&token("rot_2")).await,
        Err(AuthError::UnknownKey)
    );
    assert_eq!(server.fetches(), 2);
    // Known keys are untouched by all of this.
    assert!(validator.validate(&token("rot_1")).await.is_ok());
}

#[tokio::test]
async fn an_outage_keeps_the_last_good_keys() {
    let server = JwksServer::start(Serve::Body(jwks_file("rotation_1.json"))).await;
    let validator = Validator::new(ValidatorSettings {
        jwks: Some(pulse_auth::JwksSettings {
            timeout: Duration::from_millis(300),
            ..jwks_settings(server.url(), Duration::from_millis(50), LONG)
        }),
        ..ValidatorSettings::default()
    })
    .unwrap();
    assert!(validator.validate(&token("rot_1")).await.is_ok());

    let outages = [
        Serve::Status(StatusCode::INTERNAL_SERVER_ERROR),
        Serve::Status(StatusCode::NOT_FOUND),
        Serve::Garbage,
        Serve::Body(br#"{"keys": []}"#.to_vec()),
        Serve::Hang,
    ];
    for outage in outages {
        server.set(outage);
        let seen = server.fetches();
        // Two failed refreshes (the backoff is capped by the 50ms interval).
        eventually(WITHIN, "two failed refreshes", || {
            server.fetches() >= seen + 2
        })
        .await;
        assert_eq!(
            validator.validate(&token("rot_1")).await.unwrap().user_id,
            "user-rot-1"
        );
        assert_eq!(
            validator.validate_cached(&token("rot_1")).unwrap().user_id,
            "user-rot-1"
        );
    }

    // The endpoint comes back with a rotated set: picked up without a restart.
    server.set(Serve::Body(jwks_file("rotation_3.json")));
    eventually(WITHIN, "recovery", || {
        validator.validate_cached(&token("rot_2")).is_ok()
    })
    .await;
}

#[tokio::test]
async fn an_endpoint_down_at_start_is_unavailable_until_it_answers() {
    let server = JwksServer::start(Serve::Status(StatusCode::SERVICE_UNAVAILABLE)).await;
    let validator = jwks_validator(&server, Duration::from_millis(100), LONG);
    // No verdict without keys: the caller should retry, not drop the token.
    match validator.validate(&token("rot_1")).await {
        Err(AuthError::Unavailable(message)) => {
            assert!(message.contains("--jwks-url"), "{message}");
            assert_eq!(AuthError::Unavailable(message).reason(), "auth_unavailable");
        }
        other => panic!("expected Unavailable, got {other:?}"),
    }
    // Kid-less tokens are no different.
    assert!(matches!(
        validator.validate_cached(&token("jwks_without_kid")),
        Err(AuthError::Unavailable(_))
    ));
    // Malformed tokens and alg none are refused as ever: no keys needed for that.
    assert_eq!(validator.validate("x.y").await, Err(AuthError::Malformed));
    assert_eq!(
        validator.validate(&token("alg_none")).await,
        Err(AuthError::AlgorithmNotAllowed)
    );

    server.set(Serve::Body(jwks_file("rotation_1.json")));
    eventually(WITHIN, "the first good fetch", || {
        validator.validate_cached(&token("rot_1")).is_ok()
    })
    .await;
}

#[tokio::test]
async fn the_jwks_sits_beside_static_keys() {
    let server = JwksServer::start(Serve::Body(jwks_file("rotation_1.json"))).await;
    let validator = Validator::new(ValidatorSettings {
        secret: Some(support::secret()),
        public_keys: vec![support::public_key("ec_p256.pem")],
        jwks: Some(jwks_settings(server.url(), LONG, LONG)),
        ..ValidatorSettings::default()
    })
    .unwrap();
    for name in ["rot_1", "hs256_valid", "hs512_valid", "es256_valid"] {
        assert!(validator.validate(&token(name)).await.is_ok(), "{name}");
    }
    assert_eq!(
        validator.validate(&token("hs256_wrong_secret")).await,
        Err(AuthError::BadSignature)
    );
}
