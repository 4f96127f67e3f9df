//! [`Spares`]: the snapshots recent changes retired, kept so the next change can be applied to a
//! config in place instead of to a copy of the config in effect.
//!
//! A snapshot is immutable while readers hold it, so a change needs a config of its own to apply
//! to. Copying the one in effect clones every field not behind an `Arc` (a plain struct of 50,000
//! `String` fields: milliseconds to copy, and as much again to drop the old copy). Instead, the
//! handle keeps the snapshot each change retires; once no reader holds it any more
//! ([`Arc::get_mut`] succeeds), the next change brings it up to date by decoding only the keys
//! changed since it, and it becomes the next snapshot in place.

use std::sync::Arc;

use super::Snapshot;
use crate::config::APPLY_MAX_CHANGED;

/// Configs with at least this many keys in the bucket (under the prefix) keep spares by default: below it, copying the config per
/// change costs less than ~50 µs on the machines of BENCHMARKS.md (about 60 ns per `String`
/// field), and the spare's memory is not worth it.
pub(super) const SPARE_MIN_KEYS: usize = 512;

/// Most spares kept: the one retired last and, when a reader still held an older one at the
/// last change, that one (readers usually let go within microseconds).
const MAX_SPARES: usize = 2;

/// One retired snapshot.
struct Spare<T> {
    retired: Arc<Snapshot<T>>,
    /// The keys whose values changed from `retired` to the snapshot `upto`.
    behind: Vec<String>,
    /// The `seq` of the snapshot in effect that `behind` leads to.
    upto: u64,
}

/// The retired snapshots of one handle, oldest first.
pub(super) struct Spares<T> {
    kept: Vec<Spare<T>>,
}

impl<T: Send + Sync + 'static> Spares<T> {
    pub(super) fn new() -> Self {
        Spares { kept: Vec::new() }
    }

    /// The newest spare that leads to `current` and that no reader holds, with every key it is
    /// behind plus `keys`, to apply those keys to in place. The older spares are let go: the one
    /// taken is closer to the config in effect.
    pub(super) fn take(&mut self, current: &Snapshot<T>, keys: &[String]) -> Option<(Arc<Snapshot<T>>, Vec<String>)> {
        if self.kept.last().is_some_and(|s| s.upto != current.seq) {
            self.clear();
            return None;
        }
        for at in (0..self.kept.len()).rev() {
            let spare = &mut self.kept[at];
            let mut all = spare.behind.clone();
            for key in keys {
                if !all.contains(key) {
                    all.push(key.clone());
                }
            }
            // Fails while a reader (a `get()` guard, a subscriber's last snapshot) holds it.
            if all.len() <= APPLY_MAX_CHANGED && Arc::get_mut(&mut spare.retired).is_some() {
                let taken = self.kept.remove(at);
                self.clear();
                return Some((taken.retired, all));
            }
        }
        None
    }

    /// Keeps `retired`, which the snapshot `upto` replaced after a change of `keys`; the spares
    /// kept before fall behind by the same keys.
    pub(super) fn retire(&mut self, retired: Arc<Snapshot<T>>, keys: &[String], upto: u64) {
        for spare in &mut self.kept {
            for key in keys {
                if !spare.behind.contains(key) {
                    spare.behind.push(key.clone());
                }
            }
            spare.upto = upto;
        }
        // A spare behind by more keys than an apply takes on would never be used.
        let (keep, mut old): (Vec<_>, Vec<_>) = self.kept.drain(..).partition(|s| s.behind.len() <= APPLY_MAX_CHANGED);
        self.kept = keep;
        let mut old: Vec<_> = old.drain(..).map(|s| s.retired).collect();
        self.kept.push(Spare { retired, behind: keys.to_vec(), upto });
        while self.kept.len() > MAX_SPARES {
            old.push(self.kept.remove(0).retired);
        }
        drop_later(old);
    }

    /// Lets every spare go (a whole decode, a reload: they would never be used).
    pub(super) fn clear(&mut self) {
        drop_later(self.kept.drain(..).map(|s| s.retired).collect());
    }
}

/// Drops snapshots off the watcher's path: the last reference to a large plain config takes as
/// long to drop as to copy, and the watcher should be applying the next change meanwhile.
pub(super) fn drop_later<T: Send + Sync + 'static>(old: Vec<Arc<Snapshot<T>>>) {
    // Only the last reference costs anything; a reader that still holds one drops it itself.
    let last: Vec<_> = old.into_iter().filter(|s| Arc::strong_count(s) == 1).collect();
    if !last.is_empty() {
        drop_off_path(last);
    }
}

/// Drops `value` on a blocking thread when a runtime runs (else here): for things whose drop
/// costs as much as the work they were part of (a large config, thousands of value buffers).
pub(super) fn drop_off_path<V: Send + 'static>(value: V) {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => drop(rt.spawn_blocking(move || drop(value))),
        Err(_) => drop(value),
    }
}

/// Frees the value bytes a decode let go of ([`View::elide`](crate::view::View::elide)): off
/// the caller's path when there are many.
pub(super) fn free_bytes(dropped: Vec<bytes::Bytes>) {
    if dropped.len() >= 1024 {
        drop_off_path(dropped);
    }
}
