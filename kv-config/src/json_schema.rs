//! A config's [`Schema`] as a JSON Schema (draft 2020-12) of the whole config as one JSON
//! document, for validators and editors that know nothing of kv-config.
//!
//! The document is the object form of the keys: a dotted key becomes nested objects
//! (`server.port` is `{"server": {"port": 8080}}`), and a map field's `*` token (`flags.*`,
//! `tenants.*.limit`) becomes `additionalProperties`, with `propertyNames` restricted to one legal
//! NATS key token. What each [`TypeDesc`] becomes:
//!
//! | `TypeDesc` | JSON Schema |
//! |---|---|
//! | `Bool` | `{"type": "boolean"}` |
//! | `Integer { min, max }` | `{"type": "integer", "minimum": min, "maximum": max}` |
//! | `Float` | `{"type": "number"}` |
//! | `String` | `{"type": "string"}` |
//! | `String` of format `char` | `{"type": "string", "minLength": 1, "maxLength": 1}` |
//! | `String` of format `ipv4` / `ipv6` | `{"type": "string", "format": "ipv4"}` / `"ipv6"` |
//! | `String` of format `ip` | `{"type": "string", "anyOf": [{"format": "ipv4"}, {"format": "ipv6"}]}` |
//! | `String` of format `socket-addr` | `{"type": "string", "pattern": ...}` (an IPv4 address or a bracketed IPv6 one, `:`, a port) |
//! | `Enum { variants }` | `{"type": "string", "enum": variants}` |
//! | `Array { items }` | `{"type": "array", "items": ...}` |
//! | `Object { values }` | `{"type": "object", "additionalProperties": ...}` |
//! | `Optional { inner }` | the inner schema with `"null"` added to its `type` (and `enum`) |
//! | `Any` | `{}` |
//!
//! Every field carries its doc comment as `description` and its default as `default`; a secret
//! field is `writeOnly: true` and never has a `default`. A field without a default is listed in
//! its object's `required`, and an object with a required key is itself required.
//!
//! Objects made of a struct's fields have `additionalProperties: false`: an editor flags an
//! unknown key (most often a typo, which a running service would ignore with a warning and the
//! value would never apply), as `LiveConfig::set` and `kvc set` refuse one. Map fields accept any
//! entry name that is one NATS key token.
//!
//! Differences from kv-config's own checks: JSON Schema's `integer` also admits `1.0`, which
//! kv-config refuses; `format` is only an annotation unless the validator asserts formats, and
//! the socket address pattern is looser than Rust's parser (kv-config and `kvc` parse every
//! address with std's `FromStr`); validators (`#[kv(validate = ...)]`) are Rust code and are not in the
//! schema.

use serde_json::{json, Map, Value};

use crate::schema::{FieldSchema, Schema, StringFormat, TypeDesc};

/// The key (relative to the config's prefix) the JSON Schema is published under, next to
/// [`SCHEMA_KEY`](crate::SCHEMA_KEY), by [`LiveConfig::publish_schema`](crate::LiveConfig::publish_schema).
///
/// ```
/// assert!(kv_config::JSON_SCHEMA_KEY.starts_with(kv_config::RESERVED_PREFIX));
/// ```
pub const JSON_SCHEMA_KEY: &str = "__kvconfig.json_schema";

/// The `$schema` of every generated JSON Schema: draft 2020-12.
///
/// ```
/// use kv_config::KvConfig;
/// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
/// struct App { #[kv(default)] port: u16 }
/// assert_eq!(App::json_schema()["$schema"], kv_config::JSON_SCHEMA_DRAFT);
/// ```
pub const JSON_SCHEMA_DRAFT: &str = "https://json-schema.org/draft/2020-12/schema";

/// The token of a map field's key that stands for the entry name (`flags.*`).
const ENTRY: &str = "*";

/// An entry name: one NATS key token (see [`is_valid_key`](crate::store::is_valid_key)).
const ENTRY_NAME_PATTERN: &str = "^[-/_=a-zA-Z0-9]+$";

/// The keys of a schema as a tree: dotted keys become nested objects.
enum Node<'a> {
    Leaf(&'a FieldSchema),
    Object(Object<'a>),
}

#[derive(Default)]
struct Object<'a> {
    /// Named members, in field order.
    members: Vec<(&'a str, Node<'a>)>,
    /// The schema of every map entry (`*`), if this object is a map.
    entries: Option<Box<Node<'a>>>,
}

impl<'a> Object<'a> {
    /// The member (or the map entry for `*`) named `token`, created by `make` when absent.
    fn slot(&mut self, token: &'a str, make: impl FnOnce() -> Node<'a>) -> &mut Node<'a> {
        if token == ENTRY {
            return self.entries.get_or_insert_with(|| Box::new(make()));
        }
        let i = match self.members.iter().position(|(name, _)| *name == token) {
            Some(i) => i,
            None => {
                self.members.push((token, make()));
                self.members.len() - 1
            }
        };
        &mut self.members[i].1
    }

    /// Adds a field under its dotted key. A key that is both a leaf and the prefix of other keys
    /// (which the derive never produces) keeps whichever came first.
    fn insert(&mut self, field: &'a FieldSchema) {
        let mut tokens = field.key.split('.').peekable();
        let mut object = self;
        while let Some(token) = tokens.next() {
            if tokens.peek().is_none() {
                object.slot(token, || Node::Leaf(field));
                return;
            }
            match object.slot(token, || Node::Object(Object::default())) {
                Node::Object(inner) => object = inner,
                Node::Leaf(first) => {
                    tracing::debug!(key = %field.key, leaf = %first.key, "key under a leaf key left out of the JSON Schema");
                    return;
                }
            }
        }
    }

    /// `true` when some key below must have a value (map entries never make a map required).
    fn is_required(&self) -> bool {
        self.members.iter().any(|(_, node)| node.is_required())
    }

    fn to_json(&self) -> Map<String, Value> {
        let mut out = Map::new();
        out.insert("type".into(), json!("object"));
        if !self.members.is_empty() {
            let props: Map<String, Value> = self.members.iter().map(|(name, node)| (name.to_string(), node.to_json())).collect();
            out.insert("properties".into(), Value::Object(props));
        }
        let required: Vec<&str> = self.members.iter().filter(|(_, node)| node.is_required()).map(|(name, _)| *name).collect();
        if !required.is_empty() {
            out.insert("required".into(), json!(required));
        }
        match &self.entries {
            Some(entry) => {
                if let Node::Leaf(field) = entry.as_ref() {
                    // A map of values: its doc describes the whole map, too.
                    if !field.doc.is_empty() {
                        out.insert("description".into(), json!(field.doc));
                    }
                }
                out.insert("propertyNames".into(), json!({ "pattern": ENTRY_NAME_PATTERN }));
                out.insert("additionalProperties".into(), entry.to_json());
            }
            None => {
                out.insert("additionalProperties".into(), json!(false));
            }
        }
        out
    }
}

impl Node<'_> {
    fn is_required(&self) -> bool {
        match self {
            Node::Leaf(field) => field.required,
            Node::Object(object) => object.is_required(),
        }
    }

    fn to_json(&self) -> Value {
        match self {
            Node::Leaf(field) => leaf(field),
            Node::Object(object) => Value::Object(object.to_json()),
        }
    }
}

/// One key's schema: its type, doc, default and secret flag.
fn leaf(field: &FieldSchema) -> Value {
    let mut out = match type_schema(&field.ty) {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    if !field.doc.is_empty() {
        out.insert("description".into(), json!(field.doc));
    }
    if field.secret {
        out.insert("writeOnly".into(), json!(true));
    } else if let Some(default) = &field.default {
        out.insert("default".into(), default.clone());
    }
    Value::Object(out)
}

/// The JSON Schema of a value of this shape.
fn type_schema(ty: &TypeDesc) -> Value {
    match ty {
        TypeDesc::Bool => json!({ "type": "boolean" }),
        TypeDesc::Integer { min, max } => json!({ "type": "integer", "minimum": min, "maximum": max }),
        TypeDesc::Float => json!({ "type": "number" }),
        TypeDesc::String { format } => string_schema(*format),
        TypeDesc::Enum { variants } => json!({ "type": "string", "enum": variants }),
        TypeDesc::Array { items } => json!({ "type": "array", "items": type_schema(items) }),
        TypeDesc::Object { values } => json!({ "type": "object", "additionalProperties": type_schema(values) }),
        TypeDesc::Optional { inner } => nullable(type_schema(inner)),
        TypeDesc::Any => json!({}),
    }
}

/// An IPv4 address, or a bracketed IPv6 address (with an optional zone), then `:` and a port: the
/// shape of a Rust `SocketAddr`, checked loosely (kv-config parses it exactly).
const SOCKET_ADDR_PATTERN: &str = r"^([0-9]{1,3}(\.[0-9]{1,3}){3}|\[[0-9A-Fa-f:.]+(%[0-9A-Za-z]+)?\]):[0-9]{1,5}$";

/// The JSON Schema of a string of this format.
fn string_schema(format: Option<StringFormat>) -> Value {
    match format {
        None | Some(StringFormat::Unknown) => json!({ "type": "string" }),
        Some(StringFormat::Char) => json!({ "type": "string", "minLength": 1, "maxLength": 1 }),
        Some(StringFormat::Ipv4) => json!({ "type": "string", "format": "ipv4" }),
        Some(StringFormat::Ipv6) => json!({ "type": "string", "format": "ipv6" }),
        Some(StringFormat::Ip) => json!({ "type": "string", "anyOf": [{ "format": "ipv4" }, { "format": "ipv6" }] }),
        Some(StringFormat::SocketAddr) => json!({ "type": "string", "pattern": SOCKET_ADDR_PATTERN }),
    }
}

/// The schema that also admits `null`: `"null"` joins the `type` (and the `enum`, if any).
fn nullable(schema: Value) -> Value {
    let Value::Object(mut map) = schema else { return schema };
    match map.get_mut("type") {
        Some(Value::String(t)) => {
            let t = std::mem::take(t);
            map.insert("type".into(), json!([t, "null"]));
        }
        Some(Value::Array(types)) => {
            if !types.contains(&json!("null")) {
                types.push(json!("null"));
            }
        }
        // No `type` (`Any`): null is already admitted.
        _ => return Value::Object(map),
    }
    if let Some(Value::Array(values)) = map.get_mut("enum") {
        if !values.contains(&Value::Null) {
            values.push(Value::Null);
        }
    }
    Value::Object(map)
}

/// The JSON Schema of a whole config document (see [`Schema::json_schema`]).
pub(crate) fn of(schema: &Schema) -> Value {
    let mut root = Object::default();
    for field in &schema.fields {
        root.insert(field);
    }
    let mut out = Map::new();
    out.insert("$schema".into(), json!(JSON_SCHEMA_DRAFT));
    out.insert("title".into(), json!(schema.name));
    out.insert(
        "$comment".into(),
        json!(format!(
            "Generated by kv-config from `{}` {}. A document holds every key of the config in NATS KV as nested objects: the key `a.b` is the member `b` of the object `a`.",
            schema.name, schema.version
        )),
    );
    out.insert("x-kvconfig".into(), json!({ "name": schema.name, "version": schema.version }));
    out.extend(root.to_json());
    Value::Object(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(key: &str, ty: TypeDesc, required: bool) -> FieldSchema {
        FieldSchema { key: key.into(), ty, doc: String::new(), default: None, required, secret: false }
    }

    fn schema(fields: Vec<FieldSchema>) -> Schema {
        Schema { name: "App".into(), version: "1.2.3".into(), fields, cross_checks: false }
    }

    #[test]
    fn dotted_keys_become_nested_objects_with_required_lists() {
        let s = schema(vec![
            field("name", TypeDesc::String { format: None }, true),
            field("server.port", TypeDesc::Integer { min: 0, max: 65535 }, false),
            field("server.tls.cert", TypeDesc::String { format: None }, true),
            field("limits.max", TypeDesc::Float, false),
        ]);
        let js = of(&s);
        assert_eq!(js["$schema"], JSON_SCHEMA_DRAFT);
        assert_eq!(js["title"], "App");
        assert_eq!(js["x-kvconfig"], json!({ "name": "App", "version": "1.2.3" }));
        assert_eq!(js["required"], json!(["name", "server"]), "limits has no required key");
        assert_eq!(js["additionalProperties"], json!(false));
        let server = &js["properties"]["server"];
        assert_eq!(server["required"], json!(["tls"]));
        assert_eq!(server["properties"]["port"], json!({ "type": "integer", "minimum": 0, "maximum": 65535 }));
        assert_eq!(server["properties"]["tls"]["required"], json!(["cert"]));
        assert!(js["properties"]["limits"].get("required").is_none());
    }

    #[test]
    fn annotations_and_secrets() {
        let mut port = field("port", TypeDesc::Integer { min: 0, max: 65535 }, false);
        port.doc = "Port to listen on.".into();
        port.default = Some(json!(8080));
        let mut token = field("token", TypeDesc::String { format: None }, false);
        token.secret = true;
        token.default = Some(json!("must not leak"));
        let js = of(&schema(vec![port, token]));
        assert_eq!(
            js["properties"]["port"],
            json!({ "type": "integer", "minimum": 0, "maximum": 65535, "description": "Port to listen on.", "default": 8080 })
        );
        assert_eq!(js["properties"]["token"], json!({ "type": "string", "writeOnly": true }));
    }

    #[test]
    fn types_map_to_json_schema() {
        let enum_ = TypeDesc::Enum { variants: vec!["a".into(), "b".into()] };
        let cases = [
            (TypeDesc::Bool, json!({ "type": "boolean" })),
            (TypeDesc::Float, json!({ "type": "number" })),
            (TypeDesc::Any, json!({})),
            (enum_.clone(), json!({ "type": "string", "enum": ["a", "b"] })),
            (
                TypeDesc::Optional { inner: Box::new(enum_) },
                json!({ "type": ["string", "null"], "enum": ["a", "b", null] }),
            ),
            (
                TypeDesc::Optional { inner: Box::new(TypeDesc::Optional { inner: Box::new(TypeDesc::Bool) }) },
                json!({ "type": ["boolean", "null"] }),
            ),
            (TypeDesc::Optional { inner: Box::new(TypeDesc::Any) }, json!({})),
            (
                TypeDesc::Array { items: Box::new(TypeDesc::String { format: None }) },
                json!({ "type": "array", "items": { "type": "string" } }),
            ),
            (
                TypeDesc::Object { values: Box::new(TypeDesc::Integer { min: -1, max: 1 }) },
                json!({ "type": "object", "additionalProperties": { "type": "integer", "minimum": -1, "maximum": 1 } }),
            ),
        ];
        for (ty, expected) in cases {
            assert_eq!(type_schema(&ty), expected, "{ty}");
        }
    }

    #[test]
    fn map_entries_become_additional_properties() {
        let mut flags = field("flags.*", TypeDesc::Bool, false);
        flags.doc = "Feature flags.".into();
        let s = schema(vec![
            flags,
            field("tenants.*.limit", TypeDesc::Integer { min: 0, max: 100 }, true),
            field("tenants.*.plan", TypeDesc::String { format: None }, false),
        ]);
        let js = of(&s);
        assert!(js.get("required").is_none(), "maps are never required: {js}");
        assert_eq!(
            js["properties"]["flags"],
            json!({
                "type": "object",
                "description": "Feature flags.",
                "propertyNames": { "pattern": ENTRY_NAME_PATTERN },
                "additionalProperties": { "type": "boolean", "description": "Feature flags." },
            })
        );
        let tenants = &js["properties"]["tenants"];
        assert_eq!(tenants["propertyNames"]["pattern"], ENTRY_NAME_PATTERN);
        assert!(tenants.get("properties").is_none());
        let entry = &tenants["additionalProperties"];
        assert_eq!(entry["required"], json!(["limit"]));
        assert_eq!(entry["additionalProperties"], json!(false));
        assert_eq!(entry["properties"]["plan"], json!({ "type": "string" }));
    }

    #[test]
    fn a_key_under_a_leaf_keeps_the_leaf() {
        let js = of(&schema(vec![field("a", TypeDesc::Bool, true), field("a.b", TypeDesc::String { format: None }, true)]));
        assert_eq!(js["properties"]["a"], json!({ "type": "boolean" }));
        assert_eq!(js["required"], json!(["a"]));
    }

    #[test]
    fn string_formats_say_what_the_rust_type_accepts() {
        let ty = |format| TypeDesc::Optional { inner: Box::new(TypeDesc::String { format: Some(format) }) };
        let js = of(&schema(vec![
            field("sep", TypeDesc::String { format: Some(StringFormat::Char) }, true),
            field("v4", TypeDesc::String { format: Some(StringFormat::Ipv4) }, true),
            field("v6", ty(StringFormat::Ipv6), false),
            field("ip", TypeDesc::String { format: Some(StringFormat::Ip) }, true),
            field("listen", TypeDesc::String { format: Some(StringFormat::SocketAddr) }, true),
            field("later", TypeDesc::String { format: Some(StringFormat::Unknown) }, true),
        ]));
        let p = &js["properties"];
        assert_eq!(p["sep"], json!({ "type": "string", "minLength": 1, "maxLength": 1 }));
        assert_eq!(p["v4"], json!({ "type": "string", "format": "ipv4" }));
        assert_eq!(p["v6"], json!({ "type": ["string", "null"], "format": "ipv6" }));
        assert_eq!(p["ip"], json!({ "type": "string", "anyOf": [{ "format": "ipv4" }, { "format": "ipv6" }] }));
        assert_eq!(p["listen"]["pattern"], SOCKET_ADDR_PATTERN);
        assert_eq!(p["later"], json!({ "type": "string" }));
    }
}
