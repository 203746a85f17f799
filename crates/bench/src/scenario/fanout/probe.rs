//! Subscribes timed during the saturation window, from connections of
//! their own: what a big fan-out costs everyone else on the server.

use std::sync::Mutex;

use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;

use super::FanoutOptions;
use crate::{
    scenario::{channels::subscribe, due},
    stats::{Percentiles, Samples},
};

/// The probe connections' subscribes during the saturation window.
pub(super) struct Probe {
    conns: Mutex<Vec<crate::client::Conn>>,
    rate: f64,
    prefix: String,
    tasks: Mutex<Vec<tokio::task::JoinHandle<Samples>>>,
    pub(super) stop: CancellationToken,
}

impl Probe {
    pub(super) fn new(conns: Vec<crate::client::Conn>, options: &FanoutOptions) -> Self {
        Self {
            conns: Mutex::new(conns),
            rate: options.probe_rate,
            prefix: format!("{}probe-{}-", options.channel_prefix, std::process::id()),
            tasks: Mutex::default(),
            stop: CancellationToken::new(),
        }
    }

    /// Starts subscribing, each connection at its share of the rate.
    pub(super) fn start(&self) {
        let conns = std::mem::take(&mut *self.conns.lock().expect("no panics while locked"));
        let count = conns.len().max(1) as u64;
        let start = Instant::now();
        let mut tasks = self.tasks.lock().expect("no panics while locked");
        for (index, mut conn) in conns.into_iter().enumerate() {
            let (stop, prefix, rate) = (self.stop.clone(), self.prefix.clone(), self.rate);
            tasks.push(tokio::spawn(async move {
                let mut samples = Samples::default();
                for n in 0..128u64 {
                    let at = due(start, n * count + index as u64, rate);
                    tokio::select! {
                        () = stop.cancelled() => break,
                        () = sleep_until(at) => {}
                    }
                    let channel = format!("{prefix}{index}-{n}");
                    match subscribe(&mut conn, n + 1, &channel, None).await {
                        Ok(rtt) => samples.record(rtt),
                        Err(_) => break,
                    }
                }
                samples
            }));
        }
    }

    /// Stops the probes; their round trips, when there were probes.
    pub(super) async fn finish(&self) -> anyhow::Result<Option<Percentiles>> {
        self.stop.cancel();
        let tasks = std::mem::take(&mut *self.tasks.lock().expect("no panics while locked"));
        if tasks.is_empty() {
            return Ok(None);
        }
        let mut all = Samples::default();
        for task in tasks {
            all.merge(task.await?);
        }
        Ok(Some(all.summary()))
    }
}
