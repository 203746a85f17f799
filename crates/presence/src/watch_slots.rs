//! How many `Watch` streams each caller holds, so that one caller (a buggy
//! loop that re-watches without closing) cannot hold every event stream of
//! the server.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

/// Counts open `Watch` streams per holder (an API key's name, or a client
/// address when the API is open).
#[derive(Debug, Clone)]
pub(crate) struct WatchSlots {
    max: usize,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

/// One open stream's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct WatchSlot {
    holder: String,
    held: Arc<Mutex<HashMap<String, usize>>>,
}

impl WatchSlots {
    /// At most `max` streams per holder (0: no limit).
    pub(crate) fn new(max: usize) -> Self {
        Self {
            max,
            held: Arc::default(),
        }
    }

    /// The limit.
    pub(crate) fn max(&self) -> usize {
        self.max
    }

    /// A slot for `holder`, or `None` when it already holds the maximum.
    pub(crate) fn acquire(&self, holder: String) -> Option<WatchSlot> {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        let count = held.entry(holder.clone()).or_default();
        if self.max > 0 && *count >= self.max {
            return None;
        }
        *count += 1;
        Some(WatchSlot {
            holder,
            held: self.held.clone(),
        })
    }
}

impl Drop for WatchSlot {
    fn drop(&mut self) {
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(count) = held.get_mut(&self.holder) {
            *count -= 1;
            if *count == 0 {
                held.remove(&self.holder);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_gets_at_most_max_and_a_dropped_slot_is_free_again() {
        let slots = WatchSlots::new(2);
        let a = slots.acquire("a".into()).unwrap();
        let _b = slots.acquire("a".into()).unwrap();
        assert!(slots.acquire("a".into()).is_none());
        let _other = slots.acquire("other".into()).unwrap();
        drop(a);
        assert!(slots.acquire("a".into()).is_some());
        drop(_b);
        drop(_other);
        assert!(slots.held.lock().unwrap().is_empty());
    }
}
