//! The storage layer: a [`Store`] holds buckets, a [`Bucket`] holds keys.
//!
//! Two implementations behave identically: [`NatsStore`] over a NATS JetStream Key/Value bucket
//! (async-nats), and [`MemoryStore`], an embedded in-process store with the same revisions,
//! compare-and-swap checks, watches, history, TTLs and atomic batches. This module is the only
//! place in kv-config that knows NATS subjects, headers and API errors.
//!
//! ```
//! use kv_config::store::{BucketConfig, MemoryStore, Store};
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kv_config::store::StoreError> {
//! let store = MemoryStore::new();
//! let bucket = store.create_bucket(&BucketConfig::new("cfg").history(5)).await?;
//! let rev = bucket.put("server.port", "8080".into()).await?;
//! let rev2 = bucket.update("server.port", "8081".into(), rev).await?;
//! assert!(bucket.update("server.port", "9".into(), rev).await.unwrap_err().is_wrong_revision());
//! assert_eq!(bucket.get("server.port").await?.as_deref(), Some(&b"8081"[..]));
//! assert_eq!(bucket.history("server.port").await?.len(), 2);
//! # let _ = rev2;
//! # Ok(()) }
//! ```

mod error;
pub mod memory;
pub mod nats;
mod shared;

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::future::BoxFuture;
use futures_util::Stream;

pub use error::{StoreError, StoreErrorKind};
pub use memory::MemoryStore;
pub use nats::{NatsStore, PermissionLog};
pub use shared::SharedWatches;

/// Result of a store operation.
pub type StoreResult<T> = Result<T, StoreError>;

/// The most operations one atomic batch may hold (a server limit).
pub const MAX_BATCH: usize = 1000;

/// What an entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A value was written.
    Put,
    /// The key was deleted (a delete marker; history is kept).
    Delete,
    /// The key was purged (history removed), or its TTL expired.
    Purge,
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Operation::Put => "PUT",
            Operation::Delete => "DEL",
            Operation::Purge => "PURGE",
        })
    }
}

/// One revision of one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The bucket (a NATS watch shares one name among its entries instead of a copy each).
    pub bucket: Arc<str>,
    /// The key.
    pub key: String,
    /// The value (empty for delete and purge markers).
    pub value: Bytes,
    /// The bucket-wide sequence number of this write.
    pub revision: u64,
    /// In a watch: how many more entries the watcher has yet to deliver (0 = caught up).
    pub delta: u64,
    /// When the server stored it.
    pub created: SystemTime,
    /// Put, delete or purge.
    pub operation: Operation,
    /// Headers the writer attached with [`WriteOp::header`] (e.g. kv-config's audit headers
    /// `KvConfig-Author` and `KvConfig-Reason`), sorted by name. NATS's own headers (`Nats-*`,
    /// `KV-*`) are not included. Filled by `entry`, `entry_at`, `history` and watches.
    pub headers: Headers,
    /// `true` when this entry belongs to an atomic batch whose commit message comes later in the
    /// stream (it may lie outside a filtered watch). Used to never show half a batch.
    pub batch_continues: bool,
}

/// The bucket name of an entry made inside kv-config that no reader asks for (one shared empty
/// name, not an allocation per entry).
pub(crate) fn unnamed() -> Arc<str> {
    static EMPTY: std::sync::OnceLock<Arc<str>> = std::sync::OnceLock::new();
    EMPTY.get_or_init(|| Arc::from("")).clone()
}

/// Headers of a write or an entry, as `(name, value)` pairs.
pub type Headers = Vec<(String, String)>;

/// Audit header naming who made a change (set by kv-config's writers when asked).
pub const AUTHOR_HEADER: &str = "KvConfig-Author";
/// Audit header giving why a change was made.
pub const REASON_HEADER: &str = "KvConfig-Reason";

impl Entry {
    /// `true` for a live value (not a delete or purge marker).
    pub fn is_put(&self) -> bool {
        self.operation == Operation::Put
    }
}

/// Storage of a bucket's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum StorageKind {
    /// On disk (the default).
    #[default]
    File,
    /// In the server's memory.
    Memory,
}

/// How to create a bucket.
///
/// ```
/// use std::time::Duration;
/// use kv_config::store::BucketConfig;
/// let cfg = BucketConfig::new("cfg").history(10).key_ttl(Duration::from_secs(60));
/// assert_eq!(cfg.history, 10);
/// assert!(cfg.atomic_writes);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketConfig {
    /// Bucket name (`[-_a-zA-Z0-9]`).
    pub name: String,
    /// A description shown by `nats kv info`.
    pub description: String,
    /// Revisions kept per key, 1 to 64 (default 1).
    pub history: u8,
    /// Bucket-wide expiry of values (`None` = never).
    pub max_age: Option<Duration>,
    /// Largest value in bytes (`None` = the server's limit).
    pub max_value_size: Option<u32>,
    /// Replicas in a cluster (1 to 5).
    pub replicas: usize,
    /// File or memory storage.
    pub storage: StorageKind,
    /// Enables per-key TTLs; expired keys then leave a purge marker that lives this long.
    pub key_ttl: Option<Duration>,
    /// Allows atomic multi-key batches (server 2.12+). On by default; kv-config's multi-key
    /// `update` needs it.
    pub atomic_writes: bool,
}

impl BucketConfig {
    /// A bucket with history 1, no expiry, one replica, file storage and atomic writes.
    pub fn new(name: impl Into<String>) -> Self {
        BucketConfig {
            name: name.into(),
            description: String::new(),
            history: 1,
            max_age: None,
            max_value_size: None,
            replicas: 1,
            storage: StorageKind::File,
            key_ttl: None,
            atomic_writes: true,
        }
    }

    /// Sets the revisions kept per key (clamped to 1..=64).
    pub fn history(mut self, history: u8) -> Self {
        self.history = history.clamp(1, 64);
        self
    }

    /// Sets a bucket-wide expiry.
    pub fn max_age(mut self, max_age: Duration) -> Self {
        self.max_age = Some(max_age);
        self
    }

    /// Sets the largest allowed value.
    pub fn max_value_size(mut self, bytes: u32) -> Self {
        self.max_value_size = Some(bytes);
        self
    }

    /// Sets the number of replicas.
    pub fn replicas(mut self, replicas: usize) -> Self {
        self.replicas = replicas;
        self
    }

    /// Sets the storage kind.
    pub fn storage(mut self, storage: StorageKind) -> Self {
        self.storage = storage;
        self
    }

    /// Enables per-key TTLs (expiry markers live for `marker_ttl`, at least one second).
    pub fn key_ttl(mut self, marker_ttl: Duration) -> Self {
        self.key_ttl = Some(marker_ttl.max(Duration::from_secs(1)));
        self
    }

    /// Sets the description.
    pub fn description(mut self, description: impl Into<String>) -> Self {
        self.description = description.into();
        self
    }

    /// Turns atomic batches on or off.
    pub fn atomic_writes(mut self, on: bool) -> Self {
        self.atomic_writes = on;
        self
    }
}

/// What a bucket is and holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketInfo {
    /// The configuration it runs with.
    pub config: BucketConfig,
    /// Stored messages, markers and old revisions included.
    pub messages: u64,
    /// Stored bytes.
    pub bytes: u64,
    /// The bucket's last revision (0 when nothing was ever written).
    pub last_revision: u64,
    /// When the bucket (this incarnation of it) was created; `None` when the store does not say.
    pub created: Option<std::time::SystemTime>,
}

/// What a write expects of the key's last revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Expect {
    /// No check.
    #[default]
    Any,
    /// The key's last revision (markers included) must be this; 0 = nothing was ever stored.
    Revision(u64),
}

/// The kind of a [`WriteOp`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WriteKind {
    /// Store a value.
    Put(Bytes),
    /// Leave a delete marker.
    Delete,
    /// Remove the key's history, leaving a purge marker.
    Purge,
}

/// One write, on its own or inside an atomic batch.
///
/// ```
/// use kv_config::store::{Expect, WriteOp};
/// let op = WriteOp::put("a", "1".into()).expect_revision(4);
/// assert_eq!(op.expect, Expect::Revision(4));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WriteOp {
    /// The key.
    pub key: String,
    /// Put, delete or purge.
    pub kind: WriteKind,
    /// Revision check.
    pub expect: Expect,
    /// Per-key TTL (whole seconds, at least one; the bucket needs [`BucketConfig::key_ttl`]).
    pub ttl: Option<Duration>,
    /// Extra headers stored with the message (see [`Entry::headers`]).
    pub headers: Headers,
}

impl WriteOp {
    /// A put of `value`.
    pub fn put(key: impl Into<String>, value: Bytes) -> Self {
        WriteOp { key: key.into(), kind: WriteKind::Put(value), expect: Expect::Any, ttl: None, headers: Headers::new() }
    }

    /// A delete marker.
    pub fn delete(key: impl Into<String>) -> Self {
        WriteOp { key: key.into(), kind: WriteKind::Delete, expect: Expect::Any, ttl: None, headers: Headers::new() }
    }

    /// A purge.
    pub fn purge(key: impl Into<String>) -> Self {
        WriteOp { key: key.into(), kind: WriteKind::Purge, expect: Expect::Any, ttl: None, headers: Headers::new() }
    }

    /// Requires the key's last revision to be `revision` (0 = never stored).
    pub fn expect_revision(mut self, revision: u64) -> Self {
        self.expect = Expect::Revision(revision);
        self
    }

    /// Sets a per-key TTL.
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = Some(ttl);
        self
    }

    /// Adds a header stored with the message, e.g. [`AUTHOR_HEADER`]. Names must be printable
    /// ASCII without `:`; names starting with `Nats-` or `KV-` are reserved for the server.
    ///
    /// ```
    /// use kv_config::store::{WriteOp, AUTHOR_HEADER};
    /// let op = WriteOp::put("a", "1".into()).header(AUTHOR_HEADER, "ops@host");
    /// assert_eq!(op.headers, vec![(AUTHOR_HEADER.to_string(), "ops@host".to_string())]);
    /// ```
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

/// Where a watch starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchStart {
    /// The current entry of every matching key (markers included), then live changes.
    LatestPerKey,
    /// Only changes made after the watch starts.
    New,
    /// Every retained entry from this revision on, then live changes.
    FromRevision(u64),
}

/// What [`Bucket::probe`] found: the server is there, which incarnation of the bucket it holds,
/// and whether a watch of a pattern has something newer to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// Identifies this incarnation of the bucket: a bucket deleted and created again under the
    /// same name (or a server restarted with an empty store) has another id, and its revisions
    /// start again at 1.
    pub incarnation: u64,
    /// The bucket's last revision (any key).
    pub last_revision: u64,
    /// The oldest revision the bucket still holds (any key; `last_revision + 1` when it holds
    /// none). A watch from revision `n` misses nothing only if `first_revision <= n`.
    pub first_revision: u64,
    /// The revision of the first entry matching the pattern after the revision asked about.
    pub next: Option<u64>,
}

/// A live stream of entries from [`Bucket::watch`].
///
/// Errors (e.g. a new consumer the server could not make yet after a reconnect) are items, not
/// the end: keep polling.
pub struct Watch {
    initial: u64,
    inner: Pin<Box<dyn Stream<Item = StoreResult<Entry>> + Send>>,
    /// Lets go of what the store holds for the watch (see [`on_end`](Self::on_end)).
    end: Option<Box<dyn FnOnce() -> BoxFuture<'static, ()> + Send>>,
    /// Tells the store which bucket incarnation the watch began in ([`began_in`](Self::began_in)).
    incarnation: Option<Box<dyn Fn(u64) + Send + Sync>>,
}

impl Watch {
    /// Wraps a stream; `initial` is how many entries were pending when the watch started.
    pub fn new(initial: u64, inner: impl Stream<Item = StoreResult<Entry>> + Send + 'static) -> Self {
        Watch { initial, inner: Box::pin(inner), end: None, incarnation: None }
    }

    /// Lets [`began_in`](Self::began_in) reach the store's watch (for [`NatsStore`]: the
    /// incarnation a re-made consumer must be in).
    pub(crate) fn on_incarnation(mut self, set: impl Fn(u64) + Send + Sync + 'static) -> Self {
        self.incarnation = Some(Box::new(set));
        self
    }

    /// Tells the store that the watch began in bucket incarnation `incarnation` ([`Probe::incarnation`]),
    /// as confirmed by its caller: a store that makes new consumers inside a watch then keeps
    /// them in that incarnation by comparing for equality. Only the first call counts. Without
    /// it, a [`NatsStore`] watch learns its incarnation when it first makes a new consumer.
    pub(crate) fn began_in(&self, incarnation: u64) {
        if let Some(set) = &self.incarnation {
            set(incarnation);
        }
    }

    /// Runs `end` once the watch is over, after its stream is dropped: awaited by
    /// [`close`](Self::close), or spawned on the current Tokio runtime when the watch is dropped.
    /// For a store whose watch holds something on the server: [`NatsStore`] deletes the
    /// watch's consumer there, instead of leaving it to the server's inactivity threshold
    /// (30 s for an ordered consumer).
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use std::sync::atomic::{AtomicBool, Ordering};
    /// use std::sync::Arc;
    /// use kv_config::store::Watch;
    /// let ended = Arc::new(AtomicBool::new(false));
    /// let flag = ended.clone();
    /// let watch = Watch::new(0, futures_util::stream::empty()).on_end(move || async move { flag.store(true, Ordering::SeqCst) });
    /// watch.close().await;
    /// assert!(ended.load(Ordering::SeqCst));
    /// # }
    /// ```
    pub fn on_end<F, Fut>(mut self, end: F) -> Self
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        self.end = Some(Box::new(move || Box::pin(end()) as BoxFuture<'static, ()>));
        self
    }

    /// Stops the watch and waits until the store let go of what it held for it ([`on_end`](Self::on_end);
    /// for [`NatsStore`], until the server answered the consumer's deletion). Dropping a watch
    /// does the same without waiting.
    pub async fn close(mut self) {
        self.inner = Box::pin(futures_util::stream::empty());
        if let Some(end) = self.end.take() {
            end().await;
        }
    }

    /// How many entries were pending when the watch started: 0 means the watcher was caught up at
    /// once (e.g. an empty bucket), otherwise it is caught up at the first entry with `delta == 0`.
    pub fn initial_pending(&self) -> u64 {
        self.initial
    }
}

impl fmt::Debug for Watch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Watch").field("initial_pending", &self.initial).finish_non_exhaustive()
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Some(end) = self.end.take() {
            // The stream goes first: a consumer deleted under a live ordered stream is re-created.
            self.inner = Box::pin(futures_util::stream::empty());
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                drop(rt.spawn(end()));
            }
        }
    }
}

impl Stream for Watch {
    type Item = StoreResult<Entry>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.as_mut().poll_next(cx)
    }
}

/// A connection to a place that holds buckets.
#[async_trait]
pub trait Store: Send + Sync + fmt::Debug + 'static {
    /// Creates a bucket, or opens it if one of this name exists (leaving its configuration alone).
    async fn create_bucket(&self, config: &BucketConfig) -> StoreResult<Arc<dyn Bucket>>;

    /// Opens an existing bucket ([`StoreErrorKind::NotFound`] if there is none).
    async fn open_bucket(&self, name: &str) -> StoreResult<Arc<dyn Bucket>>;

    /// The names of all buckets, sorted.
    async fn bucket_names(&self) -> StoreResult<Vec<String>>;

    /// Removes a bucket and everything in it.
    async fn delete_bucket(&self, name: &str) -> StoreResult<()>;

    /// Turns on atomic batches for an existing bucket (see [`BucketConfig::atomic_writes`]).
    async fn enable_atomic_writes(&self, name: &str) -> StoreResult<()>;

    /// Opens an existing bucket and starts a [`watch`](Bucket::watch) of `pattern` on it, as
    /// [`open_bucket`](Self::open_bucket) then [`Bucket::watch`] do (the default). A store may
    /// send both requests at once: [`NatsStore`] does, so a start-up
    /// waits for one round trip to the server instead of two.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// use kv_config::store::{BucketConfig, MemoryStore, Store, WatchStart};
    /// let store = MemoryStore::new();
    /// store.create_bucket(&BucketConfig::new("cfg")).await.unwrap();
    /// let (bucket, watch) = store.open_and_watch("cfg", ">", WatchStart::LatestPerKey).await.unwrap();
    /// assert_eq!((bucket.name(), watch.initial_pending()), ("cfg", 0));
    /// # }
    /// ```
    async fn open_and_watch(&self, name: &str, pattern: &str, start: WatchStart) -> StoreResult<(Arc<dyn Bucket>, Watch)> {
        let bucket = self.open_bucket(name).await?;
        let watch = bucket.watch(pattern, start).await?;
        Ok((bucket, watch))
    }

    /// The table through which [`LiveConfig`](crate::LiveConfig) handles on this store (and its
    /// clones) share one watch per bucket; `None` (the default) gives every handle its own.
    fn shared_watches(&self) -> Option<&SharedWatches> {
        None
    }
}

/// What a server announced about a bucket ([`Bucket::announcements`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Announcement {
    /// The bucket was deleted (it may be created again under the same name, with revisions
    /// starting again at 1).
    Deleted,
    /// Something else changed: the bucket was created or its configuration updated, or its
    /// stream has a new leader in a cluster. Worth a look at the server.
    Changed,
}

/// One Key/Value bucket.
///
/// Writes return the new revision. Keys follow the NATS rules (`[-/_=.a-zA-Z0-9]`, no empty
/// token), values are bytes (kv-config stores JSON).
#[async_trait]
pub trait Bucket: Send + Sync + fmt::Debug + 'static {
    /// The bucket's name.
    fn name(&self) -> &str;

    /// `false` while the connection to the server is down (always `true` in memory).
    fn is_connected(&self) -> bool {
        true
    }

    /// Configuration and counters.
    async fn info(&self) -> StoreResult<BucketInfo>;

    /// The key's last entry, delete and purge markers included.
    async fn entry(&self, key: &str) -> StoreResult<Option<Entry>>;

    /// The key's entry at `revision`, if that revision belongs to this key and is retained.
    async fn entry_at(&self, key: &str, revision: u64) -> StoreResult<Option<Entry>>;

    /// Every retained revision of the key, oldest first.
    async fn history(&self, key: &str) -> StoreResult<Vec<Entry>>;

    /// Every key with a live value, sorted.
    async fn keys(&self) -> StoreResult<Vec<String>>;

    /// Watches keys matching `pattern` (NATS wildcards `*` and `>`; `>` = all).
    async fn watch(&self, pattern: &str, start: WatchStart) -> StoreResult<Watch>;

    /// The bucket's incarnation as the store learned it when it opened (or created) this handle,
    /// if it did: [`Probe::incarnation`] without a request. A NATS bucket knows it from the
    /// answer to the open, so a start asks the server one question fewer; the default (`None`)
    /// makes the start [`probe`](Self::probe) instead.
    fn opened_incarnation(&self) -> Option<u64> {
        None
    }

    /// What the server announces about the bucket as it happens, for stores whose server does:
    /// a watcher then acts at once instead of at its next heartbeat's [`probe`](Self::probe). A
    /// [`NatsStore`] bucket reads the JetStream advisories of its stream
    /// (`$JS.EVENT.ADVISORY.STREAM.*.KV_<bucket>`: deleted, created, updated, a new leader); a
    /// client without permission to subscribe to them gets none, and probes alone tell. The
    /// default (`None`): no announcements.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), kv_config::store::StoreError> {
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("app")).await?;
    /// assert!(bucket.announcements().await.is_none(), "an in-memory bucket announces nothing");
    /// # Ok(()) }
    /// ```
    async fn announcements(&self) -> Option<futures_util::stream::BoxStream<'static, Announcement>> {
        None
    }

    /// Asks the server, in one or two short requests, which incarnation of the bucket it holds and
    /// the first revision after `after` of a key matching `pattern`. A watcher uses it to tell a
    /// quiet bucket from a silent server, a stalled watch, or a bucket deleted or replaced.
    /// `after = u64::MAX` skips the look-up (`next` is `None`): on a bucket of many keys a
    /// wildcard look-up costs the server milliseconds.
    async fn probe(&self, pattern: &str, after: u64) -> StoreResult<Probe>;

    /// One write with its revision check and TTL.
    async fn write(&self, op: WriteOp) -> StoreResult<u64>;

    /// Several writes, all or nothing (every check runs against the state before the batch).
    /// Returns the revision of the last write. Needs [`BucketConfig::atomic_writes`].
    async fn write_atomic(&self, ops: Vec<WriteOp>) -> StoreResult<u64>;

    /// The key's live value (`None` when missing, deleted or purged).
    async fn get(&self, key: &str) -> StoreResult<Option<Bytes>> {
        Ok(self.entry(key).await?.filter(Entry::is_put).map(|e| e.value))
    }

    /// Stores a value.
    async fn put(&self, key: &str, value: Bytes) -> StoreResult<u64> {
        self.write(WriteOp::put(key, value)).await
    }

    /// Stores a value that expires after `ttl` (whole seconds).
    async fn put_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> StoreResult<u64> {
        self.write(WriteOp::put(key, value).ttl(ttl)).await
    }

    /// Stores a value only if the key has no live value: a lock. Succeeds over a delete or purge
    /// marker; fails with [`StoreErrorKind::AlreadyExists`] otherwise.
    async fn create(&self, key: &str, value: Bytes) -> StoreResult<u64> {
        create_with(self, key, value, None).await
    }

    /// [`create`](Bucket::create) with a per-key TTL: a lease.
    async fn create_with_ttl(&self, key: &str, value: Bytes, ttl: Duration) -> StoreResult<u64> {
        create_with(self, key, value, Some(ttl)).await
    }

    /// Stores a value only if the key's last revision is `revision` (compare-and-swap).
    async fn update(&self, key: &str, value: Bytes, revision: u64) -> StoreResult<u64> {
        self.write(WriteOp::put(key, value).expect_revision(revision)).await
    }

    /// Leaves a delete marker; deleting a missing key is harmless.
    async fn delete(&self, key: &str) -> StoreResult<u64> {
        self.write(WriteOp::delete(key)).await
    }

    /// Leaves a delete marker if the key's last revision is `revision`.
    async fn delete_expect_revision(&self, key: &str, revision: u64) -> StoreResult<u64> {
        self.write(WriteOp::delete(key).expect_revision(revision)).await
    }

    /// Removes the key's history, leaving a purge marker.
    async fn purge(&self, key: &str) -> StoreResult<u64> {
        self.write(WriteOp::purge(key)).await
    }

    /// Purges if the key's last revision is `revision`.
    async fn purge_expect_revision(&self, key: &str, revision: u64) -> StoreResult<u64> {
        self.write(WriteOp::purge(key).expect_revision(revision)).await
    }
}

async fn create_with<B: Bucket + ?Sized>(
    bucket: &B,
    key: &str,
    value: Bytes,
    ttl: Option<Duration>,
) -> StoreResult<u64> {
    let with_ttl = |op: WriteOp| match ttl {
        Some(ttl) => op.ttl(ttl),
        None => op,
    };
    match bucket.write(with_ttl(WriteOp::put(key, value.clone()).expect_revision(0))).await {
        Ok(rev) => Ok(rev),
        Err(err) if err.is_wrong_revision() => match bucket.entry(key).await? {
            Some(entry) if !entry.is_put() => {
                bucket
                    .write(with_ttl(WriteOp::put(key, value).expect_revision(entry.revision)))
                    .await
                    .map_err(|e| if e.is_wrong_revision() { already_exists(bucket, key) } else { e })
            }
            _ => Err(already_exists(bucket, key)),
        },
        Err(err) => Err(err),
    }
}

fn already_exists<B: Bucket + ?Sized>(bucket: &B, key: &str) -> StoreError {
    StoreError::new(StoreErrorKind::AlreadyExists).bucket(bucket.name()).key(key)
}

/// `true` if `key` follows the NATS key rules: `[-/_=.a-zA-Z0-9]+`, no empty token.
///
/// ```
/// assert!(kv_config::store::is_valid_key("server.port"));
/// assert!(!kv_config::store::is_valid_key("server..port"));
/// assert!(!kv_config::store::is_valid_key("a b"));
/// ```
pub fn is_valid_key(key: &str) -> bool {
    !key.is_empty()
        && key.split('.').all(|t| !t.is_empty())
        && key.bytes().all(|b| b.is_ascii_alphanumeric() || b"-/_=.".contains(&b))
}

/// The longest bucket name kv-config accepts. NATS limits a stream name (`KV_<bucket>`) to 255
/// bytes and the subjects and consumer names built from it get longer still; 64 leaves room.
pub const MAX_BUCKET_NAME: usize = 64;

/// `true` if `name` is a valid bucket name: 1 to [`MAX_BUCKET_NAME`] characters of `[-_a-zA-Z0-9]`.
///
/// ```
/// use kv_config::store::is_valid_bucket_name;
/// assert!(is_valid_bucket_name("app-config_2"));
/// assert!(!is_valid_bucket_name("app.config"));
/// assert!(!is_valid_bucket_name(&"x".repeat(300)));
/// ```
pub fn is_valid_bucket_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_BUCKET_NAME
        && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// The error for an invalid bucket name, saying what is wrong with it.
pub(crate) fn invalid_bucket_name(name: &str) -> StoreError {
    let why = if name.is_empty() {
        "the name is empty".to_string()
    } else if name.len() > MAX_BUCKET_NAME {
        format!("the name is {} characters long", name.len())
    } else {
        let bad: String = name.chars().filter(|c| !(c.is_ascii_alphanumeric() || *c == '-' || *c == '_')).take(5).collect();
        format!("the name holds {bad:?}")
    };
    StoreError::new(StoreErrorKind::InvalidBucketName).bucket(crate::redact::bound(name, 80)).detail(why)
}

/// `true` if `key` matches the NATS subject `pattern` (`*` = one token, `>` = the rest).
///
/// ```
/// use kv_config::store::key_matches;
/// assert!(key_matches(">", "a.b"));
/// assert!(key_matches("a.*", "a.b"));
/// assert!(!key_matches("a.*", "a.b.c"));
/// assert!(key_matches("a.>", "a.b.c"));
/// ```
pub fn key_matches(pattern: &str, key: &str) -> bool {
    let mut keys = key.split('.');
    for p in pattern.split('.') {
        if p == ">" {
            return keys.next().is_some();
        }
        match keys.next() {
            Some(k) if p == "*" || p == k => {}
            _ => return false,
        }
    }
    keys.next().is_none()
}

/// Checks the extra headers of a write: printable ASCII names without `:`, not reserved by NATS,
/// values without line breaks.
pub(crate) fn check_headers(bucket: &str, op: &WriteOp) -> StoreResult<()> {
    for (name, value) in &op.headers {
        let lower = name.to_ascii_lowercase();
        let problem = if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic() && b != b':') {
            Some("a header name is printable ASCII without `:`")
        } else if lower.starts_with("nats-") || lower.starts_with("kv-") {
            Some("header names starting with `Nats-` or `KV-` are reserved for the server")
        } else if value.contains(['\r', '\n']) {
            Some("a header value holds no line break")
        } else {
            None
        };
        if let Some(problem) = problem {
            return Err(StoreError::new(StoreErrorKind::InvalidRequest)
                .bucket(bucket)
                .key(op.key.clone())
                .detail(format!("header `{}`: {problem}", crate::redact::bound(name, 64))));
        }
    }
    Ok(())
}

/// The user headers of a stored message: everything but NATS's own.
pub(crate) fn user_headers<'a>(pairs: impl Iterator<Item = (&'a str, &'a str)>) -> Headers {
    pairs
        .filter(|(name, _)| {
            let lower = name.to_ascii_lowercase();
            !lower.starts_with("nats-") && !lower.starts_with("kv-")
        })
        .map(|(n, v)| (n.to_string(), v.to_string()))
        .collect()
}

pub(crate) fn check_batch(bucket: &str, ops: &[WriteOp]) -> StoreResult<()> {
    if ops.is_empty() || ops.len() > MAX_BATCH {
        return Err(StoreError::new(StoreErrorKind::InvalidRequest)
            .bucket(bucket)
            .detail(format!("a batch holds 1 to {MAX_BATCH} operations, not {}", ops.len())));
    }
    let mut seen = std::collections::HashSet::new();
    for op in ops {
        if !seen.insert(op.key.as_str()) {
            return Err(StoreError::new(StoreErrorKind::InvalidRequest)
                .bucket(bucket)
                .key(op.key.clone())
                .detail("the same key twice in one batch"));
        }
    }
    Ok(())
}
