//! Token parsing and validation (`Validator::validate`) with a fixed HS256
//! key: any input is an answer, never a panic or a wait; a signature that is
//! not the key's is never accepted; an accepted token names a user.
//!
//! Most random strings die at the first dot, so the input also builds tokens:
//! a header and claims of the fuzzer's choosing, base64url-encoded and then
//! signed with the key (to reach the claim checks) or given a signature of
//! the fuzzer's own (to probe the signature check).

#![no_main]

use std::{
    future::Future,
    pin::pin,
    sync::LazyLock,
    task::{Context, Poll, Waker},
    time::{SystemTime, UNIX_EPOCH},
};

use arbitrary::Arbitrary;
use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm as JwtAlgorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use pulse_auth::{Algorithm, AuthError, Identity, Validator, ValidatorSettings};
use serde_json::{Map, Value, json};

const KEY: &[u8] = b"pulse-fuzz-hs256-key-of-32-bytes";

static VALIDATOR: LazyLock<Validator> = LazyLock::new(|| {
    let mut settings = ValidatorSettings::with_secret(KEY);
    settings.secret_algorithms = vec![Algorithm::HS256];
    Validator::new(settings).expect("a valid validator")
});

#[derive(Debug, Arbitrary)]
enum Input {
    /// Any string as the token.
    Raw(String),
    /// Header and claims as raw JSON text, signed with the key.
    SignedText { header: String, claims: String },
    /// A well-formed header and claims, signed with the key.
    Signed(Claims),
    /// A well-formed header and claims with the fuzzer's signature.
    Forged { claims: Claims, signature: Vec<u8> },
}

#[derive(Debug, Arbitrary)]
struct Claims {
    alg: u8,
    kid: Option<String>,
    sub: Option<Subject>,
    /// Seconds from now.
    exp: Option<i32>,
    nbf: Option<i32>,
    iat: Option<i32>,
    extra: Vec<(String, String)>,
}

#[derive(Debug, Arbitrary)]
enum Subject {
    Text(String),
    Number(i64),
    Null,
}

const ALGS: &[&str] = &[
    "HS256", "HS384", "HS512", "none", "RS256", "ES256", "EdDSA", "hs256", "",
];

impl Claims {
    fn header(&self) -> String {
        let mut header = json!({ "alg": ALGS[usize::from(self.alg) % ALGS.len()], "typ": "JWT" });
        if let Some(kid) = &self.kid {
            header["kid"] = json!(kid);
        }
        header.to_string()
    }

    fn claims(&self) -> String {
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .expect("after the epoch")
            .as_secs() as i64;
        let mut claims = Map::new();
        for (name, value) in &self.extra {
            claims.insert(name.clone(), json!(value));
        }
        match &self.sub {
            Some(Subject::Text(sub)) => claims.insert("sub".into(), json!(sub)),
            Some(Subject::Number(sub)) => claims.insert("sub".into(), json!(sub)),
            Some(Subject::Null) => claims.insert("sub".into(), Value::Null),
            None => None,
        };
        for (name, offset) in [("exp", self.exp), ("nbf", self.nbf), ("iat", self.iat)] {
            if let Some(offset) = offset {
                claims.insert(name.into(), json!(now + i64::from(offset)));
            }
        }
        Value::Object(claims).to_string()
    }
}

/// `header.claims`, base64url-encoded.
fn signing_input(header: &str, claims: &str) -> String {
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    )
}

/// The key's HS256 signature of `message`, base64url-encoded.
fn sign(message: &str) -> String {
    jsonwebtoken::crypto::sign(
        message.as_bytes(),
        &EncodingKey::from_secret(KEY),
        JwtAlgorithm::HS256,
    )
    .expect("HS256 signs anything")
}

/// Without a JWKS, validation never waits: one poll must finish it.
fn validate(token: &str) -> Result<Identity, AuthError> {
    let mut future = pin!(VALIDATOR.validate(token));
    match future
        .as_mut()
        .poll(&mut Context::from_waker(Waker::noop()))
    {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("validation without a JWKS waited"),
    }
}

fn check_identity(result: &Result<Identity, AuthError>) {
    if let Ok(identity) = result {
        assert!(
            !identity.user_id.is_empty(),
            "an accepted token names a user"
        );
        assert_eq!(
            identity.claims.get("sub").and_then(Value::as_str),
            Some(identity.user_id.as_str())
        );
    }
}

fuzz_target!(|input: Input| {
    match input {
        Input::Raw(token) => check_identity(&validate(&token)),
        Input::SignedText { header, claims } => {
            let message = signing_input(&header, &claims);
            let token = format!("{message}.{}", sign(&message));
            check_identity(&validate(&token));
        }
        Input::Signed(claims) => {
            let message = signing_input(&claims.header(), &claims.claims());
            let token = format!("{message}.{}", sign(&message));
            check_identity(&validate(&token));
        }
        Input::Forged { claims, signature } => {
            let message = signing_input(&claims.header(), &claims.claims());
            let genuine = URL_SAFE_NO_PAD
                .decode(sign(&message))
                .expect("our own signature decodes");
            let token = format!("{message}.{}", URL_SAFE_NO_PAD.encode(&signature));
            let result = validate(&token);
            check_identity(&result);
            if signature != genuine {
                assert!(result.is_err(), "a forged signature was accepted");
            }
        }
    }
});
