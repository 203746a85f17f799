//! Users churning WebSocket connections over several gateways from
//! concurrent tasks, each client keeping the record of what it holds open:
//! the truth a presence test compares with.
//!
//! Every open socket is held by a reader task that answers the gateway's
//! pings. A client leaves with a close frame or by shutting its TCP write
//! side (no close frame), then reads until the gateway closes the
//! connection: the gateway deregisters a connection before it answers or
//! closes, so once a reader task has ended, presence has heard of it.

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::StreamExt;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    sync::oneshot,
    task::JoinHandle,
    time::{sleep, timeout},
};
use tokio_tungstenite::tungstenite::Message;

use crate::{Client, events::PresenceState, token};

/// A small deterministic generator, so a failing run can be replayed from its seed.
#[derive(Debug, Clone)]
pub struct Rng(pub u64);

impl Rng {
    /// A number below `n`.
    pub fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// What the clients know.
#[derive(Debug, Default)]
pub struct Record {
    /// The connections open, by user, as the clients see them.
    pub open: PresenceState,
    /// Sockets the server ended (user, connection, gateway index).
    pub ended_by_server: Vec<(String, String, usize)>,
    /// Connections opened (`connected` read).
    pub connects: usize,
    /// Connects that failed (a gateway that is gone).
    pub refused: usize,
}

impl Record {
    fn remove(&mut self, user: &str, id: &str) {
        if let Some(ids) = self.open.get_mut(user) {
            ids.remove(id);
            if ids.is_empty() {
                self.open.remove(user);
            }
        }
    }
}

/// How a client leaves.
enum Leave {
    /// A close frame.
    Close,
    /// The TCP connection's write side shut, no close frame.
    Drop,
}

/// One socket still open when the churn stopped, held by its reader task.
pub struct Open {
    /// Whose.
    pub user: String,
    /// Its connection id (from `connected`).
    pub id: String,
    /// Which gateway (an index into the addresses given).
    pub gateway: usize,
    /// Ends when the server ends the socket (it is never told to leave).
    pub reader: JoinHandle<()>,
    /// Kept: dropping it would read as "leave".
    leave: oneshot::Sender<Leave>,
}

/// How the churn is asked to go.
#[derive(Debug, Clone)]
pub struct ChurnOptions {
    /// The gateways, picked at random for each connect.
    pub gateways: Vec<SocketAddr>,
    /// User ids, picked at random for each connect.
    pub users: Vec<String>,
    /// Concurrent tasks.
    pub workers: usize,
    /// The pause before each of a task's steps.
    pub pace: Duration,
    /// Out of 10, how many steps connect (the others leave).
    pub connect_in_ten: usize,
}

/// A running churn.
pub struct Churn {
    /// What the clients know, as it goes.
    pub record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
    workers: Vec<JoinHandle<Churned>>,
}

/// What a stopped churn leaves: the sockets still open, and the readers of
/// those the clients left.
pub struct Churned {
    /// Sockets still open (or ended by their server).
    pub open: Vec<Open>,
    /// Readers of sockets the clients left: each ends once its gateway has
    /// ended the session.
    pub left: Vec<JoinHandle<()>>,
}

impl Churn {
    /// Starts `options.workers` tasks, each with its own generator from `seed`.
    pub fn start(seed: u64, options: &ChurnOptions) -> Self {
        let record = Arc::default();
        let stop = Arc::new(AtomicBool::new(false));
        let workers = (0..options.workers)
            .map(|worker| {
                let rng = Rng(seed.wrapping_add(worker as u64 * 7919) | 1);
                tokio::spawn(churn(
                    rng,
                    options.clone(),
                    Arc::clone(&record),
                    stop.clone(),
                ))
            })
            .collect();
        Self {
            record,
            stop,
            workers,
        }
    }

    /// Stops every task after its current step.
    ///
    /// # Panics
    ///
    /// When a task panicked.
    pub async fn stop(self) -> Churned {
        self.stop.store(true, Ordering::Relaxed);
        let mut churned = Churned {
            open: Vec::new(),
            left: Vec::new(),
        };
        for worker in self.workers {
            let one = worker.await.expect("a churn task");
            churned.open.extend(one.open);
            churned.left.extend(one.left);
        }
        churned
    }
}

/// Reads the socket until told to leave or until the server ends it; after
/// leaving, until the gateway closes the TCP connection.
async fn hold(
    mut socket: Client,
    mut leave: oneshot::Receiver<Leave>,
    record: Arc<Mutex<Record>>,
    (user, id, gateway): (String, String, usize),
) {
    let how = loop {
        tokio::select! {
            how = &mut leave => break how.ok(),
            frame = socket.next() => match frame {
                Some(Ok(Message::Close(_)) | Err(_)) | None => break None,
                Some(Ok(_)) => {}
            },
        }
    };
    match how {
        None => {
            let mut record = record.lock().unwrap();
            record.remove(&user, &id);
            record.ended_by_server.push((user, id, gateway));
            return;
        }
        Some(Leave::Close) => {
            let _ = socket.close(None).await;
        }
        Some(Leave::Drop) => {
            let _ = socket.get_mut().shutdown().await;
        }
    }
    let mut buffer = [0u8; 1024];
    while let Ok(1..) = socket.get_mut().read(&mut buffer).await {}
}

/// Reads the `connected` message; `None` when the socket ends first.
async fn connected_id(socket: &mut Client) -> Option<String> {
    loop {
        match timeout(Duration::from_secs(10), socket.next())
            .await
            .ok()??
        {
            Ok(Message::Text(text)) => {
                let value: serde_json::Value = serde_json::from_str(&text).ok()?;
                return value["connection_id"].as_str().map(str::to_owned);
            }
            Ok(Message::Ping(_)) => continue,
            _ => return None,
        }
    }
}

/// One task: connect (a random user, a random gateway) or leave (a random
/// socket of its own, half with a close frame), until `stop`.
async fn churn(
    mut rng: Rng,
    options: ChurnOptions,
    record: Arc<Mutex<Record>>,
    stop: Arc<AtomicBool>,
) -> Churned {
    let mut open: Vec<Open> = Vec::new();
    let mut left = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        sleep(options.pace).await;
        if rng.below(10) < options.connect_in_ten || open.is_empty() {
            let user = options.users[rng.below(options.users.len())].clone();
            let gateway = rng.below(options.gateways.len());
            let url = format!(
                "ws://{}/ws?token={}",
                options.gateways[gateway],
                token(&user)
            );
            let connecting = timeout(
                Duration::from_secs(10),
                tokio_tungstenite::connect_async(url),
            );
            let Ok(Ok((mut socket, _))) = connecting.await else {
                record.lock().unwrap().refused += 1;
                continue;
            };
            let Some(id) = connected_id(&mut socket).await else {
                continue;
            };
            {
                let mut record = record.lock().unwrap();
                record.connects += 1;
                let ids = record.open.entry(user.clone()).or_default();
                ids.insert(id.clone());
            }
            let (tx, rx) = oneshot::channel();
            let conn = (user.clone(), id.clone(), gateway);
            let reader = tokio::spawn(hold(socket, rx, Arc::clone(&record), conn));
            open.push(Open {
                user,
                id,
                gateway,
                reader,
                leave: tx,
            });
        } else {
            let conn = open.swap_remove(rng.below(open.len()));
            record.lock().unwrap().remove(&conn.user, &conn.id);
            let how = if rng.below(2) == 0 {
                Leave::Close
            } else {
                Leave::Drop
            };
            // A socket the server ended already has no reader listening.
            let _ = conn.leave.send(how);
            left.push(conn.reader);
        }
    }
    Churned { open, left }
}
