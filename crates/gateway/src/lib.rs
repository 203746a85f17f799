//! The WebSocket edge of Pulse.
//!
//! `pulse-gateway` serves `/ws` with hyper and fastwebsockets: it authenticates
//! each socket (a `?token=` or a first `auth` message, within a deadline), runs
//! the per-connection state machine (awaiting auth, live, closing), keeps
//! sockets healthy with heartbeats, tracks every user's connections in the
//! local [`ConnectionManager`], registers them with presence, and cleans up on
//! every kind of end. Validation goes through `pulse-auth` (in-process or over
//! gRPC) and state through `pulse-presence` (Redis or in-memory).

#![forbid(unsafe_code)]

mod admin;
mod admission;
mod channels;
mod commands;
pub mod config;
pub mod connection_manager;
mod cursor;
mod drain;
mod hooks;
// Public only for the `frame` fuzz target (fuzz/); not part of the API.
#[doc(hidden)]
pub mod frame;
mod lease;
mod limits;
mod listener;
pub mod login;
mod mailbox;
pub mod proxy;
mod proxy_protocol;
pub mod readiness;
mod routes;
mod server;
pub mod session;
pub mod settings;
mod shared;
mod socket;
mod telemetry;

pub use config::{Config, ConfigError};
pub use connection_manager::{ConnectionManager, LocalConnection};
pub use drain::DrainReport;
pub use login::DevLogin;
pub use mailbox::{Mailbox, PushError};
pub use proxy::TrustedProxies;
pub use server::{Gateway, run};
pub use settings::Settings;
