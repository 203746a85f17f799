//! Junk at the door: malformed frames, bad UTF-8, oversized messages,
//! half-open TCP, garbage HTTP and garbage protobuf, against the real
//! binaries. Every answer is a close code or an HTTP or gRPC status, and
//! afterwards the process is healthy and serves a normal client.
//!
//! Frames and requests are written by hand over TCP (`pulse_e2e::raw`),
//! since a client library refuses to send most of this.

use std::{net::SocketAddr, time::Duration};

use futures_util::SinkExt;
use pulse_e2e::{
    raw::{
        BINARY, CLOSE, CONTINUATION, FIN, Length, PING, PONG, RawSocket, TEXT, close_payload,
        frame, frame_with, junk, upgrade_request,
    },
    *,
};
use tokio_tungstenite::tungstenite::Message;

// Garbage protobuf at the gRPC services.
#[path = "junk/grpc.rs"]
mod grpc;

/// The gateway's message limit in these tests (its default).
const MAX_MESSAGE: usize = 64 * 1024;

async fn gateway(extra: &[&str]) -> Service {
    let mut args = vec!["--listen", "127.0.0.1:0", "--jwt-secret", SECRET];
    args.extend_from_slice(extra);
    Service::start("pulse-gateway", &args).await
}

/// `/healthz` is 200 and a normal client connects, gets `connected` and a pong.
async fn assert_serving(gateway: &Service) {
    assert_eq!(http_get(gateway.addr, "/healthz").await, Some(200));
    let mut client = connect(gateway.addr, &format!("?token={}", token("after-junk"))).await;
    assert_eq!(next_json(&mut client).await["type"], "connected");
    client
        .send(Message::text(r#"{"type":"ping","id":"still-here"}"#))
        .await
        .unwrap();
    let pong = next_json(&mut client).await;
    assert_eq!(
        (&pong["type"], &pong["id"]),
        (&"pong".into(), &"still-here".into())
    );
}

async fn http_get(addr: SocketAddr, path: &str) -> Option<u16> {
    let mut socket = RawSocket::connect(addr).await;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    socket.send(request.as_bytes()).await;
    socket.response_head().await.map(|(status, _)| status)
}

/// A live socket: upgraded with a token, `connected` read.
async fn live(addr: SocketAddr) -> RawSocket {
    let mut socket = RawSocket::upgrade(addr, &format!("/ws?token={}", token("junk"))).await;
    let connected = socket.read_frame().await.expect("connected");
    assert_eq!(connected.opcode, TEXT);
    assert!(String::from_utf8_lossy(&connected.payload).contains(r#""type":"connected""#));
    socket
}

/// A socket still awaiting its `auth` message.
async fn unauthenticated(addr: SocketAddr) -> RawSocket {
    RawSocket::upgrade(addr, "/ws").await
}

/// Sends `bytes` on a fresh socket (live or awaiting auth) and returns the close code.
async fn close_code_for(addr: SocketAddr, authenticated: bool, bytes: &[u8]) -> u16 {
    let mut socket = match authenticated {
        true => live(addr).await,
        false => unauthenticated(addr).await,
    };
    socket.send(bytes).await;
    let closed = socket.expect_close().await;
    answer_close(&mut socket, closed.code).await;
    closed.code
}

/// Completes the closing handshake as a client should (echoing the code),
/// and sees the server end the transport.
async fn answer_close(socket: &mut RawSocket, code: u16) {
    let payload = match code {
        1005 => Vec::new(),
        code => close_payload(code, b""),
    };
    socket.send(&frame(FIN | CLOSE, &payload)).await;
    socket.expect_eof().await;
}

/// Framing violations, each with the code the RFC (or Pulse's limits) asks for.
fn malformed_frames() -> Vec<(String, Vec<u8>, u16)> {
    let mut cases = Vec::new();
    for opcode in (0x3..=0x7).chain(0xB..=0xF) {
        cases.push((
            format!("reserved opcode {opcode:#x}"),
            frame(FIN | opcode, b"x"),
            1002,
        ));
    }
    for (bit, name) in [(0x40, "RSV1"), (0x20, "RSV2"), (0x10, "RSV3")] {
        let bytes = frame(FIN | bit | TEXT, br#"{"type":"ping"}"#);
        cases.push((format!("{name} set"), bytes, 1002));
    }
    // Below the range, the three codes an endpoint must never send, and
    // beyond the registered range.
    for code in [999, 1005, 1006, 1015, 5000] {
        let bytes = frame(FIN | CLOSE, &close_payload(code, b""));
        cases.push((format!("close code {code}"), bytes, 1002));
    }
    let more = [
        ("fragmented ping", frame(PING, b"a"), 1002),
        ("ping of 126 bytes", frame(FIN | PING, &[b'p'; 126]), 1002),
        ("pong of 126 bytes", frame(FIN | PONG, &[b'p'; 126]), 1002),
        (
            "continuation without a start",
            frame(FIN | CONTINUATION, b"x"),
            1002,
        ),
        (
            "a new message inside a fragmented one",
            [frame(TEXT, b"{"), frame(FIN | TEXT, b"}")].concat(),
            1002,
        ),
        (
            "close with a one-byte payload",
            frame(FIN | CLOSE, &[0x03]),
            1002,
        ),
        (
            "close reason that is not UTF-8",
            frame(FIN | CLOSE, &close_payload(1000, &[0xce, 0xba, 0xff])),
            1007,
        ),
        // Autobahn 7.3.6, which a bare fastwebsockets echo fails.
        (
            "close reason too long (126-byte payload)",
            frame(FIN | CLOSE, &close_payload(1000, &[b'*'; 124])),
            1002,
        ),
        (
            "64-bit length with the top bit set",
            frame_with(
                FIN | TEXT,
                Some([1, 2, 3, 4]),
                b"",
                Length::Declared64(1 << 63),
            ),
            1009,
        ),
        (
            "text that is not UTF-8",
            frame(FIN | TEXT, &[0xff, 0xfe]),
            1007,
        ),
        (
            "text over the limit",
            header_only(TEXT, MAX_MESSAGE as u64 + 1),
            1009,
        ),
        (
            "binary over the limit",
            header_only(BINARY, MAX_MESSAGE as u64 + 1),
            1009,
        ),
    ];
    cases.extend(more.map(|(name, bytes, code)| (name.to_owned(), bytes, code)));
    cases
}

/// Just the header of a masked frame that declares `len` bytes.
fn header_only(opcode: u8, len: u64) -> Vec<u8> {
    frame_with(
        FIN | opcode,
        Some([9, 9, 9, 9]),
        b"",
        Length::Declared64(len),
    )
}

#[tokio::test]
async fn malformed_frames_get_a_close_code_before_and_after_auth() {
    let gateway = gateway(&[]).await;
    for authenticated in [false, true] {
        for (name, bytes, code) in malformed_frames() {
            let answer = close_code_for(gateway.addr, authenticated, &bytes).await;
            assert_eq!(answer, code, "{name} (authenticated: {authenticated})");
        }
    }
    assert_serving(&gateway).await;
}

#[tokio::test]
async fn close_handshakes_end_the_transport() {
    let gateway = gateway(&[]).await;
    // A valid close is echoed, then the server ends the transport.
    let mut socket = live(gateway.addr).await;
    socket
        .send(&frame(FIN | CLOSE, &close_payload(1000, b"bye")))
        .await;
    assert_eq!(socket.expect_close().await.code, 1000);
    socket.expect_eof().await;
    // An empty close is echoed empty (1005: no status).
    let mut socket = live(gateway.addr).await;
    socket.send(&frame(FIN | CLOSE, b"")).await;
    assert_eq!(socket.expect_close().await.code, 1005);
    socket.expect_eof().await;
    // An oversized close is still the client's close: answered 1002, and the
    // server ends the transport at once instead of waiting for another close.
    let mut socket = live(gateway.addr).await;
    socket
        .send(&frame(FIN | CLOSE, &close_payload(1000, &[b'*'; 124])))
        .await;
    assert_eq!(socket.expect_close().await.code, 1002);
    tokio::time::timeout(Duration::from_secs(1), socket.expect_eof())
        .await
        .expect("the transport ends without the 2 s close linger");
    assert_serving(&gateway).await;
}

#[tokio::test]
async fn lenient_but_bounded_framing() {
    let gateway = gateway(&[]).await;
    let mut socket = live(gateway.addr).await;
    // A length in a longer form than needed is read as what it says.
    socket
        .send(&frame_with(
            FIN | PING,
            Some([5, 6, 7, 8]),
            b"hi",
            Length::Extended16,
        ))
        .await;
    let pong = socket.read_frame().await.expect("a pong");
    assert_eq!((pong.opcode, pong.payload.as_slice()), (PONG, &b"hi"[..]));
    // An unmasked client frame: RFC 6455 5.1 asks the server to close (1002).
    socket
        .send(&frame_with(FIN | PING, None, b"bare", Length::Minimal))
        .await;
    let answer = socket.read_frame().await.expect("an answer");
    assert_eq!(
        (answer.opcode, answer.close_code()),
        (CLOSE, 1002),
        "{answer:?}"
    );
    assert_serving(&gateway).await;
}

#[tokio::test]
async fn utf8_is_judged_on_the_whole_message() {
    let gateway = gateway(&[]).await;
    let invalid: [&[u8]; 5] = [
        &[0xff],                   // never valid
        &[0xc0, 0xaf],             // overlong '/'
        &[0xed, 0xa0, 0x80],       // a UTF-16 surrogate
        &[0xf4, 0x90, 0x80, 0x80], // past U+10FFFF
        &[b'{', 0xe2, 0x82],       // cut short at the end
    ];
    for text in invalid {
        let code = close_code_for(gateway.addr, true, &frame(FIN | TEXT, text)).await;
        assert_eq!(code, 1007, "single frame {text:x?}");
        let fragmented = [frame(TEXT, b"{\"type\":"), frame(FIN | CONTINUATION, text)].concat();
        let code = close_code_for(gateway.addr, true, &fragmented).await;
        assert_eq!(code, 1007, "fragmented, ending {text:x?}");
    }
    // A character split across fragments is valid once joined: the message
    // passes UTF-8 and is refused as JSON instead (4400).
    let euro = "\u{20ac}".as_bytes();
    let split = [
        frame(TEXT, &euro[..1]),
        frame(FIN | CONTINUATION, &euro[1..]),
    ]
    .concat();
    assert_eq!(close_code_for(gateway.addr, true, &split).await, 4400);
    assert_serving(&gateway).await;
}

#[tokio::test]
async fn message_size_is_bounded_whole_not_per_frame() {
    let gateway = gateway(&[]).await;
    // Exactly the limit passes the size check (and is refused as JSON).
    let at_limit = frame(FIN | TEXT, &vec![b'a'; MAX_MESSAGE]);
    assert_eq!(close_code_for(gateway.addr, true, &at_limit).await, 4400);
    // One byte over in fragments, each small.
    let half = vec![b'a'; MAX_MESSAGE / 2];
    let over = [
        frame(TEXT, &half),
        frame(CONTINUATION, &half),
        frame(FIN | CONTINUATION, b"a"),
    ]
    .concat();
    assert_eq!(close_code_for(gateway.addr, true, &over).await, 1009);
    // A frame that declares 2^62 bytes is refused from its header: the
    // payload never has to come.
    for authenticated in [false, true] {
        let code = close_code_for(gateway.addr, authenticated, &header_only(TEXT, 1 << 62)).await;
        assert_eq!(code, 1009);
    }
    assert_serving(&gateway).await;
}

#[tokio::test]
async fn protocol_junk_after_auth_gets_4400() {
    let gateway = gateway(&[]).await;
    let cases: [(&str, Vec<u8>); 6] = [
        ("binary frame", frame(FIN | BINARY, &junk(1, 64))),
        ("not JSON", frame(FIN | TEXT, b"hello")),
        ("truncated JSON", frame(FIN | TEXT, br#"{"type":"ping""#)),
        (
            "unknown type",
            frame(FIN | TEXT, br#"{"type":"resubscribe","id":1}"#),
        ),
        ("JSON array", frame(FIN | TEXT, b"[1,2,3]")),
        ("no type", frame(FIN | TEXT, br#"{"id":1}"#)),
    ];
    for (name, bytes) in cases {
        let mut socket = live(gateway.addr).await;
        socket.send(&bytes).await;
        let closed = socket.expect_close().await;
        assert_eq!(closed.code, 4400, "{name}");
        assert_eq!(closed.error.as_deref(), Some("malformed_message"), "{name}");
        answer_close(&mut socket, closed.code).await;
    }
    // Before auth, anything but an `auth` message is refused too.
    let mut socket = unauthenticated(gateway.addr).await;
    socket.send(&frame(FIN | TEXT, br#"{"type":"ping"}"#)).await;
    assert_eq!(socket.expect_close().await.code, 4401);
    assert_serving(&gateway).await;
}

#[tokio::test]
async fn half_open_tcp_is_cut_off() {
    let gateway = gateway(&[
        "--handshake-timeout",
        "1s",
        "--auth-timeout",
        "1s",
        "--heartbeat-interval",
        "1s",
    ])
    .await;
    let addr = gateway.addr;
    // A crowd of connections that say nothing, or stop halfway through the
    // request head...
    let mut silent = Vec::new();
    for i in 0..24 {
        let mut socket = RawSocket::connect(addr).await;
        match i % 3 {
            0 => {}
            1 => socket.send(b"GE").await,
            _ => {
                socket
                    .send(format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n").as_bytes())
                    .await
            }
        }
        silent.push(socket);
    }
    // ...keeps no one else out, and each is cut off after the handshake
    // timeout (hyper closes without a response).
    assert_serving(&gateway).await;
    for socket in &mut silent {
        assert_eq!(socket.response_head().await, None);
    }
    // Upgraded, then half a frame header and silence: the auth timeout.
    let mut socket = unauthenticated(addr).await;
    socket.send(&[FIN | TEXT]).await;
    let closed = socket.expect_close().await;
    assert_eq!(
        (closed.code, closed.error.as_deref()),
        (4408, Some("auth_timeout"))
    );
    // Live, then part of a frame and silence: no pong comes back, so the
    // heartbeat closes it within two intervals.
    let mut socket = live(addr).await;
    let partial = frame(FIN | TEXT, br#"{"type":"ping","id":"never finished"}"#);
    socket.send(&partial[..10]).await;
    let closed = socket.expect_close().await;
    assert_eq!(
        (closed.code, closed.error.as_deref()),
        (4408, Some("heartbeat_timeout"))
    );
    assert_serving(&gateway).await;
}

#[tokio::test]
async fn garbage_http_gets_a_status() {
    let gateway = gateway(&[]).await;
    let addr = gateway.addr;
    let long_path = format!("/{}", "a".repeat(100 * 1024));
    let cases: Vec<(&str, Vec<u8>, Option<u16>)> = vec![
        ("random bytes", junk(7, 4096), Some(400)),
        (
            "a request line of 100 KB",
            format!("GET {long_path} HTTP/1.1\r\nHost: {addr}\r\n\r\n").into_bytes(),
            Some(414),
        ),
        (
            "a request head of 1 MB",
            format!(
                "GET /{} HTTP/1.1\r\nHost: {addr}\r\n\r\n",
                "a".repeat(1 << 20)
            )
            .into_bytes(),
            Some(431),
        ),
        (
            "Sec-WebSocket-Version 12",
            upgrade_request(addr, "/ws", "12").into_bytes(),
            Some(426),
        ),
        (
            "no Sec-WebSocket-Key",
            upgrade_request(addr, "/ws", "13")
                .replace("Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n", "")
                .into_bytes(),
            Some(400),
        ),
        (
            "a header line without a colon",
            format!("GET /healthz HTTP/1.1\r\nHost: {addr}\r\nnot a header\r\n\r\n").into_bytes(),
            Some(400),
        ),
        (
            "a bad Content-Length",
            format!("POST /auth/login HTTP/1.1\r\nHost: {addr}\r\nContent-Length: lots\r\n\r\n")
                .into_bytes(),
            Some(400),
        ),
        ("HTTP/0.9", b"GET /healthz\r\n\r\n".to_vec(), Some(400)),
        (
            "a TLS ClientHello",
            [
                &[
                    0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03,
                ][..],
                &junk(8, 500),
            ]
            .concat(),
            Some(400),
        ),
        (
            "the HTTP/2 preface",
            b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec(),
            None,
        ),
    ];
    for (name, bytes, status) in cases {
        let mut socket = RawSocket::connect(addr).await;
        socket.send(&bytes).await;
        let answer = socket.response_head().await.map(|(status, _)| status);
        assert_eq!(answer, status, "{name}");
    }
    // A 20 KB token in the URL (under hyper's URI limit, over the token
    // limit) upgrades, then is refused unparsed.
    let target = format!("/ws?token={}", "x".repeat(20 * 1024));
    let mut socket = RawSocket::upgrade(addr, &target).await;
    let closed = socket.expect_close().await;
    assert_eq!(
        (closed.code, closed.error.as_deref()),
        (4401, Some("token_too_large"))
    );
    assert_serving(&gateway).await;
}
