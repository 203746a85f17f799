//! Commands to a listening instance, and a full queue.

use super::*;

pub(super) async fn commands_reach_the_listening_instance(presence: Presence) {
    use pulse_protocol::Command;
    use serde_json::value::RawValue;

    let mut commands = presence.listen_commands("gw-1");
    register(&presence, "alice", "c1", "gw-1", 1).await;
    register(&presence, "alice", "c2", "gw-1", 2).await;

    // With Redis the bus subscribes in the background; once it says it has,
    // a send reaches both connections at the first try.
    tokio::time::timeout(
        std::time::Duration::from_secs(10),
        presence.commands_ready("gw-1"),
    )
    .await
    .expect("the command channel is subscribed");
    let data = RawValue::from_string(r#"{"n":18446744073709551615}"#.into()).unwrap();
    assert_eq!(presence.send("alice", data).await.unwrap(), 2);
    match commands.recv().await.unwrap() {
        Command::Send { user_id, data } => {
            assert_eq!(user_id, "alice");
            assert_eq!(data.get(), r#"{"n":18446744073709551615}"#);
        }
        other => panic!("{other:?}"),
    }

    assert_eq!(
        presence
            .disconnect("alice", Some("c2"), "bye")
            .await
            .unwrap(),
        1
    );
    match commands.recv().await.unwrap() {
        Command::Disconnect {
            user_id,
            connection_id,
            reason,
        } => {
            assert_eq!(
                (user_id.as_str(), connection_id.as_deref(), reason.as_str()),
                ("alice", Some("c2"), "bye")
            );
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        presence
            .disconnect("alice", Some("nope"), "bye")
            .await
            .unwrap(),
        0
    );
    let one = RawValue::from_string("1".into()).unwrap();
    assert_eq!(
        presence.send("bob", one).await.unwrap(),
        0,
        "offline users get nothing"
    );
    assert!(commands.try_recv().is_err(), "nothing else was delivered");

    let too_big = RawValue::from_string(format!(
        "\"{}\"",
        "x".repeat(pulse_presence::MAX_DATA_BYTES)
    ))
    .unwrap();
    assert!(matches!(
        presence.send("alice", too_big).await,
        Err(PresenceError::InvalidArgument(_))
    ));
}

/// A gateway that does not keep up fills its command queue: what it cannot
/// take must be counted as not delivered, and what was counted must arrive.
pub(super) async fn a_full_command_queue_counts_only_what_it_takes(presence: Presence) {
    use futures_util::future::join_all;
    use pulse_protocol::Command;
    use serde_json::value::RawValue;

    // Past the queue's capacity (16,384), with nobody reading.
    const SENT: u64 = 17_500;
    let mut commands = presence.listen_commands("gw-slow");
    register(&presence, "alice", "c1", "gw-slow", 1).await;
    tokio::time::timeout(support::DEADLINE, presence.commands_ready("gw-slow"))
        .await
        .expect("the command channel is subscribed");
    let numbers: Vec<u64> = (0..SENT).collect();
    let mut counted = 0;
    for chunk in numbers.chunks(100) {
        let sends = chunk.iter().map(|n| {
            let data = RawValue::from_string(n.to_string()).unwrap();
            presence.send("alice", data)
        });
        for sent in join_all(sends).await {
            counted += sent.unwrap();
        }
    }
    assert!(counted < SENT, "a full queue cannot have taken all {SENT}");

    // Now the gateway reads; once this instance takes commands again, a
    // last one marks the end of what was sent.
    let reader = tokio::spawn(async move {
        let mut received = 0_u64;
        loop {
            match commands.recv().await.expect("the listener is open") {
                Command::Send { data, .. } if data.get() == "\"end\"" => return received,
                Command::Send { .. } => received += 1,
                other => panic!("{other:?}"),
            }
        }
    });
    tokio::time::timeout(support::DEADLINE, presence.commands_ready("gw-slow"))
        .await
        .expect("the instance takes commands again once its queue drains");
    // In memory the queue takes it as soon as the reader made room; a try
    // that finds no room is counted as not delivered, and is not.
    let deadline = tokio::time::Instant::now() + support::DEADLINE;
    loop {
        let end = RawValue::from_string("\"end\"".to_owned()).unwrap();
        if presence.send("alice", end).await.unwrap() == 1 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no room for the marker"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let received = tokio::time::timeout(support::DEADLINE, reader)
        .await
        .expect("the marker arrives")
        .unwrap();
    assert_eq!(
        received, counted,
        "every command counted as delivered arrived, and only those"
    );
}
