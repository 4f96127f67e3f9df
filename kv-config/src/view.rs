//! The watcher's view of a bucket: the latest revision of every key, and decoding it into a
//! config with a per-key fallback to the last good values.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::config::{decode_counting, DecodeError, KeyError, KvConfig, Problem, RawValue, RawValues, Source};
use crate::schema::KeySet;
use crate::store::Entry;

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

#[derive(Debug, Default)]
pub(crate) struct View {
    /// Live values by relative key; shared with the snapshot in effect, copied on the next write.
    pub(crate) values: Arc<RawValues>,
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
    /// Something changed since the last [`take_dirty`](View::take_dirty).
    dirty: bool,
}

impl View {
    /// Records an entry; returns `true` if it changed anything. Entries at or below the revision
    /// already known for their key are ignored (async-nats may replay history after a reconnect).
    pub(crate) fn apply(&mut self, prefix: &str, e: &Entry) -> bool {
        self.seen = self.seen.max(e.revision);
        let Some(rel) = e.key.strip_prefix(prefix) else { return false };
        if rel.starts_with(RESERVED_PREFIX) {
            if rel == GUARD_KEY {
                self.guard = self.guard.max(e.revision);
            } else if let Some(target) = rel.strip_prefix(OVERRIDE_PREFIX) {
                return self.apply_override(target, e);
            }
            return false;
        }
        if self.revision_of(rel) >= e.revision {
            return false;
        }
        let values = Arc::make_mut(&mut self.values);
        if e.is_put() {
            self.markers.remove(rel);
            let value = RawValue { value: e.value.clone(), revision: e.revision, created: Some(e.created) };
            match values.get_mut(rel) {
                Some(slot) => *slot = value,
                None => {
                    values.insert(rel.to_string(), value);
                }
            }
        } else {
            values.remove(rel);
            self.markers.insert(rel.to_string(), e.revision);
        }
        self.dirty = true;
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
        self.dirty = true;
        true
    }

    /// Drops the override of `target` at `revision` that the server no longer holds (its expiry
    /// marker was never delivered: a marker lives only its marker TTL). `now` is the key's latest
    /// revision on the server, `None` when it holds nothing for it.
    pub(crate) fn drop_override(&mut self, target: &str, revision: u64, now: Option<u64>) {
        if self.overrides.get(target).is_some_and(|o| o.value.revision == revision) {
            self.overrides.remove(target);
            self.override_revisions.insert(target.to_string(), now.unwrap_or(0));
            self.dirty = true;
        }
    }

    /// The values with every live override in place of the value it overrides. Shares the
    /// view's map when there is no override.
    pub(crate) fn effective(&self) -> Arc<RawValues> {
        if self.overrides.is_empty() {
            return Arc::clone(&self.values);
        }
        let mut values = RawValues::clone(&self.values);
        for (k, o) in &self.overrides {
            values.insert(k.clone(), o.value.clone());
        }
        Arc::new(values)
    }

    /// A view sized for `n` keys.
    pub(crate) fn with_capacity(n: usize) -> Self {
        View { values: Arc::new(RawValues::with_capacity(n)), ..View::default() }
    }

    /// The latest revision of a key, markers included (0 = never seen).
    pub(crate) fn revision_of(&self, rel: &str) -> u64 {
        match self.values.get(rel) {
            Some(v) => v.revision,
            None => self.markers.get(rel).copied().unwrap_or(0),
        }
    }

    /// Forces the next [`take_dirty`](View::take_dirty) to report a change.
    pub(crate) fn mark_dirty(&mut self) {
        self.dirty = true;
    }

    pub(crate) fn take_dirty(&mut self) -> bool {
        std::mem::take(&mut self.dirty)
    }
}

/// Keys with a live value that the schema does not know (map entries count as known), sorted.
pub(crate) fn unknown_keys(values: &RawValues, known: &KeySet) -> Vec<String> {
    let mut keys: Vec<String> = values.keys().filter(|k| !known.contains(k)).cloned().collect();
    keys.sort();
    keys
}

/// A decoded config, the values in effect, and the store values that were refused.
pub(crate) struct Decoded<T> {
    pub(crate) config: T,
    pub(crate) values: Arc<RawValues>,
    pub(crate) rejected: Vec<KeyError>,
    /// `false` when every value in effect belongs to the schema (no unknown keys).
    pub(crate) has_unknown: bool,
}

/// Decodes the latest values. If some keys are invalid and there are last good values, those keys
/// keep their last good value and are reported; a struct-level failure refuses the whole state.
pub(crate) fn decode_latest<T: KvConfig>(
    latest: &Arc<RawValues>,
    good: Option<&RawValues>,
    source: &Source,
) -> Result<Decoded<T>, DecodeError> {
    let err = match decode_counting::<T>(latest, source) {
        Ok((config, hits)) => {
            return Ok(Decoded { config, values: Arc::clone(latest), rejected: Vec::new(), has_unknown: hits < latest.len() })
        }
        Err(err) => err,
    };
    let Some(good) = good else { return Err(err) };
    if err.errors().iter().any(|e| matches!(e.problem, Problem::Struct(_))) {
        return Err(err);
    }
    let mut candidate = RawValues::clone(latest);
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
        candidate.retain(|k, _| k != rel && !k.starts_with(&nested));
        for (k, v) in good.iter().filter(|(k, _)| *k == rel || k.starts_with(&nested)) {
            candidate.insert(k.clone(), v.clone());
        }
    }
    match decode_counting::<T>(&candidate, source) {
        Ok((config, hits)) => {
            let has_unknown = hits < candidate.len();
            Ok(Decoded { config, values: Arc::new(candidate), rejected: err.into_iter().collect(), has_unknown })
        }
        Err(_) => Err(err),
    }
}

/// [`decode_latest`] of the view's [`effective`](View::effective) values. A refused override is
/// reported under its own key (`__kvconfig.override.<key>`), so the message says where the
/// value came from.
pub(crate) fn decode_view<T: KvConfig>(view: &View, good: Option<&RawValues>, source: &Source) -> Result<Decoded<T>, DecodeError> {
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
    match decode_latest::<T>(&latest, good, source) {
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
        assert!(v.take_dirty());
        assert!(!v.take_dirty());
    }
}
