//! Channel history on the wire: the publication frame with its offset, the
//! stored entries a recovery replays, and the `subscribed` answer that
//! carries them.
//!
//! A publication's frame is built in three parts so that the Redis script
//! that gives it its offset (`publish.lua` in `pulse-presence`) only puts the
//! offset between parts this module made: [`publication_head`], the offset,
//! [`PUBLICATION_DATA`], the data, [`PUBLICATION_END`].
//! [`crate::channel::publication_frame`] joins the same parts in Rust, and a
//! test in `pulse-presence` holds the script's frame to it.

use serde_json::value::RawValue;

use crate::{RequestId, StreamPosition};

/// What comes between a publication frame's offset and its data.
pub const PUBLICATION_DATA: &str = r#","data":"#;
/// What ends a publication frame, after its data.
pub const PUBLICATION_END: &str = "}";

/// The start of a `publication` frame on `channel`, up to its offset:
/// `{"type":"publication","channel":"<channel>","offset":`. Without an
/// offset (a namespace that keeps no history) the frame goes on with
/// [`PUBLICATION_DATA`] right after the channel: see
/// [`crate::channel::publication_frame`].
pub fn publication_head(channel: &str) -> String {
    let mut head = channel_head(channel);
    head.push_str(r#","offset":"#);
    head
}

/// `{"type":"publication","channel":"<channel>"`.
pub(crate) fn channel_head(channel: &str) -> String {
    let channel = serde_json::to_string(channel).expect("a string always serialises");
    let mut head = String::with_capacity(channel.len() + 64);
    head.push_str(r#"{"type":"publication","channel":"#);
    head.push_str(&channel);
    head
}

/// One publication kept in a channel's history.
#[derive(Debug, Clone)]
pub struct HistoryEntry {
    /// Its offset in the channel's stream (the first is 1).
    pub offset: u64,
    /// Its data, byte for byte as published.
    pub data: Box<RawValue>,
}

impl PartialEq for HistoryEntry {
    fn eq(&self, other: &Self) -> bool {
        self.offset == other.offset && self.data.get() == other.data.get()
    }
}

/// What a recovery found, for a `subscribed` answer to a `subscribe` with
/// `since`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recovery {
    /// Whether every publication after `since` was still in history.
    pub recovered: bool,
    /// Those publications, oldest first (none when not recovered).
    pub publications: Vec<HistoryEntry>,
}

/// The text of a `subscribed` answer. `position` is where the subscription's
/// stream starts (namespaces with history); `recovery` is present when the
/// `subscribe` had a `since`. The data of replayed publications is kept byte
/// for byte, as in live `publication` frames; the result decodes as
/// [`crate::ServerMessage::Subscribed`].
pub fn subscribed_frame(
    id: Option<RequestId>,
    channel: &str,
    position: Option<&StreamPosition>,
    recovery: Option<&Recovery>,
) -> String {
    let json = |text: &str| serde_json::to_string(text).expect("a string always serialises");
    let replayed: usize = recovery.map_or(0, |recovery| {
        recovery
            .publications
            .iter()
            .map(|entry| entry.data.get().len() + 32)
            .sum()
    });
    let mut frame = String::with_capacity(channel.len() + replayed + 96);
    frame.push_str(r#"{"type":"subscribed""#);
    if let Some(id) = id {
        frame.push_str(r#","id":"#);
        frame.push_str(&id.to_string());
    }
    frame.push_str(r#","channel":"#);
    frame.push_str(&json(channel));
    if let Some(position) = position {
        frame.push_str(r#","offset":"#);
        frame.push_str(&position.offset.to_string());
        frame.push_str(r#","epoch":"#);
        frame.push_str(&json(&position.epoch));
    }
    if let Some(recovery) = recovery {
        frame.push_str(if recovery.recovered {
            r#","recovered":true,"publications":["#
        } else {
            r#","recovered":false,"publications":["#
        });
        for (n, entry) in recovery.publications.iter().enumerate() {
            if n > 0 {
                frame.push(',');
            }
            frame.push_str(r#"{"offset":"#);
            frame.push_str(&entry.offset.to_string());
            frame.push_str(r#","data":"#);
            frame.push_str(entry.data.get());
            frame.push('}');
        }
        frame.push(']');
    }
    frame.push('}');
    frame
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::{Value, json};

    use super::*;
    use crate::{Replayed, ServerMessage};

    fn entry(offset: u64, data: &str) -> HistoryEntry {
        HistoryEntry {
            offset,
            data: RawValue::from_string(data.to_owned()).unwrap(),
        }
    }

    #[test]
    fn a_subscribed_frame_decodes_as_the_server_message() {
        let position = StreamPosition {
            offset: 9,
            epoch: "e\"1".into(),
        };
        let recovery = Recovery {
            recovered: true,
            publications: vec![entry(8, r#"{"n":12345678901234567890}"#), entry(9, "[]")],
        };
        let frame = subscribed_frame(Some(3), "room:7", Some(&position), Some(&recovery));
        assert!(
            frame.contains("12345678901234567890"),
            "data kept as it came"
        );
        assert_eq!(
            serde_json::from_str::<ServerMessage>(&frame).unwrap(),
            ServerMessage::Subscribed {
                id: Some(3),
                channel: "room:7".into(),
                offset: Some(9),
                epoch: Some("e\"1".into()),
                recovered: Some(true),
                publications: Some(vec![
                    Replayed {
                        offset: 8,
                        data: serde_json::from_str(r#"{"n":12345678901234567890}"#).unwrap()
                    },
                    Replayed {
                        offset: 9,
                        data: json!([])
                    },
                ]),
            }
        );
        let plain: Value = serde_json::from_str(&subscribed_frame(None, "n", None, None)).unwrap();
        assert_eq!(plain, json!({"type": "subscribed", "channel": "n"}));
        let lost = Recovery {
            recovered: false,
            publications: Vec::new(),
        };
        let frame: Value = serde_json::from_str(&subscribed_frame(
            Some(1),
            "n",
            Some(&position),
            Some(&lost),
        ))
        .unwrap();
        assert_eq!(frame["recovered"], json!(false));
        assert_eq!(frame["publications"], json!([]));
    }

    proptest! {
        #[test]
        fn any_entries_make_a_valid_frame(channel in "\\PC{0,40}", texts in prop::collection::vec("\\PC{0,20}", 0..5)) {
            let publications: Vec<HistoryEntry> = texts
                .iter()
                .enumerate()
                .map(|(n, text)| entry(n as u64 + 1, &json!({ "t": text }).to_string()))
                .collect();
            let recovery = Recovery { recovered: true, publications };
            let frame: Value = serde_json::from_str(&subscribed_frame(Some(1), &channel, None, Some(&recovery))).unwrap();
            prop_assert_eq!(&frame["channel"], &Value::from(channel));
            prop_assert_eq!(frame["publications"].as_array().unwrap().len(), texts.len());
        }
    }
}
