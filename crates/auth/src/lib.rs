//! `pulse-auth` owns the question "who is this token?": JWT validation (keys,
//! algorithms, claims), as a library the gateway can call in-process and as the
//! `pulse.auth.v1.Auth` gRPC service for when validation lives elsewhere; the
//! gRPC client for that service; the key flags both binaries share; and dev
//! token minting. Tokens are never logged and never appear in an error.
//!
//! - [`Validator`]: the checks, given [`ValidatorSettings`]: a shared secret,
//!   [`PublicKey`]s and a JWKS ([`JwksSettings`]), several at once, each key
//!   allowing only the algorithms of its type.
//! - [`RemoteValidator`]: the same answer over gRPC, refusals mapped back to [`AuthError`].
//! - [`Authenticator`]: either of the two, for a caller that supports both modes.
//! - [`run`]: serves `Auth`, health and reflection on a bound listener.
//! - [`KeyArgs`] and [`ServeArgs`]: the clap flags, validated into settings once at start.

#![forbid(unsafe_code)]

mod authenticator;
mod claims;
mod client;
mod config;
mod error;
mod jwk;
mod jwks;
mod keys;
mod pem;
mod policy;
mod service;
mod validator;

pub use authenticator::Authenticator;
pub use client::RemoteValidator;
pub use config::{KeyArgs, ServeArgs};
pub use error::{AuthError, ConfigError};
pub use jsonwebtoken::Algorithm;
pub use jwks::JwksSettings;
pub use pem::PublicKey;
pub use service::run;
pub use validator::{
    HMAC_ALGORITHMS, Identity, Validator, ValidatorSettings, mint_token, mint_token_with_claims,
};
