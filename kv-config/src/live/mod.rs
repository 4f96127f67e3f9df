//! [`LiveConfig`]: a config kept hot by a KV watcher, read with one atomic load, written back
//! with compare-and-swap.
//!
//! One job per file: [`builder`] opens the bucket and takes the first snapshot, [`hub`] shares one
//! watch among the handles on a bucket, [`watcher`] keeps it current (and notices when it
//! cannot), [`apply`] turns a handle's changed keys into its next snapshot (in place, into one a
//! change retired and [`spare`] kept), [`write`](mod@write) is the compare-and-swap write path,
//! [`snapshot`], [`status`] and [`subscribe`] are what readers get. [`cache`] owns the
//! last-known-good file; after a start from it, [`lazy`] stands in for the bucket and [`attach`]
//! reaches the server.

mod apply;
mod attach;
mod builder;
mod hub;
mod overrides;
mod provenance;
mod cache;
mod lazy;
mod snapshot;
mod spare;
mod status;
mod subscribe;
mod watcher;
mod write;

use std::collections::HashSet;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, Guard};
use tokio::sync::watch;
use tokio::task::AbortHandle;

pub use builder::{Builder, OnInvalid};
pub use provenance::{ActiveOverride, Provenance};
pub use cache::CacheProblem;
pub use snapshot::Snapshot;
pub use status::{Stale, StaleReason, Status};
pub use subscribe::{Change, Subscription};

use crate::config::{KvConfig, Source};
use crate::schema::KeySet;
use crate::store::{Bucket, Store};
use crate::view::View;

/// Tuning shared by the watcher and the write path.
#[derive(Debug, Clone)]
struct Options {
    max_attempts: u32,
    write_timeout: Duration,
    heartbeat: Duration,
    load_timeout: Duration,
    author: Option<String>,
    /// Keep the snapshot a change retires as a spare (`None`: for configs of
    /// [`SPARE_MIN_KEYS`](spare::SPARE_MIN_KEYS) keys or more).
    spare: Option<bool>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_attempts: 100,
            write_timeout: Duration::from_secs(5),
            heartbeat: Duration::from_secs(1),
            load_timeout: Duration::from_secs(10),
            author: None,
            spare: None,
        }
    }
}

/// How far the watcher got: which load of the bucket (`epoch`) and the highest revision applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Applied {
    epoch: u64,
    seen: u64,
}

/// The watcher's side, behind one mutex.
struct State {
    view: View,
    status: Status,
    warned_unknown: HashSet<String>,
    /// Bumped when the bucket is replaced and the config reloaded.
    epoch: u64,
    /// The bucket incarnation the view was loaded from, once a probe told.
    incarnation: Option<u64>,
    last_heard: Instant,
}

struct Shared<T> {
    snapshot: ArcSwap<Snapshot<T>>,
    state: Mutex<State>,
    applied: watch::Sender<Applied>,
    swaps: watch::Sender<u64>,
    bucket: Arc<dyn Bucket>,
    source: Source,
    known: OnceLock<KeySet>,
    required: OnceLock<KeySet>,
    options: Options,
    /// The hub whose watch keeps this handle current (set once the handle is attached to one).
    hub: OnceLock<Arc<hub::Hub>>,
    /// The task that attaches a handle started from its cache (then runs its watcher).
    task: Mutex<Option<AbortHandle>>,
    /// The snapshots recent changes retired, to apply the next change to (see [`spare`]).
    spares: Mutex<spare::Spares<T>>,
    /// The links from each snapshot to the next (see [`Snapshot::changed_keys`]).
    changes: Arc<snapshot::ChangeLog>,
}

impl<T> Drop for Shared<T> {
    fn drop(&mut self) {
        if let Some(task) = self.task.get_mut().unwrap_or_else(|p| p.into_inner()).take() {
            task.abort();
        }
    }
}

impl<T: KvConfig> Shared<T> {
    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The schema's keys (map entries by pattern, `flags.*`), built on first use.
    fn known(&self) -> &KeySet {
        self.known.get_or_init(|| KeySet::from_keys(T::schema().fields.into_iter().map(|f| f.key)))
    }

    /// Keys with no default that must hold a value (the schema's `required`; for a nested map
    /// entry, required within the entry), built on first use.
    fn required(&self) -> &KeySet {
        self.required
            .get_or_init(|| KeySet::from_keys(T::schema().fields.into_iter().filter(|f| f.required).map(|f| f.key)))
    }
}

/// A typed config kept current by a KV watcher.
///
/// Clone it freely: clones share one snapshot. The watch that keeps it current is shared with
/// every other handle on the same store and bucket (see [`Builder::dedicated_watch`]) and stops
/// when the last handle using it is dropped.
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

impl<T: KvConfig> LiveConfig<T> {
    /// Starts building a handle on `bucket` of `store`.
    pub fn builder(store: impl Store, bucket: impl Into<String>) -> Builder<T> {
        Self::builder_shared(Arc::new(store), bucket)
    }

    /// [`builder`](Self::builder) with a store shared with other code.
    pub fn builder_shared(store: Arc<dyn Store>, bucket: impl Into<String>) -> Builder<T> {
        Builder::new(store, bucket.into())
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

    /// Health, freshness, refused values and counters.
    pub fn status(&self) -> Status {
        let mut status = self.shared.state().status.clone();
        status.overrides = self.get().overrides().into_iter().cloned().collect();
        status.connected = self.shared.bucket.is_connected();
        status.from_cache = self.shared.snapshot.load().from_cache;
        if !status.connected && status.stale.is_none() {
            status.stale = Some(Stale { since: SystemTime::now(), reason: StaleReason::Disconnected });
        }
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
}
