//! The gateway behind proxies: the client address that the per-IP limit on
//! unauthenticated sockets counts comes from `Forwarded`, `X-Forwarded-For`
//! or a PROXY protocol header only when the TCP peer is a trusted proxy;
//! IPv6 clients are counted per /64. Each test holds a limit of one socket
//! per client, so whether two sockets are the same client shows as 101 or 429.

mod support;

use std::{net::SocketAddr, time::Duration};

use pulse_gateway::{Settings, TrustedProxies};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
};
use tokio_tungstenite::{
    WebSocketStream, client_async,
    tungstenite::{self, client::IntoClientRequest},
};

use crate::support::*;

fn one_per_client(trusted: &str) -> Settings {
    let mut settings = settings();
    settings.max_unauthenticated_per_ip = 1;
    settings.auth_timeout = Duration::from_secs(3600);
    settings.trusted_proxies = trusted.parse::<TrustedProxies>().unwrap();
    settings
}

/// Opens an unauthenticated socket with these headers, after `prefix` (a
/// PROXY header) on the TCP stream: the socket, or the HTTP status refusing it.
async fn open(
    addr: SocketAddr,
    prefix: &[u8],
    headers: &[(&str, &str)],
) -> Result<WebSocketStream<TcpStream>, u16> {
    let mut request = format!("ws://{addr}/ws").into_client_request().unwrap();
    for (name, value) in headers {
        request.headers_mut().append(
            http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
            value.parse().unwrap(),
        );
    }
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(prefix).await.unwrap();
    match tokio::time::timeout(Duration::from_secs(10), client_async(request, stream))
        .await
        .expect("an answer to the upgrade within 10 s")
    {
        Ok((socket, _)) => Ok(socket),
        Err(tungstenite::Error::Http(response)) => Err(response.status().as_u16()),
        Err(error) => panic!("the upgrade failed without a status: {error}"),
    }
}

/// An upgrade whose request carries `header`; panics when it is refused.
async fn open_as(addr: SocketAddr, header: (&str, &str)) -> WebSocketStream<TcpStream> {
    open(addr, b"", &[header])
        .await
        .unwrap_or_else(|status| panic!("an upgrade with {header:?} refused with {status}"))
}

/// The status an upgrade whose request carries `header` is refused with
/// (`None`: it was let in).
async fn refusal(addr: SocketAddr, header: (&str, &str)) -> Option<u16> {
    open(addr, b"", &[header]).await.err()
}

/// Writes `bytes` and reads until the server closes: the HTTP status it
/// answered, or `None` when it dropped the connection without a word.
async fn answer_to(addr: SocketAddr, bytes: &[u8]) -> Option<u16> {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let mut response = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut response))
        .await
        .expect("the server answers or closes within 10 s");
    let response = String::from_utf8_lossy(&response);
    response
        .split(' ')
        .nth(1)
        .and_then(|code| code.parse().ok())
}

const HEALTHZ: &[u8] = b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";

fn v1(source: &str) -> Vec<u8> {
    let source: SocketAddr = source.parse().unwrap();
    let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
    let destination = if source.is_ipv4() {
        "10.0.0.1"
    } else {
        "fd00::1"
    };
    format!(
        "PROXY {family} {} {destination} {} 3000\r\n",
        source.ip(),
        source.port()
    )
    .into_bytes()
}

/// A v2 header as HAProxy's specification lays it out: signature, version 2
/// and command, family and TCP, length, addresses, ports, then `tlv`.
fn v2(command: u8, source: &str, tlv: &[u8]) -> Vec<u8> {
    let source: SocketAddr = source.parse().unwrap();
    let mut body = Vec::new();
    let family = match source {
        SocketAddr::V4(source) => {
            body.extend_from_slice(&source.ip().octets());
            body.extend_from_slice(&[10, 0, 0, 1]);
            0x11
        }
        SocketAddr::V6(source) => {
            body.extend_from_slice(&source.ip().octets());
            body.extend_from_slice(&"fd00::1".parse::<std::net::Ipv6Addr>().unwrap().octets());
            0x21
        }
    };
    body.extend_from_slice(&source.port().to_be_bytes());
    body.extend_from_slice(&3000u16.to_be_bytes());
    body.extend_from_slice(tlv);
    let mut header = b"\r\n\r\n\0\r\nQUIT\n".to_vec();
    header.extend_from_slice(&[0x20 | command, family]);
    header.extend_from_slice(&(body.len() as u16).to_be_bytes());
    header.extend_from_slice(&body);
    header
}

#[tokio::test]
async fn forwarded_headers_from_a_trusted_proxy_name_the_client() {
    let gateway = Gateway::start(one_per_client("127.0.0.0/8")).await;
    let addr = gateway.addr;
    let _a = open_as(addr, ("x-forwarded-for", "203.0.113.1")).await;
    // Another client behind the same proxy has its own count.
    let _b = open_as(addr, ("x-forwarded-for", "203.0.113.2")).await;
    // What the client wrote at the left is not believed; the proxy's entry is.
    assert_eq!(
        refusal(addr, ("x-forwarded-for", "198.51.100.77, 203.0.113.1")).await,
        Some(429)
    );
    // RFC 7239's Forwarded, IPv4 and IPv6 with a port.
    let _c = open_as(addr, ("forwarded", "for=203.0.113.3;proto=https")).await;
    let _d = open_as(addr, ("forwarded", r#"for="[2001:db8::1]:4711""#)).await;
    assert_eq!(
        refusal(addr, ("forwarded", "for=198.51.100.77, for=203.0.113.3")).await,
        Some(429)
    );
    gateway.stop().await;
}

#[tokio::test]
async fn forwarded_headers_from_an_untrusted_peer_are_ignored() {
    // The tests connect from loopback, which is not in the list.
    let gateway = Gateway::start(one_per_client("10.0.0.0/8")).await;
    let _a = open_as(gateway.addr, ("x-forwarded-for", "203.0.113.1")).await;
    for spoofed in [
        ("x-forwarded-for", "203.0.113.2"),
        ("forwarded", "for=203.0.113.3"),
    ] {
        assert_eq!(
            refusal(gateway.addr, spoofed).await,
            Some(429),
            "{spoofed:?}"
        );
    }
    gateway.stop().await;
}

#[tokio::test]
async fn ipv6_clients_are_counted_per_64() {
    let gateway = Gateway::start(one_per_client("127.0.0.0/8")).await;
    let addr = gateway.addr;
    let _a = open_as(addr, ("x-forwarded-for", "2001:db8:1:2::1")).await;
    // Another address in the same /64 is the same client...
    assert_eq!(
        refusal(
            addr,
            ("x-forwarded-for", "2001:db8:1:2:ffff:ffff:ffff:ffff")
        )
        .await,
        Some(429)
    );
    // ...the next /64 is not.
    let _b = open_as(addr, ("x-forwarded-for", "2001:db8:1:3::1")).await;
    gateway.stop().await;
}

fn proxy_protocol(trusted: &str) -> Settings {
    let mut settings = one_per_client(trusted);
    settings.proxy_protocol = true;
    settings.handshake_timeout = Duration::from_millis(500);
    settings
}

#[tokio::test]
async fn proxy_protocol_v1_and_v2_headers_name_the_client() {
    let gateway = Gateway::start(proxy_protocol("127.0.0.0/8")).await;
    let addr = gateway.addr;
    let _a = open(addr, &v1("203.0.113.1:40000"), &[]).await.unwrap();
    let _b = open(addr, &v2(1, "203.0.113.2:40000", &[]), &[])
        .await
        .unwrap();
    let _c = open(addr, &v1("[2001:db8::1]:40000"), &[]).await.unwrap();
    // TLVs (here PP2_TYPE_AUTHORITY) are skipped.
    let _d = open(
        addr,
        &v2(
            1,
            "[2001:db8:0:1::1]:40000",
            &[0x02, 0, 3, b'a', b'b', b'c'],
        ),
        &[],
    )
    .await
    .unwrap();
    for (version, header) in [
        ("v1", v1("203.0.113.2:1")),
        ("v2", v2(1, "203.0.113.1:1", &[])),
    ] {
        assert_eq!(open(addr, &header, &[]).await.err(), Some(429), "{version}");
    }
    // The client the header names is not a trusted proxy: its own
    // X-Forwarded-For is not believed.
    let _e = open(
        addr,
        &v1("203.0.113.9:1"),
        &[("x-forwarded-for", "203.0.113.1")],
    )
    .await
    .unwrap();
    // LOCAL (the proxy's own health check) is the proxy itself.
    assert_eq!(
        answer_to(addr, &[v2(0, "10.9.9.9:1", &[]), HEALTHZ.to_vec()].concat()).await,
        Some(200)
    );
    gateway.stop().await;
}

#[tokio::test]
async fn a_trusted_peer_without_a_valid_proxy_header_is_dropped() {
    let gateway = Gateway::start(proxy_protocol("127.0.0.0/8")).await;
    let addr = gateway.addr;
    let mut bad_version = v2(1, "203.0.113.1:1", &[]);
    bad_version[12] = 0x11;
    let cases: [(&str, Vec<u8>); 5] = [
        ("no header", HEALTHZ.to_vec()),
        (
            "junk v1",
            [b"PROXY TCP4 junk\r\n".as_slice(), HEALTHZ].concat(),
        ),
        (
            "v1 without CRLF",
            [b"PROXY TCP4 203.0.113.1 10.0.0.1 1 2\n".as_slice(), HEALTHZ].concat(),
        ),
        ("v2 version 1", [bad_version, HEALTHZ.to_vec()].concat()),
        // Never finished: cut off at the deadline.
        ("unfinished", b"PROXY TCP4 203.0.113.1".to_vec()),
    ];
    for (what, bytes) in cases {
        assert_eq!(answer_to(addr, &bytes).await, None, "{what}");
    }
    // A good header still works.
    assert_eq!(
        answer_to(addr, &[v1("203.0.113.1:1"), HEALTHZ.to_vec()].concat()).await,
        Some(200)
    );
    gateway.stop().await;
}

#[tokio::test]
async fn an_untrusted_peer_is_served_as_it_is_and_its_proxy_header_not_believed() {
    let gateway = Gateway::start(proxy_protocol("10.0.0.0/8")).await;
    assert_eq!(answer_to(gateway.addr, HEALTHZ).await, Some(200));
    let spoofed = [v1("203.0.113.1:1"), HEALTHZ.to_vec()].concat();
    assert_eq!(answer_to(gateway.addr, &spoofed).await, Some(400));
    gateway.stop().await;
}
