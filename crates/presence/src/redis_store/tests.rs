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
    let sent = RedisStore::each_bucket_answered_on(&conn, |_handle, bucket| async move {
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

    // Bucket 0 answers after 10 s (a master that is away): the next wave
    // goes SWEEP_WAIT after the first, and the rest as they answer.
    let start = tokio::time::Instant::now();
    let sent = RedisStore::each_bucket_answered_on(&conn, |_handle, bucket| async move {
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

/// A re-sync reads the buckets in waves, each once the last answered, each
/// sized from what the last one held to about SYNC_WAVE_ENTRIES: an
/// instance with nothing to read takes two waves, a large one many small
/// ones, and a failure ends it.
#[tokio::test(start_paused = true)]
async fn a_resync_reads_in_waves_sized_by_what_the_last_held() {
    use std::time::Duration;
    let conn = RedisConn::new(&RedisOptions::new("redis://127.0.0.1:1")).expect("valid options");
    // Each bucket holds `per_bucket` entries; each read answers in 1 ms.
    let waves = |per_bucket: usize| {
        let conn = &conn;
        async move {
            let start = tokio::time::Instant::now();
            let sent = RedisStore::each_bucket_read_on(
                conn,
                |(_, held): &(Duration, usize)| *held,
                |_handle, _bucket| async move {
                    let sent = start.elapsed();
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    Ok::<_, redis::RedisError>((sent, per_bucket))
                },
            )
            .await
            .expect("no read fails");
            assert_eq!(sent.len(), usize::from(BUCKETS));
            let mut sizes: BTreeMap<Duration, usize> = BTreeMap::new();
            for (at, _) in sent {
                *sizes.entry(at).or_default() += 1;
            }
            sizes.into_values().collect::<Vec<_>>()
        }
    };
    assert_eq!(waves(0).await, [4, 124], "nothing held: the rest at once");
    assert_eq!(waves(1_000).await, vec![4; 32]);
    let mut halves = vec![4];
    halves.extend(vec![2; 62]);
    assert_eq!(waves(2_000).await, halves);
    assert_eq!(waves(100).await, [4, 40, 40, 40, 4]);

    // A failure ends the reads: the waves after it are not sent.
    let asked = std::sync::atomic::AtomicU16::new(0);
    let result = RedisStore::each_bucket_read_on(
        &conn,
        |_: &()| 1_000,
        |_handle, bucket| {
            asked.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async move {
                if bucket == 5 {
                    Err(redis::RedisError::from((redis::ErrorKind::Io, "gone")))
                } else {
                    Ok(())
                }
            }
        },
    )
    .await;
    assert!(
        matches!(result, Err(PresenceError::Unavailable(_))),
        "{result:?}"
    );
    assert_eq!(
        asked.load(std::sync::atomic::Ordering::Relaxed),
        8,
        "two waves of 4"
    );
}
