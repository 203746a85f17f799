//! The validator with a shared secret: what every token goes through,
//! whatever its key. Tokens from other implementations are in `fixtures.rs`.

use std::time::Duration;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header, get_current_timestamp};
use pulse_auth::{AuthError, Validator, ValidatorSettings, mint_token};
use serde_json::{Value, json};

const SECRET: &[u8] = b"a-test-secret-of-at-least-32-bytes!";

fn validator() -> Validator {
    Validator::new(ValidatorSettings::with_secret(SECRET)).unwrap()
}

/// Signs arbitrary claims with `alg` and `secret`.
fn sign(alg: Algorithm, secret: &[u8], claims: &Value) -> String {
    jsonwebtoken::encode(&Header::new(alg), claims, &EncodingKey::from_secret(secret)).unwrap()
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn now() -> u64 {
    get_current_timestamp()
}

#[test]
fn a_valid_token_names_its_user_and_keeps_every_claim() {
    let exp = now() + 600;
    let token = sign(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "user-1", "exp": exp, "role": "admin", "org": {"id": 7}}),
    );
    let identity = validator().validate_cached(&token).unwrap();
    assert_eq!(identity.user_id, "user-1");
    assert_eq!(identity.expires_at, exp);
    assert_eq!(identity.claims["role"], "admin");
    assert_eq!(identity.claims["org"], json!({"id": 7}));
    assert_eq!(identity.claims["exp"], json!(exp));
}

#[test]
fn minted_tokens_validate() {
    let token = mint_token(SECRET, "dev-user", Duration::from_secs(3600));
    let identity = validator().validate_cached(&token).unwrap();
    assert_eq!(identity.user_id, "dev-user");
    assert!(identity.expires_at >= now() + 3599);
    assert!(identity.claims.contains_key("iat"));
}

#[test]
fn an_expired_token_is_refused() {
    let token = sign(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "u", "exp": now() - 600}),
    );
    assert_eq!(
        validator().validate_cached(&token),
        Err(AuthError::TokenExpired)
    );
}

#[test]
fn leeway_covers_a_token_that_just_expired() {
    let token = sign(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "u", "exp": now() - 5}),
    );
    assert!(validator().validate_cached(&token).is_ok());
}

#[test]
fn a_token_not_valid_yet_is_refused() {
    let token = sign(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "u", "exp": now() + 7200, "nbf": now() + 3600}),
    );
    assert_eq!(
        validator().validate_cached(&token),
        Err(AuthError::NotYetValid)
    );
}

#[test]
fn a_token_signed_with_another_secret_is_refused() {
    let token = mint_token(b"some-other-secret", "u", Duration::from_secs(600));
    assert_eq!(
        validator().validate_cached(&token),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn an_unsigned_token_is_refused_as_an_algorithm() {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = b64(json!({"sub": "u", "exp": now() + 600})
        .to_string()
        .as_bytes());
    for token in [
        format!("{header}.{claims}."),
        format!("{header}.{claims}.c2ln"),
    ] {
        assert_eq!(
            validator().validate_cached(&token),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }
}

#[test]
fn every_hmac_algorithm_is_allowed_unless_narrowed() {
    let claims = json!({"sub": "u", "exp": now() + 600});
    let narrowed = Validator::new(ValidatorSettings {
        secret_algorithms: vec![Algorithm::HS256],
        ..ValidatorSettings::with_secret(SECRET)
    })
    .unwrap();
    for alg in [Algorithm::HS384, Algorithm::HS512] {
        let token = sign(alg, SECRET, &claims);
        assert!(validator().validate_cached(&token).is_ok());
        assert_eq!(
            narrowed.validate_cached(&token),
            Err(AuthError::AlgorithmNotAllowed)
        );
    }
    assert!(
        narrowed
            .validate_cached(&sign(Algorithm::HS256, SECRET, &claims))
            .is_ok()
    );
    // A name jsonwebtoken does not know at all.
    let header = b64(br#"{"alg":"XS999"}"#);
    let token = format!("{header}.{}.c2ln", b64(claims.to_string().as_bytes()));
    assert_eq!(
        validator().validate_cached(&token),
        Err(AuthError::AlgorithmNotAllowed)
    );
}

#[test]
fn what_is_not_a_jwt_is_malformed() {
    let good = mint_token(SECRET, "u", Duration::from_secs(600));
    let (header, rest) = good.split_once('.').unwrap();
    let (claims, signature) = rest.split_once('.').unwrap();
    let cases = [
        String::new(),
        "garbage".into(),
        format!("{header}.{claims}"),
        format!("{good}.extra"),
        format!("!!!.{claims}.{signature}"),
        format!("{header}.{claims}.***"),
        format!("{header}.%%%.{signature}"),
        format!("{}.{claims}.{signature}", b64(b"not json")),
        format!("{}.{claims}.{signature}", b64(br#"{"typ":"JWT"}"#)),
        format!("Bearer {good}"),
    ];
    for token in cases {
        assert_eq!(
            validator().validate_cached(&token),
            Err(AuthError::Malformed),
            "{token:?}"
        );
    }
}

#[test]
fn claims_that_are_not_an_object_are_malformed() {
    let token = sign(Algorithm::HS256, SECRET, &json!(["sub", "u"]));
    assert_eq!(
        validator().validate_cached(&token),
        Err(AuthError::Malformed)
    );
}

#[test]
fn a_token_too_large_is_refused_without_parsing() {
    let validator = Validator::new(ValidatorSettings {
        leeway: Duration::ZERO,
        max_token_bytes: 64,
        ..ValidatorSettings::with_secret(SECRET)
    })
    .unwrap();
    assert_eq!(validator.max_token_bytes(), 64);
    // Not a JWT at all: a parse would say `Malformed`.
    let token = "x".repeat(65);
    assert_eq!(
        validator.validate_cached(&token),
        Err(AuthError::TokenTooLarge { len: 65, max: 64 })
    );
    assert_eq!(
        validator.validate_cached(&"x".repeat(64)),
        Err(AuthError::Malformed)
    );
}

#[test]
fn sub_must_be_a_non_empty_string() {
    let exp = now() + 600;
    for claims in [
        json!({"exp": exp}),
        json!({"sub": "", "exp": exp}),
        json!({"sub": 42, "exp": exp}),
        json!({"sub": null, "exp": exp}),
    ] {
        let token = sign(Algorithm::HS256, SECRET, &claims);
        assert_eq!(
            validator().validate_cached(&token),
            Err(AuthError::MissingClaim("sub".into())),
            "{claims}"
        );
    }
}

#[test]
fn exp_is_required() {
    for claims in [json!({"sub": "u"}), json!({"sub": "u", "exp": "tomorrow"})] {
        let token = sign(Algorithm::HS256, SECRET, &claims);
        assert_eq!(
            validator().validate_cached(&token),
            Err(AuthError::MissingClaim("exp".into())),
            "{claims}"
        );
    }
}

#[test]
fn a_bad_signature_wins_over_bad_claims() {
    // Claims are only judged once the signature holds.
    let token = sign(Algorithm::HS256, b"other", &json!({"sub": "u", "exp": 1}));
    assert_eq!(
        validator().validate_cached(&token),
        Err(AuthError::BadSignature)
    );
}

#[test]
fn fractional_exp_is_read_as_jsonwebtoken_reads_it() {
    let exp = now() + 600;
    let token = sign(
        Algorithm::HS256,
        SECRET,
        &json!({"sub": "u", "exp": exp as f64 + 0.4}),
    );
    assert_eq!(validator().validate_cached(&token).unwrap().expires_at, exp);
}

#[test]
fn errors_are_one_lower_case_line_that_never_shows_the_token() {
    let token = mint_token(b"other", "u", Duration::from_secs(600));
    let err = validator().validate_cached(&token).unwrap_err();
    for err in [
        err,
        AuthError::Malformed,
        AuthError::TokenExpired,
        AuthError::NotYetValid,
        AuthError::AlgorithmNotAllowed,
        AuthError::UnknownKey,
        AuthError::WrongIssuer,
        AuthError::WrongAudience,
        AuthError::MissingClaim("sub".into()),
        AuthError::TokenTooLarge { len: 9, max: 8 },
        AuthError::Unavailable("connection refused".into()),
    ] {
        let text = err.to_string();
        assert!(!text.contains(&token) && !text.ends_with('.') && !text.contains('\n'));
        assert!(text.starts_with(|c: char| c.is_lowercase()), "{text}");
        assert!(!err.reason().is_empty());
    }
}

#[test]
fn settings_are_checked() {
    let settings = |secret: &[u8], leeway: u64, max: usize| ValidatorSettings {
        leeway: Duration::from_secs(leeway),
        max_token_bytes: max,
        ..ValidatorSettings::with_secret(secret)
    };
    let cases = [
        (
            settings(b"", 30, 8192),
            "--jwt-secret / JWT_SECRET must not be empty",
        ),
        (
            settings(SECRET, 30, 0),
            "--max-token-bytes / MAX_TOKEN_BYTES",
        ),
        (settings(SECRET, 86_400, 8192), "--jwt-leeway / JWT_LEEWAY"),
        (
            ValidatorSettings::default(),
            "--jwt-secret / JWT_SECRET, --jwt-public-key / JWT_PUBLIC_KEY or --jwks-url / JWKS_URL",
        ),
        (
            ValidatorSettings {
                secret_algorithms: vec![Algorithm::RS256],
                ..settings(SECRET, 30, 8192)
            },
            "--jwt-secret-algorithms / JWT_SECRET_ALGORITHMS",
        ),
        (
            ValidatorSettings {
                secret_algorithms: vec![],
                ..settings(SECRET, 30, 8192)
            },
            "--jwt-secret-algorithms / JWT_SECRET_ALGORITHMS",
        ),
        (
            ValidatorSettings {
                issuers: vec![String::new()],
                ..settings(SECRET, 30, 8192)
            },
            "--issuer / JWT_ISSUER must not be empty",
        ),
        (
            ValidatorSettings {
                audiences: vec![String::new()],
                ..settings(SECRET, 30, 8192)
            },
            "--audience / JWT_AUDIENCE must not be empty",
        ),
        (
            ValidatorSettings {
                user_claim: String::new(),
                ..settings(SECRET, 30, 8192)
            },
            "--user-claim / JWT_USER_CLAIM must not be empty",
        ),
    ];
    for (settings, expected) in cases {
        let err = Validator::new(settings).unwrap_err().to_string();
        assert!(err.starts_with(expected), "{err}");
        assert!(!err.ends_with('.') && !err.contains('\n'), "{err}");
    }
    let debug = format!("{:?}", settings(SECRET, 30, 8192));
    assert!(!debug.contains("a-test-secret"), "{debug}");
}

#[test]
fn a_jwks_needs_a_runtime_and_a_sound_url() {
    let jwks = |url: &str| ValidatorSettings {
        jwks: Some(pulse_auth::JwksSettings::new(url)),
        ..ValidatorSettings::default()
    };
    // No Tokio runtime here: the refresher could not be spawned.
    let err = Validator::new(jwks("http://127.0.0.1:1/jwks.json"))
        .unwrap_err()
        .to_string();
    assert!(err.starts_with("--jwks-url / JWKS_URL"), "{err}");
    for url in ["", "not a url", "ftp://idp/jwks", "/jwks.json"] {
        let err = Validator::new(jwks(url)).unwrap_err().to_string();
        assert!(
            err.starts_with("--jwks-url / JWKS_URL: invalid url"),
            "{url:?}: {err}"
        );
    }
    let zero = ValidatorSettings {
        jwks: Some(pulse_auth::JwksSettings {
            timeout: Duration::ZERO,
            ..pulse_auth::JwksSettings::new("http://127.0.0.1:1/")
        }),
        ..ValidatorSettings::default()
    };
    let err = Validator::new(zero).unwrap_err().to_string();
    assert_eq!(err, "--jwks-timeout / JWKS_TIMEOUT must be more than zero");
}
