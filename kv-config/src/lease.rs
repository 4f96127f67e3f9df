//! Leases: a key of a bucket held by one process at a time, with a per-key TTL.
//!
//! [`Lease::acquire`] creates the key with a TTL (a create fails while another holder's value
//! lives), [`Lease::refresh`] rewrites it with a compare-and-swap on the held revision (which
//! re-applies the TTL), and [`Lease::release`] deletes it, again only at the held revision, so a
//! holder never removes someone else's lease. The stored value is JSON naming the holder.
//!
//! How a holder learns that it lost the lease ([`Lease::lost`]):
//! - a watch of the key, from the revision after the acquired one, reports any other write: a
//!   value that is not this holder's (taken over), a delete marker, or the purge marker the server
//!   leaves when the TTL expires;
//! - a refresh that the server refuses for good (the revision moved on, the bucket is gone, ...);
//! - and, with no news at all, the clock: once `ttl` has passed since the last successful refresh
//!   was *sent* (the server starts its TTL later than that), the holder must assume the server
//!   expired the key. This covers an unreachable or paused server and a holder whose refreshes
//!   stopped.
//!
//! A loss is final: a lost lease refuses to refresh; acquire again to hold the key again.

use std::fmt;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::store::{Bucket, Entry, Operation, StoreError, StoreErrorKind, WatchStart, WriteOp};

/// Why a [`Lease`] operation failed.
///
/// ```
/// use std::time::Duration;
/// use kv_config::store::{BucketConfig, MemoryStore, Store};
/// use kv_config::{Lease, LeaseError};
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
/// let first = Lease::acquire_as(bucket.clone(), "leader", Duration::from_secs(5), "node-a").await?;
/// let err = Lease::acquire_as(bucket, "leader", Duration::from_secs(5), "node-b").await.unwrap_err();
/// assert!(matches!(&err, LeaseError::Held { holder: Some(h), .. } if h == "node-a"));
/// assert_eq!(
///     err.to_string(),
///     format!("lease `leader` in bucket `locks` is held by `node-a` (revision {})", first.revision())
/// );
/// # Ok(()) }
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LeaseError {
    /// Another holder's value lives on the key.
    #[error("lease `{key}` in bucket `{bucket}` is held by {} (revision {revision})", describe_holder(holder.as_deref()))]
    Held {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The holder named in the stored value (`None` when the value was not written by a lease).
        holder: Option<String>,
        /// The key's current revision.
        revision: u64,
    },
    /// The lease is lost: the operation was refused and nothing of another holder was touched.
    #[error("lease `{key}` in bucket `{bucket}` (revision {revision}) is lost: {reason}")]
    Lost {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The revision this holder held last.
        revision: u64,
        /// Why it is lost.
        reason: LostReason,
    },
    /// The TTL is not a whole number of seconds of at least one (the server counts whole seconds).
    #[error("invalid lease TTL {ttl:?} for key `{key}` in bucket `{bucket}`: use whole seconds, at least 1 s")]
    InvalidTtl {
        /// The bucket.
        bucket: String,
        /// The key.
        key: String,
        /// The TTL asked for.
        ttl: Duration,
    },
    /// The store failed (the message names bucket and key). A timeout or lost connection during a
    /// refresh does not lose the lease by itself: [`Lease::lost`] fires once the TTL runs out.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn describe_holder(holder: Option<&str>) -> String {
    match holder {
        Some(h) => format!("`{}`", crate::redact::bound(h, 120)),
        None => "a value not written by a lease".to_string(),
    }
}

/// Why a lease was lost; what [`Lease::lost`] resolves to.
///
/// ```
/// use std::time::Duration;
/// use kv_config::LostReason;
/// let reason = LostReason::TakenOver { revision: 7, holder: Some("node-b".into()) };
/// assert_eq!(reason.to_string(), "taken over at revision 7 by `node-b`");
/// assert_eq!(
///     LostReason::TtlElapsed { ttl: Duration::from_secs(2) }.to_string(),
///     "no successful refresh for the whole TTL (2s): the server may have expired it"
/// );
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum LostReason {
    /// Another value was written on the key (someone else's lease, or a plain put).
    TakenOver {
        /// The revision of that write.
        revision: u64,
        /// The holder it names, when it is a lease value.
        holder: Option<String>,
    },
    /// The server expired the key (its TTL ran out) or someone purged it.
    Expired {
        /// The revision of the purge marker, when it was seen.
        revision: Option<u64>,
    },
    /// Someone else deleted the key.
    Deleted {
        /// The revision of the delete marker.
        revision: u64,
    },
    /// A refresh was refused for a reason other than the revision (bucket deleted, TTLs disabled,
    /// permission denied, ...).
    RefreshFailed(Arc<StoreError>),
    /// No refresh succeeded for a whole TTL (server unreachable or paused, or refreshes stopped):
    /// the server may have expired the lease, so the holder must assume it did.
    TtlElapsed {
        /// The lease's TTL.
        ttl: Duration,
    },
    /// This holder released the lease or dropped its [`Lease`].
    Released,
}

impl fmt::Display for LostReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TakenOver { revision, holder } => {
                write!(f, "taken over at revision {revision} by {}", describe_holder(holder.as_deref()))
            }
            Self::Expired { revision: Some(r) } => write!(f, "expired or purged (marker at revision {r})"),
            Self::Expired { revision: None } => f.write_str("expired or purged"),
            Self::Deleted { revision } => write!(f, "deleted by someone else (revision {revision})"),
            Self::RefreshFailed(e) => write!(f, "refresh refused: {e}"),
            Self::TtlElapsed { ttl } => {
                write!(f, "no successful refresh for the whole TTL ({ttl:?}): the server may have expired it")
            }
            Self::Released => f.write_str("released by this holder"),
        }
    }
}

/// What a lease stores under its key (JSON).
#[derive(Debug, Serialize, Deserialize)]
struct LeaseValue {
    /// Who holds it (the caller's name).
    holder: String,
    /// Unique per acquisition: tells this holder's own writes from everyone else's.
    token: String,
    /// The TTL, for readers.
    ttl_secs: u64,
}

fn parse_value(value: &[u8]) -> Option<LeaseValue> {
    serde_json::from_slice(value).ok()
}

struct State {
    revision: u64,
    /// The holder must assume the lease lost from this instant on.
    valid_until: Instant,
}

struct Inner {
    bucket: Arc<dyn Bucket>,
    key: String,
    ttl: Duration,
    holder: String,
    token: String,
    value: Bytes,
    state: Mutex<State>,
    lost: watch::Sender<Option<LostReason>>,
    /// Serializes refreshes: two at once would refuse each other.
    refreshing: tokio::sync::Mutex<()>,
}

/// A key of a bucket held by this process until it is released, lost, or its TTL runs out.
///
/// The bucket needs per-key TTLs ([`BucketConfig::key_ttl`](crate::store::BucketConfig::key_ttl)),
/// so that an expired lease leaves a marker that watchers see; with history 1 (the default).
/// Needs a Tokio runtime (two background tasks watch the key and the clock; a third refreshes
/// with [`keep_alive`](Lease::keep_alive)). Dropping a `Lease` stops them and leaves the key to
/// expire at its TTL; [`release`](Lease::release) frees it at once.
///
/// ```
/// use std::time::Duration;
/// use kv_config::store::{BucketConfig, MemoryStore, Store};
/// use kv_config::Lease;
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// // `NatsStore::new(async_nats::connect(url).await?)` for a real server.
/// let store = MemoryStore::new();
/// let bucket = store.create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
/// let lease = Lease::acquire_as(bucket.clone(), "jobs.nightly", Duration::from_secs(10), "worker-1")
///     .await?
///     .keep_alive(); // refreshes every TTL / 3 until dropped or lost
/// tokio::select! {
///     reason = lease.lost() => println!("stop working: {reason}"),
///     _ = async { /* the work the lease guards */ } => lease.release().await?,
/// }
/// # Ok(()) }
/// ```
pub struct Lease {
    inner: Arc<Inner>,
    tasks: Vec<JoinHandle<()>>,
    keep_alive: Option<JoinHandle<()>>,
}

impl fmt::Debug for Lease {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lease")
            .field("bucket", &self.inner.bucket.name())
            .field("key", &self.inner.key)
            .field("holder", &self.inner.holder)
            .field("revision", &self.revision())
            .field("lost", &self.lost_reason())
            .finish_non_exhaustive()
    }
}

impl Lease {
    /// Acquires `key` for `ttl` (whole seconds, at least 1), naming this process as the holder
    /// (`<executable>[<pid>]`). See [`acquire_as`](Lease::acquire_as).
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::Lease;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let lease = Lease::acquire(bucket, "leader", Duration::from_secs(5)).await?;
    /// assert!(lease.holder().contains(&format!("[{}]", std::process::id())));
    /// # Ok(()) }
    /// ```
    pub async fn acquire(bucket: Arc<dyn Bucket>, key: &str, ttl: Duration) -> Result<Lease, LeaseError> {
        Self::acquire_as(bucket, key, ttl, default_holder()).await
    }

    /// Acquires `key` for `ttl` (whole seconds, at least 1) as `holder`: creates the key with a
    /// per-key TTL, storing `{"holder": .., "token": .., "ttl_secs": ..}`.
    ///
    /// Fails with [`LeaseError::Held`] (naming the holder and revision) while another holder's
    /// value lives, [`LeaseError::InvalidTtl`] for a TTL the server cannot express, and
    /// [`StoreErrorKind::KeyTtlDisabled`] (as [`LeaseError::Store`]) on a bucket without
    /// per-key TTLs.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::{Lease, LeaseError};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let lease = Lease::acquire_as(bucket.clone(), "leader", Duration::from_secs(5), "node-a").await?;
    /// assert_eq!(lease.holder(), "node-a");
    /// let half = Lease::acquire_as(bucket, "other", Duration::from_millis(500), "node-a").await;
    /// assert!(matches!(half, Err(LeaseError::InvalidTtl { .. })));
    /// # Ok(()) }
    /// ```
    pub async fn acquire_as(
        bucket: Arc<dyn Bucket>,
        key: &str,
        ttl: Duration,
        holder: impl Into<String>,
    ) -> Result<Lease, LeaseError> {
        if ttl < Duration::from_secs(1) || ttl.subsec_nanos() != 0 {
            return Err(LeaseError::InvalidTtl { bucket: bucket.name().to_string(), key: key.to_string(), ttl });
        }
        let holder = holder.into();
        let token = format!("{:016x}{:016x}", fastrand::u64(..), fastrand::u64(..));
        let value = LeaseValue { holder: holder.clone(), token: token.clone(), ttl_secs: ttl.as_secs() };
        let value = Bytes::from(serde_json::to_vec(&value).map_err(|e| {
            StoreError::new(StoreErrorKind::InvalidRequest)
                .bucket(bucket.name())
                .key(key)
                .detail(format!("cannot encode the lease value: {e}"))
        })?);
        let mut attempts = 0;
        let (revision, sent) = loop {
            attempts += 1;
            let sent = Instant::now();
            match bucket.create_with_ttl(key, value.clone(), ttl).await {
                Ok(revision) => break (revision, sent),
                Err(e) if *e.kind() == StoreErrorKind::AlreadyExists => match bucket.entry(key).await? {
                    Some(entry) if entry.is_put() => {
                        return Err(LeaseError::Held {
                            bucket: bucket.name().to_string(),
                            key: key.to_string(),
                            holder: parse_value(&entry.value).map(|v| v.holder),
                            revision: entry.revision,
                        });
                    }
                    _ if attempts >= 3 => return Err(e.into()),
                    // The holder's value expired or was deleted between the create and the read.
                    _ => continue,
                },
                Err(e) => return Err(e.into()),
            }
        };
        tracing::debug!(bucket = %bucket.name(), %key, %holder, revision, ?ttl, "lease acquired");
        let (lost, _) = watch::channel(None);
        let inner = Arc::new(Inner {
            bucket,
            key: key.to_string(),
            ttl,
            holder,
            token,
            value,
            state: Mutex::new(State { revision, valid_until: sent + ttl }),
            lost,
            refreshing: tokio::sync::Mutex::new(()),
        });
        let tasks = vec![tokio::spawn(watch_key(inner.clone(), revision)), tokio::spawn(watch_clock(inner.clone()))];
        Ok(Lease { inner, tasks, keep_alive: None })
    }

    /// Starts refreshing in the background every TTL / 3 (see
    /// [`keep_alive_every`](Lease::keep_alive_every)).
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::Lease;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let lease = Lease::acquire(bucket, "leader", Duration::from_secs(1)).await?.keep_alive();
    /// let first = lease.revision();
    /// tokio::time::sleep(Duration::from_millis(1500)).await; // longer than the TTL
    /// assert!(lease.revision() > first);
    /// assert!(lease.lost_reason().is_none());
    /// # Ok(()) }
    /// ```
    pub fn keep_alive(self) -> Self {
        let interval = self.inner.ttl / 3;
        self.keep_alive_every(interval)
    }

    /// Starts refreshing in the background every `interval` (clamped to between 10 ms and the
    /// TTL / 2; a failed refresh is retried sooner). The task stops when the lease is lost,
    /// released or dropped, or on [`stop_keep_alive`](Lease::stop_keep_alive).
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::Lease;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let lease = Lease::acquire(bucket, "leader", Duration::from_secs(3))
    ///     .await?
    ///     .keep_alive_every(Duration::from_millis(500));
    /// # drop(lease);
    /// # Ok(()) }
    /// ```
    pub fn keep_alive_every(mut self, interval: Duration) -> Self {
        let interval = interval.clamp(Duration::from_millis(10), self.inner.ttl / 2);
        if let Some(old) = self.keep_alive.take() {
            old.abort();
        }
        self.keep_alive = Some(tokio::spawn(keep_alive(self.inner.clone(), interval)));
        self
    }

    /// Stops the background refreshes started by [`keep_alive`](Lease::keep_alive): the lease
    /// then lasts until its TTL runs out unless [`refresh`](Lease::refresh) is called.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::{Lease, LostReason};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let mut lease = Lease::acquire(bucket, "leader", Duration::from_secs(1)).await?.keep_alive();
    /// lease.stop_keep_alive();
    /// let reason = lease.lost().await; // at most one TTL later
    /// assert!(matches!(reason, LostReason::TtlElapsed { .. } | LostReason::Expired { .. }));
    /// # Ok(()) }
    /// ```
    pub fn stop_keep_alive(&mut self) {
        if let Some(task) = self.keep_alive.take() {
            task.abort();
        }
    }

    /// Rewrites the lease at the held revision, which re-applies the TTL, and returns the new
    /// revision.
    ///
    /// Fails with [`LeaseError::Lost`] once the lease is lost (another revision on the key, the
    /// TTL ran out, a refresh refused for good); a lost lease is never revived. A timeout or lost
    /// connection is [`LeaseError::Store`] and leaves the lease held until its TTL runs out (the
    /// call never waits past that instant).
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::Lease;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let lease = Lease::acquire(bucket, "leader", Duration::from_secs(5)).await?;
    /// let before = lease.revision();
    /// let after = lease.refresh().await?;
    /// assert!(after > before);
    /// assert_eq!(lease.revision(), after);
    /// # Ok(()) }
    /// ```
    pub async fn refresh(&self) -> Result<u64, LeaseError> {
        self.inner.refresh().await
    }

    /// Deletes the lease at the held revision, so another holder can acquire it at once.
    ///
    /// Never deletes someone else's lease: when the key moved on (taken over, expired, deleted)
    /// this fails with [`LeaseError::Lost`] and leaves the key alone. A lease this holder already
    /// considers lost (e.g. its TTL ran out while the server was unreachable) is still deleted if
    /// the server holds this holder's value. On a store error the key expires at its TTL.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::Lease;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let a = Lease::acquire_as(bucket.clone(), "leader", Duration::from_secs(5), "a").await?;
    /// a.release().await?;
    /// let b = Lease::acquire_as(bucket, "leader", Duration::from_secs(5), "b").await?;
    /// # drop(b);
    /// # Ok(()) }
    /// ```
    pub async fn release(mut self) -> Result<(), LeaseError> {
        self.stop_keep_alive();
        for task in self.tasks.drain(..) {
            task.abort();
        }
        let inner = &self.inner;
        let _guard = inner.refreshing.lock().await;
        let revision = inner.state().revision;
        let bucket = inner.bucket.name().to_string();
        match inner.bucket.delete_expect_revision(&inner.key, revision).await {
            Ok(marker) => {
                tracing::debug!(%bucket, key = %inner.key, revision, marker, "lease released");
                inner.mark_lost(LostReason::Released);
                Ok(())
            }
            Err(e) if e.is_wrong_revision() => {
                let entry = inner.bucket.entry(&inner.key).await?;
                if let Some(entry) = entry.as_ref().filter(|e| inner.is_ours(e)) {
                    // A refresh of ours that was applied after its caller stopped waiting.
                    inner.bucket.delete_expect_revision(&inner.key, entry.revision).await?;
                    tracing::debug!(%bucket, key = %inner.key, revision = entry.revision, "lease released");
                    inner.mark_lost(LostReason::Released);
                    return Ok(());
                }
                let reason = inner.reason_of(entry.as_ref());
                inner.mark_lost(reason.clone());
                tracing::warn!(%bucket, key = %inner.key, revision, %reason, "lease release refused: the lease is lost");
                Err(LeaseError::Lost { bucket, key: inner.key.clone(), revision, reason })
            }
            Err(e) => Err(e.into()),
        }
    }

    /// A future that resolves once the lease is lost, with the reason: taken over, expired,
    /// deleted, refused for good on refresh, or no successful refresh for a whole TTL. It owns
    /// what it needs (`'static`), so it can be moved into a task. After
    /// [`release`](Lease::release) or a drop it resolves to [`LostReason::Released`].
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::{Lease, LostReason};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let lease = Lease::acquire(bucket.clone(), "leader", Duration::from_secs(5)).await?;
    /// let lost = tokio::spawn(lease.lost());
    /// let rogue = bucket.put("leader", "{}".into()).await?; // overwrites without a lease
    /// assert!(matches!(lost.await?, LostReason::TakenOver { revision, .. } if revision == rogue));
    /// # Ok(()) }
    /// ```
    pub fn lost(&self) -> impl Future<Output = LostReason> + Send + 'static {
        let mut rx = self.inner.lost.subscribe();
        async move {
            match rx.wait_for(Option::is_some).await {
                Ok(reason) => reason.clone().unwrap_or(LostReason::Released),
                Err(_) => LostReason::Released,
            }
        }
    }

    /// Why the lease is lost, or `None` while it is held.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::Lease;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let lease = Lease::acquire(bucket, "leader", Duration::from_secs(5)).await?;
    /// assert!(lease.lost_reason().is_none());
    /// # Ok(()) }
    /// ```
    pub fn lost_reason(&self) -> Option<LostReason> {
        self.inner.lost.borrow().clone()
    }

    /// The revision this holder holds (the acquire's, then each successful refresh's).
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::Lease;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let lease = Lease::acquire(bucket.clone(), "leader", Duration::from_secs(5)).await?;
    /// assert_eq!(bucket.entry("leader").await?.map(|e| e.revision), Some(lease.revision()));
    /// # Ok(()) }
    /// ```
    pub fn revision(&self) -> u64 {
        self.inner.state().revision
    }

    /// The key.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::Lease;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let lease = Lease::acquire(bucket, "jobs.nightly", Duration::from_secs(5)).await?;
    /// assert_eq!(lease.key(), "jobs.nightly");
    /// # Ok(()) }
    /// ```
    pub fn key(&self) -> &str {
        &self.inner.key
    }

    /// The holder named in the stored value.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::Lease;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let lease = Lease::acquire_as(bucket, "leader", Duration::from_secs(5), "node-a").await?;
    /// assert_eq!(lease.holder(), "node-a");
    /// # Ok(()) }
    /// ```
    pub fn holder(&self) -> &str {
        &self.inner.holder
    }

    /// The TTL.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::store::{BucketConfig, MemoryStore, Store};
    /// use kv_config::Lease;
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("locks").key_ttl(Duration::from_secs(1))).await?;
    /// let lease = Lease::acquire(bucket, "leader", Duration::from_secs(5)).await?;
    /// assert_eq!(lease.ttl(), Duration::from_secs(5));
    /// # Ok(()) }
    /// ```
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.stop_keep_alive();
        for task in self.tasks.drain(..) {
            task.abort();
        }
        self.inner.mark_lost(LostReason::Released);
    }
}

impl Inner {
    fn state(&self) -> MutexGuard<'_, State> {
        // The lock is never held across an await or a panic point, but stay usable if poisoned.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Records the first loss; later ones are ignored.
    fn mark_lost(&self, reason: LostReason) {
        let revision = self.state().revision;
        let first = self.lost.send_if_modified(|slot| {
            if slot.is_some() {
                return false;
            }
            *slot = Some(reason.clone());
            true
        });
        if !first {
            return;
        }
        let bucket = self.bucket.name();
        if matches!(reason, LostReason::Released) {
            tracing::debug!(%bucket, key = %self.key, revision, "lease given up");
        } else {
            tracing::warn!(%bucket, key = %self.key, holder = %self.holder, revision, %reason, "lease lost");
        }
    }

    fn lost_error(&self, reason: LostReason) -> LeaseError {
        LeaseError::Lost {
            bucket: self.bucket.name().to_string(),
            key: self.key.clone(),
            revision: self.state().revision,
            reason,
        }
    }

    /// `true` for a value this holder wrote (this acquisition's token).
    fn is_ours(&self, entry: &Entry) -> bool {
        entry.is_put() && parse_value(&entry.value).is_some_and(|v| v.token == self.token)
    }

    /// Why the key's current entry means the lease is lost.
    fn reason_of(&self, entry: Option<&Entry>) -> LostReason {
        match entry {
            None => LostReason::Expired { revision: None },
            Some(e) => match e.operation {
                Operation::Put => {
                    LostReason::TakenOver { revision: e.revision, holder: parse_value(&e.value).map(|v| v.holder) }
                }
                Operation::Delete => LostReason::Deleted { revision: e.revision },
                Operation::Purge => LostReason::Expired { revision: Some(e.revision) },
            },
        }
    }

    async fn refresh(&self) -> Result<u64, LeaseError> {
        let _guard = self.refreshing.lock().await;
        let mut adopted = false;
        loop {
            if let Some(reason) = self.lost.borrow().clone() {
                return Err(self.lost_error(reason));
            }
            let (revision, valid_until) = {
                let st = self.state();
                (st.revision, st.valid_until)
            };
            let sent = Instant::now();
            if sent >= valid_until {
                // Never send a refresh past the deadline: the holder has already had to give up.
                self.mark_lost(LostReason::TtlElapsed { ttl: self.ttl });
                return Err(self.lost_error(LostReason::TtlElapsed { ttl: self.ttl }));
            }
            let op = WriteOp::put(self.key.clone(), self.value.clone()).expect_revision(revision).ttl(self.ttl);
            let written = match tokio::time::timeout_at(valid_until, self.bucket.write(op)).await {
                Ok(written) => written,
                Err(_) => {
                    self.mark_lost(LostReason::TtlElapsed { ttl: self.ttl });
                    return Err(self.lost_error(LostReason::TtlElapsed { ttl: self.ttl }));
                }
            };
            match written {
                Ok(new) => {
                    {
                        let mut st = self.state();
                        st.revision = new;
                        st.valid_until = sent + self.ttl;
                    }
                    tracing::trace!(bucket = %self.bucket.name(), key = %self.key, revision = new, "lease refreshed");
                    // Lost meanwhile (the clock ran out during the write): stays lost, but the
                    // new revision is kept so that `release` can still delete it.
                    if let Some(reason) = self.lost.borrow().clone() {
                        return Err(self.lost_error(reason));
                    }
                    return Ok(new);
                }
                Err(e) if e.is_wrong_revision() => {
                    let entry = match tokio::time::timeout_at(valid_until, self.bucket.entry(&self.key)).await {
                        Ok(entry) => entry?,
                        Err(_) => {
                            self.mark_lost(LostReason::TtlElapsed { ttl: self.ttl });
                            return Err(self.lost_error(LostReason::TtlElapsed { ttl: self.ttl }));
                        }
                    };
                    match entry {
                        // Our own earlier refresh, applied after its caller stopped waiting: adopt
                        // its revision and refresh again (once).
                        Some(entry) if !adopted && entry.revision > revision && self.is_ours(&entry) => {
                            adopted = true;
                            self.state().revision = entry.revision;
                            continue;
                        }
                        entry => {
                            let reason = self.reason_of(entry.as_ref());
                            self.mark_lost(reason.clone());
                            return Err(self.lost_error(reason));
                        }
                    }
                }
                Err(e) if e.is_transient() || *e.kind() == StoreErrorKind::OutcomeUnknown => {
                    tracing::debug!(bucket = %self.bucket.name(), key = %self.key, error = %e, "lease refresh failed; the lease holds until its TTL runs out");
                    return Err(e.into());
                }
                Err(e) => {
                    let reason = LostReason::RefreshFailed(Arc::new(e));
                    self.mark_lost(reason.clone());
                    return Err(self.lost_error(reason));
                }
            }
        }
    }
}

/// The process's default holder name: `<executable>[<pid>]`.
fn default_holder() -> String {
    let exe = std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "process".to_string());
    format!("{exe}[{}]", std::process::id())
}

/// Watches the key from the revision after the acquired one; any entry that is not this holder's
/// own write means the lease is lost. Errors do not end a watch; a watch that ends or cannot be
/// created is made again from the last revision seen (the clock covers the time in between).
async fn watch_key(inner: Arc<Inner>, acquired: u64) {
    let mut from = acquired + 1;
    let mut pause = Duration::from_millis(100);
    let mut rx = inner.lost.subscribe();
    loop {
        if rx.borrow().is_some() {
            return;
        }
        let mut watch = match inner.bucket.watch(&inner.key, WatchStart::FromRevision(from)).await {
            Ok(watch) => watch,
            Err(e) => {
                tracing::debug!(bucket = %inner.bucket.name(), key = %inner.key, error = %e, "lease watch failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = rx.wait_for(Option::is_some) => return,
                }
                pause = (pause * 2).min(Duration::from_secs(2));
                continue;
            }
        };
        pause = Duration::from_millis(100);
        loop {
            let item = tokio::select! {
                item = watch.next() => item,
                _ = rx.wait_for(Option::is_some) => return,
            };
            match item {
                Some(Ok(entry)) => {
                    if entry.key != inner.key || entry.revision < from {
                        continue;
                    }
                    from = entry.revision + 1;
                    if inner.is_ours(&entry) {
                        continue;
                    }
                    inner.mark_lost(inner.reason_of(Some(&entry)));
                    return;
                }
                Some(Err(e)) => {
                    tracing::debug!(bucket = %inner.bucket.name(), key = %inner.key, error = %e, "lease watch error");
                }
                None => break,
            }
        }
    }
}

/// Declares the lease lost once a TTL has passed since the last successful refresh was sent,
/// whatever else is heard (or not).
async fn watch_clock(inner: Arc<Inner>) {
    let mut rx = inner.lost.subscribe();
    loop {
        let until = inner.state().valid_until;
        tokio::select! {
            _ = tokio::time::sleep_until(until) => {}
            _ = rx.wait_for(Option::is_some) => return,
        }
        if Instant::now() >= inner.state().valid_until {
            inner.mark_lost(LostReason::TtlElapsed { ttl: inner.ttl });
            return;
        }
    }
}

/// Refreshes every `interval` until the lease is lost; a failed refresh is retried sooner.
async fn keep_alive(inner: Arc<Inner>, interval: Duration) {
    let mut rx = inner.lost.subscribe();
    let mut wait = interval;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(wait) => {}
            _ = rx.wait_for(Option::is_some) => return,
        }
        match inner.refresh().await {
            Ok(_) => wait = interval,
            Err(LeaseError::Lost { .. }) => return,
            Err(e) => {
                tracing::warn!(bucket = %inner.bucket.name(), key = %inner.key, error = %e, "lease refresh failed; retrying");
                wait = (interval / 4).max(Duration::from_millis(10));
            }
        }
    }
}
