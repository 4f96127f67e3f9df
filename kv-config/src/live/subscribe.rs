//! [`Subscription`] and [`Change`]: waking on every snapshot swap.

use std::fmt;
use std::sync::{Arc, Weak};

use tokio::sync::watch;

use super::{Shared, Snapshot};
use crate::config::KvConfig;
use crate::error::{Error, Result};

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

/// Wakes on every snapshot swap of a [`LiveConfig`](crate::LiveConfig).
pub struct Subscription<T: KvConfig> {
    pub(super) rx: watch::Receiver<u64>,
    pub(super) last: Arc<Snapshot<T>>,
    pub(super) shared: Weak<Shared<T>>,
}

impl<T: KvConfig> fmt::Debug for Subscription<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription").field("revision", &self.last.revision).finish()
    }
}

impl<T: KvConfig> Subscription<T> {
    /// Waits for the next swap and returns what changed since this subscriber last looked.
    /// Fails with [`Error::Closed`] once every [`LiveConfig`](crate::LiveConfig) handle is gone.
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
