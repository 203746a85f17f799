//! Every message shape Pulse speaks, and nothing that does I/O.
//!
//! - [`channel`]: channel names and the publication frame.
//! - [`client`]: the JSON protocol on `/ws`, as serde tagged enums, and the
//!   close codes of the graphql-ws family.
//! - [`command`]: what internal services ask of the instances that hold a
//!   user's connections (send a message, disconnect).
//! - [`event`]: the internal presence events that instances publish to each
//!   other and that `Watch` streams to internal services.
//! - [`proto`]: the prost/tonic code generated from `proto/`, with the file
//!   descriptor set that gRPC reflection serves.
//! - [`status`]: gRPC statuses that carry a machine-readable reason.
//! - [`api_key`]: the interceptor that puts an internal API key on every
//!   gRPC call.
//!
//! The plumbing the binaries share (logging, the shutdown signal, metrics)
//! lives in `pulse-runtime`.

#![forbid(unsafe_code)]

pub mod api_key;
pub mod channel;
pub mod client;
pub mod command;
pub mod event;
pub mod history;
pub mod proto;
pub mod status;

pub use channel::Channel;
pub use client::{
    ChannelMember, ClientMessage, CloseCode, Decoded, ErrorCode, MAX_USER_ID_BYTES, Replayed,
    RequestId, ServerMessage, StreamPosition, Token,
};
pub use command::Command;
pub use event::{EventKind, PresenceEvent};
