//! What the channel scenarios share: opening a crowd of connections at a
//! pace, a `subscribe` and its answer, publishing through the gRPC API or
//! the floor's trigger, and reading a publication's stamp.

use std::{
    collections::BTreeMap,
    future::Future,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use pulse_protocol::{
    api_key::BearerKey,
    proto::channels::v1::{PublishRequest, channels_client::ChannelsClient},
};
use tokio::{
    net::TcpStream,
    sync::{Semaphore, mpsc},
    task::JoinHandle,
    time::{Instant, sleep_until},
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

use super::{ClientSetup, bearer, due, open};
use crate::client::Conn;

/// How long one `subscribe` may wait for its answer.
pub const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a subscription token lives: longer than any scenario.
const SUBSCRIPTION_TOKEN_TTL: Duration = Duration::from_secs(3600);

/// A crowd of connections to open: where, how many, how fast.
#[derive(Debug, Clone)]
pub struct Crowd {
    /// The servers; connection `i` goes to `servers[i % len]`.
    pub servers: Vec<SocketAddr>,
    /// How many connections.
    pub count: usize,
    /// Connections started per second.
    pub rate: f64,
    /// At most this many between TCP connect and first message.
    pub max_inflight: usize,
    /// User ids are this prefix, `-` and the connection's index.
    pub user_prefix: String,
}

impl Crowd {
    /// The user of connection `index`.
    pub fn user(&self, index: usize) -> String {
        format!("{}-{index}", self.user_prefix)
    }
}

/// Opens the crowd, each connection on a task of its own that goes on with
/// `body(index, conn)` once open. Returns when every connection opened or
/// failed: the tasks, and the failures by reason.
pub async fn open_crowd<F, Fut>(
    setup: &ClientSetup,
    crowd: &Crowd,
    body: F,
) -> anyhow::Result<(Vec<JoinHandle<()>>, BTreeMap<String, u64>)>
where
    F: Fn(usize, Conn) -> Fut + Clone + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    anyhow::ensure!(!crowd.servers.is_empty(), "name at least one server");
    let paths: Vec<String> = (0..crowd.count)
        .map(|index| setup.path_for(&crowd.user(index)))
        .collect();
    let setup = Arc::new(setup.clone());
    let inflight = Arc::new(Semaphore::new(crowd.max_inflight.max(1)));
    let (outcomes_tx, mut outcomes) = mpsc::unbounded_channel::<Result<(), String>>();
    let mut tasks = Vec::with_capacity(crowd.count);
    let start = Instant::now();
    for (index, path) in paths.into_iter().enumerate() {
        sleep_until(due(start, index as u64, crowd.rate)).await;
        let permit = inflight.clone().acquire_owned().await?;
        let (setup, outcomes_tx, body) = (setup.clone(), outcomes_tx.clone(), body.clone());
        let server = crowd.servers[index % crowd.servers.len()];
        tasks.push(tokio::spawn(async move {
            let opened = open(&setup, server, index, &path).await;
            drop(permit);
            match opened {
                Ok(opened) => {
                    let _ = outcomes_tx.send(Ok(()));
                    body(index, opened.conn).await;
                }
                Err(reason) => {
                    let _ = outcomes_tx.send(Err(reason));
                }
            }
        }));
    }
    drop(outcomes_tx);
    let mut failures = BTreeMap::new();
    for _ in 0..crowd.count {
        match outcomes.recv().await {
            Some(Ok(())) => {}
            Some(Err(reason)) => *failures.entry(reason).or_insert(0) += 1,
            None => break,
        }
    }
    Ok((tasks, failures))
}

/// A subscription token for `user` on `channel` (claims `sub`, `channel`,
/// `exp`), signed with the gateway's HS256 secret.
pub fn subscription_token(secret: &str, user: &str, channel: &str) -> String {
    let mut claims = serde_json::Map::new();
    claims.insert("channel".into(), channel.into());
    pulse_auth::mint_token_with_claims(secret.as_bytes(), user, SUBSCRIPTION_TOKEN_TTL, claims)
}

/// The `subscribe` request text.
pub fn subscribe_request(id: u64, channel: &str, token: Option<&str>) -> String {
    let channel = serde_json::Value::from(channel);
    match token {
        Some(token) => format!(
            r#"{{"type":"subscribe","id":{id},"channel":{channel},"token":{}}}"#,
            serde_json::Value::from(token)
        ),
        None => format!(r#"{{"type":"subscribe","id":{id},"channel":{channel}}}"#),
    }
}

/// Sends `subscribe` and reads until its answer, skipping anything else
/// (publications, other answers). `Ok` with the round trip for
/// `subscribed`; `Err` with the error's code, or why no answer came.
pub async fn subscribe(
    conn: &mut Conn,
    id: u64,
    channel: &str,
    token: Option<&str>,
) -> Result<Duration, String> {
    let request = subscribe_request(id, channel, token);
    let sent = Instant::now();
    conn.send_text(&request)
        .await
        .map_err(|_| "send failed".to_owned())?;
    let answer = async {
        loop {
            let text = match conn.next_text().await {
                Ok(Some(text)) => text,
                Ok(None) => return Err("closed".to_owned()),
                Err(_) => return Err("read failed".to_owned()),
            };
            match answer_to(&text, id) {
                Some(Ok(())) => return Ok(sent.elapsed()),
                Some(Err(code)) => return Err(code),
                None => continue,
            }
        }
    };
    tokio::time::timeout(ANSWER_TIMEOUT, answer)
        .await
        .unwrap_or_else(|_| Err("no answer".to_owned()))
}

/// Whether `message` answers request `id`: `Ok` for `subscribed`, the code
/// of an `error`; `None` for anything else.
pub fn answer_to(message: &[u8], id: u64) -> Option<Result<(), String>> {
    let value: serde_json::Value = serde_json::from_slice(message).ok()?;
    if value["id"].as_u64() != Some(id) {
        return None;
    }
    match value["type"].as_str() {
        Some("subscribed") => Some(Ok(())),
        Some("error") => Some(Err(value["code"]
            .as_str()
            .unwrap_or("error without a code")
            .to_owned())),
        _ => None,
    }
}

/// The publication data the scenarios send: its sequence number and when
/// the publish call started (microseconds on [`super::clock_micros`]).
pub fn stamp_data(seq: u64, at_micros: u64) -> String {
    format!("{{\"seq\":{seq},\"t\":{at_micros}}}")
}

/// The `(seq, t)` of a publication frame whose data [`stamp_data`] made;
/// `None` for any other message. Found by position rather than by parsing
/// the JSON: the load generator reads up to hundreds of thousands a second
/// on the cores it shares with the servers.
pub fn stamp_of(message: &[u8]) -> Option<(u64, u64)> {
    const PUBLICATION: &[u8] = br#"{"type":"publication""#;
    const SEQ: &[u8] = br#""data":{"seq":"#;
    const T: &[u8] = br#","t":"#;
    if !message.starts_with(PUBLICATION) {
        return None;
    }
    let at = find(message, SEQ)? + SEQ.len();
    let (seq, used) = digits(&message[at..])?;
    let rest = message[at + used..].strip_prefix(T)?;
    let (t, _) = digits(rest)?;
    Some((seq, t))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack
        .windows(needle.len())
        .position(|window| window == needle)
}

/// The number at the start of `text`, and how many bytes it took.
fn digits(text: &[u8]) -> Option<(u64, usize)> {
    let used = text.iter().take_while(|byte| byte.is_ascii_digit()).count();
    let number = std::str::from_utf8(&text[..used]).ok()?.parse().ok()?;
    Some((number, used))
}

/// Where publications are made: the gRPC API of `pulse-presence`, or the
/// floor's `POST /publish`; from a thread and runtime of their own
/// ([`Publisher::spawn`]), as an application's backend calls from its own
/// process: on the runtime that reads the subscribers' connections, a call's
/// answer waited behind whatever frames were ready there, and the call's
/// figure counted the load generator's own queue.
#[derive(Clone)]
pub struct Publisher {
    via: Via,
    runtime: Arc<OwnRuntime>,
}

#[derive(Clone)]
enum Via {
    /// `pulse.channels.v1.Channels/Publish`, on one HTTP/2 connection.
    Grpc(ChannelsClient<InterceptedService<Channel, BearerKey>>),
    /// The floor's trigger, over a pool of HTTP/1.1 keep-alive connections
    /// (one per call in flight).
    Floor(Arc<FloorClient>),
}

impl Publisher {
    /// A publisher through `pulse-presence`'s gRPC API.
    pub async fn grpc(presence: SocketAddr, api_key: &str) -> anyhow::Result<Self> {
        let runtime = Arc::new(OwnRuntime::start("pulse-bench-publisher")?);
        let interceptor = bearer(api_key)?;
        // Connected on its own runtime, so that the connection's tasks run there.
        let channel = runtime
            .handle
            .spawn(async move {
                Channel::from_shared(format!("http://{presence}"))?
                    .connect()
                    .await
                    .map_err(anyhow::Error::from)
            })
            .await??;
        Ok(Self {
            via: Via::Grpc(ChannelsClient::with_interceptor(channel, interceptor)),
            runtime,
        })
    }

    /// A publisher through the floor's `POST /publish`.
    pub fn floor(server: SocketAddr) -> anyhow::Result<Self> {
        Ok(Self {
            via: Via::Floor(Arc::new(FloorClient {
                server,
                idle: Mutex::default(),
            })),
            runtime: Arc::new(OwnRuntime::start("pulse-bench-publisher")?),
        })
    }

    /// Runs `call` (which calls [`Publisher::publish`], and times it) on the
    /// publisher's own thread.
    pub fn spawn<F>(&self, call: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.runtime.handle.spawn(call)
    }

    /// Publishes `data` (JSON) on `channel`; the error is a short reason.
    /// Called from a task of [`Publisher::spawn`], where its connections live.
    pub async fn publish(&self, channel: String, data: String) -> Result<(), String> {
        match &self.via {
            Via::Grpc(client) => client
                .clone()
                .publish(PublishRequest {
                    channel,
                    data_json: data,
                    ..PublishRequest::default()
                })
                .await
                .map(|_| ())
                .map_err(|status| format!("{:?}: {}", status.code(), status.message())),
            Via::Floor(client) => client.publish(&channel, &data).await,
        }
    }
}

/// A single-threaded Tokio runtime on a thread of its own, which runs until
/// this is dropped.
struct OwnRuntime {
    handle: tokio::runtime::Handle,
    /// Dropped with this, which ends the thread's `block_on`.
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl OwnRuntime {
    fn start(name: &str) -> anyhow::Result<Self> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name(name.to_owned())
            .spawn(move || {
                // Ends when `_stop` is dropped; the runtime's tasks with it.
                let _ = runtime.block_on(stopped);
            })?;
        Ok(Self {
            handle,
            _stop: stop,
        })
    }
}

/// The floor's trigger over HTTP/1.1 connections that are kept and reused.
pub struct FloorClient {
    server: SocketAddr,
    idle: Mutex<Vec<SendRequest<Full<Bytes>>>>,
}

impl FloorClient {
    async fn publish(&self, channel: &str, data: &str) -> Result<(), String> {
        let idle = self.idle.lock().expect("no panics while locked").pop();
        let mut sender = match idle {
            Some(sender) => sender,
            None => self.connect().await?,
        };
        let body = format!(
            "{{\"channel\":{},\"data\":{data}}}",
            serde_json::Value::from(channel)
        );
        let request = http::Request::post("/publish")
            .header("host", self.server.to_string())
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(body)))
            .map_err(|error| error.to_string())?;
        sender
            .ready()
            .await
            .map_err(|error| format!("floor connection: {error}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|error| format!("floor request: {error}"))?;
        let status = response.status();
        let _ = response.into_body().collect().await;
        if !status.is_success() {
            return Err(format!("floor answered {status}"));
        }
        self.idle
            .lock()
            .expect("no panics while locked")
            .push(sender);
        Ok(())
    }

    async fn connect(&self) -> Result<SendRequest<Full<Bytes>>, String> {
        let stream = TcpStream::connect(self.server)
            .await
            .map_err(|error| format!("floor connect: {error}"))?;
        let _ = stream.set_nodelay(true);
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|error| format!("floor handshake: {error}"))?;
        tokio::spawn(connection);
        Ok(sender)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A floor's `POST /publish` that answers every request 200, on a
    /// thread of its own.
    fn answering_floor() -> SocketAddr {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let mut stream = BufReader::new(stream.unwrap());
                'requests: loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if stream.read_line(&mut line).unwrap_or(0) == 0 {
                            break 'requests;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    stream.read_exact(&mut body).unwrap();
                    stream
                        .get_mut()
                        .write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                        .unwrap();
                }
            }
        });
        address
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_publish_call_runs_on_its_own_thread_while_the_caller_is_busy() {
        let publisher = Publisher::floor(answering_floor()).unwrap();
        let (done, finished) = std::sync::mpsc::channel();
        let caller = publisher.clone();
        let _call = publisher.spawn(async move {
            let thread = std::thread::current().name().map(str::to_owned);
            let result = caller.publish("c".to_owned(), "{}".to_owned()).await;
            done.send((thread, result)).unwrap();
        });
        // This blocks the caller's runtime (its only thread): a call that
        // needed it, to run or to read its answer, would not end.
        let (thread, result) = finished
            .recv_timeout(Duration::from_secs(10))
            .expect("the call ended while the caller's runtime was held");
        assert_eq!(thread.as_deref(), Some("pulse-bench-publisher"));
        assert_eq!(result, Ok(()));
    }

    #[test]
    fn stamps_come_from_the_publication_frame() {
        let data = serde_json::value::RawValue::from_string(stamp_data(42, 123_456)).unwrap();
        let frame = pulse_protocol::channel::publication_frame("bench:fan-0", None, &data);
        assert_eq!(stamp_of(frame.as_bytes()), Some((42, 123_456)));
        assert_eq!(
            stamp_of(br#"{"type":"subscribed","id":1,"channel":"c"}"#),
            None
        );
        assert_eq!(
            stamp_of(br#"{"type":"publication","channel":"c","data":{"seq":x}}"#),
            None
        );
    }

    #[test]
    fn answers_are_matched_by_id() {
        assert_eq!(
            answer_to(br#"{"type":"subscribed","id":3,"channel":"c"}"#, 3),
            Some(Ok(()))
        );
        assert_eq!(
            answer_to(
                br#"{"type":"error","id":3,"code":"permission_denied","message":"m"}"#,
                3
            ),
            Some(Err("permission_denied".to_owned()))
        );
        assert_eq!(
            answer_to(br#"{"type":"subscribed","id":4,"channel":"c"}"#, 3),
            None
        );
        assert_eq!(
            answer_to(br#"{"type":"publication","channel":"c","data":1}"#, 3),
            None
        );
    }

    #[test]
    fn a_subscription_token_names_the_channel_and_the_user() {
        let token = subscription_token("s3cret", "alice", "order:42");
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_required_spec_claims(&["exp", "sub"]);
        let claims = jsonwebtoken::decode::<serde_json::Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &validation,
        )
        .unwrap()
        .claims;
        assert_eq!(claims["sub"], "alice");
        assert_eq!(claims["channel"], "order:42");
        assert_eq!(
            subscribe_request(7, "order:42", Some("T")),
            r#"{"type":"subscribe","id":7,"channel":"order:42","token":"T"}"#
        );
    }
}
