//! What each scenario measured, as the one JSON line it prints (`RESULT {json}`)
//! and `pulse-bench report` reads back.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::stats::Percentiles;

mod events;
mod history;
mod user_limit;

pub use events::{EventMemoryResult, ResumeFigures, WatchResumeResult, WebhooksResult};
pub use history::{HistoryMemoryResult, PublishResult, RecoverResult};
pub use user_limit::UserLimitResult;

/// The prefix of the one machine-readable line a scenario prints.
pub const RESULT_PREFIX: &str = "RESULT ";

/// One scenario's figures, tagged by `scenario`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "scenario", rename_all = "snake_case")]
pub enum BenchResult {
    /// See [`ConnectResult`].
    Connect(ConnectResult),
    /// See [`PingResult`].
    Ping(PingResult),
    /// See [`SendResult`].
    Send(SendResult),
    /// See [`PresenceResult`].
    Presence(PresenceResult),
    /// See [`FanoutResult`].
    Fanout(FanoutResult),
    /// See [`SubscribeResult`].
    Subscribe(SubscribeResult),
    /// See [`SubscriptionsResult`].
    Subscriptions(SubscriptionsResult),
    /// See [`PublishResult`].
    Publish(PublishResult),
    /// See [`RecoverResult`].
    Recover(RecoverResult),
    /// See [`HistoryMemoryResult`].
    HistoryMemory(HistoryMemoryResult),
    /// See [`WatchResumeResult`].
    WatchResume(WatchResumeResult),
    /// See [`EventMemoryResult`].
    EventMemory(EventMemoryResult),
    /// See [`WebhooksResult`].
    Webhooks(WebhooksResult),
    /// See [`UserLimitResult`].
    UserLimit(UserLimitResult),
}

impl BenchResult {
    /// The label the run was given (which server, which configuration).
    pub fn label(&self) -> &str {
        match self {
            Self::Connect(result) => &result.label,
            Self::Ping(result) => &result.label,
            Self::Send(result) => &result.label,
            Self::Presence(result) => &result.label,
            Self::Fanout(result) => &result.label,
            Self::Subscribe(result) => &result.label,
            Self::Subscriptions(result) => &result.label,
            Self::Publish(result) => &result.label,
            Self::Recover(result) => &result.label,
            Self::HistoryMemory(result) => &result.label,
            Self::WatchResume(result) => &result.label,
            Self::EventMemory(result) => &result.label,
            Self::Webhooks(result) => &result.label,
            Self::UserLimit(result) => &result.label,
        }
    }

    /// The scenario's name, as in the JSON tag.
    pub fn scenario(&self) -> &'static str {
        match self {
            Self::Connect(_) => "connect",
            Self::Ping(_) => "ping",
            Self::Send(_) => "send",
            Self::Presence(_) => "presence",
            Self::Fanout(_) => "fanout",
            Self::Subscribe(_) => "subscribe",
            Self::Subscriptions(_) => "subscriptions",
            Self::Publish(_) => "publish",
            Self::Recover(_) => "recover",
            Self::HistoryMemory(_) => "history_memory",
            Self::WatchResume(_) => "watch_resume",
            Self::EventMemory(_) => "event_memory",
            Self::Webhooks(_) => "webhooks",
            Self::UserLimit(_) => "user_limit",
        }
    }

    /// The `RESULT {json}` line.
    pub fn to_line(&self) -> String {
        format!(
            "{RESULT_PREFIX}{}",
            serde_json::to_string(self).expect("results always serialise")
        )
    }

    /// The result on a `RESULT {json}` line; `None` for any other line.
    pub fn from_line(line: &str) -> Option<Result<Self, serde_json::Error>> {
        let json = line.trim().strip_prefix(RESULT_PREFIX)?;
        Some(serde_json::from_str(json))
    }
}

/// The `connect` scenario: a burst of authenticated connections, then held idle.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConnectResult {
    /// Which server and configuration.
    pub label: String,
    /// The client implementation.
    pub client: String,
    /// Connections asked for.
    pub connections_target: u64,
    /// Connections that reached the server's first message.
    pub connected: u64,
    /// Connections that failed, by reason.
    pub failures: BTreeMap<String, u64>,
    /// Local source addresses the connections were spread over.
    pub sources: u32,
    /// The rate the connections were started at, per second.
    pub rate_target: f64,
    /// Connections per second from the first start to the last first message.
    pub rate_achieved: f64,
    /// The most connections that were between TCP connect and first message at once.
    pub max_inflight: u64,
    /// CPU used during the burst by processes other than the server, the
    /// watched ones and the load generator, in percent of one core: noise.
    pub foreign_cpu_percent: f64,
    /// TCP connect start to the server's first message (`connected`).
    pub handshake: Percentiles,
    /// The connection's place in the schedule to its first message: what
    /// clients arriving at the target rate would see, the wait for an
    /// in-flight slot included.
    pub handshake_from_schedule: Percentiles,
    /// Server CPU during the burst, per connection, in microseconds.
    pub server_cpu_us_per_connection: Option<f64>,
    /// Server RSS before the burst, in KiB.
    pub server_rss_before_kib: Option<u64>,
    /// Server RSS with every connection held, in KiB.
    pub server_rss_after_kib: Option<u64>,
    /// The difference, per held connection, in KiB.
    pub server_rss_per_connection_kib: Option<f64>,
    /// Length of the idle window, in seconds.
    pub idle_window_s: f64,
    /// Server CPU over the idle window, in percent of one core.
    pub server_idle_cpu_percent: Option<f64>,
    /// Connections the server closed while they were held.
    pub dropped_while_held: u64,
    /// CPU of the other processes watched (Redis, `pulse-auth`) during the
    /// burst, per connection, in microseconds, by name.
    pub other_cpu_us_per_connection: BTreeMap<String, f64>,
    /// The load generator's own CPU during the burst, per connection, in microseconds.
    pub client_cpu_us_per_connection: f64,
    /// The load generator's RSS growth per held connection, in KiB.
    pub client_rss_per_connection_kib: f64,
    /// Connections other gateway instances held in the same presence
    /// (`fleet` runs only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub other_instances_connections: Option<u64>,
}

/// The `ping` scenario: application ping round trips at a fixed rate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PingResult {
    /// Which server and configuration.
    pub label: String,
    /// Connections the pings were spread over.
    pub connections: u64,
    /// Pings per second asked for.
    pub rate_target: f64,
    /// Pings per second sent.
    pub rate_achieved: f64,
    /// Pings sent.
    pub sent: u64,
    /// Answers received.
    pub received: u64,
    /// Ping written to answer read.
    pub rtt: Percentiles,
}

/// The `send` scenario: `Presence/Send` to users with sockets on two gateways.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SendResult {
    /// Which servers and configuration.
    pub label: String,
    /// Users sent to.
    pub users: u64,
    /// Client connections, spread over the gateways.
    pub connections: u64,
    /// Gateways the connections were spread over.
    pub gateways: u64,
    /// Send calls per second asked for.
    pub rate_target: f64,
    /// Send calls per second made.
    pub rate_achieved: f64,
    /// Send calls made.
    pub sent: u64,
    /// Send calls that failed.
    pub grpc_errors: u64,
    /// Connections the Send answers said the messages were handed to.
    pub reported: u64,
    /// Messages that arrived at a client.
    pub delivered: u64,
    /// Just before the gRPC call to receipt at the client.
    pub latency: Percentiles,
    /// The gRPC call itself.
    pub grpc_call: Percentiles,
}

/// The `presence` scenario: a connect on a gateway to its event on a `Watch` stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PresenceResult {
    /// Which servers and configuration.
    pub label: String,
    /// Connects per second asked for.
    pub rate_target: f64,
    /// Connections opened.
    pub connects: u64,
    /// `connected` events seen for them.
    pub events: u64,
    /// TCP connect start to the `connected` event on the Watch stream.
    pub latency: Percentiles,
    /// The client's `connected` message to the event (negative is clamped to 0:
    /// the event can beat the message).
    pub after_connected_message: Percentiles,
    /// TCP connect start to the client's `connected` message, for reference.
    pub handshake: Percentiles,
}

/// Which part of a `fanout` run a result is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FanoutPhase {
    /// Publications at a fixed rate, open loop.
    Rate,
    /// As many publications as the deliveries keep up with: a bounded
    /// window of them in flight, the next one made when one is complete.
    Saturation,
}

/// The `fanout` scenario: publications to channels, each read by every
/// subscriber of its channel.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanoutResult {
    /// Which server and configuration (`pulse`, `floor`, `floor-coalesce`).
    pub label: String,
    /// Fixed rate or saturation.
    pub phase: FanoutPhase,
    /// Servers (gateways, or the floor) the connections were spread over.
    pub servers: u64,
    /// Channels published to, round robin.
    pub channels: u64,
    /// Subscribers of each channel.
    pub subscribers_per_channel: u64,
    /// Connections subscribed (each to one channel).
    pub subscribed: u64,
    /// Connections that failed to open or subscribe, by reason.
    pub failures: BTreeMap<String, u64>,
    /// Publications per second asked for (rate phase; 0 at saturation).
    pub rate_target: f64,
    /// Publications per second made.
    pub rate_achieved: f64,
    /// Publications in flight at most (saturation; 0 at a fixed rate).
    pub window: u64,
    /// How long the figures were taken over, in seconds.
    pub duration_s: f64,
    /// Publications made.
    pub publications: u64,
    /// Publish calls that failed.
    pub publish_errors: u64,
    /// Publications every subscriber read (late ones too: the run waits
    /// while deliveries keep coming).
    pub complete: u64,
    /// Publications read, all subscribers counted.
    pub deliveries: u64,
    /// What the publications made should have been read.
    pub deliveries_expected: u64,
    /// Deliveries per second over the window.
    pub deliveries_per_second: f64,
    /// Publish call start to the last subscriber's read, per complete publication.
    pub last_read: Percentiles,
    /// Publish call start to the first subscriber's read, per publication.
    pub first_read: Percentiles,
    /// The publish call itself.
    pub publish_call: Percentiles,
    /// The servers' CPU (`utime + stime`), per delivery, in microseconds.
    pub server_cpu_us_per_delivery: Option<f64>,
    /// The servers' CPU over the window, in percent of one core.
    pub server_cpu_percent: Option<f64>,
    /// The servers' write system calls per delivery.
    pub server_writes_per_delivery: Option<f64>,
    /// CPU of the other processes watched (Redis, `pulse-presence`) per
    /// delivery, in microseconds, by name.
    pub other_cpu_us_per_delivery: BTreeMap<String, f64>,
    /// The load generator's own CPU per delivery, in microseconds.
    pub client_cpu_us_per_delivery: f64,
    /// CPU of processes outside the benchmark over the window, in percent
    /// of one core: how contended the machine was.
    pub foreign_cpu_percent: f64,
    /// Subscribe round trips to fresh channels on the first server during
    /// the saturation window (`--probe-rate`), to see what the fan-out
    /// costs everyone else on the server.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe_meanwhile: Option<Percentiles>,
}

/// The `subscribe` scenario: a `subscribe` sent to its answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscribeResult {
    /// Which server and configuration.
    pub label: String,
    /// The channels' namespace.
    pub namespace: String,
    /// Whether each `subscribe` carried a subscription token.
    pub token: bool,
    /// Subscribes per second asked for.
    pub rate_target: f64,
    /// Subscribes sent, each on a connection of its own, to a channel of its own.
    pub subscribes: u64,
    /// Answered `subscribed`.
    pub subscribed: u64,
    /// Refused or unanswered, by error code or reason (connections that
    /// failed to open included).
    pub failures: BTreeMap<String, u64>,
    /// The `subscribe` written to its `subscribed` read.
    pub rtt: Percentiles,
    /// The server's CPU per subscribe, in microseconds.
    pub server_cpu_us_per_subscribe: Option<f64>,
    /// CPU of the other processes watched, per subscribe, in microseconds.
    pub other_cpu_us_per_subscribe: BTreeMap<String, f64>,
}

/// The `subscriptions` scenario: a gateway's memory with connections that
/// hold no subscription, then the same connections each holding several.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SubscriptionsResult {
    /// Which server and configuration.
    pub label: String,
    /// `shared`: every connection subscribes to the same channels;
    /// `distinct`: every subscription is to a channel of its own.
    pub channels_mode: String,
    /// Connections held.
    pub connections: u64,
    /// Subscriptions asked of each connection.
    pub per_connection: u64,
    /// Subscriptions answered `subscribed`.
    pub subscribed: u64,
    /// Connections or subscriptions that failed, by reason.
    pub failures: BTreeMap<String, u64>,
    /// The server's RSS before the connections, in KiB.
    pub rss_before_kib: u64,
    /// With every connection held and no subscription, in KiB.
    pub rss_connected_kib: u64,
    /// With every subscription held, in KiB.
    pub rss_subscribed_kib: u64,
    /// RSS per held connection with only its personal channel, in KiB.
    pub rss_per_connection_kib: f64,
    /// RSS per subscription beyond the connections', in bytes.
    pub bytes_per_subscription: f64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::Samples;

    fn percentiles() -> Percentiles {
        let mut samples = Samples::default();
        samples.record_micros(1200);
        samples.summary()
    }

    #[test]
    fn result_line_round_trips_with_its_tag() {
        let result = BenchResult::Ping(PingResult {
            label: "gateway".into(),
            connections: 50,
            rate_target: 1000.0,
            rate_achieved: 999.5,
            sent: 10_000,
            received: 10_000,
            rtt: percentiles(),
        });
        let line = result.to_line();
        assert!(line.starts_with("RESULT {\"scenario\":\"ping\",\"label\":\"gateway\""));
        let back = BenchResult::from_line(&line).unwrap().unwrap();
        assert_eq!(back, result);
        assert_eq!(back.scenario(), "ping");
        assert_eq!(back.label(), "gateway");
    }

    #[test]
    fn other_lines_are_not_results() {
        assert!(BenchResult::from_line("connected 19500 in 1.3 s").is_none());
        assert!(BenchResult::from_line("RESULT {not json").unwrap().is_err());
    }

    #[test]
    fn connect_result_keeps_missing_server_figures_as_null() {
        let result = BenchResult::Connect(ConnectResult {
            label: "echo".into(),
            client: "fws".into(),
            connections_target: 10,
            connected: 9,
            failures: BTreeMap::from([("timeout".to_owned(), 1)]),
            sources: 2,
            rate_target: 100.0,
            rate_achieved: 95.0,
            max_inflight: 10,
            foreign_cpu_percent: 0.5,
            handshake: percentiles(),
            handshake_from_schedule: percentiles(),
            server_cpu_us_per_connection: None,
            server_rss_before_kib: None,
            server_rss_after_kib: None,
            server_rss_per_connection_kib: None,
            idle_window_s: 0.0,
            server_idle_cpu_percent: None,
            dropped_while_held: 0,
            other_cpu_us_per_connection: BTreeMap::new(),
            client_cpu_us_per_connection: 12.5,
            client_rss_per_connection_kib: 3.0,
            other_instances_connections: None,
        });
        let value: serde_json::Value =
            serde_json::from_str(result.to_line().strip_prefix(RESULT_PREFIX).unwrap()).unwrap();
        assert_eq!(value["scenario"], "connect");
        assert!(value["server_rss_after_kib"].is_null());
        assert_eq!(value["failures"]["timeout"], 1);
        assert_eq!(value["handshake"]["p50_ms"], 1.2);
    }
}
