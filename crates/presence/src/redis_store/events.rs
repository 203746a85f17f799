//! The event logs in Redis: reading them, where each ends, snapshots that
//! know their point, trimming, and "last seen". The writing is the scripts'
//! (`lua/prelude.lua`'s `emit`).

use std::{collections::HashMap, sync::LazyLock};

use futures_util::future::try_join_all;
use pulse_protocol::{
    EventKind, PresenceEvent,
    event::{EventId, LogPoint},
};
use redis::Script;

use super::{RedisStore, queries::decode_user, unavailable};
use crate::{
    PresenceError,
    buckets::bucket_of,
    event_log::{EventLogOptions, LogRead, Snapshotted},
};

static READ_LOG: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/read_log.lua")));
static SNAPSHOT: LazyLock<Script> =
    LazyLock::new(|| Script::new(include_str!("../lua/snapshot.lua")));
// Uses the prelude's redis_now.
static TRIM_LOG: LazyLock<Script> = LazyLock::new(|| {
    Script::new(concat!(
        include_str!("../lua/prelude.lua"),
        include_str!("../lua/trim_log.lua")
    ))
});

/// The fields of one log entry after its id: k, u, c, i, t, h.
const ENTRY_FIELDS: usize = 6;

fn bad_reply(what: &str) -> PresenceError {
    PresenceError::Unavailable(format!("redis: unexpected {what} from the event log"))
}

fn parse_point(text: &str) -> Result<Option<LogPoint>, PresenceError> {
    if text.is_empty() {
        return Ok(None);
    }
    text.parse().map(Some).map_err(|_| bad_reply("entry id"))
}

/// The kind a log entry stores as one letter (`LOG_KINDS` in the prelude).
fn kind_of(letter: &str) -> Result<EventKind, PresenceError> {
    Ok(match letter {
        "c" => EventKind::Connected,
        "d" => EventKind::Disconnected,
        "n" => EventKind::Online,
        "f" => EventKind::Offline,
        "j" => EventKind::Join,
        "l" => EventKind::Leave,
        _ => return Err(bad_reply("event kind")),
    })
}

impl RedisStore {
    /// Up to `count` entries of `bucket`'s log after `after`, and its newest.
    pub(crate) async fn read_log(
        &self,
        bucket: u16,
        after: LogPoint,
        count: usize,
    ) -> Result<LogRead, PresenceError> {
        let mut handle = self.handle().await?;
        let reply: Vec<String> = READ_LOG
            .key(self.keys.events(bucket))
            .arg(after.to_string())
            .arg(count)
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        let (tail, rest) = reply.split_first().ok_or_else(|| bad_reply("reply"))?;
        let chunks = rest.chunks_exact(ENTRY_FIELDS + 1);
        if !chunks.remainder().is_empty() {
            return Err(bad_reply("entry"));
        }
        let entries = chunks
            .map(|entry| {
                let point = parse_point(&entry[0])?.ok_or_else(|| bad_reply("entry id"))?;
                Ok(PresenceEvent {
                    kind: kind_of(&entry[1])?,
                    user_id: entry[2].clone(),
                    connection_id: entry[3].clone(),
                    instance_id: entry[4].clone(),
                    at_ms: entry[5].parse().map_err(|_| bad_reply("time"))?,
                    id: EventId { bucket, point },
                    // Set by the reader, which knows what came before.
                    prev: LogPoint::default(),
                    channel: Some(entry[6].clone()).filter(|channel| !channel.is_empty()),
                })
            })
            .collect::<Result<_, PresenceError>>()?;
        Ok(LogRead {
            entries,
            tail: parse_point(tail)?,
        })
    }

    /// The newest entry of each of `buckets`' logs (`0-0` for an empty one).
    pub(crate) async fn log_tails(
        &self,
        buckets: &[u16],
    ) -> Result<Vec<(u16, LogPoint)>, PresenceError> {
        let handle = self.handle().await?;
        try_join_all(buckets.iter().map(|&bucket| {
            let mut handle = handle.clone();
            async move {
                let newest: Vec<(String, HashMap<String, String>)> = redis::cmd("XREVRANGE")
                    .arg(self.keys.events(bucket))
                    .arg("+")
                    .arg("-")
                    .arg("COUNT")
                    .arg(1)
                    .query_async(&mut handle)
                    .await
                    .map_err(unavailable)?;
                let point = match newest.first() {
                    Some((id, _)) => parse_point(id)?.unwrap_or_default(),
                    None => LogPoint::default(),
                };
                Ok((bucket, point))
            }
        }))
        .await
    }

    /// `bucket`'s online users and where its log is, in one step.
    pub(crate) async fn snapshot_bucket(&self, bucket: u16) -> Result<Snapshotted, PresenceError> {
        let mut handle = self.handle().await?;
        let reply: Vec<String> = SNAPSHOT
            .key(self.keys.online(bucket))
            .key(self.keys.events(bucket))
            .arg(self.keys.user_prefix(bucket))
            .invoke_async(&mut handle)
            .await
            .map_err(unavailable)?;
        let (tail, mut rest) = reply.split_first().ok_or_else(|| bad_reply("snapshot"))?;
        let mut users = Vec::new();
        while let [user_id, count, after @ ..] = rest {
            let count: usize = count.parse().map_err(|_| bad_reply("snapshot"))?;
            let fields = after
                .get(..count * 2)
                .ok_or_else(|| bad_reply("snapshot"))?;
            let hash: HashMap<String, String> = fields
                .chunks_exact(2)
                .map(|pair| (pair[0].clone(), pair[1].clone()))
                .collect();
            let records = decode_user(user_id, hash);
            if !records.is_empty() {
                users.push((user_id.clone(), records));
            }
            rest = &after[count * 2..];
        }
        Ok(Snapshotted {
            users,
            at: parse_point(tail)?.unwrap_or_default(),
        })
    }

    /// Trims every bucket's log and "last seen" to their windows; how many
    /// entries went.
    pub(crate) async fn trim_logs(&self, options: EventLogOptions) -> Result<u64, PresenceError> {
        let retention = u64::try_from(options.retention.as_millis()).unwrap_or(u64::MAX);
        let last_seen = u64::try_from(options.last_seen.as_millis()).unwrap_or(u64::MAX);
        let trimmed = Self::each_bucket_answered_on(&self.conn, |mut handle, bucket| {
            let invocation = {
                let mut invocation = TRIM_LOG.prepare_invoke();
                invocation
                    .key(self.keys.events(bucket))
                    .key(self.keys.seen(bucket))
                    .arg(retention)
                    .arg(last_seen);
                invocation
            };
            async move { invocation.invoke_async::<u64>(&mut handle).await }
        })
        .await?;
        Ok(trimmed.into_iter().sum())
    }

    /// When `user_id`'s last connection closed, if kept.
    pub(crate) async fn last_seen(&self, user_id: &str) -> Result<Option<u64>, PresenceError> {
        let mut handle = self.handle().await?;
        let score: Option<f64> = redis::cmd("ZSCORE")
            .arg(self.keys.seen(bucket_of(user_id)))
            .arg(user_id)
            .query_async(&mut handle)
            .await
            .map_err(unavailable)?;
        // Scores are whole milliseconds, exact in a double.
        Ok(score.map(|ms| ms as u64))
    }
}
