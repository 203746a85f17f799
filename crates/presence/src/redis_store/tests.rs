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

/// A periodic sweep (lease renewals, the reaper, the log trim) puts at most
/// SWEEP_WAVE buckets' commands in front of Redis at once: sent together,
/// 128 of them held Redis, and every publication queued behind them on the
/// same multiplexed connection, for milliseconds each second.
#[tokio::test(start_paused = true)]
async fn a_sweep_sends_its_buckets_in_paced_waves() {
    // The connection is made lazily; the operation below never uses it.
    let conn = RedisConn::new(&RedisOptions::new("redis://127.0.0.1:1")).expect("valid options");
    let start = tokio::time::Instant::now();
    let sent = RedisStore::each_bucket_paced_on(&conn, |_handle, bucket| async move {
        Ok::<_, redis::RedisError>((bucket, start.elapsed()))
    })
    .await
    .expect("no command fails");
    assert_eq!(
        sent.iter().map(|(bucket, _)| *bucket).collect::<Vec<_>>(),
        (0..BUCKETS).collect::<Vec<_>>(),
        "every bucket once, in bucket order"
    );
    let mut waves: BTreeMap<std::time::Duration, u16> = BTreeMap::new();
    for (_, at) in &sent {
        *waves.entry(*at).or_default() += 1;
    }
    assert_eq!(
        waves.len(),
        usize::from(BUCKETS.div_ceil(SWEEP_WAVE)),
        "{waves:?}"
    );
    assert!(waves.values().all(|sent| *sent <= SWEEP_WAVE), "{waves:?}");
    let instants: Vec<_> = waves.keys().copied().collect();
    assert_eq!(
        instants[0],
        std::time::Duration::ZERO,
        "the first wave goes at once"
    );
    assert!(
        instants
            .windows(2)
            .all(|pair| pair[1] - pair[0] >= SWEEP_PAUSE),
        "{instants:?}"
    );
}

/// A sweep whose commands can be heavy (the reaper, the log trim) sends the
/// next wave only once this one answered: waves sent on a timer alone pile
/// up in Redis's input when each takes longer than the pause, and Redis runs
/// the pile in one go. A bucket that does not answer holds the sweep up by
/// SWEEP_WAIT at most.
#[tokio::test(start_paused = true)]
async fn a_heavy_sweep_sends_a_wave_once_the_last_answered() {
    use std::time::Duration;
    let conn = RedisConn::new(&RedisOptions::new("redis://127.0.0.1:1")).expect("valid options");
    let start = tokio::time::Instant::now();
    // Every command takes 10 ms to answer, longer than the pause.
    let sent =
        RedisStore::each_bucket_answered_on(&conn, SWEEP_PAUSE, |_handle, bucket| async move {
            let sent = start.elapsed();
            tokio::time::sleep(Duration::from_millis(10)).await;
            Ok::<_, redis::RedisError>((bucket, sent))
        })
        .await
        .expect("no command fails");
    assert_eq!(
        sent.iter().map(|(bucket, _)| *bucket).collect::<Vec<_>>(),
        (0..BUCKETS).collect::<Vec<_>>()
    );
    for (bucket, at) in &sent {
        let wave = u32::from(*bucket / SWEEP_WAVE);
        assert_eq!(*at, Duration::from_millis(10) * wave, "bucket {bucket}");
    }

    // Answers in 1 ms, quicker than the pause: a sweep waits out the pause,
    // a re-sync's read goes on at once.
    for (pause, step) in [
        (SWEEP_PAUSE, SWEEP_PAUSE),
        (SYNC_PAUSE, Duration::from_millis(1)),
    ] {
        let start = tokio::time::Instant::now();
        let sent =
            RedisStore::each_bucket_answered_on(&conn, pause, |_handle, _bucket| async move {
                let sent = start.elapsed();
                tokio::time::sleep(Duration::from_millis(1)).await;
                Ok::<_, redis::RedisError>(sent)
            })
            .await
            .expect("no command fails");
        for (bucket, at) in sent.iter().enumerate() {
            let wave = u32::try_from(bucket).unwrap() / u32::from(SWEEP_WAVE);
            assert_eq!(*at, step * wave, "bucket {bucket}, pause {pause:?}");
        }
    }

    // Bucket 0 answers after 10 s (a master that is away): the next wave
    // goes SWEEP_WAIT after the first, and the rest as they answer.
    let start = tokio::time::Instant::now();
    let sent =
        RedisStore::each_bucket_answered_on(&conn, SWEEP_PAUSE, |_handle, bucket| async move {
            let sent = start.elapsed();
            let answer_after = if bucket == 0 { 10_000 } else { 10 };
            tokio::time::sleep(Duration::from_millis(answer_after)).await;
            Ok::<_, redis::RedisError>(sent)
        })
        .await
        .expect("no command fails");
    assert_eq!(sent[usize::from(SWEEP_WAVE)], SWEEP_WAIT);
    assert_eq!(
        sent[usize::from(BUCKETS - 1)],
        SWEEP_WAIT + Duration::from_millis(10) * u32::from(BUCKETS / SWEEP_WAVE - 2)
    );
    assert_eq!(
        start.elapsed(),
        Duration::from_secs(10),
        "it waits for every answer"
    );
}
