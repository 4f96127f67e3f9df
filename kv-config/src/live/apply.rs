//! A handle's side of its hub ([`Member`]): applies the entries under its prefix to its view and
//! swaps a snapshot once per caught-up burst. A burst of a few keys is decoded field by field
//! into the config the last change retired (a spare, once no reader holds it) or else into a copy
//! of the config in effect: its cost is the change's, not the config's. A large burst, a refused
//! value or a reloaded bucket takes the whole decode with per-key fallback. A handle's own lone
//! write is applied here too, by the writer once the watch delivered it, when nothing else can
//! lie before it ([`Shared::apply_own`]); the watcher's handling of that delivery then at most
//! stamps the server's time.

use std::borrow::Cow;
use std::sync::{Arc, MutexGuard, PoisonError};
use std::time::{Instant, SystemTime};

use super::hub::Member;
use super::spare::{drop_later, free_bytes, Spares, SPARE_MIN_KEYS};
use super::{Applied, Shared, Snapshot, Stale, StaleReason, State};
use crate::config::{apply_changes, KvConfig};
use crate::store::Entry;
use crate::values::{is_elided, Lookup, Resolved};
use crate::view::{decode_view, override_target, unknown_keys, Decoding, Dirty, View};

impl<T: KvConfig> Member for Shared<T> {
    fn on_entry(&self, entry: &Entry) {
        let mut st = self.state();
        if let Some(target) = override_target(&self.source.prefix, &entry.key) {
            self.restore_bytes(&mut st, target);
        }
        st.view.apply(&self.source.prefix, entry);
        st.last_heard = Instant::now();
        st.status.last_heard = SystemTime::now();
        if st.status.stale.is_some_and(|s| s.reason != StaleReason::BucketMissing) && self.bucket.is_connected() {
            st.status.stale = None;
        }
    }

    fn caught_up(&self, seen: u64) {
        let mut st = self.state();
        st.view.seen = st.view.seen.max(seen);
        st.last_heard = Instant::now();
        st.status.last_heard = SystemTime::now();
        self.apply_burst(st);
    }

    fn heard(&self, incarnation: Option<u64>) {
        let mut st = self.state();
        if incarnation.is_some() {
            st.incarnation = incarnation;
        }
        st.last_heard = Instant::now();
        st.status.last_heard = SystemTime::now();
        if self.bucket.is_connected() {
            st.status.stale = None;
        }
    }

    /// Records why the snapshot may be behind (kept from the first time it was noticed).
    fn mark_stale(&self, reason: StaleReason, error: Option<String>) {
        let mut st = self.state();
        match &mut st.status.stale {
            Some(stale) if stale.reason == reason => {}
            Some(stale) => stale.reason = reason,
            None => {
                tracing::warn!(bucket = %self.source.bucket, prefix = %self.source.prefix, %reason, error = error.as_deref().unwrap_or(""), "the config may be stale");
                st.status.stale = Some(Stale { since: SystemTime::now(), reason });
            }
        }
        if let Some(error) = error {
            st.status.last_error = Some(error);
        }
    }

    fn note_error(&self, error: String) {
        self.state().status.last_error = Some(error);
    }

    fn watch_restarted(&self) {
        self.state().status.watch_restarts += 1;
    }

    fn replace(&self, view: View, incarnation: Option<u64>) {
        self.replace_view(view, incarnation);
    }

    fn overrides_due(&self, vanished: bool) -> Vec<(String, u64)> {
        let now = SystemTime::now();
        let st = self.state();
        st.view
            .overrides
            .iter()
            .filter(|(_, o)| o.expires.map_or(vanished, |e| e <= now))
            .map(|(k, o)| (k.clone(), o.value.revision))
            .collect()
    }

    fn drop_override(&self, key: &str, revision: u64, latest: Option<u64>) {
        self.state().view.drop_override(key, revision, latest);
    }

    fn oldest(&self) -> Option<u64> {
        let st = self.state();
        let values = st.view.values.iter().map(|(_, v)| v.revision);
        values.chain(st.view.overrides.values().map(|o| o.value.revision)).min()
    }
}

impl<T: KvConfig> Shared<T> {
    /// This handle's own single write, committed at `entry.revision` in `epoch` and delivered by
    /// the watch, applied by the writer without waiting for the watcher to finish its burst, if
    /// the snapshot holds every revision before it
    /// (the last burst applied ended at `revision - 1`, and nothing was delivered since): then no
    /// other write can lie between, and the bucket's state at `revision` is the snapshot's plus
    /// this entry. The watch's delivery of it later only fills in the server's timestamp.
    /// `false` (nothing done) otherwise: the caller waits for the watch. Never on a snapshot from
    /// the cache file: the cache leaves secrets and overrides out, and may be of another
    /// incarnation of the bucket, so its revision says nothing about the bucket's state.
    pub(super) fn apply_own(&self, epoch: u64, entry: &Entry) -> bool {
        let mut st = self.state();
        // `seen_revision == view.seen` (no entry delivered since the last burst applied) is
        // defensive: a view that holds every revision up to `revision - 1` is a state the bucket
        // had even mid-burst, as an atomic batch cannot end after `revision - 1` with this write
        // at `revision`.
        let next = st.view.seen.checked_add(1) == Some(entry.revision);
        if st.epoch != epoch || st.status.seen_revision != st.view.seen || !next || self.snapshot.load().from_cache.is_some() {
            return false;
        }
        st.view.apply_own(&self.source.prefix, entry);
        self.apply_burst(st);
        true
    }

    /// Caught up: swap once for the whole burst, so a multi-key write is never seen half-done.
    fn apply_burst(&self, mut st: std::sync::MutexGuard<'_, State>) {
        let seen = st.view.seen;
        st.status.seen_revision = seen;
        match st.view.take_dirty() {
            Dirty::No => {}
            Dirty::Keys(keys) if self.apply_changed(&mut st, &keys) => {}
            _ => self.decode_whole(&mut st),
        }
        let applied = Applied { epoch: st.epoch, seen };
        drop(st);
        self.applied.send_replace(applied);
    }

    /// The common case, at the cost of the change: decodes only the fields of the changed `keys`
    /// into a copy of the config in effect. `false` (nothing swapped) when the last snapshot is
    /// not a clean decode of the bucket or anything is refused: [`decode_whole`](Self::decode_whole)
    /// then does the full decode with per-key fallback and the complete error report.
    fn apply_changed(&self, st: &mut State, keys: &[String]) -> bool {
        let current = self.snapshot.load_full();
        if current.fallback || current.epoch != st.epoch || !current.repair.is_empty() || !current.lapsed.is_empty() || !st.status.rejected.is_empty() {
            return false;
        }
        let values = st.view.effective();
        // The next snapshot, built in place: a plain struct of 50,000 `String` fields is 1.2 MB
        // inline, and each move of it costs as much as the change.
        let (mut next, apply_keys) = match self.spares().take(&current, keys) {
            Some((spare, keys)) => (spare, Cow::Owned(keys)),
            None => (Arc::new(Snapshot::clone(&current)), Cow::Borrowed(keys)),
        };
        let Some(snapshot) = Arc::get_mut(&mut next) else {
            return false; // not reached: a fresh copy, or a spare nobody else holds
        };
        // apply_changes never panics: validators and Deserialize impls run under catch_unwind.
        // A nested map entry's apply may read keys that did not change: elided ones are
        // re-encoded from the config in effect.
        let lookup = Resolved::new(&values, Some(&current.config));
        let Some(unknown) = apply_changes::<T>(&mut snapshot.config, &lookup, &apply_keys, &self.source) else {
            drop_later(vec![next]);
            return false;
        };
        let mut delta: Vec<String> = keys
            .iter()
            .filter(|k| current.values.get(k).map(|v| v.revision) != values.get(k).map(|v| v.revision))
            .cloned()
            .collect();
        delta.sort_unstable();
        self.note_unknown_changed(st, &unknown);
        st.status.revision = st.view.seen;
        let changed = !delta.is_empty();
        let mut meta = Snapshot::new((), values, &st.view, false, st.epoch);
        self.changes.push(current.seq, meta.seq, delta.into());
        meta.changes = Some(self.changes.clone());
        let upto = meta.seq;
        snapshot.replace_meta(meta);
        drop(current);
        let retired = self.snapshot.swap(next);
        if self.keeps_spare(st) {
            self.spares().retire(retired, keys, upto);
        }
        if changed {
            st.status.swaps += 1;
        }
        // Also without a change in effect (a timestamp the watch brought for an own write, a
        // value under an override): the cache writer saves the new snapshot; subscribers skip it.
        self.swaps.send_modify(|n| *n += 1);
        true
    }

    /// Gives the view's values back their bytes if `key`'s were dropped ([`View::elide`]), before
    /// an override of it arrives: its field in the config then holds the override's value, so the
    /// config could no longer re-encode the key's own value (which a write checks and the cache
    /// keeps). All of them at once: re-encoding one costs encoding the whole config, and overrides
    /// tend to come in groups.
    fn restore_bytes(&self, st: &mut State, key: &str) {
        if st.view.values.get(key).is_some_and(is_elided) {
            let current = self.snapshot.load_full();
            self.restore_all_bytes(st, &current.config);
        }
    }

    /// Whether to keep the snapshot a change retires as the next change's spare.
    fn keeps_spare(&self, st: &State) -> bool {
        self.options.spare.unwrap_or(st.view.values.len() >= SPARE_MIN_KEYS)
    }

    fn spares(&self) -> MutexGuard<'_, Spares<T>> {
        self.spares.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Gives every value of the view whose bytes were dropped ([`View::elide`]) its bytes back,
    /// re-encoded from `config` (the config in effect). While a refusal stands every change is
    /// decoded whole, and each such decode would re-encode the whole config to read them.
    fn restore_all_bytes(&self, st: &mut State, config: &T) {
        let restored: Vec<(String, crate::config::RawValue)> = {
            let resolved = Resolved::new(&st.view.values, Some(config));
            st.view
                .values
                .iter()
                .filter(|(_, v)| is_elided(v))
                .filter_map(|(k, _)| Lookup::get(&resolved, k).filter(|v| !is_elided(v)).map(|v| (k.to_string(), v.clone())))
                .collect()
        };
        for (k, v) in restored {
            st.view.values.insert(&k, v);
        }
        st.view.holds_elided = false;
    }

    /// Decodes the whole config, keeping the last good value of every refused key.
    fn decode_whole(&self, st: &mut State) {
        // A whole decode starts a new chain: the spares would never be used.
        self.spares().clear();
        let seen = st.view.seen;
        let current = self.snapshot.load_full();
        // decode_view never panics: validators and Deserialize impls run under catch_unwind.
        // A fresh view (after a reload) also drops the bytes its new config re-encodes.
        let how = Decoding { elided_from: Some(&current.config), find_elidable: st.view.values.is_unshared() };
        match decode_view::<T>(&st.view, Some(&current.values), &self.source, how) {
            Ok(decoded) => {
                if !decoded.rejected.is_empty() && st.view.holds_elided {
                    self.restore_all_bytes(st, &current.config);
                }
                for e in &decoded.rejected {
                    tracing::warn!(bucket = %e.bucket, key = %e.key, revision = ?e.revision, problem = %e.problem, "value refused; keeping the last good value");
                }
                if let Some(first) = decoded.rejected.first() {
                    st.status.last_error = Some(first.to_string());
                }
                if decoded.has_unknown || !st.status.unknown_keys.is_empty() {
                    self.note_unknown(st);
                }
                let any_rejected = !decoded.rejected.is_empty();
                // A dirty view with nothing refused always changes the values in effect (a
                // timestamp the watch brought for an own write counts as a change here).
                let changed = !any_rejected || decoded.values != current.values;
                st.status.rejected = decoded.rejected;
                st.status.revision = seen;
                let values = if any_rejected {
                    decoded.values
                } else {
                    let (values, dropped) = st.view.elide(decoded.values, &decoded.elidable, &decoded.config);
                    free_bytes(dropped);
                    values
                };
                let mut snapshot = Snapshot::new(decoded.config, values, &st.view, any_rejected, st.epoch);
                if any_rejected {
                    snapshot.note_lapsed(&current, &st.view);
                }
                self.snapshot.store(Arc::new(snapshot));
                if changed {
                    st.status.swaps += 1;
                    self.swaps.send_modify(|n| *n += 1);
                }
            }
            Err(e) => {
                if st.view.holds_elided {
                    self.restore_all_bytes(st, &current.config);
                }
                tracing::warn!(bucket = %self.source.bucket, revision = seen, error = %e, "change refused; keeping the last good snapshot");
                st.status.rejected = e.errors().to_vec();
                st.status.last_error = Some(e.to_string());
                // Same config, but writers must now expect the refused revisions (to repair them).
                let mut snapshot = Snapshot::new(current.config.clone(), current.values.clone(), &st.view, true, st.epoch);
                snapshot.note_lapsed(&current, &st.view);
                snapshot.fallback = current.fallback;
                self.snapshot.store(Arc::new(snapshot));
            }
        }
    }

    /// Starts a new epoch from a fresh view of a replaced bucket.
    pub(super) fn replace_view(&self, view: View, incarnation: Option<u64>) {
        let mut st = self.state();
        st.view = view;
        st.view.mark_dirty();
        st.epoch += 1;
        st.incarnation = incarnation;
        st.status.reloads += 1;
        st.status.stale = None;
        st.status.last_heard = SystemTime::now();
        st.last_heard = Instant::now();
        self.apply_burst(st);
    }

    /// [`note_unknown`](Self::note_unknown) for changed keys that no field took, at their cost
    /// (without building the schema's key set: tens of milliseconds for 50,000 fields).
    fn note_unknown_changed(&self, st: &mut State, unknown: &[String]) {
        for key in unknown {
            let at = st.status.unknown_keys.binary_search(key);
            match (st.view.values.contains_key(key), at) {
                (true, Err(i)) => {
                    if st.warned_unknown.insert(key.clone()) {
                        tracing::warn!(bucket = %self.source.bucket, key = %format!("{}{key}", self.source.prefix), "key not in the schema of `{}`; ignored", T::__KV_NAME);
                    }
                    st.status.unknown_keys.insert(i, key.clone());
                }
                (false, Ok(i)) => {
                    st.status.unknown_keys.remove(i);
                }
                _ => {}
            }
        }
    }

    /// Records (and warns once about) keys in the bucket that the schema does not know.
    pub(super) fn note_unknown(&self, st: &mut State) {
        let unknown = unknown_keys(&st.view.values, self.known());
        for key in &unknown {
            if st.warned_unknown.insert(key.clone()) {
                tracing::warn!(bucket = %self.source.bucket, key = %format!("{}{key}", self.source.prefix), "key not in the schema of `{}`; ignored", T::__KV_NAME);
            }
        }
        st.status.unknown_keys = unknown;
    }
}
