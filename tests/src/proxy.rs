//! A TCP proxy whose target can be switched, as a Sentinel-managed address
//! or a virtual IP moves to a promoted replica: connections to the old
//! target are cut, and new ones go to the new target (or are refused while
//! there is none).

use std::{
    net::SocketAddr,
    sync::{Arc, Mutex},
};

use tokio::{
    net::{TcpListener, TcpStream},
    sync::watch,
    task::JoinHandle,
};

/// A running proxy; it stops when dropped.
pub struct Proxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    target: Arc<Mutex<Option<SocketAddr>>>,
    generation: watch::Sender<u64>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `target`.
    pub async fn start(target: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let target = Arc::new(Mutex::new(Some(target)));
        let (generation, _) = watch::channel(0);
        let accept = {
            let target = target.clone();
            let generation = generation.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let to = *target.lock().expect("no panics while locked");
                    let Some(to) = to else { continue };
                    let mut cut = generation.subscribe();
                    tokio::spawn(async move {
                        let Ok(mut server) = TcpStream::connect(to).await else {
                            return;
                        };
                        let mut client = client;
                        tokio::select! {
                            _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Self {
            addr,
            target,
            generation,
            accept,
        }
    }

    /// `redis://` URL of the proxy.
    pub fn redis_url(&self) -> String {
        format!("redis://{}", self.addr)
    }

    /// Cuts every connection and sends new ones to `target`, or refuses
    /// them (closes them at once) with `None`.
    pub fn switch(&self, target: Option<SocketAddr>) {
        *self.target.lock().expect("no panics while locked") = target;
        self.generation.send_modify(|generation| *generation += 1);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
        self.generation.send_modify(|generation| *generation += 1);
    }
}
