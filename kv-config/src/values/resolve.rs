//! Values whose bytes were dropped once decoded ([`Values::elide`](super::Values::elide)), and
//! reading them back from the config they were decoded into.
//!
//! A handle keeps the values in effect (revisions, provenance, the per-key fallback) beside the
//! config decoded from them. For most keys the config re-encodes the stored bytes exactly (a
//! value kv-config or any JSON writer without extra spaces wrote): keeping both held every value
//! twice. Such a value keeps its revision and creation time, and its bytes give way to a marker;
//! whatever reads bytes again (the whole decode, a nested map entry's apply, the cache file) reads
//! them through [`Resolved`], which re-encodes them from that config. The config's field does not
//! change while its key's entry is elided: a change to the key replaces the entry, bytes and all.

use std::sync::OnceLock;

use bytes::Bytes;

use super::{Lookup, Values};
use crate::config::{KvConfig, RawValue, RawValues};

/// The bytes an elided value holds: not UTF-8 (so no field takes it as a bare string) and not
/// JSON, so a value read without [`Resolved`] is refused, never taken for another value.
static MARK: [u8; 8] = *b"\xff\xfeelided";

/// The stand-in for dropped bytes.
pub(crate) fn marker() -> Bytes {
    Bytes::from_static(&MARK)
}

/// Whether `v`'s bytes were dropped ([`marker`]): the same static bytes, not equal ones.
pub(crate) fn is_elided(v: &RawValue) -> bool {
    std::ptr::eq(v.value.as_ptr(), MARK.as_ptr()) && v.value.len() == MARK.len()
}

/// [`Values`] read with every elided value re-encoded from `config`, the config decoded from
/// them (or a later one of the same handle: an elided key's field does not change).
pub(crate) struct Resolved<'a, T> {
    values: &'a Values,
    config: Option<&'a T>,
    /// Every elided value, re-encoded: built on the first read of one.
    encoded: OnceLock<RawValues>,
}

impl<'a, T: KvConfig> Resolved<'a, T> {
    /// `config`: what the elided values of `values` were decoded into (`None` when none is).
    pub(crate) fn new(values: &'a Values, config: Option<&'a T>) -> Self {
        Resolved { values, config, encoded: OnceLock::new() }
    }

    fn encoded(&self) -> &RawValues {
        self.encoded.get_or_init(|| {
            let Some(config) = self.config else { return RawValues::new() };
            match config.encode() {
                Ok(all) => all
                    .into_iter()
                    .filter_map(|(k, value)| {
                        let v = self.values.get(&k).filter(|v| is_elided(v))?;
                        Some((k, RawValue { value, revision: v.revision, created: v.created }))
                    })
                    .collect(),
                Err(e) => {
                    // Not reached: the bytes were dropped only where this config encoded them.
                    tracing::error!(key = %e.key, error = %e.message, "the config in effect no longer encodes; its keys read as invalid");
                    RawValues::new()
                }
            }
        })
    }
}

impl<T: KvConfig> Lookup for Resolved<'_, T> {
    fn get(&self, key: &str) -> Option<&RawValue> {
        let v = self.values.get(key)?;
        if !is_elided(v) {
            return Some(v);
        }
        // A value the config does not re-encode (not reached, see `encoded`) stays the marker,
        // which no decoder accepts: the key is refused, not read as something else.
        Some(self.encoded().get(key).unwrap_or(v))
    }

    fn get_indexed(&self, key: &str, hint: u32) -> Option<(&RawValue, Option<u32>)> {
        let (v, position) = self.values.get_indexed(key, hint)?;
        if !is_elided(v) {
            return Some((v, position));
        }
        Some((self.encoded().get(key).unwrap_or(v), None))
    }

    fn len(&self) -> usize {
        self.values.len()
    }

    fn keys_dyn(&self) -> Box<dyn Iterator<Item = &str> + '_> {
        self.values.keys_dyn()
    }
}
