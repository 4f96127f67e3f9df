//! The JSON Schema of a config (`KvConfig::json_schema`), checked with an independent validator
//! (the `jsonschema` crate): it is valid draft 2020-12, it accepts the documents kv-config
//! accepts and refuses the ones it refuses (with the documented exceptions), `publish_schema`
//! stores it next to the kv-config schema on a real nats-server, and `kvc export` output
//! validates once put in document form.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use kv_config::store::{is_valid_key, BucketConfig, NatsStore, Store, StoreErrorKind, WriteOp};
use kv_config::{FieldSchema, KvConfig, KvValue, LiveConfig, RawValue, RawValues, Schema, Source, TypeDesc, JSON_SCHEMA_KEY, SCHEMA_KEY};
use kv_config_cli::cli::Command;
use kv_config_cli::commands::{export, schema};
use kv_config_testing::{eventually, NatsServer};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

#[derive(KvValue, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Mode {
    Fast,
    Safe,
}

/// A config with every kind of field the derive knows.
#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct App {
    /// Service name.
    name: String,
    /// How to run.
    #[kv(default = Mode::Safe)]
    mode: Mode,
    #[kv(nested)]
    server: Server,
    /// Upstream timeout (none = wait).
    timeout_ms: Option<u32>,
    #[kv(default)]
    tags: Vec<String>,
    #[kv(default = 0.5)]
    ratio: f64,
    /// Upstream token.
    #[kv(secret, default)]
    token: String,
    #[kv(default)]
    extra: Value,
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Server {
    /// Host name.
    host: String,
    #[kv(default = 8080)]
    port: u16,
}

/// A validator for `schema`, after checking that `schema` is itself valid draft 2020-12.
fn validator(schema: &Value) -> jsonschema::Validator {
    if let Err(e) = jsonschema::draft202012::meta::validate(schema) {
        panic!("not a valid draft 2020-12 schema: {e}\n{schema:#}");
    }
    jsonschema::draft202012::new(schema).expect("compiles")
}

/// Why `doc` is refused (empty when it is valid).
fn errors(v: &jsonschema::Validator, doc: &Value) -> Vec<String> {
    v.iter_errors(doc).map(|e| format!("{}: {e}", e.instance_path())).collect()
}

/// The document form of flat keys: `a.b` -> `{"a": {"b": ...}}`.
fn document(flat: impl IntoIterator<Item = (String, Value)>) -> Value {
    let mut root = json!({});
    for (key, value) in flat {
        let tokens: Vec<&str> = key.split('.').collect();
        let mut at = &mut root;
        for t in &tokens[..tokens.len() - 1] {
            at = at.as_object_mut().expect("object").entry(*t).or_insert_with(|| json!({}));
        }
        at.as_object_mut().expect("object").insert(tokens[tokens.len() - 1].to_string(), value);
    }
    root
}

/// The keys of a document as kv-config stores them: a member that is a schema key is a value,
/// any other object is walked into.
fn flatten(schema: &Schema, path: &str, doc: &Value, out: &mut RawValues) {
    match doc {
        Value::Object(members) if schema.field(path).is_none() => {
            for (name, v) in members {
                let key = if path.is_empty() { name.clone() } else { format!("{path}.{name}") };
                flatten(schema, &key, v, out);
            }
        }
        v => {
            let raw = RawValue { value: serde_json::to_vec(v).unwrap().into(), revision: 1, created: None };
            out.insert(path.to_string(), raw);
        }
    }
}

/// What kv-config's own decoder says of a document.
fn decodes(doc: &Value) -> Result<App, String> {
    let mut raw = RawValues::new();
    flatten(&App::schema(), "", doc, &mut raw);
    App::decode(&raw, &Source::new("cfg", "")).map_err(|e| e.to_string())
}

fn valid_doc() -> Value {
    json!({
        "name": "api",
        "mode": "fast",
        "server": { "host": "example.org", "port": 9090 },
        "timeout_ms": 250,
        "tags": ["a", "b"],
        "ratio": 0.25,
        "token": "s3cret",
        "extra": { "anything": [1, null] }
    })
}

#[test]
fn the_schema_is_valid_draft_2020_12_and_meta_validation_can_fail() {
    let schema = App::json_schema();
    assert_eq!(schema["$schema"], "https://json-schema.org/draft/2020-12/schema");
    validator(&schema);
    // The meta-check is not vacuous: a wrong keyword value is refused.
    let mut broken = schema.clone();
    broken["properties"]["server"]["properties"]["port"]["type"] = json!("whole number");
    assert!(jsonschema::draft202012::meta::validate(&broken).is_err());
}

#[test]
fn the_validator_and_kv_config_agree_on_documents() {
    let v = validator(&App::json_schema());
    let with = |edit: &dyn Fn(&mut Value)| {
        let mut doc = valid_doc();
        edit(&mut doc);
        doc
    };
    let accepted = [
        ("every key", valid_doc()),
        ("only the required keys", json!({ "name": "api", "server": { "host": "h" } })),
        ("an optional key as null", with(&|d| d["timeout_ms"] = Value::Null)),
        ("any JSON where the type is Any", with(&|d| d["extra"] = json!("text"))),
    ];
    for (what, doc) in accepted {
        assert_eq!(errors(&v, &doc), Vec::<String>::new(), "{what}: {doc}");
        assert!(decodes(&doc).is_ok(), "{what}: kv-config refuses it: {:?}", decodes(&doc).err());
    }
    let refused = [
        ("wrong type", with(&|d| d["server"]["port"] = json!("http")), "/server/port"),
        ("integer above its range", with(&|d| d["server"]["port"] = json!(70000)), "/server/port"),
        ("negative for an unsigned integer", with(&|d| d["server"]["port"] = json!(-1)), "/server/port"),
        ("unknown enum variant", with(&|d| d["mode"] = json!("turbo")), "/mode"),
        ("missing required key", with(&|d| drop(d.as_object_mut().unwrap().remove("name"))), ""),
        ("missing required nested key", with(&|d| drop(d["server"].as_object_mut().unwrap().remove("host"))), "/server"),
        ("missing nested object with a required key", with(&|d| drop(d.as_object_mut().unwrap().remove("server"))), ""),
        ("wrong item type", with(&|d| d["tags"] = json!(["a", 1])), "/tags/1"),
        ("string for a number", with(&|d| d["ratio"] = json!("half")), "/ratio"),
        ("null for an enum", with(&|d| d["mode"] = Value::Null), "/mode"),
    ];
    for (what, doc, path) in refused {
        let errs = errors(&v, &doc);
        assert!(!errs.is_empty(), "{what}: the JSON Schema accepts {doc}");
        assert!(errs.iter().any(|e| e.starts_with(&format!("{path}:"))), "{what}: errors at {path} expected: {errs:?}");
        assert!(decodes(&doc).is_err(), "{what}: kv-config accepts {doc}");
    }

    // The documented differences. An unknown key (a typo) is refused by the schema, so an editor
    // flags it; a running service ignores it (with a warning) and writers refuse it.
    let typo = with(&|d| d["server"]["prot"] = json!(1));
    assert_eq!(errors(&v, &typo).len(), 1, "{:?}", errors(&v, &typo));
    assert!(decodes(&typo).is_ok());
    // kv-config reads a bare `null` stored for a string key as the string "null" (the bare-string
    // rule that lets `nats kv put app name api` work); the schema asks for a JSON string.
    let null_name = with(&|d| d["name"] = Value::Null);
    assert!(!v.is_valid(&null_name));
    assert_eq!(decodes(&null_name).unwrap().name, "null");
    // JSON Schema's `integer` includes 1.0, which serde refuses for a u16.
    let float_port = with(&|d| d["server"]["port"] = json!(1.0));
    assert!(v.is_valid(&float_port));
    assert!(decodes(&float_port).is_err());
}

#[test]
fn every_config_kv_config_writes_validates() {
    let v = validator(&App::json_schema());
    // The defaults of every optional key, as LiveConfig would write them.
    let minimal = decodes(&json!({ "name": "api", "server": { "host": "h" } })).unwrap();
    let full = decodes(&valid_doc()).unwrap();
    for app in [minimal, full] {
        let flat = app.encode().unwrap().into_iter().map(|(k, v)| (k, serde_json::from_slice::<Value>(&v).unwrap()));
        let doc = document(flat);
        assert_eq!(errors(&v, &doc), Vec::<String>::new(), "{doc}");
    }
}

#[test]
fn annotations_for_editors() {
    let schema = App::json_schema();
    let p = &schema["properties"];
    assert_eq!(schema["title"], "App");
    assert_eq!(schema["x-kvconfig"]["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(p["name"]["description"], "Service name.");
    assert_eq!(p["mode"], json!({ "type": "string", "enum": ["fast", "safe"], "default": "safe", "description": "How to run." }));
    assert_eq!(p["server"]["properties"]["port"]["default"], 8080);
    assert_eq!(p["timeout_ms"]["type"], json!(["integer", "null"]));
    assert_eq!(p["token"], json!({ "type": "string", "writeOnly": true, "description": "Upstream token." }));
    assert_eq!(p["extra"], json!({ "default": null }));
}

fn field(key: &str, ty: TypeDesc, required: bool) -> FieldSchema {
    FieldSchema { key: key.into(), ty, doc: String::new(), default: None, required, secret: false }
}

/// Map fields, as the derive describes them: a `*` token for the entry name.
fn map_schema() -> Schema {
    let plan = TypeDesc::Enum { variants: vec!["free".into(), "pro".into()] };
    Schema {
        name: "Tenants".into(),
        version: "1.0.0".into(),
        fields: vec![
            field("flags.*", TypeDesc::Bool, false),
            field("tenants.*.limit", TypeDesc::Integer { min: 0, max: 100 }, true),
            FieldSchema { default: Some(json!("free")), ..field("tenants.*.plan", plan, false) },
            field("owner", TypeDesc::String { format: None }, true),
        ],
        cross_checks: false,
    }
}

#[test]
fn map_fields_validate_entries_and_entry_names() {
    let v = validator(&map_schema().json_schema());
    let ok = [
        json!({ "owner": "o" }),
        json!({ "owner": "o", "flags": {}, "tenants": {} }),
        json!({ "owner": "o", "flags": { "beta": true, "a-b_c=/1": false } }),
        json!({ "owner": "o", "tenants": { "acme": { "limit": 5 }, "globex": { "limit": 100, "plan": "pro" } } }),
    ];
    for doc in ok {
        assert_eq!(errors(&v, &doc), Vec::<String>::new(), "{doc}");
    }
    let refused = [
        (json!({ "owner": "o", "flags": { "beta": 1 } }), "/flags/beta"),
        (json!({ "owner": "o", "flags": { "a.b": true } }), "/flags"),
        (json!({ "owner": "o", "flags": { "": true } }), "/flags"),
        (json!({ "owner": "o", "tenants": { "acme": {} } }), "/tenants/acme"),
        (json!({ "owner": "o", "tenants": { "acme": { "limit": 500 } } }), "/tenants/acme/limit"),
        (json!({ "owner": "o", "tenants": { "acme": { "limit": 5, "plan": "gold" } } }), "/tenants/acme/plan"),
        (json!({ "owner": "o", "tenants": { "acme": { "limit": 5, "color": "red" } } }), "/tenants/acme"),
        (json!({ "owner": "o", "tenants": { "acme": 5 } }), "/tenants/acme"),
        (json!({ "flags": {} }), ""),
    ];
    for (doc, path) in refused {
        let errs = errors(&v, &doc);
        assert!(errs.iter().any(|e| e.starts_with(&format!("{path}:"))), "{doc}: errors at {path} expected: {errs:?}");
    }
    // An entry name is valid exactly when it is one legal NATS key token.
    for name in ["beta", "A-1", "x=y", "a/b", "_", "a.b", "", "a b", "ü", "a*", ">", "a\n"] {
        let token = !name.contains('.') && is_valid_key(name);
        let doc = json!({ "owner": "o", "flags": { name: true } });
        assert_eq!(v.is_valid(&doc), token, "entry name {name:?}");
    }
}

/// A bucket `cfg` with `App`'s required keys under `prefix` and a handle on it.
async fn handle(store: &Arc<NatsStore>, bucket: BucketConfig, prefix: &str) -> LiveConfig<App> {
    let name = bucket.name.clone();
    let b = store.create_bucket(&bucket).await.unwrap();
    b.put(&format!("{prefix}name"), "\"api\"".into()).await.unwrap();
    b.put(&format!("{prefix}server.host"), "\"h\"".into()).await.unwrap();
    let shared: Arc<dyn Store> = store.clone();
    LiveConfig::<App>::builder_shared(shared, name).prefix(prefix).start().await.unwrap()
}

#[tokio::test]
async fn publish_schema_stores_the_json_schema_next_to_the_schema() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = Arc::new(NatsStore::new(client.clone()));
    let cfg = handle(&store, BucketConfig::new("cfg"), "svc.").await;
    let rev = cfg.publish_schema().await.unwrap();

    // Any NATS client reads it: plain async-nats, no kv-config.
    let js = async_nats::jetstream::new(client);
    let kv = js.get_key_value("cfg").await.unwrap();
    let stored = kv.entry(format!("svc.{JSON_SCHEMA_KEY}")).await.unwrap().expect("JSON Schema published");
    assert_eq!(serde_json::from_slice::<Value>(&stored.value).unwrap(), App::json_schema());
    let schema = kv.entry(format!("svc.{SCHEMA_KEY}")).await.unwrap().expect("schema published");
    assert_eq!(serde_json::from_slice::<Value>(&schema.value).unwrap(), serde_json::to_value(App::schema()).unwrap());
    assert_eq!((stored.revision + 1, schema.revision), (rev, rev));
    // Both in one atomic batch: the stored messages carry the same batch id.
    let stream = js.get_stream("KV_cfg").await.unwrap();
    let batch_id = |seq: u64| {
        let stream = stream.clone();
        async move {
            let m = stream.get_raw_message(seq).await.unwrap();
            m.headers.get(async_nats::header::NATS_BATCH_ID).map(|v| v.to_string())
        }
    };
    let first = batch_id(stored.revision).await;
    assert!(first.is_some(), "the JSON Schema was written in a batch");
    assert_eq!(first, batch_id(schema.revision).await);

    // The published document validates what the service holds.
    let live = cfg.get().encode().unwrap().into_iter().map(|(k, v)| (k, serde_json::from_slice::<Value>(&v).unwrap()));
    let published: Value = serde_json::from_slice(&stored.value).unwrap();
    assert_eq!(errors(&validator(&published), &document(live)), Vec::<String>::new());

    // Unchanged: nothing is written.
    let last = js.get_stream("KV_cfg").await.unwrap().cached_info().state.last_sequence;
    assert_eq!(cfg.publish_schema().await.unwrap(), rev);
    assert_eq!(js.get_stream("KV_cfg").await.unwrap().cached_info().state.last_sequence, last);

    // Only the document that differs is rewritten (e.g. after an older kv-config published the
    // schema alone, or someone overwrote one of them).
    let overwritten = kv.put(format!("svc.{JSON_SCHEMA_KEY}"), "{}".into()).await.unwrap();
    let rev2 = cfg.publish_schema().await.unwrap();
    assert_eq!(rev2, overwritten + 1);
    assert_eq!(kv.entry(format!("svc.{SCHEMA_KEY}")).await.unwrap().unwrap().revision, rev, "schema untouched");
    let again = kv.entry(format!("svc.{JSON_SCHEMA_KEY}")).await.unwrap().unwrap();
    assert_eq!((again.revision, serde_json::from_slice::<Value>(&again.value).unwrap()), (rev2, App::json_schema()));

    // The reserved keys are not config keys.
    eventually("publish seen", Duration::from_secs(10), || cfg.status().seen_revision >= rev2).await;
    assert!(cfg.status().unknown_keys.is_empty(), "{:?}", cfg.status().unknown_keys);
}

#[tokio::test]
async fn publish_schema_on_a_bucket_without_atomic_writes() {
    let server = NatsServer::start().await;
    let store = Arc::new(NatsStore::connect(server.url(), async_nats::ConnectOptions::new()).await.unwrap());
    let cfg = handle(&store, BucketConfig::new("plain").atomic_writes(false), "").await;
    let rev = cfg.publish_schema().await.unwrap();
    let b = store.open_bucket("plain").await.unwrap();
    // The bucket refuses batches, so the two documents went one by one.
    let batch = vec![WriteOp::put("x", "1".into()), WriteOp::put("y", "2".into())];
    assert_eq!(*b.write_atomic(batch).await.unwrap_err().kind(), StoreErrorKind::AtomicWritesDisabled);
    let json = b.entry(JSON_SCHEMA_KEY).await.unwrap().unwrap();
    let schema = b.entry(SCHEMA_KEY).await.unwrap().unwrap();
    assert_eq!(serde_json::from_slice::<Value>(&json.value).unwrap(), App::json_schema());
    assert_eq!(serde_json::from_slice::<Value>(&schema.value).unwrap(), serde_json::to_value(App::schema()).unwrap());
    assert_eq!(rev, json.revision.max(schema.revision));
    assert_eq!(cfg.publish_schema().await.unwrap(), rev, "unchanged");
}

/// Runs a command of the generic `kvc` in-process on the prefix `svc`; returns its `--json` value.
async fn kvc(store: Arc<dyn Store>, command: Command) -> Value {
    let printer = kv_config_cli::output::Printer::new(Box::new(std::io::sink()), Box::new(std::io::sink()), true, false);
    let mut ctx = kv_config_cli::Ctx::new(store, kv_config_cli::Mode::Generic, "svc", printer);
    match kv_config_cli::dispatch(&command, &mut ctx).await {
        Ok(Some(report)) => report.json,
        other => panic!("kvc {command:?}: {other:?}"),
    }
}

#[tokio::test]
async fn kvc_export_values_validate_in_document_form() {
    let server = NatsServer::start().await;
    let store = Arc::new(NatsStore::connect(server.url(), async_nats::ConnectOptions::new()).await.unwrap());
    let cfg = handle(&store, BucketConfig::new("cfg"), "svc.").await;
    cfg.update(|c| {
        c.tags = vec!["x".into()];
        c.token = "s3cret".into();
        c.timeout_ms = Some(5);
    })
    .await
    .unwrap();
    cfg.publish_schema().await.unwrap();
    let shared: Arc<dyn Store> = store.clone();
    let published = kvc(shared.clone(), Command::Schema(schema::Args { bucket: Some("cfg".into()), kv: false })).await;
    assert_eq!(published, App::json_schema());
    let v = validator(&published);

    // The export file is not a config document (it wraps each key with its revision)...
    let export = kvc(shared, Command::Export(export::Args { bucket: "cfg".into(), filter: None })).await;
    assert!(!v.is_valid(&export), "{export}");
    // ...but its values are: the keys nested, each value unwrapped. A redacted secret is the
    // string "<redacted>", still a string.
    let values: BTreeMap<String, Value> = serde_json::from_value(export["values"].clone()).unwrap();
    assert_eq!(values["token"]["value"], "<redacted>");
    let doc = document(values.into_iter().map(|(k, e)| (k, e["value"].clone())));
    assert_eq!(errors(&v, &doc), Vec::<String>::new(), "{doc}");
    assert_eq!(doc["server"]["host"], "h");
}

#[derive(KvConfig, Clone, Serialize, Deserialize)]
struct Tenant {
    #[kv(default = 10)]
    limit: u32,
}

#[derive(KvConfig, Clone, Serialize, Deserialize)]
struct WithMaps {
    flags: std::collections::BTreeMap<String, bool>,
    #[kv(nested)]
    tenants: std::collections::HashMap<String, Tenant>,
}

#[test]
fn derived_map_fields_are_additional_properties() {
    let v = validator(&WithMaps::json_schema());
    let ok = serde_json::json!({"flags": {"beta": true}, "tenants": {"acme": {"limit": 5}}});
    assert!(errors(&v, &ok).is_empty(), "{:?}", errors(&v, &ok));
    assert!(errors(&v, &serde_json::json!({})).is_empty(), "maps are never required");
    for bad in [
        serde_json::json!({"flags": {"beta": "yes"}}),
        serde_json::json!({"flags": {"a.b": true}}),
        serde_json::json!({"tenants": {"acme": {"limit": -1}}}),
    ] {
        assert!(!errors(&v, &bad).is_empty(), "{bad} should be refused");
    }
}

/// Fields whose serde form is a string the Rust type parses.
#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Net {
    #[kv(default = ',')]
    separator: char,
    bind: std::net::IpAddr,
    v4: Option<std::net::Ipv4Addr>,
    listen: std::net::SocketAddr,
}

#[test]
fn string_formats_validate_like_the_rust_types_parse() {
    let js = Net::json_schema();
    let v = jsonschema::options().should_validate_formats(true).build(&js).expect("compiles");
    assert!(jsonschema::draft202012::meta::validate(&js).is_ok());
    let doc = |sep: &str, bind: &str, v4: Value, listen: &str| json!({ "separator": sep, "bind": bind, "v4": v4, "listen": listen });
    for good in [doc("é", "10.0.0.1", json!(null), "10.0.0.1:80"), doc(",", "::1", json!("127.0.0.1"), "[::1]:8080")] {
        assert_eq!(errors(&v, &good), Vec::<String>::new(), "{good}");
        let flat: RawValues = good.as_object().unwrap().iter().map(|(k, x)| (k.clone(), RawValue { value: x.to_string().into(), revision: 1, created: None })).collect();
        assert!(Net::decode(&flat, &Source::new("b", "")).is_ok(), "{good}");
    }
    for (bad, path) in [
        (doc("ab", "10.0.0.1", json!(null), "10.0.0.1:80"), "/separator"),
        (doc("", "10.0.0.1", json!(null), "10.0.0.1:80"), "/separator"),
        (doc(",", "300.1.2.3", json!(null), "10.0.0.1:80"), "/bind"),
        (doc(",", "10.0.0.1", json!("::1"), "10.0.0.1:80"), "/v4"),
        (doc(",", "10.0.0.1", json!(null), "10.0.0.1"), "/listen"),
    ] {
        let errs = errors(&v, &bad);
        assert!(errs.len() == 1 && errs[0].starts_with(path), "{bad}: {errs:?}");
        let schema = Net::schema();
        let key = &path[1..];
        let raw = bad[key].to_string();
        assert!(schema.field(key).unwrap().ty.parse(raw.as_bytes()).is_err(), "kv-config accepts {raw} for {key}");
    }
}
