//! Every message shape Pulse speaks, and nothing that does I/O.
//!
//! - [`client`]: the JSON protocol on `/ws`, as serde tagged enums, and the
//!   close codes of the graphql-ws family.
//! - [`command`]: what internal services ask of the instances that hold a
//!   user's connections (send a message, disconnect).
//! - [`event`]: the internal presence events that instances publish to each
//!   other and that `Watch` streams to internal services.
//! - [`proto`]: the prost/tonic code generated from `proto/`, with the file
//!   descriptor set that gRPC reflection serves.
//! - [`status`]: gRPC statuses that carry a machine-readable reason.
//! - `runtime` and `metrics` (feature `runtime`): logging set-up, the
//!   shutdown signal and the Prometheus recorder that every binary shares.

#![forbid(unsafe_code)]

pub mod client;
pub mod command;
pub mod event;
#[cfg(feature = "runtime")]
pub mod metrics;
pub mod proto;
#[cfg(feature = "runtime")]
pub mod runtime;
pub mod status;

pub use client::{ClientMessage, CloseCode, ErrorCode, MAX_USER_ID_BYTES, ServerMessage, Token};
pub use command::Command;
pub use event::{EventKind, PresenceEvent};
