//! Metrics with the whole stack ([`Stack`]): the gateway's, `pulse-auth`'s and
//! `pulse-presence`'s `/metrics` move with the traffic they served.

use std::time::Duration;

use futures_util::SinkExt;
use pulse_e2e::*;
use tokio_tungstenite::tungstenite::Message;

#[tokio::test]
async fn metrics_move_with_traffic() {
    let stack = Stack::start().await;
    let gateway = stack.gateways[0].addr;
    let scrape = |addr: std::net::SocketAddr| async move {
        let (status, body) = get(addr, "/metrics").await;
        assert_eq!(status, 200, "{body}");
        body
    };
    // pulse-presence takes events off the bus only while something reads
    // them: a Watch of everyone, held to the end, once its bus has
    // subscribed (the gateways do not subscribe to events).
    let _watch = watch(&mut stack.presence.clone(), &[]).await;
    let (redis_url, events_channel) = (
        stack.redis.url().to_owned(),
        format!("{}:events", stack.namespace),
    );
    eventually(
        "pulse-presence subscribed to the events",
        Duration::from_secs(10),
        || {
            let (redis_url, events_channel) = (redis_url.clone(), events_channel.clone());
            async move {
                let mut redis = redis::Client::open(redis_url)
                    .unwrap()
                    .get_multiplexed_async_connection()
                    .await
                    .unwrap();
                let (_, subscribers): (String, u64) = redis::cmd("PUBSUB")
                    .arg("NUMSUB")
                    .arg(&events_channel)
                    .query_async(&mut redis)
                    .await
                    .unwrap();
                subscribers == 1
            }
        },
    )
    .await;
    let before = scrape(gateway).await;
    let mut client = connect(gateway, &format!("?token={}", token("dave"))).await;
    next_json(&mut client).await;
    client
        .send(Message::text(r#"{"type":"ping","id":1}"#))
        .await
        .unwrap();
    next_json(&mut client).await;
    let after = scrape(gateway).await;
    assert_eq!(
        metric(&after, "pulse_gateway_connects_total"),
        metric(&before, "pulse_gateway_connects_total") + 1.0
    );
    assert_eq!(metric(&after, "pulse_gateway_connections"), 1.0);
    assert!(metric(&after, "pulse_gateway_messages_in_total") >= 1.0);
    // Its first lease renewal re-syncs presence (no lease held yet).
    eventually(
        "the gateway timed its first re-sync",
        Duration::from_secs(10),
        || async move {
            scrape(gateway)
                .await
                .contains("pulse_gateway_resync_seconds_count{reason=\"repair\",outcome=\"ok\"}")
        },
    )
    .await;
    assert!(
        after.contains("pulse_gateway_auth_seconds_bucket"),
        "{after}"
    );
    assert!(
        after.contains("pulse_presence_redis_seconds_bucket{op=\"register\""),
        "{after}"
    );

    drop(client);
    eventually(
        "the disconnect counted",
        Duration::from_secs(10),
        || async move {
            let body = scrape(gateway).await;
            body.contains("pulse_gateway_disconnects_total{phase=\"live\"")
                && metric(&body, "pulse_gateway_connections") == 0.0
        },
    )
    .await;

    // pulse-presence serves its own on --metrics-listen: the events it saw
    // while the Watch read them.
    let presence_metrics: std::net::SocketAddr = stack
        .presence_service
        .log_field("serving metrics", "metrics_addr")
        .expect("pulse-presence logs its metrics address")
        .parse()
        .unwrap();
    // pulse-auth counts its validations.
    let auth_metrics: std::net::SocketAddr = stack
        .auth_service
        .log_field("serving metrics", "metrics_addr")
        .expect("pulse-auth logs its metrics address")
        .parse()
        .unwrap();
    let body = scrape(auth_metrics).await;
    assert!(
        body.contains("pulse_auth_validations_total{result=\"ok\"}"),
        "{body}"
    );
    assert!(
        body.contains("pulse_auth_validate_seconds_bucket"),
        "{body}"
    );

    eventually(
        "presence counted the events",
        Duration::from_secs(10),
        || async move {
            let body = scrape(presence_metrics).await;
            body.contains("pulse_presence_events_total{kind=\"connected\"}")
                && body.contains("pulse_presence_events_total{kind=\"offline\"}")
        },
    )
    .await;
}

/// The value of an unlabelled metric (0 when absent).
fn metric(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            let (key, value) = line.split_once(' ')?;
            (key == name).then(|| value.trim().parse().ok())?
        })
        .unwrap_or(0.0)
}
