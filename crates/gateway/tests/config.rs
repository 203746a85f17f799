//! The Redis and lease flags of `pulse-gateway`: judged by
//! `pulse_presence::RedisOptions::validate` (and `MIN_LEASE_TTL`), the same
//! check `pulse-presence` makes, with one line naming the flag.

use clap::Parser;
use pulse_gateway::Config;

fn build(args: &[&str]) -> Result<pulse_gateway::config::Built, String> {
    Config::try_parse_from(
        ["pulse-gateway", "--jwt-secret", "a-test-secret"]
            .iter()
            .chain(args),
    )
    .expect("parses")
    .build()
    .map_err(|error| error.to_string())
}

#[tokio::test]
async fn bad_redis_and_lease_settings_name_their_flag() {
    for (args, says) in [
        (
            &["--redis-url", "redis://a:1,redis://b:2"][..],
            "--redis-url / REDIS_URL: several URLs name Redis Cluster nodes; set --redis-cluster",
        ),
        (
            &["--redis-url", "redis://a:1", "--redis-namespace", "a{b}"],
            "--redis-namespace / REDIS_NAMESPACE: must be non-empty and without braces",
        ),
        (
            &["--lease-ttl", "299ms"],
            "--lease-ttl / LEASE_TTL: must be at least 300ms",
        ),
        (
            &["--redis-url", "redis://a:1", "--lease-ttl", "100ms"],
            "--lease-ttl / LEASE_TTL: must be at least 300ms",
        ),
    ] {
        let Err(error) = build(args) else {
            panic!("{args:?} was accepted");
        };
        assert!(error.contains(says), "{args:?}: {error}");
        assert!(!error.contains('\n'), "one line: {error}");
    }
    let built = build(&[
        "--redis-url",
        "redis://a:1,redis://b:2",
        "--redis-cluster",
        "--lease-ttl",
        "300ms",
    ]);
    assert!(built.is_ok(), "{:?}", built.err());
}
