//! The watcher's view of a bucket: the latest revision of every key, and decoding it into a
//! config with a per-key fallback to the last good values.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;

use crate::config::{DecodeError, KeyError, KvConfig, Problem, RawValue, RawValues, Source};
use crate::store::Entry;

/// Keys under this first token belong to kv-config itself (the published schema); the derive
/// refuses fields that would map there.
pub const RESERVED_PREFIX: &str = "__kvconfig.";

/// The key (relative to the config's prefix) the schema is published under.
pub const SCHEMA_KEY: &str = "__kvconfig.schema";

#[derive(Debug, Clone)]
pub(crate) struct KeyState {
    /// `None` for a delete or purge marker.
    pub(crate) value: Option<Bytes>,
    pub(crate) revision: u64,
}

#[derive(Debug, Default)]
pub(crate) struct View {
    pub(crate) latest: HashMap<String, KeyState>,
    /// The highest revision processed.
    pub(crate) seen: u64,
}

impl View {
    /// Records an entry; returns the relative key if it changed anything. Entries at or below the
    /// revision already known for their key are ignored (async-nats may replay history).
    pub(crate) fn apply(&mut self, prefix: &str, e: &Entry) -> Option<String> {
        self.seen = self.seen.max(e.revision);
        let rel = e.key.strip_prefix(prefix)?;
        if rel.starts_with(RESERVED_PREFIX) {
            return None;
        }
        if self.latest.get(rel).is_some_and(|k| k.revision >= e.revision) {
            return None;
        }
        let value = e.is_put().then(|| e.value.clone());
        self.latest.insert(rel.to_string(), KeyState { value, revision: e.revision });
        Some(rel.to_string())
    }

    /// Live values only.
    pub(crate) fn raw(&self) -> RawValues {
        self.latest
            .iter()
            .filter_map(|(k, s)| s.value.as_ref().map(|v| (k.clone(), RawValue { value: v.clone(), revision: s.revision })))
            .collect()
    }

    pub(crate) fn revisions(&self) -> HashMap<String, u64> {
        self.latest.iter().map(|(k, s)| (k.clone(), s.revision)).collect()
    }

    /// Keys with a live value that the schema does not know.
    pub(crate) fn unknown_keys(&self, known: &HashSet<String>) -> Vec<String> {
        let mut keys: Vec<String> = self
            .latest
            .iter()
            .filter(|(k, s)| s.value.is_some() && !known.contains(*k))
            .map(|(k, _)| k.clone())
            .collect();
        keys.sort();
        keys
    }
}

/// A decoded config, the values in effect, and the store values that were refused.
pub(crate) struct Decoded<T> {
    pub(crate) config: T,
    pub(crate) values: RawValues,
    pub(crate) rejected: Vec<KeyError>,
}

/// Decodes the latest values. If some keys are invalid and there are last good values, those keys
/// keep their last good value and are reported; a struct-level failure refuses the whole state.
pub(crate) fn decode_latest<T: KvConfig>(
    latest: RawValues,
    good: Option<&RawValues>,
    source: &Source,
) -> Result<Decoded<T>, DecodeError> {
    let err = match T::decode(&latest, source) {
        Ok(config) => return Ok(Decoded { config, values: latest, rejected: Vec::new() }),
        Err(err) => err,
    };
    let Some(good) = good else { return Err(err) };
    if err.errors().iter().any(|e| matches!(e.problem, Problem::Struct(_))) {
        return Err(err);
    }
    let mut candidate = latest;
    for e in err.errors() {
        let rel = e.key.strip_prefix(source.prefix.as_str()).unwrap_or(&e.key);
        let nested = format!("{rel}.");
        candidate.retain(|k, _| k != rel && !k.starts_with(&nested));
        for (k, v) in good.iter().filter(|(k, _)| *k == rel || k.starts_with(&nested)) {
            candidate.insert(k.clone(), v.clone());
        }
    }
    match T::decode(&candidate, source) {
        Ok(config) => Ok(Decoded { config, values: candidate, rejected: err.into_iter().collect() }),
        Err(_) => Err(err),
    }
}
