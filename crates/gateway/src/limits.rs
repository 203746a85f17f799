//! The edge's limits: frames per second and token refreshes per minute per
//! connection, sockets per client (IP, or IPv6 /64) before authentication,
//! and allowed origins. (Message size lives in the frame reader, connections
//! per user in the connection manager.)

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv6Addr},
    sync::{Arc, Mutex},
};

use http::HeaderMap;
use tokio::time::Instant;

use crate::Settings;

/// The rates a connection is held to, from the settings: `per_second`
/// frames (bursts of twice that) and `refreshes_per_minute` token refreshes
/// (bursts of that many). 0 turns either off.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Rates {
    pub(crate) per_second: u32,
    pub(crate) refreshes_per_minute: u32,
}

impl Rates {
    pub(crate) fn of(settings: &Settings) -> Self {
        Self {
            per_second: settings.max_messages_per_second,
            refreshes_per_minute: settings.max_token_refreshes_per_minute,
        }
    }

    fn frame_capacity(self) -> f32 {
        self.per_second as f32 * 2.0
    }

    fn refresh_capacity(self) -> f32 {
        self.refreshes_per_minute as f32
    }
}

/// Two token buckets on one clock: every frame the client sends takes one
/// from the first, every token refresh one from the second as well. The
/// rates come from [`Rates`] at each call rather than being stored, which
/// keeps a live connection's state as small as one bucket was.
#[derive(Debug)]
pub(crate) struct RateLimit {
    /// f32 is plenty for a count of frames.
    frames: f32,
    refreshes: f32,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(rates: Rates) -> Self {
        Self {
            frames: rates.frame_capacity(),
            refreshes: rates.refresh_capacity(),
            last: Instant::now(),
        }
    }

    /// Takes one frame's token; `false` when the connection is over its rate.
    pub(crate) fn allow_frame(&mut self, rates: Rates) -> bool {
        self.refill(rates);
        rates.per_second == 0 || take(&mut self.frames)
    }

    /// Takes one refresh's token; `false` when the connection refreshes too often.
    pub(crate) fn allow_refresh(&mut self, rates: Rates) -> bool {
        self.refill(rates);
        rates.refreshes_per_minute == 0 || take(&mut self.refreshes)
    }

    fn refill(&mut self, rates: Rates) {
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f32();
        self.last = now;
        self.frames = (self.frames + elapsed * rates.per_second as f32).min(rates.frame_capacity());
        self.refreshes = (self.refreshes + elapsed * rates.refreshes_per_minute as f32 / 60.0)
            .min(rates.refresh_capacity());
    }
}

fn take(tokens: &mut f32) -> bool {
    if *tokens >= 1.0 {
        *tokens -= 1.0;
        true
    } else {
        false
    }
}

/// What the per-IP limit counts a client address as: an IPv4 address, or
/// the /64 of an IPv6 one (an attacker holds a whole /64, the smallest
/// network a provider hands out). An IPv4-mapped IPv6 address is its IPv4.
pub(crate) fn client_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(ip) => IpAddr::V6(Ipv6Addr::from(u128::from(ip) & !(u128::MAX >> 64))),
        v4 => v4,
    }
}

/// Counts the sockets of each client (an IPv4 address or an IPv6 /64) that
/// have not authenticated yet.
#[derive(Debug, Default)]
pub(crate) struct Unauthenticated {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Unauthenticated {
    /// Counts one more socket for `ip`'s client, unless it already has
    /// `limit` (0: no limit).
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limit: usize,
    ) -> Option<UnauthenticatedGuard> {
        let ip = client_key(ip);
        let mut by_ip = self.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        let count = by_ip.entry(ip).or_default();
        if limit > 0 && *count >= limit {
            return None;
        }
        *count += 1;
        Some(UnauthenticatedGuard {
            counter: self.clone(),
            ip,
        })
    }

    #[cfg(test)]
    fn count(&self, ip: IpAddr) -> usize {
        self.by_ip
            .lock()
            .unwrap()
            .get(&client_key(ip))
            .copied()
            .unwrap_or_default()
    }
}

/// One unauthenticated socket; dropping it (authenticated or gone) uncounts it.
#[derive(Debug)]
pub(crate) struct UnauthenticatedGuard {
    counter: Arc<Unauthenticated>,
    ip: IpAddr,
}

impl Drop for UnauthenticatedGuard {
    fn drop(&mut self) {
        let mut by_ip = self.counter.by_ip.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(count) = by_ip.get_mut(&self.ip) {
            *count -= 1;
            if *count == 0 {
                by_ip.remove(&self.ip);
            }
        }
    }
}

/// Whether an upgrade may proceed: no `Origin` header (not a browser), an
/// empty allow list (any origin), or an origin on the list (exact match,
/// ASCII case-insensitive, as browsers send scheme://host[:port]).
pub(crate) fn origin_allowed(headers: &HeaderMap, allowed: &[String]) -> bool {
    if allowed.is_empty() {
        return true;
    }
    let Some(origin) = headers.get(http::header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    allowed
        .iter()
        .any(|allowed| allowed.eq_ignore_ascii_case(origin.trim_end_matches('/')))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_rate_limit_allows_bursts_then_the_rate() {
        let rates = Rates {
            per_second: 10,
            refreshes_per_minute: 0,
        };
        let mut limit = RateLimit::new(rates);
        let allowed = (0..30).filter(|_| limit.allow_frame(rates)).count();
        assert_eq!(allowed, 20, "a burst of twice the rate");
        tokio::time::advance(Duration::from_millis(500)).await;
        let allowed = (0..30).filter(|_| limit.allow_frame(rates)).count();
        assert_eq!(allowed, 5, "then the rate");
        let off = Rates {
            per_second: 0,
            refreshes_per_minute: 0,
        };
        let mut limit = RateLimit::new(off);
        assert!((0..10_000).all(|_| limit.allow_frame(off) && limit.allow_refresh(off)));
    }

    #[tokio::test(start_paused = true)]
    async fn refreshes_have_their_own_bucket_per_minute() {
        let rates = Rates {
            per_second: 1000,
            refreshes_per_minute: 6,
        };
        let mut limit = RateLimit::new(rates);
        let allowed = (0..10).filter(|_| limit.allow_refresh(rates)).count();
        assert_eq!(allowed, 6, "a burst of a minute's worth");
        // Frames are not held up by refreshes, nor refill them faster.
        assert!((0..100).all(|_| limit.allow_frame(rates)));
        assert!(!limit.allow_refresh(rates));
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(limit.allow_refresh(rates), "one every ten seconds");
        assert!(!limit.allow_refresh(rates));
    }

    #[test]
    fn ipv6_clients_are_keyed_by_their_64() {
        let key = |ip: &str| client_key(ip.parse().unwrap()).to_string();
        assert_eq!(key("2001:db8:1:2:aaaa:bbbb:cccc:dddd"), "2001:db8:1:2::");
        assert_eq!(
            key("2001:db8:1:2::1"),
            key("2001:db8:1:2:ffff:ffff:ffff:ffff")
        );
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("203.0.113.7"), "203.0.113.7");
        assert_eq!(key("::ffff:203.0.113.7"), "203.0.113.7");
        let counter = Arc::new(Unauthenticated::default());
        let _one = counter.admit("2001:db8::1".parse().unwrap(), 1).unwrap();
        assert!(counter.admit("2001:db8::2".parse().unwrap(), 1).is_none());
        assert!(
            counter
                .admit("2001:db8:0:1::2".parse().unwrap(), 1)
                .is_some()
        );
    }

    #[test]
    fn unauthenticated_sockets_are_counted_per_ip_until_dropped() {
        let counter = Arc::new(Unauthenticated::default());
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let other: IpAddr = "10.0.0.2".parse().unwrap();
        let first = counter.admit(ip, 2).unwrap();
        let second = counter.admit(ip, 2).unwrap();
        assert!(counter.admit(ip, 2).is_none());
        assert!(
            counter.admit(other, 2).is_some(),
            "another IP has its own count"
        );
        drop(first);
        assert_eq!(counter.count(ip), 1);
        let third = counter.admit(ip, 2).unwrap();
        drop((second, third));
        assert_eq!(counter.count(ip), 0);
        assert!(counter.admit(ip, 0).is_some(), "0 is no limit");
    }

    #[test]
    fn origins_are_checked_only_when_listed_and_sent() {
        let allowed = vec!["https://app.example.com".to_owned()];
        let mut headers = HeaderMap::new();
        assert!(
            origin_allowed(&headers, &allowed),
            "no Origin: not a browser"
        );
        headers.insert(
            http::header::ORIGIN,
            "https://app.example.com".parse().unwrap(),
        );
        assert!(origin_allowed(&headers, &allowed));
        headers.insert(
            http::header::ORIGIN,
            "https://APP.example.com".parse().unwrap(),
        );
        assert!(origin_allowed(&headers, &allowed));
        headers.insert(
            http::header::ORIGIN,
            "https://evil.example".parse().unwrap(),
        );
        assert!(!origin_allowed(&headers, &allowed));
        assert!(origin_allowed(&headers, &[]), "no list: any origin");
    }
}
