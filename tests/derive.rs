//! What `#[derive(KvConfig)]` generates: schema, encode, decode with every problem collected.

use kv_config::{KvConfig, KvValue, Problem, RawValue, RawValues, Source, TypeDesc};
use serde::{Deserialize, Serialize};

#[derive(KvValue, Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Level {
    Debug,
    Info,
    #[serde(rename = "warning")]
    Warn,
}

fn check_port(p: &u16) -> Result<(), String> {
    if *p == 0 {
        Err("port 0 is not allowed".into())
    } else {
        Ok(())
    }
}

fn check_limits(c: &App) -> Result<(), String> {
    if c.min_conn > c.max_conn {
        Err(format!("min_conn {} > max_conn {}", c.min_conn, c.max_conn))
    } else {
        Ok(())
    }
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Server {
    /// Address to bind.
    #[kv(default = "127.0.0.1")]
    host: String,
    #[kv(validate = check_port)]
    port: u16,
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
#[kv(validate = check_limits)]
struct App {
    /// Nested keys live under `server.`.
    #[kv(nested)]
    server: Server,
    #[kv(default = Level::Info)]
    log_level: Level,
    #[kv(rename = "db-password", secret)]
    db_password: String,
    #[kv(default)]
    tags: Vec<String>,
    timeout_ms: Option<u64>,
    #[kv(default = 1)]
    min_conn: u32,
    #[kv(default = 10)]
    max_conn: u32,
    #[kv(skip)]
    runtime_only: u8,
}

#[derive(KvConfig, Clone, Serialize, Deserialize)]
#[kv(rename_all = "kebab-case")]
struct Kebab {
    #[kv(default)]
    max_retries: u8,
    #[kv(default, rename = "explicit_name")]
    other_field: u8,
}

fn values(pairs: &[(&str, &str)]) -> RawValues {
    pairs
        .iter()
        .enumerate()
        .map(|(i, (k, v))| (k.to_string(), RawValue { value: v.as_bytes().to_vec().into(), revision: i as u64 + 1, created: None }))
        .collect()
}

fn src() -> Source {
    Source::new("cfg", "prod.")
}

#[test]
fn schema_lists_every_leaf_with_type_doc_default_and_secret() {
    let schema = App::schema();
    assert_eq!(schema.name, "App");
    let keys: Vec<&str> = schema.fields.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(
        keys,
        ["server.host", "server.port", "log_level", "db-password", "tags", "timeout_ms", "min_conn", "max_conn"]
    );
    let host = schema.field("server.host").unwrap();
    assert_eq!(host.doc, "Address to bind.");
    assert_eq!(host.default, Some(serde_json::json!("127.0.0.1")));
    assert!(!host.required);
    let port = schema.field("server.port").unwrap();
    assert_eq!(port.ty, TypeDesc::Integer { min: 0, max: 65535 });
    assert!(port.required);
    let level = schema.field("log_level").unwrap();
    assert_eq!(level.ty, TypeDesc::Enum { variants: vec!["debug".into(), "info".into(), "warning".into()] });
    assert_eq!(level.default, Some(serde_json::json!("info")));
    let pw = schema.field("db-password").unwrap();
    assert!(pw.secret && pw.required && pw.default.is_none());
    assert_eq!(schema.field("tags").unwrap().ty, TypeDesc::Array { items: Box::new(TypeDesc::String { format: None }) });
    let timeout = schema.field("timeout_ms").unwrap();
    assert!(!timeout.required);
    assert!(matches!(timeout.ty, TypeDesc::Optional { .. }));
    // The schema is JSON for admin tools.
    let json = serde_json::to_value(&schema).unwrap();
    assert_eq!(json["fields"][1]["type"]["type"], "integer");
    let back: kv_config::Schema = serde_json::from_value(json).unwrap();
    assert_eq!(back, schema);
    let kebab: Vec<String> = Kebab::schema().fields.into_iter().map(|f| f.key).collect();
    assert_eq!(kebab, ["max-retries", "explicit_name"]);
}

#[test]
fn decode_applies_defaults_and_bare_strings() {
    let app = App::decode(
        &values(&[("server.port", "8080"), ("db-password", "hunter2"), ("log_level", "debug"), ("timeout_ms", "250")]),
        &src(),
    )
    .unwrap();
    assert_eq!(app.server.host, "127.0.0.1");
    assert_eq!(app.server.port, 8080);
    assert_eq!(app.db_password, "hunter2", "a bare string (not JSON) loads into a String field");
    assert_eq!(app.log_level, Level::Debug, "a bare enum name loads");
    assert_eq!(app.timeout_ms, Some(250));
    assert_eq!((app.min_conn, app.max_conn, app.runtime_only), (1, 10, 0));
    assert!(app.tags.is_empty());
}

#[test]
fn decode_collects_every_problem_with_bucket_key_and_revision() {
    let err = App::decode(
        &values(&[("server.port", "\"eighty\""), ("log_level", "\"loud\""), ("tags", "{")]),
        &src(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.len(), 4, "{msg}");
    assert!(msg.contains("4 problems in bucket `cfg`"), "{msg}");
    assert!(
        msg.contains("key `prod.server.port` in bucket `cfg` (revision 1): invalid value: invalid type: string \"eighty\", expected u16"),
        "{msg}"
    );
    assert!(msg.contains("key `prod.log_level` in bucket `cfg` (revision 2): invalid value: unknown variant `loud`"), "{msg}");
    assert!(msg.contains("key `prod.tags` in bucket `cfg` (revision 3): invalid value"), "{msg}");
    assert!(msg.contains("key `prod.db-password` in bucket `cfg`: missing required value"), "{msg}");
}

#[test]
fn validators_run_on_decode() {
    let err = App::decode(&values(&[("server.port", "0"), ("db-password", "\"x\"")]), &src()).unwrap_err();
    assert_eq!(err.errors()[0].problem, Problem::Rejected("port 0 is not allowed".into()));
    assert_eq!(err.errors()[0].key, "prod.server.port");
    let err = App::decode(
        &values(&[("server.port", "1"), ("db-password", "\"x\""), ("min_conn", "20")]),
        &src(),
    )
    .unwrap_err();
    assert_eq!(err.errors()[0].problem, Problem::Struct("min_conn 20 > max_conn 10".into()));
}

#[test]
fn secrets_are_redacted_in_debug_and_errors() {
    let app = App::decode(&values(&[("server.port", "1"), ("db-password", "\"hunter2\"")]), &src()).unwrap();
    let debug = format!("{app:?}");
    assert!(!debug.contains("hunter2"), "{debug}");
    assert!(debug.contains("db_password: \"<redacted>\""), "{debug}");
    assert!(debug.contains("port: 1"), "{debug}");
    #[derive(KvConfig, Clone, Serialize, Deserialize)]
    struct S {
        #[kv(secret)]
        token: u64,
    }
    let err = S::decode(&values(&[("token", "\"sekrit-value\"")]), &Source::new("b", "")).unwrap_err();
    assert!(!err.to_string().contains("sekrit"), "{err}");
}

#[test]
fn encode_round_trips_and_skips_none() {
    let app = App::decode(&values(&[("server.port", "8080"), ("db-password", "\"pw\"")]), &src()).unwrap();
    let enc = app.encode().unwrap();
    assert_eq!(enc["server.port"], "8080");
    assert_eq!(enc["log_level"], "\"info\"");
    assert!(!enc.contains_key("timeout_ms"), "None is an absent key");
    let raw: RawValues = enc
        .into_iter()
        .map(|(k, v)| (k, RawValue { value: v, revision: 1, created: None }))
        .collect();
    assert!(App::decode(&raw, &src()).unwrap() == app);
}

// ---- Map fields: one key per entry ----

fn at_least(n: &u32) -> Result<(), String> {
    if *n == 0 {
        Err("a limit of 0 blocks the tenant".into())
    } else {
        Ok(())
    }
}

fn at_most_three(m: &std::collections::BTreeMap<String, bool>) -> Result<(), String> {
    if m.len() > 3 {
        Err(format!("{} flags, at most 3", m.len()))
    } else {
        Ok(())
    }
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Tenant {
    #[kv(validate = at_least)]
    limit: u32,
    #[kv(default)]
    name: String,
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Maps {
    /// Feature flags by name.
    flags: std::collections::HashMap<String, bool>,
    #[kv(nested)]
    tenants: std::collections::BTreeMap<String, Tenant>,
    #[kv(validate_each = at_least)]
    quotas: BTreeMap<String, u32>,
    #[kv(json)]
    labels: HashMap<String, String>,
    #[kv(secret)]
    tokens: BTreeMap<String, String>,
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct WholeMapCheck {
    #[kv(validate = at_most_three)]
    flags: BTreeMap<String, bool>,
}

use std::collections::{BTreeMap, HashMap};

#[test]
fn map_fields_publish_one_pattern_per_entry_leaf() {
    let schema = Maps::schema();
    let keys: Vec<&str> = schema.fields.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, ["flags.*", "tenants.*.limit", "tenants.*.name", "quotas.*", "labels", "tokens.*"]);
    let flags = schema.field("flags.*").unwrap();
    assert_eq!((flags.ty.clone(), flags.required, flags.doc.as_str()), (TypeDesc::Bool, false, "Feature flags by name."));
    assert_eq!(schema.field("labels").unwrap().ty, TypeDesc::Object { values: Box::new(TypeDesc::String { format: None }) });
    assert!(schema.field("tokens.*").unwrap().secret);
    assert_eq!(schema.field_for("tenants.acme.limit").unwrap().key, "tenants.*.limit");
    assert!(schema.field_for("tenants.acme").is_none());
    assert!(schema.field_for("flags.a.b").is_none());
    assert!(!schema.cross_checks, "per-entry validators read one key each");
    assert!(WholeMapCheck::schema().cross_checks, "a validator over the whole map reads every entry");
}

#[test]
fn map_entries_decode_from_their_own_keys_and_encode_back() {
    let raw = values(&[
        ("flags.beta", "true"),
        ("flags.dark-mode", "false"),
        ("tenants.acme.limit", "10"),
        ("tenants.acme.name", "\"Acme\""),
        ("tenants.zeta.limit", "5"),
        ("quotas.a", "3"),
        ("labels", "{\"team\":\"core\"}"),
        ("tokens.ci", "\"s3cret\""),
    ]);
    let m = Maps::decode(&raw, &src()).unwrap();
    assert_eq!(m.flags, HashMap::from([("beta".to_string(), true), ("dark-mode".to_string(), false)]));
    assert_eq!(m.tenants["acme"], Tenant { limit: 10, name: "Acme".into() });
    assert_eq!(m.tenants["zeta"], Tenant { limit: 5, name: String::new() });
    assert_eq!(m.labels["team"], "core");
    assert!(!format!("{m:?}").contains("s3cret"));
    let enc = m.encode().unwrap();
    let keys: Vec<&str> = enc.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "flags.beta",
            "flags.dark-mode",
            "labels",
            "quotas.a",
            "tenants.acme.limit",
            "tenants.acme.name",
            "tenants.zeta.limit",
            "tenants.zeta.name",
            "tokens.ci"
        ]
    );
    // No entries at all: every map is empty, nothing is missing.
    let empty = Maps::decode(&RawValues::new(), &src()).unwrap();
    assert!(empty.flags.is_empty() && empty.tenants.is_empty() && empty.labels.is_empty());
}

#[test]
fn illegal_entry_names_are_refused_on_read_and_on_write() {
    let err = Maps::decode(
        &values(&[("flags.a.b", "true"), ("flags.ok", "true"), ("tenants.acme", "1"), ("quotas.z", "0")]),
        &src(),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert_eq!(err.len(), 3, "{msg}");
    assert!(
        msg.contains("key `prod.flags.a.b` in bucket `cfg` (revision 1): invalid value: not an entry of map `flags`: `a.b` is not a legal entry name"),
        "{msg}"
    );
    assert!(msg.contains("key `prod.tenants.acme` in bucket `cfg` (revision 3): invalid value: not an entry of map `tenants`"), "{msg}");
    assert!(msg.contains("key `prod.quotas.z` in bucket `cfg` (revision 4): rejected by validator: a limit of 0 blocks the tenant"), "{msg}");
    let err = Maps::decode(&values(&[("tenants.acme.limit", "0")]), &src()).unwrap_err();
    assert_eq!(err.errors()[0].key, "prod.tenants.acme.limit");

    let mut m = Maps::decode(&RawValues::new(), &src()).unwrap();
    m.flags.insert("has space".into(), true);
    let err = m.encode().unwrap_err();
    assert_eq!(err.key, "flags");
    assert!(err.to_string().contains("map entry `has space` cannot be stored as a key"), "{err}");
    let mut m = Maps::decode(&RawValues::new(), &src()).unwrap();
    m.tenants.insert("a.b".into(), Tenant { limit: 1, name: String::new() });
    assert!(m.encode().unwrap_err().to_string().contains("map entry `a.b`"));
    let mut m = Maps::decode(&RawValues::new(), &src()).unwrap();
    m.flags.insert(format!("{} x", "x".repeat(10_000)), true);
    assert!(m.encode().unwrap_err().to_string().len() < 1_000, "the bad name is bounded in the message");
}

#[test]
fn a_validator_over_the_whole_map_reports_at_the_map() {
    let err = WholeMapCheck::decode(&values(&[("flags.a", "true"), ("flags.b", "true"), ("flags.c", "true"), ("flags.d", "true")]), &src())
        .unwrap_err();
    assert_eq!(err.errors()[0].key, "prod.flags");
    assert_eq!(err.errors()[0].problem, Problem::Rejected("4 flags, at most 3".into()));
}

#[tokio::test]
async fn live_update_adds_and_removes_entry_keys() {
    use kv_config::{store::MemoryStore, LiveConfig};
    let cfg = LiveConfig::<Maps>::builder(MemoryStore::new(), "maps").create_if_missing().start().await.unwrap();
    cfg.update(|c| {
        c.flags.insert("beta".into(), true);
        c.tenants.insert("acme".into(), Tenant { limit: 3, name: "Acme".into() });
    })
    .await
    .unwrap();
    let bucket = cfg.bucket().clone();
    assert_eq!(bucket.entry("flags.beta").await.unwrap().unwrap().value, "true");
    assert_eq!(bucket.entry("tenants.acme.limit").await.unwrap().unwrap().value, "3");
    cfg.update(|c| {
        c.flags.remove("beta");
        c.tenants.remove("acme");
    })
    .await
    .unwrap();
    for key in ["flags.beta", "tenants.acme.limit", "tenants.acme.name"] {
        assert!(!matches!(bucket.entry(key).await.unwrap(), Some(e) if e.is_put()), "{key} deleted");
    }
    assert!(cfg.get().flags.is_empty());
    cfg.set("flags.gamma", true).await.unwrap();
    assert!(cfg.get().flags["gamma"]);
    assert!(cfg.set("flags.a.b", true).await.is_err(), "not an entry key");
    assert!(cfg.status().unknown_keys.is_empty());
}

fn no_admin(m: &BTreeMap<String, String>) -> Result<(), String> {
    match m.get("admin") {
        Some(v) => Err(format!("admin token {v} is not allowed here")),
        None => Ok(()),
    }
}

#[test]
fn a_secret_maps_validator_message_is_never_shown() {
    #[derive(KvConfig, Clone, Serialize, Deserialize)]
    struct S {
        #[kv(secret, validate = no_admin)]
        tokens: BTreeMap<String, String>,
    }
    let err = S::decode(&values(&[("tokens.admin", "\"hunter2\"")]), &src()).unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("key `prod.tokens`") && msg.contains("message redacted") && !msg.contains("hunter2"), "{msg}");
}

#[test]
fn check_values_matches_entries_to_their_pattern() {
    let schema = Maps::schema();
    let values: BTreeMap<String, Vec<u8>> = [("flags.beta", "maybe"), ("tenants.acme.name", "\"Acme\""), ("quotas.a", "1")]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
        .collect();
    let problems = schema.check_values(&values);
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert_eq!(problems[0].0, "flags.beta");
    assert!(problems[0].1.contains("expected bool"), "{problems:?}");
    assert_eq!(problems[1], ("tenants.acme.limit".to_string(), "missing required value".to_string()));
}
