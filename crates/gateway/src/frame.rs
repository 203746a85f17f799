//! RFC 6455 framing over an owned TCP stream, holding no buffer while a
//! connection is idle.
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

use std::{
    io,
    task::{Context, Poll, ready},
};

use tokio::{
    io::AsyncWriteExt,
    net::tcp::{OwnedReadHalf, OwnedWriteHalf},
};

/// How much one synchronous read takes from the kernel, on the stack.
const READ_CHUNK: usize = 4096;
/// The largest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;

/// A frame's opcode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpCode {
    Continuation,
    Text,
    Binary,
    Close,
    Ping,
    Pong,
}

impl OpCode {
    fn from_bits(bits: u8) -> Option<Self> {
        Some(match bits {
            0x0 => Self::Continuation,
            0x1 => Self::Text,
            0x2 => Self::Binary,
            0x8 => Self::Close,
            0x9 => Self::Ping,
            0xA => Self::Pong,
            _ => return None,
        })
    }

    /// The opcode's four bits, as in a frame's first byte.
    pub fn bits(self) -> u8 {
        match self {
            Self::Continuation => 0x0,
            Self::Text => 0x1,
            Self::Binary => 0x2,
            Self::Close => 0x8,
            Self::Ping => 0x9,
            Self::Pong => 0xA,
        }
    }

    fn is_control(self) -> bool {
        matches!(self, Self::Close | Self::Ping | Self::Pong)
    }
}

/// One frame from the client, unmasked.
#[derive(Debug, PartialEq, Eq)]
pub struct Frame {
    /// The last frame of its message.
    pub fin: bool,
    /// What the frame is.
    pub opcode: OpCode,
    /// The payload, unmasked.
    pub payload: Vec<u8>,
}

/// Why the client's bytes are not a frame we accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameError {
    /// 1002: a protocol violation, with the reason for the close frame.
    Protocol(&'static str),
    /// 1009: one frame is larger than the largest message.
    TooLarge,
}

/// Parses one client frame from the front of `bytes`, refusing one whose
/// payload is over `max_frame`. `Ok(Ok((frame, used)))` took `used` bytes;
/// `Ok(Err(needed))` means more bytes are needed (`needed`: how many the
/// frame takes in all, once its header says).
pub fn parse(
    bytes: &[u8],
    max_frame: usize,
) -> Result<Result<(Frame, usize), Option<usize>>, FrameError> {
    let [first, second, ..] = *bytes else {
        return Ok(Err(None));
    };
    if first & 0b0111_0000 != 0 {
        return Err(FrameError::Protocol("reserved bits set"));
    }
    let opcode = OpCode::from_bits(first & 0x0F).ok_or(FrameError::Protocol("reserved opcode"))?;
    let fin = first & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(FrameError::Protocol("fragmented control frame"));
    }
    // RFC 6455 5.1: a server closes on a frame the client did not mask.
    if second & 0x80 == 0 {
        return Err(FrameError::Protocol("client frames must be masked"));
    }
    let (length, offset) = match second & 0x7F {
        126 => {
            let Some(bytes) = bytes.get(2..4) else {
                return Ok(Err(None));
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = bytes.get(2..10) else {
                return Ok(Err(None));
            };
            let length = u64::from_be_bytes(bytes.try_into().expect("eight bytes"));
            (length, 10)
        }
        short => (u64::from(short), 2),
    };
    // A ping or pong over 125 bytes is refused before its payload is read; an
    // oversized close is still the client's close, answered as such.
    if matches!(opcode, OpCode::Ping | OpCode::Pong) && length > 125 {
        return Err(FrameError::Protocol("control frame too large"));
    }
    let length = usize::try_from(length).map_err(|_| FrameError::TooLarge)?;
    if length > max_frame {
        return Err(FrameError::TooLarge);
    }
    let start = offset + 4;
    let total = start + length;
    if bytes.len() < total {
        return Ok(Err(Some(total)));
    }
    let mask: [u8; 4] = bytes[offset..start].try_into().expect("four bytes");
    let mut payload = bytes[start..total].to_vec();
    unmask(&mut payload, mask);
    Ok(Ok((
        Frame {
            fin,
            opcode,
            payload,
        },
        total,
    )))
}

fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let word = u32::from_ne_bytes(mask);
    let mut chunks = payload.chunks_exact_mut(4);
    for chunk in &mut chunks {
        let value = u32::from_ne_bytes(chunk.try_into().expect("four bytes")) ^ word;
        chunk.copy_from_slice(&value.to_ne_bytes());
    }
    for (byte, key) in chunks.into_remainder().iter_mut().zip(mask) {
        *byte ^= key;
    }
}

/// One unmasked server frame, header and payload, ready to write.
pub fn encode(opcode: OpCode, payload: &[u8]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(MAX_HEADER + payload.len());
    push_header(&mut frame, 0x80 | opcode.bits(), 0, payload.len());
    frame.extend_from_slice(payload);
    frame
}

/// A frame as a client sends it, masked with `mask`, after the raw first
/// byte `first` (FIN, reserved bits, opcode). Pulse never sends one: this is
/// for its tests and the fuzz target.
pub fn encode_masked(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(MAX_HEADER + payload.len());
    push_header(&mut frame, first, 0x80, payload.len());
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ mask[i % 4]),
    );
    frame
}

/// The first byte, then the length in its shortest form with `mask_bit`.
fn push_header(frame: &mut Vec<u8>, first: u8, mask_bit: u8, len: usize) {
    frame.push(first);
    match len {
        short @ 0..=125 => frame.push(mask_bit | u8::try_from(short).expect("under 126")),
        medium @ 126..=0xFFFF => {
            frame.push(mask_bit | 126);
            frame.extend_from_slice(&u16::try_from(medium).expect("16 bits").to_be_bytes());
        }
        long => {
            frame.push(mask_bit | 127);
            frame.extend_from_slice(&(long as u64).to_be_bytes());
        }
    }
}

/// A close frame's payload: the code, then the reason.
pub(crate) fn close_payload(code: u16, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

/// What reading produced: a frame, or why there will be none.
#[derive(Debug)]
pub(crate) enum ReadError {
    Frame(FrameError),
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
        match parse(&self.pending, self.max_frame).map_err(ReadError::Frame)? {
            Ok((frame, used)) => {
                self.pending.drain(..used);
                self.release();
                Ok(Some(frame))
            }
            Err(needed) => {
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
        match parse(bytes, self.max_frame).map_err(ReadError::Frame)? {
            Ok((frame, used)) => {
                self.pending.extend_from_slice(&bytes[used..]);
                Ok(Some(frame))
            }
            Err(needed) => {
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

    /// Writes one whole frame. Not cancel-safe: a write abandoned halfway
    /// leaves the stream mid-frame, so the caller must drop the transport.
    pub(crate) async fn write(&mut self, opcode: OpCode, payload: &[u8]) -> io::Result<()> {
        let frame = encode(opcode, payload);
        // Most frames fit the socket buffer at once: no await, no state kept.
        let written = match self.half.try_write(&frame) {
            Ok(written) => written,
            Err(error) if error.kind() == io::ErrorKind::WouldBlock => 0,
            Err(error) => return Err(error),
        };
        if written < frame.len() {
            self.half.write_all(&frame[written..]).await?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_masked_frames_of_every_length_form() {
        for len in [0, 1, 5, 125, 126, 1000, 65_535, 65_536, 70_001] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let bytes = encode_masked(0x82, &payload, [1, 2, 3, 4]);
            let (frame, used) = parse(&bytes, 1 << 20).unwrap().unwrap();
            assert_eq!(used, bytes.len(), "length {len}");
            assert_eq!(frame.opcode, OpCode::Binary);
            assert!(frame.fin);
            assert_eq!(frame.payload, payload, "length {len}");
        }
    }

    #[test]
    fn asks_for_more_until_the_frame_is_whole() {
        let bytes = encode_masked(0x81, b"hello world", [9, 8, 7, 6]);
        assert_eq!(parse(&bytes[..1], 100).unwrap(), Err(None));
        assert_eq!(parse(&bytes[..6], 100).unwrap(), Err(Some(bytes.len())));
        assert_eq!(
            parse(&bytes[..bytes.len() - 1], 100).unwrap(),
            Err(Some(bytes.len()))
        );
        let long = encode_masked(0x81, &[b'a'; 300], [0; 4]);
        assert_eq!(parse(&long[..3], 1000).unwrap(), Err(None));
        assert_eq!(parse(&long[..4], 1000).unwrap(), Err(Some(long.len())));
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        let cases: [(Vec<u8>, FrameError); 6] = [
            (
                encode_masked(0xC1, b"x", [0; 4]),
                FrameError::Protocol("reserved bits set"),
            ),
            (
                encode_masked(0x83, b"x", [0; 4]),
                FrameError::Protocol("reserved opcode"),
            ),
            (
                encode_masked(0x09, b"x", [0; 4]),
                FrameError::Protocol("fragmented control frame"),
            ),
            (
                vec![0x89, 0x01, b'x'],
                FrameError::Protocol("client frames must be masked"),
            ),
            (
                encode_masked(0x89, &[0; 126], [0; 4]),
                FrameError::Protocol("control frame too large"),
            ),
            (encode_masked(0x82, &[0; 101], [0; 4]), FrameError::TooLarge),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parse(&bytes, 100).unwrap_err(), expected, "{bytes:x?}");
        }
        // A 64-bit length past usize or the limit is refused from the header alone.
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse(&huge, 100).unwrap_err(), FrameError::TooLarge);
        // An oversized close is read: it is answered as the client's close.
        let close = encode_masked(0x88, &[0; 126], [0; 4]);
        assert_eq!(parse(&close, 1000).unwrap().unwrap().0.payload.len(), 126);
    }

    /// Whatever bytes arrive, parsing answers (a frame, more needed, or an
    /// error) and never panics; what it consumes is within what it was given.
    #[test]
    fn random_bytes_never_panic() {
        use rand::{Rng, SeedableRng, rngs::StdRng};
        let mut rng = StdRng::seed_from_u64(6455);
        let valid = encode_masked(0x81, b"{\"type\":\"ping\",\"id\":1}", [1, 2, 3, 4]);
        for round in 0..200_000 {
            let bytes: Vec<u8> = if round % 2 == 0 {
                let len = rng.random_range(0..40);
                (0..len).map(|_| rng.random()).collect()
            } else {
                // A valid frame with a few bytes flipped or cut.
                let mut bytes = valid.clone();
                for _ in 0..rng.random_range(1..4) {
                    let at = rng.random_range(0..bytes.len());
                    bytes[at] ^= rng.random::<u8>();
                }
                bytes.truncate(rng.random_range(0..=bytes.len()));
                bytes
            };
            match parse(&bytes, 64) {
                Ok(Ok((frame, used))) => {
                    assert!(used <= bytes.len() && frame.payload.len() <= 64);
                }
                Ok(Err(Some(needed))) => assert!(needed > bytes.len()),
                Ok(Err(None)) | Err(_) => {}
            }
        }
    }

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

    #[test]
    fn encodes_each_length_form() {
        assert_eq!(encode(OpCode::Text, b"hi"), [0x81, 2, b'h', b'i']);
        let medium = encode(OpCode::Binary, &[7; 200]);
        assert_eq!(&medium[..4], &[0x82, 126, 0, 200]);
        assert_eq!(medium.len(), 204);
        let long = encode(OpCode::Binary, &[7; 70_000]);
        assert_eq!(&long[..2], &[0x82, 127]);
        assert_eq!(&long[2..10], &70_000u64.to_be_bytes());
        assert_eq!(
            encode(OpCode::Close, &close_payload(1000, "ok")),
            [0x88, 4, 0x03, 0xE8, b'o', b'k']
        );
    }
}
