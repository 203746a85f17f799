//! Who the client is when the gateway sits behind proxies.
//!
//! Behind an ingress or a load balancer every TCP peer is a proxy, and the
//! limits keyed by the client's address (unauthenticated sockets per IP)
//! would become one global cap. The proxies say who the client is, in
//! `Forwarded` (RFC 7239), `X-Forwarded-For` or a PROXY protocol header
//! (`proxy_protocol.rs`), but so can anyone: a client can send those headers
//! itself. So their word is taken only from peers in `--trusted-proxies`,
//! and only as far as the chain of trusted hops reaches: the client is the
//! rightmost hop that is not itself a trusted proxy. Everything to its left
//! was written by the client or by proxies nobody vouches for.

use std::{
    fmt,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    str::FromStr,
};

use http::{HeaderMap, HeaderName, header::FORWARDED};

/// `X-Forwarded-For`, which `http` has no constant for.
static X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");

/// One network: an address and a prefix length (`10.0.0.0/8`, `2001:db8::/32`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cidr {
    network: IpAddr,
    prefix: u8,
}

impl Cidr {
    /// Whether `ip` is in this network; an IPv4-mapped IPv6 address
    /// (`::ffff:10.1.2.3`) counts as its IPv4 address.
    pub fn contains(&self, ip: IpAddr) -> bool {
        match (self.network, ip.to_canonical()) {
            (IpAddr::V4(network), IpAddr::V4(ip)) => {
                u32::from(ip) & v4_mask(self.prefix) == u32::from(network)
            }
            (IpAddr::V6(network), IpAddr::V6(ip)) => {
                u128::from(ip) & v6_mask(self.prefix) == u128::from(network)
            }
            _ => false,
        }
    }
}

fn v4_mask(prefix: u8) -> u32 {
    u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0)
}

fn v6_mask(prefix: u8) -> u128 {
    u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0)
}

impl FromStr for Cidr {
    type Err = String;

    /// `addr/prefix`, or a bare address for that one host. Host bits set
    /// below the prefix are refused: `10.0.0.1/8` is more likely a typo than
    /// a way of writing `10.0.0.0/8`.
    fn from_str(text: &str) -> Result<Self, String> {
        let text = text.trim();
        let (addr, prefix) = match text.split_once('/') {
            Some((addr, prefix)) => (addr, Some(prefix)),
            None => (text, None),
        };
        let network: IpAddr = addr
            .parse()
            .map_err(|_| format!("{text:?} is not an IP network like 10.0.0.0/8 or fd00::/8"))?;
        let network = network.to_canonical();
        let bits = if network.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => bits,
            Some(prefix) => prefix
                .parse::<u8>()
                .ok()
                .filter(|prefix| *prefix <= bits)
                .ok_or_else(|| format!("{text:?}: the prefix must be a number from 0 to {bits}"))?,
        };
        let masked = match network {
            IpAddr::V4(ip) => IpAddr::V4(Ipv4Addr::from(u32::from(ip) & v4_mask(prefix))),
            IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(u128::from(ip) & v6_mask(prefix))),
        };
        if masked != network {
            return Err(format!(
                "{text:?} has bits set past its /{prefix} prefix; did you mean {masked}/{prefix}?"
            ));
        }
        Ok(Self { network, prefix })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.network, self.prefix)
    }
}

/// The networks whose proxies are believed about the client's address
/// (`--trusted-proxies`). Empty by default: nobody is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TrustedProxies {
    networks: Vec<Cidr>,
}

impl TrustedProxies {
    /// The networks of a list such as `["10.0.0.0/8", "fd00::/8"]`; empty
    /// items are skipped. The error names the item that is not a network.
    pub fn parse<S: AsRef<str>>(items: impl IntoIterator<Item = S>) -> Result<Self, String> {
        let networks = items
            .into_iter()
            .filter(|item| !item.as_ref().trim().is_empty())
            .map(|item| item.as_ref().parse())
            .collect::<Result<_, _>>()?;
        Ok(Self { networks })
    }

    /// Whether a peer at `ip` is a trusted proxy.
    pub fn contains(&self, ip: IpAddr) -> bool {
        self.networks.iter().any(|network| network.contains(ip))
    }

    /// Whether no proxy is trusted.
    pub fn is_empty(&self) -> bool {
        self.networks.is_empty()
    }
}

impl FromStr for TrustedProxies {
    type Err = String;

    /// A comma-separated list, as in `TRUSTED_PROXIES`.
    fn from_str(text: &str) -> Result<Self, String> {
        Self::parse(text.split(','))
    }
}

/// The client's address for a request that came from `peer`: `peer` itself
/// unless it is a trusted proxy, else the rightmost hop of `Forwarded` (or,
/// without one, `X-Forwarded-For`) that is not a trusted proxy. A hop the
/// proxies could not name (`unknown`, an obfuscated name, junk) stops the
/// walk at the last address known. The port is the hop's when it gave one,
/// else 0.
pub(crate) fn client_addr(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &TrustedProxies,
) -> SocketAddr {
    let mut client = SocketAddr::new(peer.ip().to_canonical(), peer.port());
    if !trusted.contains(client.ip()) {
        return client;
    }
    let hops = if headers.contains_key(FORWARDED) {
        list_items(headers, &FORWARDED)
            .map(forwarded_for)
            .collect::<Vec<_>>()
    } else {
        list_items(headers, &X_FORWARDED_FOR)
            .map(node)
            .collect::<Vec<_>>()
    };
    for hop in hops.into_iter().rev() {
        let Some(hop) = hop else {
            return client;
        };
        client = hop;
        if !trusted.contains(hop.ip()) {
            return client;
        }
    }
    // Every hop is a trusted proxy: the leftmost is as far as anyone can see.
    client
}

/// The comma-separated items of every line of a header, in order. A line
/// that is not visible ASCII is skipped (no proxy of ours writes one).
fn list_items<'a>(headers: &'a HeaderMap, name: &HeaderName) -> impl Iterator<Item = &'a str> {
    headers
        .get_all(name)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(split_outside_quotes::<','>)
        .map(str::trim)
        .filter(|item| !item.is_empty())
}

/// Splits on `SEP` where it is not inside a quoted string.
fn split_outside_quotes<const SEP: char>(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut start, mut quoted, mut escaped) = (0, false, false);
    for (at, c) in text.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            c if c == SEP && !quoted => {
                parts.push(&text[start..at]);
                start = at + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// The `for=` node of one `Forwarded` element (`for=192.0.2.1;proto=https`).
fn forwarded_for(element: &str) -> Option<SocketAddr> {
    split_outside_quotes::<';'>(element)
        .into_iter()
        .find_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            key.trim().eq_ignore_ascii_case("for").then_some(value)
        })
        .and_then(|value| node(&unquote(value.trim())))
}

fn unquote(value: &str) -> String {
    match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => {
            let mut out = String::with_capacity(inner.len());
            let mut escaped = false;
            for c in inner.chars() {
                if escaped || c != '\\' {
                    out.push(c);
                    escaped = false;
                } else {
                    escaped = true;
                }
            }
            out
        }
        None => value.to_owned(),
    }
}

/// A node as proxies write it: `192.0.2.1`, `192.0.2.1:4711`, `[2001:db8::1]`,
/// `[2001:db8::1]:4711`, or a bare `2001:db8::1`. `None` for anything else
/// (`unknown`, `_hidden`, junk).
fn node(text: &str) -> Option<SocketAddr> {
    let text = text.trim();
    if let Ok(ip) = text.parse::<IpAddr>() {
        return Some(SocketAddr::new(ip.to_canonical(), 0));
    }
    if let Some(inner) = text.strip_prefix('[').and_then(|t| t.strip_suffix(']')) {
        return inner
            .parse::<Ipv6Addr>()
            .ok()
            .map(|ip| SocketAddr::new(IpAddr::V6(ip).to_canonical(), 0));
    }
    text.parse::<SocketAddr>()
        .ok()
        .map(|addr| SocketAddr::new(addr.ip().to_canonical(), addr.port()))
}

#[cfg(test)]
mod tests {
    use http::HeaderValue;

    use super::*;

    fn trusted(list: &str) -> TrustedProxies {
        list.parse().unwrap()
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut headers = HeaderMap::new();
        for (name, value) in pairs {
            headers.append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        headers
    }

    fn client(peer: &str, pairs: &[(&str, &str)], list: &str) -> String {
        client_addr(peer.parse().unwrap(), &headers(pairs), &trusted(list)).to_string()
    }

    #[test]
    fn networks_parse_and_match() {
        let list = trusted("10.0.0.0/8, 192.168.1.7,fd00::/8, 2001:db8:1::/48");
        for inside in [
            "10.1.2.3",
            "192.168.1.7",
            "fd12::1",
            "2001:db8:1:ffff::1",
            "::ffff:10.9.9.9",
        ] {
            assert!(list.contains(inside.parse().unwrap()), "{inside}");
        }
        for outside in [
            "11.0.0.1",
            "192.168.1.8",
            "fe80::1",
            "2001:db8:2::1",
            "::ffff:11.0.0.1",
        ] {
            assert!(!list.contains(outside.parse().unwrap()), "{outside}");
        }
        assert!(trusted("0.0.0.0/0").contains("203.0.113.9".parse().unwrap()));
        assert!(trusted("::/0").contains("2001:db8::1".parse().unwrap()));
        assert!(!trusted("::/0").contains("203.0.113.9".parse().unwrap()));
        assert!(trusted("").is_empty());
    }

    #[test]
    fn bad_networks_are_refused_with_the_item() {
        for (bad, says) in [
            ("10.0.0.0/33", "from 0 to 32"),
            ("fd00::/129", "from 0 to 128"),
            ("10.0.0.1/8", "did you mean 10.0.0.0/8"),
            ("proxy.internal", "not an IP network"),
            ("10.0.0.0/x", "prefix"),
        ] {
            let error = bad.parse::<TrustedProxies>().unwrap_err();
            assert!(
                error.contains(bad) && error.contains(says),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn an_untrusted_peer_is_the_client_whatever_it_says() {
        let spoofed = [
            ("x-forwarded-for", "203.0.113.1"),
            ("forwarded", "for=203.0.113.2"),
        ];
        assert_eq!(
            client("198.51.100.9:5000", &spoofed, "10.0.0.0/8"),
            "198.51.100.9:5000"
        );
        assert_eq!(
            client("198.51.100.9:5000", &spoofed, ""),
            "198.51.100.9:5000"
        );
    }

    #[test]
    fn x_forwarded_for_is_read_from_the_right() {
        let list = "10.0.0.0/8";
        // The client wrote the first entry itself; the proxy appended the real one.
        let xff = [("x-forwarded-for", "1.2.3.4, 203.0.113.7")];
        assert_eq!(client("10.0.0.2:1", &xff, list), "203.0.113.7:0");
        // Two trusted proxies in a row are skipped; several lines are one list.
        let xff = [
            ("x-forwarded-for", "1.2.3.4, 203.0.113.7"),
            ("x-forwarded-for", "10.9.9.9"),
        ];
        assert_eq!(client("10.0.0.2:1", &xff, list), "203.0.113.7:0");
        // Ports and brackets as some proxies write them.
        let xff = [("x-forwarded-for", "[2001:db8::5]:443")];
        assert_eq!(client("10.0.0.2:1", &xff, list), "[2001:db8::5]:443");
        let xff = [("x-forwarded-for", "203.0.113.7:5555")];
        assert_eq!(client("10.0.0.2:1", &xff, list), "203.0.113.7:5555");
        // Junk to the right of the client stops the walk at the proxy.
        let xff = [("x-forwarded-for", "203.0.113.7, garbage")];
        assert_eq!(client("10.0.0.2:1", &xff, list), "10.0.0.2:1");
        // No header: the proxy is all there is.
        assert_eq!(client("10.0.0.2:1", &[], list), "10.0.0.2:1");
        // Only trusted hops: the leftmost.
        let xff = [("x-forwarded-for", "10.1.1.1, 10.2.2.2")];
        assert_eq!(client("10.0.0.2:1", &xff, list), "10.1.1.1:0");
    }

    #[test]
    fn forwarded_wins_and_is_parsed_as_rfc_7239_says() {
        let list = "10.0.0.0/8";
        let both = [
            ("x-forwarded-for", "198.51.100.1"),
            (
                "forwarded",
                r#"for=1.2.3.4;proto=http, For="[2001:db8:cafe::17]:4711";by=10.0.0.1"#,
            ),
        ];
        assert_eq!(
            client("10.0.0.2:1", &both, list),
            "[2001:db8:cafe::17]:4711"
        );
        let quoted = [("forwarded", r#"for="203.0.113.43:80", for=10.3.3.3"#)];
        assert_eq!(client("10.0.0.2:1", &quoted, list), "203.0.113.43:80");
        // A comma inside a quoted value does not split the element.
        let tricky = [("forwarded", r#"for=203.0.113.5;ext="a,b""#)];
        assert_eq!(client("10.0.0.2:1", &tricky, list), "203.0.113.5:0");
        for unnamed in [
            "for=unknown",
            "for=_hidden",
            "proto=https",
            "for=\"[junk]\"",
        ] {
            let header = [("forwarded", unnamed)];
            assert_eq!(
                client("10.0.0.2:1", &header, list),
                "10.0.0.2:1",
                "{unnamed}"
            );
        }
    }

    #[test]
    fn mapped_ipv4_peers_are_matched_as_ipv4() {
        let xff = [("x-forwarded-for", "203.0.113.7")];
        assert_eq!(
            client("[::ffff:10.0.0.2]:1", &xff, "10.0.0.0/8"),
            "203.0.113.7:0"
        );
    }
}
