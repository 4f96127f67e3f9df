//! Pieces several integration test files share; a file that uses them declares `mod common;`.
//!
//! [`Tapped`]: the real NATS store with hooks on what its buckets' watches deliver and what their
//! probes answer, for tests of a slow link or a server that stores a batch message by message.
//! Everything else (writes, reads, the server's answers otherwise) is the real server's, except
//! that its buckets make no announcements (`Bucket::announcements`): only probes tell them of a
//! deleted or re-created bucket, as for a client not allowed to read the stream's advisories.
#![allow(dead_code)]

use std::fmt::Debug;
use std::sync::Arc;

use kv_config::store::{
    Bucket, BucketConfig, BucketInfo, Entry, NatsStore, Probe, SharedWatches, Store, StoreResult, Watch, WatchStart, WriteOp,
};

/// What a [`Tapped`] store changes.
pub trait Hooks: Clone + Debug + Send + Sync + 'static {
    /// State kept per opened bucket handle.
    type PerBucket: Default + Debug + Send + Sync + 'static;
    /// Whether handles of the store share one watch per bucket (as on a plain `NatsStore`), or
    /// each keeps its own.
    const SHARED_WATCHES: bool;
    /// The watch a bucket handle returns, given the real one.
    fn watch(&self, bucket: &Self::PerBucket, watch: Watch) -> Watch {
        let _ = bucket;
        watch
    }
    /// What a bucket handle's probe answers, given the server's answer.
    fn probe(&self, bucket: &Self::PerBucket, probe: Probe) -> Probe {
        let _ = bucket;
        probe
    }
    /// What a bucket handle's probe of `pattern` returns, given the server's answer or error
    /// (by default: [`Hooks::probe`] of an answer).
    fn probe_result(&self, bucket: &Self::PerBucket, pattern: &str, result: StoreResult<Probe>) -> StoreResult<Probe> {
        let _ = pattern;
        result.map(|p| self.probe(bucket, p))
    }
}

/// A [`NatsStore`] whose buckets pass watches and probes through `hooks`.
#[derive(Debug, Clone)]
pub struct Tapped<H> {
    pub inner: NatsStore,
    pub hooks: H,
}

impl<H: Hooks> Tapped<H> {
    pub fn new(store: &NatsStore, hooks: H) -> Self {
        Tapped { inner: store.clone(), hooks }
    }

    fn wrap(&self, inner: Arc<dyn Bucket>) -> Arc<dyn Bucket> {
        Arc::new(TappedBucket { inner, hooks: self.hooks.clone(), state: H::PerBucket::default() })
    }
}

#[derive(Debug)]
struct TappedBucket<H: Hooks> {
    inner: Arc<dyn Bucket>,
    hooks: H,
    state: H::PerBucket,
}

#[async_trait::async_trait]
impl<H: Hooks> Store for Tapped<H> {
    async fn create_bucket(&self, config: &BucketConfig) -> StoreResult<Arc<dyn Bucket>> {
        Ok(self.wrap(self.inner.create_bucket(config).await?))
    }
    async fn open_bucket(&self, name: &str) -> StoreResult<Arc<dyn Bucket>> {
        Ok(self.wrap(self.inner.open_bucket(name).await?))
    }
    async fn bucket_names(&self) -> StoreResult<Vec<String>> {
        self.inner.bucket_names().await
    }
    async fn delete_bucket(&self, name: &str) -> StoreResult<()> {
        self.inner.delete_bucket(name).await
    }
    async fn enable_atomic_writes(&self, name: &str) -> StoreResult<()> {
        self.inner.enable_atomic_writes(name).await
    }
    fn shared_watches(&self) -> Option<&SharedWatches> {
        if H::SHARED_WATCHES {
            self.inner.shared_watches()
        } else {
            None
        }
    }
}

#[async_trait::async_trait]
impl<H: Hooks> Bucket for TappedBucket<H> {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn is_connected(&self) -> bool {
        self.inner.is_connected()
    }
    async fn info(&self) -> StoreResult<BucketInfo> {
        self.inner.info().await
    }
    async fn entry(&self, key: &str) -> StoreResult<Option<Entry>> {
        self.inner.entry(key).await
    }
    async fn entry_at(&self, key: &str, revision: u64) -> StoreResult<Option<Entry>> {
        self.inner.entry_at(key, revision).await
    }
    async fn history(&self, key: &str) -> StoreResult<Vec<Entry>> {
        self.inner.history(key).await
    }
    async fn keys(&self) -> StoreResult<Vec<String>> {
        self.inner.keys().await
    }
    async fn watch(&self, pattern: &str, start: WatchStart) -> StoreResult<Watch> {
        Ok(self.hooks.watch(&self.state, self.inner.watch(pattern, start).await?))
    }
    fn opened_incarnation(&self) -> Option<u64> {
        self.inner.opened_incarnation()
    }
    async fn probe(&self, pattern: &str, after: u64) -> StoreResult<Probe> {
        self.hooks.probe_result(&self.state, pattern, self.inner.probe(pattern, after).await)
    }
    async fn write(&self, op: WriteOp) -> StoreResult<u64> {
        self.inner.write(op).await
    }
    async fn write_atomic(&self, ops: Vec<WriteOp>) -> StoreResult<u64> {
        self.inner.write_atomic(ops).await
    }
}

/// The names of the consumers on the bucket's stream.
pub async fn consumers(server: &kv_config_testing::NatsServer, bucket: &str) -> Vec<String> {
    use futures_util::TryStreamExt;
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
    let stream = js.get_stream(format!("KV_{bucket}")).await.expect("stream");
    stream.consumer_names().try_collect().await.expect("consumer names")
}

/// Deletes every consumer on the bucket's stream (what an operator cleaning up, or a tool that
/// deletes "stray" consumers, does to a running service); returns how many it deleted.
pub async fn delete_consumers(server: &kv_config_testing::NatsServer, bucket: &str) -> usize {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
    let stream = js.get_stream(format!("KV_{bucket}")).await.expect("stream");
    let names = consumers(server, bucket).await;
    for name in &names {
        stream.delete_consumer(name).await.expect("delete consumer");
    }
    names.len()
}
