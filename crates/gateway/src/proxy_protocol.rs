//! The PROXY protocol (HAProxy's, v1 text and v2 binary): a load balancer
//! that forwards TCP starts each connection with a header naming the client.
//!
//! With `--proxy-protocol`, a connection from a trusted proxy must start with
//! one, and it is read here before any HTTP, under `--handshake-timeout`;
//! one without a valid header is dropped. Connections from other peers are
//! served as they are: their PROXY header, if they send one, is not believed
//! (it reaches the HTTP parser as junk).
//!
//! The header is read from the socket itself, never past its end: the HTTP
//! request behind it stays in the kernel for hyper, and the upgraded socket
//! is still the bare `TcpStream` the session takes back (`socket::take_tcp`).
//! v1 is found by peeking and then reading exactly up to its CRLF; v2 says
//! its length in its first 16 bytes. What is read lives only while the
//! header is read: a live connection keeps nothing of it but the address.

use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    time::Duration,
};

use metrics::counter;
use tokio::{io::AsyncReadExt, net::TcpStream};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::Settings;

/// v2's fixed signature, the first 12 bytes.
const V2_SIGNATURE: [u8; 12] = *b"\r\n\r\n\0\r\nQUIT\n";
/// The longest v1 header, CRLF included (the specification's bound).
const V1_MAX: usize = 107;
/// The most of a v2 header after its first 16 bytes taken: addresses (at
/// most 216 bytes for Unix sockets) and TLVs, which load balancers keep short.
const V2_MAX_BODY: usize = 4096;
/// Both versions' headers are at least this long ("PROXY UNKNOWN\r\n" is
/// 15), so this many bytes can be read before knowing which it is.
const PREFIX: usize = 8;

/// Why a connection's PROXY header was refused; the metric's `reason`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum HeaderError {
    /// Not a PROXY header at all (a trusted peer that speaks HTTP directly).
    Missing,
    /// A PROXY header that breaks the specification.
    Malformed,
    /// Not complete within the deadline.
    Timeout,
    /// The connection ended or failed before the header did.
    Closed,
}

impl HeaderError {
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::Timeout => "timeout",
            Self::Closed => "closed",
        }
    }
}

/// The client of a new connection from `peer`: `peer` itself, or, with
/// `--proxy-protocol` and `peer` a trusted proxy, the address its PROXY
/// header names. `None`: drop the connection (its header was missing, bad,
/// too slow, or shutdown began); the metric and the log say why.
pub(crate) async fn accept(
    stream: &mut TcpStream,
    peer: SocketAddr,
    settings: &Settings,
    shutdown: &CancellationToken,
) -> Option<SocketAddr> {
    if !settings.proxy_protocol || !settings.trusted_proxies.contains(peer.ip()) {
        return Some(peer);
    }
    let read = tokio::select! {
        read = read_header(stream, settings.handshake_timeout) => read,
        () = shutdown.cancelled() => return None,
    };
    match read {
        Ok(Some(client)) => Some(client),
        Ok(None) => Some(peer),
        Err(error) => {
            counter!("pulse_gateway_proxy_header_errors_total", "reason" => error.as_str())
                .increment(1);
            // A proxy's TCP health check connects and closes without a
            // word: not worth a warning each time.
            if error == HeaderError::Closed {
                debug!(%peer, reason = error.as_str(), "connection from a trusted proxy closed before its PROXY header");
            } else {
                warn!(%peer, reason = error.as_str(), "dropped a connection from a trusted proxy without a valid PROXY header");
            }
            None
        }
    }
}

/// Reads one PROXY header (v1 or v2) from the front of `stream` within
/// `deadline`, leaving every byte after it unread. `Some(source)`: the
/// client's address; `None`: the proxy speaks for itself (v1 `UNKNOWN`, v2
/// `LOCAL` such as its health checks, or an address family other than IP).
pub(crate) async fn read_header(
    stream: &mut TcpStream,
    deadline: Duration,
) -> Result<Option<SocketAddr>, HeaderError> {
    tokio::time::timeout(deadline, read(stream))
        .await
        .map_err(|_| HeaderError::Timeout)?
}

async fn read(stream: &mut TcpStream) -> Result<Option<SocketAddr>, HeaderError> {
    let mut prefix = [0u8; PREFIX];
    read_exact(stream, &mut prefix).await?;
    if prefix.starts_with(b"PROXY ") {
        let mut line = prefix.to_vec();
        read_v1_line(stream, &mut line).await?;
        parse_v1(&line)
    } else if prefix == V2_SIGNATURE[..PREFIX] {
        let mut header = [0u8; 16];
        header[..PREFIX].copy_from_slice(&prefix);
        read_exact(stream, &mut header[PREFIX..]).await?;
        let length = usize::from(u16::from_be_bytes([header[14], header[15]]));
        if length > V2_MAX_BODY {
            return Err(HeaderError::Malformed);
        }
        let mut body = vec![0u8; length];
        read_exact(stream, &mut body).await?;
        parse_v2(&header, &body)
    } else {
        Err(HeaderError::Missing)
    }
}

/// Reads the rest of a v1 line into `line`, up to and including its CRLF
/// and not a byte further: peeks, then takes exactly the line's bytes, or
/// all it saw when the CRLF has not come yet (they are the line's too), so
/// that the next peek waits for more instead of seeing the same bytes again.
async fn read_v1_line(stream: &mut TcpStream, line: &mut Vec<u8>) -> Result<(), HeaderError> {
    let mut seen = [0u8; V1_MAX];
    loop {
        let room = V1_MAX - line.len();
        let peeked = stream
            .peek(&mut seen[..room])
            .await
            .map_err(|_| HeaderError::Closed)?;
        if peeked == 0 {
            return Err(HeaderError::Closed);
        }
        // A CR ending what was read before pairs with an LF peeked now.
        let ends_with_cr = line.last() == Some(&b'\r');
        let end = if ends_with_cr && seen[0] == b'\n' {
            Some(1)
        } else {
            seen[..peeked]
                .windows(2)
                .position(|pair| pair == b"\r\n")
                .map(|at| at + 2)
        };
        let take = end.unwrap_or(peeked);
        let start = line.len();
        line.resize(start + take, 0);
        read_exact(stream, &mut line[start..]).await?;
        if end.is_some() {
            return Ok(());
        }
        if line.len() >= V1_MAX {
            return Err(HeaderError::Malformed);
        }
    }
}

async fn read_exact(stream: &mut TcpStream, buf: &mut [u8]) -> Result<(), HeaderError> {
    stream
        .read_exact(buf)
        .await
        .map(drop)
        .map_err(|_| HeaderError::Closed)
}

/// `PROXY TCP4 <src> <dst> <srcport> <dstport>\r\n`, `TCP6` alike, or
/// `PROXY UNKNOWN...\r\n`.
fn parse_v1(line: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    let line = line
        .strip_suffix(b"\r\n")
        .and_then(|line| std::str::from_utf8(line).ok())
        .ok_or(HeaderError::Malformed)?;
    let mut fields = line.split(' ');
    let (Some("PROXY"), Some(family)) = (fields.next(), fields.next()) else {
        return Err(HeaderError::Malformed);
    };
    if family == "UNKNOWN" {
        return Ok(None);
    }
    let fields: Vec<&str> = fields.collect();
    let [source, destination, source_port, destination_port] = fields[..] else {
        return Err(HeaderError::Malformed);
    };
    let ip = |text: &str| -> Result<IpAddr, HeaderError> {
        match family {
            "TCP4" => text.parse::<Ipv4Addr>().map(IpAddr::V4),
            "TCP6" => text.parse::<Ipv6Addr>().map(IpAddr::V6),
            _ => return Err(HeaderError::Malformed),
        }
        .map_err(|_| HeaderError::Malformed)
    };
    let port = |text: &str| -> Result<u16, HeaderError> {
        // Decimal, no sign, no leading zero (the specification's form).
        if text.is_empty()
            || (text.len() > 1 && text.starts_with('0'))
            || !text.bytes().all(|b| b.is_ascii_digit())
        {
            return Err(HeaderError::Malformed);
        }
        text.parse().map_err(|_| HeaderError::Malformed)
    };
    let source = SocketAddr::new(ip(source)?, port(source_port)?);
    ip(destination)?;
    port(destination_port)?;
    Ok(Some(source))
}

/// The 16-byte v2 header (signature, version and command, family and
/// protocol, length) and the `body` it announced.
fn parse_v2(header: &[u8; 16], body: &[u8]) -> Result<Option<SocketAddr>, HeaderError> {
    if header[..12] != V2_SIGNATURE {
        return Err(HeaderError::Missing);
    }
    let (version, command) = (header[12] >> 4, header[12] & 0x0F);
    if version != 2 {
        return Err(HeaderError::Malformed);
    }
    match command {
        // LOCAL: the proxy's own connection (a health check); the body is skipped.
        0x0 => return Ok(None),
        0x1 => {}
        _ => return Err(HeaderError::Malformed),
    }
    let (family, transport) = (header[13] >> 4, header[13] & 0x0F);
    if transport > 2 {
        return Err(HeaderError::Malformed);
    }
    match family {
        // AF_INET: source, destination, source port, destination port.
        0x1 => {
            let addresses = body.get(..12).ok_or(HeaderError::Malformed)?;
            let ip = Ipv4Addr::from(<[u8; 4]>::try_from(&addresses[..4]).expect("four bytes"));
            let port = u16::from_be_bytes([addresses[8], addresses[9]]);
            Ok(Some(SocketAddr::new(IpAddr::V4(ip), port)))
        }
        // AF_INET6: the same with 16-byte addresses.
        0x2 => {
            let addresses = body.get(..36).ok_or(HeaderError::Malformed)?;
            let ip = Ipv6Addr::from(<[u8; 16]>::try_from(&addresses[..16]).expect("16 bytes"));
            let port = u16::from_be_bytes([addresses[32], addresses[33]]);
            Ok(Some(SocketAddr::new(IpAddr::V6(ip).to_canonical(), port)))
        }
        // AF_UNSPEC and AF_UNIX name no IP client: the proxy stands for it.
        0x0 | 0x3 => Ok(None),
        _ => Err(HeaderError::Malformed),
    }
}

/// Headers as a load balancer writes them, for the tests.
#[cfg(test)]
pub(crate) mod encode {
    use std::net::SocketAddr;

    use super::V2_SIGNATURE;

    /// A v1 header for a TCP connection from `source` to `destination`.
    pub(crate) fn v1(source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
        let family = if source.is_ipv4() { "TCP4" } else { "TCP6" };
        format!(
            "PROXY {family} {} {} {} {}\r\n",
            source.ip(),
            destination.ip(),
            source.port(),
            destination.port()
        )
        .into_bytes()
    }

    /// A v2 PROXY (command 1) header over TCP, with `tlv` bytes after the addresses.
    pub(crate) fn v2(source: SocketAddr, destination: SocketAddr, tlv: &[u8]) -> Vec<u8> {
        let mut body = Vec::new();
        let family = match (source, destination) {
            (SocketAddr::V4(s), SocketAddr::V4(d)) => {
                body.extend_from_slice(&s.ip().octets());
                body.extend_from_slice(&d.ip().octets());
                0x11
            }
            (SocketAddr::V6(s), SocketAddr::V6(d)) => {
                body.extend_from_slice(&s.ip().octets());
                body.extend_from_slice(&d.ip().octets());
                0x21
            }
            _ => panic!("one family for both addresses"),
        };
        body.extend_from_slice(&source.port().to_be_bytes());
        body.extend_from_slice(&destination.port().to_be_bytes());
        body.extend_from_slice(tlv);
        let mut header = V2_SIGNATURE.to_vec();
        header.push(0x21);
        header.push(family);
        header.extend_from_slice(&u16::try_from(body.len()).unwrap().to_be_bytes());
        header.extend_from_slice(&body);
        header
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::AsyncWriteExt,
        net::{TcpListener, TcpStream},
    };

    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn v1_headers_parse() {
        let header = encode::v1(addr("203.0.113.7:5555"), addr("10.0.0.1:3000"));
        assert_eq!(parse_v1(&header), Ok(Some(addr("203.0.113.7:5555"))));
        let header = encode::v1(addr("[2001:db8::7]:443"), addr("[fd00::1]:3000"));
        assert_eq!(parse_v1(&header), Ok(Some(addr("[2001:db8::7]:443"))));
        assert_eq!(parse_v1(b"PROXY UNKNOWN\r\n"), Ok(None));
        assert_eq!(parse_v1(b"PROXY UNKNOWN ffff::1 ffff::2 1 2\r\n"), Ok(None));
        for bad in [
            &b"PROXY TCP4 203.0.113.7 10.0.0.1 5555\r\n"[..],
            b"PROXY TCP4 2001:db8::7 10.0.0.1 5555 3000\r\n",
            b"PROXY TCP6 203.0.113.7 10.0.0.1 5555 3000\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 05555 3000\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 65536 3000\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 -1 3000\r\n",
            b"PROXY TCP4  203.0.113.7 10.0.0.1 5555 3000\r\n",
            b"PROXY UDP4 203.0.113.7 10.0.0.1 5555 3000\r\n",
            b"PROXY TCP4 203.0.113.7 10.0.0.1 5555 3000\n",
            b"PROXY TCP4 203.0.113.\xff 10.0.0.1 5555 3000\r\n",
        ] {
            assert_eq!(parse_v1(bad), Err(HeaderError::Malformed), "{bad:?}");
        }
    }

    #[test]
    fn v2_headers_parse() {
        let split = |header: Vec<u8>| -> ([u8; 16], Vec<u8>) {
            (header[..16].try_into().unwrap(), header[16..].to_vec())
        };
        let (head, body) = split(encode::v2(
            addr("203.0.113.7:5555"),
            addr("10.0.0.1:3000"),
            &[],
        ));
        assert_eq!(parse_v2(&head, &body), Ok(Some(addr("203.0.113.7:5555"))));
        // TLVs after the addresses are skipped.
        let tlv = [0x04, 0x00, 0x03, b'a', b'b', b'c'];
        let (head, body) = split(encode::v2(
            addr("[2001:db8::7]:443"),
            addr("[fd00::1]:3000"),
            &tlv,
        ));
        assert_eq!(parse_v2(&head, &body), Ok(Some(addr("[2001:db8::7]:443"))));
        // LOCAL, and families that name no IP client.
        let mut local = head;
        local[12] = 0x20;
        assert_eq!(parse_v2(&local, &body), Ok(None));
        let mut unspec = head;
        unspec[13] = 0x00;
        assert_eq!(parse_v2(&unspec, &[]), Ok(None));
        for (at, value) in [(12, 0x11), (12, 0x22), (13, 0x41), (13, 0x13)] {
            let mut bad = head;
            bad[at] = value;
            assert_eq!(
                parse_v2(&bad, &body),
                Err(HeaderError::Malformed),
                "byte {at} = {value:#x}"
            );
        }
        // Too short for the family's addresses.
        let (head, body) = split(encode::v2(
            addr("203.0.113.7:5555"),
            addr("10.0.0.1:3000"),
            &[],
        ));
        assert_eq!(parse_v2(&head, &body[..11]), Err(HeaderError::Malformed));
    }

    /// A header written in pieces, with the HTTP request right behind it: the
    /// reader takes the header and not one byte of the request.
    #[tokio::test]
    async fn a_header_in_pieces_is_read_exactly() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let request = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n";
        let v1 = encode::v1(addr("203.0.113.7:5555"), at);
        let v2 = encode::v2(addr("[2001:db8::7]:443"), addr("[::1]:3000"), &[1, 0, 1, 9]);
        for (header, expected) in [
            (v1, Some(addr("203.0.113.7:5555"))),
            (v2, Some(addr("[2001:db8::7]:443"))),
            (b"PROXY UNKNOWN\r\n".to_vec(), None),
        ] {
            for piece in [1, 3, 7, 16, 200] {
                let mut client = TcpStream::connect(at).await.unwrap();
                let (mut server, _) = listener.accept().await.unwrap();
                let bytes = [header.clone(), request.to_vec()].concat();
                let writer = tokio::spawn(async move {
                    for chunk in bytes.chunks(piece) {
                        client.write_all(chunk).await.unwrap();
                        client.flush().await.unwrap();
                        tokio::task::yield_now().await;
                    }
                    client
                });
                let read = read_header(&mut server, Duration::from_secs(10)).await;
                assert_eq!(read, Ok(expected), "pieces of {piece}");
                let _client = writer.await.unwrap();
                let mut rest = vec![0u8; request.len()];
                server.read_exact(&mut rest).await.unwrap();
                assert_eq!(rest, request, "the request is left whole");
            }
        }
    }

    #[tokio::test]
    async fn bad_missing_slow_and_cut_headers_are_refused() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let at = listener.local_addr().unwrap();
        let long_v1 = [b"PROXY TCP4 ".as_slice(), &[b'1'; 200]].concat();
        let mut huge_v2 = encode::v2(addr("203.0.113.7:1"), addr("10.0.0.1:2"), &[]);
        huge_v2[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        let cases: [(&[u8], bool, HeaderError); 6] = [
            (
                b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
                false,
                HeaderError::Missing,
            ),
            (b"PROXY TCP4 junk\r\n", false, HeaderError::Malformed),
            (&long_v1, false, HeaderError::Malformed),
            (&huge_v2, false, HeaderError::Malformed),
            (b"PROXY TCP4 203.0.113.7", true, HeaderError::Closed),
            (b"PROXY TCP4 203.0.113.7", false, HeaderError::Timeout),
        ];
        for (bytes, then_close, expected) in cases {
            let mut client = TcpStream::connect(at).await.unwrap();
            let (mut server, _) = listener.accept().await.unwrap();
            client.write_all(bytes).await.unwrap();
            if then_close {
                client.shutdown().await.unwrap();
            }
            let read = read_header(&mut server, Duration::from_millis(300)).await;
            assert_eq!(read, Err(expected), "{:?}", String::from_utf8_lossy(bytes));
        }
    }
}
