//! [`RedisOptions`]: where the Redis backend connects and how it names its
//! keys, and the one check of them ([`RedisOptions::validate`]) that the
//! library and every binary's configuration call, so that a namespace, a
//! list of URLs or a lease ttl is judged the same way everywhere.

use std::time::Duration;

/// The shortest lease ttl: instances renew every third of it, and a renewal
/// visits every bucket, so below about 100 ms between renewals a gateway
/// would spend its time renewing. The gateway's `--lease-ttl` is checked
/// against this too.
pub const MIN_LEASE_TTL: Duration = Duration::from_millis(300);

/// How long an instance's lease lasts without renewal, unless set.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(3);

/// What is wrong with [`RedisOptions`]; [`RedisOptionsError::flag`] names
/// the setting (the flags of `pulse-gateway` and `pulse-presence` share their
/// names) and the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedisOptionsError {
    /// The namespace is empty or holds a brace, which would break the keys'
    /// hash tags.
    #[error("must be non-empty and without braces (got {0:?})")]
    Namespace(String),
    /// Several URLs without cluster mode.
    #[error("several URLs name Redis Cluster nodes; set --redis-cluster / REDIS_CLUSTER")]
    SeveralUrlsNeedCluster,
    /// No URL at all.
    #[error("no URL given")]
    NoUrl,
    /// A pool size of zero.
    #[error("must be at least 1")]
    PoolSize,
    /// A lease ttl below [`MIN_LEASE_TTL`].
    #[error("must be at least {MIN_LEASE_TTL:?} (it is renewed every third of it)")]
    LeaseTtl,
}

impl RedisOptionsError {
    /// The flag (and environment variable) the error is about.
    pub fn flag(&self) -> &'static str {
        match self {
            Self::Namespace(_) => "--redis-namespace / REDIS_NAMESPACE",
            Self::SeveralUrlsNeedCluster | Self::NoUrl => "--redis-url / REDIS_URL",
            Self::PoolSize => "the redis pool size",
            Self::LeaseTtl => "--lease-ttl / LEASE_TTL",
        }
    }
}

/// Where the Redis backend connects and how it names its keys.
///
/// Its `Debug` hides the URL's credentials, so options can be logged.
#[derive(Clone)]
pub struct RedisOptions {
    /// A `redis://` (or `unix://`) URL (`rediss://` is refused at start:
    /// this build has no TLS to Redis); with [`cluster`], the
    /// comma-separated URLs of one or more of the Cluster's nodes (seeds:
    /// the rest of the Cluster is discovered from them).
    ///
    /// [`cluster`]: RedisOptions::cluster
    pub url: String,
    /// Whether `url` names a Redis Cluster's nodes rather than one Redis.
    /// The keys, scripts and channels are the same either way.
    pub cluster: bool,
    /// The prefix of every key and of the event channel, so that several
    /// Pulse deployments (or tests) can share one Redis. Default `pulse`.
    pub namespace: String,
    /// How many pooled command connections to keep at most, on a Cluster.
    /// One Redis gets one shared multiplexed connection, which pipelines
    /// what many callers send at once.
    pub pool_size: usize,
    /// How long an instance's lease lasts without renewal. Instances renew
    /// every third of it; one that stops is reaped once it expires.
    pub lease_ttl: Duration,
    /// Whether this process subscribes to the events channel (default
    /// true). Without it [`Presence::subscribe`](crate::Presence::subscribe) gets nothing from other
    /// processes: for a gateway, which needs only its commands and would
    /// otherwise receive (and decode) every event of the fleet.
    pub subscribe_events: bool,
    /// With `subscribe_events`: subscribe only while something here takes
    /// events ([`Presence::subscribe`](crate::Presence::subscribe) has a
    /// live receiver: a `Watch` stream, a webhook target), and let the
    /// subscription go [`EVENTS_IDLE_AFTER`] after the last one went
    /// (default false). A consumer that comes while it is down starts with
    /// the bus not vouching for anything ([`Presence::bus_epoch`](crate::Presence::bus_epoch)
    /// moves when it is back), so an `EventTail` reads the log until then.
    /// `pulse-presence` sets it: every connection, join and leave of the
    /// fleet cost it a push, a wake-up and a decode that nobody read.
    pub events_on_demand: bool,
}

/// How long the bus stays subscribed to the events channel after its last
/// consumer went, with [`RedisOptions::events_on_demand`].
pub const EVENTS_IDLE_AFTER: Duration = Duration::from_secs(10);

impl RedisOptions {
    /// Options for `url` with the default namespace (`pulse`) and pool size (16).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            cluster: false,
            namespace: "pulse".to_owned(),
            pool_size: 16,
            lease_ttl: DEFAULT_LEASE_TTL,
            subscribe_events: true,
            events_on_demand: false,
        }
    }

    /// Options for a Redis Cluster reached through `nodes` (any of its
    /// nodes' URLs; one is enough, more survive a node being down).
    pub fn cluster<S: AsRef<str>>(nodes: impl IntoIterator<Item = S>) -> Self {
        let urls: Vec<String> = nodes
            .into_iter()
            .map(|node| node.as_ref().to_owned())
            .collect();
        Self {
            cluster: true,
            ..Self::new(urls.join(","))
        }
    }

    /// The URLs in [`RedisOptions::url`], split at commas.
    pub(crate) fn urls(&self) -> Vec<&str> {
        self.url
            .split(',')
            .map(str::trim)
            .filter(|url| !url.is_empty())
            .collect()
    }

    /// The same options with another namespace.
    #[must_use]
    pub fn with_namespace(mut self, namespace: impl Into<String>) -> Self {
        self.namespace = namespace.into();
        self
    }

    /// Checks the options without connecting: the namespace, that several
    /// URLs come with cluster mode, the pool size and the lease ttl. Whether
    /// each URL parses is checked where the connections are made.
    ///
    /// # Errors
    ///
    /// The first [`RedisOptionsError`] found.
    pub fn validate(&self) -> Result<(), RedisOptionsError> {
        if self.namespace.is_empty() || self.namespace.contains(['{', '}']) {
            return Err(RedisOptionsError::Namespace(self.namespace.clone()));
        }
        match self.urls().len() {
            0 => return Err(RedisOptionsError::NoUrl),
            1 => {}
            _ if !self.cluster => return Err(RedisOptionsError::SeveralUrlsNeedCluster),
            _ => {}
        }
        if self.pool_size == 0 {
            return Err(RedisOptionsError::PoolSize);
        }
        if self.lease_ttl < MIN_LEASE_TTL {
            return Err(RedisOptionsError::LeaseTtl);
        }
        Ok(())
    }
}

impl std::fmt::Debug for RedisOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `redis://user:password@host` -> `redis://<redacted>@host`, per URL.
        let url = self
            .urls()
            .into_iter()
            .map(|url| match (url.find("://"), url.rfind('@')) {
                (Some(scheme), Some(at)) if at > scheme => {
                    format!("{}<redacted>{}", &url[..scheme + 3], &url[at..])
                }
                _ => url.to_owned(),
            })
            .collect::<Vec<_>>()
            .join(",");
        f.debug_struct("RedisOptions")
            .field("url", &url)
            .field("cluster", &self.cluster)
            .field("namespace", &self.namespace)
            .field("pool_size", &self.pool_size)
            .field("lease_ttl", &self.lease_ttl)
            .field("subscribe_events", &self.subscribe_events)
            .field("events_on_demand", &self.events_on_demand)
            .finish()
    }
}

impl Default for RedisOptions {
    fn default() -> Self {
        Self::new("redis://127.0.0.1:6379")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_debug_hides_credentials() {
        let options = RedisOptions::new("redis://user:s3cret@redis.internal:6379/0");
        let shown = format!("{options:?}");
        assert!(!shown.contains("s3cret"), "{shown}");
        assert!(
            shown.contains("redis://<redacted>@redis.internal:6379/0"),
            "{shown}"
        );
        assert!(format!("{:?}", RedisOptions::default()).contains("redis://127.0.0.1:6379"));
        let cluster = RedisOptions::cluster(["redis://:pw1@a:7000", "redis://b:7001"]);
        let shown = format!("{cluster:?}");
        assert!(!shown.contains("pw1"), "{shown}");
        assert!(
            shown.contains("redis://<redacted>@a:7000,redis://b:7001"),
            "{shown}"
        );
        assert!(cluster.cluster);
        assert_eq!(cluster.urls(), ["redis://:pw1@a:7000", "redis://b:7001"]);
    }

    #[test]
    fn validate_names_the_setting_of_each_bad_option() {
        use RedisOptionsError::*;
        let cases = [
            (
                RedisOptions::default().with_namespace(""),
                Namespace(String::new()),
            ),
            (
                RedisOptions::default().with_namespace("a{b}"),
                Namespace("a{b}".to_owned()),
            ),
            (
                RedisOptions::new("redis://a:1,redis://b:2"),
                SeveralUrlsNeedCluster,
            ),
            (RedisOptions::new(" , "), NoUrl),
            (RedisOptions::cluster(Vec::<String>::new()), NoUrl),
            (
                RedisOptions {
                    pool_size: 0,
                    ..RedisOptions::default()
                },
                PoolSize,
            ),
            (
                RedisOptions {
                    lease_ttl: MIN_LEASE_TTL - Duration::from_millis(1),
                    ..RedisOptions::default()
                },
                LeaseTtl,
            ),
        ];
        for (options, expected) in cases {
            assert_eq!(options.validate(), Err(expected.clone()), "{options:?}");
        }
        assert_eq!(
            Namespace(String::new()).flag(),
            "--redis-namespace / REDIS_NAMESPACE"
        );
        assert_eq!(SeveralUrlsNeedCluster.flag(), "--redis-url / REDIS_URL");
        assert_eq!(LeaseTtl.flag(), "--lease-ttl / LEASE_TTL");
        assert!(LeaseTtl.to_string().contains(&format!("{MIN_LEASE_TTL:?}")));

        for good in [
            RedisOptions::default(),
            RedisOptions::cluster(["redis://a:1", "redis://b:2"]),
            RedisOptions {
                lease_ttl: MIN_LEASE_TTL,
                ..RedisOptions::default()
            },
        ] {
            assert_eq!(good.validate(), Ok(()), "{good:?}");
        }
    }
}
