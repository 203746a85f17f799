//! Frames over an owned TCP stream's halves, holding no buffer while a
//! connection is idle, and writing none.
//!
//! fastwebsockets keeps an 8 KiB read buffer per socket for its whole life
//! (and grows it to the largest frame, never shrinking it); at tens of
//! thousands of idle sockets that buffer is most of a gateway's memory. The
//! reader here waits for readability with nothing allocated, reads what the
//! kernel has into a stack buffer, parses the whole frames out of it, and
//! keeps only the bytes of an unfinished frame, which it frees once they are
//! consumed. fastwebsockets still performs the HTTP upgrade.
//!
//! Reading is cancel-safe: `Reader::poll_next` changes state only
//! synchronously (readability is polled, the bytes are then read and parsed
//! at once), so a session may stop waiting at any point without losing a byte.
//!
//! Writing puts the header on the stack and hands it and the payload, where
//! it already is, to one vectored write: no frame is copied into a buffer.

use std::{
    io::{self, IoSlice},
    task::{Context, Poll, ready},
};

use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};

use super::{Frame, Header, MAX_HEADER, OpCode, Parsed, Violation, parse};

/// How much one synchronous read takes from the kernel, on the stack.
const READ_CHUNK: usize = 4096;

/// What reading produced: a frame, or why there will be none.
#[derive(Debug)]
pub(crate) enum ReadError {
    /// The client broke the protocol.
    Violation(Violation),
    /// The peer closed the transport, or it failed.
    Closed,
}

/// The read half of a client socket.
#[derive(Debug)]
pub(crate) struct Reader {
    half: OwnedReadHalf,
    /// Bytes read but not yet parsed: only ever an unfinished frame. Empty,
    /// with no allocation, while the connection is idle.
    pending: Vec<u8>,
    max_frame: usize,
}

impl Reader {
    pub(crate) fn new(half: OwnedReadHalf, max_frame: usize) -> Self {
        Self {
            half,
            pending: Vec::new(),
            max_frame,
        }
    }

    /// The largest frame, and message, accepted.
    pub(crate) fn max_frame(&self) -> usize {
        self.max_frame
    }

    /// The next frame. Waiting registers only the task's waker with the
    /// socket (no future, no buffer), so a session can wait on this beside
    /// its other wake-ups at no cost while idle.
    pub(crate) fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Result<Frame, ReadError>> {
        loop {
            if let Some(frame) = self.parse_pending()? {
                return Poll::Ready(Ok(frame));
            }
            ready!(self.half.as_ref().poll_read_ready(cx)).map_err(|_| ReadError::Closed)?;
            // Readiness that turns out stale is cleared by the read, and
            // the next poll registers the waker again.
            if let Some(frame) = self.read_available()? {
                return Poll::Ready(Ok(frame));
            }
        }
    }

    /// A whole frame from the pending bytes, if they hold one.
    fn parse_pending(&mut self) -> Result<Option<Frame>, ReadError> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        match parse(&self.pending, self.max_frame).map_err(ReadError::Violation)? {
            Parsed::Frame { frame, used } => {
                self.pending.drain(..used);
                self.release();
                Ok(Some(frame))
            }
            Parsed::Incomplete { needed } => {
                if let Some(needed) = needed {
                    self.pending.reserve_exact(needed - self.pending.len());
                }
                Ok(None)
            }
        }
    }

    /// Reads what the socket has without waiting; returns the first whole
    /// frame, keeping any bytes after it pending.
    fn read_available(&mut self) -> Result<Option<Frame>, ReadError> {
        // A frame already begun reads straight into its reserved room.
        if !self.pending.is_empty() {
            return match self.half.try_read_buf(&mut self.pending) {
                Ok(0) => Err(ReadError::Closed),
                Ok(_) => self.parse_pending(),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => Ok(None),
                Err(_) => Err(ReadError::Closed),
            };
        }
        let mut chunk = [0u8; READ_CHUNK];
        let read = match self.half.try_read(&mut chunk) {
            Ok(0) => return Err(ReadError::Closed),
            Ok(read) => read,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => return Ok(None),
            Err(_) => return Err(ReadError::Closed),
        };
        let bytes = &chunk[..read];
        // The usual case: whole frames, parsed from the stack, nothing kept.
        match parse(bytes, self.max_frame).map_err(ReadError::Violation)? {
            Parsed::Frame { frame, used } => {
                self.pending.extend_from_slice(&bytes[used..]);
                Ok(Some(frame))
            }
            Parsed::Incomplete { needed } => {
                self.pending
                    .reserve_exact(needed.unwrap_or(MAX_HEADER).max(read));
                self.pending.extend_from_slice(bytes);
                Ok(None)
            }
        }
    }

    /// Frees the pending buffer once nothing is left in it, so an idle
    /// connection holds no allocation, and trims one a large frame grew.
    fn release(&mut self) {
        if self.pending.is_empty() {
            self.pending = Vec::new();
        } else if self.pending.capacity() > 2 * self.pending.len() + READ_CHUNK {
            self.pending.shrink_to_fit();
        }
    }
}

/// The write half of a client socket.
#[derive(Debug)]
pub(crate) struct Writer {
    half: OwnedWriteHalf,
}

impl Writer {
    pub(crate) fn new(half: OwnedWriteHalf) -> Self {
        Self { half }
    }

    /// Writes one whole frame: its header from the stack and its payload
    /// from where it is, in one vectored write where the socket takes it all
    /// (most frames: no await, no state kept), in as many as it needs
    /// otherwise. Not cancel-safe: a write abandoned halfway leaves the
    /// stream mid-frame, so the caller must drop the transport.
    pub(crate) async fn write(&mut self, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
        let header = Header::server(opcode, payload.len());
        let header = header.as_bytes();
        let mut written = 0;
        while written < header.len() + payload.len() {
            let result = match header.get(written..) {
                Some(rest) if !rest.is_empty() => self
                    .half
                    .try_write_vectored(&[IoSlice::new(rest), IoSlice::new(payload)]),
                _ => self.half.try_write(&payload[written - header.len()..]),
            };
            match result {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(count) => written += count,
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.half.writable().await?;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }

    /// Writes several whole frames of one opcode with as few writes as the
    /// socket allows (one, when it takes them all): every header from a
    /// small buffer and every payload from where it is, as one vectored
    /// write. Not cancel-safe, as [`Writer::write`].
    pub(crate) async fn write_all(
        &mut self,
        opcode: OpCode,
        payloads: &[impl AsRef<[u8]>],
    ) -> io::Result<()> {
        let headers: Vec<Header> = payloads
            .iter()
            .map(|payload| Header::server(opcode, payload.as_ref().len()))
            .collect();
        let mut slices: Vec<IoSlice<'_>> = headers
            .iter()
            .zip(payloads)
            .flat_map(|(header, payload)| {
                [
                    IoSlice::new(header.as_bytes()),
                    IoSlice::new(payload.as_ref()),
                ]
            })
            .collect();
        let mut rest = &mut slices[..];
        // Empty payloads leave empty slices, which count for nothing.
        while rest.iter().any(|slice| !slice.is_empty()) {
            match self.half.try_write_vectored(rest) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(count) => IoSlice::advance_slices(&mut rest, count),
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => {
                    self.half.writable().await?;
                }
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_masked;

    /// Frames written in arbitrary pieces over a real socket come out whole
    /// and in order, including frames larger than one read.
    #[tokio::test]
    async fn reads_frames_split_across_arbitrary_writes() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        use tokio::{
            io::AsyncWriteExt,
            net::{TcpListener, TcpStream},
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (read_half, _write_half) = server.into_split();
        let mut reader = Reader::new(read_half, 1 << 20);

        let mut rng = StdRng::seed_from_u64(17);
        let sizes = [0, 1, 125, 126, 4000, 4096, 5000, 65_536, 200_000, 3, 9000];
        let payloads: Vec<Vec<u8>> = sizes
            .iter()
            .map(|&len| (0..len).map(|_| rng.random()).collect())
            .collect();
        let stream: Vec<u8> = payloads
            .iter()
            .flat_map(|payload| encode_masked(0x82, payload, rng.random()))
            .collect();
        let writer = tokio::spawn(async move {
            let mut rng = StdRng::seed_from_u64(18);
            let mut rest = &stream[..];
            while !rest.is_empty() {
                let take = rng.random_range(1..=rest.len().min(7000));
                client.write_all(&rest[..take]).await.unwrap();
                client.flush().await.unwrap();
                rest = &rest[take..];
                tokio::task::yield_now().await;
            }
            client
        });
        for expected in &payloads {
            let frame = std::future::poll_fn(|cx| reader.poll_next(cx))
                .await
                .unwrap();
            assert_eq!(frame.opcode, OpCode::Binary);
            assert_eq!(frame.payload.len(), expected.len());
            assert!(frame.payload == *expected);
        }
        assert_eq!(reader.pending.capacity(), 0, "nothing held once idle");
        drop(writer.await.unwrap());
        let end = std::future::poll_fn(|cx| reader.poll_next(cx)).await;
        assert!(matches!(end, Err(ReadError::Closed)));
    }

    /// A frame larger than the socket buffer is written whole, in order,
    /// through as many partial writes as it takes.
    #[tokio::test]
    async fn writes_a_frame_larger_than_the_socket_buffer_whole() {
        let payload: Vec<u8> = (0..3_000_000u32).map(|i| (i % 253) as u8).collect();
        let expected_len = 10 + payload.len();
        let (mut writer, reading) = writer_and_reader(expected_len).await;
        writer.write(OpCode::Binary, &payload).await.unwrap();
        writer.write(OpCode::Text, b"after").await.unwrap();
        let received = reading.await.unwrap();
        assert_eq!(
            &received[..10],
            Header::server(OpCode::Binary, payload.len()).as_bytes()
        );
        assert!(received[10..expected_len] == payload[..]);
    }

    /// Several frames written together, larger in all than the socket's
    /// buffer and with an empty one among them, arrive whole and in order.
    #[tokio::test]
    async fn writes_several_frames_at_once_whole_and_in_order() {
        let payloads: Vec<Vec<u8>> = [5, 0, 200, 70_000, 1_500_000, 3]
            .iter()
            .enumerate()
            .map(|(n, &len)| vec![n as u8; len])
            .collect();
        let expected: Vec<u8> = payloads
            .iter()
            .flat_map(|payload| {
                let mut frame = Header::server(OpCode::Text, payload.len())
                    .as_bytes()
                    .to_vec();
                frame.extend_from_slice(payload);
                frame
            })
            .collect();
        let expected_len = expected.len();
        let (mut writer, reading) = writer_and_reader(expected_len).await;
        writer.write_all(OpCode::Text, &payloads).await.unwrap();
        assert!(reading.await.unwrap() == expected);
    }

    /// A writer on one end of a real TCP connection, and a task reading
    /// `len` bytes from the other end.
    async fn writer_and_reader(len: usize) -> (Writer, tokio::task::JoinHandle<Vec<u8>>) {
        use tokio::{
            io::AsyncReadExt,
            net::{TcpListener, TcpStream},
        };
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let (_read_half, write_half) = server.into_split();
        let reading = tokio::spawn(async move {
            let mut received = Vec::new();
            while received.len() < len {
                let mut chunk = [0u8; 65_536];
                let read = client.read(&mut chunk).await.unwrap();
                assert_ne!(read, 0, "the stream ended early");
                received.extend_from_slice(&chunk[..read]);
            }
            received
        });
        (Writer::new(write_half), reading)
    }
}
