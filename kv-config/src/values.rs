//! [`Values`]: the raw values in effect, shared between the watcher's view and every snapshot
//! without copying the map on each change.
//!
//! A snapshot must keep the values it was built from (revision checks, provenance, fallback)
//! while the watcher moves on. Copying a 50,000-entry map per change made every change cost the
//! whole config; here a change costs its own keys: values live in a `base` map shared by `Arc`,
//! and the changes since the base in a persistent `delta` map (structural sharing, O(log n)
//! insert on a shared copy). While nothing shares the base (the initial load), writes go straight
//! into it at plain `HashMap` speed. When the delta grows past an eighth of the base it is folded
//! into a new base, so the fold's O(n) is paid once per n/8 changes. The base is a [`dense`] map:
//! entries in one vector, found through 4-byte indices, about half a `HashMap`'s bytes. Once a
//! handle's config is decoded, the bytes its config re-encodes exactly are dropped ([`resolve`]).

mod dense;
mod resolve;

use std::sync::Arc;

use compact_str::CompactString;

use crate::config::{RawValue, RawValues};
use dense::{Dense as Base, Place};
pub(crate) use resolve::{is_elided, Resolved};

/// The raw values in effect by relative key: a shared base plus the changes since.
#[derive(Debug, Clone, Default)]
pub(crate) struct Values {
    base: Arc<Base>,
    /// Changes since `base`: `Some` replaces or adds a value, `None` removes one. A write to a
    /// shared delta copies the map node it lands in, every entry of it: keys of up to 24 bytes
    /// are inline ([`CompactString`]), so that copy allocates no key.
    delta: imbl::HashMap<CompactString, Option<RawValue>>,
    len: usize,
}

/// Read access to raw values by relative key, for the decoder: a plain [`RawValues`] map or
/// [`Values`].
pub(crate) trait Lookup {
    fn get(&self, key: &str) -> Option<&RawValue>;
    /// [`get`](Lookup::get), with the value's position in a [`Values`] base where it has one
    /// (for [`Values::elide`]). `hint`: the position to look at first, before hashing the key (a
    /// decode asks for the position after the last key it found: a bucket written in schema
    /// order, as [`seed_defaults`](crate::Builder::seed_defaults) writes it, is read in that order;
    /// `u32::MAX`: no hint).
    fn get_indexed(&self, key: &str, hint: u32) -> Option<(&RawValue, Option<u32>)> {
        let _ = hint;
        self.get(key).map(|v| (v, None))
    }
    /// How many values there are.
    fn len(&self) -> usize;
    /// Every key, in no particular order.
    fn keys_dyn(&self) -> Box<dyn Iterator<Item = &str> + '_>;
}

impl Lookup for RawValues {
    fn get(&self, key: &str) -> Option<&RawValue> {
        std::collections::HashMap::get(self, key)
    }
    fn len(&self) -> usize {
        std::collections::HashMap::len(self)
    }
    fn keys_dyn(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        Box::new(self.keys().map(String::as_str))
    }
}

impl Lookup for Values {
    fn get(&self, key: &str) -> Option<&RawValue> {
        Values::get(self, key)
    }
    fn len(&self) -> usize {
        Values::len(self)
    }
    fn get_indexed(&self, key: &str, hint: u32) -> Option<(&RawValue, Option<u32>)> {
        // An empty delta (every start's decode) is not asked: its lookup would hash the key.
        if !self.delta.is_empty() {
            if let Some(change) = self.delta.get(key) {
                return change.as_ref().map(|v| (v, None));
            }
        }
        self.base.get_indexed(key, hint).map(|(v, i)| (v, Some(i)))
    }
    fn keys_dyn(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        Box::new(self.keys())
    }
}

impl From<RawValues> for Values {
    fn from(map: RawValues) -> Self {
        Values::from_base(map.into_iter().collect())
    }
}

impl PartialEq for Values {
    /// Same keys at the same revisions with the same bytes (a value whose bytes were dropped
    /// ([`Values::elide`]) equals one of the same revision and time).
    fn eq(&self, other: &Self) -> bool {
        let same = |a: &RawValue, b: &RawValue| {
            a.revision == b.revision && a.created == b.created && (a.value == b.value || is_elided(a) || is_elided(b))
        };
        self.len == other.len && self.iter().all(|(k, v)| other.get(k).is_some_and(|o| same(v, o)))
    }
}

impl Values {
    fn from_base(base: Base) -> Self {
        Values { len: base.len(), base: Arc::new(base), delta: imbl::HashMap::new() }
    }

    /// Room for `n` values in the base.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Values::from_base(Base::with_capacity(n))
    }

    pub(crate) fn get(&self, key: &str) -> Option<&RawValue> {
        if self.delta.is_empty() {
            return self.base.get(key);
        }
        match self.delta.get(key) {
            Some(change) => change.as_ref(),
            None => self.base.get(key),
        }
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Sets `key`; returns the value it replaced.
    pub(crate) fn insert(&mut self, key: &str, value: RawValue) -> Option<RawValue> {
        let old = self.write(key, Some(value));
        if old.is_none() {
            self.len += 1;
        }
        old
    }

    /// Sets `key` unless it holds `value`'s revision or a later one; returns whether it did. While
    /// nothing shares the base (the initial load) this is one lookup, and the key is moved in.
    pub(crate) fn insert_if_newer(&mut self, key: String, value: RawValue) -> bool {
        if self.delta.is_empty() {
            if let Some(base) = Arc::get_mut(&mut self.base) {
                return match base.place(&key) {
                    Place::Occupied(old) if old.revision >= value.revision => false,
                    Place::Occupied(old) => {
                        *old = value;
                        true
                    }
                    Place::Vacant(v) => {
                        v.insert(key, value);
                        self.len += 1;
                        true
                    }
                };
            }
        }
        if self.get(&key).is_some_and(|old| old.revision >= value.revision) {
            return false;
        }
        self.insert(&key, value);
        true
    }

    /// Removes `key`; returns its value.
    pub(crate) fn remove(&mut self, key: &str) -> Option<RawValue> {
        let old = self.write(key, None);
        if old.is_some() {
            self.len -= 1;
        }
        old
    }

    fn write(&mut self, key: &str, value: Option<RawValue>) -> Option<RawValue> {
        if self.delta.is_empty() {
            // Nothing shares the base (the initial load, or after a fold): write in place.
            if let Some(base) = Arc::get_mut(&mut self.base) {
                return match value {
                    Some(v) => match base.place(key) {
                        Place::Occupied(slot) => Some(std::mem::replace(slot, v)),
                        Place::Vacant(slot) => {
                            slot.insert(key, v);
                            None
                        }
                    },
                    None => base.remove(key),
                };
            }
        }
        let old = self.get(key).cloned();
        if value.is_none() && old.is_none() {
            return None;
        }
        if value.is_none() && !self.base.contains_key(key) {
            self.delta.remove(key);
        } else {
            self.delta.insert(CompactString::from(key), value);
        }
        if self.delta.len() > 64 && self.delta.len() > self.base.len() / 8 {
            self.fold();
        }
        old
    }

    /// Folds the delta into a new base (O(n), once per n/8 changes).
    fn fold(&mut self) {
        let mut map = Base::with_capacity(self.len);
        for (k, v) in self.iter() {
            map.insert(k, v.clone());
        }
        *self = Values::from_base(map);
    }

    /// Whether `other` is a clone of this map on the same base (positions from one are
    /// positions in the other): not so once either folded its changes into a new base.
    pub(crate) fn shares_base_with(&self, other: &Values) -> bool {
        Arc::ptr_eq(&self.base, &other.base)
    }

    /// Whether nothing else holds this map's base and no change is pending on it: a fresh view
    /// (the start, a reload), whose values [`elide`](Self::elide) can still drop.
    pub(crate) fn is_unshared(&self) -> bool {
        self.delta.is_empty() && Arc::strong_count(&self.base) == 1
    }

    /// Drops the bytes of the values at `positions` ([`Lookup::get_indexed`] on this map or on a
    /// clone of it, now gone): the decoder found that the config decoded from them re-encodes
    /// them byte for byte, so [`Resolved`] reads them back from it. Does nothing while anything
    /// shares the base or a change is pending. Returns the bytes it took out, for the caller to
    /// free off its path (50,000 frees are a millisecond or two).
    pub(crate) fn elide(&mut self, positions: &[u32]) -> Vec<bytes::Bytes> {
        if !self.delta.is_empty() {
            return Vec::new();
        }
        let Some(base) = Arc::get_mut(&mut self.base) else { return Vec::new() };
        let mut dropped = Vec::with_capacity(positions.len());
        for &i in positions {
            if let Some(v) = base.value_at_mut(i).filter(|v| !is_elided(v)) {
                dropped.push(std::mem::replace(&mut v.value, resolve::marker()));
            }
        }
        dropped
    }

    /// Gives back the base's room beyond its entries, while nothing shares it (a view just filled).
    pub(crate) fn shrink_to_fit(&mut self) {
        if let Some(base) = Arc::get_mut(&mut self.base) {
            base.shrink_to_fit();
        }
    }

    /// Every key and value, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> + '_ {
        let base = self.base.iter().filter(|(k, _)| !self.delta.contains_key(*k));
        let delta = self.delta.iter().filter_map(|(k, v)| v.as_ref().map(|v| (k.as_str(), v)));
        base.chain(delta)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &str> + '_ {
        self.iter().map(|(k, _)| k)
    }

    /// A plain map of the same values.
    #[cfg(test)]
    pub(crate) fn to_map(&self) -> RawValues {
        self.iter().map(|(k, v)| (k.to_string(), v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A value whose bytes and revision are `rev` (also for [`dense`]'s tests).
    pub(super) fn raw(rev: u64) -> RawValue {
        RawValue { value: rev.to_string().into(), revision: rev, created: None }
    }

    #[test]
    fn a_shared_copy_keeps_its_values_while_the_other_changes() {
        let mut a = Values::with_capacity(4);
        for i in 0..200 {
            a.insert(&format!("k{i}"), raw(i));
        }
        let before = a.clone();
        a.insert("k1", raw(1000));
        a.remove("k2");
        a.insert("new", raw(1001));
        assert_eq!(a.remove("absent"), None);
        assert_eq!(before.get("k1"), Some(&raw(1)));
        assert_eq!(before.get("k2"), Some(&raw(2)));
        assert!(!before.contains_key("new"));
        assert_eq!(before.len(), 200);
        assert_eq!(a.get("k1"), Some(&raw(1000)));
        assert!(!a.contains_key("k2"));
        assert_eq!(a.len(), 200);
        assert_eq!(a.iter().count(), 200);
        assert_ne!(a, before);
        // Enough changes to fold the delta into a new base: same contents.
        let mut b = a.clone();
        for i in 0..150 {
            b.insert(&format!("k{i}"), raw(2000 + i));
        }
        assert_eq!(b.len(), 201, "k2 is back");
        assert_eq!(b.iter().count(), 201);
        assert_eq!(b.get("k149"), Some(&raw(2149)));
        assert_eq!(b.get("new"), Some(&raw(1001)));
        assert_eq!(a.get("k149"), Some(&raw(149)));
        assert!(!a.contains_key("k2"));
        let plain = Values::from(b.to_map());
        assert_eq!(plain, b);
        // A key added in the delta and removed again leaves no trace.
        let mut c = before.clone();
        c.insert("tmp", raw(5));
        c.remove("tmp");
        assert_eq!(c, before);
    }
}
