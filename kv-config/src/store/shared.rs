//! [`SharedWatches`]: where the [`LiveConfig`](crate::LiveConfig) handles started on one store
//! find the watch they share.

use std::any::Any;
use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex};

/// The table of watches that [`LiveConfig`](crate::LiveConfig) handles on one store share: one
/// watch (one server consumer) per bucket, whatever the number of handles, configs and prefixes.
///
/// Opaque. A [`Store`](super::Store) holds one, shared by its clones, and returns it from
/// [`Store::shared_watches`](super::Store::shared_watches); [`NatsStore`](super::NatsStore) and
/// [`MemoryStore`](super::MemoryStore) do. A store that returns `None` gives each handle its own
/// watch.
///
/// ```
/// use kv_config::store::{MemoryStore, SharedWatches, Store};
/// let store = MemoryStore::new();
/// let clone = store.clone();
/// // Clones of one store share their watches.
/// assert!(SharedWatches::same(store.shared_watches().unwrap(), clone.shared_watches().unwrap()));
/// assert!(!SharedWatches::same(store.shared_watches().unwrap(), &SharedWatches::default()));
/// ```
#[derive(Clone, Default)]
pub struct SharedWatches {
    slots: Arc<Mutex<HashMap<String, Arc<dyn Any + Send + Sync>>>>,
}

impl SharedWatches {
    /// Whether `a` and `b` are the same table (handles on them share watches).
    pub fn same(a: &SharedWatches, b: &SharedWatches) -> bool {
        Arc::ptr_eq(&a.slots, &b.slots)
    }

    /// The slot under `key`, made on first use. A slot of another type under the same key is
    /// replaced (it cannot happen within kv-config, which is the only caller).
    pub(crate) fn slot<S: Any + Send + Sync + Default>(&self, key: &str) -> Arc<S> {
        let mut slots = self.slots.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(slot) = slots.get(key).and_then(|s| s.clone().downcast::<S>().ok()) {
            return slot;
        }
        let slot = Arc::new(S::default());
        slots.insert(key.to_string(), slot.clone());
        slot
    }
}

impl fmt::Debug for SharedWatches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.slots.lock().map_or(0, |s| s.len());
        f.debug_struct("SharedWatches").field("slots", &n).finish()
    }
}
