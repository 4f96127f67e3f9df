//! [`Status`]: what a handle knows about its own freshness and the values it refused.

use std::time::SystemTime;

use super::ActiveOverride;
use crate::config::KeyError;

/// Why a handle's snapshot may be behind the bucket.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StaleReason {
    /// The connection to the server is down; the client is reconnecting.
    Disconnected,
    /// The server did not answer a liveness probe in time (e.g. a frozen or overloaded server, or
    /// a network partition with the socket still open).
    NoResponse,
    /// The server holds a newer matching entry the watch did not deliver; the watch is being
    /// re-created from the last applied revision + 1.
    WatchStalled,
    /// An atomic batch has been partly stored on the server for over a heartbeat: the entries of
    /// it delivered so far are held back (a snapshot never shows half of a batch), so the
    /// snapshot shows the state before the batch. Clears once the rest arrives.
    BatchIncomplete,
    /// The bucket no longer exists (deleted, or the server's store was wiped). The last good
    /// snapshot stays in effect; the handle reattaches when the bucket is created again.
    BucketMissing,
    /// The handle started from its cache file (see
    /// [`Builder::cache_file`](crate::Builder::cache_file)), saved at `saved`, because the server
    /// could not be reached or the bucket was missing; it keeps trying and is current once the
    /// server confirmed or delivered the state after the cached revision.
    FromCache {
        /// When the cache file was saved.
        saved: SystemTime,
    },
}

impl std::fmt::Display for StaleReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            StaleReason::Disconnected => "disconnected from the server",
            StaleReason::NoResponse => "the server does not answer",
            StaleReason::WatchStalled => "the watch stalled; re-creating it",
            StaleReason::BatchIncomplete => "an atomic batch is only partly stored; waiting for the rest",
            StaleReason::BucketMissing => "the bucket is missing",
            StaleReason::FromCache { saved } => {
                let age = SystemTime::now().duration_since(*saved).unwrap_or_default();
                return write!(f, "started from the cache file saved {:.1} s ago; the server has not been reached yet", age.as_secs_f64());
            }
        })
    }
}

/// Since when and why a snapshot may be stale.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stale {
    /// When the handle noticed.
    pub since: SystemTime,
    /// Why.
    pub reason: StaleReason,
}

/// Health and history of a [`LiveConfig`](crate::LiveConfig) handle.
///
/// ```
/// use kv_config::{KvConfig, LiveConfig, store::MemoryStore};
/// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
/// struct App {
///     #[kv(default = 1)]
///     workers: u32,
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), kv_config::Error> {
/// let cfg = LiveConfig::<App>::builder(MemoryStore::new(), "app").create_if_missing().start().await?;
/// let status = cfg.status();
/// assert!(status.is_healthy() && status.stale.is_none());
/// # Ok(()) }
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Status {
    /// The bucket.
    pub bucket: String,
    /// `false` while the connection to the server is down.
    pub connected: bool,
    /// `Some` while the snapshot may be behind the bucket: disconnected, a server that does not
    /// answer, a stalled watch, or a missing bucket. `None` means the server confirmed, at
    /// [`last_heard`](Self::last_heard), that nothing newer was left to apply.
    pub stale: Option<Stale>,
    /// When the server last delivered an entry or confirmed the handle was current.
    pub last_heard: SystemTime,
    /// The highest bucket revision the snapshot in effect has seen.
    pub revision: u64,
    /// The highest bucket revision the watcher has processed (valid or not).
    pub seen_revision: u64,
    /// Values in the bucket that are not in effect (invalid, rejected by a validator, or a deleted
    /// key without default), each with bucket, key and revision. Secret values never appear.
    pub rejected: Vec<KeyError>,
    /// The last failure (a refused change, a watch error, a failed probe), if any since start.
    pub last_error: Option<String>,
    /// Keys in the bucket (under the prefix) that the schema does not know.
    pub unknown_keys: Vec<String>,
    /// Snapshots swapped in since start (the first load included).
    pub swaps: u64,
    /// Revision conflicts `update` ran into and retried.
    pub conflicts: u64,
    /// Times the watch was re-created because it stalled or ended.
    pub watch_restarts: u64,
    /// Times the whole config was reloaded because the bucket was replaced (deleted and created
    /// again, or a server restarted with an empty store).
    pub reloads: u64,
    /// Expiring overrides in effect, sorted by key (see
    /// [`LiveConfig::set_for`](crate::LiveConfig::set_for)).
    pub overrides: Vec<ActiveOverride>,
    /// When the snapshot in effect was built from the cache file
    /// ([`Builder::cache_file`](crate::Builder::cache_file)): the time that file was saved. `None`
    /// once a snapshot was built from the bucket.
    pub from_cache: Option<SystemTime>,
    /// The revision of the last snapshot saved to the cache file, if one is configured and a save
    /// succeeded (failures are logged and set [`last_error`](Self::last_error)).
    pub cache_revision: Option<u64>,
    /// After a start from the cache: the revision the watch resumed from (the cached revision + 1),
    /// or `None` if the bucket had to be loaded in full (another incarnation, history no longer
    /// held, or a cache that left values out).
    pub resumed_from: Option<u64>,
}

impl Status {
    /// `true` when the snapshot is current (connected, not stale) and every value in the bucket is
    /// in effect.
    pub fn is_healthy(&self) -> bool {
        self.is_current() && self.rejected.is_empty()
    }

    /// How old the cache file behind the snapshot in effect is, when it came from one.
    ///
    /// ```
    /// # use kv_config::{KvConfig, LiveConfig, store::MemoryStore};
    /// # #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
    /// # struct App { #[kv(default = 1)] workers: u32 }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), kv_config::Error> {
    /// let cfg = LiveConfig::<App>::builder(MemoryStore::new(), "app").create_if_missing().start().await?;
    /// assert_eq!(cfg.status().cache_age(), None); // read from the bucket
    /// # Ok(()) }
    /// ```
    pub fn cache_age(&self) -> Option<std::time::Duration> {
        self.from_cache.map(|saved| SystemTime::now().duration_since(saved).unwrap_or_default())
    }

    /// `true` when connected and the server confirmed nothing newer is left to apply.
    pub fn is_current(&self) -> bool {
        self.connected && self.stale.is_none()
    }
}
