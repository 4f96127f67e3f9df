//! The watcher's view of a bucket: the latest revision of every key, and decoding it into a
//! config with a per-key fallback to the last good values.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::config::{decode_counting, decode_elidable, DecodeError, KeyError, KvConfig, Problem, RawValue, Source, APPLY_MAX_CHANGED};
use crate::schema::KeySet;
use crate::store::Entry;
use crate::values::{is_elided, Lookup, Resolved, Values};

/// Keys under this first token belong to kv-config itself (the published schema); the derive
/// refuses fields that would map there.
pub const RESERVED_PREFIX: &str = "__kvconfig.";

/// The key (relative to the config's prefix) the schema is published under.
pub const SCHEMA_KEY: &str = "__kvconfig.schema";

/// The key (relative to the config's prefix) every typed write of a config with cross-field
/// validators bumps, with a revision check, in the same atomic batch: two writers that each saw a
/// valid config can then never combine into one their validators refuse.
pub const GUARD_KEY: &str = "__kvconfig.guard";

/// Keys (relative to the config's prefix) under this prefix are expiring overrides: while
/// `__kvconfig.override.log_level` lives (it is written with a per-key TTL), its value is in
/// effect for `log_level`; when the server expires it, the underlying value is back. See
/// [`LiveConfig::set_for`](crate::LiveConfig::set_for).
pub const OVERRIDE_PREFIX: &str = "__kvconfig.override.";

/// The header an override carries with its expiry time (milliseconds since the Unix epoch), for
/// display; the server's per-key TTL is what expires it.
pub const EXPIRES_HEADER: &str = "KvConfig-Expires";

/// An override's value and when it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Override {
    pub(crate) value: RawValue,
    /// From [`EXPIRES_HEADER`]; `None` when another tool wrote the override without it.
    pub(crate) expires: Option<SystemTime>,
}

/// When an override entry expires, from its [`EXPIRES_HEADER`].
fn expires_of(e: &Entry) -> Option<SystemTime> {
    let (_, v) = e.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(EXPIRES_HEADER))?;
    let millis: u64 = v.trim().parse().ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(millis))
}

/// What changed in a [`View`] since the last [`take_dirty`](View::take_dirty).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) enum Dirty {
    /// Nothing.
    #[default]
    No,
    /// These relative keys (values or overrides; at most [`APPLY_MAX_CHANGED`]).
    Keys(Vec<String>),
    /// Too many keys to list, or the whole view is new.
    All,
}

#[derive(Debug, Default)]
pub(crate) struct View {
    /// Live values by relative key; shared with the snapshots (see [`Values`]).
    pub(crate) values: Values,
    /// Deleted or purged keys and the revision of their marker.
    pub(crate) markers: HashMap<String, u64>,
    /// The highest revision processed.
    pub(crate) seen: u64,
    /// The latest revision of the [`GUARD_KEY`] (0 = never written).
    pub(crate) guard: u64,
    /// Live overrides by the relative key they override (see [`OVERRIDE_PREFIX`]).
    pub(crate) overrides: HashMap<String, Override>,
    /// The latest revision of every override key that was seen, markers included.
    pub(crate) override_revisions: HashMap<String, u64>,
    /// What changed since the last [`take_dirty`](View::take_dirty).
    dirty: Dirty,
    /// Whether [`elide`](View::elide) dropped any value's bytes since the view was filled or its
    /// bytes were last restored (`false` for a fresh view).
    pub(crate) holds_elided: bool,
}

impl View {
    /// Records an entry; returns `true` if it changed anything. Entries at or below the revision
    /// already known for their key are ignored (async-nats may replay history after a reconnect).
    pub(crate) fn apply(&mut self, prefix: &str, e: &Entry) -> bool {
        self.apply_entry(prefix, &e.key, e)
    }

    /// A handle's own write, committed at `e.revision`, recorded before its watch delivers it: as
    /// [`apply`](Self::apply), but a put holds no server timestamp (`created: None`; the entry's
    /// `created` is not read) until the watch's delivery of the same revision fills it in.
    pub(crate) fn apply_own(&mut self, prefix: &str, e: &Entry) -> bool {
        self.apply_stamped(prefix, &e.key, e, None)
    }

    /// [`apply`](Self::apply) while filling a new view (the initial load of a bucket): the entry's
    /// key and value are moved into the view rather than copied, and the whole view counts as
    /// changed.
    pub(crate) fn apply_owned(&mut self, prefix: &str, mut e: Entry) -> bool {
        let key = std::mem::take(&mut e.key);
        if self.plain_put(prefix, &key, &e) {
            let value = std::mem::take(&mut e.value);
            return self.fill(prefix, key, value, &e);
        }
        self.apply_fresh(prefix, &e, &key)
    }

    /// [`apply_owned`](Self::apply_owned) of `e` under the full key `key` (the entry's own key
    /// field is not read): a new view filled from a shared watch's map.
    pub(crate) fn apply_with_key(&mut self, prefix: &str, key: String, e: &Entry) -> bool {
        if self.plain_put(prefix, &key, e) {
            return self.fill(prefix, key, e.value.clone(), e);
        }
        self.apply_fresh(prefix, e, &key)
    }

    /// Any other entry of a view being filled: the general path, and the whole view counts as
    /// changed.
    fn apply_fresh(&mut self, prefix: &str, e: &Entry, key: &str) -> bool {
        let changed = self.apply_entry(prefix, key, e);
        if changed {
            self.mark_dirty();
        }
        changed
    }

    /// A put of a config key under `prefix` into a view without delete markers: what almost every
    /// entry of an initial load is, taken by [`fill`](Self::fill).
    fn plain_put(&self, prefix: &str, key: &str, e: &Entry) -> bool {
        e.is_put() && self.markers.is_empty() && key.strip_prefix(prefix).is_some_and(|rel| !rel.starts_with(RESERVED_PREFIX))
    }

    /// Records a [`plain_put`](Self::plain_put) in a view being filled: one lookup in the map,
    /// which also keeps a later revision of the key if one is there already.
    fn fill(&mut self, prefix: &str, mut key: String, value: bytes::Bytes, e: &Entry) -> bool {
        self.seen = self.seen.max(e.revision);
        key.drain(..prefix.len());
        let value = RawValue { value, revision: e.revision, created: Some(e.created) };
        if !self.values.insert_if_newer(key, value) {
            return false;
        }
        self.mark_dirty();
        true
    }

    /// Records `e` under the full key `key` (the entry's own, or one the caller holds).
    fn apply_entry(&mut self, prefix: &str, key: &str, e: &Entry) -> bool {
        self.apply_stamped(prefix, key, e, Some(e.created))
    }

    /// [`apply_entry`](Self::apply_entry) with the time the value was stored, if known.
    fn apply_stamped(&mut self, prefix: &str, key: &str, e: &Entry, created: Option<SystemTime>) -> bool {
        self.seen = self.seen.max(e.revision);
        let Some(rel) = key.strip_prefix(prefix) else { return false };
        if rel.starts_with(RESERVED_PREFIX) {
            if rel == GUARD_KEY {
                self.guard = self.guard.max(e.revision);
            } else if let Some(target) = rel.strip_prefix(OVERRIDE_PREFIX) {
                return self.apply_override(target, e);
            }
            return false;
        }
        let held = self.revision_of(rel);
        if held > e.revision {
            return false;
        }
        if held == e.revision {
            // The watch's delivery of a write recorded by [`apply_own`](Self::apply_own): only its
            // timestamp is new.
            let unstamped = created.is_some() && e.is_put() && self.values.get(rel).is_some_and(|v| v.created.is_none() && v.revision == held);
            if unstamped {
                self.values.insert(rel, RawValue { value: e.value.clone(), revision: e.revision, created });
                self.touch(rel);
            }
            return unstamped;
        }
        if e.is_put() {
            if !self.markers.is_empty() {
                self.markers.remove(rel);
            }
            let value = RawValue { value: e.value.clone(), revision: e.revision, created };
            self.values.insert(rel, value);
        } else {
            self.values.remove(rel);
            self.markers.insert(rel.to_string(), e.revision);
        }
        self.touch(rel);
        true
    }

    fn apply_override(&mut self, target: &str, e: &Entry) -> bool {
        let latest = self.override_revisions.entry(target.to_string()).or_insert(0);
        if *latest >= e.revision {
            return false;
        }
        *latest = e.revision;
        if e.is_put() {
            let value = RawValue { value: e.value.clone(), revision: e.revision, created: Some(e.created) };
            self.overrides.insert(target.to_string(), Override { value, expires: expires_of(e) });
        } else {
            self.overrides.remove(target);
        }
        self.touch(target);
        true
    }

    /// Records that `rel`'s value (or override) changed.
    fn touch(&mut self, rel: &str) {
        match &mut self.dirty {
            Dirty::All => {}
            Dirty::Keys(keys) if keys.iter().any(|k| k == rel) => {}
            Dirty::Keys(keys) if keys.len() >= APPLY_MAX_CHANGED => self.dirty = Dirty::All,
            Dirty::Keys(keys) => keys.push(rel.to_string()),
            Dirty::No => self.dirty = Dirty::Keys(vec![rel.to_string()]),
        }
    }

    /// Drops the override of `target` at `revision` that the server no longer holds (its expiry
    /// marker was never delivered: a marker lives only its marker TTL). `now` is the key's latest
    /// revision on the server, `None` when it holds nothing for it.
    pub(crate) fn drop_override(&mut self, target: &str, revision: u64, now: Option<u64>) {
        if self.overrides.get(target).is_some_and(|o| o.value.revision == revision) {
            self.overrides.remove(target);
            self.override_revisions.insert(target.to_string(), now.unwrap_or(0));
            self.touch(target);
        }
    }

    /// The values with every live override in place of the value it overrides (shares the
    /// view's map; costs the overrides, not the map).
    pub(crate) fn effective(&self) -> Values {
        let mut values = self.values.clone();
        for (k, o) in &self.overrides {
            values.insert(k, o.value.clone());
        }
        values
    }

    /// Drops the bytes of the view's values that `config` re-encodes exactly (`elidable`, found
    /// by the decode of `decoded`, a clone of [`effective`](Self::effective) that `config` was
    /// decoded from). Returns the values in effect, sharing the view's map as `decoded` did, and
    /// the bytes taken out (to be freed off the caller's path). When anything else holds the
    /// view's map, nothing is dropped.
    pub(crate) fn elide<T: KvConfig>(&mut self, decoded: Values, elidable: &[u32], config: &T) -> (Values, Vec<bytes::Bytes>) {
        // Positions are in `decoded`'s base: if it folded (more than 64 overrides put in by
        // `effective`), they are not the view's.
        if elidable.is_empty() || !decoded.shares_base_with(&self.values) {
            return (decoded, Vec::new());
        }
        drop(decoded);
        let dropped = self.values.elide(elidable);
        if !dropped.is_empty() {
            self.holds_elided = true;
            #[cfg(debug_assertions)]
            {
                let resolved = Resolved::new(&self.values, Some(config));
                for (k, v) in self.values.iter().filter(|(_, v)| crate::values::is_elided(v)) {
                    let back = crate::values::Lookup::get(&resolved, k);
                    debug_assert!(back.is_some_and(|b| !crate::values::is_elided(b) && b.revision == v.revision), "`{k}` re-encodes");
                }
            }
        }
        let _ = config;
        (self.effective(), dropped)
    }

    /// A view sized for `n` keys.
    pub(crate) fn with_capacity(n: usize) -> Self {
        View { values: Values::with_capacity(n), ..View::default() }
    }

    /// The latest revision of a key, markers included (0 = never seen).
    pub(crate) fn revision_of(&self, rel: &str) -> u64 {
        match self.values.get(rel) {
            Some(v) => v.revision,
            None => self.markers.get(rel).copied().unwrap_or(0),
        }
    }

    /// Forces the next [`take_dirty`](View::take_dirty) to report everything as changed.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = Dirty::All;
    }

    pub(crate) fn take_dirty(&mut self) -> Dirty {
        std::mem::replace(&mut self.dirty, Dirty::No)
    }
}

/// The key an override entry under `prefix` overrides (relative to `prefix`), if `key` is one.
pub(crate) fn override_target<'k>(prefix: &str, key: &'k str) -> Option<&'k str> {
    key.strip_prefix(prefix)?.strip_prefix(OVERRIDE_PREFIX)
}

/// Keys with a live value that the schema does not know (map entries count as known), sorted.
pub(crate) fn unknown_keys(values: &Values, known: &KeySet) -> Vec<String> {
    let mut keys: Vec<String> = values.keys().filter(|k| !known.contains(k)).map(str::to_string).collect();
    keys.sort();
    keys
}

/// A decoded config, the values in effect, and the store values that were refused.
pub(crate) struct Decoded<T> {
    pub(crate) config: T,
    pub(crate) values: Values,
    pub(crate) rejected: Vec<KeyError>,
    /// `false` when every value in effect belongs to the schema (no unknown keys).
    pub(crate) has_unknown: bool,
    /// When asked for and nothing was refused: the positions of the values whose bytes the
    /// config re-encodes exactly (for [`Values::elide`] on the view's values).
    pub(crate) elidable: Vec<u32>,
}

/// What a decode of values that may be elided ([`Values::elide`]) needs besides them.
pub(crate) struct Decoding<'a, T> {
    /// The config the elided values (of the latest and of the last good values) were decoded
    /// into: the handle's config in effect. `None` where no value is elided (a fresh view).
    pub(crate) elided_from: Option<&'a T>,
    /// Also find the values whose bytes the new config re-encodes exactly.
    pub(crate) find_elidable: bool,
}

impl<T> Decoding<'_, T> {
    /// A fresh view's decode: nothing elided, nothing to find.
    pub(crate) fn fresh() -> Self {
        Decoding { elided_from: None, find_elidable: false }
    }
}

/// Decodes the latest values. If some keys are invalid and there are last good values, those keys
/// keep their last good value and are reported; a struct-level failure refuses the whole state.
pub(crate) fn decode_latest<T: KvConfig>(
    latest: &Values,
    good: Option<&Values>,
    source: &Source,
    how: Decoding<'_, T>,
) -> Result<Decoded<T>, DecodeError> {
    let first = if how.find_elidable {
        decode_elidable::<T>(&Resolved::new(latest, how.elided_from), source)
    } else {
        decode_counting::<T>(&Resolved::new(latest, how.elided_from), source).map(|(config, hits)| (config, hits, Vec::new()))
    };
    let err = match first {
        Ok((config, hits, elidable)) => {
            return Ok(Decoded { config, values: latest.clone(), rejected: Vec::new(), has_unknown: hits < latest.len(), elidable })
        }
        Err(err) => err,
    };
    let Some(good) = good else { return Err(err) };
    if err.errors().iter().any(|e| matches!(e.problem, Problem::Struct(_))) {
        return Err(err);
    }
    let mut candidate = latest.clone();
    let good_bytes = Resolved::new(good, how.elided_from);
    let mut schema = None;
    for e in err.errors() {
        let rel = e.key.strip_prefix(source.prefix.as_str()).unwrap_or(&e.key);
        // A required leaf missing from a nested map entry: the whole entry falls back.
        let rel = match e.problem {
            Problem::Missing => schema.get_or_insert_with(T::schema).entry_of(rel).unwrap_or_else(|| rel.to_string()),
            _ => rel.to_string(),
        };
        let rel = rel.as_str();
        let nested = format!("{rel}.");
        let stale: Vec<String> = candidate.keys().filter(|k| *k == rel || k.starts_with(&nested)).map(str::to_string).collect();
        for k in stale {
            candidate.remove(&k);
        }
        for (k, v) in good.iter().filter(|(k, _)| *k == rel || k.starts_with(&nested)) {
            // With its bytes: the next decode falls back to it again while the refusal stands.
            let v = if is_elided(v) { good_bytes.get(k).unwrap_or(v) } else { v };
            candidate.insert(k, v.clone());
        }
    }
    match decode_counting::<T>(&Resolved::new(&candidate, how.elided_from), source) {
        Ok((config, hits)) => {
            let has_unknown = hits < candidate.len();
            Ok(Decoded { config, values: candidate, rejected: err.into_iter().collect(), has_unknown, elidable: Vec::new() })
        }
        Err(_) => Err(err),
    }
}

/// [`decode_latest`] of the view's [`effective`](View::effective) values. A refused override is
/// reported under its own key (`__kvconfig.override.<key>`), so the message says where the
/// value came from.
pub(crate) fn decode_view<T: KvConfig>(view: &View, good: Option<&Values>, source: &Source, how: Decoding<'_, T>) -> Result<Decoded<T>, DecodeError> {
    let latest = view.effective();
    let from_override = |mut e: KeyError| {
        let rel = e.key.strip_prefix(source.prefix.as_str()).unwrap_or(&e.key);
        if let Some(o) = view.overrides.get(rel) {
            if e.revision == Some(o.value.revision) {
                e.key = format!("{}{OVERRIDE_PREFIX}{rel}", source.prefix);
            }
        }
        e
    };
    match decode_latest::<T>(&latest, good, source, how) {
        Ok(mut d) => {
            if !view.overrides.is_empty() {
                d.rejected = d.rejected.into_iter().map(from_override).collect();
            }
            Ok(d)
        }
        Err(e) if view.overrides.is_empty() => Err(e),
        Err(e) => Err(e.map_errors(from_override)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Operation;
    use std::time::SystemTime;

    fn entry(key: &str, value: &str, revision: u64, operation: Operation) -> Entry {
        Entry {
            bucket: "b".into(),
            key: key.into(),
            value: value.as_bytes().to_vec().into(),
            revision,
            delta: 0,
            created: SystemTime::UNIX_EPOCH,
            operation,
            headers: Vec::new(),
            batch_continues: false,
        }
    }

    #[test]
    fn an_own_write_is_recorded_unstamped_and_its_delivery_only_stamps_it() {
        let mut v = View::default();
        let mut delivered = entry("p.a", "1", 5, Operation::Put);
        delivered.created = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(9);
        assert!(v.apply_own("p.", &entry("p.a", "1", 5, Operation::Put)));
        assert_eq!(v.values.get("a").map(|r| (r.revision, r.created)), Some((5, None)));
        v.take_dirty();
        assert!(v.apply("p.", &delivered), "the delivery stamps the own write");
        assert_eq!(v.values.get("a").map(|r| r.created), Some(Some(delivered.created)));
        assert!(matches!(v.take_dirty(), Dirty::Keys(k) if k == ["a"]));
        assert!(!v.apply("p.", &delivered), "a second delivery changes nothing");
        assert!(!v.apply_own("p.", &entry("p.a", "1", 5, Operation::Put)), "nor does the own write again");
    }

    #[test]
    fn replayed_old_revisions_are_ignored() {
        let mut v = View::default();
        assert!(v.apply("p.", &entry("p.a", "1", 5, Operation::Put)));
        assert!(!v.apply("p.", &entry("p.a", "0", 3, Operation::Put)), "older put replayed");
        assert!(v.apply("p.", &entry("p.a", "", 7, Operation::Delete)));
        assert!(!v.apply("p.", &entry("p.a", "1", 5, Operation::Put)), "put older than a delete marker");
        assert_eq!(v.revision_of("a"), 7);
        assert!(v.values.get("a").is_none());
        assert!(!v.apply("p.", &entry("q.a", "1", 9, Operation::Put)), "outside the prefix");
        assert!(!v.apply("p.", &entry("p.__kvconfig.schema", "{}", 10, Operation::Put)), "reserved key");
        assert_eq!(v.seen, 10);
        assert_eq!(v.take_dirty(), Dirty::Keys(vec!["a".to_string()]));
        assert_eq!(v.take_dirty(), Dirty::No);
        for i in 0..=APPLY_MAX_CHANGED as u64 {
            v.apply("p.", &entry(&format!("p.k{i}"), "1", 20 + i, Operation::Put));
        }
        assert_eq!(v.take_dirty(), Dirty::All, "more keys than an apply takes on");
    }

    #[test]
    fn a_view_being_filled_keeps_the_latest_revision_and_its_own_keys() {
        let mut v = View::with_capacity(4);
        assert!(v.apply_owned("p.", entry("p.a", "5", 5, Operation::Put)));
        assert!(!v.apply_owned("p.", entry("p.a", "3", 3, Operation::Put)), "older put delivered again");
        assert!(!v.apply_owned("p.", entry("p.a", "5", 5, Operation::Put)), "the same revision again");
        assert!(v.apply_owned("p.", entry("p.a", "8", 8, Operation::Put)), "a later put replaces it");
        assert!(!v.apply_owned("p.", entry("q.b", "1", 9, Operation::Put)), "outside the prefix");
        assert!(!v.apply_owned("p.", entry("p.__kvconfig.guard", "1", 10, Operation::Put)));
        assert_eq!(v.guard, 10, "the guard key is tracked, not a value");
        assert!(v.apply_owned("p.", entry("p.c", "", 11, Operation::Delete)));
        assert!(!v.apply_owned("p.", entry("p.c", "1", 4, Operation::Put)), "a put older than the marker");
        assert!(v.apply_owned("p.", entry("p.c", "1", 12, Operation::Put)), "a put after the marker");
        let shared = entry("p.d", "7", 13, Operation::Put);
        assert!(v.apply_with_key("p.", "p.d".to_string(), &shared));
        assert_eq!(v.seen, 13);
        let got: Vec<(String, u64, Vec<u8>)> = {
            let mut g: Vec<_> = v.values.iter().map(|(k, r)| (k.to_string(), r.revision, r.value.to_vec())).collect();
            g.sort();
            g
        };
        assert_eq!(
            got,
            vec![("a".into(), 8, b"8".to_vec()), ("c".into(), 12, b"1".to_vec()), ("d".into(), 13, b"7".to_vec())]
        );
        assert!(!v.markers.contains_key("c"), "the later put clears the marker");
        assert_eq!(&shared.value[..], b"7", "a shared entry keeps its value");
        assert_eq!(v.take_dirty(), Dirty::All, "a view being filled is new as a whole");
    }
}
