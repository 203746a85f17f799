//! A live connection's mailbox: the messages other tasks queue for it (Send
//! commands), and the request to close it (Disconnect, a full queue, the
//! drain).
//!
//! It replaces a channel plus a notifier per connection with one small
//! allocation: the queue allocates only while messages wait, and is freed
//! once they are written, so an idle connection holds none.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex, MutexGuard},
    task::{Context, Poll, Waker},
};

use pulse_presence::ChannelName;
use pulse_protocol::{CloseCode, ErrorCode};

use crate::socket::End;

/// Why a push was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PushError {
    /// The queue holds its capacity already: the client does not read fast enough.
    Full,
    /// The connection is being closed; the message goes nowhere (at most once).
    Closing,
}

/// The most frames one [`Delivery::Batch`] carries (one vectored write
/// takes two slices per frame; the kernel takes 1,024 at most).
pub(crate) const MAX_BATCH: usize = 64;
/// A batch stops growing once it holds this many bytes of payload.
pub(crate) const MAX_BATCH_BYTES: usize = 256 * 1024;

/// What woke the session.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// An encoded server message to write.
    Message(Arc<str>),
    /// Several that were waiting together (at most [`MAX_BATCH`] frames
    /// and about [`MAX_BATCH_BYTES`]), to write at once: under load a
    /// socket gets one write for all of them instead of one each.
    Batch(Vec<Arc<str>>),
    /// The server API subscribed the user to this channel (`true`), or
    /// ended that subscription.
    Subscription(ChannelName, bool),
    /// The live stream of this channel broke (see `cursor.rs`): tell the
    /// client to subscribe again with `since`.
    Reposition(ChannelName),
    /// Close the connection, telling the client why.
    Kick(End),
}

/// What waits in the queue: a frame, or a server-side (un)subscription,
/// which the session carries out in order with the frames around it.
#[derive(Debug)]
enum Queued {
    Frame(Arc<str>),
    Subscription(ChannelName, bool),
    Reposition(ChannelName),
}

/// The mailbox of one live connection; see the module documentation.
#[derive(Debug, Default)]
pub struct Mailbox {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Queued>,
    /// How the session is to end, once a kick was requested (boxed: the
    /// idle mailbox pays one pointer for it).
    kick: Option<Box<End>>,
    waker: Option<Waker>,
}

impl Mailbox {
    /// An empty mailbox.
    pub fn new() -> Self {
        Self::default()
    }

    /// Queues an encoded message for the connection, without waiting,
    /// unless `capacity` messages wait already (`--outbound-queue`; the
    /// caller passes it so that the mailbox need not hold it).
    pub fn push(&self, message: Arc<str>, capacity: usize) -> Result<(), PushError> {
        self.enqueue(Queued::Frame(message), capacity)
    }

    /// Queues a server-side subscription (`subscribe`) or its end, under
    /// the same capacity as messages.
    pub(crate) fn push_subscription(
        &self,
        channel: ChannelName,
        subscribe: bool,
        capacity: usize,
    ) -> Result<(), PushError> {
        self.enqueue(Queued::Subscription(channel, subscribe), capacity)
    }

    /// Queues the news that `channel`'s live stream broke, in order with
    /// the frames before it (which precede the hole).
    pub(crate) fn push_reposition(
        &self,
        channel: ChannelName,
        capacity: usize,
    ) -> Result<(), PushError> {
        self.enqueue(Queued::Reposition(channel), capacity)
    }

    fn enqueue(&self, message: Queued, capacity: usize) -> Result<(), PushError> {
        let mut state = self.lock();
        if state.kick.is_some() {
            return Err(PushError::Closing);
        }
        if state.queue.len() >= capacity {
            return Err(PushError::Full);
        }
        state.queue.push_back(message);
        wake(state);
        Ok(())
    }

    /// Asks the session to send an `error` with `code` and `message`, then
    /// close with `close`. The first request wins; returns whether this was it.
    pub fn kick(&self, close: CloseCode, code: ErrorCode, message: impl Into<String>) -> bool {
        let mut state = self.lock();
        if state.kick.is_some() {
            return false;
        }
        state.kick = Some(Box::new(End::Fail {
            close,
            code,
            message: message.into(),
        }));
        // Queued messages will not be written.
        state.queue = VecDeque::new();
        wake(state);
        true
    }

    /// Whether a kick was requested.
    pub fn is_kicked(&self) -> bool {
        self.lock().kick.is_some()
    }

    /// How many messages wait.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// Whether no message waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The kick if there is one, else the next message; registers the
    /// session's waker when there is neither.
    pub(crate) fn poll_delivery(&self, cx: &mut Context<'_>) -> Poll<Delivery> {
        let mut state = self.lock();
        if let Some(kick) = &state.kick {
            return Poll::Ready(Delivery::Kick(End::clone(kick)));
        }
        if let Some(message) = state.queue.pop_front() {
            let delivery = match message {
                Queued::Frame(frame) => batch(frame, &mut state.queue),
                Queued::Subscription(channel, subscribe) => {
                    Delivery::Subscription(channel, subscribe)
                }
                Queued::Reposition(channel) => Delivery::Reposition(channel),
            };
            if state.queue.is_empty() {
                // Free the queue's buffer: an idle connection holds none.
                state.queue = VecDeque::new();
            }
            return Poll::Ready(delivery);
        }
        register(&mut state, cx);
        Poll::Pending
    }

    /// The next queued frame, if the queue starts with one (for tests).
    #[cfg(test)]
    pub(crate) fn try_take_frame(&self) -> Option<Arc<str>> {
        let mut state = self.lock();
        match state.queue.front() {
            Some(Queued::Frame(_)) => match state.queue.pop_front() {
                Some(Queued::Frame(frame)) => Some(frame),
                _ => unreachable!("the front was just a frame"),
            },
            _ => None,
        }
    }

    /// Ready once a kick is requested, whatever waits in the queue: a write
    /// blocked on a client that does not read gives way to it.
    pub(crate) fn poll_kick(&self, cx: &mut Context<'_>) -> Poll<End> {
        let mut state = self.lock();
        if let Some(kick) = &state.kick {
            return Poll::Ready(End::clone(kick));
        }
        register(&mut state, cx);
        Poll::Pending
    }

    /// The kick, once requested.
    pub(crate) async fn kicked(&self) -> End {
        std::future::poll_fn(|cx| self.poll_kick(cx)).await
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding the lock; a poisoned one is still consistent.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

fn register(state: &mut State, cx: &Context<'_>) {
    match &mut state.waker {
        Some(waker) if waker.will_wake(cx.waker()) => {}
        slot => *slot = Some(cx.waker().clone()),
    }
}

/// Wakes the session after the lock is released.
fn wake(mut state: MutexGuard<'_, State>) {
    let waker = state.waker.take();
    drop(state);
    if let Some(waker) = waker {
        waker.wake();
    }
}

/// `first`, with the frames waiting right behind it (up to a server-side
/// (un)subscription, which must be carried out in its turn), as one
/// delivery: a single frame stays a `Message` and allocates nothing.
fn batch(first: Arc<str>, queue: &mut VecDeque<Queued>) -> Delivery {
    if first.len() >= MAX_BATCH_BYTES || !matches!(queue.front(), Some(Queued::Frame(_))) {
        return Delivery::Message(first);
    }
    let mut bytes = first.len();
    let mut frames = vec![first];
    while frames.len() < MAX_BATCH && bytes < MAX_BATCH_BYTES {
        let Some(Queued::Frame(_)) = queue.front() else {
            break;
        };
        let Some(Queued::Frame(frame)) = queue.pop_front() else {
            unreachable!("the front was just a frame");
        };
        bytes += frame.len();
        frames.push(frame);
    }
    Delivery::Batch(frames)
}

#[cfg(test)]
mod tests {
    use std::{
        sync::atomic::{AtomicUsize, Ordering},
        task::Wake,
    };

    use super::*;

    #[derive(Default)]
    struct Counter(AtomicUsize);

    impl Wake for Counter {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn message(text: &str) -> Arc<str> {
        text.into()
    }

    #[test]
    fn delivers_in_order_up_to_capacity_and_frees_the_queue() {
        let mailbox = Mailbox::new();
        let counter = Arc::new(Counter::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(mailbox.poll_delivery(&mut cx).is_pending());
        mailbox.push(message("a"), 2).unwrap();
        mailbox.push(message("b"), 2).unwrap();
        assert_eq!(mailbox.push(message("c"), 2), Err(PushError::Full));
        assert_eq!(
            counter.0.load(Ordering::SeqCst),
            1,
            "woken by the first push"
        );
        match mailbox.poll_delivery(&mut cx) {
            Poll::Ready(Delivery::Batch(frames)) => {
                assert_eq!(frames, [message("a"), message("b")])
            }
            other => panic!("{other:?}"),
        }
        assert!(mailbox.poll_delivery(&mut cx).is_pending());
        assert_eq!(mailbox.lock().queue.capacity(), 0);
        mailbox.push(message("c"), 2).unwrap();
        match mailbox.poll_delivery(&mut cx) {
            Poll::Ready(Delivery::Message(text)) => assert_eq!(&*text, "c", "one alone"),
            other => panic!("{other:?}"),
        }
    }

    /// Frames waiting together go out as one batch, up to a server-side
    /// subscription (carried out in its turn) and up to the batch's bounds.
    #[test]
    fn waiting_frames_are_batched_in_order_up_to_a_subscription_and_the_bounds() {
        let mailbox = Mailbox::new();
        let waker = Waker::from(Arc::new(Counter::default()));
        let mut cx = Context::from_waker(&waker);
        for text in ["1", "2", "3"] {
            mailbox.push(message(text), 1000).unwrap();
        }
        mailbox
            .push_subscription("room:1".into(), true, 1000)
            .unwrap();
        mailbox.push(message("4"), 1000).unwrap();
        for _ in 0..MAX_BATCH + 1 {
            mailbox.push(message("x"), 1000).unwrap();
        }
        let mut deliveries = Vec::new();
        while let Poll::Ready(delivery) = mailbox.poll_delivery(&mut cx) {
            deliveries.push(match delivery {
                Delivery::Message(frame) => format!("message {frame}"),
                Delivery::Batch(frames) => format!("batch {} from {}", frames.len(), frames[0]),
                Delivery::Subscription(channel, _) => format!("subscription {channel}"),
                Delivery::Reposition(channel) => format!("reposition {channel}"),
                Delivery::Kick(_) => "kick".to_owned(),
            });
        }
        assert_eq!(
            deliveries,
            [
                "batch 3 from 1".to_owned(),
                "subscription room:1".to_owned(),
                format!("batch {MAX_BATCH} from 4"),
                "batch 2 from x".to_owned(),
            ]
        );
        let big: Arc<str> = "y".repeat(MAX_BATCH_BYTES).into();
        mailbox.push(big.clone(), 1000).unwrap();
        mailbox.push(message("z"), 1000).unwrap();
        assert!(
            matches!(
                mailbox.poll_delivery(&mut cx),
                Poll::Ready(Delivery::Message(frame)) if frame == big
            ),
            "a full batch's worth of bytes goes alone"
        );
    }

    #[test]
    fn the_first_kick_wins_and_drops_the_queue() {
        let mailbox = Mailbox::new();
        let counter = Arc::new(Counter::default());
        let waker = Waker::from(counter.clone());
        let mut cx = Context::from_waker(&waker);
        assert!(mailbox.poll_kick(&mut cx).is_pending());
        mailbox.push(message("a"), 4).unwrap();
        assert!(mailbox.kick(CloseCode::TooMany, ErrorCode::SLOW_CONSUMER, "slow"));
        assert!(!mailbox.kick(CloseCode::Forbidden, ErrorCode::DISCONNECTED, "later"));
        assert!(mailbox.is_kicked());
        assert_eq!(mailbox.push(message("b"), 4), Err(PushError::Closing));
        for _ in 0..2 {
            let Poll::Ready(Delivery::Kick(end)) = mailbox.poll_delivery(&mut cx) else {
                panic!("the kick comes first");
            };
            assert_eq!(end.close_code(), Some(CloseCode::TooMany));
            assert_eq!(end.reason(), ErrorCode::SLOW_CONSUMER.as_str());
        }
        assert!(mailbox.is_empty());
    }
}
