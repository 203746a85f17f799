//! Settings: the key flags shared with the gateway, the service's own flags,
//! and the one error type that names whichever setting is wrong.

use std::{fmt, net::SocketAddr};

use crate::validator::{MAX_LEEWAY, ValidatorSettings};

/// Where tokens' keys come from and the limits on tokens. Flattened into both
/// `pulse-auth` and `pulse-gateway`, so the two validate alike.
#[derive(clap::Args, Clone)]
pub struct KeyArgs {
    /// HS256 shared secret that tokens are signed with (required)
    #[arg(
        long = "jwt-secret",
        env = "JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Clock skew allowed on a token's exp and nbf (at most 1h)
    #[arg(
        long = "jwt-leeway",
        env = "JWT_LEEWAY",
        value_name = "DURATION",
        default_value = "30s"
    )]
    pub jwt_leeway: humantime::Duration,
    /// Longest token accepted, in bytes; longer ones are refused unparsed
    #[arg(
        long = "max-token-bytes",
        env = "MAX_TOKEN_BYTES",
        default_value_t = 8192
    )]
    pub max_token_bytes: usize,
}

impl fmt::Debug for KeyArgs {
    // By hand, so that the secret never reaches a log line or a panic message.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyArgs")
            .field(
                "jwt_secret",
                &self.jwt_secret.as_ref().map(|_| "<redacted>"),
            )
            .field("jwt_leeway", &self.jwt_leeway.to_string())
            .field("max_token_bytes", &self.max_token_bytes)
            .finish()
    }
}

impl KeyArgs {
    /// The validator settings these flags describe; an absent or empty secret is an error.
    pub fn validator_settings(&self) -> Result<ValidatorSettings, ConfigError> {
        let secret = match &self.jwt_secret {
            Some(secret) if !secret.is_empty() => secret.as_bytes().to_vec(),
            _ => return Err(ConfigError::MissingSecret),
        };
        if self.max_token_bytes == 0 {
            return Err(ConfigError::MaxTokenBytesZero);
        }
        let leeway = *self.jwt_leeway;
        if leeway > MAX_LEEWAY {
            return Err(ConfigError::LeewayTooLarge {
                max: humantime::format_duration(MAX_LEEWAY).to_string(),
            });
        }
        Ok(ValidatorSettings {
            secret,
            leeway,
            max_token_bytes: self.max_token_bytes,
        })
    }
}

/// The flags of `pulse-auth` when it serves.
#[derive(clap::Args, Debug, Clone)]
pub struct ServeArgs {
    /// Address the gRPC server listens on
    #[arg(
        long,
        env = "LISTEN_ADDR",
        value_name = "ADDR",
        default_value = "0.0.0.0:50051"
    )]
    pub listen: SocketAddr,
    /// Key flags
    #[command(flatten)]
    pub keys: KeyArgs,
}

/// A setting that stops `pulse-auth` (or a caller of this library) at start.
/// Each message is one line that names the setting.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// No key source was given.
    #[error(
        "--jwt-secret / JWT_SECRET is required: refusing to start without a key to check tokens against"
    )]
    MissingSecret,
    /// The token size limit is zero.
    #[error("--max-token-bytes / MAX_TOKEN_BYTES must be at least 1")]
    MaxTokenBytesZero,
    /// The leeway is beyond what any clock skew explains.
    #[error("--jwt-leeway / JWT_LEEWAY must be at most {max}")]
    LeewayTooLarge {
        /// The largest leeway accepted, in human form.
        max: String,
    },
    /// The listen address could not be bound.
    #[error("--listen / LISTEN_ADDR: cannot listen on {addr}: {source}")]
    Bind {
        /// The address asked for.
        addr: SocketAddr,
        /// Why binding failed.
        source: std::io::Error,
    },
    /// The auth service URL is not an `http://host:port` URL.
    #[error("--auth-url / AUTH_URL: invalid url {url:?}: {reason}")]
    AuthUrl {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The request timeout for the auth service is zero.
    #[error("--auth-timeout / AUTH_TIMEOUT must be more than zero")]
    AuthTimeoutZero,
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use clap::{CommandFactory, Parser};

    use super::*;

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    // Built directly rather than parsed, so that the environment of the test
    // run (a JWT_SECRET, say) cannot change the outcome.
    fn keys(secret: Option<&str>, leeway: Duration, max_token_bytes: usize) -> KeyArgs {
        KeyArgs {
            jwt_secret: secret.map(str::to_owned),
            jwt_leeway: leeway.into(),
            max_token_bytes,
        }
    }

    #[test]
    fn debug_never_shows_the_secret() {
        let keys = keys(Some("hunter2-very-secret"), Duration::from_secs(30), 8192);
        let serve = ServeArgs {
            listen: "127.0.0.1:1".parse().unwrap(),
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
    fn flags_env_names_and_defaults_match_the_contract() {
        let command = Cli::command();
        let arg = |id: &str| {
            command
                .get_arguments()
                .find(|arg| arg.get_id() == id)
                .unwrap()
        };
        let expect = [
            ("listen", "listen", "LISTEN_ADDR", Some("0.0.0.0:50051")),
            ("jwt_secret", "jwt-secret", "JWT_SECRET", None),
            ("jwt_leeway", "jwt-leeway", "JWT_LEEWAY", Some("30s")),
            (
                "max_token_bytes",
                "max-token-bytes",
                "MAX_TOKEN_BYTES",
                Some("8192"),
            ),
        ];
        for (id, long, env, default) in expect {
            let arg = arg(id);
            assert_eq!(arg.get_long(), Some(long));
            assert_eq!(arg.get_env().and_then(|env| env.to_str()), Some(env));
            let defaults = arg.get_default_values();
            assert_eq!(defaults.first().and_then(|d| d.to_str()), default, "{id}");
        }
        // `hide_env_values` keeps JWT_SECRET's value out of `--help`.
        assert!(arg("jwt_secret").is_hide_env_values_set());
    }

    #[test]
    fn a_missing_or_empty_secret_names_the_flag() {
        for secret in [None, Some("")] {
            let err = keys(secret, Duration::from_secs(30), 8192)
                .validator_settings()
                .unwrap_err();
            let text = err.to_string();
            assert!(text.starts_with("--jwt-secret / JWT_SECRET"), "{text}");
            assert!(!text.ends_with('.') && !text.contains('\n'), "{text}");
        }
    }

    #[test]
    fn bad_limits_name_their_flag() {
        let err = keys(Some("s"), Duration::from_secs(30), 0)
            .validator_settings()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--max-token-bytes / MAX_TOKEN_BYTES must be at least 1"
        );
        let err = keys(Some("s"), Duration::from_secs(7200), 8192)
            .validator_settings()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "--jwt-leeway / JWT_LEEWAY must be at most 1h"
        );
    }

    #[test]
    fn good_flags_become_settings() {
        let settings = keys(Some("s"), Duration::from_millis(1500), 100)
            .validator_settings()
            .unwrap();
        assert_eq!(settings.secret, b"s");
        assert_eq!(settings.leeway, Duration::from_millis(1500));
        assert_eq!(settings.max_token_bytes, 100);
    }
}
