//! [`Snapshot`]: one immutable version of the config, with the revisions a write must expect.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Deref;
use std::sync::Arc;

use crate::config::RawValues;
use crate::view::View;

/// One immutable version of the config: the decoded value plus the revisions it was built from.
///
/// Derefs to `T`, so `cfg.get().port` reads a field.
pub struct Snapshot<T> {
    pub(super) config: T,
    /// The values in effect (shared with the watcher's view until the next change).
    pub(super) values: Arc<RawValues>,
    /// Latest revisions where they differ from `values`: delete markers and refused values. A
    /// write expects these, so it can replace a refused value.
    pub(super) overrides: HashMap<String, u64>,
    /// Keys whose value in the bucket is not the one in effect (refused, or a deleted required
    /// key): a typed write that keeps them writes them back, so the bucket holds what it asked for.
    pub(super) repair: HashSet<String>,
    /// The latest revision of the write guard key (see [`GUARD_KEY`](crate::GUARD_KEY)).
    pub(super) guard: u64,
    pub(super) revision: u64,
    /// Which load of the bucket this came from (bumped when the bucket is replaced).
    pub(super) epoch: u64,
    /// The cache file's save time when this snapshot was built from it (`None` otherwise).
    pub(super) from_cache: Option<std::time::SystemTime>,
}

impl<T: Clone> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Snapshot {
            config: self.config.clone(),
            values: Arc::new(RawValues::clone(&self.values)),
            overrides: self.overrides.clone(),
            repair: self.repair.clone(),
            guard: self.guard,
            revision: self.revision,
            epoch: self.epoch,
            from_cache: self.from_cache,
        }
    }
}

impl<T> Deref for Snapshot<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.config
    }
}

impl<T: fmt::Debug> fmt::Debug for Snapshot<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Snapshot").field("revision", &self.revision).field("config", &self.config).finish()
    }
}

impl<T> Snapshot<T> {
    /// A snapshot of `config` built from `values` as the watcher's `view` holds them.
    pub(super) fn new(config: T, values: Arc<RawValues>, view: &View, any_rejected: bool, epoch: u64) -> Self {
        let (overrides, repair) = divergence(view, &values, any_rejected);
        Snapshot { config, values, overrides, repair, guard: view.guard, revision: view.seen, epoch, from_cache: None }
    }

    /// The config.
    pub fn config(&self) -> &T {
        &self.config
    }

    /// The highest bucket revision this snapshot has seen.
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// The revision of the value in effect for a key (relative to the prefix), if it has one.
    pub fn key_revision(&self, key: &str) -> Option<u64> {
        self.values.get(key).map(|v| v.revision)
    }

    /// The revision a write of `key` must expect: the key's latest revision in the bucket when
    /// this snapshot was taken (0 = never written).
    pub(super) fn expected_revision(&self, key: &str) -> u64 {
        match self.overrides.get(key) {
            Some(rev) => *rev,
            None => self.values.get(key).map_or(0, |v| v.revision),
        }
    }

    /// Keys whose value in effect differs between two snapshots, sorted.
    pub fn changed_keys(&self, newer: &Snapshot<T>) -> Vec<String> {
        let mut keys: Vec<String> = newer
            .values
            .iter()
            .filter(|(k, v)| self.values.get(*k).map(|o| o.revision) != Some(v.revision))
            .map(|(k, _)| k.clone())
            .chain(self.values.keys().filter(|k| !newer.values.contains_key(*k)).cloned())
            .collect();
        keys.sort();
        keys
    }
}

/// Latest revisions that differ from the values in effect (markers, refused values), and the keys
/// whose bucket value is not in effect. Refused values are only looked for when something was
/// refused, so the common path stays O(markers).
fn divergence(view: &View, values: &RawValues, any_rejected: bool) -> (HashMap<String, u64>, HashSet<String>) {
    let mut overrides = view.markers.clone();
    let mut repair = HashSet::new();
    if any_rejected {
        // Bucket values not in effect (refused), and values in effect the bucket does not hold at
        // that revision (kept after a delete, carried over a reload, or a start-up fallback):
        // expect the bucket's revision (0 = absent) and write them back.
        for (k, v) in view.values.iter() {
            if values.get(k).map(|x| x.revision) != Some(v.revision) {
                overrides.insert(k.clone(), v.revision);
                repair.insert(k.clone());
            }
        }
        for (k, v) in values.iter() {
            let latest = view.revision_of(k);
            if latest != v.revision {
                overrides.insert(k.clone(), latest);
                repair.insert(k.clone());
            }
        }
    }
    (overrides, repair)
}
