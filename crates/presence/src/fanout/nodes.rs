//! The fan-out's connections to Redis nodes: one RESP3 connection per
//! address, made on first use and driven by a task of its own, which sends
//! the fan-out's commands, matches their answers, and hands the fan-out the
//! node's publications and unasked unsubscriptions tagged with the
//! connection's generation. A connection the fan-out lets go of (its
//! [`Link`] dropped) is closed by its task.

use std::{collections::VecDeque, sync::Arc};

use bytes::{Buf, BytesMut};
use redis::{ConnectionAddr, ConnectionInfo};
use tokio::{
    io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt},
    sync::{mpsc, oneshot},
    time::timeout,
};
use tracing::{debug, warn};

use super::{
    CONNECT_TIMEOUT, DeliveryPosition, Fanout, Node, NodeEvent,
    resp::{self, Frame},
    split_payload,
};
use crate::PresenceError;

/// The fan-out's end of a node connection.
pub(super) type Link = mpsc::UnboundedSender<Command>;

/// What the fan-out asks of a node connection.
pub(super) enum Command {
    /// `SSUBSCRIBE key`, answered once the server confirms it.
    Subscribe {
        key: String,
        done: oneshot::Sender<Answer>,
    },
    /// `SUNSUBSCRIBE key`; nobody waits for it (whatever still arrives for
    /// the channel finds no subscriber and is dropped).
    Unsubscribe { key: String },
    /// `PING`, answered by `PONG`.
    Ping { done: oneshot::Sender<Answer> },
}

/// A node's answer to a command.
#[derive(Debug, PartialEq)]
pub(super) enum Answer {
    Done,
    /// `MOVED` (or `ASK`): the bucket's slot is served at this address.
    Redirected(String),
    /// Any other error, as the server put it.
    Failed(String),
}

/// A sent command waiting for its answer, in the order sent (a server
/// answers in order; publications and unasked unsubscriptions come between
/// answers, as pushes).
enum Waiting {
    Subscribe(oneshot::Sender<Answer>),
    Unsubscribe(String),
    Ping(oneshot::Sender<Answer>),
}

impl Fanout {
    /// The connection to `address`, made if there is none.
    pub(super) async fn link(&mut self, address: &Arc<str>) -> Result<Link, PresenceError> {
        if let Some(node) = self.nodes.get(address) {
            return Ok(node.link.clone());
        }
        let info = self.info_for(address)?;
        self.generation += 1;
        let generation = self.generation;
        let opened = timeout(
            CONNECT_TIMEOUT,
            open(&info, address.clone(), generation, self.events.clone()),
        )
        .await;
        let link = match opened {
            Ok(Ok(link)) => link,
            Ok(Err(error)) => {
                self.next_seed += 1;
                return Err(PresenceError::Unavailable(format!(
                    "redis at {address}: {error}"
                )));
            }
            Err(_) => {
                self.next_seed += 1;
                return Err(PresenceError::Unavailable(format!(
                    "no connection to {address} within {CONNECT_TIMEOUT:?}"
                )));
            }
        };
        self.nodes.insert(
            address.clone(),
            Node {
                generation,
                link: link.clone(),
                channels: 0,
            },
        );
        Ok(link)
    }

    /// Connection settings for `address`: a seed's own, or a seed's with
    /// the address replaced (credentials kept).
    fn info_for(&self, address: &str) -> Result<ConnectionInfo, PresenceError> {
        if let Some(seed) = self.seeds.iter().find(|seed| address_of(seed) == address) {
            return Ok(seed.clone());
        }
        let bad =
            || PresenceError::Unavailable(format!("cannot follow a redirection to {address:?}"));
        let (host, port) = address.rsplit_once(':').ok_or_else(bad)?;
        let port: u16 = port.parse().map_err(|_| bad())?;
        let seed = &self.seeds[0];
        Ok(seed
            .clone()
            .set_addr(ConnectionAddr::Tcp(host.to_owned(), port)))
    }
}

/// `host:port` of a node, as `MOVED` names it.
pub(super) fn address_of(info: &ConnectionInfo) -> String {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
            format!("{host}:{port}")
        }
        other => other.to_string(),
    }
}

type Events = mpsc::UnboundedSender<(Arc<str>, u64, NodeEvent)>;

/// Connects, says `HELLO 3` (with the URL's credentials), and starts the
/// connection's task.
async fn open(
    info: &ConnectionInfo,
    address: Arc<str>,
    generation: u64,
    events: Events,
) -> Result<Link, String> {
    match info.addr() {
        ConnectionAddr::Tcp(host, port) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port))
                .await
                .map_err(|e| e.to_string())?;
            drop(stream.set_nodelay(true));
            start(stream, info, address, generation, events).await
        }
        ConnectionAddr::Unix(path) => {
            let stream = tokio::net::UnixStream::connect(path)
                .await
                .map_err(|e| e.to_string())?;
            start(stream, info, address, generation, events).await
        }
        // TLS (`rediss://`): no TLS feature is built into the redis client
        // either, so no other connection of the process could use it.
        other => Err(format!(
            "cannot connect to {other}: not supported by this build"
        )),
    }
}

async fn start<S>(
    mut stream: S,
    info: &ConnectionInfo,
    address: Arc<str>,
    generation: u64,
    events: Events,
) -> Result<Link, String>
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let settings = info.redis_settings();
    let mut hello: Vec<&[u8]> = vec![b"HELLO", b"3"];
    if let Some(password) = settings.password() {
        hello.extend([
            b"AUTH".as_slice(),
            settings.username().unwrap_or("default").as_bytes(),
            password.as_bytes(),
        ]);
    }
    hello.extend([b"SETNAME".as_slice(), b"pulse-fanout"]);
    let mut out = Vec::new();
    resp::command(&mut out, &hello);
    stream.write_all(&out).await.map_err(|e| e.to_string())?;
    let mut buffer = BytesMut::with_capacity(READ_SIZE);
    let used = loop {
        match resp::parse(&buffer).map_err(|e| e.to_string())? {
            Some((Frame::Error(error), _)) => {
                return Err(String::from_utf8_lossy(error).into_owned());
            }
            Some((_, used)) => break used,
            None => read_more(&mut stream, &mut buffer)
                .await
                .map_err(|e| format!("during the handshake: {e}"))?,
        }
    };
    buffer.advance(used);
    let (link, commands) = mpsc::unbounded_channel();
    tokio::spawn(drive(stream, buffer, address, generation, commands, events));
    Ok(link)
}

/// How much room a read is given.
const READ_SIZE: usize = 16 * 1024;

/// The connection's task: until the fan-out lets go of it, or it fails.
async fn drive<S>(
    mut stream: S,
    mut buffer: BytesMut,
    address: Arc<str>,
    generation: u64,
    mut commands: mpsc::UnboundedReceiver<Command>,
    events: Events,
) where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut waiting = VecDeque::new();
    let mut out = Vec::new();
    let tell = |event| drop(events.send((address.clone(), generation, event)));
    loop {
        tokio::select! {
            command = commands.recv() => {
                let Some(command) = command else {
                    // The fan-out let go of this node.
                    return;
                };
                out.clear();
                queue(command, &mut out, &mut waiting);
                while let Ok(command) = commands.try_recv() {
                    queue(command, &mut out, &mut waiting);
                }
                // Reads wait meanwhile: a few small commands, which Redis
                // reads whatever it is sending us.
                if let Err(error) = stream.write_all(&out).await {
                    debug!(%address, %error, "channel fan-out connection failed to write");
                    break;
                }
            }
            read = read_more(&mut stream, &mut buffer) => {
                if let Err(error) = read {
                    debug!(%address, %error, "channel fan-out connection ended");
                    break;
                }
                match handle_frames(&mut buffer, &mut waiting, &tell) {
                    Ok(()) => {}
                    Err(error) => {
                        warn!(%address, %error, "channel fan-out connection dropped");
                        break;
                    }
                }
            }
        }
    }
    tell(NodeEvent::Closed);
}

async fn read_more<S: AsyncRead + Unpin>(
    stream: &mut S,
    buffer: &mut BytesMut,
) -> std::io::Result<()> {
    buffer.reserve(READ_SIZE);
    match stream.read_buf(buffer).await? {
        0 => Err(std::io::ErrorKind::UnexpectedEof.into()),
        _ => Ok(()),
    }
}

fn queue(command: Command, out: &mut Vec<u8>, waiting: &mut VecDeque<Waiting>) {
    match command {
        Command::Subscribe { key, done } => {
            resp::command(out, &[b"SSUBSCRIBE", key.as_bytes()]);
            waiting.push_back(Waiting::Subscribe(done));
        }
        Command::Unsubscribe { key } => {
            resp::command(out, &[b"SUNSUBSCRIBE", key.as_bytes()]);
            waiting.push_back(Waiting::Unsubscribe(key));
        }
        Command::Ping { done } => {
            resp::command(out, &[b"PING"]);
            waiting.push_back(Waiting::Ping(done));
        }
    }
}

/// Handles every whole frame in `buffer` and takes them off it.
fn handle_frames(
    buffer: &mut BytesMut,
    waiting: &mut VecDeque<Waiting>,
    tell: &impl Fn(NodeEvent),
) -> Result<(), resp::Malformed> {
    while let Some((frame, used)) = resp::parse(buffer)? {
        handle(frame, waiting, tell);
        buffer.advance(used);
    }
    Ok(())
}

fn handle(frame: Frame<'_>, waiting: &mut VecDeque<Waiting>, tell: &impl Fn(NodeEvent)) {
    let items = match frame {
        Frame::Push(items) => items,
        Frame::Error(error) => {
            let error = String::from_utf8_lossy(error);
            let answer = match redirection(&error) {
                Some(to) => Answer::Redirected(to.to_owned()),
                None => Answer::Failed(error.into_owned()),
            };
            answer_next(waiting, answer);
            return;
        }
        // `PONG` (the only other answer these commands get).
        _ => {
            answer_next(waiting, Answer::Done);
            return;
        }
    };
    let (Some(Frame::Bulk(kind)), Some(Frame::Bulk(key))) = (items.first(), items.get(1)) else {
        return;
    };
    match *kind {
        b"smessage" => {
            let Some(Frame::Bulk(payload)) = items.get(2) else {
                return;
            };
            let (Ok(key), Ok(payload)) = (std::str::from_utf8(key), std::str::from_utf8(payload))
            else {
                warn!("skipping a publication that is not UTF-8");
                return;
            };
            let (position, frame): (Option<DeliveryPosition>, &str) = split_payload(payload);
            tell(NodeEvent::Message {
                key: key.into(),
                frame: frame.into(),
                position,
            });
        }
        b"ssubscribe" => answer_next(waiting, Answer::Done),
        b"sunsubscribe" => {
            let asked =
                matches!(waiting.front(), Some(Waiting::Unsubscribe(k)) if k.as_bytes() == *key);
            if asked {
                waiting.pop_front();
            } else if let Ok(key) = std::str::from_utf8(key) {
                tell(NodeEvent::Unsubscribed(key.into()));
            }
        }
        _ => {}
    }
}

/// Gives the oldest waiting command its answer.
fn answer_next(waiting: &mut VecDeque<Waiting>, answer: Answer) {
    match waiting.pop_front() {
        Some(Waiting::Subscribe(done) | Waiting::Ping(done)) => drop(done.send(answer)),
        Some(Waiting::Unsubscribe(key)) => {
            if answer != Answer::Done {
                debug!(%key, ?answer, "a channel unsubscription failed");
            }
        }
        None => debug!(?answer, "an answer nothing waited for"),
    }
}

/// The address of a `MOVED <slot> <host:port>` (or `ASK`) error.
fn redirection(error: &str) -> Option<&str> {
    let mut words = error.split_ascii_whitespace();
    match words.next()? {
        "MOVED" | "ASK" => {
            words.next()?;
            words.next()
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;

    use super::*;

    fn run(bytes: &[u8], waiting: &mut VecDeque<Waiting>) -> Vec<NodeEvent> {
        let told = RefCell::new(Vec::new());
        let mut buffer = BytesMut::from(bytes);
        handle_frames(&mut buffer, waiting, &|event| told.borrow_mut().push(event)).unwrap();
        assert!(buffer.is_empty());
        told.into_inner()
    }

    #[test]
    fn answers_go_to_the_commands_in_the_order_sent_and_pushes_go_to_the_fan_out() {
        let mut waiting = VecDeque::new();
        let (first, mut first_answer) = oneshot::channel();
        let (second, mut second_answer) = oneshot::channel();
        let (ping, mut pong) = oneshot::channel();
        let mut out = Vec::new();
        for command in [
            Command::Subscribe {
                key: "k1".into(),
                done: first,
            },
            Command::Unsubscribe { key: "k0".into() },
            Command::Subscribe {
                key: "k2".into(),
                done: second,
            },
            Command::Ping { done: ping },
        ] {
            queue(command, &mut out, &mut waiting);
        }
        let told = run(
            b">3\r\n$10\r\nssubscribe\r\n$2\r\nk1\r\n:1\r\n\
              >3\r\n$8\r\nsmessage\r\n$2\r\nk1\r\n$12\r\n7 ep {\"a\":1}\r\n\
              >3\r\n$12\r\nsunsubscribe\r\n$2\r\nk9\r\n:1\r\n\
              >3\r\n$12\r\nsunsubscribe\r\n$2\r\nk0\r\n:0\r\n\
              -MOVED 12 10.0.0.2:7001\r\n\
              +PONG\r\n",
            &mut waiting,
        );
        assert_eq!(first_answer.try_recv(), Ok(Answer::Done));
        assert_eq!(
            second_answer.try_recv(),
            Ok(Answer::Redirected("10.0.0.2:7001".into()))
        );
        assert_eq!(pong.try_recv(), Ok(Answer::Done));
        assert!(waiting.is_empty());
        let [
            NodeEvent::Message {
                key,
                frame,
                position,
            },
            NodeEvent::Unsubscribed(unasked),
        ] = told.as_slice()
        else {
            panic!("one message and one unasked unsubscription: {told:?}");
        };
        assert_eq!((&**key, &**frame), ("k1", "{\"a\":1}"));
        assert_eq!(position.as_ref().map(|p| p.offset), Some(7));
        assert_eq!(&**unasked, "k9");
    }

    #[test]
    fn a_redirection_names_the_address_and_other_errors_do_not() {
        assert_eq!(
            redirection("MOVED 3999 127.0.0.1:6381"),
            Some("127.0.0.1:6381")
        );
        assert_eq!(
            redirection("ASK 3999 127.0.0.1:6381"),
            Some("127.0.0.1:6381")
        );
        assert_eq!(redirection("ERR unknown command"), None);
        assert_eq!(redirection("MOVED"), None);
    }
}
