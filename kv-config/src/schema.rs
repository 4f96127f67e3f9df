//! The schema a `#[derive(KvConfig)]` publishes: one [`FieldSchema`] per leaf key.

use std::collections::{BTreeMap, HashMap};
use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The JSON shape a key's value must have.
///
/// ```
/// use kv_config::TypeDesc;
/// let port = TypeDesc::Integer { min: 0, max: 65535 };
/// assert!(port.check(&serde_json::json!(8080)).is_ok());
/// assert_eq!(
///     port.check(&serde_json::json!(70000)).unwrap_err(),
///     "expected integer in 0..=65535, found 70000"
/// );
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TypeDesc {
    /// `true` or `false`.
    Bool,
    /// A whole number in `min..=max`.
    Integer {
        /// Smallest allowed value.
        min: i64,
        /// Largest allowed value.
        max: u64,
    },
    /// Any number.
    Float,
    /// A string; `format`, when present, says which strings the Rust type accepts (`char`,
    /// the `std::net` address types). Published as `{"type": "string"}`, with `"format": ...`
    /// only when there is one, so readers that predate `format` still read it (as any string).
    ///
    /// ```
    /// use kv_config::{KvType, StringFormat, TypeDesc};
    /// let ip = <std::net::IpAddr as KvType>::describe();
    /// assert_eq!(ip, TypeDesc::String { format: Some(StringFormat::Ip) });
    /// assert_eq!(serde_json::to_value(&ip).unwrap(), serde_json::json!({"type": "string", "format": "ip"}));
    /// assert!(ip.check(&serde_json::json!("10.0.0.1")).is_ok());
    /// assert_eq!(ip.check(&serde_json::json!("300.1.2.3")).unwrap_err(), "expected IP address, found string \"300.1.2.3\"");
    /// // A plain string, as published before `format` existed.
    /// let plain: TypeDesc = serde_json::from_value(serde_json::json!({"type": "string"})).unwrap();
    /// assert_eq!(plain, TypeDesc::String { format: None });
    /// ```
    String {
        /// What the string must parse as; `None` for any string.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        format: Option<StringFormat>,
    },
    /// One of these strings (a Rust enum of unit variants).
    Enum {
        /// The allowed names.
        variants: Vec<String>,
    },
    /// A JSON array.
    Array {
        /// Shape of every item.
        items: Box<TypeDesc>,
    },
    /// A JSON object with string keys.
    Object {
        /// Shape of every value.
        values: Box<TypeDesc>,
    },
    /// `null` or the inner shape.
    Optional {
        /// The shape when not null.
        inner: Box<TypeDesc>,
    },
    /// Any JSON (a type kv-config cannot describe; serde still checks it on load).
    Any,
}

impl fmt::Display for TypeDesc {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TypeDesc::Bool => f.write_str("bool"),
            TypeDesc::Integer { min, max } => write!(f, "integer in {min}..={max}"),
            TypeDesc::Float => f.write_str("number"),
            TypeDesc::String { format: None } => f.write_str("string"),
            TypeDesc::String { format: Some(format) } => write!(f, "{format}"),
            TypeDesc::Enum { variants } => write!(f, "one of {}", variants.join(", ")),
            TypeDesc::Array { items } => write!(f, "array of {items}"),
            TypeDesc::Object { values } => write!(f, "object of {values}"),
            TypeDesc::Optional { inner } => write!(f, "{inner} or null"),
            TypeDesc::Any => f.write_str("any JSON value"),
        }
    }
}

/// Which strings a [`TypeDesc::String`] accepts: what the Rust types whose serde form is a string
/// parse (with their `FromStr`, as serde does for them). Serialized as kebab-case names.
///
/// ```
/// use kv_config::StringFormat;
/// assert!(StringFormat::Char.accepts("é"));
/// assert!(!StringFormat::Char.accepts("abc"));
/// assert!(StringFormat::SocketAddr.accepts("[::1]:8080"));
/// assert!(!StringFormat::Ipv4.accepts("::1"));
/// assert_eq!(serde_json::to_value(StringFormat::SocketAddr).unwrap(), "socket-addr");
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StringFormat {
    /// Exactly one character (one Unicode scalar value): `char`.
    Char,
    /// An IPv4 address (`10.0.0.1`): `Ipv4Addr`.
    Ipv4,
    /// An IPv6 address (`::1`): `Ipv6Addr`.
    Ipv6,
    /// An IPv4 or IPv6 address: `IpAddr`.
    Ip,
    /// An IP address and a port (`10.0.0.1:80`, `[::1]:80`): `SocketAddr`.
    SocketAddr,
    /// A format this version of kv-config does not know (published by a newer one): checked as
    /// any string.
    #[serde(other)]
    Unknown,
}

impl StringFormat {
    /// `true` when `s` parses as this format (always for [`Unknown`](Self::Unknown)).
    pub fn accepts(self, s: &str) -> bool {
        use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
        match self {
            StringFormat::Char => s.chars().count() == 1,
            StringFormat::Ipv4 => s.parse::<Ipv4Addr>().is_ok(),
            StringFormat::Ipv6 => s.parse::<Ipv6Addr>().is_ok(),
            StringFormat::Ip => s.parse::<IpAddr>().is_ok(),
            StringFormat::SocketAddr => s.parse::<SocketAddr>().is_ok(),
            StringFormat::Unknown => true,
        }
    }
}

impl fmt::Display for StringFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            StringFormat::Char => "string of one character",
            StringFormat::Ipv4 => "IPv4 address",
            StringFormat::Ipv6 => "IPv6 address",
            StringFormat::Ip => "IP address",
            StringFormat::SocketAddr => "socket address (ip:port)",
            StringFormat::Unknown => "string",
        })
    }
}

fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        // A huge value must not make a huge message.
        Value::String(s) => format!("string {}", crate::redact::quoted(s, 60)),
        Value::Array(_) => "array".into(),
        Value::Object(_) => "object".into(),
    }
}

impl TypeDesc {
    /// Checks a JSON value against this shape; the error says what was expected and found.
    pub fn check(&self, v: &Value) -> Result<(), String> {
        let ok = match (self, v) {
            (TypeDesc::Any, _) => true,
            (TypeDesc::Optional { .. }, Value::Null) => true,
            (TypeDesc::Optional { inner }, v) => return inner.check(v),
            (TypeDesc::Bool, Value::Bool(_)) => true,
            (TypeDesc::Integer { min, max }, Value::Number(n)) => match (n.as_i64(), n.as_u64()) {
                (_, Some(u)) => u <= *max,
                (Some(i), None) => i >= *min,
                _ => false,
            },
            (TypeDesc::Float, Value::Number(_)) => true,
            (TypeDesc::String { format }, Value::String(s)) => format.as_ref().map_or(true, |f| f.accepts(s)),
            (TypeDesc::Enum { variants }, Value::String(s)) => variants.iter().any(|x| x == s),
            (TypeDesc::Array { items }, Value::Array(a)) => {
                return a.iter().try_for_each(|x| items.check(x)).map_err(|e| format!("in array: {e}"))
            }
            (TypeDesc::Object { values }, Value::Object(o)) => {
                return o.values().try_for_each(|x| values.check(x)).map_err(|e| format!("in object: {e}"))
            }
            _ => false,
        };
        if ok {
            Ok(())
        } else {
            Err(format!("expected {self}, found {}", kind_of(v)))
        }
    }

    /// `true` when a value that is not JSON may be read as a bare string (`nats kv put k debug`).
    pub fn is_string_like(&self) -> bool {
        match self {
            TypeDesc::String { .. } | TypeDesc::Enum { .. } | TypeDesc::Any => true,
            TypeDesc::Optional { inner } => inner.is_string_like(),
            _ => false,
        }
    }

    /// Parses raw bytes from the bucket as this shape: JSON, or a bare string where that fits.
    pub fn parse(&self, raw: &[u8]) -> Result<Value, String> {
        match serde_json::from_slice::<Value>(raw) {
            Ok(v) => self.check(&v).map(|_| v),
            Err(e) => match std::str::from_utf8(raw) {
                Ok(s) if self.is_string_like() => {
                    let v = Value::String(s.to_string());
                    self.check(&v).map(|_| v)
                }
                _ => Err(format!("not valid JSON ({e}); expected {self}")),
            },
        }
    }
}

/// One leaf key of a config struct.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FieldSchema {
    /// Full dotted key, relative to the config's prefix (`server.port`).
    pub key: String,
    /// The JSON shape of its value.
    #[serde(rename = "type")]
    pub ty: TypeDesc,
    /// The field's doc comment.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub doc: String,
    /// The default as JSON, if the field has one (secret defaults are never published).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// `true` if a value is required (no default, not optional).
    pub required: bool,
    /// `true` for `#[kv(secret)]`: redacted wherever kv-config prints values.
    #[serde(default)]
    pub secret: bool,
}

impl FieldSchema {
    /// `true` for the field of a map entry: its key has a `*` token standing for the entry name
    /// (`flags.*`, `tenants.*.limit`), so it describes every key that
    /// [matches](key_matches) it rather than one key.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use kv_config::KvConfig;
    /// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
    /// struct App {
    ///     flags: HashMap<String, bool>,
    /// }
    /// assert!(App::schema().fields[0].is_map_entry());
    /// ```
    pub fn is_map_entry(&self) -> bool {
        is_pattern(&self.key)
    }
}

/// Everything the derive knows about a config struct, publishable as JSON.
///
/// ```
/// use kv_config::KvConfig;
/// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
/// struct App {
///     /// Port to listen on.
///     #[kv(default = 8080)]
///     port: u16,
/// }
/// let schema = App::schema();
/// assert_eq!(schema.name, "App");
/// assert_eq!(schema.fields[0].key, "port");
/// assert_eq!(schema.fields[0].doc, "Port to listen on.");
/// assert_eq!(schema.field("port").unwrap().default, Some(serde_json::json!(8080)));
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Schema {
    /// The Rust struct's name.
    pub name: String,
    /// The version of the crate that defines it.
    pub version: String,
    /// One entry per leaf key, in field order.
    pub fields: Vec<FieldSchema>,
    /// `true` when validators read several keys (a struct-level `validate`, or one on a nested
    /// field): every write must then also bump the [`GUARD_KEY`](crate::GUARD_KEY) with a revision
    /// check in the same atomic batch, as `LiveConfig` does, so concurrent writers cannot combine
    /// into a refused config. Admin tools writing without the struct must do the same.
    #[serde(default)]
    pub cross_checks: bool,
}

impl Schema {
    /// The field with exactly this key (for a map entry, the pattern such as `flags.*`; see
    /// [`field_for`](Self::field_for) to look up a concrete key).
    pub fn field(&self, key: &str) -> Option<&FieldSchema> {
        self.fields.iter().find(|f| f.key == key)
    }

    /// The field that describes the concrete key `key`: the field with exactly this key, or the
    /// map-entry field whose pattern matches it (`*` stands for exactly one legal key token, so
    /// `flags.beta` matches `flags.*` and `tenants.acme.limit` matches `tenants.*.limit`).
    ///
    /// ```
    /// use std::collections::BTreeMap;
    /// use kv_config::KvConfig;
    /// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
    /// struct App {
    ///     flags: BTreeMap<String, bool>,
    /// }
    /// let schema = App::schema();
    /// assert_eq!(schema.fields[0].key, "flags.*");
    /// assert_eq!(schema.field_for("flags.beta").unwrap().key, "flags.*");
    /// assert!(schema.field_for("flags.a.b").is_none());
    /// assert!(schema.field_for("flags").is_none());
    /// ```
    pub fn field_for(&self, key: &str) -> Option<&FieldSchema> {
        self.field(key).or_else(|| self.fields.iter().find(|f| is_pattern(&f.key) && key_matches(&f.key, key)))
    }


    /// This schema as a JSON Schema (draft 2020-12) of the whole config as one JSON document:
    /// dotted keys become nested objects, map fields (`flags.*`) `additionalProperties`; types,
    /// ranges, enums, docs and defaults are kept, secrets are `writeOnly` without a default. The
    /// [`json_schema`](crate::json_schema) module lists every rule. For a derived config,
    /// [`KvConfig::json_schema`](crate::KvConfig::json_schema) is the same.
    ///
    /// ```
    /// use kv_config::{FieldSchema, Schema, TypeDesc};
    /// let schema = Schema {
    ///     name: "App".into(),
    ///     version: "1.0.0".into(),
    ///     fields: vec![FieldSchema {
    ///         key: "server.port".into(),
    ///         ty: TypeDesc::Integer { min: 0, max: 65535 },
    ///         doc: "Port to listen on.".into(),
    ///         default: None,
    ///         required: true,
    ///         secret: false,
    ///     }],
    ///     cross_checks: false,
    /// };
    /// let js = schema.json_schema();
    /// assert_eq!(js["required"], serde_json::json!(["server"]));
    /// let port = &js["properties"]["server"]["properties"]["port"];
    /// assert_eq!(port["maximum"], 65535);
    /// assert_eq!(port["description"], "Port to listen on.");
    /// ```
    pub fn json_schema(&self) -> Value {
        crate::json_schema::of(self)
    }

    /// Key -> field index, for lookups in a loop. Map-entry fields appear under their pattern
    /// (`flags.*`); use [`lookup`](Self::lookup) to find the field of a concrete key.
    pub fn index(&self) -> HashMap<&str, &FieldSchema> {
        self.fields.iter().map(|f| (f.key.as_str(), f)).collect()
    }

    /// An index for [`field_for`](Self::field_for) in a loop: a hash lookup for plain keys, and a
    /// pattern match over the map-entry fields only for keys that are not plain.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// use kv_config::KvConfig;
    /// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
    /// struct App {
    ///     #[kv(default = 1)]
    ///     workers: u32,
    ///     limits: HashMap<String, u64>,
    /// }
    /// let schema = App::schema();
    /// let lookup = schema.lookup();
    /// assert_eq!(lookup.get("workers").unwrap().key, "workers");
    /// assert_eq!(lookup.get("limits.acme").unwrap().key, "limits.*");
    /// assert!(lookup.get("limits").is_none());
    /// ```
    pub fn lookup(&self) -> SchemaLookup<'_> {
        let (patterns, plain): (Vec<&FieldSchema>, Vec<&FieldSchema>) = self.fields.iter().partition(|f| is_pattern(&f.key));
        SchemaLookup { plain: plain.into_iter().map(|f| (f.key.as_str(), f)).collect(), patterns }
    }

    /// Checks raw values (key -> bytes, relative keys) against the schema without the Rust type:
    /// returns every problem as (key, message). Missing required keys are reported too (for
    /// map entries, a required leaf missing from an entry that has other keys); keys that no
    /// field describes are not checked here.
    pub fn check_values(&self, values: &BTreeMap<String, Vec<u8>>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        let check = |problems: &mut Vec<(String, String)>, f: &FieldSchema, key: &str, raw: &[u8]| {
            if let Err(e) = f.ty.parse(raw) {
                let msg = if f.secret { format!("invalid value (redacted); expected {}", f.ty) } else { e };
                problems.push((key.to_string(), msg));
            }
        };
        for f in self.fields.iter().filter(|f| !is_pattern(&f.key)) {
            match values.get(&f.key) {
                Some(raw) => check(&mut problems, f, &f.key, raw),
                None if f.required => problems.push((f.key.clone(), "missing required value".into())),
                None => {}
            }
        }
        let patterns: Vec<&FieldSchema> = self.fields.iter().filter(|f| is_pattern(&f.key)).collect();
        if patterns.is_empty() {
            return problems;
        }
        let mut entries: BTreeMap<String, ()> = BTreeMap::new();
        for (key, raw) in values {
            if let Some(f) = patterns.iter().find(|f| key_matches(&f.key, key)) {
                check(&mut problems, f, key, raw);
                entries.insert(entry_of(&f.key, key), ());
            }
        }
        // A required leaf of a nested entry: missing when the entry has some key but not this one.
        for f in patterns.iter().filter(|f| f.required) {
            for entry in entries.keys() {
                if let Some(key) = instantiate(&f.key, entry) {
                    if key_matches(&f.key, &key) && !values.contains_key(&key) && problems.iter().all(|(k, _)| *k != key) {
                        problems.push((key, "missing required value".into()));
                    }
                }
            }
        }
        problems.sort_by(|a, b| a.0.cmp(&b.0));
        problems
    }
}

impl Schema {
    /// The map entry a concrete key belongs to (`tenants.acme` for `tenants.acme.limit` when
    /// the schema has `tenants.*.limit`), `None` for a key that is no map entry's.
    pub(crate) fn entry_of(&self, key: &str) -> Option<String> {
        let f = self.field_for(key).filter(|f| f.is_map_entry())?;
        Some(entry_of(&f.key, key))
    }
}

/// [`Schema::lookup`]: the field of a concrete key, a hash lookup for plain keys.
#[derive(Debug, Clone)]
pub struct SchemaLookup<'a> {
    plain: HashMap<&'a str, &'a FieldSchema>,
    patterns: Vec<&'a FieldSchema>,
}

impl<'a> SchemaLookup<'a> {
    /// The field that describes `key` (see [`Schema::field_for`]).
    pub fn get(&self, key: &str) -> Option<&'a FieldSchema> {
        if let Some(f) = self.plain.get(key) {
            return Some(f);
        }
        self.patterns.iter().copied().find(|f| key_matches(&f.key, key))
    }
}

/// `true` when a schema key is a map-entry pattern (has a `*` token).
fn is_pattern(schema_key: &str) -> bool {
    schema_key.split('.').any(|t| t == "*")
}

/// `true` when `key` matches the schema key `pattern`: token by token, `*` matching exactly one
/// legal key token (non-empty, only `[-/_=a-zA-Z0-9]`).
///
/// ```
/// use kv_config::key_matches;
/// assert!(key_matches("tenants.*.limit", "tenants.acme.limit"));
/// assert!(key_matches("port", "port"));
/// assert!(!key_matches("flags.*", "flags.a.b"));
/// assert!(!key_matches("flags.*", "flags.a b"));
/// ```
pub fn key_matches(pattern: &str, key: &str) -> bool {
    let mut keys = key.split('.');
    for p in pattern.split('.') {
        match keys.next() {
            Some(k) if p == "*" => {
                if !crate::config::is_key_token(k) {
                    return false;
                }
            }
            Some(k) if k == p => {}
            _ => return false,
        }
    }
    keys.next().is_none()
}

/// The part of `key` up to and including the first `*` of `pattern` (`tenants.acme`).
fn entry_of(pattern: &str, key: &str) -> String {
    let n = pattern.split('.').position(|t| t == "*").map_or(0, |i| i + 1);
    key.split('.').take(n).collect::<Vec<_>>().join(".")
}

/// `pattern` with its first `*` and everything before replaced by `entry` (`tenants.acme` +
/// `tenants.*.limit` -> `tenants.acme.limit`).
fn instantiate(pattern: &str, entry: &str) -> Option<String> {
    let n = pattern.split('.').position(|t| t == "*")? + 1;
    let rest: Vec<&str> = pattern.split('.').skip(n).collect();
    if entry.split('.').count() != n {
        return None;
    }
    Some(if rest.is_empty() { entry.to_string() } else { format!("{entry}.{}", rest.join(".")) })
}

/// The schema's keys as the live handle checks bucket keys against them: a hash set for plain
/// keys, the map-entry patterns otherwise.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    plain: std::collections::HashSet<String>,
    patterns: Vec<String>,
}

impl KeySet {
    pub(crate) fn from_keys(keys: impl IntoIterator<Item = String>) -> Self {
        let mut set = KeySet::default();
        for k in keys {
            if is_pattern(&k) {
                set.patterns.push(k);
            } else {
                set.plain.insert(k);
            }
        }
        set
    }

    /// `true` when `key` is a schema key or a map entry of one.
    pub(crate) fn contains(&self, key: &str) -> bool {
        self.plain.contains(key) || self.patterns.iter().any(|p| key_matches(p, key))
    }

    /// Every key and pattern, sorted, for messages.
    pub(crate) fn listing(&self) -> String {
        let mut all: Vec<&str> = self.plain.iter().chain(&self.patterns).map(String::as_str).collect();
        all.sort_unstable();
        all.join(", ")
    }
}

/// Describes a Rust type as a [`TypeDesc`]. Implemented for the std types a config uses;
/// `#[derive(KvValue)]` implements it for enums of unit variants.
///
/// ```
/// use kv_config::{KvType, TypeDesc};
/// assert_eq!(<u8 as KvType>::describe(), TypeDesc::Integer { min: 0, max: 255 });
/// assert_eq!(<Option<bool> as KvType>::describe(), TypeDesc::Optional { inner: Box::new(TypeDesc::Bool) });
/// ```
pub trait KvType {
    /// The JSON shape of this type's serde representation.
    fn describe() -> TypeDesc;
}

macro_rules! int {
    ($($t:ty),*) => {$(
        impl KvType for $t {
            fn describe() -> TypeDesc {
                TypeDesc::Integer { min: (<$t>::MIN as i128).max(i64::MIN as i128) as i64, max: (<$t>::MAX as u128).min(u64::MAX as u128) as u64 }
            }
        }
    )*};
}
int!(u8, u16, u32, u64, usize, i8, i16, i32, i64, isize);

macro_rules! simple {
    ($desc:expr => $($t:ty),*) => {$( impl KvType for $t { fn describe() -> TypeDesc { $desc } } )*};
}
simple!(TypeDesc::Bool => bool);
simple!(TypeDesc::Float => f32, f64);
simple!(TypeDesc::String { format: None } => String, std::path::PathBuf);
simple!(TypeDesc::String { format: Some(StringFormat::Char) } => char);
simple!(TypeDesc::String { format: Some(StringFormat::Ipv4) } => std::net::Ipv4Addr);
simple!(TypeDesc::String { format: Some(StringFormat::Ipv6) } => std::net::Ipv6Addr);
simple!(TypeDesc::String { format: Some(StringFormat::Ip) } => std::net::IpAddr);
simple!(TypeDesc::String { format: Some(StringFormat::SocketAddr) } => std::net::SocketAddr);
simple!(TypeDesc::Any => Value);

impl<T: KvType> KvType for Option<T> {
    fn describe() -> TypeDesc {
        TypeDesc::Optional { inner: Box::new(T::describe()) }
    }
}
impl<T: KvType> KvType for Vec<T> {
    fn describe() -> TypeDesc {
        TypeDesc::Array { items: Box::new(T::describe()) }
    }
}
impl<T: KvType> KvType for std::collections::BTreeSet<T> {
    fn describe() -> TypeDesc {
        TypeDesc::Array { items: Box::new(T::describe()) }
    }
}
impl<T: KvType, S> KvType for std::collections::HashSet<T, S> {
    fn describe() -> TypeDesc {
        TypeDesc::Array { items: Box::new(T::describe()) }
    }
}
impl<V: KvType> KvType for BTreeMap<String, V> {
    fn describe() -> TypeDesc {
        TypeDesc::Object { values: Box::new(V::describe()) }
    }
}
impl<V: KvType, S> KvType for HashMap<String, V, S> {
    fn describe() -> TypeDesc {
        TypeDesc::Object { values: Box::new(V::describe()) }
    }
}
impl<T: KvType + ?Sized> KvType for Box<T> {
    fn describe() -> TypeDesc {
        T::describe()
    }
}
impl<T: KvType + ?Sized> KvType for std::sync::Arc<T> {
    fn describe() -> TypeDesc {
        T::describe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn std_string_types_publish_what_they_parse() {
        let cases: [(TypeDesc, Value, &str, &str); 6] = [
            (<char as KvType>::describe(), json!({"type": "string", "format": "char"}), "é", "abc"),
            (<std::net::Ipv4Addr as KvType>::describe(), json!({"type": "string", "format": "ipv4"}), "10.0.0.1", "300.1.2.3"),
            (<std::net::Ipv6Addr as KvType>::describe(), json!({"type": "string", "format": "ipv6"}), "::1", "10.0.0.1"),
            (<std::net::IpAddr as KvType>::describe(), json!({"type": "string", "format": "ip"}), "::1", "not-an-ip"),
            (<std::net::SocketAddr as KvType>::describe(), json!({"type": "string", "format": "socket-addr"}), "[::1]:80", "10.0.0.1"),
            (<std::path::PathBuf as KvType>::describe(), json!({"type": "string"}), "/etc", ""),
        ];
        for (ty, published, good, bad) in cases {
            assert_eq!(serde_json::to_value(&ty).unwrap(), published);
            assert_eq!(serde_json::from_value::<TypeDesc>(published).unwrap(), ty);
            assert!(ty.check(&json!(good)).is_ok(), "{ty}: {good}");
            assert!(ty.parse(good.as_bytes()).is_ok(), "{ty}: bare {good}");
            if !bad.is_empty() {
                assert_eq!(ty.check(&json!(bad)).unwrap_err(), format!("expected {ty}, found string {bad:?}"));
            }
        }
        assert_eq!(<char as KvType>::describe().to_string(), "string of one character");
    }

    #[test]
    fn formats_are_compatible_both_ways() {
        // A reader that predates `format` (a unit `String` variant) reads the new schema.
        #[derive(Debug, PartialEq, Deserialize)]
        #[serde(tag = "type", rename_all = "snake_case")]
        enum Old {
            String,
            Optional { inner: Box<Old> },
        }
        let new = serde_json::to_value(<Option<std::net::IpAddr> as KvType>::describe()).unwrap();
        assert_eq!(serde_json::from_value::<Old>(new).unwrap(), Old::Optional { inner: Box::new(Old::String) });
        // A format from a newer writer is read as any string.
        let later: TypeDesc = serde_json::from_value(json!({"type": "string", "format": "uuid"})).unwrap();
        assert_eq!(later, TypeDesc::String { format: Some(StringFormat::Unknown) });
        assert!(later.check(&json!("anything")).is_ok());
    }
}
