//! [`LazyBucket`]: the bucket of a handle that started from its cache file, before the server
//! answered. Every call fails with [`StoreErrorKind::Connection`] (the server was not reached) or
//! [`StoreErrorKind::NotFound`] (it was, but the bucket is missing) until [`attach`] opens it;
//! from then on it forwards to the real bucket.
//!
//! [`attach`]: LazyBucket::attach

use std::sync::{Arc, Mutex, OnceLock};

use async_trait::async_trait;

use crate::store::{
    Bucket, BucketConfig, BucketInfo, Entry, Probe, Store, StoreError, StoreErrorKind, StoreResult, Watch, WatchStart,
    WriteOp,
};

pub(super) struct LazyBucket {
    name: String,
    store: Arc<dyn Store>,
    create: Option<BucketConfig>,
    inner: OnceLock<Arc<dyn Bucket>>,
    /// Why it is not attached yet (the last attempt's error).
    why: Mutex<StoreErrorKind>,
}

impl std::fmt::Debug for LazyBucket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LazyBucket").field("name", &self.name).field("attached", &self.inner.get().is_some()).finish()
    }
}

impl LazyBucket {
    /// `why` is what the first attempt ran into: `NotFound` or (any other) `Connection`.
    pub(super) fn new(store: Arc<dyn Store>, name: String, create: Option<BucketConfig>, why: &StoreErrorKind) -> Self {
        let why = if *why == StoreErrorKind::NotFound { StoreErrorKind::NotFound } else { StoreErrorKind::Connection };
        LazyBucket { name, store, create, inner: OnceLock::new(), why: Mutex::new(why) }
    }

    /// Opens the bucket (creating it when the builder was told to); `Ok(true)` when this call
    /// created it.
    pub(super) async fn attach(&self) -> StoreResult<(Arc<dyn Bucket>, bool)> {
        if let Some(b) = self.inner.get() {
            return Ok((b.clone(), false));
        }
        let opened = match self.store.open_bucket(&self.name).await {
            Ok(b) => Ok((b, false)),
            Err(e) if *e.kind() == StoreErrorKind::NotFound && self.create.is_some() => {
                let config = self.create.clone().unwrap_or_else(|| BucketConfig::new(self.name.clone()));
                tracing::info!(bucket = %self.name, "creating bucket");
                self.store.create_bucket(&config).await.map(|b| (b, true))
            }
            Err(e) => Err(e),
        };
        match opened {
            Ok((b, created)) => Ok((self.inner.get_or_init(|| b).clone(), created)),
            Err(e) => {
                let kind = if *e.kind() == StoreErrorKind::NotFound { StoreErrorKind::NotFound } else { StoreErrorKind::Connection };
                *self.why.lock().unwrap_or_else(|p| p.into_inner()) = kind;
                Err(e)
            }
        }
    }

    fn get(&self) -> StoreResult<&Arc<dyn Bucket>> {
        self.inner.get().ok_or_else(|| {
            let kind = self.why.lock().unwrap_or_else(|p| p.into_inner()).clone();
            let detail = match kind {
                StoreErrorKind::NotFound => "the bucket does not exist yet; the config in effect comes from the cache file",
                _ => "the server has not been reached yet; the config in effect comes from the cache file",
            };
            StoreError::new(kind).bucket(self.name.clone()).detail(detail)
        })
    }
}

#[async_trait]
impl Bucket for LazyBucket {
    fn name(&self) -> &str {
        &self.name
    }

    fn is_connected(&self) -> bool {
        self.inner.get().is_some_and(|b| b.is_connected())
    }

    async fn info(&self) -> StoreResult<BucketInfo> {
        self.get()?.info().await
    }

    async fn entry(&self, key: &str) -> StoreResult<Option<Entry>> {
        self.get()?.entry(key).await
    }

    async fn entry_at(&self, key: &str, revision: u64) -> StoreResult<Option<Entry>> {
        self.get()?.entry_at(key, revision).await
    }

    async fn history(&self, key: &str) -> StoreResult<Vec<Entry>> {
        self.get()?.history(key).await
    }

    async fn keys(&self) -> StoreResult<Vec<String>> {
        self.get()?.keys().await
    }

    async fn watch(&self, pattern: &str, start: WatchStart) -> StoreResult<Watch> {
        self.get()?.watch(pattern, start).await
    }

    async fn probe(&self, pattern: &str, after: u64) -> StoreResult<Probe> {
        self.get()?.probe(pattern, after).await
    }

    async fn announcements(&self) -> Option<futures_util::stream::BoxStream<'static, crate::store::Announcement>> {
        // The watcher asks once it runs, after the bucket was reached.
        self.get().ok()?.announcements().await
    }

    async fn write(&self, op: WriteOp) -> StoreResult<u64> {
        self.get()?.write(op).await
    }

    async fn write_atomic(&self, ops: Vec<WriteOp>) -> StoreResult<u64> {
        self.get()?.write_atomic(ops).await
    }
}
