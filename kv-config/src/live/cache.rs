//! The last-known-good cache file: what a handle persists after each applied snapshot, so a
//! service can start while the server is unreachable (see [`Builder::cache_file`]).
//!
//! # File format (version 1)
//!
//! ```text
//! kv-config-cache 1 <16 hex digits: FNV-1a 64 of every byte after this line's newline>\n
//! <one JSON object>
//! ```
//!
//! The JSON object holds the config type's name and a fingerprint of its schema (keys, types,
//! `required` and `secret` flags; docs and defaults left out), the bucket, the prefix, the
//! bucket's incarnation (stream creation time, if known), the snapshot's revision, the guard key's
//! revision, the save time (Unix milliseconds), every value in effect with its revision (UTF-8
//! values as `text`, anything else as `hex`), the delete markers, the secret keys left out, and
//! whether a watch may resume from the revision + 1 (`resumable`: nothing left out, no expiring
//! override in effect (overrides are not cached; their keys' own values are), and nothing
//! refused). A lapsed override (gone, but its value kept in effect because the state without it
//! is refused) is the one override value in `values`: `lapsed` says so, with the override's
//! revision, time, expiry and the key's own value, so a handle started from the file never takes
//! it for the key's own value (a write would store it as one). The checksum catches a flipped bit or a truncated file: FNV-1a changes on any single
//! changed byte, and a cut file also fails to parse. A file is written whole to a temporary file
//! in the same directory, fsynced, renamed over the old one and the directory fsynced, so a crash
//! leaves either the old file or the new one.
//!
//! [`Builder::cache_file`]: super::Builder::cache_file

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::{ActiveOverride, Shared, Snapshot};
use crate::config::{KvConfig, RawValue, RawValues};
use crate::schema::Schema;
use crate::values::{Lookup, Resolved};
use crate::view::View;

/// The first word of every cache file.
const MAGIC: &str = "kv-config-cache";
/// The format version this crate writes and reads.
const VERSION: u32 = 1;

/// Why a cache file cannot stand in for the bucket.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CacheProblem {
    /// There is no file at the path.
    #[error("there is no cache file")]
    Missing,
    /// The file could not be read or written.
    #[error("{0}")]
    Io(String),
    /// The file is damaged (checksum, truncation, not JSON) or not a kv-config cache.
    #[error("the file is corrupt: {0}")]
    Corrupt(String),
    /// The file was written by a newer or older kv-config.
    #[error("unsupported cache format version {0} (this kv-config reads version {VERSION})")]
    Version(u32),
    /// The file belongs to another config: another bucket, prefix, type, or schema.
    #[error("the file belongs to another config: its {what} is `{found}`, this handle's is `{expected}`")]
    Foreign {
        /// `bucket`, `prefix`, `type` or `schema`.
        what: &'static str,
        /// This handle's.
        expected: String,
        /// The file's.
        found: String,
    },
    /// The cached values do not make a valid config, e.g. a required secret was left out.
    #[error("{0}")]
    Invalid(String),
}

impl CacheProblem {
    /// `true` for a file of another bucket, prefix or type, which a handle never overwrites.
    pub(super) fn is_other_config(&self) -> bool {
        matches!(self, CacheProblem::Foreign { what, .. } if *what != "schema")
    }
}

#[derive(Debug, Serialize, Deserialize)]
struct CachedValue {
    revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_unix_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    text: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    hex: Option<String>,
}

/// A lapsed override in the file (see the module docs): the override and the key's own value.
#[derive(Debug, Serialize, Deserialize)]
struct CachedLapsed {
    revision: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_unix_ns: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    expires_unix_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    own: Option<CachedValue>,
}

#[derive(Debug, Serialize, Deserialize)]
struct Body {
    #[serde(rename = "type")]
    type_name: String,
    schema: String,
    bucket: String,
    prefix: String,
    incarnation: Option<u64>,
    revision: u64,
    guard: u64,
    saved_unix_ms: u64,
    resumable: bool,
    omitted: Vec<String>,
    values: BTreeMap<String, CachedValue>,
    markers: BTreeMap<String, u64>,
    /// Absent in files of kv-config before 2026-11-28 (read as none).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    lapsed: BTreeMap<String, CachedLapsed>,
}

/// A cache file that passed every check: the state to start from.
#[derive(Debug)]
pub(super) struct Cached {
    pub(super) incarnation: Option<u64>,
    pub(super) saved: SystemTime,
    pub(super) resumable: bool,
    pub(super) omitted: Vec<String>,
    pub(super) view: View,
    /// The lapsed overrides whose values `view` holds ([`Snapshot::lapsed`](super::Snapshot)).
    pub(super) lapsed: HashMap<String, (ActiveOverride, Option<RawValue>)>,
}

/// What a cache file must match.
#[derive(Debug, Clone)]
pub(super) struct Identity {
    pub(super) path: PathBuf,
    pub(super) type_name: String,
    pub(super) schema: String,
    pub(super) bucket: String,
    pub(super) prefix: String,
    /// Secret keys (schema `secret`): left out unless this is on.
    pub(super) secrets: bool,
    pub(super) secret_keys: Vec<String>,
}

impl Identity {
    pub(super) fn new(path: PathBuf, schema: &Schema, bucket: &str, prefix: &str, secrets: bool) -> Self {
        Identity {
            path,
            type_name: schema.name.clone(),
            schema: fingerprint(schema),
            bucket: bucket.to_string(),
            prefix: prefix.to_string(),
            secrets,
            secret_keys: schema.fields.iter().filter(|f| f.secret).map(|f| f.key.clone()).collect(),
        }
    }

    fn is_secret(&self, key: &str) -> bool {
        self.secret_keys.iter().any(|s| key == s || key.strip_prefix(s.as_str()).is_some_and(|r| r.starts_with('.')))
    }
}

/// FNV-1a, 64 bits.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, b| (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3))
}

/// A fingerprint of what decoding depends on: the type's name and each key's type and flags.
pub(super) fn fingerprint(schema: &Schema) -> String {
    let mut fields: Vec<_> = schema.fields.iter().map(|f| (f.key.as_str(), &f.ty, f.required, f.secret)).collect();
    fields.sort_by(|a, b| a.0.cmp(b.0));
    let json = serde_json::to_vec(&(&schema.name, fields)).unwrap_or_default();
    format!("{:016x}", fnv1a(&json))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| s.get(i..i + 2).and_then(|p| u8::from_str_radix(p, 16).ok())).collect()
}

fn unix_ns(t: Option<SystemTime>) -> Option<u64> {
    t.and_then(|c| c.duration_since(UNIX_EPOCH).ok()).map(|d| d.as_nanos() as u64)
}

/// A value as the file holds it: UTF-8 as `text`, anything else as `hex`.
fn cached_value(v: &RawValue) -> CachedValue {
    let (text, hex) = match std::str::from_utf8(&v.value) {
        Ok(s) => (Some(s.to_string()), None),
        Err(_) => (None, Some(hex(&v.value))),
    };
    CachedValue { revision: v.revision, created_unix_ns: unix_ns(v.created), text, hex }
}

/// A value read back from the file.
fn raw_value(k: &str, v: CachedValue) -> Result<RawValue, CacheProblem> {
    let value = match (v.text, v.hex) {
        (Some(t), None) => Bytes::from(t.into_bytes()),
        (None, Some(h)) => Bytes::from(unhex(&h).ok_or_else(|| CacheProblem::Corrupt(format!("bad hex value for key `{k}`")))?),
        _ => return Err(CacheProblem::Corrupt(format!("key `{k}` has no value"))),
    };
    let created = v.created_unix_ns.map(|ns| UNIX_EPOCH + Duration::from_nanos(ns));
    Ok(RawValue { value, revision: v.revision, created })
}

fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// The bytes of a cache file for `snapshot`, and how many secret keys were left out.
///
/// `values` reads `snapshot.values` with their bytes: [`Resolved`] over them and the snapshot's
/// config, for values whose bytes were dropped.
pub(super) fn encode<T>(id: &Identity, snapshot: &Snapshot<T>, values_of: &dyn Lookup, incarnation: Option<u64>, refused: bool, now: SystemTime) -> Vec<u8> {
    let mut omitted = Vec::new();
    let mut values = BTreeMap::new();
    for (k, v) in snapshot.values.iter() {
        let v = values_of.get(k).unwrap_or(v);
        // An expiring override is not cached: its key's own value is (it may have expired by the
        // time the cache is read, and the server is the one that expires it).
        let v = match (snapshot.overridden.contains_key(k), snapshot.underlying.get(k)) {
            (false, _) => v,
            (true, Some(own)) => own,
            (true, None) => continue,
        };
        if !id.secrets && id.is_secret(k) {
            omitted.push(k.to_string());
            continue;
        }
        values.insert(k.to_string(), cached_value(v));
    }
    omitted.sort();
    // Only of values the file holds (a secret's is left out with it).
    let lapsed = snapshot
        .lapsed
        .iter()
        .filter(|(k, _)| values.contains_key(k.as_str()))
        .map(|(k, (o, own))| {
            let lapsed = CachedLapsed {
                revision: o.revision,
                created_unix_ns: unix_ns(o.created),
                expires_unix_ms: o.expires.map(unix_ms),
                own: own.as_ref().map(cached_value),
            };
            (k.clone(), lapsed)
        })
        .collect();
    let body = Body {
        type_name: id.type_name.clone(),
        schema: id.schema.clone(),
        bucket: id.bucket.clone(),
        prefix: id.prefix.clone(),
        incarnation,
        revision: snapshot.revision,
        guard: snapshot.guard,
        saved_unix_ms: unix_ms(now),
        // Live overrides are left out, so a resume would miss them: load in full instead. (A
        // lapsed override's value is kept as the last good one, and comes with a refusal.)
        resumable: omitted.is_empty() && !refused && snapshot.repair.is_empty() && snapshot.overridden.is_empty() && snapshot.lapsed.is_empty(),
        omitted,
        values,
        markers: snapshot
            .overrides
            .iter()
            .filter(|(k, _)| !snapshot.underlying.contains_key(*k))
            .map(|(k, v)| (k.clone(), *v))
            .collect(),
        lapsed,
    };
    // Serializing strings, integers and maps cannot fail.
    let json = serde_json::to_vec(&body).unwrap_or_default();
    let mut out = format!("{MAGIC} {VERSION} {:016x}\n", fnv1a(&json)).into_bytes();
    out.extend_from_slice(&json);
    out
}

/// Reads and checks the cache file at `id.path`.
pub(super) fn load(id: &Identity) -> Result<Cached, CacheProblem> {
    let bytes = match std::fs::read(&id.path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(CacheProblem::Missing),
        Err(e) => return Err(CacheProblem::Io(format!("cannot read it: {e}"))),
    };
    decode(id, &bytes)
}

fn decode(id: &Identity, bytes: &[u8]) -> Result<Cached, CacheProblem> {
    let corrupt = |why: &str| CacheProblem::Corrupt(why.to_string());
    let nl = bytes.iter().position(|b| *b == b'\n').ok_or_else(|| corrupt("no header line"))?;
    let header = std::str::from_utf8(&bytes[..nl]).map_err(|_| corrupt("the header is not text"))?;
    let mut parts = header.split(' ');
    if parts.next() != Some(MAGIC) {
        return Err(corrupt("not a kv-config cache file"));
    }
    let version: u32 = parts.next().and_then(|v| v.parse().ok()).ok_or_else(|| corrupt("no format version"))?;
    if version != VERSION {
        return Err(CacheProblem::Version(version));
    }
    let sum = parts.next().and_then(|s| u64::from_str_radix(s, 16).ok()).ok_or_else(|| corrupt("no checksum"))?;
    let json = &bytes[nl + 1..];
    if fnv1a(json) != sum {
        return Err(corrupt("checksum mismatch (the file was damaged or cut short)"));
    }
    let body: Body = serde_json::from_slice(json).map_err(|e| CacheProblem::Corrupt(format!("unreadable: {e}")))?;
    for (what, expected, found) in [
        ("bucket", &id.bucket, &body.bucket),
        ("prefix", &id.prefix, &body.prefix),
        ("type", &id.type_name, &body.type_name),
        ("schema", &id.schema, &body.schema),
    ] {
        if expected != found {
            return Err(CacheProblem::Foreign { what, expected: expected.clone(), found: found.clone() });
        }
    }
    let mut values = RawValues::with_capacity(body.values.len());
    for (k, v) in body.values {
        let value = raw_value(&k, v)?;
        values.insert(k, value);
    }
    let mut lapsed = HashMap::with_capacity(body.lapsed.len());
    for (k, l) in body.lapsed {
        let created = l.created_unix_ns.map(|ns| UNIX_EPOCH + Duration::from_nanos(ns));
        // The value in effect must be the override's, as when the file was written.
        if !values.get(&k).is_some_and(|v| v.revision == l.revision && v.created == created) {
            return Err(CacheProblem::Corrupt(format!("the lapsed override of key `{k}` is not the value it holds")));
        }
        let own = l.own.map(|v| raw_value(&k, v)).transpose()?;
        let o = ActiveOverride {
            key: k.clone(),
            revision: l.revision,
            created,
            expires: l.expires_unix_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms)),
            underlying: own.as_ref().map(|v| v.revision),
        };
        lapsed.insert(k, (o, own));
    }
    let mut view = View::default();
    view.values = values.into();
    view.markers = body.markers.into_iter().collect();
    view.seen = body.revision;
    view.guard = body.guard;
    Ok(Cached {
        incarnation: body.incarnation,
        saved: UNIX_EPOCH + Duration::from_millis(body.saved_unix_ms),
        resumable: body.resumable,
        omitted: body.omitted,
        view,
        lapsed,
    })
}

/// Writes `bytes` to `path` atomically: temp file in the same directory, fsync, rename, fsync the
/// directory.
pub(super) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "cache".into());
    // Unique per write: two handles of one process saving to one path never share a temp file.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let tmp = dir.join(format!(".{name}.{}.{}.tmp", std::process::id(), WRITES.fetch_add(1, Ordering::Relaxed)));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)?;
        std::fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// The writer task: saves the snapshot in effect after every swap, off the watcher's path. Swaps
/// that come while a save runs are coalesced into one save of the newest snapshot. Ends with the
/// handle. `save_now` saves the first snapshot at once (a handle that read the bucket).
pub(super) async fn writer<T: KvConfig>(weak: Weak<Shared<T>>, id: Arc<Identity>, save_now: bool) {
    let Some(mut swaps) = weak.upgrade().map(|s| s.swaps.subscribe()) else { return };
    if !save_now && swaps.changed().await.is_err() {
        return;
    }
    loop {
        let Some(shared) = weak.upgrade() else { return };
        let snapshot = shared.snapshot.load_full();
        let (incarnation, refused) = {
            let st = shared.state();
            (st.incarnation, !st.status.rejected.is_empty())
        };
        drop(shared);
        if snapshot.from_cache.is_none() {
            let bytes = {
                let values = Resolved::new(&snapshot.values, Some(&snapshot.config));
                encode(&id, &snapshot, &values, incarnation, refused, SystemTime::now())
            };
            let path = id.path.clone();
            let result = tokio::task::spawn_blocking(move || write_atomic(&path, &bytes)).await;
            let err = match result {
                Ok(Ok(())) => None,
                Ok(Err(e)) => Some(e.to_string()),
                Err(e) => Some(e.to_string()),
            };
            let Some(shared) = weak.upgrade() else { return };
            let mut st = shared.state();
            match err {
                None => {
                    tracing::debug!(bucket = %id.bucket, path = %id.path.display(), revision = snapshot.revision, "config cache saved");
                    st.status.cache_revision = Some(snapshot.revision);
                }
                Some(e) => {
                    tracing::warn!(bucket = %id.bucket, path = %id.path.display(), error = %e, "could not save the config cache");
                    st.status.last_error = Some(format!("config cache `{}` for bucket `{}`: {e}", id.path.display(), id.bucket));
                }
            }
        }
        if swaps.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id() -> Identity {
        Identity {
            path: PathBuf::from("x"),
            type_name: "App".into(),
            schema: "00".into(),
            bucket: "b".into(),
            prefix: "p.".into(),
            secrets: false,
            secret_keys: vec!["token".into(), "db".into()],
        }
    }

    fn snapshot() -> Snapshot<()> {
        let mut values = RawValues::new();
        values.insert("port".into(), RawValue { value: Bytes::from_static(b"8080"), revision: 3, created: None });
        values.insert("blob".into(), RawValue { value: Bytes::from_static(&[0xff, 0x00, 0x80]), revision: 4, created: None });
        values.insert("token".into(), RawValue { value: Bytes::from_static(b"\"hunter2\""), revision: 5, created: None });
        values.insert("db.password".into(), RawValue { value: Bytes::from_static(b"\"pw\""), revision: 6, created: None });
        let mut view = View::default();
        view.values = values.clone().into();
        view.seen = 9;
        Snapshot::new((), values.into(), &view, false, 0)
    }

    #[test]
    fn round_trip_leaves_out_secrets_and_keeps_binary_values() {
        let bytes = encode(&id(), &snapshot(), &snapshot().values, Some(7), false, SystemTime::now());
        assert!(!bytes.windows(7).any(|w| w == b"hunter2"));
        let c = decode(&id(), &bytes).expect("valid");
        assert_eq!(c.view.seen, 9);
        assert_eq!(c.incarnation, Some(7));
        assert_eq!(c.omitted, vec!["db.password".to_string(), "token".to_string()]);
        assert!(!c.resumable);
        assert_eq!(&c.view.values.get("blob").unwrap().value[..], &[0xff, 0x00, 0x80]);
        assert_eq!(c.view.values.get("port").unwrap().revision, 3);
        let mut with = id();
        with.secrets = true;
        let c = decode(&with, &encode(&with, &snapshot(), &snapshot().values, None, false, SystemTime::now())).expect("valid");
        assert!(c.resumable && c.view.values.contains_key("token"));
    }

    #[test]
    fn a_lapsed_override_round_trips_and_a_secrets_is_left_out_with_its_value() {
        let lapsed = |key: &str, revision: u64, own: Option<RawValue>| {
            let o = ActiveOverride { key: key.into(), revision, created: None, expires: Some(UNIX_EPOCH + Duration::from_millis(5000)), underlying: own.as_ref().map(|v| v.revision) };
            (key.to_string(), (o, own))
        };
        let mut snap = snapshot();
        let own = RawValue { value: Bytes::from_static(b"9000"), revision: 8, created: None };
        snap.lapsed = [lapsed("port", 3, Some(own.clone())), lapsed("token", 5, None)].into_iter().collect();
        let bytes = encode(&id(), &snap, &snap.values, None, true, SystemTime::now());
        let c = decode(&id(), &bytes).expect("valid");
        assert_eq!(c.lapsed.len(), 1, "the secret's lapsed override is left out with its value");
        let (o, back) = &c.lapsed["port"];
        assert_eq!((o.revision, o.expires, o.underlying), (3, Some(UNIX_EPOCH + Duration::from_millis(5000)), Some(8)));
        assert_eq!(back.as_ref(), Some(&own));
        assert!(!c.resumable);
        // A lapsed override that does not name the value held is a damaged file.
        snap.lapsed = [lapsed("port", 4, None)].into_iter().collect();
        let err = decode(&id(), &encode(&id(), &snap, &snap.values, None, true, SystemTime::now())).unwrap_err();
        assert_eq!(err.to_string(), "the file is corrupt: the lapsed override of key `port` is not the value it holds");
    }

    #[test]
    fn every_flipped_byte_and_every_cut_is_refused() {
        let bytes = encode(&id(), &snapshot(), &snapshot().values, None, false, SystemTime::now());
        for i in 0..bytes.len() {
            let mut b = bytes.clone();
            b[i] ^= 0x01;
            assert!(decode(&id(), &b).is_err(), "flip at {i} accepted");
        }
        for n in 0..bytes.len() {
            assert!(decode(&id(), &bytes[..n]).is_err(), "cut at {n} accepted");
        }
    }

    #[test]
    fn another_configs_file_is_foreign() {
        let bytes = encode(&id(), &snapshot(), &snapshot().values, None, false, SystemTime::now());
        let mut other = id();
        other.prefix = "q.".into();
        let err = decode(&other, &bytes).unwrap_err();
        assert!(err.is_other_config());
        assert_eq!(err.to_string(), "the file belongs to another config: its prefix is `p.`, this handle's is `q.`");
    }
}
