//! [`Dense`]: the base map of [`Values`](super::Values), laid out for memory.
//!
//! A `HashMap<String, RawValue>` keeps its 80-byte entries in the hash table itself, and the table
//! is kept at most 7/8 full in a power of two: 1,000 keys took 2,048 slots, 165,900 bytes (measured
//! by heaptrack, BENCHMARKS.md "Memory"). Here the entries sit in one vector sized to the
//! number expected (the keys a watch announced, or a shared hub's keys under a prefix, delete
//! markers included), and the hash table holds 4-byte indices into it, as `indexmap` does with
//! 8-byte ones: about 90,000 bytes for the same 1,000 keys.
//!
//! Keys of up to 24 bytes (most dotted keys) are held inline in their entry ([`CompactString`]):
//! no allocation of their own, and a look-up compares the key in the entry it reads anyway. With
//! keys on the heap, a decode of a bucket written in another order than the schema's spent 40 %
//! of its look-ups fetching the key from memory.

use compact_str::CompactString;
use hashbrown::hash_table::{self, HashTable};

use crate::config::RawValue;

/// Hashes keys; foldhash rather than SipHash, see [`Dense::hasher`].
type Hasher = foldhash::fast::RandomState;

/// Raw values by key: entries in a dense vector, found through a table of their indices.
#[derive(Clone, Default)]
pub(crate) struct Dense {
    entries: Vec<(CompactString, RawValue)>,
    index: HashTable<u32>,
    /// foldhash rather than SipHash: a cold load hashes every key two or three times (fill,
    /// decode), and at 50,000 keys SipHash was a measurable part of it. Keys come from the
    /// bucket's writers; the hasher is seeded at random, so they cannot aim at its slots offline.
    hasher: Hasher,
}

impl std::fmt::Debug for Dense {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.entries.iter().map(|(k, v)| (k, v))).finish()
    }
}

/// Where a key is, or where it would go.
pub(crate) enum Place<'a> {
    Occupied(&'a mut RawValue),
    Vacant(Vacant<'a>),
}

/// A key's place in [`Dense`] that holds nothing yet: the index slot the look-up found free, so
/// the insert probes the table no second time.
pub(crate) struct Vacant<'a> {
    slot: hash_table::VacantEntry<'a, u32>,
    entries: &'a mut Vec<(CompactString, RawValue)>,
}

impl Vacant<'_> {
    /// Puts `key` (the one looked up) there: a `&str` of up to 24 bytes is copied inline, a
    /// longer `String` keeps its buffer.
    pub(crate) fn insert(self, key: impl Into<CompactString>, value: RawValue) {
        // Memory runs out long before: 2^32 entries take over 300 GB.
        let i = u32::try_from(self.entries.len()).expect("fewer than 2^32 keys");
        self.slot.insert(i);
        self.entries.push((key.into(), value));
    }
}

impl Dense {
    /// Room for `n` keys without growing.
    pub(crate) fn with_capacity(n: usize) -> Self {
        Dense { entries: Vec::with_capacity(n), index: HashTable::with_capacity(n), hasher: Hasher::default() }
    }

    pub(crate) fn len(&self) -> usize {
        self.entries.len()
    }

    fn hash(&self, key: &str) -> u64 {
        use std::hash::BuildHasher;
        self.hasher.hash_one(key)
    }

    fn slot(&self, key: &str) -> Option<usize> {
        self.slot_hashed(self.hash(key), key)
    }

    pub(crate) fn get(&self, key: &str) -> Option<&RawValue> {
        self.slot(key).map(|i| &self.entries[i].1)
    }

    /// [`get`](Self::get), with the entry's position (for [`value_at_mut`](Self::value_at_mut)).
    /// The entry at `hint` is looked at first: when it holds `key` (keys read in the order they
    /// were stored), the key is not hashed and the table not probed.
    pub(crate) fn get_indexed(&self, key: &str, hint: u32) -> Option<(&RawValue, u32)> {
        if let Some((k, v)) = self.entries.get(hint as usize) {
            if k == key {
                return Some((v, hint));
            }
        }
        // Positions fit in u32: see `Vacant::insert`.
        self.slot(key).map(|i| (&self.entries[i].1, i as u32))
    }

    /// The value at a position [`get_indexed`](Self::get_indexed) gave (`None` past the end).
    pub(crate) fn value_at_mut(&mut self, position: u32) -> Option<&mut RawValue> {
        self.entries.get_mut(position as usize).map(|(_, v)| v)
    }

    pub(crate) fn contains_key(&self, key: &str) -> bool {
        self.slot(key).is_some()
    }

    /// Where `key` is or would go: one look-up for a read-then-write.
    pub(crate) fn place(&mut self, key: &str) -> Place<'_> {
        use std::hash::BuildHasher;
        let hash = self.hash(key);
        let Dense { entries, index, hasher } = self;
        let found = index.entry(
            hash,
            |&i| entries[i as usize].0 == key,
            |&j| hasher.hash_one(entries[j as usize].0.as_str()),
        );
        match found {
            hash_table::Entry::Occupied(at) => Place::Occupied(&mut entries[*at.get() as usize].1),
            hash_table::Entry::Vacant(slot) => Place::Vacant(Vacant { slot, entries }),
        }
    }

    fn slot_hashed(&self, hash: u64, key: &str) -> Option<usize> {
        let entries = &self.entries;
        self.index.find(hash, |&i| entries[i as usize].0 == key).map(|&i| i as usize)
    }

    /// Sets `key`; returns the value it replaced.
    pub(crate) fn insert(&mut self, key: &str, value: RawValue) -> Option<RawValue> {
        match self.place(key) {
            Place::Occupied(slot) => Some(std::mem::replace(slot, value)),
            Place::Vacant(v) => {
                v.insert(key, value);
                None
            }
        }
    }

    /// Removes `key`; returns its value. The last entry takes its place in the vector.
    pub(crate) fn remove(&mut self, key: &str) -> Option<RawValue> {
        let hash = self.hash(key);
        let entries = &self.entries;
        let found = self.index.find_entry(hash, |&i| entries[i as usize].0 == key).ok()?;
        let (i, _) = found.remove();
        let i = i as usize;
        let last = self.entries.len() - 1;
        if i != last {
            let moved = self.hash(&self.entries[last].0);
            let slot = self.index.find_mut(moved, |&j| j as usize == last).expect("every entry is indexed");
            *slot = i as u32;
        }
        Some(self.entries.swap_remove(i).1)
    }

    /// Every key and value, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (&str, &RawValue)> + '_ {
        self.entries.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// Gives back the room beyond the entries held: for a map filled without knowing its size
    /// (the keys under one prefix of a shared watch's first pass), which grew by doubling.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.entries.shrink_to_fit();
        let (entries, hasher) = (&self.entries, &self.hasher);
        self.index.shrink_to_fit(|&j| {
            use std::hash::BuildHasher;
            hasher.hash_one(entries[j as usize].0.as_str())
        });
    }
}

impl FromIterator<(String, RawValue)> for Dense {
    fn from_iter<I: IntoIterator<Item = (String, RawValue)>>(iter: I) -> Self {
        let iter = iter.into_iter();
        let mut map = Dense::with_capacity(iter.size_hint().0);
        for (k, v) in iter {
            map.insert(&k, v);
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::raw;
    use super::*;

    /// Random inserts, replacements and removals agree with a `HashMap` at every step, and every
    /// key stays found after removals move entries around.
    #[test]
    fn agrees_with_a_hash_map() {
        let mut rng = fastrand::Rng::with_seed(7);
        let mut dense = Dense::with_capacity(4);
        let mut plain = std::collections::HashMap::new();
        for step in 0..20_000u64 {
            let key = format!("k{}", rng.u32(0..300));
            if rng.u8(0..3) == 0 {
                assert_eq!(dense.remove(&key), plain.remove(&key), "step {step}: remove {key}");
            } else {
                assert_eq!(dense.insert(&key, raw(step)), plain.insert(key, raw(step)), "step {step}");
            }
            assert_eq!(dense.len(), plain.len());
            if step % 997 == 0 {
                for (k, v) in &plain {
                    assert_eq!(dense.get(k), Some(v), "step {step}: {k}");
                    // Any hint (right, wrong, past the end) finds the key at its own position.
                    let (at, i) = dense.get_indexed(k, rng.u32(0..400)).expect("found with a hint");
                    assert_eq!((at, dense.entries[i as usize].0.as_str()), (v, k.as_str()), "step {step}: {k} at {i}");
                    assert_eq!(dense.get_indexed(k, i), Some((v, i)), "the right hint");
                }
                assert_eq!(dense.get_indexed("absent", 0), None);
                assert_eq!(dense.iter().count(), plain.len());
            }
        }
        dense.shrink_to_fit();
        assert_eq!(dense.entries.capacity(), dense.len(), "no room beyond the entries");
        assert!(plain.iter().all(|(k, v)| dense.get(k) == Some(v)), "every key found after shrinking");
        let collected: Dense = plain.clone().into_iter().collect();
        assert!(plain.iter().all(|(k, v)| collected.get(k) == Some(v)) && collected.len() == plain.len());
        assert!(!dense.contains_key("absent") && dense.remove("absent").is_none());
    }
}
