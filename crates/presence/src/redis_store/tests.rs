use super::*;

#[test]
fn bad_options_are_invalid_arguments() {
    for options in [
        RedisOptions::new("not a url"),
        RedisOptions::default().with_namespace(""),
        RedisOptions::default().with_namespace("a{b}"),
        RedisOptions {
            pool_size: 0,
            ..RedisOptions::default()
        },
        // Several nodes are a cluster's, and a cluster needs one.
        RedisOptions::new("redis://a:1,redis://b:2"),
        RedisOptions::cluster(Vec::<String>::new()),
        RedisOptions::cluster(["redis://a:1", "not a url"]),
        RedisOptions {
            lease_ttl: crate::MIN_LEASE_TTL / 2,
            ..RedisOptions::default()
        },
    ] {
        assert!(matches!(
            RedisStore::new(&options),
            Err(PresenceError::InvalidArgument(_))
        ));
    }
}
