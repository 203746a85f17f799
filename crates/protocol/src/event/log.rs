//! Where an event sits in the durable event log, and how far a consumer has
//! read it.
//!
//! The log is one stream per presence bucket (one slot on a Cluster). Each
//! entry's id is a [`LogPoint`], `<ms>-<seq>`: `seq` counts the bucket's
//! events from 1 without a hole, `ms` is Redis's clock, never going back
//! within a log. Because a log that was lost (Redis restarted empty, a
//! failover that lost writes) starts again at a later `ms` with a `seq` that
//! does not continue, "the entry after point P has `seq` P.seq + 1" is true
//! exactly when nothing between them was lost or trimmed.
//!
//! A [`Position`] is a consumer's place in every log it reads: one
//! [`LogPoint`] per bucket, written as an opaque string.

use std::{collections::BTreeMap, fmt, str::FromStr};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use serde::{Deserialize, Deserializer, Serialize, Serializer, de::Error as _};

/// One entry of a bucket's log: `<ms>-<seq>`, the Redis stream id.
///
/// `LogPoint::default()` (`0-0`) is "before the first event".
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct LogPoint {
    /// Redis's clock when the entry was written (never less than the
    /// previous entry's).
    pub ms: u64,
    /// The entry's number in its log, from 1, without a hole.
    pub seq: u64,
}

impl LogPoint {
    /// Whether `next` is the entry right after this one in the same log.
    pub fn precedes(self, next: Self) -> bool {
        next.seq == self.seq.wrapping_add(1) && next.ms >= self.ms
    }
}

impl fmt::Display for LogPoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}-{}", self.ms, self.seq)
    }
}

/// Why a log point, event id or position did not parse.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadPosition(&'static str);

impl fmt::Display for BadPosition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for BadPosition {}

impl FromStr for LogPoint {
    type Err = BadPosition;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (ms, seq) = text
            .split_once('-')
            .ok_or(BadPosition("a log point is <ms>-<seq>"))?;
        Ok(Self {
            ms: ms.parse().map_err(|_| BadPosition("bad ms in log point"))?,
            seq: seq
                .parse()
                .map_err(|_| BadPosition("bad seq in log point"))?,
        })
    }
}

/// An event's id, unique across the deployment: `b<bucket>-<ms>-<seq>`.
/// Webhook receivers dedupe by it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventId {
    /// The log (presence bucket) the event is in.
    pub bucket: u16,
    /// Where in that log.
    pub point: LogPoint,
}

impl fmt::Display for EventId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "b{}-{}", self.bucket, self.point)
    }
}

impl FromStr for EventId {
    type Err = BadPosition;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let (bucket, point) = text
            .strip_prefix('b')
            .and_then(|rest| rest.split_once('-'))
            .ok_or(BadPosition("an event id is b<bucket>-<ms>-<seq>"))?;
        Ok(Self {
            bucket: bucket
                .parse()
                .map_err(|_| BadPosition("bad bucket in event id"))?,
            point: point.parse()?,
        })
    }
}

macro_rules! serde_as_text {
    ($type:ty) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
                text.parse().map_err(D::Error::custom)
            }
        }
    };
}

serde_as_text!(LogPoint);
serde_as_text!(EventId);

/// How far a consumer has read: the last [`LogPoint`] it has seen in each
/// bucket it reads. A bucket it has seen nothing of is at `0-0`.
///
/// As text it is opaque (`p1.` then base64url of varints, buckets ascending
/// with the gaps between them, each point's `ms` as the difference from the
/// previous one's, zigzagged): about 7 bytes a bucket.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    points: BTreeMap<u16, LogPoint>,
}

const POSITION_PREFIX: &str = "p1.";

impl Position {
    /// A position at `point` in each of the given buckets.
    pub fn new(points: impl IntoIterator<Item = (u16, LogPoint)>) -> Self {
        Self {
            points: points.into_iter().collect(),
        }
    }

    /// Where this position is in `bucket`, if it covers it.
    pub fn get(&self, bucket: u16) -> Option<LogPoint> {
        self.points.get(&bucket).copied()
    }

    /// Moves `bucket` to `point`.
    pub fn set(&mut self, bucket: u16, point: LogPoint) {
        self.points.insert(bucket, point);
    }

    /// The buckets covered, ascending, with their points.
    pub fn iter(&self) -> impl Iterator<Item = (u16, LogPoint)> + '_ {
        self.points.iter().map(|(bucket, point)| (*bucket, *point))
    }

    /// Whether it covers no bucket.
    pub fn is_empty(&self) -> bool {
        self.points.is_empty()
    }
}

fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

fn take_varint(bytes: &mut &[u8]) -> Result<u64, BadPosition> {
    let mut value = 0u64;
    for shift in (0..64).step_by(7) {
        let (&byte, rest) = bytes
            .split_first()
            .ok_or(BadPosition("position ends early"))?;
        *bytes = rest;
        value |= u64::from(byte & 0x7f)
            .checked_shl(shift)
            .filter(|part| part >> shift == u64::from(byte & 0x7f))
            .ok_or(BadPosition("position number too large"))?;
        if byte & 0x80 == 0 {
            return Ok(value);
        }
    }
    Err(BadPosition("position number too large"))
}

fn zigzag(delta: i128) -> u64 {
    // Deltas between u64s fit an i65; positions hold real clocks (< 2^63).
    let delta = delta.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    ((delta << 1) ^ (delta >> 63)) as u64
}

fn unzigzag(value: u64) -> i128 {
    i128::from(((value >> 1) as i64) ^ -((value & 1) as i64))
}

impl fmt::Display for Position {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut bytes = Vec::with_capacity(self.points.len() * 8 + 2);
        put_varint(&mut bytes, self.points.len() as u64);
        let (mut bucket, mut ms) = (0u16, 0u64);
        for (&next, point) in &self.points {
            put_varint(&mut bytes, u64::from(next - bucket));
            put_varint(&mut bytes, zigzag(i128::from(point.ms) - i128::from(ms)));
            put_varint(&mut bytes, point.seq);
            (bucket, ms) = (next, point.ms);
        }
        write!(f, "{POSITION_PREFIX}{}", URL_SAFE_NO_PAD.encode(bytes))
    }
}

impl FromStr for Position {
    type Err = BadPosition;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let encoded = text
            .strip_prefix(POSITION_PREFIX)
            .ok_or(BadPosition("not a position this server wrote"))?;
        let bytes = URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| BadPosition("position is not base64url"))?;
        let mut rest = bytes.as_slice();
        let count = take_varint(&mut rest)?;
        let mut points = BTreeMap::new();
        let (mut bucket, mut ms) = (0u64, 0i128);
        for index in 0..count {
            let gap = take_varint(&mut rest)?;
            if index > 0 && gap == 0 {
                return Err(BadPosition("position repeats a bucket"));
            }
            bucket = bucket
                .checked_add(gap)
                .filter(|bucket| *bucket <= u64::from(u16::MAX))
                .ok_or(BadPosition("bucket out of range in position"))?;
            ms += unzigzag(take_varint(&mut rest)?);
            let point = LogPoint {
                ms: u64::try_from(ms).map_err(|_| BadPosition("bad ms in position"))?,
                seq: take_varint(&mut rest)?,
            };
            points.insert(bucket as u16, point);
        }
        if !rest.is_empty() {
            return Err(BadPosition("position has trailing bytes"));
        }
        Ok(Self { points })
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn positions_round_trip_through_text(
            points in proptest::collection::btree_map(0u16..1024, (0u64..(1 << 50), 0u64..u64::MAX), 0..140),
        ) {
            let position = Position::new(points.into_iter().map(|(bucket, (ms, seq))| (bucket, LogPoint { ms, seq })));
            let text = position.to_string();
            prop_assert_eq!(text.parse::<Position>().unwrap(), position);
        }

        #[test]
        fn any_text_parses_or_is_refused(text in "p1\\.[A-Za-z0-9_-]{0,40}") {
            // Never a panic, whatever the bytes say.
            let _ = text.parse::<Position>();
        }

        #[test]
        fn ids_round_trip(bucket in any::<u16>(), ms in any::<u64>(), seq in any::<u64>()) {
            let id = EventId { bucket, point: LogPoint { ms, seq } };
            prop_assert_eq!(id.to_string().parse::<EventId>().unwrap(), id);
        }
    }

    #[test]
    fn a_full_position_stays_small() {
        // 128 buckets, clocks minutes apart, a million events each.
        let position = Position::new((0..128u16).map(|bucket| {
            (
                bucket,
                LogPoint {
                    ms: 1_764_300_000_000 + u64::from(bucket) * 7_919,
                    seq: 1_000_000 + u64::from(bucket),
                },
            )
        }));
        let text = position.to_string();
        assert!(text.len() < 1400, "{} bytes", text.len());
    }

    #[test]
    fn bad_positions_are_refused_with_a_reason() {
        for bad in ["", "p2.AA", "p1.***", "p1.", "p1.AQ", "p1.AgAAAAAA"] {
            assert!(bad.parse::<Position>().is_err(), "{bad:?}");
        }
        assert_eq!("p1.AA".parse::<Position>().unwrap(), Position::default());
    }

    #[test]
    fn precedes_is_the_next_seq_of_the_same_log() {
        let at = |ms, seq| LogPoint { ms, seq };
        assert!(at(10, 4).precedes(at(10, 5)));
        assert!(at(10, 4).precedes(at(11, 5)));
        assert!(!at(10, 4).precedes(at(10, 6)));
        // A log started again (lost) at a later time.
        assert!(!at(10, 4).precedes(at(20, 1)));
        assert!(LogPoint::default().precedes(at(20, 1)));
    }
}
