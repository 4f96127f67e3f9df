//! Map fields (`HashMap<String, V>` / `BTreeMap<String, V>`, one key per entry) on live handles
//! against a real nats-server: entries written by other clients and by typed updates, nested
//! entries, refused entry names, and per-entry change events.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use kv_config::store::{NatsStore, Store};
use kv_config::{KvConfig, LiveConfig};
use kv_config_testing::NatsServer;
use serde::{Deserialize, Serialize};

fn positive(v: &u32) -> Result<(), String> {
    if *v == 0 {
        Err("a limit of 0 blocks the tenant".into())
    } else {
        Ok(())
    }
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Tenant {
    #[kv(validate = positive)]
    limit: u32,
    #[kv(default = "free")]
    plan: String,
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Cfg {
    #[kv(default = "info")]
    log_level: String,
    /// Feature flags, one key `flags.<name>` each.
    flags: HashMap<String, bool>,
    /// Tenants, keys `tenants.<id>.limit` and `tenants.<id>.plan`.
    #[kv(nested)]
    tenants: BTreeMap<String, Tenant>,
}

async fn setup() -> (NatsServer, LiveConfig<Cfg>, async_nats::jetstream::kv::Store) {
    let server = NatsServer::start().await;
    let store = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    let cfg = LiveConfig::<Cfg>::builder(store, "cfg").create_if_missing().start().await.unwrap();
    let raw = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let kv = raw.get_key_value("cfg").await.unwrap();
    (server, cfg, kv)
}

async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    kv_config_testing::eventually(what, Duration::from_secs(10), cond).await;
}

#[tokio::test]
async fn entries_from_another_client_are_added_changed_and_deleted() {
    let (_server, cfg, kv) = setup().await;
    assert!(cfg.get().flags.is_empty(), "no entries: an empty map, not a missing key");
    kv.put("flags.beta", "true".into()).await.unwrap();
    kv.put("flags.dark-mode", "false".into()).await.unwrap();
    eventually("two flags", || cfg.get().flags.len() == 2).await;
    assert!(cfg.get().flags["beta"]);
    kv.put("flags.beta", "false".into()).await.unwrap();
    eventually("beta changed", || cfg.get().flags.get("beta") == Some(&false)).await;
    kv.delete("flags.beta").await.unwrap();
    eventually("beta deleted", || !cfg.get().flags.contains_key("beta")).await;
    kv.purge("flags.dark-mode").await.unwrap();
    eventually("dark-mode purged", || cfg.get().flags.is_empty()).await;
    // Nested entries.
    kv.put("tenants.acme.limit", "10".into()).await.unwrap();
    kv.put("tenants.acme.plan", "pro".into()).await.unwrap(); // a bare string
    kv.put("tenants.zeta.limit", "5".into()).await.unwrap();
    eventually("two tenants", || cfg.get().tenants.len() == 2 && cfg.get().tenants["acme"].plan == "pro").await;
    assert_eq!(cfg.get().tenants["zeta"], Tenant { limit: 5, plan: "free".into() });
    kv.delete("tenants.zeta.limit").await.unwrap();
    eventually("zeta gone", || !cfg.get().tenants.contains_key("zeta")).await;
    let status = cfg.status();
    assert!(status.is_healthy() && status.unknown_keys.is_empty(), "{status:?}");
}

#[tokio::test]
async fn typed_updates_create_and_delete_entry_keys() {
    let (_server, cfg, kv) = setup().await;
    cfg.update(|c| {
        c.flags.insert("beta".into(), true);
        c.tenants.insert("acme".into(), Tenant { limit: 3, plan: "pro".into() });
    })
    .await
    .unwrap();
    assert_eq!(kv.get("flags.beta").await.unwrap().unwrap(), "true");
    assert_eq!(kv.get("tenants.acme.limit").await.unwrap().unwrap(), "3");
    assert_eq!(kv.get("tenants.acme.plan").await.unwrap().unwrap(), "\"pro\"");
    // Changing one entry writes only its key, checked against that key's revision.
    let before = kv.entry("tenants.acme.plan").await.unwrap().unwrap().revision;
    cfg.update(|c| c.tenants.get_mut("acme").unwrap().limit = 4).await.unwrap();
    assert_eq!(kv.get("tenants.acme.limit").await.unwrap().unwrap(), "4");
    assert_eq!(kv.entry("tenants.acme.plan").await.unwrap().unwrap().revision, before);
    // Removing an entry deletes its keys.
    cfg.update(|c| {
        c.flags.remove("beta");
        c.tenants.remove("acme");
    })
    .await
    .unwrap();
    for key in ["flags.beta", "tenants.acme.limit", "tenants.acme.plan"] {
        assert_eq!(kv.get(key).await.unwrap(), None, "{key} deleted");
    }
    // One entry by key, typed against `flags.*`.
    cfg.set("flags.gamma", true).await.unwrap();
    assert_eq!(kv.get("flags.gamma").await.unwrap().unwrap(), "true");
    assert!(cfg.set("flags.gamma", "yes").await.is_err(), "a string is not a bool");
    // Names that are not one legal key token never reach the bucket.
    let err = cfg.update(|c| c.flags.extend([("has space".to_string(), true)])).await.unwrap_err();
    assert!(err.to_string().contains("map entry `has space` cannot be stored as a key"), "{err}");
    let err = cfg.update(|c| c.flags.extend([("a.b".to_string(), true)])).await.unwrap_err();
    assert!(err.to_string().contains("`a.b`"), "{err}");
    let err = cfg.update(|c| {
        c.tenants.insert("t".into(), Tenant { limit: 0, plan: String::new() });
    })
    .await.unwrap_err();
    assert!(err.to_string().contains("tenants.t.limit"), "{err}");
    assert_eq!(cfg.get().flags.len(), 1);
}

#[tokio::test]
async fn garbage_entries_from_another_client_are_refused_and_the_rest_applies() {
    let (_server, cfg, kv) = setup().await;
    kv.put("flags.ok", "true".into()).await.unwrap();
    eventually("ok applied", || cfg.get().flags.contains_key("ok")).await;
    let rev = kv.put("flags.a.b", "true".into()).await.unwrap();
    kv.put("flags.new", "true".into()).await.unwrap();
    eventually("new applied", || cfg.get().flags.contains_key("new")).await;
    let status = cfg.status();
    let rejected = status.rejected.iter().find(|e| e.key == "flags.a.b").unwrap_or_else(|| panic!("{status:?}"));
    assert_eq!(rejected.revision, Some(rev));
    assert!(rejected.to_string().contains("`a.b` is not a legal entry name"), "{rejected}");
    assert!(!cfg.get().flags.keys().any(|k| k.contains('.')));
    // A bad value in one entry keeps that entry's last good value.
    kv.put("flags.ok", "\"maybe\"".into()).await.unwrap();
    kv.put("log_level", "debug".into()).await.unwrap();
    eventually("log level applied", || cfg.get().log_level == "debug").await;
    assert!(cfg.get().flags["ok"], "last good value of flags.ok");
    assert!(cfg.status().rejected.iter().any(|e| e.key == "flags.ok"));
    // A nested map key without a leaf, and an entry refused by its validator.
    kv.put("tenants.acme", "1".into()).await.unwrap();
    kv.put("tenants.zeta.limit", "0".into()).await.unwrap();
    kv.put("tenants.beta.limit", "2".into()).await.unwrap();
    eventually("beta applied", || cfg.get().tenants.contains_key("beta")).await;
    let status = cfg.status();
    assert!(status.rejected.iter().any(|e| e.key == "tenants.acme"), "{status:?}");
    assert!(status.rejected.iter().any(|e| e.key == "tenants.zeta.limit"), "{status:?}");
    assert!(!cfg.get().tenants.contains_key("zeta"));
    // A new entry without its required leaf is refused as a whole; later writes still apply.
    kv.put("tenants.half.plan", "pro".into()).await.unwrap();
    kv.put("log_level", "warn".into()).await.unwrap();
    eventually("log level applied", || cfg.get().log_level == "warn").await;
    assert!(!cfg.get().tenants.contains_key("half"));
    assert!(cfg.status().rejected.iter().any(|e| e.key == "tenants.half.limit"), "{:?}", cfg.status());
    kv.put("tenants.half.limit", "4".into()).await.unwrap();
    eventually("half complete", || cfg.get().tenants.get("half").is_some_and(|t| t.limit == 4 && t.plan == "pro")).await;
    // Cleaning up the garbage makes the handle healthy again.
    kv.delete("flags.a.b").await.unwrap();
    kv.put("flags.ok", "false".into()).await.unwrap();
    kv.delete("tenants.acme").await.unwrap();
    kv.put("tenants.zeta.limit", "1".into()).await.unwrap();
    eventually("healthy", || cfg.status().rejected.is_empty() && cfg.get().tenants.contains_key("zeta")).await;
    assert!(!cfg.get().flags["ok"]);
}

async fn next(sub: &mut kv_config::Subscription<Cfg>) -> kv_config::Change<Cfg> {
    tokio::time::timeout(Duration::from_secs(10), sub.changed()).await.unwrap().unwrap()
}

#[tokio::test]
async fn change_events_name_each_entry() {
    let (_server, cfg, kv) = setup().await;
    let mut sub = cfg.subscribe();
    kv.put("flags.beta", "true".into()).await.unwrap();
    let change = next(&mut sub).await;
    assert_eq!(change.keys, ["flags.beta"]);
    assert!(!change.old.flags.contains_key("beta") && change.new.flags["beta"]);
    cfg.update(|c| {
        c.flags.insert("beta".into(), false);
        c.flags.insert("gamma".into(), true);
    })
    .await
    .unwrap();
    let change = next(&mut sub).await;
    assert_eq!(change.keys, ["flags.beta", "flags.gamma"]);
    cfg.update(|c| c.flags.retain(|name, _| name != "beta")).await.unwrap();
    let change = next(&mut sub).await;
    assert_eq!(change.keys, ["flags.beta"]);
    assert!(!change.new.flags.contains_key("beta"));
    kv.put("tenants.acme.limit", "7".into()).await.unwrap();
    let change = next(&mut sub).await;
    assert_eq!(change.keys, ["tenants.acme.limit"]);
    assert_eq!(change.new.tenants["acme"].limit, 7);
}

#[tokio::test]
async fn unknown_keys_and_schema_cover_entries() {
    let (server, cfg, kv) = setup().await;
    kv.put("flags.beta", "true".into()).await.unwrap();
    kv.put("tenants.acme.limit", "1".into()).await.unwrap();
    kv.put("tenants.acme.extra", "1".into()).await.unwrap();
    kv.put("other", "1".into()).await.unwrap();
    eventually("unknown keys", || cfg.status().unknown_keys.len() == 2).await;
    assert_eq!(cfg.status().unknown_keys, ["other", "tenants.acme.extra"]);
    // The published schema lists entry patterns.
    cfg.publish_schema().await.unwrap();
    let raw = kv.get("__kvconfig.schema").await.unwrap().unwrap();
    let schema: kv_config::Schema = serde_json::from_slice(&raw).unwrap();
    let keys: Vec<&str> = schema.fields.iter().map(|f| f.key.as_str()).collect();
    assert_eq!(keys, ["log_level", "flags.*", "tenants.*.limit", "tenants.*.plan"]);
    // The one-shot load agrees.
    let store = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    let bucket = store.open_bucket("cfg").await.unwrap();
    let loaded = kv_config::load::<Cfg>(&*bucket, "").await.unwrap();
    assert_eq!(loaded.unknown_keys, ["other", "tenants.acme.extra"]);
    assert!(loaded.config.flags["beta"]);
}
