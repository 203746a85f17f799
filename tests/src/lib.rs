//! Support for Pulse's whole-system tests: start the real binaries on
//! `127.0.0.1:0`, read back the ports they bound, and talk to them as clients do.
//!
//! The binaries must be built first (`cargo build --workspace --bins`, which
//! `scripts/test.sh` does).

#![forbid(unsafe_code)]

pub mod churn;
mod client;
mod config;
mod consumer;
pub mod events;
mod grpc;
mod http;
mod proxy;
pub mod raw;
mod service;
mod stack;
pub mod webhook_receiver;

use std::time::Duration;

pub use client::{Client, connect, next_json, token};
pub use config::ConfigFile;
pub use consumer::{
    Consumer, Snapshot, WatchEnd, consume_watch, log_ids, snapshot, snapshot_retrying,
};
pub use grpc::{Grpc, get_user, online_counts, presence_client, watch};
pub use http::{get, post_api, post_api_as, post_json};
pub use proxy::Proxy;
pub use pulse_presence::testing::{RedisServer, unique_namespace};
pub use service::{Service, binary, presence_args, proc_status_kib};
pub use stack::Stack;

/// The shared secret the tests sign tokens with.
pub const SECRET: &str = "e2e-test-secret";

/// The API key [`Service::presence`] accepts, with every permission.
pub const API_KEY: &str = "e2e-test-api-key-0123456789";

/// Polls `condition` until it holds, for at most `limit`.
pub async fn eventually<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
