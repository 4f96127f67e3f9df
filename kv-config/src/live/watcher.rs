//! The watcher task: applies entries to the view, swaps a snapshot once per caught-up burst, and
//! never trusts silence. A burst of a few keys is decoded field by field into a copy of the config
//! in effect (its cost is the change's, not the config's); a large burst, a refused value or a
//! reloaded bucket takes the whole decode with per-key fallback. When the watch has been quiet for a heartbeat it asks the server (a
//! [`probe`](crate::store::Bucket::probe)) whether anything newer exists: no answer marks the
//! handle stale, a newer entry left undelivered re-creates the watch from the last applied
//! revision + 1, and a replaced bucket (deleted and created again, or a wiped store) is reloaded
//! from scratch. NATS's own clients re-create ordered consumers the same way; async-nats's can go
//! silent for good after a cluster failover, with no error and no end of stream.

use std::sync::{Arc, Weak};
use std::time::{Duration, Instant, SystemTime};

use futures_util::{FutureExt, StreamExt};

use super::snapshot::HISTORY;
use super::{Applied, Shared, Snapshot, Stale, StaleReason, State};
use crate::config::{apply_changes, KvConfig};
use crate::feed::{catch_up, watch_initial, CatchUp, BATCH_SETTLE};
use crate::store::{Bucket, Entry, Probe, StoreError, StoreErrorKind, Watch, WatchStart};
use crate::view::{decode_view, unknown_keys, Dirty, View};

/// What the loop waits for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Waiting {
    /// The next entry; probe after a quiet heartbeat.
    Quiet,
    /// The rest of an atomic batch, until this deadline (set by the batch's first entry, so a
    /// stream of batches cannot postpone the swap for ever).
    Batch(Instant),
    /// A probe saw this revision undelivered: look again soon, re-create the watch if still missing.
    Suspect(u64),
}

/// On a busy bucket the watch is never quiet; the server is still asked every this many
/// heartbeats, so a replaced bucket is noticed even while entries flow.
const BUSY_CHECK_EVERY: u32 = 4;

/// The watcher task. Holds only a weak reference while it waits, so dropping the last handle
/// ends it.
pub(super) async fn run<T: KvConfig>(weak: Weak<Shared<T>>, mut watch: Watch, bucket: Arc<dyn Bucket>, pattern: String) {
    let Some(heartbeat) = weak.upgrade().map(|s| s.options.heartbeat) else { return };
    let mut waiting = Waiting::Quiet;
    let mut last_check = Instant::now();
    loop {
        let wait = match waiting {
            Waiting::Quiet => heartbeat,
            Waiting::Batch(until) => until.saturating_duration_since(Instant::now()),
            Waiting::Suspect(_) => (heartbeat / 4).max(BATCH_SETTLE),
        };
        // A panic inside the client's stream (seen when a closed client's ordered consumer is
        // polled again) ends this watch, not the watcher: a new one is made below.
        let item = if wait.is_zero() {
            Err(())
        } else {
            tokio::time::timeout(wait, std::panic::AssertUnwindSafe(watch.next()).catch_unwind()).await.map_err(|_| ())
        };
        let Some(shared) = weak.upgrade() else { return };
        match item {
            Ok(Ok(Some(Ok(entry)))) => {
                waiting = match (shared.on_entry(&entry), waiting) {
                    (CatchUp::Settle, Waiting::Batch(until)) => Waiting::Batch(until),
                    (CatchUp::Settle, _) => Waiting::Batch(Instant::now() + BATCH_SETTLE),
                    (_, Waiting::Suspect(rev)) if entry.revision < rev => Waiting::Suspect(rev),
                    _ => Waiting::Quiet,
                };
                if waiting == Waiting::Quiet && last_check.elapsed() >= heartbeat * BUSY_CHECK_EVERY {
                    drop(shared);
                    last_check = Instant::now();
                    (watch, waiting) = checked(&weak, &bucket, &pattern, heartbeat, waiting, watch).await;
                }
            }
            Ok(Ok(Some(Err(e)))) => {
                tracing::debug!(bucket = %shared.source.bucket, error = %e, "watch error; still watching");
                shared.state().status.last_error = Some(e.to_string());
            }
            Ok(Ok(None)) | Ok(Err(_)) => {
                // The watch ended (it should not) or its stream panicked: start a new one where
                // this one stopped.
                drop(shared);
                tokio::time::sleep(BATCH_SETTLE).await;
                watch = restart(&weak, &*bucket, &pattern, watch).await;
                waiting = Waiting::Quiet;
            }
            Err(()) if matches!(waiting, Waiting::Batch(_)) => {
                shared.finish_burst();
                waiting = Waiting::Quiet;
            }
            Err(()) => {
                drop(shared);
                last_check = Instant::now();
                (watch, waiting) = checked(&weak, &bucket, &pattern, heartbeat, waiting, watch).await;
            }
        }
    }
}

/// Runs a [`check`] and acts on it: a new watch when the old one stalled, a reload when the
/// bucket was replaced.
async fn checked<T: KvConfig>(
    weak: &Weak<Shared<T>>,
    bucket: &Arc<dyn Bucket>,
    pattern: &str,
    heartbeat: Duration,
    waiting: Waiting,
    watch: Watch,
) -> (Watch, Waiting) {
    match check(weak, &**bucket, pattern, heartbeat, waiting).await {
        Check::Fine => (watch, Waiting::Quiet),
        Check::Suspect(rev) => (watch, Waiting::Suspect(rev)),
        Check::Stalled => (restart(weak, &**bucket, pattern, watch).await, Waiting::Quiet),
        Check::Replaced => match reload(weak, &**bucket).await {
            Some(w) => (w, Waiting::Quiet),
            None => (watch, Waiting::Quiet),
        },
    }
}

/// How many probes in a row must report a last revision below the one applied before the bucket
/// counts as replaced.
const BEHIND_PROBES: u32 = 3;

/// What a quiet-time check found.
enum Check {
    Fine,
    Suspect(u64),
    Stalled,
    Replaced,
}

/// Asks the server whether the handle is current (see the module docs).
async fn check<T: KvConfig>(weak: &Weak<Shared<T>>, bucket: &dyn Bucket, pattern: &str, heartbeat: Duration, waiting: Waiting) -> Check {
    let Some((seen, incarnation)) = weak.upgrade().map(|s| {
        let st = s.state();
        (st.view.seen, st.incarnation)
    }) else {
        return Check::Fine;
    };
    if !bucket.is_connected() {
        if let Some(s) = weak.upgrade() {
            s.mark_stale(StaleReason::Disconnected, None);
        }
        return Check::Fine;
    }
    // Looking for the next matching entry is a wildcard search on the server (milliseconds on a
    // bucket of 50,000 keys, while this loop delivers nothing): only on the second look, when a
    // newer revision seen by the first is still not delivered.
    let after = if matches!(waiting, Waiting::Suspect(rev) if seen < rev) { seen } else { u64::MAX };
    let probe = tokio::time::timeout(heartbeat, bucket.probe(pattern, after)).await;
    let Some(shared) = weak.upgrade() else { return Check::Fine };
    match probe {
        Err(_) => {
            let err = StoreError::new(StoreErrorKind::Timeout)
                .bucket(bucket.name())
                .detail(format!("no answer to a liveness probe within {heartbeat:?}"));
            shared.mark_stale(StaleReason::NoResponse, Some(err.to_string()));
            Check::Fine
        }
        Ok(Err(e)) if *e.kind() == StoreErrorKind::NotFound => {
            shared.mark_stale(StaleReason::BucketMissing, Some(e.to_string()));
            Check::Fine
        }
        Ok(Err(e)) => {
            shared.mark_stale(StaleReason::NoResponse, Some(e.to_string()));
            Check::Fine
        }
        Ok(Ok(Probe { incarnation: now, last_revision, next, .. })) => {
            // A new incarnation is a replaced bucket. A last revision below ours with the same
            // incarnation may be a new cluster leader still catching up: only if it persists.
            let behind = {
                let mut st = shared.state();
                st.behind_probes = if last_revision < seen { st.behind_probes + 1 } else { 0 };
                st.behind_probes >= BEHIND_PROBES
            };
            let replaced = incarnation.is_some_and(|i| i != now) || behind;
            let missing = shared.state().status.stale.is_some_and(|s| s.reason == StaleReason::BucketMissing);
            if replaced || missing {
                return Check::Replaced;
            }
            shared.state().incarnation = Some(now);
            match next {
                // Something newer exists; it may be in flight, or outside the watched prefix.
                None if after == u64::MAX && last_revision > seen => Check::Suspect(last_revision),
                None => {
                    reconcile_overrides(&shared, bucket, last_revision > seen).await;
                    // Also applies a burst whose remaining entries were removed before delivery.
                    shared.finish_burst();
                    shared.mark_heard();
                    Check::Fine
                }
                Some(rev) if matches!(waiting, Waiting::Suspect(s) if s <= rev) => {
                    tracing::warn!(bucket = bucket.name(), after = seen, undelivered = rev, "the watch left a newer entry undelivered; re-creating it");
                    shared.mark_stale(StaleReason::WatchStalled, None);
                    Check::Stalled
                }
                Some(rev) => Check::Suspect(rev),
            }
        }
    }
}

/// Overrides past their expiry whose expiry marker never arrived: the server writes the marker
/// with the bucket's marker TTL, so a watch re-created after a failover or a reconnect can miss
/// it for good. Asks the server about each such override (and, when entries vanished unseen,
/// about those without a known expiry) and drops the ones it no longer holds; the next swap
/// brings the keys' own values back.
async fn reconcile_overrides<T: KvConfig>(shared: &Shared<T>, bucket: &dyn Bucket, vanished: bool) {
    let now = SystemTime::now();
    let due: Vec<(String, u64)> = {
        let st = shared.state();
        st.view
            .overrides
            .iter()
            .filter(|(_, o)| o.expires.map_or(vanished, |e| e <= now))
            .map(|(k, o)| (k.clone(), o.value.revision))
            .collect()
    };
    for (key, revision) in due {
        let full = format!("{}{}{key}", shared.source.prefix, crate::view::OVERRIDE_PREFIX);
        match bucket.entry(&full).await {
            Ok(Some(e)) if e.is_put() && e.revision >= revision => {}
            Ok(latest) => {
                tracing::info!(bucket = bucket.name(), key = %full, "override expired without a marker reaching the watch; dropped");
                shared.state().view.drop_override(&key, revision, latest.map(|e| e.revision));
            }
            Err(_) => return,
        }
    }
}

/// A new watch from the last applied revision + 1 (the old one is dropped, and with it its
/// consumer). Keeps trying, a heartbeat apart, until the server answers.
async fn restart<T: KvConfig>(weak: &Weak<Shared<T>>, bucket: &dyn Bucket, pattern: &str, old: Watch) -> Watch {
    drop(old);
    loop {
        let Some((from, heartbeat)) = weak.upgrade().map(|s| (s.state().view.seen + 1, s.options.heartbeat)) else {
            return Watch::new(0, futures_util::stream::pending());
        };
        match tokio::time::timeout(heartbeat * 2, bucket.watch(pattern, WatchStart::FromRevision(from))).await {
            Ok(Ok(w)) => {
                if let Some(s) = weak.upgrade() {
                    s.state().status.watch_restarts += 1;
                    tracing::info!(bucket = bucket.name(), from, "watch re-created");
                }
                return w;
            }
            Ok(Err(e)) => {
                if let Some(s) = weak.upgrade() {
                    let reason = if *e.kind() == StoreErrorKind::NotFound { StaleReason::BucketMissing } else { StaleReason::NoResponse };
                    s.mark_stale(reason, Some(e.to_string()));
                    if reason == StaleReason::BucketMissing {
                        return Watch::new(0, futures_util::stream::pending());
                    }
                }
            }
            Err(_) => {
                if let Some(s) = weak.upgrade() {
                    s.mark_stale(StaleReason::NoResponse, Some(format!("bucket `{}`: re-creating the watch timed out", bucket.name())));
                }
            }
        }
        tokio::time::sleep(heartbeat).await;
    }
}

/// The bucket was replaced: read it again from scratch (its revisions start again at 1) and
/// apply it as a new epoch. `None` when it cannot be read yet; the next check tries again.
async fn reload<T: KvConfig>(weak: &Weak<Shared<T>>, bucket: &dyn Bucket) -> Option<Watch> {
    let (prefix, timeout) = weak.upgrade().map(|s| (s.source.prefix.clone(), s.options.load_timeout))?;
    let incarnation = bucket.probe(">", u64::MAX).await.ok().map(|p| p.incarnation);
    match watch_initial(bucket, &prefix, timeout).await {
        Ok((watch, view)) => {
            let shared = weak.upgrade()?;
            tracing::warn!(bucket = bucket.name(), "the bucket was replaced; reloaded the config from it");
            shared.replace_view(view, incarnation);
            Some(watch)
        }
        Err(e) => {
            if let Some(s) = weak.upgrade() {
                s.mark_stale(StaleReason::BucketMissing, Some(e.to_string()));
            }
            None
        }
    }
}

impl<T: KvConfig> Shared<T> {
    /// Records an entry; swaps a snapshot when the burst is complete.
    fn on_entry(&self, entry: &Entry) -> CatchUp {
        let mut st = self.state();
        st.view.apply(&self.source.prefix, entry);
        st.last_heard = Instant::now();
        st.status.last_heard = SystemTime::now();
        if st.status.stale.is_some_and(|s| s.reason != StaleReason::BucketMissing) && self.bucket.is_connected() {
            st.status.stale = None;
        }
        let at = catch_up(entry);
        if at == CatchUp::Yes {
            self.apply_burst(st);
        }
        at
    }

    /// The rest of a batch did not come within the settle time: its commit lies outside the
    /// watched prefix. Apply what arrived.
    fn finish_burst(&self) {
        let st = self.state();
        self.apply_burst(st);
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
        if current.fallback || current.epoch != st.epoch || !current.repair.is_empty() || !st.status.rejected.is_empty() {
            return false;
        }
        let values = st.view.effective();
        let mut config = current.config.clone();
        // apply_changes never panics: validators and Deserialize impls run under catch_unwind.
        let Some(unknown) = apply_changes::<T>(&mut config, &values, keys, &self.source) else {
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
        let mut snapshot = Snapshot::new(config, values, &st.view, false, st.epoch);
        let mut history = current.history.clone();
        if history.len() >= HISTORY {
            history.pop_front();
        }
        history.push_back((current.seq, delta.into()));
        snapshot.history = history;
        self.snapshot.store(Arc::new(snapshot));
        if changed {
            st.status.swaps += 1;
            self.swaps.send_modify(|n| *n += 1);
        }
        true
    }

    /// Decodes the whole config, keeping the last good value of every refused key.
    fn decode_whole(&self, st: &mut State) {
        let seen = st.view.seen;
        let current = self.snapshot.load_full();
        // decode_view never panics: validators and Deserialize impls run under catch_unwind.
        match decode_view::<T>(&st.view, Some(&current.values), &self.source) {
            Ok(decoded) => {
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
                // A dirty view with nothing refused always changes the values in effect.
                let changed = !any_rejected || decoded.values != current.values;
                st.status.rejected = decoded.rejected;
                st.status.revision = seen;
                let snapshot = Snapshot::new(decoded.config, decoded.values, &st.view, any_rejected, st.epoch);
                self.snapshot.store(Arc::new(snapshot));
                if changed {
                    st.status.swaps += 1;
                    self.swaps.send_modify(|n| *n += 1);
                }
            }
            Err(e) => {
                tracing::warn!(bucket = %self.source.bucket, revision = seen, error = %e, "change refused; keeping the last good snapshot");
                st.status.rejected = e.errors().to_vec();
                st.status.last_error = Some(e.to_string());
                // Same config, but writers must now expect the refused revisions (to repair them).
                let mut snapshot = Snapshot::new(current.config.clone(), current.values.clone(), &st.view, true, st.epoch);
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
        st.behind_probes = 0;
        st.status.reloads += 1;
        st.status.stale = None;
        st.status.last_heard = SystemTime::now();
        st.last_heard = Instant::now();
        self.apply_burst(st);
    }

    /// The server confirmed the handle is current.
    fn mark_heard(&self) {
        let mut st = self.state();
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
                tracing::warn!(bucket = %self.source.bucket, %reason, error = error.as_deref().unwrap_or(""), "the config may be stale");
                st.status.stale = Some(Stale { since: SystemTime::now(), reason });
            }
        }
        if let Some(error) = error {
            st.status.last_error = Some(error);
        }
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
