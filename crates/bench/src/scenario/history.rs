//! The history scenarios (issue 13), and what they share: publication data
//! of an exact size, the gRPC publisher that reads the offset an answer
//! carries, a request read to its answer, and the Redis key names of a
//! channel's history.
//!
//! `publish` times publish calls at a fixed rate (with history, without,
//! or Redis alone as the floor); `recover` times a reconnection that
//! recovers the publications it missed beside a plain subscribe;
//! `memory` reads what a stored publication costs Redis.

use std::{net::SocketAddr, time::Duration};

use bytes::Bytes;
use pulse_protocol::{
    api_key::BearerKey,
    proto::channels::v1::{PublishRequest, PublishResponse, channels_client::ChannelsClient},
};
use tokio::time::Instant;
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use super::{bearer, channels::ANSWER_TIMEOUT};
use crate::client::Conn;

pub mod memory;
pub mod publish;
pub mod recover;

/// A `Channels` client of `pulse-presence`, with its API key.
pub type ChannelsApi = ChannelsClient<InterceptedService<Channel, BearerKey>>;

/// A `Channels` client on one HTTP/2 connection to `presence`.
pub async fn channels_api(presence: SocketAddr, api_key: &str) -> anyhow::Result<ChannelsApi> {
    let channel = Channel::from_shared(format!("http://{presence}"))?
        .connect()
        .await?;
    Ok(ChannelsClient::with_interceptor(channel, bearer(api_key)?))
}

/// Publishes `data` on `channel` and returns the answer; the error is a
/// short reason.
pub async fn publish_answer(
    api: &ChannelsApi,
    channel: String,
    data: String,
) -> Result<PublishResponse, String> {
    publish_answer_once(api, channel, data, None).await
}

/// [`publish_answer`] with an idempotency key, when there is one.
pub async fn publish_answer_once(
    api: &ChannelsApi,
    channel: String,
    data: String,
    idempotency_key: Option<String>,
) -> Result<PublishResponse, String> {
    api.clone()
        .publish(PublishRequest {
            channel,
            data_json: data,
            idempotency_key: idempotency_key.unwrap_or_default(),
        })
        .await
        .map(tonic::Response::into_inner)
        .map_err(|status| format!("{:?}: {}", status.code(), status.message()))
}

/// Publication data of exactly `bytes` bytes of JSON text (or the least it
/// can be, when `bytes` is smaller): `{"seq":N,"t":T,"p":"xx..."}`.
pub fn padded_data(seq: u64, at_micros: u64, bytes: usize) -> String {
    let mut data = format!("{{\"seq\":{seq},\"t\":{at_micros},\"p\":\"");
    // What follows the padding: `"}`.
    let pad = bytes.saturating_sub(data.len() + 2);
    data.extend(std::iter::repeat_n('x', pad));
    data.push_str("\"}");
    data
}

/// The key of `channel`'s history (a list) under `namespace`:
/// `<ns>:{b<k>}:history:<channel>`, `k` the channel's bucket (ARCHITECTURE.md,
/// "Redis model").
pub fn history_key(namespace: &str, channel: &str) -> String {
    bucket_key(namespace, channel, "history")
}

/// The key of `channel`'s stream metadata (epoch, last offset).
pub fn meta_key(namespace: &str, channel: &str) -> String {
    bucket_key(namespace, channel, "meta")
}

/// The sharded channel that carries `channel`'s publications.
pub fn publications_key(namespace: &str, channel: &str) -> String {
    bucket_key(namespace, channel, "pub")
}

fn bucket_key(namespace: &str, channel: &str, kind: &str) -> String {
    format!(
        "{namespace}:{{b{}}}:{kind}:{channel}",
        pulse_presence::channel_bucket(channel)
    )
}

/// Sends `request` and reads until the answer with `id` (`subscribed` or
/// `error`), skipping anything else. `Ok` with the round trip and the
/// answer's text for `subscribed`; `Err` with the error's code, or why no
/// answer came.
pub async fn request(conn: &mut Conn, id: u64, request: &str) -> Result<(Duration, Bytes), String> {
    let sent = Instant::now();
    conn.send_text(request)
        .await
        .map_err(|_| "send failed".to_owned())?;
    let answer = async {
        loop {
            let text = match conn.next_text().await {
                Ok(Some(text)) => text,
                Ok(None) => return Err("closed".to_owned()),
                Err(_) => return Err("read failed".to_owned()),
            };
            match super::channels::answer_to(&text, id) {
                Some(Ok(())) => return Ok((sent.elapsed(), text)),
                Some(Err(code)) => return Err(code),
                None => continue,
            }
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .unwrap_or_else(|_| Err("no answer".to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_has_the_size_asked_for() {
        for bytes in [100, 1024] {
            for seq in [0, 7, 123_456_789] {
                let data = padded_data(seq, 9_876_543_210, bytes);
                assert_eq!(data.len(), bytes, "{data}");
                let value: serde_json::Value = serde_json::from_str(&data).unwrap();
                assert_eq!(value["seq"], seq);
            }
        }
        // Too small to pad: the least it can be.
        assert_eq!(padded_data(1, 2, 3), r#"{"seq":1,"t":2,"p":""}"#);
    }

    #[test]
    fn keys_follow_the_redis_model() {
        let bucket = pulse_presence::channel_bucket("room:a");
        assert_eq!(
            history_key("ns", "room:a"),
            format!("ns:{{b{bucket}}}:history:room:a")
        );
        assert_eq!(
            meta_key("ns", "room:a"),
            format!("ns:{{b{bucket}}}:meta:room:a")
        );
        assert_eq!(
            publications_key("ns", "room:a"),
            format!("ns:{{b{bucket}}}:pub:room:a")
        );
    }
}
