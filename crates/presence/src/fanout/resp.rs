//! Just enough RESP3 for a connection that only subscribes: commands out,
//! and every frame a server may send back read without copying (a frame
//! borrows the read buffer until the caller has handled it).
//!
//! Why not redis-rs's connection: every `MultiplexedConnection` records each
//! subscribed channel's name (its `SubscriptionTracker`, to count the
//! confirmations of an unsubscribe-all Pulse never sends), about 95 bytes
//! per channel on a process that may hold a channel per connection, and
//! builds a `Value` tree per message.

use std::fmt;

/// One frame from the server; strings borrow the buffer.
#[derive(Debug, PartialEq)]
pub(super) enum Frame<'a> {
    /// `+`: a status such as `OK` or `PONG`.
    Simple(&'a [u8]),
    /// `-` or `!`: an error (`MOVED 1234 host:port`, `WRONGPASS ...`).
    Error(&'a [u8]),
    /// `$` or `=` (a verbatim string keeps its `txt:` prefix).
    Bulk(&'a [u8]),
    /// `*`, `~` and `%` (a map's keys and values in turn).
    Array(Vec<Frame<'a>>),
    /// `>`: what the server sends unasked, or to confirm a subscription.
    Push(Vec<Frame<'a>>),
    /// `_`, `$-1`, `*-1`.
    Null,
    /// `:`, `,`, `#`, `(`: numbers and booleans, which this connection
    /// never needs to read.
    Scalar,
}

/// The server sent what is not RESP (or an aggregate nested deeper than any
/// answer to these commands is).
#[derive(Debug, PartialEq)]
pub(super) struct Malformed(&'static str);

impl fmt::Display for Malformed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "malformed RESP from redis: {}", self.0)
    }
}

/// How deep aggregates may nest (a `HELLO` answer is two levels).
const MAX_DEPTH: usize = 8;
/// The longest string a server may send (Redis's `proto-max-bulk-len`
/// default); a length above it is a broken stream.
const MAX_BULK: usize = 512 * 1024 * 1024;

/// Parses one frame at the start of `buffer`: the frame and the bytes it
/// took, or `None` while it has not all arrived.
pub(super) fn parse(buffer: &[u8]) -> Result<Option<(Frame<'_>, usize)>, Malformed> {
    let mut at = 0;
    Ok(frame(buffer, &mut at, 0)?.map(|frame| (frame, at)))
}

fn frame<'a>(
    buffer: &'a [u8],
    at: &mut usize,
    depth: usize,
) -> Result<Option<Frame<'a>>, Malformed> {
    if depth > MAX_DEPTH {
        return Err(Malformed("aggregates nested too deep"));
    }
    let Some(line) = line(buffer, at) else {
        return Ok(None);
    };
    let (&kind, rest) = line.split_first().ok_or(Malformed("empty line"))?;
    Ok(Some(match kind {
        b'+' => Frame::Simple(rest),
        b'-' => Frame::Error(rest),
        b':' | b',' | b'#' | b'(' => Frame::Scalar,
        b'_' => Frame::Null,
        b'$' | b'=' | b'!' => {
            let Some(length) = length(rest)? else {
                return Ok(Some(Frame::Null));
            };
            if length > MAX_BULK {
                return Err(Malformed("string longer than any redis sends"));
            }
            if buffer.len() < *at + length + 2 {
                return Ok(None);
            }
            let data = &buffer[*at..*at + length];
            if &buffer[*at + length..*at + length + 2] != b"\r\n" {
                return Err(Malformed("string not ended by CRLF"));
            }
            *at += length + 2;
            if kind == b'!' {
                Frame::Error(data)
            } else {
                Frame::Bulk(data)
            }
        }
        b'*' | b'~' | b'%' | b'>' | b'|' => {
            let Some(count) = length(rest)? else {
                return Ok(Some(Frame::Null));
            };
            let count = if kind == b'%' || kind == b'|' {
                count.checked_mul(2).ok_or(Malformed("map too large"))?
            } else {
                count
            };
            // Each element takes at least three bytes: a count beyond what
            // the buffer could hold is not all here yet (or is junk, which
            // the elements' own parsing finds).
            let mut items = Vec::with_capacity(count.min(16));
            for _ in 0..count {
                match frame(buffer, at, depth + 1)? {
                    Some(item) => items.push(item),
                    None => return Ok(None),
                }
            }
            match kind {
                b'>' => Frame::Push(items),
                // An attribute describes the frame after it, which is the
                // answer.
                b'|' => return frame(buffer, at, depth),
                _ => Frame::Array(items),
            }
        }
        _ => return Err(Malformed("unknown frame type")),
    }))
}

/// The next line without its CRLF, moving `at` past it.
fn line<'a>(buffer: &'a [u8], at: &mut usize) -> Option<&'a [u8]> {
    let rest = buffer.get(*at..)?;
    let end = rest.windows(2).position(|pair| pair == b"\r\n")?;
    *at += end + 2;
    Some(&rest[..end])
}

/// A length; `None` for the `-1` of a RESP2 null.
fn length(digits: &[u8]) -> Result<Option<usize>, Malformed> {
    if digits == b"-1" {
        return Ok(None);
    }
    std::str::from_utf8(digits)
        .ok()
        .and_then(|digits| digits.parse().ok())
        .map(Some)
        .ok_or(Malformed("bad length"))
}

/// Appends a command to `out` as RESP.
pub(super) fn command(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for arg in args {
        out.push(b'$');
        out.extend_from_slice(arg.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn whole(bytes: &[u8]) -> Frame<'_> {
        let (frame, used) = parse(bytes).unwrap().expect("a whole frame");
        assert_eq!(used, bytes.len());
        frame
    }

    #[test]
    fn a_sharded_message_is_read_as_a_push_of_three_strings() {
        let bytes = b">3\r\n$8\r\nsmessage\r\n$6\r\nns:pub\r\n$11\r\n1 e {\"a\":1}\r\n";
        assert_eq!(
            whole(bytes),
            Frame::Push(vec![
                Frame::Bulk(b"smessage"),
                Frame::Bulk(b"ns:pub"),
                Frame::Bulk(b"1 e {\"a\":1}"),
            ])
        );
    }

    #[test]
    fn every_prefix_of_a_frame_waits_for_the_rest() {
        let bytes = b">3\r\n$10\r\nssubscribe\r\n$4\r\na\r\nb\r\n:1\r\n";
        for end in 0..bytes.len() {
            assert_eq!(parse(&bytes[..end]), Ok(None), "prefix of {end} bytes");
        }
        let (frame, used) = parse(bytes).unwrap().unwrap();
        assert_eq!(used, bytes.len());
        assert_eq!(
            frame,
            Frame::Push(vec![
                Frame::Bulk(b"ssubscribe"),
                Frame::Bulk(b"a\r\nb"),
                Frame::Scalar,
            ])
        );
    }

    #[test]
    fn a_frame_leaves_what_follows_it_in_the_buffer() {
        let (frame, used) = parse(b"+PONG\r\n-MOVED 1 h:1\r\n").unwrap().unwrap();
        assert_eq!((frame, used), (Frame::Simple(b"PONG"), 7));
        assert_eq!(whole(b"-MOVED 1 h:1\r\n"), Frame::Error(b"MOVED 1 h:1"));
    }

    #[test]
    fn every_resp3_type_a_server_may_send_is_read() {
        // A HELLO 3 answer: a map with a nested array.
        let hello = b"%2\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nmodules\r\n*0\r\n";
        let Frame::Array(items) = whole(hello) else {
            panic!("a map is read as its keys and values");
        };
        assert_eq!(items.len(), 4);
        assert_eq!(whole(b"_\r\n"), Frame::Null);
        assert_eq!(whole(b"$-1\r\n"), Frame::Null);
        assert_eq!(whole(b"*-1\r\n"), Frame::Null);
        assert_eq!(whole(b":12\r\n"), Frame::Scalar);
        assert_eq!(whole(b",1.5\r\n"), Frame::Scalar);
        assert_eq!(whole(b"#t\r\n"), Frame::Scalar);
        assert_eq!(whole(b"(123456789012345678901234567890\r\n"), Frame::Scalar);
        assert_eq!(whole(b"!5\r\nERR x\r\n"), Frame::Error(b"ERR x"));
        assert_eq!(whole(b"=8\r\ntxt:abcd\r\n"), Frame::Bulk(b"txt:abcd"));
        assert_eq!(
            whole(b"~2\r\n+a\r\n+b\r\n"),
            Frame::Array(vec![Frame::Simple(b"a"), Frame::Simple(b"b")])
        );
        // An attribute is skipped; the frame after it is the answer.
        assert_eq!(
            whole(b"|1\r\n+key\r\n+value\r\n+OK\r\n"),
            Frame::Simple(b"OK")
        );
    }

    #[test]
    fn junk_is_refused_not_waited_for() {
        assert!(parse(b"?what\r\n").is_err());
        assert!(parse(b"$abc\r\n").is_err());
        assert!(parse(b"$3\r\nabcXY").is_err());
        assert!(parse(b"\r\n").is_err());
        assert!(parse(b"$999999999999\r\n").is_err());
        let deep = "*1\r\n".repeat(MAX_DEPTH + 2) + "+x\r\n";
        assert!(parse(deep.as_bytes()).is_err());
    }

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        let mut out = Vec::new();
        command(&mut out, &[b"SSUBSCRIBE", b"ns:{b1}:pub:a b"]);
        assert_eq!(
            out,
            b"*2\r\n$10\r\nSSUBSCRIBE\r\n$15\r\nns:{b1}:pub:a b\r\n"
        );
        let (frame, _) = parse(&out).unwrap().unwrap();
        assert_eq!(
            frame,
            Frame::Array(vec![
                Frame::Bulk(b"SSUBSCRIBE"),
                Frame::Bulk(b"ns:{b1}:pub:a b")
            ])
        );
    }
}
