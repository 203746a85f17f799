//! The key flags: names, environment variables, defaults, and the one-line
//! errors that stop a binary at start.

use std::{path::PathBuf, time::Duration};

use clap::{CommandFactory, Parser};
use jsonwebtoken::Algorithm;
use pulse_auth::{JwksSettings, KeyArgs, ServeArgs};

#[derive(Parser, Debug)]
struct Cli {
    #[command(flatten)]
    serve: ServeArgs,
}

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/keys")
        .join(name)
}

// Built directly rather than parsed, so that the environment of the test run
// (a JWT_SECRET, say) cannot change the outcome.
fn keys(secret: Option<&str>) -> KeyArgs {
    KeyArgs {
        jwt_secret: secret.map(str::to_owned),
        jwt_secret_algorithms: vec!["HS256".into(), "HS384".into(), "HS512".into()],
        jwt_public_key: Vec::new(),
        jwks_url: None,
        jwks_refresh_interval: Duration::from_secs(300).into(),
        jwks_min_refetch_interval: Duration::from_secs(30).into(),
        jwks_timeout: Duration::from_secs(5).into(),
        issuer: Vec::new(),
        audience: Vec::new(),
        user_claim: "sub".into(),
        jwt_leeway: Duration::from_secs(30).into(),
        max_token_bytes: 8192,
    }
}

#[test]
fn flags_env_names_and_defaults_match_the_readme() {
    let command = Cli::command();
    let arg = |id: &str| {
        command
            .get_arguments()
            .find(|arg| arg.get_id() == id)
            .unwrap_or_else(|| panic!("no argument {id}"))
    };
    let expect: &[(&str, &str, &str, &[&str])] = &[
        ("listen", "listen", "LISTEN_ADDR", &["0.0.0.0:50051"]),
        ("jwt_secret", "jwt-secret", "JWT_SECRET", &[]),
        (
            "jwt_secret_algorithms",
            "jwt-secret-algorithms",
            "JWT_SECRET_ALGORITHMS",
            &["HS256,HS384,HS512"],
        ),
        ("jwt_public_key", "jwt-public-key", "JWT_PUBLIC_KEY", &[]),
        ("jwks_url", "jwks-url", "JWKS_URL", &[]),
        (
            "jwks_refresh_interval",
            "jwks-refresh-interval",
            "JWKS_REFRESH_INTERVAL",
            &["5m"],
        ),
        (
            "jwks_min_refetch_interval",
            "jwks-min-refetch-interval",
            "JWKS_MIN_REFETCH_INTERVAL",
            &["30s"],
        ),
        ("jwks_timeout", "jwks-timeout", "JWKS_TIMEOUT", &["5s"]),
        ("issuer", "issuer", "JWT_ISSUER", &[]),
        ("audience", "audience", "JWT_AUDIENCE", &[]),
        ("user_claim", "user-claim", "JWT_USER_CLAIM", &["sub"]),
        ("jwt_leeway", "jwt-leeway", "JWT_LEEWAY", &["30s"]),
        (
            "max_token_bytes",
            "max-token-bytes",
            "MAX_TOKEN_BYTES",
            &["8192"],
        ),
    ];
    for (id, long, env, default) in expect {
        let arg = arg(id);
        assert_eq!(arg.get_long(), Some(*long));
        assert_eq!(arg.get_env().and_then(|env| env.to_str()), Some(*env));
        let defaults: Vec<_> = arg
            .get_default_values()
            .iter()
            .map(|d| d.to_str().unwrap())
            .collect();
        assert_eq!(defaults, *default, "{id}");
    }
    // `hide_env_values` keeps JWT_SECRET's value out of `--help`.
    assert!(arg("jwt_secret").is_hide_env_values_set());
}

#[test]
fn lists_split_on_commas_and_repeat() {
    let cli = Cli::try_parse_from([
        "pulse-auth",
        "--jwt-secret-algorithms",
        "HS256,HS512",
        "--jwt-public-key",
        "a.pem,b.pem",
        "--jwt-public-key",
        "c.pem",
        "--audience",
        "pulse,billing",
        "--issuer",
        "https://a/",
    ])
    .unwrap();
    let keys = cli.serve.keys;
    assert_eq!(keys.jwt_secret_algorithms, ["HS256", "HS512"]);
    assert_eq!(
        keys.jwt_public_key,
        ["a.pem", "b.pem", "c.pem"].map(PathBuf::from)
    );
    assert_eq!(keys.audience, ["pulse", "billing"]);
    assert_eq!(keys.issuer, ["https://a/"]);
}

#[test]
fn debug_never_shows_the_secret() {
    let keys = keys(Some("hunter2-very-secret"));
    let serve = ServeArgs {
        listen: "127.0.0.1:1".parse().unwrap(),
        metrics_listen: "127.0.0.1:2".parse().unwrap(),
        keys: keys.clone(),
    };
    for text in [
        format!("{keys:?}"),
        format!("{serve:?}"),
        format!("{serve:#?}"),
    ] {
        assert!(!text.contains("hunter2"), "{text}");
        assert!(text.contains("<redacted>"), "{text}");
    }
    let settings = keys.validator_settings().unwrap();
    assert!(!format!("{settings:?}").contains("hunter2"));
}

#[test]
fn no_key_source_names_every_key_flag_on_one_line() {
    let err = keys(None).validator_settings().unwrap_err().to_string();
    assert!(err.starts_with("--jwt-secret / JWT_SECRET"), "{err}");
    assert!(err.contains("--jwt-public-key / JWT_PUBLIC_KEY"), "{err}");
    assert!(err.contains("--jwks-url / JWKS_URL"), "{err}");
    assert!(!err.ends_with('.') && !err.contains('\n'), "{err}");
    let err = keys(Some("")).validator_settings().unwrap_err().to_string();
    assert_eq!(err, "--jwt-secret / JWT_SECRET must not be empty");
}

#[test]
fn bad_values_name_their_flag() {
    let mut bad_algs = keys(Some("s"));
    bad_algs.jwt_secret_algorithms = vec!["HS256".into(), "RS256".into()];
    let mut bad_key = keys(None);
    bad_key.jwt_public_key = vec![fixture("rsa_1024.pem")];
    let mut missing_key = keys(None);
    missing_key.jwt_public_key = vec![PathBuf::from("/nonexistent.pem")];
    for (args, expected) in [
        (
            bad_algs,
            "--jwt-secret-algorithms / JWT_SECRET_ALGORITHMS: \"RS256\"",
        ),
        (bad_key, "--jwt-public-key / JWT_PUBLIC_KEY: "),
        (
            missing_key,
            "--jwt-public-key / JWT_PUBLIC_KEY: /nonexistent.pem: cannot read",
        ),
    ] {
        let err = args.validator_settings().unwrap_err().to_string();
        assert!(err.starts_with(expected), "{err}");
        assert!(!err.contains('\n'), "{err}");
    }
}

#[test]
fn good_flags_become_settings() {
    let mut args = keys(Some("s"));
    args.jwt_secret_algorithms = vec!["HS512".into()];
    args.jwt_public_key = vec![fixture("rsa.pem"), fixture("ed25519.pem")];
    args.jwks_url = Some("https://idp.example.test/.well-known/jwks.json".into());
    args.jwks_timeout = Duration::from_secs(2).into();
    args.issuer = vec!["https://idp.example.test/".into()];
    args.audience = vec!["pulse".into()];
    args.user_claim = "uid".into();
    args.jwt_leeway = Duration::from_millis(1500).into();
    args.max_token_bytes = 100;
    let settings = args.validator_settings().unwrap();
    assert_eq!(settings.secret.as_deref(), Some(&b"s"[..]));
    assert_eq!(settings.secret_algorithms, [Algorithm::HS512]);
    let kinds: Vec<_> = settings
        .public_keys
        .iter()
        .map(|k| k.kind().to_owned())
        .collect();
    assert_eq!(kinds, ["RSA 2048", "Ed25519"]);
    assert_eq!(
        settings.jwks,
        Some(JwksSettings {
            timeout: Duration::from_secs(2),
            ..JwksSettings::new("https://idp.example.test/.well-known/jwks.json")
        })
    );
    assert_eq!(settings.issuers, ["https://idp.example.test/"]);
    assert_eq!(settings.audiences, ["pulse"]);
    assert_eq!(settings.user_claim, "uid");
    assert_eq!(settings.leeway, Duration::from_millis(1500));
    assert_eq!(settings.max_token_bytes, 100);
}

#[test]
fn only_a_secret_signs() {
    assert_eq!(keys(Some("s")).signing_secret().unwrap(), b"s");
    for secret in [None, Some("")] {
        let err = keys(secret).signing_secret().unwrap_err().to_string();
        assert!(err.starts_with("--jwt-secret / JWT_SECRET"), "{err}");
    }
}
