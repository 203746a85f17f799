//! Settings: the key flags shared with the gateway and the service's own flags.

use std::{fmt, net::SocketAddr, path::PathBuf, str::FromStr};

use jsonwebtoken::Algorithm;

use crate::{
    error::ConfigError,
    jwks::JwksSettings,
    pem::PublicKey,
    validator::{HMAC_ALGORITHMS, ValidatorSettings},
};

/// Where tokens' keys come from, what their claims must say, and the limits
/// on tokens. Flattened into both `pulse-auth` and `pulse-gateway`, so the two
/// validate alike. Key sources may be combined; at least one is required.
///
/// Each key allows the algorithms of its type: the secret HS256/384/512
/// (narrowed by `--jwt-secret-algorithms`), an RSA key RS256/384/512 and
/// PS256/384/512, an EC P-256 key ES256, a P-384 key ES384, an Ed25519 key
/// EdDSA. A JWKS key with an `alg` allows only that one.
#[derive(clap::Args, Clone)]
pub struct KeyArgs {
    /// HMAC shared secret that tokens may be signed with
    #[arg(
        long = "jwt-secret",
        env = "JWT_SECRET",
        value_name = "SECRET",
        hide_env_values = true
    )]
    pub jwt_secret: Option<String>,
    /// Algorithms allowed for --jwt-secret, comma-separated
    #[arg(
        long = "jwt-secret-algorithms",
        env = "JWT_SECRET_ALGORITHMS",
        value_name = "ALGS",
        value_delimiter = ',',
        default_value = "HS256,HS384,HS512"
    )]
    pub jwt_secret_algorithms: Vec<String>,
    /// PEM public key file (RSA, EC P-256/P-384 or Ed25519); repeat the flag
    /// or separate files with commas for several
    #[arg(
        long = "jwt-public-key",
        env = "JWT_PUBLIC_KEY",
        value_name = "FILE",
        value_delimiter = ','
    )]
    pub jwt_public_key: Vec<PathBuf>,
    /// JWKS URL (http or https) to fetch signing keys from, refreshed in the background
    #[arg(long = "jwks-url", env = "JWKS_URL", value_name = "URL")]
    pub jwks_url: Option<String>,
    /// How often the JWKS is fetched again
    #[arg(
        long = "jwks-refresh-interval",
        env = "JWKS_REFRESH_INTERVAL",
        value_name = "DURATION",
        default_value_t = JwksSettings::DEFAULT_REFRESH_INTERVAL.into()
    )]
    pub jwks_refresh_interval: humantime::Duration,
    /// Least time between two JWKS fetches caused by tokens with an unknown kid
    #[arg(
        long = "jwks-min-refetch-interval",
        env = "JWKS_MIN_REFETCH_INTERVAL",
        value_name = "DURATION",
        default_value_t = JwksSettings::DEFAULT_MIN_REFETCH_INTERVAL.into()
    )]
    pub jwks_min_refetch_interval: humantime::Duration,
    /// How long one JWKS fetch may take
    #[arg(
        long = "jwks-timeout",
        env = "JWKS_TIMEOUT",
        value_name = "DURATION",
        default_value_t = JwksSettings::DEFAULT_TIMEOUT.into()
    )]
    pub jwks_timeout: humantime::Duration,
    /// Accepted iss claim; when set, tokens must carry one of these (comma-separated or repeated)
    #[arg(
        long = "issuer",
        env = "JWT_ISSUER",
        value_name = "ISS",
        value_delimiter = ','
    )]
    pub issuer: Vec<String>,
    /// Accepted aud value; when set, a token's aud must name one of these (comma-separated or repeated)
    #[arg(
        long = "audience",
        env = "JWT_AUDIENCE",
        value_name = "AUD",
        value_delimiter = ','
    )]
    pub audience: Vec<String>,
    /// Claim that holds the user id
    #[arg(
        long = "user-claim",
        env = "JWT_USER_CLAIM",
        value_name = "CLAIM",
        default_value = ValidatorSettings::DEFAULT_USER_CLAIM
    )]
    pub user_claim: String,
    /// Clock skew allowed on a token's exp, nbf and iat (at most 1h)
    #[arg(
        long = "jwt-leeway",
        env = "JWT_LEEWAY",
        value_name = "DURATION",
        default_value_t = ValidatorSettings::DEFAULT_LEEWAY.into()
    )]
    pub jwt_leeway: humantime::Duration,
    /// Longest token accepted, in bytes; longer ones are refused unparsed
    #[arg(
        long = "max-token-bytes",
        env = "MAX_TOKEN_BYTES",
        default_value_t = ValidatorSettings::DEFAULT_MAX_TOKEN_BYTES
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
            .field("jwt_secret_algorithms", &self.jwt_secret_algorithms)
            .field("jwt_public_key", &self.jwt_public_key)
            .field("jwks_url", &self.jwks_url)
            .field(
                "jwks_refresh_interval",
                &self.jwks_refresh_interval.to_string(),
            )
            .field(
                "jwks_min_refetch_interval",
                &self.jwks_min_refetch_interval.to_string(),
            )
            .field("jwks_timeout", &self.jwks_timeout.to_string())
            .field("issuer", &self.issuer)
            .field("audience", &self.audience)
            .field("user_claim", &self.user_claim)
            .field("jwt_leeway", &self.jwt_leeway.to_string())
            .field("max_token_bytes", &self.max_token_bytes)
            .finish()
    }
}

impl KeyArgs {
    /// The validator settings these flags describe, with the public key files
    /// read. [`Validator::new`](crate::Validator::new) checks the rest.
    pub fn validator_settings(&self) -> Result<ValidatorSettings, ConfigError> {
        let secret = match &self.jwt_secret {
            Some(secret) if secret.is_empty() => {
                return Err(ConfigError::EmptyValue {
                    setting: "--jwt-secret / JWT_SECRET",
                });
            }
            secret => secret.as_ref().map(|secret| secret.as_bytes().to_vec()),
        };
        let secret_algorithms = self
            .jwt_secret_algorithms
            .iter()
            .map(|name| {
                Algorithm::from_str(name.trim())
                    .ok()
                    .filter(|alg| HMAC_ALGORITHMS.contains(alg))
                    .ok_or_else(|| ConfigError::SecretAlgorithms {
                        value: format!("{name:?}"),
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let public_keys = self
            .jwt_public_key
            .iter()
            .map(|path| PublicKey::from_pem_file(path))
            .collect::<Result<Vec<_>, _>>()?;
        let jwks = self.jwks_url.as_ref().map(|url| JwksSettings {
            url: url.clone(),
            refresh_interval: self.jwks_refresh_interval.into(),
            min_refetch_interval: self.jwks_min_refetch_interval.into(),
            timeout: self.jwks_timeout.into(),
        });
        let settings = ValidatorSettings {
            secret,
            secret_algorithms,
            public_keys,
            jwks,
            issuers: self.issuer.clone(),
            audiences: self.audience.clone(),
            user_claim: self.user_claim.clone(),
            leeway: self.jwt_leeway.into(),
            max_token_bytes: self.max_token_bytes,
        };
        if settings.secret.is_none() && settings.public_keys.is_empty() && settings.jwks.is_none() {
            return Err(ConfigError::MissingKeySource);
        }
        Ok(settings)
    }

    /// The shared secret, for signing dev tokens; an error when none is set.
    pub fn signing_secret(&self) -> Result<Vec<u8>, ConfigError> {
        match &self.jwt_secret {
            Some(secret) if !secret.is_empty() => Ok(secret.as_bytes().to_vec()),
            _ => Err(ConfigError::MissingSecret),
        }
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
    /// Address `GET /metrics` (Prometheus text) is served on
    #[arg(
        long,
        env = "METRICS_LISTEN",
        value_name = "ADDR",
        default_value = "0.0.0.0:9091"
    )]
    pub metrics_listen: SocketAddr,
    /// Key flags
    #[command(flatten)]
    pub keys: KeyArgs,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Flags {
        #[command(flatten)]
        keys: KeyArgs,
    }

    /// The flags' defaults are the library's: one source for each.
    #[test]
    fn flag_defaults_are_the_library_defaults() {
        let flags = Flags::try_parse_from(["test", "--jwt-secret", "s", "--jwks-url", "http://a"])
            .expect("parses");
        let settings = flags.keys.validator_settings().expect("valid");
        let defaults = ValidatorSettings::default();
        assert_eq!(settings.jwks, Some(JwksSettings::new("http://a")));
        assert_eq!(settings.secret_algorithms, defaults.secret_algorithms);
        assert_eq!(settings.user_claim, defaults.user_claim);
        assert_eq!(settings.leeway, defaults.leeway);
        assert_eq!(settings.max_token_bytes, defaults.max_token_bytes);
        assert_eq!(
            (settings.issuers, settings.audiences),
            (defaults.issuers, defaults.audiences)
        );
    }
}
