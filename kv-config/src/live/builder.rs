//! [`Builder`]: opening (or creating) the bucket and taking the first snapshot.

use std::collections::HashSet;
use std::fmt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::watch;

use super::attach::Resume;
use super::cache::{self, CacheProblem, Cached, Identity};
use super::hub::Hub;
use super::lazy::LazyBucket;
use super::{Applied, LiveConfig, Options, Shared, Snapshot, Stale, StaleReason, State, Status};
use crate::config::{KvConfig, Source};
use crate::error::{Error, Result};
use crate::feed::{check_prefix, not_reached, pattern_for, watch_initial};
use crate::schema::Schema;
use crate::store::{Bucket, BucketConfig, SharedWatches, Store, StoreErrorKind, Watch, WatchStart};
use crate::view::{decode_latest, decode_view, Decoding, View};

/// What to do when the bucket's values do not make a valid config at start-up.
#[derive(Debug, Clone, Default)]
pub enum OnInvalid<T> {
    /// Fail `start` with the decode error (the default).
    #[default]
    Fail,
    /// Start with this config and apply the first valid state as it arrives.
    Fallback(T),
}

/// Options for [`LiveConfig`]; finish with [`start`](Builder::start).
pub struct Builder<T: KvConfig> {
    store: Arc<dyn Store>,
    bucket: String,
    prefix: String,
    create: Option<BucketConfig>,
    seed_defaults: bool,
    /// Boxed: a fallback config of a large `T` would otherwise make every `start()` future (and
    /// the stack it is polled on) as large as the struct.
    on_invalid: Box<OnInvalid<T>>,
    options: Options,
    cache_file: Option<PathBuf>,
    cache_secrets: bool,
    cache_wait: Duration,
    dedicated: bool,
}

impl<T: KvConfig> fmt::Debug for Builder<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Builder").field("bucket", &self.bucket).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

impl<T: KvConfig> Builder<T> {
    pub(super) fn new(store: Arc<dyn Store>, bucket: String) -> Self {
        Builder {
            store,
            bucket,
            prefix: String::new(),
            create: None,
            seed_defaults: false,
            on_invalid: Box::new(OnInvalid::Fail),
            options: Options::default(),
            cache_file: None,
            cache_secrets: false,
            cache_wait: Duration::from_secs(2),
            dedicated: false,
        }
    }

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

    /// Gives this handle a watch of its own, over its prefix only, instead of sharing one.
    ///
    /// By default the handles started on one store (and its clones) share one watch per bucket,
    /// with the same [`heartbeat`](Self::heartbeat) and [`load_timeout`](Self::load_timeout):
    /// one server consumer however many handles, configs and prefixes, and a handle that starts
    /// while others run reads its keys from the shared watch's memory. The shared watch covers
    /// the whole bucket, and once a second handle joins it keeps the latest entry of each key;
    /// when a handle reads a small prefix of a large bucket shared with other services, its own
    /// watch reads and holds less.
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
    /// let store = MemoryStore::new();
    /// let cfg = LiveConfig::<App>::builder(store, "app").create_if_missing().dedicated_watch().start().await?;
    /// assert_eq!(cfg.get().port, 8080);
    /// # Ok(()) }
    /// ```
    pub fn dedicated_watch(mut self) -> Self {
        self.dedicated = true;
        self
    }

    /// Whether a change is applied in place to the config the previous change retired (a
    /// spare), instead of to a copy of the config in effect.
    ///
    /// A snapshot readers may hold is never modified, so a change needs a config of its own:
    /// copying the one in effect costs a clone of every field that is not behind an `Arc` (about
    /// 0.3 ms for 5,000 `String` fields, milliseconds for 50,000, plus dropping the old copy).
    /// With a spare, the handle keeps the snapshot each change retires and, once no reader holds
    /// it any more, brings it up to date in place by decoding only the keys changed since (those
    /// of the change that retired it, and the new ones): a change costs what changed. When every
    /// spare is still held (a long-lived [`get_arc`](crate::LiveConfig::get_arc), a subscriber
    /// that has not looked yet), the change falls back to the copy and the held spare is kept
    /// for the next change, so at most two are kept. Spares let go are dropped on tokio's
    /// blocking pool, off the watcher's path.
    ///
    /// The price is memory: one more copy of the config between changes (only of the sections
    /// that changed, for sections behind an `Arc`), and the raw values it was built from until
    /// the next change (shared with the snapshot in effect, except after the values were folded
    /// into a new map, every n/8 changes).
    ///
    /// Default: on when the bucket holds 512 keys or more under the handle's prefix (counted at
    /// each change), off below (the copy is cheap there).
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
    /// let store = MemoryStore::new();
    /// let cfg = LiveConfig::<App>::builder(store, "app").create_if_missing().spare_copy(true).start().await?;
    /// cfg.update(|c| c.port = 9090).await?;
    /// assert_eq!(cfg.get().port, 9090);
    /// # Ok(()) }
    /// ```
    pub fn spare_copy(mut self, spare: bool) -> Self {
        self.options.spare = Some(spare);
        self
    }

    /// What to do when the initial values are invalid.
    pub fn on_invalid(mut self, on_invalid: OnInvalid<T>) -> Self {
        self.on_invalid = Box::new(on_invalid);
        self
    }

    /// How many times `update` runs its closure before giving up on conflicts (default 100). A
    /// retry goes out at the next write anyone makes to the bucket, or after a random pause of
    /// at most 0.5 ms if nobody writes: each attempt the default allows is one race lost to
    /// another writer's commit.
    pub fn max_attempts(mut self, attempts: u32) -> Self {
        self.options.max_attempts = attempts.max(1);
        self
    }

    /// How long a write waits to see itself in this handle's snapshot (default 5 s).
    pub fn write_timeout(mut self, timeout: Duration) -> Self {
        self.options.write_timeout = timeout;
        self
    }

    /// How long the watch may stay silent before the handle asks the server whether it missed
    /// something (default 1 s, at least 50 ms). A server that does not answer within another
    /// heartbeat marks the handle stale ([`Status::stale`]); a watch that left a newer entry
    /// undelivered is re-created from the last applied revision + 1. Each check is one or two
    /// small requests, made only while the bucket is quiet.
    pub fn heartbeat(mut self, heartbeat: Duration) -> Self {
        self.options.heartbeat = heartbeat.max(Duration::from_millis(50));
        self
    }

    /// How long `start` may take to read the bucket before it fails with a timeout (default 10 s).
    pub fn load_timeout(mut self, timeout: Duration) -> Self {
        self.options.load_timeout = timeout;
        self
    }

    /// Records `author` in the `KvConfig-Author` header of every write this handle makes (NATS
    /// keeps no publisher identity; admin tools show it in history).
    pub fn author(mut self, author: impl Into<String>) -> Self {
        self.options.author = Some(author.into());
        self
    }

    /// Keeps a last-known-good copy of the config in the file at `path`, and starts from it when
    /// the server cannot be reached or the bucket is missing.
    ///
    /// After every snapshot swap a writer task (never the watcher) saves the values in effect with
    /// their revisions, the bucket's incarnation and the revision applied, atomically (temporary
    /// file in the same directory, fsync, rename, fsync of the directory); swaps that come while a
    /// save runs are coalesced into one save of the newest. Secret fields are left out unless
    /// [`cache_secrets`](Self::cache_secrets) is on. See [`start`](Self::start) for when the file
    /// is used and when it is refused; the format is described in the `live::cache` module.
    ///
    /// With [`NatsStore`](crate::store::NatsStore), connect with
    /// `async_nats::ConnectOptions::retry_on_initial_connect()`: otherwise creating the store
    /// already fails while the server is down, before the cache can help.
    ///
    /// ```no_run
    /// use kv_config::{KvConfig, LiveConfig, store::NatsStore};
    /// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
    /// struct App {
    ///     #[kv(default = 8080)]
    ///     port: u16,
    /// }
    /// # #[tokio::main]
    /// # async fn main() -> Result<(), kv_config::Error> {
    /// let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
    /// let store = NatsStore::connect("nats://127.0.0.1:4222", options).await?;
    /// let cfg = LiveConfig::<App>::builder(store, "app")
    ///     .cache_file("/var/lib/myapp/app-config.cache")
    ///     .start()
    ///     .await?;
    /// if let Some(age) = cfg.status().cache_age() {
    ///     eprintln!("running on a cached config {age:?} old; the server is not reachable yet");
    /// }
    /// # Ok(()) }
    /// ```
    pub fn cache_file(mut self, path: impl Into<PathBuf>) -> Self {
        self.cache_file = Some(path.into());
        self
    }

    /// Also writes `#[kv(secret)]` fields to the [`cache_file`](Self::cache_file) (default off:
    /// they are left out, a start from a cache that lacks a required secret fails saying so, and
    /// a cache that left something out is never resumed from, so the first contact with the
    /// server loads the bucket in full).
    pub fn cache_secrets(mut self, on: bool) -> Self {
        self.cache_secrets = on;
        self
    }

    /// How long [`start`](Self::start) waits to reach the server (open the bucket, and seed or
    /// create it) before it starts from a usable [`cache_file`](Self::cache_file) (default 2 s).
    /// A service at boot usually prefers running on its last known config over waiting; a
    /// reachable server that then takes long to deliver the bucket is still given the whole
    /// [`load_timeout`](Self::load_timeout). Without a usable cache `start` waits up to
    /// `load_timeout` as usual.
    pub fn cache_wait(mut self, wait: Duration) -> Self {
        self.cache_wait = wait;
        self
    }

    /// Opens (or creates) the bucket, loads the config and starts the watcher.
    ///
    /// One watch delivers the current value of every key and then every change, so a write made
    /// while the handle starts is either in the first snapshot or arrives as a change. Fails
    /// within [`load_timeout`](Self::load_timeout), never hangs.
    ///
    /// With a [`cache_file`](Self::cache_file):
    /// - A file of another bucket, prefix or config type is refused: `start` fails with
    ///   [`Error::Cache`] naming the path and the mismatch, and the file is left alone.
    /// - If the server is not reached within [`cache_wait`](Self::cache_wait) (or the initial
    ///   load times out, or the bucket is missing and not to be created) and the file is valid,
    ///   the handle starts from it: [`Status::stale`] is [`StaleReason::FromCache`] and
    ///   [`Status::from_cache`] holds the file's save time. A background task tries again every
    ///   heartbeat; once the bucket answers it resumes the watch from the cached revision + 1 if
    ///   the bucket is the same incarnation and still holds that revision
    ///   ([`Status::resumed_from`]), else it loads the bucket in full (counted in
    ///   [`Status::reloads`]). Writes fail with [`StoreErrorKind::Connection`] (or `NotFound`)
    ///   until then.
    /// - If the server is not reached and the file is missing, corrupt (checksum, truncation),
    ///   of another schema, or its values do not decode (a required secret left out), `start`
    ///   fails with [`Error::NoServerNoCache`] naming both problems.
    /// - If the server is reached, a corrupt file or one of another schema is only a warning
    ///   and is overwritten by the first save.
    ///
    /// [`Error::Cache`]: crate::Error::Cache
    /// [`Error::NoServerNoCache`]: crate::Error::NoServerNoCache
    /// [`StaleReason::FromCache`]: crate::StaleReason::FromCache
    pub async fn start(self) -> Result<LiveConfig<T>> {
        check_prefix(&self.prefix)?;
        let Some(path) = self.cache_file.clone() else {
            let shared = if self.dedicated { None } else { self.store.shared_watches().cloned() };
            if let Some(watches) = shared {
                return self.join(&watches).await;
            }
            let pattern = pattern_for(&self.prefix);
            let (bucket, incarnation, early) = self.open_within(self.options.load_timeout, Some(&pattern)).await?;
            let (watch, view) = watch_initial(&*bucket, &self.prefix, early, self.options.load_timeout).await?;
            return self.finish(bucket, incarnation, watch, view, None);
        };
        let id = Arc::new(Identity::new(path.clone(), &T::schema(), &self.bucket, &self.prefix, self.cache_secrets));
        let cached = cache::load(&id);
        match &cached {
            Err(problem) if problem.is_other_config() => {
                return Err(Error::Cache { path, bucket: self.bucket.clone(), problem: problem.clone() })
            }
            Ok(c) => tracing::debug!(bucket = %self.bucket, path = %path.display(), revision = c.view.seen, "config cache is usable"),
            Err(_) => {}
        }
        let wait = if cached.is_ok() { self.cache_wait } else { self.options.load_timeout };
        let attempt = async {
            // The open alone waits `cache_wait`; the watch after it has the load timeout, so a
            // server that answers slowly is read, not replaced by the cache.
            let (bucket, incarnation, _) = self.open_within(wait, None).await?;
            let (watch, view) = watch_initial(&*bucket, &self.prefix, None, self.options.load_timeout).await?;
            Ok::<_, Error>(((bucket, incarnation), watch, view))
        }
        .await;
        match attempt {
            Ok(((bucket, incarnation), watch, view)) => {
                if let Err(problem) = &cached {
                    if *problem != CacheProblem::Missing {
                        tracing::warn!(bucket = %self.bucket, path = %path.display(), %problem, "config cache refused; the next save replaces it");
                    }
                }
                self.finish(bucket, incarnation, watch, view, Some(id))
            }
            Err(cause) if falls_back(&cause) => match cached {
                Ok(c) => self.finish_cached(c, id, cause),
                Err(problem) => Err(Error::NoServerNoCache { bucket: self.bucket, path, cause: Box::new(cause), problem }),
            },
            Err(e) => Err(e),
        }
    }

    /// [`open`](Self::open), failing with a timeout after `wait` (a frozen server never answers).
    async fn open_within(&self, wait: Duration, watch: Option<&str>) -> Result<(Arc<dyn Bucket>, Option<u64>, Option<Watch>)> {
        tokio::time::timeout(wait, self.open(watch)).await.map_err(|_| not_reached(&self.bucket, wait))?
    }

    /// Opens (or creates and seeds) the bucket and asks which incarnation it is. With `watch`,
    /// also starts a watch of that pattern from [`WatchStart::LatestPerKey`], sent with the open
    /// ([`Store::open_and_watch`]), unless defaults are seeded (the watch must start after them)
    /// or the bucket is created.
    async fn open(&self, watch: Option<&str>) -> Result<(Arc<dyn Bucket>, Option<u64>, Option<Watch>)> {
        let opened = match watch.filter(|_| !self.seed_defaults) {
            Some(pattern) => self.store.open_and_watch(&self.bucket, pattern, WatchStart::LatestPerKey).await.map(|(b, w)| (b, Some(w))),
            None => self.store.open_bucket(&self.bucket).await.map(|b| (b, None)),
        };
        let (bucket, watch) = match opened {
            Ok(opened) => opened,
            Err(e) if *e.kind() == StoreErrorKind::NotFound && self.create.is_some() => {
                let config = self.create.clone().unwrap_or_else(|| BucketConfig::new(self.bucket.clone()));
                tracing::info!(bucket = %self.bucket, "creating bucket");
                (self.store.create_bucket(&config).await?, None)
            }
            Err(e) => return Err(e.into()),
        };
        if self.seed_defaults {
            seed(&*bucket, &self.prefix, &T::schema(), |_| false).await?;
        }
        // Which incarnation of the bucket this is, as of the open: a bucket replaced later is then
        // told apart even if its revisions climb past ours. (A watch started with the open is of
        // this incarnation too: `Store::open_and_watch` checks it.)
        let incarnation = match bucket.opened_incarnation() {
            Some(known) => Some(known),
            None => bucket.probe(&pattern_for(&self.prefix), u64::MAX).await.ok().map(|p| p.incarnation),
        };
        Ok((bucket, incarnation, watch))
    }

    /// A handle on a shared hub: the hub of the bucket on `watches`, or a new one that this
    /// handle opens (creating and seeding the bucket when told to).
    async fn join(self, watches: &SharedWatches) -> Result<LiveConfig<T>> {
        let (heartbeat, load_timeout) = (self.options.heartbeat, self.options.load_timeout);
        let whole = pattern_for("");
        let open = self.open_within(load_timeout, Some(&whole));
        let joining = Hub::shared(watches, &self.bucket, heartbeat, load_timeout, &self.prefix, open).await?;
        let hub = joining.hub.clone();
        if !joining.created() && self.seed_defaults {
            // The bucket exists (the hub reads it); seed what it lacks, and wait until the
            // shared watch delivered it, so the first snapshot holds it.
            let written = seed(&*hub.bucket, &self.prefix, &T::schema(), |key| hub.holds(key)).await?;
            hub.wait_seen(written).await?;
        }
        let prefix = self.prefix.clone();
        let incarnation = hub.state().incarnation;
        let bucket = hub.bucket.clone();
        let shared = joining.join(&prefix, |view| self.member(bucket, incarnation, view))?;
        let _ = shared.hub.set(hub);
        Ok(LiveConfig { shared })
    }

    /// A handle on the bucket's state as just loaded, with a watch of its own.
    fn finish(
        self,
        bucket: Arc<dyn Bucket>,
        incarnation: Option<u64>,
        watch: Watch,
        view: View,
        cache: Option<Arc<Identity>>,
    ) -> Result<LiveConfig<T>> {
        let (heartbeat, load_timeout) = (self.options.heartbeat, self.options.load_timeout);
        let hub = Hub::dedicated(bucket.clone(), &self.prefix, heartbeat, load_timeout, view.seen, incarnation);
        let prefix = self.prefix.clone();
        let shared = hub.join(&prefix, Some(view), |view| self.member(bucket, incarnation, view))?;
        hub.spawn(watch);
        let _ = shared.hub.set(hub);
        if let Some(id) = cache {
            tokio::spawn(cache::writer(Arc::downgrade(&shared), id, true));
        }
        Ok(LiveConfig { shared })
    }

    /// Decodes `view` into a new handle's first snapshot (the fallback config when told to).
    fn member(self, bucket: Arc<dyn Bucket>, incarnation: Option<u64>, mut view: View) -> Result<Arc<Shared<T>>> {
        let source = Source::new(self.bucket.clone(), self.prefix.clone());
        let how = Decoding { elided_from: None, find_elidable: true };
        let (config, values, rejected, last_error, has_unknown, fallback) = match decode_view::<T>(&view, None, &source, how) {
            Ok(d) => {
                // The config now holds what most values' bytes say: drop those bytes.
                let (values, dropped) = view.elide(d.values, &d.elidable, &d.config);
                super::spare::free_bytes(dropped);
                (d.config, values, d.rejected, None, d.has_unknown, false)
            }
            Err(e) => match *self.on_invalid {
                OnInvalid::Fail => return Err(e.into()),
                OnInvalid::Fallback(config) => {
                    tracing::warn!(bucket = %source.bucket, error = %e, "invalid config at start; using the fallback");
                    (config, crate::values::Values::default(), e.errors().to_vec(), Some(e.to_string()), true, true)
                }
            },
        };
        if !fallback {
            // The first snapshot is this view decoded: nothing left to apply (a fallback retries
            // the bucket's values at the first caught-up point).
            view.take_dirty();
        }
        // Nothing refused and no fallback: the values in effect are the view's (overrides aside,
        // which `Snapshot::new` handles), so there is no divergence to look for. At 50,000 keys
        // that search was a sixth of a start's CPU.
        let mut snapshot = Snapshot::new(config, values, &view, fallback || !rejected.is_empty(), 0);
        snapshot.fallback = fallback;
        let status = Status {
            bucket: source.bucket.clone(),
            connected: bucket.is_connected(),
            stale: None,
            last_heard: SystemTime::now(),
            revision: view.seen,
            seen_revision: view.seen,
            rejected,
            last_error,
            unknown_keys: Vec::new(),
            swaps: 1,
            conflicts: 0,
            watch_restarts: 0,
            reloads: 0,
            overrides: Vec::new(),
            from_cache: None,
            cache_revision: None,
            resumed_from: None,
        };
        Ok(build(snapshot, view, status, incarnation, bucket, source, self.options, has_unknown))
    }

    /// A handle on the cached state; a background task reaches the server.
    fn finish_cached(self, cached: Cached, id: Arc<Identity>, cause: Error) -> Result<LiveConfig<T>> {
        let source = Source::new(self.bucket.clone(), self.prefix.clone());
        let refuse = |problem: CacheProblem, cause: Error| Error::NoServerNoCache {
            bucket: self.bucket.clone(),
            path: id.path.clone(),
            cause: Box::new(cause),
            problem,
        };
        let decoded = match decode_latest::<T>(&cached.view.values, None, &source, Decoding::fresh()) {
            Ok(d) => d,
            Err(e) => {
                let missing: Vec<String> = e
                    .errors()
                    .iter()
                    .map(|k| k.key.strip_prefix(source.prefix.as_str()).unwrap_or(&k.key).to_string())
                    .filter(|k| cached.omitted.contains(k) || (!cached.view.values.contains_key(k) && !id.secrets && id.secret_keys.contains(k)))
                    .collect();
                let problem = if missing.is_empty() {
                    CacheProblem::Invalid(format!("its values do not make a valid config: {e}"))
                } else {
                    CacheProblem::Invalid(format!(
                        "it leaves out the secret {} the config requires (secrets are cached only with `cache_secrets(true)`)",
                        missing.iter().map(|k| format!("`{k}`")).collect::<Vec<_>>().join(", ")
                    ))
                };
                return Err(refuse(problem, cause));
            }
        };
        let saved = cached.saved;
        let age = SystemTime::now().duration_since(saved).unwrap_or_default();
        tracing::warn!(
            bucket = %source.bucket,
            path = %id.path.display(),
            revision = cached.view.seen,
            age_s = age.as_secs_f64(),
            error = %cause,
            "the bucket cannot be read; starting from the config cache and trying again"
        );
        let view = cached.view;
        let mut snapshot = Snapshot::new(decoded.config, decoded.values, &view, false, 0);
        snapshot.from_cache = Some(saved);
        // A lapsed override's value is in effect, not the key's own: writes must not store it.
        snapshot.lapsed = cached.lapsed;
        let status = Status {
            bucket: source.bucket.clone(),
            connected: false,
            stale: Some(Stale { since: SystemTime::now(), reason: StaleReason::FromCache { saved } }),
            last_heard: saved,
            revision: view.seen,
            seen_revision: view.seen,
            rejected: Vec::new(),
            last_error: Some(cause.to_string()),
            unknown_keys: Vec::new(),
            swaps: 1,
            conflicts: 0,
            watch_restarts: 0,
            reloads: 0,
            overrides: Vec::new(),
            from_cache: Some(saved),
            cache_revision: Some(view.seen),
            resumed_from: None,
        };
        let resume = Resume { incarnation: cached.incarnation, revision: view.seen, resumable: cached.resumable };
        let why = match &cause {
            Error::Store(e) => e.kind().clone(),
            _ => StoreErrorKind::Connection,
        };
        let lazy = Arc::new(LazyBucket::new(self.store.clone(), self.bucket.clone(), self.create.clone(), &why));
        let seed = self.seed_defaults;
        let shared = build(snapshot, view, status, cached.incarnation, lazy.clone(), source, self.options, decoded.has_unknown);
        let task = tokio::spawn(super::attach::run(Arc::downgrade(&shared), lazy, resume, seed));
        *shared.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        tokio::spawn(cache::writer(Arc::downgrade(&shared), id, false));
        Ok(LiveConfig { shared })
    }
}

/// Errors after which a usable cache stands in: the server was not reached in time, the
/// connection is down, or the bucket is missing.
fn falls_back(e: &Error) -> bool {
    matches!(e, Error::Store(s) if matches!(s.kind(), StoreErrorKind::Timeout | StoreErrorKind::Connection | StoreErrorKind::NotFound | StoreErrorKind::OutcomeUnknown))
}

#[allow(clippy::too_many_arguments)]
fn build<T: KvConfig>(
    snapshot: Snapshot<T>,
    view: View,
    status: Status,
    incarnation: Option<u64>,
    bucket: Arc<dyn Bucket>,
    source: Source,
    options: Options,
    has_unknown: bool,
) -> Arc<Shared<T>> {
    let seen = view.seen;
    let state = State { view, status, warned_unknown: HashSet::new(), epoch: 0, incarnation, last_heard: Instant::now() };
    let shared = Arc::new(Shared {
        snapshot: ArcSwap::from_pointee(snapshot),
        state: Mutex::new(state),
        applied: watch::channel(Applied { epoch: 0, seen }).0,
        swaps: watch::channel(0).0,
        bucket,
        source,
        known: OnceLock::new(),
        required: OnceLock::new(),
        options,
        hub: OnceLock::new(),
        task: Mutex::new(None),
        spares: Mutex::new(super::spare::Spares::new()),
        changes: Arc::default(),
    });
    if has_unknown {
        let mut st = shared.state();
        shared.note_unknown(&mut st);
    }
    shared
}

/// Writes each non-secret default whose key does not exist yet (with `create`, so nothing is
/// overwritten), skipping keys `known` says exist. Returns the highest revision written (0: none).
pub(super) async fn seed(bucket: &dyn Bucket, prefix: &str, schema: &Schema, known: impl Fn(&str) -> bool) -> Result<u64> {
    let mut written = 0;
    for f in schema.fields.iter().filter(|f| !f.secret && !f.is_map_entry()) {
        let Some(default) = &f.default else { continue };
        let key = format!("{prefix}{}", f.key);
        if known(&key) {
            continue;
        }
        let value = Bytes::from(serde_json::to_vec(default).map_err(|e| crate::EncodeError { key: key.clone(), message: e.to_string() })?);
        match bucket.create(&key, value).await {
            Ok(revision) => {
                written = written.max(revision);
                tracing::debug!(bucket = bucket.name(), %key, "seeded default");
            }
            Err(e) if *e.kind() == StoreErrorKind::AlreadyExists => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(written)
}
