//! The shared backend: keys, scripts and queries on Redis or a Redis Cluster.
//!
//! State is sharded into [`BUCKETS`] buckets by user (see `buckets.rs` for
//! the function and the key names). Bucket `k`'s keys all carry the hash tag
//! `{b<k>}`, so each bucket is one slot and a small copy of the whole model:
//!
//! - `<ns>:{b<k>}:user:<user_id>`: HASH connection id ->
//!   `"<connected_at_ms>|<instance_id>"`, the truth about one user.
//! - `<ns>:{b<k>}:instance:<instance_id>`: HASH connection id -> user id,
//!   what an instance holds in the bucket, to remove it at once.
//! - `<ns>:{b<k>}:online`: SET of the bucket's users whose hash is not empty.
//! - `<ns>:{b<k>}:connections`: the bucket's number of connections.
//! - `<ns>:{b<k>}:instances`: ZSET instance id -> lease deadline (ms, Redis's
//!   clock); an instance past its deadline died without saying goodbye and
//!   is reaped from the bucket. A deadline a renewal did not write (a
//!   registration created the lease, or a restart carried it over) has an
//!   extra half millisecond: the next renewal answers "not held".
//! - `<ns>:{b<k>}:lease_clock`: `"<ms>|<run_id>"`, when which Redis process
//!   last looked at the bucket's leases; a script that finds another
//!   process's run id (Redis restarted with its data, a replica promoted)
//!   first moves every deadline later by the time since. The scripts name
//!   it from the `instances` key (see `lua/prelude.lua`).
//! - `<ns>:events`: the classic pub/sub channel that carries
//!   [`PresenceEvent`] JSON (a Cluster forwards it to every node).
//! - `<ns>:commands:{<instance_id>}`: the sharded pub/sub channel that
//!   carries commands (send, disconnect) to one instance.
//!
//! Every change is one Lua script (`src/lua/`) on one bucket that updates
//! the keys and publishes the events together, so nothing reads, decides and
//! writes from Rust. What concerns every bucket (an instance's lease, its
//! purge, the reaper, counting) runs the bucket's script or query on each
//! bucket on one multiplexed connection: all at once for a call someone
//! waits on, in paced waves for the periodic sweeps (lease renewals on a
//! timer; the reaper and the log trim each wave once the last answered),
//! so that they never hold Redis for long.
//!
//! [`PresenceEvent`]: pulse_protocol::PresenceEvent

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    future::Future,
    sync::LazyLock,
};

use futures_util::future::{join_all, try_join, try_join_all};
use pulse_protocol::{Command, event::now_ms};
use redis::{RedisResult, Script};

use crate::{
    ConnectionRecord, PresenceError, RedisOptions, SyncReport,
    buckets::{BUCKETS, Keys, bucket_of},
    redis_conn::{Handle, RedisConn},
    user_entry::UserEntry,
};

mod admission;
mod channels;
mod events;
mod history;
mod leases;
mod members;
mod queries;
mod webhooks;
#[cfg(test)]
mod wire_tests;

macro_rules! script {
    ($file:literal) => {
        LazyLock::new(|| {
            Script::new(concat!(
                include_str!("lua/prelude.lua"),
                include_str!($file)
            ))
        })
    };
}

static REGISTER: LazyLock<Script> = script!("lua/register.lua");
static UNREGISTER: LazyLock<Script> = script!("lua/unregister.lua");
static UNREGISTER_INSTANCE: LazyLock<Script> = script!("lua/unregister_instance.lua");
pub(super) static RENEW_LEASE: LazyLock<Script> = script!("lua/renew_lease.lua");
pub(super) static REAP: LazyLock<Script> = script!("lua/reap.lua");
static ENTER_CHANNEL: LazyLock<Script> = script!("lua/enter_channel.lua");
static LEAVE_CHANNEL: LazyLock<Script> = script!("lua/leave_channel.lua");
static CHANNEL_PRESENCE: LazyLock<Script> = script!("lua/channel_presence.lua");

/// How many expired instances one reap call removes at most, per bucket.
pub(super) const REAP_BATCH: usize = 64;
/// How many registrations one re-sync pipeline carries.
const SYNC_BATCH: usize = 500;

/// The Redis backend: its command connection ([`RedisConn`]: one
/// multiplexed connection, or a pool of them on a Cluster), and what the bus
/// needs for its own pub/sub connection (which neither can lend).
pub(crate) struct RedisStore {
    conn: RedisConn,
    /// The lease renewals' own connection (`redis_store/leases.rs`).
    lease_conn: RedisConn,
    subscriber: crate::bus::Nodes,
    keys: Keys,
    lease_ttl_ms: u64,
}

/// How many buckets a periodic sweep sends to Redis at once, and the pause
/// before the next such wave: 128 buckets go in 32 waves over 62 ms.
const SWEEP_WAVE: u16 = 4;
const SWEEP_PAUSE: std::time::Duration = std::time::Duration::from_millis(2);

/// When a sweep sends `bucket`'s command, after the sweep began.
fn sweep_delay(bucket: u16) -> std::time::Duration {
    SWEEP_PAUSE * u32::from(bucket / SWEEP_WAVE)
}

/// About how many entries (connections, memberships) one wave of a
/// re-sync's reads asks Redis for ([`RedisStore::each_bucket_read_on`]):
/// one bucket's `HKEYS` of about 590 memberships took Redis 250-300 us, so
/// a wave is about 1-2 ms of Redis.
const SYNC_WAVE_ENTRIES: usize = 4_000;

/// How long a sweep that waits for its waves' answers
/// ([`RedisStore::each_bucket_answered_on`]) waits for one wave before it
/// sends the next anyway (the first goes on running): a Cluster master that
/// is away delays such a sweep by at most this per wave.
const SWEEP_WAIT: std::time::Duration = std::time::Duration::from_millis(100);

/// Awaits every bucket's command together; their answers in bucket order,
/// or the first failure once all have ended.
async fn join_buckets<T>(
    per_bucket: impl Iterator<Item = impl Future<Output = RedisResult<T>>>,
) -> Result<Vec<T>, PresenceError> {
    join_all(per_bucket)
        .await
        .into_iter()
        .collect::<RedisResult<Vec<T>>>()
        .map_err(unavailable)
}

impl RedisStore {
    pub(crate) fn new(options: &RedisOptions) -> Result<Self, PresenceError> {
        options.validate().map_err(|error| {
            PresenceError::InvalidArgument(format!("{}: {error}", error.flag()))
        })?;
        let conn = RedisConn::new(options)?;
        let lease_conn = RedisConn::new(&RedisOptions {
            pool_size: 1,
            ..options.clone()
        })?;
        let subscriber = crate::bus::Nodes::new(&options.urls())?;
        let lease_ttl_ms = u64::try_from(options.lease_ttl.as_millis()).unwrap_or(u64::MAX);
        Ok(Self {
            conn,
            lease_conn,
            subscriber,
            keys: Keys::new(&options.namespace),
            lease_ttl_ms,
        })
    }

    pub(crate) fn lease_ttl(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.lease_ttl_ms)
    }

    pub(crate) fn keys(&self) -> &Keys {
        &self.keys
    }

    pub(crate) fn subscriber(&self) -> crate::bus::Nodes {
        self.subscriber.clone()
    }

    async fn handle(&self) -> Result<Handle, PresenceError> {
        self.conn.handle().await
    }

    /// Runs `operation` on every bucket at once (over one multiplexed
    /// connection, which pipelines them; a Cluster connection sends each to
    /// its slot's master) and collects the answers in bucket order.
    ///
    /// Every bucket runs to the end even when one fails, so that a Cluster
    /// master that is away does not keep the others from being renewed or
    /// reaped; then the first failure, if any, is the answer.
    async fn each_bucket<T, F, Fut>(&self, operation: F) -> Result<Vec<T>, PresenceError>
    where
        F: Fn(Handle, u16) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        Self::each_bucket_on(&self.conn, operation).await
    }

    /// [`RedisStore::each_bucket`] on `conn`.
    async fn each_bucket_on<T, F, Fut>(
        conn: &RedisConn,
        operation: F,
    ) -> Result<Vec<T>, PresenceError>
    where
        F: Fn(Handle, u16) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let handle = conn.handle().await?;
        join_buckets((0..BUCKETS).map(|bucket| operation(handle.clone(), bucket))).await
    }

    /// [`RedisStore::each_bucket_on`] for a periodic sweep of light
    /// commands (lease renewals), paced: [`SWEEP_WAVE`] buckets at
    /// a time, a [`SWEEP_PAUSE`] apart (see [`sweep_delay`]). Redis runs
    /// the commands one connection sent together back to back, and a
    /// multiplexed connection answers in order: 128 reap scripts sent at
    /// once held Redis (and every publication queued behind them on the
    /// same connection) for 3 to 10 ms on a two-core machine, once a
    /// second for the reaper and again for each gateway's renewals: a
    /// stall of publish calls each second at 5,000/s. Waves never wait
    /// for one another's answers, so a Cluster master that is away holds
    /// up only its own buckets, as before: a renewal must reach every
    /// other master in time. Sweeps whose commands can be heavy wait
    /// ([`RedisStore::each_bucket_answered_on`]).
    async fn each_bucket_paced_on<T, F, Fut>(
        conn: &RedisConn,
        operation: F,
    ) -> Result<Vec<T>, PresenceError>
    where
        F: Fn(Handle, u16) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let handle = conn.handle().await?;
        let operation = &operation;
        join_buckets((0..BUCKETS).map(|bucket| {
            let handle = handle.clone();
            async move {
                let delay = sweep_delay(bucket);
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                operation(handle, bucket).await
            }
        }))
        .await
    }

    /// [`RedisStore::each_bucket_paced_on`] for a sweep whose commands can
    /// be heavy (the reaper, after an instance with thousands of
    /// connections died; the event log's trim): the next wave goes once
    /// this one has answered, [`SWEEP_PAUSE`] after it went at the
    /// earliest and [`SWEEP_WAIT`] at the latest. Waves sent on a timer
    /// alone pile up in Redis's input for the connection when each takes
    /// longer than the pause, and Redis then runs the pile in one go: a
    /// reap after a `kill -9` of a gateway holding 20,000 connections held
    /// Redis for 210-260 ms that way (PING), 300 ms sent all at once.
    async fn each_bucket_answered_on<T, F, Fut>(
        conn: &RedisConn,
        operation: F,
    ) -> Result<Vec<T>, PresenceError>
    where
        F: Fn(Handle, u16) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        use futures_util::{StreamExt, stream::FuturesUnordered};
        use tokio::time::{Instant, sleep_until};

        let handle = conn.handle().await?;
        let operation = &operation;
        let mut answers: Vec<Option<RedisResult<T>>> = (0..BUCKETS).map(|_| None).collect();
        let mut in_flight = FuturesUnordered::new();
        for first in (0..BUCKETS).step_by(usize::from(SWEEP_WAVE)) {
            let wave = first..(first + SWEEP_WAVE).min(BUCKETS);
            for bucket in wave.clone() {
                let handle = handle.clone();
                in_flight.push(async move { (bucket, operation(handle, bucket).await) });
            }
            let sent = Instant::now();
            loop {
                let answered = wave
                    .clone()
                    .all(|bucket| answers[usize::from(bucket)].is_some());
                let next_at = sent + if answered { SWEEP_PAUSE } else { SWEEP_WAIT };
                tokio::select! {
                    Some((bucket, answer)) = in_flight.next(), if !in_flight.is_empty() => {
                        answers[usize::from(bucket)] = Some(answer);
                    }
                    () = sleep_until(next_at) => break,
                }
            }
        }
        while let Some((bucket, answer)) = in_flight.next().await {
            answers[usize::from(bucket)] = Some(answer);
        }
        answers
            .into_iter()
            .map(|answer| answer.expect("every bucket's command was awaited"))
            .collect::<RedisResult<Vec<T>>>()
            .map_err(unavailable)
    }

    /// A re-sync's reads of every bucket (an instance's connections, its
    /// memberships), in waves, each once the last has answered, and each
    /// sized from what the last one's answers held (`entries`) to about
    /// [`SYNC_WAVE_ENTRIES`]: the first asks [`SWEEP_WAVE`] buckets, and an
    /// instance with nothing there reads the rest in one more wave. Sent
    /// all at once, the reads of a gateway holding 15,000 connections with
    /// five subscriptions each held Redis for 33-37 ms; in fixed waves of
    /// four, an instance with nothing to read held its re-sync lock (the
    /// gateway's admissions, joins and leaves) for 32 round trips. The first
    /// failure ends it (the re-sync fails with it, so the rest is not
    /// asked).
    async fn each_bucket_read_on<T, F, Fut>(
        conn: &RedisConn,
        entries: impl Fn(&T) -> usize,
        operation: F,
    ) -> Result<Vec<T>, PresenceError>
    where
        F: Fn(Handle, u16) -> Fut,
        Fut: Future<Output = RedisResult<T>>,
    {
        let handle = conn.handle().await?;
        let mut answers = Vec::with_capacity(usize::from(BUCKETS));
        let (mut next, mut wave) = (0, SWEEP_WAVE);
        while next < BUCKETS {
            let end = next.saturating_add(wave).min(BUCKETS);
            let read =
                join_buckets((next..end).map(|bucket| operation(handle.clone(), bucket))).await?;
            let held: usize = read.iter().map(&entries).sum();
            let per_bucket = held / usize::from(end - next);
            wave = match per_bucket {
                0 => BUCKETS,
                per_bucket => u16::try_from(SYNC_WAVE_ENTRIES / per_bucket)
                    .unwrap_or(BUCKETS)
                    .clamp(1, BUCKETS),
            };
            answers.extend(read);
            next = end;
        }
        Ok(answers)
    }

    /// The register script with its keys and arguments, for one call or a
    /// pipeline: unconditional, for a connection that is open already.
    fn register_invocation(&self, record: &ConnectionRecord) -> redis::ScriptInvocation<'static> {
        self.admit_invocation(record, 0, false)
    }

    /// The register script refusing a user who holds `max_per_user` (0: no
    /// limit) or, with `honour_block`, who is blocked.
    fn admit_invocation(
        &self,
        record: &ConnectionRecord,
        max_per_user: u64,
        honour_block: bool,
    ) -> redis::ScriptInvocation<'static> {
        let bucket = bucket_of(&record.user_id);
        let mut invocation = REGISTER.prepare_invoke();
        invocation
            .key(self.keys.user(&record.user_id))
            .key(self.keys.instance(bucket, &record.instance_id))
            .key(self.keys.online(bucket))
            .key(self.keys.connections(bucket))
            .key(self.keys.instances(bucket))
            .key(self.keys.blocked(&record.user_id))
            .key(self.keys.subscriptions(&record.user_id))
            .arg(self.keys.channel())
            .arg(&record.user_id)
            .arg(&record.connection_id)
            .arg(&record.instance_id)
            .arg(record.connected_at_ms.to_string())
            .arg(self.lease_ttl_ms)
            .arg(max_per_user)
            .arg(if honour_block { "1" } else { "0" })
            // Admission answers with the user's server-side subscriptions.
            .arg(if honour_block { "1" } else { "0" });
        invocation
    }

    pub(crate) async fn register(&self, record: &ConnectionRecord) -> Result<(), PresenceError> {
        let mut handle = self.handle().await?;
        let _added: i64 = self
            .register_invocation(record)
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    pub(crate) async fn unregister(
        &self,
        user_id: &str,
        connection_id: &str,
    ) -> Result<(), PresenceError> {
        let mut handle = self.handle().await?;
        self.unregister_on(&mut handle, user_id, connection_id)
            .await
            .map_err(unavailable)
    }

    async fn unregister_on(
        &self,
        handle: &mut Handle,
        user_id: &str,
        connection_id: &str,
    ) -> RedisResult<()> {
        let bucket = bucket_of(user_id);
        let _removed: i64 = UNREGISTER
            .key(self.keys.user(user_id))
            .key(self.keys.online(bucket))
            .key(self.keys.connections(bucket))
            .arg(self.keys.channel())
            .arg(user_id)
            .arg(connection_id)
            .arg(now_ms().to_string())
            .arg(self.keys.instance_prefix(bucket))
            .invoke_async(handle)
            .await?;
        Ok(())
    }

    /// Publishes a command on the sharded channel of each instance holding
    /// the user's connections (or the one connection); returns the
    /// connections on instances that had a subscriber.
    ///
    /// Reading the user's hash and publishing are two steps, not one script:
    /// a script may only publish to a sharded channel of its own slot, and
    /// an instance's channel is in the instance's slot. Commands are a
    /// point-in-time, at-most-once delivery, so nothing depends on the two
    /// being atomic. `SPUBLISH` counts the subscribers on the channel's
    /// master, which is where every instance subscribes, so the count means
    /// the same on one Redis and on a Cluster.
    pub(crate) async fn dispatch(
        &self,
        command: &Command,
        only: Option<&str>,
    ) -> Result<u64, PresenceError> {
        let mut handle = self.handle().await?;
        let user = self.keys.user(command.user_id());
        let values: Vec<String> = match only {
            Some(connection_id) => redis::cmd("HGET")
                .arg(&user)
                .arg(connection_id)
                .query_async::<Option<String>>(&mut handle)
                .await
                .map_err(unavailable)?
                .into_iter()
                .collect(),
            None => redis::cmd("HVALS")
                .arg(&user)
                .query_async(&mut handle)
                .await
                .map_err(unavailable)?,
        };
        let mut per_instance: BTreeMap<&str, u64> = BTreeMap::new();
        for value in &values {
            *per_instance
                .entry(UserEntry::instance_of(value))
                .or_default() += 1;
        }
        let payload = command.encode();
        let reached = try_join_all(per_instance.into_iter().map(|(instance_id, count)| {
            let mut handle = handle.clone();
            let channel = self.keys.commands(instance_id);
            let payload = &payload;
            async move {
                let receivers: u64 = redis::cmd("SPUBLISH")
                    .arg(channel)
                    .arg(payload)
                    .query_async(&mut handle)
                    .await?;
                Ok::<_, redis::RedisError>(if receivers > 0 { count } else { 0 })
            }
        }))
        .await
        .map_err(unavailable)?;
        Ok(reached.into_iter().sum())
    }

    pub(crate) async fn unregister_instance(
        &self,
        instance_id: &str,
    ) -> Result<u64, PresenceError> {
        let at_ms = now_ms().to_string();
        let removed = self
            .each_bucket(|mut handle, bucket| {
                let invocation = {
                    let mut invocation = UNREGISTER_INSTANCE.prepare_invoke();
                    invocation
                        .key(self.keys.instance(bucket, instance_id))
                        .key(self.keys.online(bucket))
                        .key(self.keys.connections(bucket))
                        .key(self.keys.instances(bucket))
                        .arg(self.keys.channel())
                        .arg(instance_id)
                        .arg(&at_ms)
                        .arg(self.keys.user_prefix(bucket));
                    invocation
                };
                async move { invocation.invoke_async::<u64>(&mut handle).await }
            })
            .await?;
        Ok(removed.into_iter().sum())
    }

    /// Makes Redis hold exactly an instance's connections: what the index has
    /// and `local` lacks is unregistered (with events), what `local` has and
    /// the index lacks is registered (with events). `local` is called after
    /// the index is read, so a connection registered meanwhile is never
    /// mistaken for a stale one, and again once the registrations landed: a
    /// connection this call registered that `local` no longer returns closed
    /// meanwhile, and its own deregistration may have landed first and found
    /// nothing, so it is unregistered here (a re-sync never brings back a
    /// closed connection).
    pub(crate) async fn sync_instance(
        &self,
        instance_id: &str,
        local: impl Fn() -> Vec<ConnectionRecord>,
    ) -> Result<SyncReport, PresenceError> {
        let mut handle = self.handle().await?;
        // Pipelined EVALSHA needs the script loaded first (on every master).
        // Loaded before the snapshot, so that between the snapshot and the
        // registrations' sending there is no round trip for a close to slip
        // into.
        REGISTER
            .prepare_invoke()
            .load_async(&mut handle)
            .await
            .map_err(unavailable)?;
        let index: HashMap<String, String> =
            Self::each_bucket_read_on(&self.conn, HashMap::len, |mut handle, bucket| {
                let key = self.keys.instance(bucket, instance_id);
                async move {
                    redis::cmd("HGETALL")
                        .arg(key)
                        .query_async::<HashMap<String, String>>(&mut handle)
                        .await
                }
            })
            .await?
            .into_iter()
            .flatten()
            .collect();
        let snapshot = local();
        let held: HashSet<&str> = snapshot.iter().map(|r| r.connection_id.as_str()).collect();
        let stale: Vec<(&String, &String)> = index
            .iter()
            .filter(|(connection_id, _)| !held.contains(connection_id.as_str()))
            .collect();
        let mut missing: BTreeMap<u16, Vec<&ConnectionRecord>> = BTreeMap::new();
        for record in snapshot
            .iter()
            .filter(|record| !index.contains_key(&record.connection_id))
        {
            missing
                .entry(bucket_of(&record.user_id))
                .or_default()
                .push(record);
        }
        // One pipeline per bucket and batch: a Cluster pipeline must stay in one slot.
        let batches: Vec<&[&ConnectionRecord]> = missing
            .values()
            .flat_map(|records| records.chunks(SYNC_BATCH))
            .collect();
        let unregistering = try_join_all(stale.iter().map(|(connection_id, user_id)| {
            let mut handle = handle.clone();
            async move {
                self.unregister_on(&mut handle, user_id, connection_id)
                    .await
            }
        }));
        let registering = try_join_all(batches.iter().map(|batch| {
            let mut pipe = redis::pipe();
            for record in *batch {
                pipe.invoke_script(&self.register_invocation(record));
            }
            let mut handle = handle.clone();
            async move { pipe.query_async::<Vec<i64>>(&mut handle).await }
        }));
        let (_, added) = try_join(unregistering, registering)
            .await
            .map_err(unavailable)?;
        let registered: Vec<&ConnectionRecord> = batches
            .iter()
            .zip(&added)
            .flat_map(|(batch, added)| batch.iter().zip(added))
            .filter(|(_, added)| **added == 1)
            .map(|(record, _)| *record)
            .collect();
        let mut report = SyncReport {
            registered: registered.len() as u64,
            removed: stale.len() as u64,
        };
        if registered.is_empty() {
            return Ok(report);
        }
        let open: HashSet<String> = local()
            .into_iter()
            .map(|record| record.connection_id)
            .collect();
        let closed: Vec<&ConnectionRecord> = registered
            .into_iter()
            .filter(|record| !open.contains(&record.connection_id))
            .collect();
        try_join_all(closed.iter().map(|record| {
            let mut handle = handle.clone();
            async move {
                self.unregister_on(&mut handle, &record.user_id, &record.connection_id)
                    .await
            }
        }))
        .await
        .map_err(unavailable)?;
        report.registered -= closed.len() as u64;
        Ok(report)
    }
}

fn unavailable(error: redis::RedisError) -> PresenceError {
    PresenceError::Unavailable(format!("redis: {error}"))
}

#[cfg(test)]
mod tests;
