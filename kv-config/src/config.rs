//! The [`KvConfig`] trait the derive implements, with typed decoding and encoding.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use bytes::Bytes;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::schema::{FieldSchema, Schema};

mod parallel;
pub use parallel::{set_decode_threads, set_parallel_decode, Slot};
pub(crate) use crate::values::Lookup;

/// One raw value as read from the bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawValue {
    /// The bytes (JSON, or a bare string).
    pub value: Bytes,
    /// The key's revision.
    pub revision: u64,
    /// When the server stored it (`None` for a value that was not read from a bucket).
    pub created: Option<std::time::SystemTime>,
}

/// Raw values by key relative to the config's prefix (`server.port`, not `prod.server.port`).
pub type RawValues = HashMap<String, RawValue>;

/// A config's encoded form: key -> JSON bytes. A key that is absent should not exist (an
/// `Option` field that is `None`).
pub type Encoded = BTreeMap<String, Bytes>;

/// Where values came from, for error messages.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Source {
    /// The bucket's name.
    pub bucket: String,
    /// The key prefix (`""`, `prod.`).
    pub prefix: String,
}

impl Source {
    /// Values from `bucket` under `prefix`.
    pub fn new(bucket: impl Into<String>, prefix: impl Into<String>) -> Self {
        Source { bucket: bucket.into(), prefix: prefix.into() }
    }
}

/// A struct whose fields are keys of a KV bucket. Implement it with `#[derive(KvConfig)]`.
///
/// ```
/// use kv_config::{KvConfig, RawValue, RawValues, Source};
/// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
/// struct App {
///     #[kv(default = 8080)]
///     port: u16,
///     name: String,
/// }
/// let mut values = RawValues::new();
/// values.insert("name".into(), RawValue { value: "\"api\"".into(), revision: 3, created: None });
/// let app = App::decode(&values, &Source::new("cfg", "")).unwrap();
/// assert_eq!((app.port, app.name.as_str()), (8080, "api"));
/// assert_eq!(app.encode().unwrap()["name"], "\"api\"");
/// ```
pub trait KvConfig: Clone + Send + Sync + Sized + 'static {
    #[doc(hidden)]
    const __KV_NAME: &'static str;
    #[doc(hidden)]
    const __KV_VERSION: &'static str;
    /// `true` when a validator reads more than one key (a struct-level `validate`, or a `validate`
    /// on a nested field): writes then carry a guard so concurrent writers cannot combine into a
    /// state the validators refuse.
    #[doc(hidden)]
    const __KV_CROSS_CHECKS: bool = false;
    /// How many leaf keys the struct has (a map field counts one): weighs nested sections when
    /// a large decode shares them between threads.
    #[doc(hidden)]
    const __KV_LEAVES: usize = 1;
    #[doc(hidden)]
    fn __kv_fields(prefix: &str, out: &mut Vec<FieldSchema>);
    #[doc(hidden)]
    fn __kv_encode(&self, prefix: &str, out: &mut Encoder) -> Result<(), EncodeError>;
    #[doc(hidden)]
    fn __kv_decode(prefix: &str, d: &mut Decoder<'_>) -> Option<Self>;
    /// Brings `self` up to date with the keys the decoder reports as changed, decoding only the
    /// fields they belong to (field validators on those, struct-level checks on the result).
    /// `None` when something is refused; `self` is then partly updated and must be discarded.
    #[doc(hidden)]
    fn __kv_apply(&mut self, prefix: &str, d: &mut Decoder<'_>) -> Option<()> {
        *self = Self::__kv_decode(prefix, d)?;
        Some(())
    }

    /// The schema: every leaf key with its type, doc, default and secret flag.
    fn schema() -> Schema {
        let mut fields = Vec::new();
        Self::__kv_fields("", &mut fields);
        Schema {
            name: Self::__KV_NAME.to_string(),
            version: Self::__KV_VERSION.to_string(),
            fields,
            cross_checks: Self::__KV_CROSS_CHECKS,
        }
    }

    /// The config as a JSON Schema (draft 2020-12) of one JSON document holding every key, for
    /// validators and editors: `Self::schema().json_schema()` (see [`Schema::json_schema`]).
    /// [`LiveConfig::publish_schema`](crate::LiveConfig::publish_schema) stores it under
    /// [`JSON_SCHEMA_KEY`](crate::JSON_SCHEMA_KEY).
    ///
    /// ```
    /// use kv_config::KvConfig;
    /// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
    /// struct App {
    ///     /// Service name.
    ///     name: String,
    ///     #[kv(nested)]
    ///     server: Server,
    /// }
    /// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
    /// struct Server {
    ///     #[kv(default = 8080)]
    ///     port: u16,
    ///     #[kv(secret, default)]
    ///     token: String,
    /// }
    /// let js = App::json_schema();
    /// assert_eq!(js["title"], "App");
    /// assert_eq!(js["required"], serde_json::json!(["name"]));
    /// assert_eq!(js["properties"]["name"]["description"], "Service name.");
    /// let server = &js["properties"]["server"]["properties"];
    /// assert_eq!(server["port"]["default"], 8080);
    /// assert_eq!(server["token"]["writeOnly"], true);
    /// ```
    fn json_schema() -> serde_json::Value {
        Self::schema().json_schema()
    }

    /// Encodes every leaf as JSON, keyed by its dotted key.
    fn encode(&self) -> Result<Encoded, EncodeError> {
        let mut out = Encoder { out: Encoded::new() };
        self.__kv_encode("", &mut out)?;
        Ok(out.out)
    }

    /// Decodes from raw values, running field validators and the struct-level check. Every
    /// problem (all missing keys, all type errors) is collected into one [`DecodeError`].
    fn decode(values: &RawValues, source: &Source) -> Result<Self, DecodeError> {
        decode_counting(values, source).map(|(v, _)| v)
    }
}

/// Decodes and also returns how many of `values` the schema used: when that equals
/// `values.len()`, no key in the bucket is unknown to the schema.
pub(crate) fn decode_counting<T: KvConfig>(values: &(dyn Lookup + Sync), source: &Source) -> Result<(T, usize), DecodeError> {
    decode_with(Decoder::new(values, source, None)).map(|(v, hits, _)| (v, hits))
}

/// [`decode_counting`], also returning the positions ([`Lookup::get_indexed`]) of the values the
/// decoded config re-encodes byte for byte: the bytes [`Values::elide`](crate::values::Values::elide)
/// may drop.
pub(crate) fn decode_elidable<T: KvConfig>(values: &(dyn Lookup + Sync), source: &Source) -> Result<(T, usize, Vec<u32>), DecodeError> {
    let mut d = Decoder::new(values, source, None);
    d.elidable = Some(Vec::new());
    decode_with(d)
}

fn decode_with<T: KvConfig>(mut d: Decoder<'_>) -> Result<(T, usize, Vec<u32>), DecodeError> {
    match T::__kv_decode("", &mut d) {
        Some(v) if d.errors.is_empty() => {
            let mut elidable = d.elidable.unwrap_or_default();
            if !d.twice.is_empty() {
                elidable.retain(|p| !d.twice.contains(p));
            }
            // In stored order: dropping the bytes then walks the values map front to back (and
            // frees in the order the bytes were allocated), not in the schema's order, which
            // jumps around memory for a bucket written in another order. Already sorted (one
            // pass to sort) for a bucket written in schema order.
            elidable.sort_unstable();
            Ok((v, d.hits, elidable))
        }
        _ => Err(DecodeError { type_name: T::__KV_NAME, bucket: d.source.bucket.clone(), errors: d.errors }),
    }
}

/// Most changed keys [`apply_changes`] takes on; a larger burst is decoded whole.
pub(crate) const APPLY_MAX_CHANGED: usize = 32;

/// Brings `config` (decoded from earlier values) up to date with `values`, decoding only the
/// fields that `changed` (relative keys) belong to. `false` when anything is refused or cannot be
/// applied field by field: `config` is then partly updated, and the caller decodes the whole
/// config instead (which also gives the full error report).
///
/// On success, returns the changed keys no field of the schema took (unknown keys), so the
/// caller does not need the schema's key set.
pub(crate) fn apply_changes<T: KvConfig>(config: &mut T, values: &(dyn Lookup + Sync), changed: &[String], source: &Source) -> Option<Vec<String>> {
    if changed.len() > APPLY_MAX_CHANGED {
        return None;
    }
    let mut d = Decoder::new(values, source, Some(changed));
    if config.__kv_apply("", &mut d).is_none() || !d.errors.is_empty() {
        return None;
    }
    Some(changed.iter().zip(&d.used).filter(|(_, used)| !**used).map(|(k, _)| k.clone()).collect())
}

/// What is wrong with one key.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Problem {
    /// A required key has no value.
    Missing,
    /// The value is not JSON of the expected type (the message says expected and found).
    Invalid(String),
    /// A field validator refused the value.
    Rejected(String),
    /// The struct-level check refused the config.
    Struct(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Missing => f.write_str("missing required value"),
            Problem::Invalid(m) => write!(f, "invalid value: {m}"),
            Problem::Rejected(m) => write!(f, "rejected by validator: {m}"),
            Problem::Struct(m) => write!(f, "rejected by struct check: {m}"),
        }
    }
}

/// One problem with one key, with its provenance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyError {
    /// The bucket.
    pub bucket: String,
    /// The full key in the bucket (prefix included); for a struct check, the struct's prefix.
    pub key: String,
    /// The revision of the offending value, if there was one.
    pub revision: Option<u64>,
    /// What is wrong.
    pub problem: Problem,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let key = if self.key.is_empty() { "(whole config)" } else { &self.key };
        write!(f, "key `{key}` in bucket `{}`", self.bucket)?;
        if let Some(rev) = self.revision {
            write!(f, " (revision {rev})")?;
        }
        write!(f, ": {}", self.problem)
    }
}

impl std::error::Error for KeyError {}

/// Every problem found decoding a config, collected in one error.
///
/// ```
/// use kv_config::{KvConfig, RawValue, RawValues, Source};
/// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
/// struct App { port: u16, name: String }
/// let mut values = RawValues::new();
/// values.insert("port".into(), RawValue { value: "\"http\"".into(), revision: 7, created: None });
/// let err = App::decode(&values, &Source::new("cfg", "")).unwrap_err();
/// assert_eq!(err.len(), 2);
/// let msg = err.to_string();
/// assert!(msg.contains("key `port` in bucket `cfg` (revision 7): invalid value: invalid type: string \"http\", expected u16"), "{msg}");
/// assert!(msg.contains("key `name` in bucket `cfg`: missing required value"), "{msg}");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodeError {
    type_name: &'static str,
    bucket: String,
    errors: Vec<KeyError>,
}

impl DecodeError {
    /// The problems, one per key.
    pub fn errors(&self) -> &[KeyError] {
        &self.errors
    }

    /// How many problems.
    pub fn len(&self) -> usize {
        self.errors.len()
    }

    /// Never true for an error returned by decode.
    pub fn is_empty(&self) -> bool {
        self.errors.is_empty()
    }

    /// The name of the config struct.
    pub fn type_name(&self) -> &str {
        self.type_name
    }

    /// The bucket.
    pub fn bucket(&self) -> &str {
        &self.bucket
    }

    /// The same error with every [`KeyError`] passed through `f`.
    pub(crate) fn map_errors(self, f: impl FnMut(KeyError) -> KeyError) -> Self {
        DecodeError { errors: self.errors.into_iter().map(f).collect(), ..self }
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.errors.as_slice() {
            [one] => write!(f, "cannot load `{}`: {one}", self.type_name),
            many => {
                write!(f, "cannot load `{}`: {} problems in bucket `{}`", self.type_name, many.len(), self.bucket)?;
                for e in many {
                    write!(f, "\n  - {e}")?;
                }
                Ok(())
            }
        }
    }
}

impl std::error::Error for DecodeError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.errors.first().map(|e| e as _)
    }
}

impl IntoIterator for DecodeError {
    type Item = KeyError;
    type IntoIter = std::vec::IntoIter<KeyError>;
    fn into_iter(self) -> Self::IntoIter {
        self.errors.into_iter()
    }
}

/// A value that cannot be encoded as JSON.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot encode key `{key}` as JSON: {message}")]
pub struct EncodeError {
    /// The key.
    pub key: String,
    /// serde_json's message.
    pub message: String,
}

/// Used by derived code; not part of the public API.
#[doc(hidden)]
pub struct Encoder {
    out: Encoded,
}

impl Encoder {
    #[doc(hidden)]
    pub fn leaf<T: Serialize + ?Sized>(&mut self, key: String, value: &T) -> Result<(), EncodeError> {
        match serde_json::to_vec(value) {
            Ok(v) => {
                self.out.insert(key, Bytes::from(v));
                Ok(())
            }
            Err(e) => Err(EncodeError { key, message: e.to_string() }),
        }
    }

    /// The key of map entry `name` of the map field at `prefix` + `field`, with a trailing `.`
    /// for a nested entry; an error naming the field and the entry when `name` is not one key
    /// token.
    #[doc(hidden)]
    pub fn entry_key(&self, prefix: &str, field: &str, name: &str, nested: bool) -> Result<String, EncodeError> {
        if !is_key_token(name) {
            return Err(EncodeError {
                key: format!("{prefix}{field}"),
                message: format!(
                    "map entry `{}` cannot be stored as a key: {TOKEN_RULE}",
                    crate::redact::bound(name, 120)
                ),
            });
        }
        let mut key = String::with_capacity(prefix.len() + field.len() + name.len() + 2);
        key.push_str(prefix);
        key.push_str(field);
        key.push('.');
        key.push_str(name);
        if nested {
            key.push('.');
        }
        Ok(key)
    }

    #[doc(hidden)]
    pub fn optional<T: Serialize>(&mut self, key: String, value: &Option<T>) -> Result<(), EncodeError> {
        match value {
            Some(v) => self.leaf(key, v),
            None => Ok(()),
        }
    }
}

/// A field validator as derived code passes it.
#[doc(hidden)]
pub type Validator<'f, T> = &'f dyn Fn(&T) -> Result<(), String>;

/// Used by derived code; not part of the public API.
#[doc(hidden)]
pub struct Decoder<'a> {
    values: &'a (dyn Lookup + Sync),
    /// In an apply ([`KvConfig::__kv_apply`]): the changed keys, relative to the config's prefix.
    changed: Option<&'a [String]>,
    /// In an apply: which of `changed` a field took.
    used: Vec<bool>,
    source: &'a Source,
    errors: Vec<KeyError>,
    key: String,
    hits: usize,
    /// The text of every secret value decoded so far, scrubbed from struct-level messages.
    secrets: Vec<String>,
    /// Every key, sorted: built once, on the first map field, so each map finds its entries by
    /// a binary search instead of a scan over all keys.
    sorted: Option<Vec<&'a str>>,
    /// When asked ([`decode_elidable`]): the positions of the values whose decoded field
    /// serializes to their very bytes.
    elidable: Option<Vec<u32>>,
    /// A reused buffer for those serializations.
    buf: Vec<u8>,
    /// The prefixes of nested maps (`tenants.`) found while collecting `elidable`: their values
    /// keep their bytes, because a change to one field of an entry decodes the whole entry (its
    /// other fields' bytes are read again on every such change).
    keep_under: Vec<String>,
    /// While collecting `elidable`: a bit per position read, and the positions read twice (two
    /// fields of one key, e.g. a renamed field beside a nested struct's): those keep their bytes,
    /// since [`KvConfig::encode`] writes only one of the fields' encodings.
    read: Vec<u64>,
    twice: Vec<u32>,
    /// The position after the last value found: where the next key is looked for first
    /// ([`Lookup::get_indexed`]), while `in_order`.
    next: u32,
    /// Whether the last value found was at `next` (keys read in the order they are stored).
    /// Otherwise the hint is not tried: in a bucket written in another order it would miss
    /// every time, and each miss reads an entry from memory for nothing.
    in_order: bool,
    /// A decoder for another thread ([`parallel`]): its errors go to the field they belong to.
    fork: bool,
    /// The threads this decoder may still use ([`parallel`]).
    threads: usize,
}

/// `true` if `name` can be one token of a NATS key: non-empty, no `.`, only `[-/_=a-zA-Z0-9]`.
pub(crate) fn is_key_token(name: &str) -> bool {
    !name.contains('.') && crate::store::is_valid_key(name)
}

/// What is wrong with a map entry name, for messages.
const TOKEN_RULE: &str = "an entry name must be one NATS key token: non-empty, no `.`, only [-/_=a-zA-Z0-9]";

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_string())
}

thread_local! {
    /// Set while user code runs under [`guarded`]: the panic hook stays quiet then.
    static GUARDED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Wraps the process's panic hook once, so a panic caught by [`guarded`] is not printed (its
/// message may quote a secret value); every other panic goes to the previous hook unchanged.
fn quiet_guarded_panics() {
    static HOOK: std::sync::Once = std::sync::Once::new();
    HOOK.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(std::cell::Cell::get) {
                previous(info);
            }
        }));
    });
}

/// Runs user code (a validator, a `Deserialize` impl) so that a panic becomes an error message.
fn guarded<R>(what: &str, f: impl FnOnce() -> Result<R, String>) -> Result<R, String> {
    quiet_guarded_panics();
    let outer = GUARDED.with(|g| g.replace(true));
    let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f));
    GUARDED.with(|g| g.set(outer));
    match result {
        Ok(r) => r,
        Err(payload) => Err(format!("{what} panicked: {}", panic_message(&*payload))),
    }
}

/// Parses bytes as `T`: JSON first, then (for types that accept a string) the bare text.
pub(crate) fn parse_value<T: DeserializeOwned>(raw: &[u8]) -> Result<T, String> {
    match serde_json::from_slice::<T>(raw) {
        Ok(v) => Ok(v),
        Err(e) => {
            if let Ok(text) = std::str::from_utf8(raw) {
                if let Ok(v) = serde_json::from_value::<T>(serde_json::Value::String(text.to_string())) {
                    return Ok(v);
                }
            }
            let msg = e.to_string();
            let msg = msg.split(" at line ").next().unwrap_or(&msg).to_string();
            match serde_json::from_slice::<serde::de::IgnoredAny>(raw) {
                Ok(_) => Err(msg),
                Err(syntax) => {
                    let syntax = syntax.to_string();
                    let syntax = syntax.split(" at line ").next().unwrap_or(&syntax).to_string();
                    Err(format!("not JSON ({syntax}) and not a bare string of the expected type ({msg})"))
                }
            }
        }
    }
}

impl<'a> Decoder<'a> {
    pub(crate) fn new(values: &'a (dyn Lookup + Sync), source: &'a Source, changed: Option<&'a [String]>) -> Self {
        let used = vec![false; changed.map_or(0, <[String]>::len)];
        Decoder {
            values,
            changed,
            used,
            source,
            errors: Vec::new(),
            key: String::new(),
            hits: 0,
            secrets: Vec::new(),
            sorted: None,
            elidable: None,
            buf: Vec::new(),
            keep_under: Vec::new(),
            read: Vec::new(),
            twice: Vec::new(),
            next: 0,
            in_order: true,
            fork: false,
            threads: parallel::threads(),
        }
    }

    fn changed(&self) -> impl Iterator<Item = &'a str> {
        self.changed.unwrap_or_default().iter().map(String::as_str)
    }

    /// In an apply: whether the key `prefix` + `name` changed.
    #[doc(hidden)]
    pub fn touched(&mut self, prefix: &str, name: &str) -> bool {
        let found = self.changed().position(|k| k.len() == prefix.len() + name.len() && k.starts_with(prefix) && k.ends_with(name));
        if let Some(i) = found {
            self.used[i] = true;
        }
        found.is_some()
    }

    /// In an apply: whether any key under `prefix` + `dotted` (a nested struct's or a map's
    /// `field.`) changed.
    #[doc(hidden)]
    pub fn touched_under(&self, prefix: &str, dotted: &str) -> bool {
        self.changed().any(|k| k.starts_with(prefix) && k[prefix.len()..].starts_with(dotted))
    }

    /// In an apply: the names of the entries of the map under `map_prefix` (`flags.`) that have a
    /// changed key. `None` when a changed key that still holds a value is no legal entry (the
    /// whole decode reports it).
    #[doc(hidden)]
    pub fn touched_entries(&mut self, map_prefix: &str, nested: bool) -> Option<Vec<String>> {
        let mut names: Vec<String> = Vec::new();
        for (i, key) in self.changed().enumerate().filter(|(_, k)| k.starts_with(map_prefix)) {
            // A leaf map takes every legal key under it; a nested map's entry struct takes only
            // its own fields' keys (see `entry_exists`).
            if !nested {
                self.used[i] = true;
            }
            let rest = &key[map_prefix.len()..];
            let name = if nested {
                rest.split_once('.').filter(|(n, leaf)| is_key_token(n) && !leaf.is_empty()).map(|(n, _)| n)
            } else {
                Some(rest).filter(|r| is_key_token(r))
            };
            match name {
                Some(name) if !names.iter().any(|n| n == name) => names.push(name.to_string()),
                Some(_) => {}
                None if self.values.get(key).is_some() => return None,
                None => {}
            }
        }
        Some(names)
    }

    /// In an apply: whether the map entry `map_prefix` + `name` has a value. For a nested entry,
    /// `fields` lists the entry struct's keys; `None` (decode the whole config instead) when none
    /// of them has a value, or when they cannot be looked up one by one (the entry struct holds a
    /// map itself).
    #[doc(hidden)]
    pub fn entry_exists(&mut self, map_prefix: &str, name: &str, fields: Option<fn(&str, &mut Vec<FieldSchema>)>) -> Option<bool> {
        let Some(fields) = fields else {
            return Some(self.values.get(&format!("{map_prefix}{name}")).is_some());
        };
        let mut leaves = Vec::new();
        fields(&format!("{map_prefix}{name}."), &mut leaves);
        if leaves.iter().any(|f| f.key.contains('*')) {
            return None;
        }
        let changed = self.changed.unwrap_or_default();
        for (i, key) in changed.iter().enumerate() {
            if leaves.iter().any(|f| f.key == *key) {
                self.used[i] = true;
            }
        }
        // With no field of the entry left, whether it still exists depends on any other key under
        // it (the whole decode keeps an entry that has only unknown keys): let that decide.
        leaves.iter().any(|f| self.values.get(&f.key).is_some()).then_some(true)
    }

    /// The entry names of the map whose keys start with `prefix` (`flags.`): for a leaf map every
    /// key `flags.<name>`, for a nested map (`nested`) every distinct `<name>` of
    /// `flags.<name>.<leaf>`. A key under `prefix` that is no such entry (`flags.a.b` for a leaf
    /// map, an illegal name) is reported as an invalid value at that key.
    #[doc(hidden)]
    pub fn map_entries(&mut self, prefix: &str, nested: bool) -> Vec<String> {
        let values = self.values;
        if nested && self.elidable.is_some() {
            self.keep_under.push(prefix.to_string());
        }
        let sorted = self.sorted.take().unwrap_or_else(|| {
            let mut keys: Vec<&'a str> = values.keys_dyn().collect();
            keys.sort_unstable();
            keys
        });
        let start = sorted.partition_point(|k| *k < prefix);
        let mut names: Vec<String> = Vec::new();
        let map = prefix.trim_end_matches('.');
        for key in sorted[start..].iter().take_while(|k| k.starts_with(prefix)) {
            let rest = &key[prefix.len()..];
            let name = if nested {
                match rest.split_once('.') {
                    Some((name, leaf)) if is_key_token(name) && !leaf.is_empty() => Some(name),
                    Some((name, _)) if !is_key_token(name) => None,
                    _ => {
                        let revision = values.get(key).map(|v| v.revision);
                        let msg = format!(
                            "not an entry of map `{map}`: its entries are structs, stored as `{map}.<name>.<field>`"
                        );
                        self.error(key, revision, Problem::Invalid(msg));
                        continue;
                    }
                }
            } else {
                Some(rest).filter(|r| is_key_token(r))
            };
            match name {
                Some(name) => {
                    if names.last().map(String::as_str) != Some(name) {
                        names.push(name.to_string());
                    }
                }
                None => {
                    let revision = values.get(key).map(|v| v.revision);
                    let bad = if nested { rest.split('.').next().unwrap_or(rest) } else { rest };
                    let msg = format!("not an entry of map `{map}`: `{bad}` is not a legal entry name; {TOKEN_RULE}");
                    self.error(key, revision, Problem::Invalid(msg));
                }
            }
        }
        self.sorted = Some(sorted);
        names
    }

    fn error(&mut self, key: &str, revision: Option<u64>, problem: Problem) {
        // Every message is bounded (a refused 1 MiB value is not echoed) and scrubbed of secrets.
        let clean = |m: String| crate::redact::bound(&crate::redact::scrub(&m, &self.secrets), crate::redact::MAX_MESSAGE);
        let problem = match problem {
            Problem::Invalid(m) => Problem::Invalid(clean(m)),
            Problem::Rejected(m) => Problem::Rejected(clean(m)),
            Problem::Struct(m) => Problem::Struct(clean(m)),
            Problem::Missing => Problem::Missing,
        };
        self.errors.push(KeyError {
            bucket: self.source.bucket.clone(),
            key: format!("{}{key}", self.source.prefix),
            revision,
            problem,
        });
    }

    #[doc(hidden)]
    pub fn leaf<T: DeserializeOwned + Serialize + 'static>(
        &mut self,
        prefix: &str,
        name: &str,
        secret: bool,
        default: Option<&dyn Fn() -> T>,
        validate: Option<Validator<'_, T>>,
    ) -> Option<T> {
        // One reused buffer for the key: decoding allocates nothing per key on the happy path.
        let mut key = std::mem::take(&mut self.key);
        key.clear();
        key.push_str(prefix);
        key.push_str(name);
        let out = self.leaf_at(&key, secret, default, validate);
        self.key = key;
        out
    }

    fn leaf_at<T: DeserializeOwned + Serialize + 'static>(
        &mut self,
        key: &str,
        secret: bool,
        default: Option<&dyn Fn() -> T>,
        validate: Option<Validator<'_, T>>,
    ) -> Option<T> {
        let values = self.values;
        let found = values.get_indexed(key, if self.in_order { self.next } else { u32::MAX });
        match found {
            Some((_, Some(i))) => {
                // Known without reading memory: a hashed look-up tells where the key was.
                self.in_order = i == self.next;
                self.next = i.wrapping_add(1);
            }
            // A value with no position (changed since the base, or elided and re-encoded): the
            // hint is stale until a key is found in the base again.
            Some((_, None)) => self.in_order = false,
            None => {}
        }
        let (value, revision, stored) = match found {
            None => match default {
                Some(d) => (d(), None, None),
                None => {
                    self.error(key, None, Problem::Missing);
                    return None;
                }
            },
            Some((raw, position)) => {
                self.hits += 1;
                if secret {
                    self.note_secret(&raw.value);
                }
                if let (Some(i), Some(_)) = (position, &self.elidable) {
                    self.note_read(i);
                }
                // A `String` read from a JSON string with nothing escaped is what serde_json
                // gives, and it writes it back byte for byte (`exact`): no parser, no check.
                let parsed = match crate::exact::plain_string::<T>(&raw.value) {
                    Some(v) => Ok((v, true)),
                    None => guarded("the Deserialize impl", || parse_value::<T>(&raw.value)).map(|v| (v, false)),
                };
                match parsed {
                    Ok((v, exact)) => (v, Some(raw.revision), position.map(|i| (i, &raw.value[..], exact))),
                    Err(msg) => {
                        let msg = if secret {
                            format!("(value redacted) expected {}", std::any::type_name::<T>())
                        } else {
                            msg
                        };
                        self.error(key, Some(raw.revision), Problem::Invalid(msg));
                        return None;
                    }
                }
            }
        };
        self.check_leaf(key, revision, &value, validate, secret)?;
        if let (Some((position, raw, exact)), Some(_)) = (stored, &self.elidable) {
            if !self.keep_under.iter().any(|p| key.starts_with(p.as_str())) {
                self.note_elidable(position, raw, &value, exact);
            }
        }
        Some(value)
    }

    /// Marks `position` read, remembering it if it was read before.
    fn note_read(&mut self, position: u32) {
        let (word, bit) = (position as usize / 64, 1u64 << (position % 64));
        if word >= self.read.len() {
            self.read.resize(word + 1, 0);
        }
        if self.read[word] & bit != 0 {
            self.twice.push(position);
        }
        self.read[word] |= bit;
    }

    /// Records `position` as elidable when `value` serializes to `raw` exactly, as
    /// [`KvConfig::encode`] would write it (a `null` is never written: an absent `Option`).
    /// `exact`: known already (a plain string, see [`crate::exact::plain_string`]).
    fn note_elidable<T: Serialize>(&mut self, position: u32, raw: &[u8], value: &T, exact: bool) {
        let mut buf = std::mem::take(&mut self.buf);
        // A Serialize impl is user code: if it panics or fails, the bytes are simply kept.
        let same = exact || guarded("the Serialize impl", || crate::exact::encodes_to(value, raw, &mut buf)).unwrap_or(false);
        if same && raw != b"null" {
            if let Some(list) = &mut self.elidable {
                list.push(position);
            }
        }
        self.buf = buf;
    }

    /// Remembers a secret's text (raw, and unquoted when it is a JSON string) for scrubbing.
    fn note_secret(&mut self, raw: &[u8]) {
        if let Ok(text) = std::str::from_utf8(raw) {
            if let Ok(serde_json::Value::String(inner)) = serde_json::from_str::<serde_json::Value>(text) {
                self.secrets.push(inner);
            }
            self.secrets.push(text.to_string());
        }
    }

    /// Runs a field validator; a secret field's message is never shown (it may quote the value).
    fn check_leaf<T>(
        &mut self,
        key: &str,
        revision: Option<u64>,
        value: &T,
        validate: Option<Validator<'_, T>>,
        secret: bool,
    ) -> Option<()> {
        let Some(check) = validate else { return Some(()) };
        match guarded("the validator", || check(value)) {
            Ok(()) => Some(()),
            Err(msg) => {
                let msg = if secret { "the value of this secret field was refused (message redacted)".to_string() } else { msg };
                self.error(key, revision, Problem::Rejected(msg));
                None
            }
        }
    }

    #[doc(hidden)]
    pub fn validate<T>(
        &mut self,
        key: &str,
        revision: Option<u64>,
        value: &T,
        validate: Option<Validator<'_, T>>,
    ) -> Option<()> {
        self.check_leaf(key, revision, value, validate, false)
    }

    /// Runs a validator over a whole map field; for a secret map its message is never shown.
    #[doc(hidden)]
    pub fn validate_map<T>(&mut self, key: &str, value: &T, validate: Option<Validator<'_, T>>, secret: bool) -> Option<()> {
        self.check_leaf(key, None, value, validate, secret)
    }

    #[doc(hidden)]
    pub fn check_struct<T>(&mut self, prefix: &str, value: &T, check: &dyn Fn(&T) -> Result<(), String>) -> Option<()> {
        match guarded("the struct check", || check(value)) {
            Ok(()) => Some(()),
            Err(msg) => {
                self.error(prefix.trim_end_matches('.'), None, Problem::Struct(msg));
                None
            }
        }
    }
}

/// A nested section behind an [`Arc`](std::sync::Arc) (`#[kv(nested)] server: Arc<Server>`):
/// cloning the config shares the section instead of copying it. When the watcher applies a change
/// to a copy of the config in effect (a small config, or a reader still holding the snapshot the
/// change before retired: see [`Builder::spare_copy`](crate::Builder::spare_copy)), sections behind
/// `Arc` make the change cost the section it touches (copied once, by `Arc::make_mut`) instead of
/// the whole struct, and a spare shares every section no change touched.
///
/// ```
/// use std::sync::Arc;
/// use kv_config::{KvConfig, RawValue, RawValues, Source};
/// #[derive(KvConfig, Clone)]
/// struct App {
///     #[kv(nested)]
///     server: Arc<Server>,
/// }
/// #[derive(KvConfig, Clone)]
/// struct Server {
///     #[kv(default = 8080)]
///     port: u16,
/// }
/// let mut values = RawValues::new();
/// values.insert("server.port".into(), RawValue { value: "9090".into(), revision: 1, created: None });
/// let app = App::decode(&values, &Source::new("cfg", "")).unwrap();
/// assert_eq!(app.server.port, 9090);
/// assert_eq!(App::schema().fields[0].key, "server.port");
/// ```
impl<T: KvConfig> KvConfig for std::sync::Arc<T> {
    const __KV_NAME: &'static str = T::__KV_NAME;
    const __KV_VERSION: &'static str = T::__KV_VERSION;
    const __KV_CROSS_CHECKS: bool = T::__KV_CROSS_CHECKS;
    const __KV_LEAVES: usize = T::__KV_LEAVES;

    fn __kv_fields(prefix: &str, out: &mut Vec<FieldSchema>) {
        T::__kv_fields(prefix, out)
    }

    fn __kv_encode(&self, prefix: &str, out: &mut Encoder) -> Result<(), EncodeError> {
        T::__kv_encode(self, prefix, out)
    }

    fn __kv_decode(prefix: &str, d: &mut Decoder<'_>) -> Option<Self> {
        T::__kv_decode(prefix, d).map(std::sync::Arc::new)
    }

    fn __kv_apply(&mut self, prefix: &str, d: &mut Decoder<'_>) -> Option<()> {
        std::sync::Arc::make_mut(self).__kv_apply(prefix, d)
    }
}
