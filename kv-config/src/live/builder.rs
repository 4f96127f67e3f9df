//! [`Builder`]: opening (or creating) the bucket and taking the first snapshot.

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::ArcSwap;
use bytes::Bytes;
use tokio::sync::watch;

use super::{Applied, LiveConfig, Options, Shared, Snapshot, State, Status};
use crate::config::{KvConfig, RawValues, Source};
use crate::error::Result;
use crate::feed::{check_prefix, pattern_for, watch_initial};
use crate::schema::Schema;
use crate::store::{Bucket, BucketConfig, Store, StoreErrorKind};
use crate::view::decode_view;

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
    on_invalid: OnInvalid<T>,
    options: Options,
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
            on_invalid: OnInvalid::Fail,
            options: Options::default(),
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

    /// What to do when the initial values are invalid.
    pub fn on_invalid(mut self, on_invalid: OnInvalid<T>) -> Self {
        self.on_invalid = on_invalid;
        self
    }

    /// How many times `update` runs its closure before giving up on conflicts (default 30; retries
    /// wait a jittered, exponentially growing pause of at most 250 ms).
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

    /// Opens (or creates) the bucket, loads the config and starts the watcher.
    ///
    /// One watch delivers the current value of every key and then every change, so a write made
    /// while the handle starts is either in the first snapshot or arrives as a change. Fails
    /// within [`load_timeout`](Self::load_timeout), never hangs.
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
        // Which incarnation of the bucket this is, before reading it: a bucket replaced later is
        // then told apart even if its revisions climb past ours.
        let incarnation = bucket.probe(&pattern_for(&prefix), u64::MAX).await.ok().map(|p| p.incarnation);
        let (watch, view) = watch_initial(&*bucket, &prefix, self.options.load_timeout).await?;
        let (config, values, rejected, last_error, has_unknown, fallback) = match decode_view::<T>(&view, None, &source) {
            Ok(d) => (d.config, d.values, d.rejected, None, d.has_unknown, false),
            Err(e) => match self.on_invalid {
                OnInvalid::Fail => return Err(e.into()),
                OnInvalid::Fallback(config) => {
                    tracing::warn!(bucket = %source.bucket, error = %e, "invalid config at start; using the fallback");
                    (config, Arc::new(RawValues::new()), e.errors().to_vec(), Some(e.to_string()), true, true)
                }
            },
        };
        let mut snapshot = Snapshot::new(config, values, &view, true, 0);
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
        };
        let seen = view.seen;
        let state = State { view, status, warned_unknown: HashSet::new(), epoch: 0, incarnation, behind_probes: 0, last_heard: Instant::now() };
        let shared = Arc::new(Shared {
            snapshot: ArcSwap::from_pointee(snapshot),
            state: Mutex::new(state),
            applied: watch::channel(Applied { epoch: 0, seen }).0,
            swaps: watch::channel(0).0,
            bucket: bucket.clone(),
            source,
            known: OnceLock::new(),
            required: OnceLock::new(),
            options: self.options,
            task: Mutex::new(None),
        });
        if has_unknown {
            let mut st = shared.state();
            shared.note_unknown(&mut st);
        }
        let task = tokio::spawn(super::watcher::run(Arc::downgrade(&shared), watch, bucket, pattern_for(&prefix)));
        *shared.task.lock().unwrap_or_else(|p| p.into_inner()) = Some(task.abort_handle());
        Ok(LiveConfig { shared })
    }
}

async fn seed(bucket: &dyn Bucket, prefix: &str, schema: &Schema) -> Result<()> {
    for f in schema.fields.iter().filter(|f| !f.secret && !f.is_map_entry()) {
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
