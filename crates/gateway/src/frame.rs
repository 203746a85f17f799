//! RFC 6455 framing: the wire format of one frame (parsing a client's,
//! a server frame's header), and the protocol violations a client can commit,
//! each with the close code it is answered with. Reading and writing frames
//! over the socket's TCP halves is in `frame/io.rs`.

use std::fmt;

use pulse_protocol::CloseCode;

mod io;

pub(crate) use io::{ReadError, Reader, Writer};

/// The largest frame header: 2 bytes, an 8-byte length, a 4-byte mask.
const MAX_HEADER: usize = 14;
/// The largest header of a server frame, which is not masked.
const MAX_SERVER_HEADER: usize = 10;

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

/// A protocol violation by the client: why its bytes are not a frame, or
/// its frames not a message, that we accept. Each is answered with a close
/// frame whose code and reason come from here alone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Violation {
    /// A reserved bit (RSV1-3) is set; no extension is negotiated.
    ReservedBits,
    /// An opcode RFC 6455 reserves.
    ReservedOpcode,
    /// A control frame without FIN.
    FragmentedControl,
    /// A client frame without a mask (RFC 6455 5.1).
    Unmasked,
    /// A control frame with a payload over 125 bytes.
    ControlTooLarge,
    /// A frame, or a message put together from fragments, larger than the
    /// largest message.
    TooLarge,
    /// A text or binary frame while a fragmented message is unfinished.
    NewMessageInFragmented,
    /// A continuation frame with no fragmented message to continue.
    OrphanContinuation,
    /// A text message that is not UTF-8.
    TextNotUtf8,
    /// A close frame whose payload is one byte (a code takes two).
    CloseOfOneByte,
    /// A close code a client may not send (RFC 6455 7.4).
    InvalidCloseCode,
    /// A close reason that is not UTF-8.
    CloseReasonNotUtf8,
}

impl Violation {
    /// The close code the violation is answered with.
    pub fn close_code(self) -> CloseCode {
        match self {
            Self::TooLarge => CloseCode::MessageTooBig,
            Self::TextNotUtf8 | Self::CloseReasonNotUtf8 => CloseCode::InvalidPayload,
            Self::ReservedBits
            | Self::ReservedOpcode
            | Self::FragmentedControl
            | Self::Unmasked
            | Self::ControlTooLarge
            | Self::NewMessageInFragmented
            | Self::OrphanContinuation
            | Self::CloseOfOneByte
            | Self::InvalidCloseCode => CloseCode::ProtocolError,
        }
    }

    /// The close frame's reason (and the logs').
    pub fn reason(self) -> &'static str {
        match self {
            Self::ReservedBits => "reserved bits set",
            Self::ReservedOpcode => "reserved opcode",
            Self::FragmentedControl => "fragmented control frame",
            Self::Unmasked => "client frames must be masked",
            Self::ControlTooLarge => "control frame too large",
            Self::TooLarge => "message too big",
            Self::NewMessageInFragmented => "new message inside a fragmented one",
            Self::OrphanContinuation => "continuation without a message",
            Self::TextNotUtf8 => "text is not UTF-8",
            Self::CloseOfOneByte => "close payload of one byte",
            Self::InvalidCloseCode => "invalid close code",
            Self::CloseReasonNotUtf8 => "close reason is not UTF-8",
        }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.reason())
    }
}

impl std::error::Error for Violation {}

/// What the front of a buffer holds.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// A whole frame, which took the first `used` bytes.
    Frame {
        /// The frame, unmasked.
        frame: Frame,
        /// How many bytes it took.
        used: usize,
    },
    /// Not a whole frame yet.
    Incomplete {
        /// How many bytes the frame takes in all, once its header says.
        needed: Option<usize>,
    },
}

/// Parses one client frame from the front of `bytes`, refusing one whose
/// payload is over `max_frame`.
pub fn parse(bytes: &[u8], max_frame: usize) -> Result<Parsed, Violation> {
    let [first, second, ..] = *bytes else {
        return Ok(Parsed::Incomplete { needed: None });
    };
    if first & 0b0111_0000 != 0 {
        return Err(Violation::ReservedBits);
    }
    let opcode = OpCode::from_bits(first & 0x0F).ok_or(Violation::ReservedOpcode)?;
    let fin = first & 0x80 != 0;
    if opcode.is_control() && !fin {
        return Err(Violation::FragmentedControl);
    }
    // RFC 6455 5.1: a server closes on a frame the client did not mask.
    if second & 0x80 == 0 {
        return Err(Violation::Unmasked);
    }
    let (length, offset) = match second & 0x7F {
        126 => {
            let Some(bytes) = bytes.get(2..4) else {
                return Ok(Parsed::Incomplete { needed: None });
            };
            (u64::from(u16::from_be_bytes([bytes[0], bytes[1]])), 4)
        }
        127 => {
            let Some(bytes) = bytes.get(2..10) else {
                return Ok(Parsed::Incomplete { needed: None });
            };
            let length = u64::from_be_bytes(bytes.try_into().expect("eight bytes"));
            (length, 10)
        }
        short => (u64::from(short), 2),
    };
    // A ping or pong over 125 bytes is refused before its payload is read; an
    // oversized close is still the client's close, answered as such.
    if matches!(opcode, OpCode::Ping | OpCode::Pong) && length > 125 {
        return Err(Violation::ControlTooLarge);
    }
    let length = usize::try_from(length).map_err(|_| Violation::TooLarge)?;
    if length > max_frame {
        return Err(Violation::TooLarge);
    }
    let start = offset + 4;
    let total = start + length;
    if bytes.len() < total {
        return Ok(Parsed::Incomplete {
            needed: Some(total),
        });
    }
    let mask: [u8; 4] = bytes[offset..start].try_into().expect("four bytes");
    let mut payload = bytes[start..total].to_vec();
    unmask(&mut payload, mask);
    Ok(Parsed::Frame {
        frame: Frame {
            fin,
            opcode,
            payload,
        },
        used: total,
    })
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

/// A frame header on the stack: the first byte, the length in its shortest
/// form, and (for a client frame) the mask bit. The payload is written from
/// where it is, after it, never copied next to it.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    bytes: [u8; MAX_SERVER_HEADER],
    len: u8,
}

impl Header {
    /// The header of a whole, unmasked server frame.
    pub fn server(opcode: OpCode, payload_len: usize) -> Self {
        Self::new(0x80 | opcode.bits(), 0, payload_len)
    }

    /// The first byte, then the length in its shortest form with `mask_bit`.
    fn new(first: u8, mask_bit: u8, len: usize) -> Self {
        let mut bytes = [0; MAX_SERVER_HEADER];
        bytes[0] = first;
        let used = match len {
            short @ 0..=125 => {
                bytes[1] = mask_bit | u8::try_from(short).expect("under 126");
                2
            }
            medium @ 126..=0xFFFF => {
                bytes[1] = mask_bit | 126;
                bytes[2..4].copy_from_slice(&u16::try_from(medium).expect("16 bits").to_be_bytes());
                4
            }
            long => {
                bytes[1] = mask_bit | 127;
                bytes[2..10].copy_from_slice(&(long as u64).to_be_bytes());
                10
            }
        };
        Self { bytes, len: used }
    }

    /// The header's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

/// A frame as a client sends it, masked with `mask`, after the raw first
/// byte `first` (FIN, reserved bits, opcode). Pulse never sends one: this is
/// for its tests and the fuzz target.
pub fn encode_masked(first: u8, payload: &[u8], mask: [u8; 4]) -> Vec<u8> {
    let mut frame = Vec::with_capacity(MAX_HEADER + payload.len());
    frame.extend_from_slice(Header::new(first, 0x80, payload.len()).as_bytes());
    frame.extend_from_slice(&mask);
    frame.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ mask[i % 4]),
    );
    frame
}

/// A close frame's payload: the code, then the reason.
pub(crate) fn close_payload(code: CloseCode, reason: &str) -> Vec<u8> {
    let mut payload = Vec::with_capacity(2 + reason.len());
    payload.extend_from_slice(&code.code().to_be_bytes());
    payload.extend_from_slice(reason.as_bytes());
    payload
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frame at the front of `bytes`, and how many bytes it took.
    fn whole(parsed: Parsed) -> (Frame, usize) {
        match parsed {
            Parsed::Frame { frame, used } => (frame, used),
            other => panic!("not a whole frame: {other:?}"),
        }
    }

    /// What an incomplete parse says it needs.
    fn needs(parsed: Parsed) -> Option<usize> {
        match parsed {
            Parsed::Incomplete { needed } => needed,
            other => panic!("not incomplete: {other:?}"),
        }
    }

    #[test]
    fn parses_masked_frames_of_every_length_form() {
        for len in [0, 1, 5, 125, 126, 1000, 65_535, 65_536, 70_001] {
            let payload: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
            let bytes = encode_masked(0x82, &payload, [1, 2, 3, 4]);
            let (frame, used) = whole(parse(&bytes, 1 << 20).unwrap());
            assert_eq!(used, bytes.len(), "length {len}");
            assert_eq!(frame.opcode, OpCode::Binary);
            assert!(frame.fin);
            assert_eq!(frame.payload, payload, "length {len}");
        }
    }

    #[test]
    fn asks_for_more_until_the_frame_is_whole() {
        let bytes = encode_masked(0x81, b"hello world", [9, 8, 7, 6]);
        assert_eq!(needs(parse(&bytes[..1], 100).unwrap()), None);
        assert_eq!(needs(parse(&bytes[..6], 100).unwrap()), Some(bytes.len()));
        assert_eq!(
            needs(parse(&bytes[..bytes.len() - 1], 100).unwrap()),
            Some(bytes.len())
        );
        let long = encode_masked(0x81, &[b'a'; 300], [0; 4]);
        assert_eq!(needs(parse(&long[..3], 1000).unwrap()), None);
        assert_eq!(needs(parse(&long[..4], 1000).unwrap()), Some(long.len()));
    }

    #[test]
    fn refuses_what_rfc_6455_forbids() {
        let cases: [(Vec<u8>, Violation); 6] = [
            (encode_masked(0xC1, b"x", [0; 4]), Violation::ReservedBits),
            (encode_masked(0x83, b"x", [0; 4]), Violation::ReservedOpcode),
            (
                encode_masked(0x09, b"x", [0; 4]),
                Violation::FragmentedControl,
            ),
            (vec![0x89, 0x01, b'x'], Violation::Unmasked),
            (
                encode_masked(0x89, &[0; 126], [0; 4]),
                Violation::ControlTooLarge,
            ),
            (encode_masked(0x82, &[0; 101], [0; 4]), Violation::TooLarge),
        ];
        for (bytes, expected) in cases {
            assert_eq!(parse(&bytes, 100).unwrap_err(), expected, "{bytes:x?}");
        }
        // A 64-bit length past usize or the limit is refused from the header alone.
        let mut huge = vec![0x82, 0xFF];
        huge.extend_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse(&huge, 100).unwrap_err(), Violation::TooLarge);
        // An oversized close is read: it is answered as the client's close.
        let close = encode_masked(0x88, &[0; 126], [0; 4]);
        assert_eq!(whole(parse(&close, 1000).unwrap()).0.payload.len(), 126);
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
                Ok(Parsed::Frame { frame, used }) => {
                    assert!(used <= bytes.len() && frame.payload.len() <= 64);
                }
                Ok(Parsed::Incomplete {
                    needed: Some(needed),
                }) => assert!(needed > bytes.len()),
                Ok(Parsed::Incomplete { needed: None }) | Err(_) => {}
            }
        }
    }

    #[test]
    fn server_headers_take_each_length_form() {
        assert_eq!(Header::server(OpCode::Text, 2).as_bytes(), [0x81, 2]);
        assert_eq!(Header::server(OpCode::Pong, 125).as_bytes(), [0x8A, 125]);
        assert_eq!(
            Header::server(OpCode::Binary, 200).as_bytes(),
            [0x82, 126, 0, 200]
        );
        let long = Header::server(OpCode::Binary, 70_000);
        assert_eq!(&long.as_bytes()[..2], &[0x82, 127]);
        assert_eq!(&long.as_bytes()[2..], &70_000u64.to_be_bytes());
        assert_eq!(
            close_payload(CloseCode::Normal, "ok"),
            [0x03, 0xE8, b'o', b'k']
        );
    }

    /// Every violation is answered with the close code RFC 6455 gives it.
    #[test]
    fn each_violation_has_its_close_code() {
        assert_eq!(Violation::TooLarge.close_code().code(), 1009);
        assert_eq!(Violation::TextNotUtf8.close_code().code(), 1007);
        assert_eq!(Violation::CloseReasonNotUtf8.close_code().code(), 1007);
        assert_eq!(Violation::Unmasked.close_code().code(), 1002);
        assert_eq!(
            Violation::InvalidCloseCode.to_string(),
            "invalid close code"
        );
    }
}
