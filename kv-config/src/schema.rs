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
    /// A string.
    String,
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
            TypeDesc::String => f.write_str("string"),
            TypeDesc::Enum { variants } => write!(f, "one of {}", variants.join(", ")),
            TypeDesc::Array { items } => write!(f, "array of {items}"),
            TypeDesc::Object { values } => write!(f, "object of {values}"),
            TypeDesc::Optional { inner } => write!(f, "{inner} or null"),
            TypeDesc::Any => f.write_str("any JSON value"),
        }
    }
}

fn kind_of(v: &Value) -> String {
    match v {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => format!("string {s:?}"),
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
            (TypeDesc::String, Value::String(_)) => true,
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
            TypeDesc::String | TypeDesc::Enum { .. } | TypeDesc::Any => true,
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
    /// The field with this key.
    pub fn field(&self, key: &str) -> Option<&FieldSchema> {
        self.fields.iter().find(|f| f.key == key)
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

    /// Key -> field index, for lookups in a loop.
    pub fn index(&self) -> HashMap<&str, &FieldSchema> {
        self.fields.iter().map(|f| (f.key.as_str(), f)).collect()
    }

    /// Checks raw values (key -> bytes, relative keys) against the schema without the Rust type:
    /// returns every problem as (key, message). Missing required keys are reported too.
    pub fn check_values(&self, values: &BTreeMap<String, Vec<u8>>) -> Vec<(String, String)> {
        let mut problems = Vec::new();
        for f in &self.fields {
            match values.get(&f.key) {
                Some(raw) => {
                    if let Err(e) = f.ty.parse(raw) {
                        let msg = if f.secret { format!("invalid value (redacted); expected {}", f.ty) } else { e };
                        problems.push((f.key.clone(), msg));
                    }
                }
                None if f.required => problems.push((f.key.clone(), "missing required value".into())),
                None => {}
            }
        }
        problems
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
simple!(TypeDesc::String => String, char, std::path::PathBuf, std::net::IpAddr, std::net::SocketAddr, std::net::Ipv4Addr, std::net::Ipv6Addr);
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
