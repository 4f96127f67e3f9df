//! The write path: validate, diff against the bucket (not only against the config in effect),
//! compare-and-swap every written key in one atomic batch, retry conflicts after the next commit or a short random pause,
//! and return `Ok` only once this handle's snapshot holds the write. No write goes out while the
//! handle knows its bucket was deleted and has not read it again ([`Shared::check_bucket_present`]):
//! one created again under the same name starts its revisions at 1 and could take a write checked
//! against the old one's. A lone write, when the snapshot held every revision before it, is
//! applied by the writer ([`Shared::apply_own`]): on its commit where the server announces
//! deletions to the watcher (so the handle knows of one within milliseconds), else once the watch
//! delivered it, which proves it went to the bucket the handle watches. Any other write returns
//! once the watcher applied it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;

use super::{Applied, LiveConfig, Shared, Snapshot};
use crate::config::{KvConfig, RawValue, RawValues};
use crate::error::{Error, Result};
use crate::store::{Entry, Operation, StoreErrorKind, WriteKind, WriteOp, AUTHOR_HEADER};
use crate::json_schema::JSON_SCHEMA_KEY;
use crate::view::{GUARD_KEY, SCHEMA_KEY};

/// An encoded config as raw values (revision 0: not from the bucket), for validation by decoding.
pub(super) fn to_raw(encoded: &crate::Encoded) -> RawValues {
    encoded.iter().map(|(k, v)| (k.clone(), RawValue { value: v.clone(), revision: 0, created: None })).collect()
}

/// The entry a lone put or delete will be once committed (its revision still 0), for
/// [`Shared::apply_own`]; `None` for a batch (its entries' revisions are not all known on commit).
fn own_entry(ops: &[WriteOp]) -> Option<Entry> {
    let [op] = ops else { return None };
    let (value, operation) = match &op.kind {
        WriteKind::Put(value) => (value.clone(), Operation::Put),
        WriteKind::Delete => (Bytes::new(), Operation::Delete),
        WriteKind::Purge => return None,
    };
    let mut headers = op.headers.clone();
    headers.sort();
    Some(Entry {
        bucket: crate::store::unnamed(),
        key: op.key.clone(),
        value,
        revision: 0,
        delta: 0,
        created: std::time::UNIX_EPOCH,
        operation,
        headers,
        batch_continues: false,
    })
}

/// The longest pause between conflicting attempts when nobody else writes meanwhile (a write by
/// anyone cuts it short, see [`Shared::after_conflict`]). Each pause is a random time up to it,
/// so writers that lost the same race do not all retry at once.
///
/// It does not grow. Retries are paced by the commits that wake them, not by this pause: it
/// only runs out when the bucket went quiet, and then a retry is what lets a loser win. A
/// pause that doubled up to 32 ms (the earlier default) left losers asleep in exactly that
/// case, after the writer that kept winning stopped: 4 contending writers reached a median of
/// 0.93x of raw async-nats writers' throughput with it, 0.96x with this one, over twelve runs
/// ("Contention, run Y" in BENCHMARKS.md).
const RETRY_PAUSE: Duration = Duration::from_micros(500);

impl<T: KvConfig> Shared<T> {
    /// [`Error::UnknownKey`] unless `key` (relative to the prefix) is one of the schema's keys.
    pub(super) fn check_known(&self, key: &str) -> Result<()> {
        if self.known().contains(key) {
            return Ok(());
        }
        Err(Error::UnknownKey { key: crate::redact::bound(key, 120), type_name: T::__KV_NAME.to_string(), known: self.known().listing() })
    }

    /// After a lost revision race: refreshes (waits until the watcher applied `target`, the
    /// revision lost to), then waits for the next write anyone makes or a random pause of up to [`RETRY_PAUSE`],
    /// whichever comes first. The writer that just won learns the new revision first and writes
    /// again at once; a loser that slept a fixed time would lose to it again and again (capture).
    /// Woken by the next commit, it starts level with that commit's author. "Next" is past
    /// everything applied by now, not past `target`: an atomic batch (a guard key) or other
    /// keys' writes may already have moved the watcher on.
    pub(super) async fn after_conflict(&self, epoch: u64, target: u64) {
        self.wait_applied(epoch, target).await;
        let applied = self.applied.borrow().seen;
        tokio::select! {
            () = tokio::time::sleep(Duration::from_nanos(fastrand::u64(0..=RETRY_PAUSE.as_nanos() as u64))) => {}
            _ = self.wait_applied(epoch, applied.max(target).saturating_add(1)) => {}
        }
    }

    /// Refuses a write while this handle knows its bucket is gone (deleted, as the server announced
    /// or a probe found) and has not read it again: one created again under the same name starts
    /// its revisions at 1, and could take a write checked against the old bucket's revisions.
    pub(super) fn check_bucket_present(&self) -> Result<()> {
        let st = self.state();
        if st.status.stale.as_ref().is_some_and(|s| s.reason == super::StaleReason::BucketMissing) {
            return Err(Error::Store(crate::store::StoreError::new(StoreErrorKind::NotFound).bucket(self.source.bucket.clone()).detail(
                "the bucket was deleted (it may have been created again); this handle writes again once it has read the bucket anew",
            )));
        }
        Ok(())
    }

    /// Whether the server announces the bucket's deletion to this handle's watcher.
    pub(super) fn announced(&self) -> bool {
        self.hub.get().is_some_and(|h| h.announced())
    }

    /// Waits until the watch delivered `revision` in this epoch ([`Hub::delivered`](super::hub::Hub)),
    /// within the write timeout; `false` on timeout or when the bucket was replaced meanwhile.
    pub(super) async fn delivered(&self, epoch: u64, revision: u64) -> bool {
        let Some(hub) = self.hub.get() else { return false };
        hub.delivered(revision, self.options.write_timeout).await && self.state().epoch == epoch
    }

    /// Waits until the watcher has applied `revision` of this epoch; `false` on timeout or when
    /// the bucket was replaced meanwhile.
    pub(super) async fn wait_applied(&self, epoch: u64, revision: u64) -> bool {
        let mut rx = self.applied.subscribe();
        let reached = tokio::time::timeout(
            self.options.write_timeout,
            rx.wait_for(|a: &Applied| a.epoch != epoch || a.seen >= revision),
        )
        .await;
        matches!(reached, Ok(Ok(a)) if a.epoch == epoch)
    }
}

impl<T: KvConfig> LiveConfig<T> {
    /// Changes the config: runs `f` on a copy of the current snapshot, validates the result, and
    /// writes every key whose value in the bucket differs from it (changed keys, and keys whose
    /// bucket value was refused), each checked against the revision the snapshot holds, in one
    /// atomic batch when several keys change. A config with cross-field validators also bumps a
    /// guard key in the same batch, so two concurrent writers can never combine into a config
    /// the validators refuse. On a conflict it refreshes, waits for the next commit or a short
    /// random pause, and runs `f` again, up to
    /// [`Builder::max_attempts`](crate::Builder::max_attempts) times, then returns
    /// [`Error::Conflict`].
    ///
    /// When it returns `Ok`, this handle's [`get`](Self::get) shows the write. What each error
    /// means for the bucket:
    /// - [`Error::Decode`] / [`Error::Encode`] / [`Error::UnknownKey`]: refused before anything was
    ///   sent; the bucket is unchanged.
    /// - [`Error::Conflict`]: every attempt lost a race; nothing of this update was written.
    /// - [`Error::NotInEffect`]: written, but the bucket's resulting state is refused (a value
    ///   another client wrote at the same moment); the last good snapshot stays in effect.
    /// - [`Error::NotObserved`]: written, but this handle's watcher did not see it within the
    ///   write timeout (see [`status`](Self::status) for why).
    /// - [`Error::Store`]: per [`StoreErrorKind`]; `Timeout` means not written (checked),
    ///   `OutcomeUnknown` means the server stayed unreachable and the outcome is not known.
    pub async fn update<F>(&self, mut f: F) -> Result<Arc<Snapshot<T>>>
    where
        F: FnMut(&mut T),
    {
        self.modify(|base| {
            let mut next = base.clone();
            f(&mut next);
            Ok(next)
        })
        .await
    }

    /// Sets one key (relative to the prefix, e.g. `server.port`) to a typed value, with the same
    /// validation, revision check and outcomes as [`update`](Self::update).
    pub async fn set<V: serde::Serialize>(&self, key: &str, value: V) -> Result<Arc<Snapshot<T>>> {
        self.shared.check_known(key)?;
        let bytes = Bytes::from(serde_json::to_vec(&value).map_err(|e| crate::EncodeError { key: key.to_string(), message: e.to_string() })?);
        let source = self.shared.source.clone();
        self.modify(|base| {
            let mut raw = to_raw(&base.encode()?);
            raw.insert(key.to_string(), RawValue { value: bytes.clone(), revision: 0, created: None });
            Ok(T::decode(&raw, &source)?)
        })
        .await
    }

    /// Publishes the schema (keys, types, docs, defaults, secret flags, struct name and crate
    /// version) as JSON under the reserved key `__kvconfig.schema` (after the prefix), for admin
    /// tools, and next to it its JSON Schema ([`KvConfig::json_schema`]) under
    /// [`JSON_SCHEMA_KEY`] (`__kvconfig.json_schema`), for validators and
    /// editors. Only a document that changed is written; both together go in one atomic batch
    /// (on a bucket without atomic writes, one after the other). Returns the latest revision of
    /// the two keys: the new one, or the existing one when nothing changed.
    ///
    /// ```no_run
    /// # use kv_config::{KvConfig, LiveConfig, store::NatsStore};
    /// # #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
    /// # struct App { #[kv(default = 8080)] port: u16 }
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let client = async_nats::connect("nats://127.0.0.1:4222").await?;
    /// let cfg = LiveConfig::<App>::builder(NatsStore::new(client), "app").create_if_missing().start().await?;
    /// let revision = cfg.publish_schema().await?;
    /// assert_eq!(cfg.publish_schema().await?, revision); // unchanged: nothing written
    /// # Ok(()) }
    /// ```
    pub async fn publish_schema(&self) -> Result<u64> {
        let prefix = &self.shared.source.prefix;
        let schema = T::schema();
        let encode = |key: &str, doc: Result<Vec<u8>, serde_json::Error>| {
            let key = format!("{prefix}{key}");
            doc.map(|json| (key.clone(), json)).map_err(|e| crate::EncodeError { key, message: e.to_string() })
        };
        let docs = [
            encode(JSON_SCHEMA_KEY, serde_json::to_vec(&schema.json_schema()))?,
            encode(SCHEMA_KEY, serde_json::to_vec(&schema))?,
        ];
        let bucket = &self.shared.bucket;
        let (mut ops, mut latest) = (Vec::new(), 0);
        for (key, json) in docs {
            match bucket.entry(&key).await? {
                Some(e) if e.is_put() && e.value == json => latest = latest.max(e.revision),
                _ => ops.push(WriteOp::put(key, json.into())),
            }
        }
        if ops.len() > 1 {
            match bucket.write_atomic(ops.clone()).await {
                Ok(revision) => return Ok(revision),
                Err(e) if *e.kind() == StoreErrorKind::AtomicWritesDisabled => {
                    tracing::debug!(bucket = %self.shared.source.bucket, "no atomic writes on this bucket; publishing the schemas one by one");
                }
                Err(e) => return Err(e.into()),
            }
        }
        for op in ops {
            latest = latest.max(bucket.write(op).await?);
        }
        Ok(latest)
    }

    /// The writes that take the bucket from `base` to `next`: every key whose encoding changed,
    /// and every key whose bucket value is not in effect (so the bucket ends up holding `next`).
    fn plan(&self, base: &Snapshot<T>, next: &crate::Encoded) -> Result<Vec<WriteOp>> {
        let prefix = &self.shared.source.prefix;
        let old = base.config.encode()?;
        let mut ops = Vec::new();
        let required = self.shared.required();
        for (k, v) in next {
            if base.overridden.contains_key(k) {
                if old.get(k) != Some(v) {
                    return Err(self.overridden_error(base, k));
                }
                continue;
            }
            // A required key the bucket lacks (a start-up fallback) is written too.
            let missing = required.contains(k) && !base.values.contains_key(k) && base.expected_revision(k) == 0;
            if old.get(k) != Some(v) || base.repair.contains(k) || missing {
                ops.push(WriteOp::put(format!("{prefix}{k}"), v.clone()).expect_revision(base.expected_revision(k)));
            }
        }
        for k in old.keys().filter(|k| !next.contains_key(*k)) {
            if base.overridden.contains_key(k) {
                return Err(self.overridden_error(base, k));
            }
            if base.values.contains_key(k) || base.repair.contains(k) {
                ops.push(WriteOp::delete(format!("{prefix}{k}")).expect_revision(base.expected_revision(k)));
            }
        }
        if !ops.is_empty() && T::__KV_CROSS_CHECKS {
            let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            ops.push(WriteOp::put(format!("{prefix}{GUARD_KEY}"), Bytes::from(stamp.to_string())).expect_revision(base.guard));
        }
        if let Some(author) = &self.shared.options.author {
            ops = ops.into_iter().map(|op| op.header(AUTHOR_HEADER, author.clone())).collect();
        }
        Ok(ops)
    }

    fn overridden_error(&self, base: &Snapshot<T>, key: &str) -> Error {
        let expires = base.overridden.get(key).and_then(|o| o.expires);
        Error::Overridden { bucket: self.shared.source.bucket.clone(), key: key.to_string(), expires }
    }

    /// With overrides in effect, the config a write leaves must also be valid as they expire, one
    /// after the other, soonest first (an override without a known expiry counts as the soonest):
    /// each expired key holds its own bucket value (or its default) again. `raw` is the config
    /// the write leaves while every override lasts; `new_override`, when the write sets one (its
    /// key and expiry), takes its place in that order, and only the states it is part of are
    /// checked, and those up to where an override it replaces would have expired (what follows
    /// does not depend on the write): the states of
    /// [`expiry_states`](crate::overrides::expiry_states). Overrides that are already gone
    /// ([`Snapshot::lapsed`](super::Snapshot)) count as expired in every state, unless
    /// `changes(key)` says the write itself sets that key.
    pub(super) fn check_after_expiry(
        &self,
        base: &Snapshot<T>,
        raw: &RawValues,
        new_override: Option<(&str, Option<std::time::SystemTime>)>,
        changes: &dyn Fn(&str) -> bool,
    ) -> Result<()> {
        let replaced = new_override.map(|(k, _)| k);
        let gone: Vec<&str> = base.lapsed.keys().map(String::as_str).filter(|k| Some(*k) != replaced && !changes(k)).collect();
        let in_effect: Vec<(&str, Option<std::time::SystemTime>)> = base.overridden.iter().map(|(k, o)| (k.as_str(), o.expires)).collect();
        let new: Vec<(&str, Option<std::time::SystemTime>)> = new_override.into_iter().collect();
        let own = |k: &str| base.underlying.get(k).or_else(|| base.lapsed.get(k).and_then(|(_, v)| v.as_ref())).cloned();
        for timeline in crate::overrides::expiry_states(&in_effect, &new) {
            let expired: Vec<&str> = gone.iter().copied().chain(timeline).collect();
            // With nothing expired this is the state the caller validated.
            if expired.is_empty() {
                continue;
            }
            let mut state = raw.clone();
            for k in &expired {
                match own(k) {
                    Some(v) => state.insert((*k).to_string(), v),
                    None => state.remove(*k),
                };
            }
            T::decode(&state, &self.shared.source).map_err(|source| {
                let mut names: Vec<String> = expired.iter().map(|k| format!("`{k}`")).collect();
                names.sort();
                Error::InvalidAfterExpiry { bucket: self.shared.source.bucket.clone(), keys: names.join(", "), source }
            })?;
        }
        Ok(())
    }

    async fn modify(&self, mut make: impl FnMut(&T) -> Result<T>) -> Result<Arc<Snapshot<T>>> {
        let shared = &self.shared;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let base = self.get_arc();
            let next = make(&base.config)?;
            let encoded = next.encode()?;
            // Refuse an invalid config before anything is sent.
            let raw = to_raw(&encoded);
            T::decode(&raw, &shared.source)?;
            let mut ops = self.plan(&base, &encoded)?;
            if !ops.is_empty() && (!base.overridden.is_empty() || !base.lapsed.is_empty()) {
                let old = base.config.encode()?;
                self.check_after_expiry(&base, &raw, None, &|k| encoded.get(k) != old.get(k))?;
            }
            if ops.is_empty() {
                // Nothing to write says the snapshot; if it may be behind, that proves nothing.
                if let Some(stale) = self.status().stale {
                    return Err(Error::Stale { bucket: shared.source.bucket.clone(), reason: stale.reason });
                }
                return Ok(base);
            }
            shared.check_bucket_present()?;
            let written: Vec<(String, bool)> =
                ops.iter().map(|op| (op.key.clone(), matches!(op.kind, WriteKind::Put(_)))).collect();
            let own = own_entry(&ops);
            let result = if ops.len() == 1 {
                shared.bucket.write(ops.remove(0)).await
            } else {
                shared.bucket.write_atomic(ops).await
            };
            match result {
                Ok(revision) => {
                    if let Some(mut entry) = own {
                        // A write is checked against revisions alone, and a bucket deleted and
                        // created again meanwhile (revisions from 1 again) can take it at the
                        // same revision. Where the server announces deletions, the handle knows
                        // of one within milliseconds (and writes nothing until it has read the
                        // bucket again), so the write is applied on its commit. Elsewhere only
                        // the watch's delivery proves it went to the bucket this handle watches:
                        // it is applied once delivered, without waiting for the watcher's burst.
                        entry.revision = revision;
                        if !shared.announced() && !shared.delivered(base.epoch, revision).await {
                            return Err(Error::NotObserved { bucket: shared.source.bucket.clone(), revision });
                        }
                        shared.apply_own(base.epoch, &entry);
                    }
                    return self.confirm(base.epoch, revision, &written).await;
                }
                Err(e) if e.is_wrong_revision() => {
                    shared.state().status.conflicts += 1;
                    let key = e.key_name().map_or_else(|| written[0].0.clone(), str::to_string);
                    let (expected, current) = match e.kind() {
                        StoreErrorKind::WrongRevision { expected, current } => (*expected, *current),
                        _ => (0, None),
                    };
                    tracing::debug!(bucket = %shared.source.bucket, %key, expected, ?current, attempt, "update conflict; retrying");
                    if attempt >= shared.options.max_attempts {
                        return Err(Error::Conflict { bucket: shared.source.bucket.clone(), key, expected, current, attempts: attempt });
                    }
                    let target = match current {
                        Some(c) => c,
                        None => shared.bucket.entry(&key).await?.map_or(0, |e| e.revision),
                    };
                    shared.after_conflict(base.epoch, target).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits for the write (its last revision is `revision`; a batch's revisions are consecutive)
    /// to be applied, then checks the snapshot holds every written key.
    async fn confirm(&self, epoch: u64, revision: u64, written: &[(String, bool)]) -> Result<Arc<Snapshot<T>>> {
        let shared = &self.shared;
        if !shared.wait_applied(epoch, revision).await {
            return Err(Error::NotObserved { bucket: shared.source.bucket.clone(), revision });
        }
        let snapshot = self.get_arc();
        let first = revision + 1 - written.len() as u64;
        let prefix = &shared.source.prefix;
        for (i, (key, is_put)) in written.iter().enumerate() {
            let rel = key.strip_prefix(prefix.as_str()).unwrap_or(key);
            if rel == GUARD_KEY {
                continue;
            }
            let ours = first + i as u64;
            let in_effect = match snapshot.values.get(rel) {
                Some(v) => v.revision >= ours,
                None => !is_put,
            };
            if !in_effect || snapshot.repair.contains(rel) {
                let reason = {
                    let st = shared.state();
                    let rejected = &st.status.rejected;
                    rejected
                        .iter()
                        .find(|e| e.key == *key)
                        .or_else(|| rejected.iter().find(|e| matches!(e.problem, crate::Problem::Struct(_))))
                        .or(rejected.first())
                        .map_or_else(|| "the resulting state was refused".to_string(), ToString::to_string)
                };
                return Err(Error::NotInEffect { bucket: shared.source.bucket.clone(), key: key.clone(), revision: ours, reason });
            }
        }
        Ok(snapshot)
    }
}
