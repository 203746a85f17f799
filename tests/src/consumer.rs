//! A `Watch` consumer as a backend writes one: a `Snapshot`, then `Watch`
//! of everyone from its position, and whenever the stream ends or the call
//! fails, `Watch` again with `since` set to the position of the last event
//! it handled. Every event goes through a [`Ledger`], which checks it.
//! Also: the event log's ids as Redis holds them, to compare with what a
//! consumer took.

use std::{
    collections::BTreeMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use pulse_protocol::{
    event::{LogPoint, Position},
    proto::presence::v1::{SnapshotRequest, UserPresence, WatchRequest},
    status::reason_of,
};
use tokio::{task::JoinHandle, time::Instant};
use tonic::{Code, Status};

use crate::{
    Grpc,
    events::{Ledger, PresenceState, state_of},
};

/// A whole `Snapshot` answer.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// Every online user with their connections.
    pub users: Vec<UserPresence>,
    /// The position at which it is exact (from the last chunk).
    pub position: String,
}

impl Snapshot {
    /// The users' connection ids.
    pub fn state(&self) -> PresenceState {
        state_of(&self.users)
    }

    /// The position, parsed.
    ///
    /// # Panics
    ///
    /// When it does not parse.
    pub fn parsed_position(&self) -> Position {
        self.position.parse().expect("a snapshot's position parses")
    }
}

/// Reads a whole `Snapshot`; a failed call or chunk is its status.
///
/// # Panics
///
/// When the answer is malformed: a position on a chunk before the last, or
/// none on the last.
pub async fn snapshot(client: &Grpc) -> Result<Snapshot, Status> {
    let mut stream = client
        .clone()
        .snapshot(SnapshotRequest {})
        .await?
        .into_inner();
    let mut users = Vec::new();
    let mut position = None;
    while let Some(chunk) = stream.message().await? {
        assert!(
            position.is_none(),
            "a snapshot chunk after the one with the position"
        );
        users.extend(chunk.users);
        if !chunk.position.is_empty() {
            position = Some(chunk.position);
        }
    }
    let position = position.expect("the last snapshot chunk carries the position");
    Ok(Snapshot { users, position })
}

/// [`snapshot`], called again while it fails with `UNAVAILABLE` (Redis or
/// `pulse-presence` away), for at most `limit`.
///
/// # Panics
///
/// On any other status, or still unavailable after `limit`.
pub async fn snapshot_retrying(client: &Grpc, limit: Duration) -> Snapshot {
    let deadline = Instant::now() + limit;
    loop {
        match snapshot(client).await {
            Ok(snapshot) => return snapshot,
            Err(status) if status.code() == Code::Unavailable && Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(status) => panic!("Snapshot failed: {status:?}"),
        }
    }
}

/// How one `Watch` call ended, or failed to start.
#[derive(Debug, Clone)]
pub struct WatchEnd {
    /// Whether the call itself failed (no stream), rather than its stream.
    pub at_call: bool,
    /// The status code (`Ok` for a stream that ended without one).
    pub code: Code,
    /// The `ErrorInfo` reason, when there is one.
    pub reason: Option<String>,
    /// The status message.
    pub message: String,
    /// Whether the connection under the call was lost (the server went
    /// away mid-call): tonic says `UNKNOWN` for that, with a transport or
    /// HTTP/2 error as the source.
    pub transport: bool,
}

impl WatchEnd {
    fn of(status: &Status, at_call: bool) -> Self {
        let source = std::error::Error::source(status);
        let transport = source.is_some_and(|source| source.is::<tonic::transport::Error>())
            || (source.is_some() && status.message().starts_with("h2 protocol error"));
        Self {
            at_call,
            code: status.code(),
            reason: reason_of(status),
            message: status.message().to_owned(),
            transport,
        }
    }

    /// An end to resume from: `UNAVAILABLE` (the service or Redis away, or
    /// shutting down) or the connection lost.
    pub fn service_went_away(&self) -> bool {
        self.code == Code::Unavailable || self.transport
    }

    /// `FAILED_PRECONDITION` + `position_expired`: events were lost.
    pub fn expired(&self) -> bool {
        self.code == Code::FailedPrecondition && self.reason.as_deref() == Some("position_expired")
    }
}

/// A running [`consume_watch`]: its ledger, how its calls ended, its task.
pub struct Consumer {
    /// What it built and checked.
    pub ledger: Arc<Mutex<Ledger>>,
    /// Every end of a `Watch` call, in order.
    pub ends: Arc<Mutex<Vec<WatchEnd>>>,
    /// Ends only with an error: a broken rule, an expired position, a
    /// call refused otherwise than by the service being away.
    pub task: JoinHandle<Result<(), String>>,
}

impl Consumer {
    /// Starts [`consume_watch`] from a snapshot already checked into `ledger`.
    pub fn start(client: Grpc, ledger: Ledger) -> Self {
        let ledger = Arc::new(Mutex::new(ledger));
        let ends = Arc::default();
        let task = tokio::spawn(consume_watch(client, ledger.clone(), Arc::clone(&ends)));
        Self { ledger, ends, task }
    }

    /// Panics with the consumer's error if it stopped.
    pub async fn check_running(&mut self) {
        if self.task.is_finished() {
            match (&mut self.task).await {
                Ok(Err(error)) => panic!("the Watch consumer failed: {error}"),
                other => panic!("the Watch consumer stopped: {other:?}"),
            }
        }
    }

    /// Waits until the ledger has taken everything up to `target` (a
    /// fresh snapshot's position), failing if the consumer stops or makes
    /// no progress for `stall`.
    ///
    /// # Panics
    ///
    /// As said, with where the ledger is and where it should be.
    pub async fn reach(&mut self, target: &Position, stall: Duration) {
        let mut last = (self.ledger.lock().unwrap().taken().len(), Instant::now());
        loop {
            self.check_running().await;
            let (reached, taken) = {
                let ledger = self.ledger.lock().unwrap();
                (ledger.reached(target), ledger.taken().len())
            };
            if reached {
                return;
            }
            if taken != last.0 {
                last = (taken, Instant::now());
            }
            if last.1.elapsed() > stall {
                let ledger = self.ledger.lock().unwrap();
                let behind: Vec<String> = target
                    .iter()
                    .filter(|(bucket, point)| {
                        ledger.position().get(*bucket).is_none_or(|at| at < *point)
                    })
                    .map(|(bucket, point)| {
                        format!(
                            "log {bucket}: at {:?}, {point} wanted",
                            ledger.position().get(bucket)
                        )
                    })
                    .collect();
                panic!(
                    "the Watch consumer took nothing for {stall:?} and is behind the snapshot: {behind:?}; its calls ended: {:?}",
                    self.ends.lock().unwrap()
                );
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Watches everyone from the ledger's position, feeding it every event,
/// and watches again from the last event's position whenever the stream
/// ends or the call fails, recording each end in `ends`. Returns only with
/// an error: a rule the ledger found broken, a position that expired, a
/// call refused otherwise than by the service being away.
pub async fn consume_watch(
    client: Grpc,
    ledger: Arc<Mutex<Ledger>>,
    ends: Arc<Mutex<Vec<WatchEnd>>>,
) -> Result<(), String> {
    loop {
        let since = ledger.lock().unwrap().resume_position().to_owned();
        let call = client
            .clone()
            .watch(WatchRequest {
                user_ids: vec![],
                all: true,
                since,
            })
            .await;
        let mut stream = match call {
            Ok(stream) => stream.into_inner(),
            Err(status) => {
                let end = WatchEnd::of(&status, true);
                ends.lock().unwrap().push(end.clone());
                if !end.service_went_away() {
                    return Err(format!("Watch refused: {status:?}"));
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let end = loop {
            match stream.message().await {
                Ok(Some(event)) => ledger.lock().unwrap().apply(&event)?,
                Ok(None) => {
                    break WatchEnd {
                        at_call: false,
                        code: Code::Ok,
                        reason: None,
                        message: String::new(),
                        transport: false,
                    };
                }
                Err(status) => break WatchEnd::of(&status, false),
            }
        };
        ends.lock().unwrap().push(end.clone());
        if end.expired() {
            return Err(format!("the Watch ended with position_expired: {end:?}"));
        }
    }
}

/// Every id in each bucket's event log (`<namespace>:{b<k>}:events`), in
/// order, read from Redis with `XRANGE`.
///
/// # Panics
///
/// When Redis cannot be read or an id does not parse.
pub async fn log_ids(redis_url: &str, namespace: &str) -> BTreeMap<u16, Vec<LogPoint>> {
    let client = redis::Client::open(redis_url).expect("a Redis URL");
    let mut connection = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis answers");
    let mut logs = BTreeMap::new();
    for bucket in 0..pulse_presence::BUCKETS {
        let entries: Vec<(String, Vec<String>)> = redis::cmd("XRANGE")
            .arg(format!("{namespace}:{{b{bucket}}}:events"))
            .arg("-")
            .arg("+")
            .query_async(&mut connection)
            .await
            .expect("XRANGE");
        let ids: Vec<LogPoint> = entries
            .into_iter()
            .map(|(id, _)| id.parse().expect("a log id parses"))
            .collect();
        if !ids.is_empty() {
            logs.insert(bucket, ids);
        }
    }
    logs
}
