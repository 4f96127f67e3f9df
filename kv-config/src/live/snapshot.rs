//! [`Snapshot`]: one immutable version of the config, with the revisions a write must expect.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use crate::config::KvConfig;
use crate::values::Values;
use crate::view::View;

use super::provenance::{ActiveOverride, Provenance};

/// One immutable version of the config: the decoded value plus the revisions it was built from.
///
/// Derefs to `T`, so `cfg.get().port` reads a field.
pub struct Snapshot<T> {
    pub(super) config: T,
    /// The values in effect (shared with the watcher's view and the other snapshots, see
    /// [`Values`]).
    pub(super) values: Values,
    /// Latest revisions where they differ from `values`: delete markers and refused values. A
    /// write expects these, so it can replace a refused value.
    pub(super) overrides: HashMap<String, u64>,
    /// Keys whose value in the bucket is not the one in effect (refused, or a deleted required
    /// key): a typed write that keeps them writes them back, so the bucket holds what it asked for.
    pub(super) repair: HashSet<String>,
    /// The latest revision of the write guard key (see [`GUARD_KEY`](crate::GUARD_KEY)).
    pub(super) guard: u64,
    /// Keys whose value in effect comes from a live override, by key (usually empty).
    pub(super) overridden: HashMap<String, ActiveOverride>,
    /// The key's own bucket value under each override in effect (absent: none), to check a write
    /// stays valid once the override expires.
    pub(super) underlying: HashMap<String, crate::config::RawValue>,
    /// The latest revision of every override key (markers included), for `set_for`'s check.
    pub(super) override_revisions: HashMap<String, u64>,
    /// Keys whose value in effect is still that of an override that is gone (it expired or was
    /// cleared while the bucket's state without it is refused, so the last good values stayed):
    /// the override and the key's own bucket value (`None`: absent). A write never
    /// stores such a value as the key's own: it is not written unless the write changes it, and
    /// the write must be valid with the own value back (usually empty, see [`Self::note_lapsed`]).
    pub(super) lapsed: HashMap<String, (ActiveOverride, Option<crate::config::RawValue>)>,
    /// The config is the start-up fallback ([`OnInvalid::Fallback`](crate::OnInvalid)), not
    /// decoded from the bucket.
    pub(super) fallback: bool,
    pub(super) revision: u64,
    /// Which load of the bucket this came from (bumped when the bucket is replaced).
    pub(super) epoch: u64,
    /// The cache file's save time when this snapshot was built from it (`None` otherwise).
    pub(super) from_cache: Option<std::time::SystemTime>,
    /// Unique to this snapshot in the process (see [`next_seq`]).
    pub(super) seq: u64,
    /// The change links of the handle this snapshot came from (`None` for a whole decode: no
    /// link leads to it). A subscriber that fell behind by several swaps follows the links from
    /// its own snapshot to this one and takes the union of their keys, instead of comparing
    /// every key of the config.
    pub(super) changes: Option<Arc<ChangeLog>>,
}

/// One handle's recent changes, oldest first, at most [`HISTORY`]: each link names a snapshot
/// (`from`, its `seq`), the snapshot that replaced it (`to`), and the keys whose value in effect
/// changed between them. Shared by the handle's snapshots: a change appends one link in place,
/// where a chain kept in every snapshot (a persistent vector, before) copied a block of it per
/// change and freed one with each retired snapshot.
#[derive(Debug, Default)]
pub(super) struct ChangeLog(Mutex<VecDeque<Link>>);

#[derive(Debug)]
struct Link {
    from: u64,
    to: u64,
    keys: Arc<[String]>,
}

impl ChangeLog {
    fn links(&self) -> std::sync::MutexGuard<'_, VecDeque<Link>> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that snapshot `to` replaced snapshot `from`, changing `keys`.
    pub(super) fn push(&self, from: u64, to: u64, keys: Arc<[String]>) {
        let mut links = self.links();
        if links.len() >= HISTORY {
            links.pop_front();
        }
        links.push_back(Link { from, to, keys });
    }

    /// The keys of the links leading from snapshot `from` to snapshot `to` (repeats included);
    /// `None` unless every link of the way is still here. Snapshots replace each other in `seq`
    /// order, so the links are sorted by `from`.
    ///
    /// Only the links' key lists are taken under the lock (an `Arc` each): the watcher waits for
    /// it to push the next link, and a subscriber far behind would otherwise clone thousands of
    /// keys meanwhile.
    fn between(&self, from: u64, to: u64) -> Option<Vec<String>> {
        let mut way = Vec::new();
        {
            let links = self.links();
            let start = links.partition_point(|l| l.from < from);
            let mut at = from;
            for link in links.range(start..) {
                if at == to || link.from != at {
                    break;
                }
                way.push(link.keys.clone());
                at = link.to;
            }
            if at != to {
                return None;
            }
        }
        Some(way.iter().flat_map(|keys| keys.iter().cloned()).collect())
    }
}

impl<T: Clone> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Snapshot {
            config: self.config.clone(),
            values: self.values.clone(),
            overrides: self.overrides.clone(),
            repair: self.repair.clone(),
            guard: self.guard,
            overridden: self.overridden.clone(),
            underlying: self.underlying.clone(),
            override_revisions: self.override_revisions.clone(),
            lapsed: self.lapsed.clone(),
            fallback: self.fallback,
            revision: self.revision,
            epoch: self.epoch,
            from_cache: self.from_cache,
            seq: self.seq,
            changes: self.changes.clone(),
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
    pub(super) fn new(config: T, values: Values, view: &View, any_rejected: bool, epoch: u64) -> Self {
        let (mut overrides, mut repair) = divergence(view, &values, any_rejected);
        let mut overridden = HashMap::new();
        let mut underlying = HashMap::new();
        for (key, o) in &view.overrides {
            // In effect unless it was refused (then the key kept another value).
            if values.get(key).map(|v| v.revision) != Some(o.value.revision) {
                continue;
            }
            // A write of the overridden key expects the key's own revision, and the override is
            // not something to repair.
            overrides.insert(key.clone(), view.revision_of(key));
            repair.remove(key);
            let active = ActiveOverride {
                key: key.clone(),
                revision: o.value.revision,
                created: o.value.created,
                expires: o.expires,
                underlying: view.values.get(key).map(|v| v.revision),
            };
            overridden.insert(key.clone(), active);
            if let Some(v) = view.values.get(key) {
                underlying.insert(key.clone(), v.clone());
            }
        }
        Snapshot {
            config,
            values,
            overrides,
            repair,
            guard: view.guard,
            overridden,
            underlying,
            override_revisions: if view.override_revisions.is_empty() { HashMap::new() } else { view.override_revisions.clone() },
            lapsed: HashMap::new(),
            fallback: false,
            from_cache: None,
            revision: view.seen,
            epoch,
            seq: next_seq(),
            changes: None,
        }
    }

    /// After a snapshot was built from values carried over from `previous` (the last good ones,
    /// kept for a refused state or a refused key): the keys whose value in effect is still that of
    /// an override `previous` had in effect (or had lapsed) but `view` no longer holds. They are
    /// not bucket values to repair: a write that stored them would turn an expired override into
    /// the key's own value.
    ///
    /// Also across a reload (`previous` of an older epoch: the bucket was replaced, or the handle
    /// started from its cache file): the old override's value, carried over, is no more the key's
    /// own in the new bucket than it was in the old one. Revisions of two incarnations can be
    /// equal, so a value counts as carried over only when the view does not hold that very value
    /// (revision and time stored) as the key's own.
    pub(super) fn note_lapsed<U>(&mut self, previous: &Snapshot<U>, view: &View) {
        let carried = previous.overridden.iter().chain(previous.lapsed.iter().map(|(k, (o, _))| (k, o)));
        for (key, o) in carried {
            let in_effect = self.values.get(key).is_some_and(|v| v.revision == o.revision && v.created == o.created);
            let own = view.values.get(key).is_some_and(|v| v.revision == o.revision && v.created == o.created);
            if self.overridden.contains_key(key) || !in_effect || own {
                continue;
            }
            self.repair.remove(key);
            self.lapsed.insert(key.clone(), (o.clone(), view.values.get(key).cloned()));
        }
    }

    /// Takes everything but the config from `meta` (a snapshot of the same values built around
    /// `()`), in place: a large `T` is not moved.
    pub(super) fn replace_meta(&mut self, meta: Snapshot<()>) {
        let Snapshot {
            config: (),
            values,
            overrides,
            repair,
            guard,
            overridden,
            underlying,
            override_revisions,
            lapsed,
            fallback,
            revision,
            epoch,
            from_cache,
            seq,
            changes,
        } = meta;
        self.values = values;
        self.overrides = overrides;
        self.repair = repair;
        self.guard = guard;
        self.overridden = overridden;
        self.underlying = underlying;
        self.override_revisions = override_revisions;
        self.lapsed = lapsed;
        self.fallback = fallback;
        self.revision = revision;
        self.epoch = epoch;
        self.from_cache = from_cache;
        self.seq = seq;
        self.changes = changes;
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

    /// The overrides in effect (see [`LiveConfig::set_for`](crate::LiveConfig::set_for)), sorted by
    /// key.
    pub fn overrides(&self) -> Vec<&ActiveOverride> {
        let mut all: Vec<&ActiveOverride> = self.overridden.values().collect();
        all.sort_by(|a, b| a.key.cmp(&b.key));
        all
    }

    /// Keys whose value in effect differs between two snapshots, sorted. For consecutive
    /// snapshots of one handle this costs the change, not the config.
    pub fn changed_keys(&self, newer: &Snapshot<T>) -> Vec<String> {
        if let Some(mut keys) = newer.changes.as_ref().and_then(|log| log.between(self.seq, newer.seq)) {
            keys.sort_unstable();
            keys.dedup();
            // A key changed and changed back (added, then deleted) is no difference.
            keys.retain(|k| self.values.get(k).map(|v| v.revision) != newer.values.get(k).map(|v| v.revision));
            return keys;
        }
        let mut keys: Vec<String> = newer
            .values
            .iter()
            .filter(|(k, v)| self.values.get(k).map(|o| o.revision) != Some(v.revision))
            .map(|(k, _)| k.to_string())
            .chain(self.values.keys().filter(|k| !newer.values.contains_key(k)).map(str::to_string))
            .collect();
        keys.sort();
        keys
    }
}

impl<T: KvConfig> Snapshot<T> {
    /// Where the value in effect for `key` (relative to the prefix) came from: the default, the
    /// bucket (with revision and time), an override (with its expiry), the local cache file (with
    /// its save time, while the server cannot be reached), or the start-up fallback.
    /// `None` for a key the schema does not know. An override that has expired still names a
    /// value it left in effect: that happens when the bucket's state without it is refused, and
    /// the last good snapshot (with the override's value) stays.
    ///
    /// ```
    /// use kv_config::{KvConfig, LiveConfig, Provenance, store::MemoryStore};
    /// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
    /// struct App {
    ///     #[kv(default = 8080)]
    ///     port: u16,
    ///     #[kv(default = "info")]
    ///     log_level: String,
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), kv_config::Error> {
    /// let cfg = LiveConfig::<App>::builder(MemoryStore::new(), "app")
    ///     .create_if_missing()
    ///     .seed_defaults(false) // keep defaults out of the bucket
    ///     .start()
    ///     .await?;
    /// cfg.set("port", 9090).await?;
    /// let snap = cfg.get();
    /// assert!(matches!(snap.source("port"), Some(Provenance::Bucket { .. })));
    /// assert_eq!(snap.source("log_level"), Some(Provenance::Default));
    /// assert_eq!(snap.source("nope"), None);
    /// # Ok(()) }
    /// ```
    pub fn source(&self, key: &str) -> Option<Provenance> {
        // An override that is gone still names the value it left in effect (a refused state).
        if let Some(o) = self.overridden.get(key).or_else(|| self.lapsed.get(key).map(|(o, _)| o)) {
            return Some(Provenance::Override { revision: o.revision, created: o.created, expires: o.expires });
        }
        if let Some(v) = self.values.get(key) {
            if let Some(saved) = self.from_cache {
                return Some(Provenance::Cache { revision: v.revision, saved });
            }
            return Some(Provenance::Bucket { revision: v.revision, created: v.created });
        }
        T::schema().field_for(key)?;
        Some(if self.fallback { Provenance::Fallback } else { Provenance::Default })
    }
}

/// Most links a handle's [`ChangeLog`] keeps (see [`Snapshot::changed_keys`]).
pub(super) const HISTORY: usize = 1024;

/// A number no other snapshot in the process has, so a snapshot can name the one it replaced.
pub(super) fn next_seq() -> u64 {
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Latest revisions that differ from the values in effect (markers, refused values), and the keys
/// whose bucket value is not in effect. Refused values are only looked for when something was
/// refused, so the common path stays O(markers).
fn divergence(view: &View, values: &Values, any_rejected: bool) -> (HashMap<String, u64>, HashSet<String>) {
    let mut overrides = view.markers.clone();
    let mut repair = HashSet::new();
    if any_rejected {
        // Bucket values not in effect (refused), and values in effect the bucket does not hold at
        // that revision (kept after a delete, carried over a reload, or a start-up fallback):
        // expect the bucket's revision (0 = absent) and write them back.
        for (k, v) in view.values.iter() {
            if values.get(k).map(|x| x.revision) != Some(v.revision) {
                overrides.insert(k.to_string(), v.revision);
                repair.insert(k.to_string());
            }
        }
        for (k, v) in values.iter() {
            let latest = view.revision_of(k);
            if latest != v.revision {
                overrides.insert(k.to_string(), latest);
                repair.insert(k.to_string());
            }
        }
    }
    (overrides, repair)
}

#[cfg(test)]
mod tests {
    use super::{ChangeLog, HISTORY};

    fn keys(k: &[&str]) -> std::sync::Arc<[String]> {
        k.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn a_chain_of_links_gives_the_keys_between_two_snapshots() {
        let log = ChangeLog::default();
        log.push(10, 12, keys(&["a"]));
        log.push(12, 13, keys(&["b", "a"]));
        log.push(13, 20, keys(&["c"]));
        assert_eq!(log.between(10, 20), Some(vec!["a".into(), "b".into(), "a".into(), "c".into()]));
        assert_eq!(log.between(12, 13), Some(vec!["b".into(), "a".into()]));
        assert_eq!(log.between(13, 13), Some(vec![]), "no step, no change");
        // Not a snapshot of this chain, or the wrong way round: no answer, so the caller compares.
        assert_eq!(log.between(11, 20), None);
        assert_eq!(log.between(10, 19), None);
        assert_eq!(log.between(20, 10), None);
    }

    #[test]
    fn a_whole_decode_breaks_the_chain() {
        let log = ChangeLog::default();
        log.push(1, 2, keys(&["a"]));
        // Snapshot 3 replaced 2 by a whole decode (no link), then 4 replaced 3.
        log.push(3, 4, keys(&["b"]));
        assert_eq!(log.between(1, 4), None);
        assert_eq!(log.between(3, 4), Some(vec!["b".into()]));
    }

    #[test]
    fn the_oldest_links_are_dropped_past_the_limit() {
        let log = ChangeLog::default();
        let n = HISTORY as u64 + 5;
        for i in 0..n {
            log.push(i, i + 1, keys(&["k"]));
        }
        assert_eq!(log.between(0, n), None, "the first links are gone");
        assert_eq!(log.between(5, n).map(|k| k.len()), Some(HISTORY));
    }
}
