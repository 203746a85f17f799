//! The edge's limits: messages per second per connection, sockets per client
//! IP before authentication, and allowed origins. (Message size lives in the
//! frame reader, connections per user in the connection manager.)

use std::{
    collections::HashMap,
    net::IpAddr,
    sync::{Arc, Mutex},
};

use http::HeaderMap;
use tokio::time::Instant;

/// A token bucket: `rate` messages per second on average, bursts of up to
/// twice that. Lives on the session's stack; 0 turns it off.
#[derive(Debug)]
pub(crate) struct RateLimit {
    per_second: u32,
    /// Up to two seconds' worth; f32 is plenty for a count of messages and
    /// keeps a live connection's state small.
    tokens: f32,
    last: Instant,
}

impl RateLimit {
    pub(crate) fn new(per_second: u32) -> Self {
        Self {
            per_second,
            tokens: Self::capacity(per_second),
            last: Instant::now(),
        }
    }

    fn capacity(per_second: u32) -> f32 {
        per_second as f32 * 2.0
    }

    /// Takes one message's token; `false` when the connection is over its rate.
    pub(crate) fn allow(&mut self) -> bool {
        if self.per_second == 0 {
            return true;
        }
        let now = Instant::now();
        let elapsed = now.duration_since(self.last).as_secs_f32();
        self.last = now;
        self.tokens =
            (self.tokens + elapsed * self.per_second as f32).min(Self::capacity(self.per_second));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Counts the sockets of each client IP that have not authenticated yet.
#[derive(Debug, Default)]
pub(crate) struct Unauthenticated {
    by_ip: Mutex<HashMap<IpAddr, usize>>,
}

impl Unauthenticated {
    /// Counts one more socket for `ip`, unless it already has `limit` (0: no limit).
    pub(crate) fn admit(
        self: &Arc<Self>,
        ip: IpAddr,
        limit: usize,
    ) -> Option<UnauthenticatedGuard> {
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
            .get(&ip)
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
        let mut limit = RateLimit::new(10);
        let allowed = (0..30).filter(|_| limit.allow()).count();
        assert_eq!(allowed, 20, "a burst of twice the rate");
        tokio::time::advance(Duration::from_millis(500)).await;
        let allowed = (0..30).filter(|_| limit.allow()).count();
        assert_eq!(allowed, 5, "then the rate");
        let mut off = RateLimit::new(0);
        assert!((0..10_000).all(|_| off.allow()));
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
