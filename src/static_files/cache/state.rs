//! The cache's table: slots, their allocation and CLOCK eviction, and the
//! ticket a lookup holds between registering a path and caching what it
//! opened (an event in between makes the result uncacheable).

use super::*;

impl State {
    pub(super) fn alloc(&mut self, data: SlotData) -> Slot {
        let slot = match self.free.pop() {
            Some(slot) => slot,
            None => {
                self.slots.push(SlotData::default());
                self.slots.len() - 1
            }
        };
        if let Some(tree) = self.tree.as_mut() {
            for dep in &data.deps {
                tree.add(dep, slot);
            }
        }
        if let Some(key) = &data.key {
            self.map.insert(key.clone(), slot);
        }
        self.fds += data.fds;
        self.bytes += data.bytes;
        self.slots[slot] = data;
        slot
    }

    /// Empty `slot`: out of the map and the tree (pruning it).
    pub(super) fn remove(&mut self, slot: Slot, w: &dyn Watches) {
        let Some(data) = self.slots.get_mut(slot) else {
            return;
        };
        if matches!(data.state, SlotState::Free) {
            return;
        }
        let data = std::mem::take(data);
        if let Some(key) = &data.key {
            self.map.remove(key);
        }
        if let Some(tree) = self.tree.as_mut() {
            for dep in &data.deps {
                tree.remove(dep, slot, w);
            }
        }
        self.fds -= data.fds;
        self.bytes -= data.bytes;
        self.free.push(slot);
    }

    /// Evict (CLOCK) until `fds` more descriptors and `bytes` more bytes
    /// fit, never `keep`; false if they cannot.
    pub(super) fn evict(
        &mut self,
        limits: &CacheLimits,
        fds: usize,
        bytes: u64,
        keep: Option<Slot>,
        w: &dyn Watches,
    ) -> bool {
        // Twice round: once to clear the bits, once to evict.
        let mut steps = 2 * self.slots.len() + 1;
        while self.fds + fds > limits.entries || self.bytes + bytes > limits.bytes {
            if steps == 0 || self.slots.is_empty() {
                return false;
            }
            steps -= 1;
            self.hand = (self.hand + 1) % self.slots.len();
            let slot = self.hand;
            if Some(slot) == keep {
                continue;
            }
            if let SlotState::Ready(entry) = &self.slots[slot].state {
                if !entry.referenced.swap(false, Ordering::Relaxed) {
                    self.remove(slot, w);
                }
            }
        }
        true
    }
}

impl Ticket<'_> {
    /// How the entry must be built to be cached.
    pub fn form(&self) -> Form {
        self.form
    }

    /// Is this ticket's placeholder still in its slot (no event dropped it)?
    fn still_pending(&self, st: &State) -> bool {
        st.slots
            .get(self.slot)
            .is_some_and(|d| matches!(d.state, SlotState::Pending(t) if t == self.token))
    }

    /// Cache `entry` — unless an event dropped the placeholder meanwhile
    /// (the file may have changed since it was opened), or it does not fit.
    pub fn complete(mut self, entry: Arc<Entry>) {
        self.done = true;
        let sh = self.shared;
        let mut guard = sh.write();
        let st = &mut *guard;
        if !self.still_pending(st) {
            return;
        }
        let (fds, bytes) = (entry.fds(), entry.bytes());
        let data = &mut st.slots[self.slot];
        data.state = SlotState::Ready(entry);
        st.fds = st.fds - data.fds + fds;
        st.bytes = st.bytes - data.bytes + bytes;
        data.fds = fds;
        data.bytes = bytes;
        sh.with_watches(|w| {
            if !st.evict(&sh.limits, 0, 0, Some(self.slot), w) {
                st.remove(self.slot, w);
            }
        });
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let sh = self.shared;
        let mut guard = sh.write();
        let st = &mut *guard;
        if self.still_pending(st) {
            sh.with_watches(|w| st.remove(self.slot, w));
        }
    }
}

/// No inotify: nothing to add or remove.
pub(super) struct NoWatches;

impl Watches for NoWatches {
    fn add(&self, _: &[String]) -> Result<(i32, bool), AddError> {
        Err(AddError::Watch(io::ErrorKind::Unsupported.into()))
    }
    fn remove(&self, _: i32) {}
}
