//! `watch-resume`: a `Watch` consumer (of everyone) that disconnects, misses
//! events, and reconnects with `since` set to the position of the last event
//! it handled, timed from the reconnect's start (a new gRPC channel and the
//! `Watch` call) to the first event it receives and to the last missed one.
//!
//! Interleaved with them, one of each in turn, the floors: a unary call
//! (`GetUser`) on a new channel, and a fresh `Watch` (no `since`) on a new
//! channel to its first live event, made (one registration) as soon as the
//! call's headers came back (the stream is live by then: the server starts
//! the tail before it answers).
//!
//! The missed events are registrations and unregistrations of extra
//! connections of users kept online meanwhile (one `connected` or
//! `disconnected` each, nothing else), made through `pulse-presence`'s
//! library into the same namespace. Nothing else writes there, so the
//! consumer can be checked: after a reconnect it must receive exactly the
//! events made while it was away before anything else. Between its resumes
//! the consumer stays connected and takes the floors' events, as a live
//! consumer would, so its position is always the newest event's.

use std::{
    collections::{BTreeMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use futures_util::{StreamExt, stream};
use pulse_protocol::proto::presence::v1::{EventKind, GetUserRequest, PresenceEvent, WatchRequest};
use tokio::{task::JoinHandle, time::Instant};
use tonic::Streaming;

use super::{Writer, connection_id, presence_api, user_id};
use crate::{
    result::{ResumeFigures, WatchResumeResult},
    scenario::marks::Marks,
    stats::Samples,
};

/// How long one event may take to arrive before the sample fails.
const EVENT_TIMEOUT: Duration = Duration::from_secs(5);
/// Users kept online, whose extra connections make the events.
const ANCHORS: u64 = 16;
/// Registrations in flight while the missed events are made.
const WRITE_WINDOW: usize = 16;

/// What the `watch-resume` scenario is asked to do.
#[derive(Debug, Clone)]
pub struct ResumeOptions {
    /// Which build, for the result.
    pub label: String,
    /// `pulse-presence`'s gRPC endpoint (`http://127.0.0.1:PORT`).
    pub presence_url: String,
    /// The API key every call carries.
    pub api_key: String,
    /// The Redis `pulse-presence` uses, and its namespace.
    pub redis_url: String,
    /// See `redis_url`.
    pub namespace: String,
    /// User ids are this prefix and a number.
    pub user_prefix: String,
    /// Samples of each kind.
    pub samples: usize,
    /// Events missed, one resume kind per entry (10 and 100); even numbers.
    pub missed: Vec<usize>,
    /// A pause after each sample.
    pub pause: Duration,
}

/// The consumer between its resumes: its stream drained in a task that
/// counts what it takes and keeps the last position.
struct Live {
    seen: Arc<AtomicU64>,
    position: Arc<Mutex<String>>,
    task: JoinHandle<()>,
}

impl Live {
    fn drain(mut stream: Streaming<PresenceEvent>, seen: u64, position: String) -> Self {
        let seen = Arc::new(AtomicU64::new(seen));
        let position = Arc::new(Mutex::new(position));
        let (counter, last) = (seen.clone(), position.clone());
        let task = tokio::spawn(async move {
            while let Some(Ok(event)) = stream.next().await {
                *last.lock().expect("no panics while locked") = event.position;
                counter.fetch_add(1, Ordering::Release);
            }
        });
        Self {
            seen,
            position,
            task,
        }
    }

    /// Waits until it took `made` events, then disconnects (drops the
    /// stream and its channel) and returns the last position.
    async fn leave(self, made: u64) -> anyhow::Result<(u64, String)> {
        let deadline = Instant::now() + EVENT_TIMEOUT;
        while self.seen.load(Ordering::Acquire) < made {
            anyhow::ensure!(
                Instant::now() < deadline && !self.task.is_finished(),
                "the consumer took {} of {made} events",
                self.seen.load(Ordering::Acquire)
            );
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        self.task.abort();
        let _ = self.task.await;
        let position = self
            .position
            .lock()
            .expect("no panics while locked")
            .clone();
        Ok((self.seen.load(Ordering::Acquire), position))
    }
}

/// Reads the next event, or fails after [`EVENT_TIMEOUT`].
async fn next_event(stream: &mut Streaming<PresenceEvent>) -> Result<PresenceEvent, String> {
    match tokio::time::timeout(EVENT_TIMEOUT, stream.next()).await {
        Ok(Some(Ok(event))) => Ok(event),
        Ok(Some(Err(status))) => Err(format!("watch: {:?}", status.code())),
        Ok(None) => Err("watch ended".to_owned()),
        Err(_) => Err("no event".to_owned()),
    }
}

/// The scenario's state: the writer, the counters, the samples.
struct Run {
    options: ResumeOptions,
    writer: Writer,
    /// Events made so far (the consumer must have taken as many).
    made: u64,
    /// The next extra connection's number.
    next_connection: u64,
    resumes: Vec<(usize, Samples, Samples, Samples, u64)>,
    unary: Samples,
    fresh_open: Samples,
    fresh_first: Samples,
    failures: BTreeMap<String, u64>,
}

impl Run {
    fn anchor(&self, n: u64) -> String {
        user_id(&self.options.user_prefix, n % ANCHORS)
    }

    /// `count` extra connections registered, then unregistered: `2 × count`
    /// events; returns their connection ids.
    async fn make_events(&mut self, count: usize) -> anyhow::Result<HashSet<String>> {
        let made: Vec<(String, String)> = (0..count as u64)
            .map(|i| {
                let n = self.next_connection + i;
                (self.anchor(n), connection_id(1_000_000 + n))
            })
            .collect();
        self.next_connection += count as u64;
        for connect in [true, false] {
            let writer = self.writer.clone();
            stream::iter(made.clone())
                .map(move |(user, connection)| {
                    let writer = writer.clone();
                    async move {
                        if connect {
                            writer.connect(&user, &connection).await
                        } else {
                            writer.disconnect(&user, &connection).await
                        }
                    }
                })
                .buffer_unordered(WRITE_WINDOW)
                .collect::<Vec<_>>()
                .await
                .into_iter()
                .collect::<anyhow::Result<()>>()?;
        }
        self.made += 2 * count as u64;
        Ok(made.into_iter().map(|(_, connection)| connection).collect())
    }

    /// A `Watch` of everyone from `since` (empty: from now) on a new gRPC
    /// channel, once its headers came back; the error says which step failed.
    async fn watch_on_new_channel(
        &self,
        since: String,
    ) -> Result<Streaming<PresenceEvent>, String> {
        let mut api = presence_api(&self.options.presence_url, &self.options.api_key)
            .await
            .map_err(|error| format!("connect: {error}"))?;
        Ok(api
            .watch(WatchRequest {
                user_ids: vec![],
                all: true,
                since,
            })
            .await
            .map_err(|status| format!("watch: {:?}", status.code()))?
            .into_inner())
    }

    fn fail(&mut self, reason: String) {
        *self.failures.entry(reason).or_default() += 1;
    }

    /// One resume after `missed` events: the consumer leaves, the events
    /// are made, it comes back with `since`. Returns the consumer, live
    /// again (or a fresh one when the resume failed).
    async fn resume(&mut self, kind: usize, live: Live) -> anyhow::Result<Live> {
        let missed = self.resumes[kind].0;
        let (seen, position) = live.leave(self.made).await?;
        let expected = self.make_events(missed / 2).await?;
        let started = Instant::now();
        let attempt = async {
            let mut stream = self.watch_on_new_channel(position.clone()).await?;
            let opened = started.elapsed();
            let mut taken = HashSet::new();
            let mut first = None;
            let mut last_position = String::new();
            let mut exact = true;
            while taken.len() < missed {
                let event = next_event(&mut stream).await?;
                first.get_or_insert_with(|| started.elapsed());
                let key = (event.connection_id.clone(), event.kind);
                let kind_ok = matches!(
                    EventKind::try_from(event.kind),
                    Ok(EventKind::Connected | EventKind::Disconnected)
                );
                if !expected.contains(&event.connection_id) || !kind_ok || !taken.insert(key) {
                    exact = false;
                }
                last_position = event.position;
            }
            Ok::<_, String>((
                stream,
                opened,
                first,
                started.elapsed(),
                exact,
                last_position,
            ))
        };
        match attempt.await {
            Ok((stream, opened, first, last, exact, last_position)) => {
                let samples = &mut self.resumes[kind];
                samples.1.record(opened);
                samples.2.record(first.unwrap_or(last));
                samples.3.record(last);
                samples.4 += u64::from(exact);
                if !exact {
                    self.fail(format!(
                        "resume after {missed}: other events than the missed"
                    ));
                }
                Ok(Live::drain(stream, seen + missed as u64, last_position))
            }
            Err(reason) => {
                self.fail(format!("resume after {missed}: {reason}"));
                self.fresh_consumer().await
            }
        }
    }

    /// The unary floor: a new channel and `GetUser`.
    async fn unary(&mut self) {
        let started = Instant::now();
        let user = self.anchor(0);
        let attempt = async {
            let mut api = presence_api(&self.options.presence_url, &self.options.api_key)
                .await
                .map_err(|error| format!("connect: {error}"))?;
            api.get_user(GetUserRequest { user_id: user })
                .await
                .map_err(|status| format!("get_user: {:?}", status.code()))?;
            Ok::<_, String>(started.elapsed())
        };
        match attempt.await {
            Ok(elapsed) => self.unary.record(elapsed),
            Err(reason) => self.fail(format!("unary: {reason}")),
        }
    }

    /// The fresh-Watch floor: a new channel, `Watch` with no `since`, one
    /// registration as soon as it answered, its event; then the
    /// unregistration, so that the anchor is as it was.
    async fn fresh(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        let connection = connection_id(1_000_000 + self.next_connection);
        let user = self.anchor(self.next_connection);
        self.next_connection += 1;
        let attempt = async {
            let mut stream = self.watch_on_new_channel(String::new()).await?;
            let opened = started.elapsed();
            self.writer
                .connect(&user, &connection)
                .await
                .map_err(|error| format!("register: {error}"))?;
            let event = next_event(&mut stream).await?;
            if event.connection_id != connection {
                return Err("another event first".to_owned());
            }
            Ok::<_, String>((opened, started.elapsed()))
        };
        let outcome = attempt.await;
        // Made (or not) either way: the consumer counts what the log holds.
        self.made += 1;
        match outcome {
            Ok((opened, first)) => {
                self.fresh_open.record(opened);
                self.fresh_first.record(first);
            }
            Err(reason) => self.fail(format!("fresh watch: {reason}")),
        }
        self.writer.disconnect(&user, &connection).await?;
        self.made += 1;
        Ok(())
    }

    /// A consumer that watches from now and has taken one event pair.
    async fn fresh_consumer(&mut self) -> anyhow::Result<Live> {
        let mut api = presence_api(&self.options.presence_url, &self.options.api_key).await?;
        let stream = api
            .watch(WatchRequest {
                user_ids: vec![],
                all: true,
                since: String::new(),
            })
            .await?
            .into_inner();
        let live = Live::drain(stream, 0, String::new());
        let before = self.made;
        self.make_events(1).await?;
        // Counts from here on are the consumer's own.
        let (_, position) = live.leave(self.made - before).await?;
        anyhow::ensure!(!position.is_empty(), "the consumer took no position");
        let mut api = presence_api(&self.options.presence_url, &self.options.api_key).await?;
        let stream = api
            .watch(WatchRequest {
                user_ids: vec![],
                all: true,
                since: position.clone(),
            })
            .await?
            .into_inner();
        Ok(Live::drain(stream, self.made, position))
    }
}

/// Runs the scenario and returns its figures, printing progress lines.
pub async fn run(options: ResumeOptions) -> anyhow::Result<WatchResumeResult> {
    anyhow::ensure!(
        options.missed.iter().all(|n| *n >= 2 && n % 2 == 0),
        "--missed: even numbers, at least 2"
    );
    let writer = Writer::new(&options.redis_url, &options.namespace)?;
    for n in 0..ANCHORS {
        writer
            .connect(&user_id(&options.user_prefix, n), &connection_id(n))
            .await?;
    }
    println!(
        "watch-resume [{}]: {} samples each of resumes after {:?} missed events, a unary call and a fresh Watch, interleaved",
        options.label, options.samples, options.missed
    );
    let mut run = Run {
        resumes: options
            .missed
            .iter()
            .map(|&missed| {
                (
                    missed,
                    Samples::default(),
                    Samples::default(),
                    Samples::default(),
                    0,
                )
            })
            .collect(),
        writer,
        made: 0,
        next_connection: 0,
        unary: Samples::default(),
        fresh_open: Samples::default(),
        fresh_first: Samples::default(),
        failures: BTreeMap::new(),
        options,
    };
    let mut live = run.fresh_consumer().await?;
    let before = Marks::take(&[], &[], 0)?;
    for _ in 0..run.options.samples {
        for kind in 0..run.resumes.len() {
            live = run.resume(kind, live).await?;
            tokio::time::sleep(run.options.pause).await;
        }
        run.unary().await;
        tokio::time::sleep(run.options.pause).await;
        run.fresh().await?;
        tokio::time::sleep(run.options.pause).await;
    }
    let after = Marks::take(&[], &[], 0)?;
    live.task.abort();
    for n in 0..ANCHORS {
        let _ = run
            .writer
            .disconnect(&user_id(&run.options.user_prefix, n), &connection_id(n))
            .await;
    }
    let result = WatchResumeResult {
        label: run.options.label.clone(),
        samples: run.options.samples as u64,
        resumes: run
            .resumes
            .iter()
            .map(|(missed, open, first, last, exact)| ResumeFigures {
                missed: *missed as u64,
                open: open.summary(),
                first: first.summary(),
                last: last.summary(),
                exact: *exact,
            })
            .collect(),
        unary: run.unary.summary(),
        fresh_open: run.fresh_open.summary(),
        fresh_first: run.fresh_first.summary(),
        failures: run.failures,
        foreign_cpu_percent: before.foreign_percent_until(&after),
    };
    for resume in &result.resumes {
        println!(
            "watch-resume [{}]: after {} missed: first event p50 {} ms, p99 {} ms; last p99 {} ms; exact {}",
            result.label,
            resume.missed,
            resume.first.p50_ms,
            resume.first.p99_ms,
            resume.last.p99_ms,
            resume.exact
        );
    }
    println!(
        "watch-resume [{}]: unary p99 {} ms; fresh Watch first event p99 {} ms; failures {:?}",
        result.label, result.unary.p99_ms, result.fresh_first.p99_ms, result.failures
    );
    Ok(result)
}
