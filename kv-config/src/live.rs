//! [`LiveConfig`]: a config kept hot by a KV watcher, read with one atomic load, written back
//! with compare-and-swap.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::watch;
use tokio::task::AbortHandle;

use crate::config::{KeyError, KvConfig, RawValue, RawValues, Source};
use crate::error::{Error, Result};
use crate::schema::Schema;
use crate::store::{Bucket, BucketConfig, Store, StoreErrorKind, WatchStart, WriteOp};
use crate::view::{decode_latest, unknown_keys, View, SCHEMA_KEY};

/// One immutable version of the config: the decoded value plus the revisions it was built from.
///
/// Derefs to `T`, so `cfg.get().port` reads a field.
pub struct Snapshot<T> {
    config: T,
    /// The values in effect (shared with the watcher's view until the next change).
    values: Arc<RawValues>,
    /// Latest revisions where they differ from `values`: delete markers and refused values. A
    /// write expects these, so it can replace a refused value.
    overrides: HashMap<String, u64>,
    revision: u64,
}

impl<T: Clone> Clone for Snapshot<T> {
    fn clone(&self) -> Self {
        Snapshot {
            config: self.config.clone(),
            values: Arc::new(RawValues::clone(&self.values)),
            overrides: self.overrides.clone(),
            revision: self.revision,
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
    fn expected_revision(&self, key: &str) -> u64 {
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

/// Health and history of a [`LiveConfig`] handle.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The bucket.
    pub bucket: String,
    /// `false` while the connection to the server is down: the snapshot may be stale.
    pub connected: bool,
    /// The highest bucket revision the snapshot in effect has seen.
    pub revision: u64,
    /// The highest bucket revision the watcher has processed (valid or not).
    pub seen_revision: u64,
    /// Values in the bucket that are not in effect (invalid, rejected by a validator, or a deleted
    /// key without default), each with bucket, key and revision.
    pub rejected: Vec<KeyError>,
    /// The last failure (a refused change, a watch error), if any since start.
    pub last_error: Option<String>,
    /// Keys in the bucket (under the prefix) that the schema does not know.
    pub unknown_keys: Vec<String>,
    /// Snapshots swapped in since start (the first load included).
    pub swaps: u64,
    /// Revision conflicts `update` ran into and retried.
    pub conflicts: u64,
}

impl Status {
    /// `true` when connected and every value in the bucket is in effect.
    pub fn is_healthy(&self) -> bool {
        self.connected && self.rejected.is_empty()
    }
}

/// A change seen by a [`Subscription`]: the snapshot before, the one after, and the keys whose
/// values differ between them.
#[derive(Debug)]
pub struct Change<T> {
    /// What the subscriber saw last.
    pub old: Arc<Snapshot<T>>,
    /// The newest snapshot.
    pub new: Arc<Snapshot<T>>,
    /// Keys (relative to the prefix) whose value in effect changed.
    pub keys: Vec<String>,
    /// The newest snapshot's revision.
    pub revision: u64,
}

/// What to do when the bucket's values do not make a valid config at start-up.
#[derive(Debug, Clone, Default)]
pub enum OnInvalid<T> {
    /// Fail `start` with the decode error (the default).
    #[default]
    Fail,
    /// Start with this config and apply the first valid state as it arrives.
    Fallback(T),
}

struct State {
    view: View,
    status: Status,
    warned_unknown: HashSet<String>,
}

/// An encoded config as raw values (revision 0: not from the bucket), for validation by decoding.
fn to_raw(encoded: &crate::Encoded) -> RawValues {
    encoded.iter().map(|(k, v)| (k.clone(), RawValue { value: v.clone(), revision: 0 })).collect()
}

/// Latest revisions that differ from the values in effect: markers, and refused values (only
/// looked for when something was refused, so the common path stays O(markers)).
fn overrides(view: &View, values: &RawValues, any_rejected: bool) -> HashMap<String, u64> {
    let mut out = view.markers.clone();
    if any_rejected {
        for (k, v) in view.values.iter() {
            if values.get(k).map(|x| x.revision) != Some(v.revision) {
                out.insert(k.clone(), v.revision);
            }
        }
    }
    out
}

struct Shared<T> {
    snapshot: ArcSwap<Snapshot<T>>,
    state: Mutex<State>,
    applied: watch::Sender<u64>,
    swaps: watch::Sender<u64>,
    bucket: Arc<dyn Bucket>,
    source: Source,
    known: OnceLock<HashSet<String>>,
    max_attempts: u32,
    write_timeout: Duration,
    task: Mutex<Option<AbortHandle>>,
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

/// A typed config kept current by a KV watcher.
///
/// Clone it freely: clones share one snapshot and one watcher task, which stops when the last
/// clone (and the last [`Subscription`]) is dropped.
///
/// ```
/// use kv_config::{KvConfig, LiveConfig, store::MemoryStore};
/// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
/// struct App {
///     #[kv(default = 8080)]
///     port: u16,
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), kv_config::Error> {
/// let cfg = LiveConfig::<App>::builder(MemoryStore::new(), "app").create_if_missing().start().await?;
/// assert_eq!(cfg.get().port, 8080);
/// cfg.update(|c| c.port = 9090).await?;
/// assert_eq!(cfg.get().port, 9090);
/// # Ok(()) }
/// ```
pub struct LiveConfig<T: KvConfig> {
    shared: Arc<Shared<T>>,
}

impl<T: KvConfig> Clone for LiveConfig<T> {
    fn clone(&self) -> Self {
        LiveConfig { shared: self.shared.clone() }
    }
}

impl<T: KvConfig + fmt::Debug> fmt::Debug for LiveConfig<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LiveConfig")
            .field("bucket", &self.shared.source.bucket)
            .field("prefix", &self.shared.source.prefix)
            .field("snapshot", &*self.get())
            .finish()
    }
}

/// Options for [`LiveConfig`]; finish with [`start`](Builder::start).
pub struct Builder<T: KvConfig> {
    store: Arc<dyn Store>,
    bucket: String,
    prefix: String,
    create: Option<BucketConfig>,
    seed_defaults: bool,
    on_invalid: OnInvalid<T>,
    max_attempts: u32,
    write_timeout: Duration,
}

impl<T: KvConfig> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder").field("bucket", &self.bucket).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl<T: KvConfig> Builder<T> {
    /// Reads keys under `prefix` (e.g. `prod.`), so environments or services can share a bucket.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Creates the bucket if it does not exist (history 10, atomic writes on) and seeds defaults.
    pub fn create_if_missing(self) -> Self {
        let name = self.bucket.clone();
        self.create_with(BucketConfig::new(name).history(10))
    }

    /// Creates the bucket with this configuration if it does not exist, and seeds defaults.
    pub fn create_with(mut self, config: BucketConfig) -> Self {
        self.create = Some(config);
        self.seed_defaults = true;
        self
    }

    /// Writes each field's default (non-secret) under its key if the key does not exist yet,
    /// with `create`, so nothing is ever overwritten. On with `create_if_missing`.
    pub fn seed_defaults(mut self, on: bool) -> Self {
        self.seed_defaults = on;
        self
    }

    /// What to do when the initial values are invalid.
    pub fn on_invalid(mut self, on_invalid: OnInvalid<T>) -> Self {
        self.on_invalid = on_invalid;
        self
    }

    /// How many times `update` runs its closure before giving up on conflicts (default 10).
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.max_attempts = attempts.max(1);
        self
    }

    /// How long a write waits to see itself in this handle's snapshot (default 5 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.write_timeout = timeout;
        self
    }

    /// Opens (or creates) the bucket, loads the config and starts the watcher.
    ///
    /// One watch delivers the current value of every key and then every change, so a write made
    /// while the handle starts is either in the first snapshot or arrives as a change.
    pub async fn start(self) -> Result<LiveConfig<T>> {
        let prefix = self.prefix;
        check_prefix(&prefix)?;
        let bucket = match self.store.open_bucket(&self.bucket).await {
            Ok(b) => b,
            Err(e) if *e.kind() == StoreErrorKind::NotFound && self.create.is_some() => {
                let config = self.create.clone().unwrap_or_else(|| BucketConfig::new(self.bucket.clone()));
                tracing::info!(bucket = %self.bucket, "creating bucket");
                self.store.create_bucket(&config).await?
            }
            Err(e) => return Err(e.into()),
        };
        if self.seed_defaults {
            seed(&*bucket, &prefix, &T::schema()).await?;
        }
        let source = Source::new(self.bucket.clone(), prefix.clone());
        let (watch, view) = watch_initial(&*bucket, &prefix).await?;
        let pattern = pattern_for(&prefix);
        let decoded = match decode_latest::<T>(&view.values, None, &source) {
            Ok(d) => Ok(d),
            Err(e) => match self.on_invalid {
                OnInvalid::Fail => return Err(e.into()),
                OnInvalid::Fallback(config) => {
                    tracing::warn!(bucket = %source.bucket, error = %e, "invalid config at start; using the fallback");
                    Err((config, e))
                }
            },
        };
        let (config, values, rejected, last_error, has_unknown) = match decoded {
            Ok(d) => (d.config, d.values, d.rejected, None, d.has_unknown),
            Err((config, e)) => (config, Arc::new(RawValues::new()), e.errors().to_vec(), Some(e.to_string()), true),
        };
        let snapshot = Snapshot { overrides: overrides(&view, &values, true), config, values, revision: view.seen };
        let status = Status {
            bucket: source.bucket.clone(),
            connected: bucket.is_connected(),
            revision: view.seen,
            seen_revision: view.seen,
            rejected,
            last_error,
            unknown_keys: Vec::new(),
            swaps: 1,
            conflicts: 0,
        };
        let seen = view.seen;
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            state: Mutex::new(State { view, status, warned_unknown: HashSet::new() }),
            applied: watch::channel(seen).0,
            swaps: watch::channel(0).0,
            bucket: bucket.clone(),
            source,
            known: OnceLock::new(),
            max_attempts: self.max_attempts,
            write_timeout: self.write_timeout,
            task: Mutex::new(None),
        });
        if has_unknown {
            let mut st = shared.state();
            shared.note_unknown(&mut st);
        }
        let task = tokio::spawn(run(Arc::downgrade(&shared), watch, bucket, pattern));
        *shared.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        Ok(LiveConfig { shared })
    }
}

/// The NATS subject pattern of every key under `prefix`.
pub(crate) fn pattern_for(prefix: &str) -> String {
    if prefix.is_empty() {
        ">".to_string()
    } else {
        format!("{prefix}>")
    }
}

/// Checks a key prefix: empty, or key tokens ending with a dot.
pub(crate) fn check_prefix(prefix: &str) -> Result<()> {
    if prefix.is_empty() || (prefix.ends_with('.') && crate::store::is_valid_key(&prefix[..prefix.len() - 1])) {
        Ok(())
    } else {
        Err(Error::InvalidPrefix(prefix.to_string()))
    }
}

/// One pass over the bucket: a watch delivers the latest entry of every key under `prefix`, read
/// until caught up. The watch stays open for live changes.
pub(crate) async fn watch_initial(bucket: &dyn Bucket, prefix: &str) -> Result<(crate::store::Watch, View)> {
    let mut watch = bucket.watch(&pattern_for(prefix), WatchStart::LatestPerKey).await?;
    let mut view = View::with_capacity(watch.initial_pending().min(1 << 20) as usize);
    if watch.initial_pending() > 0 {
        loop {
            match watch.next().await {
                Some(Ok(entry)) => {
                    view.apply(prefix, &entry);
                    if entry.delta == 0 && !entry.batch_continues {
                        break;
                    }
                }
                Some(Err(e)) => tracing::warn!(bucket = bucket.name(), error = %e, "watch error during initial load"),
                None => return Err(Error::Closed(bucket.name().to_string())),
            }
        }
    }
    Ok((watch, view))
}

async fn seed(bucket: &dyn Bucket, prefix: &str, schema: &Schema) -> Result<()> {
    for f in schema.fields.iter().filter(|f| !f.secret) {
        let Some(default) = &f.default else { continue };
        let key = format!("{prefix}{}", f.key);
        let value = Bytes::from(serde_json::to_vec(default).map_err(|e| crate::EncodeError { key: key.clone(), message: e.to_string() })?);
        match bucket.create(&key, value).await {
            Ok(_) => tracing::debug!(bucket = bucket.name(), %key, "seeded default"),
            Err(e) if *e.kind() == StoreErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The watcher task: holds only a weak reference while it waits, so dropping the last handle
/// ends it.
async fn run<T: KvConfig>(weak: Weak<Shared<T>>, mut watch: crate::store::Watch, bucket: Arc<dyn Bucket>, pattern: String) {
    let mut backoff = Duration::from_millis(50);
    loop {
        let item = watch.next().await;
        let Some(shared) = weak.upgrade() else { return };
        match item {
            Some(Ok(entry)) => {
                backoff = Duration::from_millis(50);
                shared.on_entry(&entry);
            }
            Some(Err(e)) => {
                tracing::warn!(bucket = %shared.source.bucket, error = %e, "watch error; still watching");
                shared.state().status.last_error = Some(e.to_string());
            }
            None => {
                let from = shared.state().view.seen + 1;
                drop(shared);
                tracing::warn!(bucket = bucket.name(), from, "watch ended; re-creating it");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                match bucket.watch(&pattern, WatchStart::FromRevision(from)).await {
                    Ok(w) => watch = w,
                    Err(e) => {
                        if let Some(shared) = weak.upgrade() {
                            shared.state().status.last_error = Some(e.to_string());
                        }
                        watch = crate::store::Watch::new(0, futures_util::stream::empty());
                    }
                }
            }
        }
    }
}

impl<T: KvConfig> Shared<T> {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema's keys, built on first use (only needed when the bucket has unknown keys).
    fn known(&self) -> &HashSet<String> {
        self.known.get_or_init(|| T::schema().fields.into_iter().map(|f| f.key).collect())
    }

    /// Records (and warns once about) keys in the bucket that the schema does not know.
    fn note_unknown(&self, st: &mut State) {
        let unknown = unknown_keys(&st.view.values, self.known());
        for key in &unknown {
            if st.warned_unknown.insert(key.clone()) {
                tracing::warn!(bucket = %self.source.bucket, key = %format!("{}{key}", self.source.prefix), "key not in the schema of `{}`; ignored", T::__KV_NAME);
            }
        }
        st.status.unknown_keys = unknown;
    }

    fn on_entry(&self, entry: &crate::store::Entry) {
        let mut st = self.state();
        st.view.apply(&self.source.prefix, entry);
        if entry.delta != 0 || entry.batch_continues {
            return;
        }
        // Caught up: swap once for the whole burst, so a multi-key write is never seen half-done.
        let seen = st.view.seen;
        st.status.seen_revision = seen;
        if st.view.take_dirty() {
            let current = self.snapshot.load_full();
            match decode_latest::<T>(&st.view.values, Some(&current.values), &self.source) {
                Ok(decoded) => {
                    for e in &decoded.rejected {
                        tracing::warn!(bucket = %e.bucket, key = %e.key, revision = ?e.revision, problem = %e.problem, "value refused; keeping the last good value");
                    }
                    if let Some(first) = decoded.rejected.first() {
                        st.status.last_error = Some(first.to_string());
                    }
                    if decoded.has_unknown || !st.status.unknown_keys.is_empty() {
                        self.note_unknown(&mut st);
                    }
                    // A dirty view with nothing refused always changes the values in effect.
                    let any_rejected = !decoded.rejected.is_empty();
                    let changed = !any_rejected || decoded.values != current.values;
                    st.status.rejected = decoded.rejected;
                    st.status.revision = seen;
                    let snapshot = Snapshot {
                        overrides: overrides(&st.view, &decoded.values, any_rejected),
                        config: decoded.config,
                        values: decoded.values,
                        revision: seen,
                    };
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
                }
            }
        }
        drop(st);
        self.applied.send_replace(seen);
    }

    async fn wait_applied(&self, revision: u64) -> bool {
        let mut rx = self.applied.subscribe();
        tokio::time::timeout(self.write_timeout, rx.wait_for(|seen| *seen >= revision)).await.is_ok_and(|r| r.is_ok())
    }
}

impl<T: KvConfig> LiveConfig<T> {
    /// Starts building a handle on `bucket` of `store`.
    pub fn builder(store: impl Store, bucket: impl Into<String>) -> Builder<T> {
        Self::builder_shared(Arc::new(store), bucket)
    }

    /// [`builder`](Self::builder) with a store shared with other code.
    pub fn builder_shared(store: Arc<dyn Store>, bucket: impl Into<String>) -> Builder<T> {
        Builder {
            store,
            bucket: bucket.into(),
            prefix: String::new(),
            create: None,
            seed_defaults: false,
            on_invalid: OnInvalid::Fail,
            max_attempts: 10,
            write_timeout: Duration::from_secs(5),
        }
    }

    /// The current snapshot: one atomic load, no lock, no allocation. For synchronous reads; use
    /// [`get_arc`](Self::get_arc) to hold it across `.await`.
    #[inline]
    pub fn get(&self) -> Guard<Arc<Snapshot<T>>> {
        self.shared.snapshot.load()
    }

    /// The current snapshot as an owned `Arc`, to keep across `.await` or store.
    #[inline]
    pub fn get_arc(&self) -> Arc<Snapshot<T>> {
        self.shared.snapshot.load_full()
    }

    /// Health, revisions, refused values and counters.
    pub fn status(&self) -> Status {
        let mut status = self.shared.state().status.clone();
        status.connected = self.shared.bucket.is_connected();
        status
    }

    /// The bucket this handle watches.
    pub fn bucket(&self) -> &Arc<dyn Bucket> {
        &self.shared.bucket
    }

    /// The key prefix.
    pub fn prefix(&self) -> &str {
        &self.shared.source.prefix
    }

    /// Wakes on every swap; a slow subscriber skips to the newest snapshot.
    pub fn subscribe(&self) -> Subscription<T> {
        Subscription { rx: self.shared.swaps.subscribe(), last: self.get_arc(), shared: Arc::downgrade(&self.shared) }
    }

    /// The changes as a `Stream` (see [`subscribe`](Self::subscribe)).
    pub fn changes(&self) -> impl futures_util::Stream<Item = Change<T>> + Send + 'static {
        futures_util::stream::unfold(self.subscribe(), |mut sub| async move {
            sub.changed().await.ok().map(|c| (c, sub))
        })
    }

    /// Changes the config: runs `f` on a copy of the current snapshot, validates the result, and
    /// writes only the changed keys, each checked against the revision the snapshot holds (an
    /// atomic batch when several keys change). On a conflict it refreshes and runs `f` again, up to
    /// [`Builder::max_attempts`] times, then returns [`Error::Conflict`].
    ///
    /// When it returns `Ok`, this handle's [`get`](Self::get) already shows the write.
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
    /// validation and revision check as [`update`](Self::update).
    pub async fn set<V: serde::Serialize>(&self, key: &str, value: V) -> Result<Arc<Snapshot<T>>> {
        if !self.shared.known().contains(key) {
            let mut known: Vec<&str> = self.shared.known().iter().map(String::as_str).collect();
            known.sort_unstable();
            return Err(Error::UnknownKey { key: key.to_string(), type_name: T::__KV_NAME.to_string(), known: known.join(", ") });
        }
        let bytes = Bytes::from(serde_json::to_vec(&value).map_err(|e| crate::EncodeError { key: key.to_string(), message: e.to_string() })?);
        let source = self.shared.source.clone();
        self.modify(|base| {
            let mut raw = to_raw(&base.encode()?);
            raw.insert(key.to_string(), RawValue { value: bytes.clone(), revision: 0 });
            Ok(T::decode(&raw, &source)?)
        })
        .await
    }

    /// Publishes the schema (keys, types, docs, defaults, secret flags, struct name and crate
    /// version) as JSON under the reserved key `__kvconfig.schema` (after the prefix), for admin
    /// tools. Returns the revision, or the existing one when nothing changed.
    pub async fn publish_schema(&self) -> Result<u64> {
        let key = format!("{}{SCHEMA_KEY}", self.shared.source.prefix);
        let json = serde_json::to_vec(&T::schema()).map_err(|e| crate::EncodeError { key: key.clone(), message: e.to_string() })?;
        if let Some(e) = self.shared.bucket.entry(&key).await? {
            if e.is_put() && e.value == json {
                return Ok(e.revision);
            }
        }
        Ok(self.shared.bucket.put(&key, json.into()).await?)
    }

    async fn modify(&self, mut make: impl FnMut(&T) -> Result<T>) -> Result<Arc<Snapshot<T>>> {
        let shared = &self.shared;
        let prefix = &shared.source.prefix;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let base = self.get_arc();
            let next = make(&base.config)?;
            let new_enc = next.encode()?;
            // Refuse an invalid config before anything is sent.
            T::decode(&to_raw(&new_enc), &shared.source)?;
            let old_enc = base.config.encode()?;
            let mut ops = Vec::new();
            for (k, v) in &new_enc {
                if old_enc.get(k) != Some(v) {
                    let rev = base.expected_revision(k);
                    ops.push(WriteOp::put(format!("{prefix}{k}"), v.clone()).expect_revision(rev));
                }
            }
            for k in old_enc.keys().filter(|k| !new_enc.contains_key(*k)) {
                if base.values.contains_key(k) {
                    let rev = base.expected_revision(k);
                    ops.push(WriteOp::delete(format!("{prefix}{k}")).expect_revision(rev));
                }
            }
            if ops.is_empty() {
                return Ok(base);
            }
            let first_key = ops[0].key.clone();
            let result = if ops.len() == 1 {
                shared.bucket.write(ops.remove(0)).await
            } else {
                shared.bucket.write_atomic(ops).await
            };
            match result {
                Ok(revision) => {
                    if shared.wait_applied(revision).await {
                        return Ok(self.get_arc());
                    }
                    return Err(Error::NotObserved { bucket: shared.source.bucket.clone(), revision });
                }
                Err(e) if e.is_wrong_revision() => {
                    shared.state().status.conflicts += 1;
                    let key = e.key_name().map_or(first_key, str::to_string);
                    let (expected_rev, current) = match e.kind() {
                        StoreErrorKind::WrongRevision { expected, current } => (*expected, *current),
                        _ => (0, None),
                    };
                    tracing::debug!(bucket = %shared.source.bucket, %key, expected_rev, ?current, attempt, "update conflict; retrying");
                    if attempt >= shared.max_attempts {
                        return Err(Error::Conflict { bucket: shared.source.bucket.clone(), key, expected: expected_rev, current, attempts: attempt });
                    }
                    // Refresh: wait until the watcher has seen the newer revision.
                    let target = match current {
                        Some(c) => c,
                        None => shared.bucket.entry(&key).await?.map_or(0, |e| e.revision),
                    };
                    shared.wait_applied(target).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }
}

/// Wakes on every snapshot swap of a [`LiveConfig`].
pub struct Subscription<T: KvConfig> {
    rx: watch::Receiver<u64>,
    last: Arc<Snapshot<T>>,
    shared: Weak<Shared<T>>,
}

impl<T: KvConfig> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").field("revision", &self.last.revision).finish()
    }
}

impl<T: KvConfig> Subscription<T> {
    /// Waits for the next swap and returns what changed since this subscriber last looked.
    /// Fails with [`Error::Closed`] once every [`LiveConfig`] handle is gone.
    pub async fn changed(&mut self) -> Result<Change<T>> {
        loop {
            if self.rx.changed().await.is_err() {
                return Err(Error::Closed(String::new()));
            }
            let Some(shared) = self.shared.upgrade() else { return Err(Error::Closed(String::new())) };
            let new = shared.snapshot.load_full();
            let keys = self.last.changed_keys(&new);
            if keys.is_empty() {
                continue;
            }
            let old = std::mem::replace(&mut self.last, new.clone());
            return Ok(Change { revision: new.revision, old, new, keys });
        }
    }

    /// The snapshot this subscriber saw last.
    pub fn last(&self) -> &Arc<Snapshot<T>> {
        &self.last
    }
}
