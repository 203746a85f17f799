//! The service plumbing that every Pulse binary shares, kept out of the
//! message types so that `pulse-protocol` does no I/O.
//!
//! - [`runtime`]: logging set-up, the shutdown signal, one-line start-up
//!   errors and command-line parsing that exits on a bad setting.
//! - [`health`]: the loop that mirrors a readiness check into
//!   `grpc.health.v1.Health`, with one failure policy for every service.
//! - [`metrics`]: the Prometheus recorder that every `metrics::` macro in
//!   Pulse writes to, and the small HTTP server for `/metrics`.
//!
//! It depends on nothing of Pulse's own, so every crate can use it without a
//! dependency pointing the wrong way.

#![forbid(unsafe_code)]

pub mod health;
pub mod metrics;
pub mod runtime;
