//! Garbage protobuf at the gRPC services: message bodies no decoder accepts,
//! and random bytes, inside valid HTTP/2 and gRPC framing, at every method of
//! `pulse-auth` and `pulse-presence`; and bytes that are not HTTP/2 at all.

use std::time::Duration;

use bytes::{Buf, BufMut};
use pulse_e2e::{
    raw::{RawSocket, junk},
    *,
};
use pulse_protocol::proto::{
    auth::v1::{ValidateRequest, auth_client::AuthClient},
    presence::v1::{CountOnlineRequest, presence_client::PresenceClient},
};
use tonic::{
    Code, Status,
    codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder},
    codegen::http::uri::PathAndQuery,
    transport::Channel,
};

/// A gRPC codec that sends and receives raw bytes, so the message body can
/// be anything while the HTTP/2 and gRPC framing around it are valid.
#[derive(Debug, Clone, Copy, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Vec<u8>;
    type Decode = Vec<u8>;
    type Encoder = Self;
    type Decoder = Self;

    fn encoder(&mut self) -> Self {
        Self
    }

    fn decoder(&mut self) -> Self {
        Self
    }
}

impl Encoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn encode(&mut self, item: Vec<u8>, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put_slice(&item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Vec<u8>;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Vec<u8>>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining()).to_vec()))
    }
}

/// Calls `path` with `body` as the message; the status, or OK.
async fn raw_call(channel: &Channel, method: &'static str, body: Vec<u8>, streaming: bool) -> Code {
    let mut grpc = tonic::client::Grpc::new(channel.clone());
    grpc.ready().await.expect("channel ready");
    // The key pulse-presence asks for (pulse-auth ignores it), so that the
    // body reaches the decoder.
    let mut request = tonic::Request::new(body);
    request.metadata_mut().insert(
        "authorization",
        format!("Bearer {}", pulse_e2e::API_KEY).parse().unwrap(),
    );
    let path = PathAndQuery::from_static(method);
    let call = async {
        if streaming {
            let mut stream = grpc
                .server_streaming(request, path, RawCodec)
                .await?
                .into_inner();
            stream.message().await.map(|_| ())
        } else {
            grpc.unary(request, path, RawCodec).await.map(|_| ())
        }
    };
    match tokio::time::timeout(Duration::from_secs(10), call).await {
        Ok(Ok(())) => Code::Ok,
        Ok(Err(status)) => status.code(),
        Err(_) => panic!("{method} neither answered nor failed within 10 s"),
    }
}

/// Message bodies that no protobuf decoder accepts, whatever the message type.
fn garbage_protobuf() -> Vec<(&'static str, Vec<u8>)> {
    vec![
        ("wire type 7", vec![0x0f]),
        (
            "a varint of 11 bytes",
            [&[0x08][..], &[0xff; 10], &[0x01]].concat(),
        ),
        ("a length past the end", vec![0x0a, 0x7f, b'a']),
        ("field number 0", vec![0x00, 0x01]),
        ("a truncated tag", vec![0x80]),
    ]
}

#[tokio::test]
async fn garbage_protobuf_gets_a_grpc_status() {
    let redis = RedisServer::start().await;
    let auth = Service::auth().await;
    let presence = Service::presence(redis.url(), &unique_namespace(), &[]).await;
    let auth_channel = Channel::from_shared(auth.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let presence_channel = Channel::from_shared(presence.grpc_url())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let methods: [(&Channel, &'static str, bool); 9] = [
        (&auth_channel, "/pulse.auth.v1.Auth/Validate", false),
        (&auth_channel, "/grpc.health.v1.Health/Check", false),
        (
            &presence_channel,
            "/pulse.presence.v1.Presence/GetUser",
            false,
        ),
        (
            &presence_channel,
            "/pulse.presence.v1.Presence/GetUsers",
            false,
        ),
        (
            &presence_channel,
            "/pulse.presence.v1.Presence/CountOnline",
            false,
        ),
        (&presence_channel, "/pulse.presence.v1.Presence/Send", false),
        (
            &presence_channel,
            "/pulse.presence.v1.Presence/Disconnect",
            false,
        ),
        (&presence_channel, "/pulse.presence.v1.Presence/Watch", true),
        (&presence_channel, "/grpc.health.v1.Health/Check", false),
    ];
    for (channel, path, streaming) in methods {
        for (name, body) in garbage_protobuf() {
            let code = raw_call(channel, path, body, streaming).await;
            // tonic answers a body it cannot decode with INTERNAL.
            assert_eq!(code, Code::Internal, "{path} with {name}");
        }
        // Random bytes: whatever they decode to, the answer is a status.
        for seed in 1..=8 {
            let code = raw_call(channel, path, junk(seed, 200), streaming).await;
            assert_ne!(code, Code::Unknown, "{path} with junk seed {seed}");
        }
    }
    // Not HTTP/2 at all, at both ports: the connection ends, the server lives.
    for service in [&auth, &presence] {
        for bytes in [
            junk(99, 2048),
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ] {
            let mut socket = RawSocket::connect(service.addr).await;
            socket.send(&bytes).await;
            socket.expect_eof().await;
        }
    }
    // Both still answer real calls.
    let identity = AuthClient::new(auth_channel)
        .validate(ValidateRequest {
            token: token("after-junk"),
        })
        .await
        .expect("a valid token validates")
        .into_inner();
    assert_eq!(identity.user_id, "after-junk");
    let key = pulse_protocol::api_key::BearerKey::new(pulse_e2e::API_KEY).unwrap();
    PresenceClient::with_interceptor(presence_channel, key)
        .count_online(CountOnlineRequest {})
        .await
        .expect("presence answers");
}
