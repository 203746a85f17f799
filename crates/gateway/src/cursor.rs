//! One subscriber's place in a channel's stream, for namespaces that keep
//! history: what lets a `subscribe` with `since` replay the missed
//! publications and then go on live with no gap and no doubling at the
//! seam, and what stops deliveries past a hole in the live stream.
//!
//! A subscription starts **recovering**: it is in the instance's table
//! (its feed is live) before the history is read, and the publications
//! that arrive meanwhile are held here. Once the `subscribed` answer (with
//! what history gave, up to offset `top`) is written, [`Cursor::release`]
//! queues the held ones after `top` and the cursor goes **live** with floor
//! `top`: a publication at or under it (one the history read already had,
//! still in flight) is skipped. When the instance finds a hole in the live
//! stream, the cursor is **paused**: nothing more is delivered until the
//! client subscribes again with `since` and the cycle starts over.
//!
//! The live check is one atomic load per publication and subscriber; the
//! lock is taken only while recovering.

use std::sync::{
    Arc, Mutex, MutexGuard,
    atomic::{AtomicU64, Ordering},
};

use crate::mailbox::{Mailbox, PushError};

/// `state` while paused.
const PAUSED: u64 = u64::MAX;
/// `state` while recovering (frames go to `held`).
const RECOVERING: u64 = u64::MAX - 1;

/// See the module documentation.
#[derive(Debug)]
pub(crate) struct Cursor {
    /// [`PAUSED`], [`RECOVERING`], or the floor of a live cursor.
    state: AtomicU64,
    held: Mutex<Held>,
}

#[derive(Debug, Default)]
struct Held {
    /// `(offset, frame)`; offset 0 for a `join`/`leave`.
    frames: Vec<(u64, Arc<str>)>,
    /// More arrived than the outbound queue holds.
    overflowed: bool,
}

/// What the fan-out does with one frame for one subscriber.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admit {
    /// Queue it.
    Deliver,
    /// Drop it: already delivered by the recovery, or the cursor is paused.
    Skip,
    /// The cursor holds it until the recovery is answered.
    Held,
}

/// What [`Cursor::release`] did.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Released {
    /// Live; the held frames are queued.
    Live,
    /// The live stream broke while recovering: the cursor stays paused, and
    /// the caller tells the client (after the answer it just queued; the
    /// instance queued nothing, see [`Cursor::pause`]).
    Paused,
    /// More frames arrived while recovering than the queue holds, or the
    /// queue filled: the connection is a slow consumer.
    Overflowed,
}

/// What a cursor was doing when [`Cursor::pause`] stopped it.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum WasPaused {
    /// Delivering.
    Live,
    /// Holding frames while a `subscribe` reads history.
    Recovering,
    /// Paused already.
    Already,
}

impl Cursor {
    /// A new subscription's cursor: recovering.
    pub(crate) fn recovering() -> Self {
        Self {
            state: AtomicU64::new(RECOVERING),
            held: Mutex::default(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Held> {
        self.held
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Decides for a frame at `offset` (0: not a publication of the stream,
    /// a `join`/`leave`). `capacity` bounds what a recovery holds.
    pub(crate) fn admit(&self, offset: u64, frame: &Arc<str>, capacity: usize) -> Admit {
        let mut state = self.state.load(Ordering::Acquire);
        if state == RECOVERING {
            let mut held = self.lock();
            // `release` changes the state under the lock.
            state = self.state.load(Ordering::Acquire);
            if state == RECOVERING {
                if held.frames.len() >= capacity {
                    held.overflowed = true;
                } else {
                    held.frames.push((offset, frame.clone()));
                }
                return Admit::Held;
            }
        }
        if state == PAUSED || (offset != 0 && offset <= state) {
            Admit::Skip
        } else {
            Admit::Deliver
        }
    }

    /// The recovery was answered up to `top`: queues the held frames after
    /// it on `mailbox`, and goes live.
    pub(crate) fn release(&self, top: u64, mailbox: &Mailbox, capacity: usize) -> Released {
        let mut held = self.lock();
        let frames = std::mem::take(&mut held.frames);
        if self.state.load(Ordering::Acquire) == PAUSED {
            return Released::Paused;
        }
        if std::mem::take(&mut held.overflowed) {
            self.state.store(PAUSED, Ordering::Release);
            return Released::Overflowed;
        }
        let mut floor = top;
        for (offset, frame) in frames {
            if offset != 0 && offset <= top {
                continue;
            }
            floor = floor.max(offset);
            if let Err(PushError::Full) = mailbox.push(frame, capacity) {
                self.state.store(PAUSED, Ordering::Release);
                return Released::Overflowed;
            }
        }
        self.state.store(floor, Ordering::Release);
        Released::Live
    }

    /// Stops every delivery (a hole in the live stream); what it was doing.
    /// Whoever paused a live cursor tells the client; a recovering one is
    /// told by its [`Cursor::release`] (`Released::Paused`), after the
    /// answer to the `subscribe` that is reading history.
    pub(crate) fn pause(&self) -> WasPaused {
        let _held = self.lock();
        match self.state.swap(PAUSED, Ordering::AcqRel) {
            PAUSED => WasPaused::Already,
            RECOVERING => WasPaused::Recovering,
            _ => WasPaused::Live,
        }
    }

    /// Starts a new recovery (the client subscribed again with `since`).
    pub(crate) fn recover(&self) {
        let mut held = self.lock();
        *held = Held::default();
        self.state.store(RECOVERING, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(text: &str) -> Arc<str> {
        text.into()
    }

    fn drain(mailbox: &Mailbox) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(frame) = mailbox.try_take_frame() {
            out.push(frame.to_string());
        }
        out
    }

    #[test]
    fn held_frames_after_the_recovery_are_queued_once_and_in_order() {
        let cursor = Cursor::recovering();
        let mailbox = Mailbox::new();
        // 4 and 5 were in the history read (top 5); 6 and 7 came after it.
        for (offset, text) in [(4, "4"), (5, "5"), (0, "join"), (6, "6"), (7, "7")] {
            assert_eq!(cursor.admit(offset, &frame(text), 16), Admit::Held);
        }
        assert_eq!(cursor.release(5, &mailbox, 16), Released::Live);
        assert_eq!(drain(&mailbox), ["join", "6", "7"]);
        // Still in flight from before the read: skipped; then live.
        assert_eq!(cursor.admit(6, &frame("6"), 16), Admit::Skip);
        assert_eq!(cursor.admit(8, &frame("8"), 16), Admit::Deliver);
        assert_eq!(cursor.admit(0, &frame("leave"), 16), Admit::Deliver);
    }

    #[test]
    fn a_paused_cursor_delivers_nothing_until_it_recovers_again() {
        let cursor = Cursor::recovering();
        let mailbox = Mailbox::new();
        assert_eq!(cursor.admit(3, &frame("3"), 16), Admit::Held);
        assert_eq!(cursor.pause(), WasPaused::Recovering);
        assert_eq!(cursor.pause(), WasPaused::Already, "once");
        assert_eq!(cursor.release(2, &mailbox, 16), Released::Paused);
        assert!(drain(&mailbox).is_empty(), "nothing past the hole");
        assert_eq!(cursor.admit(9, &frame("9"), 16), Admit::Skip);
        cursor.recover();
        assert_eq!(cursor.admit(10, &frame("10"), 16), Admit::Held);
        assert_eq!(cursor.release(9, &mailbox, 16), Released::Live);
        assert_eq!(drain(&mailbox), ["10"]);
    }

    #[test]
    fn a_recovery_that_holds_more_than_the_queue_is_a_slow_consumer() {
        let cursor = Cursor::recovering();
        let mailbox = Mailbox::new();
        for offset in 1..=3 {
            cursor.admit(offset, &frame("x"), 2);
        }
        assert_eq!(cursor.release(0, &mailbox, 2), Released::Overflowed);
        assert_eq!(cursor.admit(4, &frame("4"), 2), Admit::Skip);
    }
}
