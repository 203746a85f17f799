//! A rolling deploy, the whole system: a real redis-server, the real
//! pulse-presence (reaping every 100 ms) and a pulse-gateway with a 300 ms
//! lease that gets SIGTERM and drains for 6 s. A socket whose turn to close
//! has not come stays online as `GetUser` sees it, is never reaped, and is
//! reached by `Send`; it goes offline when it closes.

use std::time::Duration;

use pulse_e2e::*;
use pulse_presence::{ConnectionRecord, Presence, RedisOptions, bucket_of};
use pulse_protocol::proto::presence::v1::SendRequest;

const DEADLINE: Duration = Duration::from_secs(10);

#[tokio::test]
async fn sockets_still_open_during_a_drain_stay_online_and_reachable() {
    let redis = RedisServer::start().await;
    let namespace = unique_namespace();
    let presence_service =
        Service::presence(redis.url(), &namespace, &["--reap-interval", "100ms"]).await;
    let mut gateway = Service::gateway(
        redis.url(),
        &namespace,
        &[
            "--instance-id",
            "gw-deploy",
            "--lease-ttl",
            "300ms",
            "--drain-spread",
            "6s",
            "--drain-timeout",
            "15s",
        ],
    )
    .await;
    let mut presence = pulse_e2e::presence_client(presence_service.grpc_url()).await;

    let users = ["dana", "eli", "fay"];
    let mut clients = Vec::new();
    for user in users {
        let mut client = connect(gateway.addr, &format!("?token={}", token(user))).await;
        assert_eq!(next_json(&mut client).await["type"], "connected");
        clients.push(client);
    }
    for user in users {
        eventually("online", DEADLINE, || {
            let mut presence = presence.clone();
            async move { get_user(&mut presence, user).await.online }
        })
        .await;
    }

    gateway.sigterm().await;

    // A witness in each user's bucket, made after SIGTERM: a connection of an
    // instance that never renews, under a lease twice the gateway's. Once
    // pulse-presence has reaped them all, a gateway lease not renewed since
    // SIGTERM would have run out and been reaped too.
    let mut options = RedisOptions::new(redis.url()).with_namespace(&namespace);
    options.lease_ttl = Duration::from_millis(600);
    let witness = Presence::redis(options).unwrap();
    let mut probes: Vec<String> = Vec::new();
    for user in users {
        let probe = (0..)
            .map(|n| format!("probe-{n}"))
            .find(|probe| bucket_of(probe) == bucket_of(user) && !probes.contains(probe))
            .unwrap();
        witness
            .register(&ConnectionRecord {
                connection_id: format!("{probe}-c"),
                user_id: probe.clone(),
                instance_id: "probe".to_owned(),
                connected_at_ms: 1,
            })
            .await
            .unwrap();
        probes.push(probe);
    }
    for probe in &probes {
        eventually("the witness reaped", DEADLINE, || {
            let mut presence = presence.clone();
            async move { !get_user(&mut presence, probe).await.online }
        })
        .await;
    }

    // Sockets close 0, 2 and 4 s into the drain: at least two are still
    // served, hence online, and a Send reaches them.
    let mut still_online = Vec::new();
    for (n, user) in users.iter().enumerate() {
        if get_user(&mut presence, user).await.online {
            still_online.push(n);
        }
    }
    assert!(
        still_online.len() >= 2,
        "sockets whose turn had not come went offline during the drain: only {still_online:?} \
         online"
    );
    for &n in &still_online {
        let sent = presence
            .send(SendRequest {
                user_id: users[n].into(),
                data_json: format!("{{\"n\":{n}}}"),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(sent.connections, 1);
        let message = next_json(&mut clients[n]).await;
        assert_eq!(message["type"], "publication", "{message}");
        assert_eq!(message["data"]["n"], n, "{message}");
    }

    // Each closes with 1001 at its turn, and goes offline then.
    for &n in &still_online {
        let error = next_json(&mut clients[n]).await;
        assert_eq!(error["code"], "going_away", "{error}");
        eventually("offline once closed", DEADLINE, || {
            let mut presence = presence.clone();
            let user = users[n];
            async move { !get_user(&mut presence, user).await.online }
        })
        .await;
    }
    let status = gateway.wait_exit().await;
    assert!(status.success(), "gateway exit status {status}");
}
