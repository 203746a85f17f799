//! One socket's outbox: the frames waiting for it, and the task that
//! writes them (one per `writev`, or every frame waiting in one), or the
//! publisher writing an idle socket itself (`direct`).

use std::{
    collections::VecDeque,
    io::IoSlice,
    sync::{Arc, Mutex, MutexGuard},
};

use bytes::Bytes;
use tokio::{net::tcp::OwnedWriteHalf, sync::Notify};

/// The most frames one coalesced write carries (well under `IOV_MAX`).
const MAX_BATCH: usize = 512;

/// One socket's queue of encoded frames, and the socket's write half.
pub(super) struct Outbox {
    state: Mutex<OutboxState>,
    ready: Notify,
    write: OwnedWriteHalf,
}

#[derive(Default)]
struct OutboxState {
    frames: VecDeque<Bytes>,
    /// The writer task has taken frames and is writing them: nobody else
    /// may write before it is done, or frames would go out of order.
    writing: bool,
    closed: bool,
}

#[derive(Debug, PartialEq, Eq)]
pub(super) enum Pushed {
    /// Written to the socket by the publisher ([`FloorOptions::direct`]).
    Written,
    Queued,
    Overflowed,
    Closed,
}

impl Outbox {
    fn lock(&self) -> MutexGuard<'_, OutboxState> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) fn new(write: OwnedWriteHalf) -> Self {
        Self {
            state: Mutex::default(),
            ready: Notify::new(),
            write,
        }
    }

    pub(super) fn push(&self, frame: Bytes, capacity: usize, direct: bool) -> Pushed {
        let mut state = self.lock();
        if state.closed {
            return Pushed::Closed;
        }
        if direct && !state.writing && state.frames.is_empty() {
            // Under the lock, so that the writer task cannot start between
            // the look at the queue and the write.
            match self.write.try_write_vectored(&[IoSlice::new(&frame)]) {
                Ok(written) if written == frame.len() => return Pushed::Written,
                Ok(written) => state.frames.push_back(frame.slice(written..)),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                    state.frames.push_back(frame);
                }
                Err(_) => state.closed = true,
            }
            drop(state);
            self.ready.notify_one();
            return Pushed::Queued;
        }
        let pushed = if state.frames.len() >= capacity {
            state.closed = true;
            Pushed::Overflowed
        } else {
            state.frames.push_back(frame);
            Pushed::Queued
        };
        drop(state);
        // A permit is stored when the writer is not waiting yet, so no
        // wake-up is lost between its look at the queue and its wait.
        self.ready.notify_one();
        pushed
    }

    pub(super) fn close(&self) {
        self.lock().closed = true;
        self.ready.notify_one();
    }
}

/// Writes what waits in the outbox until it is closed or a write fails:
/// one frame per write, or every frame waiting in one vectored write.
pub(super) async fn write_loop(outbox: Arc<Outbox>, coalesce: bool) {
    let mut batch: Vec<Bytes> = Vec::new();
    loop {
        {
            let mut state = outbox.lock();
            if state.closed {
                return;
            }
            if coalesce {
                let take = state.frames.len().min(MAX_BATCH);
                batch.extend(state.frames.drain(..take));
            } else if let Some(frame) = state.frames.pop_front() {
                batch.push(frame);
            }
            state.writing = !batch.is_empty();
        }
        if batch.is_empty() {
            outbox.ready.notified().await;
            continue;
        }
        // `writev` even for one frame, as the gateway writes (header and
        // payload): the same system call, and one that `/proc/<pid>/io`
        // counts (`syscw`), where a `send` would not be.
        let written = write_all_vectored(&outbox.write, &batch).await;
        batch.clear();
        outbox.lock().writing = false;
        if written.is_err() {
            outbox.close();
            return;
        }
    }
}

/// Writes every frame, in order, in as few vectored writes as the kernel
/// takes (one, unless the socket buffer fills).
async fn write_all_vectored(write: &OwnedWriteHalf, frames: &[Bytes]) -> std::io::Result<()> {
    let total: usize = frames.iter().map(Bytes::len).sum();
    let mut done = 0;
    while done < total {
        let mut skip = done;
        let slices: Vec<IoSlice<'_>> = frames
            .iter()
            .filter_map(|frame| {
                if skip >= frame.len() {
                    skip -= frame.len();
                    None
                } else {
                    let slice = IoSlice::new(&frame[skip..]);
                    skip = 0;
                    Some(slice)
                }
            })
            .collect();
        match write.try_write_vectored(&slices) {
            Ok(0) => return Err(std::io::ErrorKind::WriteZero.into()),
            Ok(written) => done += written,
            Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {
                write.writable().await?;
            }
            Err(error) => return Err(error),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use tokio::net::{TcpListener, TcpStream};

    use super::*;

    async fn socket_pair() -> (TcpStream, OwnedWriteHalf) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        (client, server.into_split().1)
    }

    #[tokio::test]
    async fn a_full_queue_closes_the_outbox() {
        let (_client, write) = socket_pair().await;
        let outbox = Outbox::new(write);
        let push = |text: &'static [u8]| outbox.push(Bytes::from_static(text), 2, false);
        assert_eq!(push(b"a"), Pushed::Queued);
        assert_eq!(push(b"b"), Pushed::Queued);
        assert_eq!(push(b"c"), Pushed::Overflowed);
        assert_eq!(push(b"d"), Pushed::Closed);
    }

    #[tokio::test]
    async fn a_direct_write_waits_behind_what_the_writer_holds() {
        use tokio::io::AsyncReadExt;
        let (mut client, write) = socket_pair().await;
        let outbox = Outbox::new(write);
        assert_eq!(
            outbox.push(Bytes::from_static(b"1"), 4, true),
            Pushed::Written
        );
        // The writer task has taken a frame and not finished it: a direct
        // write now would overtake it.
        outbox.lock().writing = true;
        assert_eq!(
            outbox.push(Bytes::from_static(b"2"), 4, true),
            Pushed::Queued
        );
        outbox.lock().writing = false;
        // Something waits: the next one waits behind it.
        assert_eq!(
            outbox.push(Bytes::from_static(b"3"), 4, true),
            Pushed::Queued
        );
        let mut read = [0u8; 1];
        client.read_exact(&mut read).await.unwrap();
        assert_eq!(&read, b"1");
        assert_eq!(outbox.lock().frames.len(), 2);
    }
}
