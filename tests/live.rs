//! LiveConfig against a real nats-server (and MemoryStore where it applies).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_config::store::{BucketConfig, MemoryStore, NatsStore, Store, WriteOp};
use kv_config::{Error, KvConfig, LiveConfig, OnInvalid};
use kv_config_testing::NatsServer;

mod common;
use common::{Hooks, Tapped};
use serde::{Deserialize, Serialize};

fn check_max(v: &u32) -> Result<(), String> {
    if *v > 1000 {
        Err(format!("{v} is above 1000"))
    } else {
        Ok(())
    }
}

fn min_le_max(c: &Cfg) -> Result<(), String> {
    if c.min > c.max {
        Err(format!("min {} > max {}", c.min, c.max))
    } else {
        Ok(())
    }
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
#[kv(validate = min_le_max)]
struct Cfg {
    #[kv(default = "info")]
    log_level: String,
    #[kv(default = 0)]
    min: u32,
    #[kv(default = 10, validate = check_max)]
    max: u32,
    #[kv(default)]
    counter: u64,
    #[kv(default)]
    a: u64,
    #[kv(default)]
    b: u64,
}

async fn server() -> (NatsServer, NatsStore) {
    let server = NatsServer::start().await;
    let store = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    (server, store)
}

async fn handle(store: &NatsStore) -> LiveConfig<Cfg> {
    LiveConfig::<Cfg>::builder(store.clone(), "cfg").create_if_missing().start().await.unwrap()
}

/// Polls `cond` until true or panics after 10 s (the server may need a reconnect).
async fn eventually(what: &str, cond: impl FnMut() -> bool) {
    kv_config_testing::eventually(what, Duration::from_secs(10), cond).await;
}

#[tokio::test]
async fn raw_client_writes_reach_the_snapshot() {
    let (server, store) = server().await;
    let cfg = handle(&store).await;
    assert_eq!(cfg.get().log_level, "info");
    let raw = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let kv = raw.get_key_value("cfg").await.unwrap();
    kv.put("max", "42".into()).await.unwrap();
    kv.put("log_level", "debug".into()).await.unwrap(); // a bare string, like `nats kv put cfg log_level debug`
    eventually("raw puts applied", || cfg.get().max == 42 && cfg.get().log_level == "debug").await;
    kv.put("log_level", "\"warn\"".into()).await.unwrap();
    eventually("JSON string applied", || cfg.get().log_level == "warn").await;
    // Values written by kv-config are plain JSON any client can read.
    cfg.update(|c| c.log_level = "trace".into()).await.unwrap();
    assert_eq!(kv.get("log_level").await.unwrap().unwrap(), "\"trace\"");
}

#[tokio::test]
async fn start_seeds_defaults_without_overwriting() {
    let (_server, store) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("cfg")).await.unwrap();
    bucket.put("max", "77".into()).await.unwrap();
    let cfg = handle(&store).await;
    assert_eq!(cfg.get().max, 77, "an existing value is not overwritten by the default");
    assert_eq!(bucket.get("max").await.unwrap().unwrap(), "77");
    assert_eq!(bucket.get("log_level").await.unwrap().unwrap(), "\"info\"", "missing defaults are seeded");
    // Unknown keys are reported, not fatal.
    bucket.put("legacy_flag", "true".into()).await.unwrap();
    cfg.update(|c| c.a = 1).await.unwrap();
    assert_eq!(cfg.status().unknown_keys, vec!["legacy_flag".to_string()]);
}

#[tokio::test]
async fn invalid_values_keep_the_last_good_snapshot() {
    let (_server, store) = server().await;
    let cfg = handle(&store).await;
    let bucket = store.open_bucket("cfg").await.unwrap();
    bucket.put("max", "50".into()).await.unwrap();
    eventually("max=50", || cfg.get().max == 50).await;
    let cases: [(&str, &[u8], &str); 4] = [
        ("max", b"{not json", "not JSON"),
        ("max", b"\"fifty\"", "expected u32"),
        ("max", b"5000", "5000 is above 1000"),
        ("min", b"60", "min 60 > max 50"),
    ];
    for (key, value, expect) in cases {
        let rev = bucket.put(key, value.to_vec().into()).await.unwrap();
        eventually("seen", || cfg.status().seen_revision >= rev).await;
        let status = cfg.status();
        assert_eq!((cfg.get().max, cfg.get().min), (50, 0), "{key}={value:?} replaced the last good value");
        let err = status.last_error.clone().unwrap();
        assert!(err.contains(expect) && err.contains("cfg"), "{err}");
        assert!(!status.is_healthy());
        if key == "max" {
            let rejected = &status.rejected[0];
            assert_eq!((rejected.key.as_str(), rejected.revision), ("max", Some(rev)), "{status:?}");
        }
        // The next good value applies.
        bucket.put(key, if key == "max" { "51" } else { "0" }.into()).await.unwrap();
        eventually("good value applied", || cfg.get().max == 51 || key == "min").await;
        bucket.put("max", "50".into()).await.unwrap();
        eventually("back to 50", || cfg.get().max == 50 && cfg.status().rejected.is_empty()).await;
    }
    // A deleted key returns to its default.
    bucket.delete("max").await.unwrap();
    eventually("default after delete", || cfg.get().max == 10).await;
}

#[derive(KvConfig, Clone, Serialize, Deserialize)]
struct Required {
    name: String,
    #[kv(default)]
    other: u8,
}

#[tokio::test]
async fn deleting_a_required_key_keeps_the_last_value_and_reports() {
    let (_server, store) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("req")).await.unwrap();
    // Empty bucket: the required key is missing and start fails, naming it.
    let err = LiveConfig::<Required>::builder(store.clone(), "req").start().await.unwrap_err();
    assert!(err.to_string().contains("key `name` in bucket `req`: missing required value"), "{err}");
    bucket.put("name", "\"svc\"".into()).await.unwrap();
    let cfg = LiveConfig::<Required>::builder(store.clone(), "req").start().await.unwrap();
    let rev = bucket.purge("name").await.unwrap();
    eventually("purge seen", || cfg.status().seen_revision >= rev).await;
    assert_eq!(cfg.get().name, "svc");
    assert!(cfg.status().rejected.iter().any(|e| e.key == "name"));
    // A fallback lets a service start on an invalid bucket.
    bucket.put("other", "\"x\"".into()).await.unwrap();
    let fallback = Required { name: "fallback".into(), other: 0 };
    let cfg2 = LiveConfig::<Required>::builder(store.clone(), "req")
        .on_invalid(OnInvalid::Fallback(fallback))
        .start()
        .await
        .unwrap();
    assert_eq!(cfg2.get().name, "fallback");
    bucket.put("name", "\"fixed\"".into()).await.unwrap();
    bucket.put("other", "3".into()).await.unwrap();
    eventually("valid state applies", || cfg2.get().name == "fixed" && cfg2.get().other == 3).await;
}

#[tokio::test]
async fn update_reads_its_own_write_and_refuses_invalid_configs() {
    let (_server, store) = server().await;
    let cfg = handle(&store).await;
    let other = handle(&store).await;
    let snap = cfg.update(|c| c.max = 99).await.unwrap();
    assert_eq!(snap.max, 99);
    assert_eq!(cfg.get().max, 99, "read your writes");
    eventually("other handle sees it", || other.get().max == 99).await;
    let before = cfg.bucket().entry("max").await.unwrap().unwrap().revision;
    let err = cfg.update(|c| c.min = 500).await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "{err}");
    assert!(err.to_string().contains("min 500 > max 99"), "{err}");
    let err = cfg.update(|c| c.max = 5000).await.unwrap_err();
    assert!(err.to_string().contains("5000 is above 1000"), "{err}");
    assert_eq!(cfg.bucket().entry("max").await.unwrap().unwrap().revision, before, "nothing was sent");
    // Typed set of one key.
    cfg.set("log_level", "debug").await.unwrap();
    assert_eq!(cfg.get().log_level, "debug");
    let err = cfg.set("nope", 1).await.unwrap_err();
    assert!(err.to_string().contains("unknown key `nope`"), "{err}");
    let err = cfg.set("max", "lots").await.unwrap_err();
    assert!(err.to_string().contains("expected u32"), "{err}");
}

#[tokio::test]
async fn subscribers_see_old_new_and_changed_keys() {
    let (_server, store) = server().await;
    let cfg = handle(&store).await;
    let mut sub = cfg.subscribe();
    cfg.update(|c| {
        c.a = 1;
        c.b = 1;
    })
    .await
    .unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), sub.changed()).await.unwrap().unwrap();
    assert_eq!(change.keys, vec!["a".to_string(), "b".to_string()]);
    assert_eq!((change.old.a, change.new.a), (0, 1));
    // A slow subscriber skips to the newest state, with every key changed since it looked.
    cfg.update(|c| c.a = 2).await.unwrap();
    cfg.update(|c| c.max = 3).await.unwrap();
    let change = sub.changed().await.unwrap();
    assert_eq!(change.keys, vec!["a".to_string(), "max".to_string()]);
    assert_eq!((change.new.a, change.new.max), (2, 3));
    // The same as a Stream.
    let mut changes = Box::pin(cfg.changes());
    cfg.update(|c| c.b = 9).await.unwrap();
    let change = tokio::time::timeout(Duration::from_secs(5), futures_util::StreamExt::next(&mut changes)).await.unwrap().unwrap();
    assert_eq!((change.keys, change.new.b), (vec!["b".to_string()], 9));
    drop(changes);
    drop(cfg);
    let end = tokio::time::timeout(Duration::from_secs(5), sub.changed()).await.unwrap();
    assert!(matches!(end, Err(Error::Closed(_))), "dropping the last handle stops the watcher");
}

#[tokio::test]
async fn torn_reads_never_happen() {
    let (_server, store) = server().await;
    let writer = handle(&store).await;
    let reader = handle(&store).await;
    let stop = Arc::new(AtomicBool::new(false));
    let reads = {
        let stop = stop.clone();
        let reader = reader.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let s = reader.get();
                assert_eq!(s.a, s.b, "torn read: a={} b={}", s.a, s.b);
                n += 1;
            }
            n
        })
    };
    for i in 1..=2000u64 {
        writer.update(|c| {
            c.a = i;
            c.b = i;
        })
        .await
        .unwrap();
    }
    eventually("reader caught up", || reader.get().a == 2000).await;
    stop.store(true, Ordering::Relaxed);
    let n = reads.join().expect("a reader saw a torn snapshot");
    assert!(n > 1000, "reader loop ran {n} times");
}

async fn lost_updates(store: Arc<dyn Store>) {
    let handles: Vec<LiveConfig<Cfg>> = {
        let mut v = Vec::new();
        for _ in 0..4 {
            v.push(LiveConfig::<Cfg>::builder_shared(store.clone(), "cfg").create_if_missing().max_attempts(1000).start().await.unwrap());
        }
        v
    };
    let tasks: Vec<_> = handles
        .iter()
        .cloned()
        .map(|h| {
            tokio::spawn(async move {
                for _ in 0..50 {
                    h.update(|c| c.counter += 1).await.unwrap();
                }
                h.status().conflicts
            })
        })
        .collect();
    let mut conflicts = 0;
    for t in tasks {
        conflicts += t.await.unwrap();
    }
    let bucket = store.open_bucket("cfg").await.unwrap();
    assert_eq!(bucket.get("counter").await.unwrap().unwrap(), "200");
    for h in &handles {
        eventually("all handles at 200", || h.get().counter == 200).await;
    }
    println!("lost-update test: 200 increments, {conflicts} conflicts retried");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_lose_nothing_nats() {
    let (_server, store) = server().await;
    lost_updates(Arc::new(store)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_updates_lose_nothing_memory() {
    lost_updates(Arc::new(MemoryStore::new())).await;
}

#[tokio::test]
async fn a_conflict_after_max_attempts_names_key_and_revisions() {
    let store = MemoryStore::new();
    let cfg = LiveConfig::<Cfg>::builder(store.clone(), "cfg").create_if_missing().max_attempts(2).start().await.unwrap();
    let bucket = store.open_bucket("cfg").await.unwrap();
    let mut n = 0;
    let err = cfg
        .update(|c| {
            n += 1;
            // Another writer sneaks in before every attempt's write.
            let bucket = bucket.clone();
            let v = 100 + n;
            std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap().block_on(bucket.put("a", v.to_string().into()))
            })
            .join()
            .unwrap()
            .unwrap();
            c.a = 7;
        })
        .await
        .unwrap_err();
    match &err {
        Error::Conflict { key, expected, current, attempts, .. } => {
            assert_eq!((key.as_str(), *attempts), ("a", 2));
            assert!(current.unwrap() > *expected);
        }
        other => panic!("expected Conflict, got {other}"),
    }
    assert!(err.to_string().contains("conflict on key `a` in bucket `cfg`"), "{err}");
    assert_eq!(n, 2);
}

#[tokio::test]
async fn a_write_during_start_is_never_lost() {
    let (_server, store) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("cfg")).await.unwrap();
    for round in 0..20u64 {
        let writer = {
            let bucket = bucket.clone();
            tokio::spawn(async move { bucket.put("a", round.to_string().into()).await.unwrap() })
        };
        let cfg = LiveConfig::<Cfg>::builder(store.clone(), "cfg").start().await.unwrap();
        writer.await.unwrap();
        eventually("write made during start is visible", || cfg.get().a == round).await;
    }
}

#[tokio::test]
async fn stale_multi_key_update_changes_nothing() {
    let (server, store) = server().await;
    let cfg = handle(&store).await;
    cfg.update(|c| {
        c.a = 1;
        c.b = 1;
    })
    .await
    .unwrap();
    let raw = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let kv = raw.get_key_value("cfg").await.unwrap();
    let a_rev = kv.entry("a").await.unwrap().unwrap().revision;
    let b_rev = kv.entry("b").await.unwrap().unwrap().revision;
    // A raw writer moves `b` on; a batch expecting the old `b` must change neither key.
    kv.put("b", "5".into()).await.unwrap();
    let err = cfg
        .bucket()
        .write_atomic(vec![WriteOp::put("a", "9".into()).expect_revision(a_rev), WriteOp::put("b", "9".into()).expect_revision(b_rev)])
        .await
        .unwrap_err();
    assert!(err.is_wrong_revision(), "{err}");
    assert_eq!(kv.get("a").await.unwrap().unwrap(), "1");
    assert_eq!(kv.get("b").await.unwrap().unwrap(), "5");
    assert_eq!(kv.entry("a").await.unwrap().unwrap().revision, a_rev);
}

#[tokio::test]
async fn prefixes_separate_environments() {
    let store = MemoryStore::new();
    let prod = LiveConfig::<Cfg>::builder(store.clone(), "cfg").prefix("prod.").create_if_missing().start().await.unwrap();
    let dev = LiveConfig::<Cfg>::builder(store.clone(), "cfg").prefix("dev.").create_if_missing().start().await.unwrap();
    prod.update(|c| c.max = 1).await.unwrap();
    dev.update(|c| c.max = 2).await.unwrap();
    let bucket = store.open_bucket("cfg").await.unwrap();
    assert_eq!(bucket.get("prod.max").await.unwrap().unwrap(), "1");
    assert_eq!((prod.get().max, dev.get().max), (1, 2));
    assert!(prod.status().unknown_keys.is_empty());
    let err = LiveConfig::<Cfg>::builder(store, "cfg").prefix("prod").start().await.unwrap_err();
    assert!(matches!(err, Error::InvalidPrefix(_)), "{err}");
}

#[tokio::test]
async fn published_schema_is_readable_json_that_never_collides() {
    let (_server, store) = server().await;
    let cfg = LiveConfig::<Cfg>::builder(store.clone(), "cfg").prefix("svc.").create_if_missing().start().await.unwrap();
    let rev = cfg.publish_schema().await.unwrap();
    assert_eq!(cfg.publish_schema().await.unwrap(), rev, "unchanged schema is not rewritten");
    let raw = cfg.bucket().get("svc.__kvconfig.schema").await.unwrap().unwrap();
    let schema: kv_config::Schema = serde_json::from_slice(&raw).unwrap();
    assert_eq!(schema, Cfg::schema());
    assert_eq!(schema.name, "Cfg");
    assert!(!schema.version.is_empty());
    eventually("seen", || cfg.status().seen_revision >= rev).await;
    assert!(cfg.status().unknown_keys.is_empty(), "the schema key is not an unknown field");
}

#[tokio::test]
async fn server_kill_and_restart_converges_without_replaying_old_values() {
    let (mut server, store) = server().await;
    let handles = [handle(&store).await, handle(&store).await];
    let fresh = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    let idle = LiveConfig::<Cfg>::builder(fresh.clone(), "cfg").start().await.unwrap();
    for i in 1..=5 {
        handles[0].update(|c| c.a = i).await.unwrap();
    }
    for h in handles.iter().chain([&idle]) {
        eventually("a=5 everywhere", || h.get().a == 5).await;
    }
    server.kill();
    eventually("status shows disconnected", || !handles[1].status().connected).await;
    server.restart().await;
    let writer = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    let bucket = writer.open_bucket("cfg").await.unwrap();
    bucket.put("a", "6".into()).await.unwrap();
    let mut seen_values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for h in handles.iter().chain([&idle]) {
        while h.get().a != 6 {
            seen_values.push(h.get().a);
            assert!(Instant::now() < deadline, "a handle did not converge after the restart");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(h.status().connected);
    }
    assert!(seen_values.iter().all(|v| *v == 5), "an old value came back: {seen_values:?}");
}

#[tokio::test]
async fn one_shot_load_defaults_unknown_keys_and_prefixes() {
    let (_server, store) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("once")).await.unwrap();
    // Empty bucket: all defaults (and no hang: an empty watch is caught up at once).
    let loaded = kv_config::load::<Cfg>(&*bucket, "").await.unwrap();
    assert!(loaded.config == Cfg { log_level: "info".into(), min: 0, max: 10, counter: 0, a: 0, b: 0 });
    bucket.put("prod.max", "20".into()).await.unwrap();
    bucket.put("prod.log_level", "debug".into()).await.unwrap();
    bucket.put("prod.retired_flag", "true".into()).await.unwrap();
    bucket.put("dev.max", "1".into()).await.unwrap();
    let loaded = kv_config::load::<Cfg>(&*bucket, "prod.").await.unwrap();
    assert_eq!((loaded.config.max, loaded.config.log_level.as_str()), (20, "debug"));
    assert_eq!(loaded.unknown_keys, vec!["retired_flag".to_string()], "reported, not fatal");
    let err = kv_config::load::<Cfg>(&*bucket, "prod").await.unwrap_err();
    assert!(matches!(err, Error::InvalidPrefix(_)), "{err}");
}

/// Bucket `cfg` with per-key TTLs (for overrides), holding values that are exactly what
/// serde_json writes (`max`, `counter`, `a`, `b`: a handle drops their bytes once decoded and
/// re-encodes them from its config where they are read again) and two in other spellings
/// (`log_level` with an escape serde_json writes as UTF-8, `min` with a space: kept).
async fn bucket_of_spellings(store: &NatsStore) -> Arc<dyn kv_config::store::Bucket> {
    let bucket = store.create_bucket(&BucketConfig::new("cfg").history(10).key_ttl(Duration::from_secs(1))).await.unwrap();
    for (k, v) in [("log_level", "\"caf\\u00e9\""), ("min", " 3"), ("max", "7"), ("counter", "12"), ("a", "5"), ("b", "6")] {
        bucket.put(k, v.into()).await.unwrap();
    }
    bucket
}

fn fields(c: &Cfg) -> (String, u32, u32, u64, u64, u64) {
    (c.log_level.clone(), c.min, c.max, c.counter, c.a, c.b)
}

/// Every path that reads a dropped value's bytes again reads what the bucket holds: a refused
/// change keeps the refused key's last good value, and every change is decoded whole while the
/// refusal stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_kept_only_as_the_decoded_config_read_back_the_same_on_every_path() {
    let (_server, store) = server().await;
    let bucket = bucket_of_spellings(&store).await;
    let cfg = LiveConfig::<Cfg>::builder(store.clone(), "cfg").start().await.unwrap();
    let cafe = || "café".to_string();
    assert_eq!(fields(&cfg.get()), (cafe(), 3, 7, 12, 5, 6));

    // Refused: `max` keeps its last good value.
    bucket.put("max", "5000".into()).await.unwrap();
    eventually("the refusal reported", || cfg.status().rejected.len() == 1).await;
    assert_eq!(fields(&cfg.get()), (cafe(), 3, 7, 12, 5, 6));
    assert!(cfg.status().rejected[0].to_string().contains("5000 is above 1000"), "{:?}", cfg.status().rejected);
    // While the refusal stands, every change is a whole decode of every key.
    for a in [8, 9] {
        bucket.put("a", a.to_string().into()).await.unwrap();
        eventually("a change beside the refusal applied", || cfg.get().a == a).await;
        assert_eq!(fields(&cfg.get()), (cafe(), 3, 7, 12, a, 6));
        assert_eq!(cfg.status().rejected.len(), 1, "{:?}", cfg.status().rejected);
    }
    bucket.put("max", "9".into()).await.unwrap();
    eventually("the refusal repaired", || cfg.get().max == 9 && cfg.status().rejected.is_empty()).await;
    assert_eq!(fields(&cfg.get()), (cafe(), 3, 9, 12, 9, 6));
    let snap = cfg.update(|c| c.b = 11).await.unwrap();
    assert_eq!(fields(&snap), (cafe(), 3, 9, 12, 9, 11));
}

/// An override of a key whose bytes were dropped: its field then holds the override, and a
/// write must still check the config the override's expiry leaves, with the key's own value;
/// when the override ends, the key reads its own value again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_of_a_value_kept_only_as_the_config_keeps_its_own_value() {
    let (_server, store) = server().await;
    bucket_of_spellings(&store).await;
    let cfg = LiveConfig::<Cfg>::builder(store.clone(), "cfg").start().await.unwrap();
    cfg.set_for("counter", 99, Duration::from_secs(120)).await.unwrap();
    cfg.set_for("max", 900, Duration::from_secs(120)).await.unwrap();
    let snap = cfg.update(|c| c.a = 4).await.expect("the own values of `counter` and `max` are still known");
    assert_eq!(fields(&snap), ("café".to_string(), 3, 900, 99, 4, 6));
    // The state the overrides' expiry leaves is checked with the own values: min 8 > max 7.
    let err = cfg.update(|c| c.min = 8).await.expect_err("invalid once `max` is 7 again");
    assert!(matches!(err, Error::InvalidAfterExpiry { .. }), "{err}");
    cfg.clear_override("counter").await.unwrap();
    cfg.clear_override("max").await.unwrap();
    eventually("the overrides ended", || cfg.get().overrides().is_empty()).await;
    assert_eq!(fields(&cfg.get()), ("café".to_string(), 3, 7, 12, 4, 6));
}

/// The cache file holds a dropped value's bytes, re-encoded, and the own value of an overridden
/// one: a start from it with the server down reads what the bucket held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_file_holds_the_values_a_handle_kept_only_as_its_config() {
    let (mut server, store) = server().await;
    bucket_of_spellings(&store).await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg.cache");
    let cfg = LiveConfig::<Cfg>::builder(store.clone(), "cfg").cache_file(&path).start().await.unwrap();
    cfg.set_for("counter", 99, Duration::from_secs(120)).await.unwrap();
    let revision = cfg.update(|c| c.b = 11).await.unwrap().revision();
    eventually("the cache holds the latest snapshot", || cfg.status().cache_revision == Some(revision)).await;
    drop(cfg);
    server.stop();
    let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
    let offline = NatsStore::connect(server.url(), options).await.unwrap();
    let cached = LiveConfig::<Cfg>::builder(offline, "cfg").cache_file(&path).cache_wait(Duration::from_millis(300)).start().await.unwrap();
    assert!(cached.status().from_cache.is_some());
    assert_eq!(fields(&cached.get()), ("café".to_string(), 3, 7, 12, 5, 11), "the cache holds `counter`'s own value");
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Section {
    v: serde_json::Value,
}

/// Two fields of one key: a nested struct's `s.v` and a field renamed to `s.v`.
#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct TwoOfOneKey {
    #[kv(nested)]
    s: Section,
    #[kv(rename = "s.v")]
    b: String,
    #[kv(default)]
    n: u32,
}

/// A key two fields read keeps its bytes: the config cannot give them back (it encodes one of
/// the two fields), so after a whole decode (forced by a refused value) both fields still read
/// what the bucket holds.
#[tokio::test]
async fn a_key_two_fields_read_keeps_its_value_through_a_whole_decode() {
    let (_server, store) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("cfg")).await.unwrap();
    bucket.put("s.v", "5".into()).await.unwrap();
    let cfg = LiveConfig::<TwoOfOneKey>::builder(store.clone(), "cfg").start().await.unwrap();
    assert_eq!((cfg.get().s.v.clone(), cfg.get().b.clone()), (serde_json::json!(5), "5".to_string()));
    bucket.put("n", "\"not a number\"".into()).await.unwrap();
    eventually("the refusal reported", || cfg.status().rejected.len() == 1).await;
    bucket.put("n", "3".into()).await.unwrap();
    eventually("repaired", || cfg.get().n == 3 && cfg.status().rejected.is_empty()).await;
    assert_eq!((cfg.get().s.v.clone(), cfg.get().b.clone()), (serde_json::json!(5), "5".to_string()));
}

/// No cross-field validators: an update of one field is a lone write (no guard key in a batch).
#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Pair {
    #[kv(default)]
    a: u64,
    #[kv(default)]
    b: u64,
}

/// The value `history` (oldest first) held at bucket revision `revision` (0 before its first).
fn value_at(history: &[kv_config::store::Entry], revision: u64) -> u64 {
    history
        .iter()
        .rfind(|e| e.revision <= revision)
        .map_or(0, |e| std::str::from_utf8(&e.value).unwrap().parse().unwrap())
}

/// An update applies its own write before the watch brings it back, but only when nothing else
/// can lie between: every snapshot an update returns holds, for every key, the value the bucket
/// held at that snapshot's revision, while four writers on their own connections write two keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_snapshot_an_update_returns_is_a_state_the_bucket_had() {
    let server = NatsServer::start().await;
    let setup = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    setup.create_bucket(&BucketConfig::new("pair").history(64)).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..4 {
        let store = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
        handles.push(LiveConfig::<Pair>::builder(store, "pair").max_attempts(1000).start().await.unwrap());
    }
    // 4 x 15 writes: each key's 30 revisions stay in its history of 64.
    let tasks: Vec<_> = handles
        .iter()
        .cloned()
        .enumerate()
        .map(|(i, h)| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for n in 0..15 {
                    let s = h.update(|c| if (i + n) % 2 == 0 { c.a += 1 } else { c.b += 1 }).await.unwrap();
                    seen.push((s.revision(), s.a, s.b));
                }
                seen
            })
        })
        .collect();
    let mut returned = Vec::new();
    for t in tasks {
        returned.extend(t.await.unwrap());
    }
    let bucket = setup.open_bucket("pair").await.unwrap();
    let (a, b) = (bucket.history("a").await.unwrap(), bucket.history("b").await.unwrap());
    assert_eq!(a.len() + b.len(), 60, "every update wrote once");
    for (revision, sa, sb) in returned {
        assert_eq!((sa, sb), (value_at(&a, revision), value_at(&b, revision)), "the snapshot at revision {revision} is not the bucket's state then");
    }
}

/// A handle's own write is in effect when `update` returns, often before its watch delivered it;
/// the delivery then gives the key the server's timestamp.
#[tokio::test]
async fn an_own_write_gets_the_servers_timestamp_once_delivered() {
    let (_server, store) = server().await;
    let cfg = LiveConfig::<Pair>::builder(store.clone(), "stamp").create_if_missing().start().await.unwrap();
    let bucket = store.open_bucket("stamp").await.unwrap();
    for n in 1..=20 {
        let s = cfg.update(|c| c.a = n).await.unwrap();
        assert_eq!(s.a, n);
        let stored = bucket.entry("a").await.unwrap().unwrap();
        assert_eq!(Some(stored.revision), s.key_revision("a"));
        eventually("the server's timestamp", || {
            cfg.get().source("a") == Some(kv_config::Provenance::Bucket { revision: stored.revision, created: Some(stored.created) })
        })
        .await;
    }
}

/// nats-server 2.15 can announce one entry too many on a history-1 bucket when a key is
/// overwritten before its entry was delivered; the watcher must not wait a heartbeat (30 s here)
/// for it. Bursts of 5 concurrent writes to one key, each in effect within 1 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_overwrites_is_in_effect_at_once_though_the_server_announces_more() {
    let (server, store) = server().await;
    // History 1, as `nats kv add` makes it by default (the count is right with a longer history).
    store.create_bucket(&BucketConfig::new("burst")).await.unwrap();
    let cfg = LiveConfig::<Pair>::builder(store, "burst").heartbeat(Duration::from_secs(30)).start().await.unwrap();
    let writer = NatsStore::new(async_nats::connect(server.url()).await.unwrap()).open_bucket("burst").await.unwrap();
    for round in 0..300u64 {
        let writes = (0..5u64).map(|i| {
            let writer = writer.clone();
            async move { writer.put("a", (round * 10 + i).to_string().into()).await.unwrap() }
        });
        let last = futures_util::future::join_all(writes).await.into_iter().max().unwrap();
        let t = Instant::now();
        while cfg.get().revision() < last {
            assert!(t.elapsed() < Duration::from_secs(1), "round {round}: revision {last} not in effect after 1 s (at {})", cfg.get().revision());
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Watches that pause `gap` before each live entry that follows one announcing more (a slow
/// link, a busy server): the real server underneath, only the delivery delayed.
#[derive(Clone, Debug)]
struct SlowLink {
    gap: Duration,
    /// Every live entry announces one more (as nats-server 2.15 does after an overwrite).
    overcount: bool,
    /// Pause before every live entry, not only after one that announced more.
    every: bool,
    /// How many deliveries paused.
    paused: Arc<std::sync::atomic::AtomicU32>,
}

impl SlowLink {
    fn store(store: &NatsStore, gap: Duration, overcount: bool, every: bool) -> Tapped<SlowLink> {
        Tapped::new(store, SlowLink { gap, overcount, every, paused: Arc::default() })
    }
}

impl Hooks for SlowLink {
    type PerBucket = ();
    const SHARED_WATCHES: bool = false;

    fn watch(&self, _: &(), inner: kv_config::store::Watch) -> kv_config::store::Watch {
        use futures_util::StreamExt;
        let (initial, gap, overcount, every, paused) = (inner.initial_pending(), self.gap, self.overcount, self.every, self.paused.clone());
        let (mut delivered, mut announced) = (0u64, false);
        let slowed = inner.then(move |mut item| {
            delivered += 1;
            let live = delivered > initial;
            if let (Ok(e), true, true) = (&mut item, live, overcount) {
                e.delta = e.delta.max(1);
            }
            let pause = (std::mem::replace(&mut announced, matches!(&item, Ok(e) if e.delta > 0)) || every) && live;
            if pause {
                paused.fetch_add(1, Ordering::Relaxed);
            }
            async move {
                if pause {
                    tokio::time::sleep(gap).await;
                }
                item
            }
        });
        kv_config::store::Watch::new(initial, slowed)
    }
}

/// Writes `a`, `b`, `a` to bucket `gap`, all stored before the first is delivered (it announces
/// two more); returns the last revision.
async fn three_writes(js: &async_nats::jetstream::Context, round: u64) -> u64 {
    let mut acks = Vec::new();
    for key in ["a", "b", "a"] {
        acks.push(js.publish(format!("$KV.gap.{key}"), (round * 10).to_string().into()).await.unwrap());
    }
    let mut last = 0;
    for ack in acks {
        last = ack.await.unwrap().sequence;
    }
    last
}

/// A delivery that pauses 400 ms inside a burst (default 1 s heartbeat) is waited for, not taken
/// for a stalled watch: the watcher asks the server once, hears the entry is stored, and waits
/// for it as for any entry (before, a pause of a quarter heartbeat re-created the watch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_inside_a_burst_is_waited_for_not_taken_for_a_stalled_watch() {
    let (server, store) = server().await;
    let slow = SlowLink::store(&store, Duration::from_millis(400), false, false);
    slow.create_bucket(&BucketConfig::new("gap")).await.unwrap();
    let cfg = LiveConfig::<Pair>::builder(slow.clone(), "gap").start().await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    for round in 0..5u64 {
        let last = three_writes(&js, round).await;
        kv_config_testing::eventually("the burst in effect", Duration::from_secs(10), || cfg.get().revision() >= last).await;
    }
    assert!(slow.hooks.paused.load(Ordering::Relaxed) > 0, "no delivery paused: the test did not test anything");
    assert_eq!(cfg.status().watch_restarts, 0, "a pause inside a burst re-created the watch: {:?}", cfg.status());
}

/// A burst that pauses (20 ms before each entry) and whose every entry announces one more, the
/// last one falsely: once the server said an announced entry is stored, the watcher still asks
/// about the next one, so the burst is in effect within milliseconds, not a heartbeat (5 s here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_that_pauses_and_then_announces_too_many_is_in_effect_at_once() {
    let (server, store) = server().await;
    let slow = SlowLink::store(&store, Duration::from_millis(20), true, false);
    slow.create_bucket(&BucketConfig::new("gap")).await.unwrap();
    let cfg = LiveConfig::<Pair>::builder(slow.clone(), "gap").heartbeat(Duration::from_secs(5)).start().await.unwrap();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    for round in 0..3u64 {
        let last = three_writes(&js, round).await;
        let t = Instant::now();
        while cfg.get().revision() < last {
            assert!(t.elapsed() < Duration::from_secs(1), "round {round}: revision {last} not in effect after 1 s");
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }
    assert!(slow.hooks.paused.load(Ordering::Relaxed) > 0, "no delivery paused: the test did not test anything");
}

/// A handle's own write, applied by the writer as soon as its watch delivers it (50 ms late
/// here), may be in effect before the watcher stamps it with the server's timestamp; the stamp
/// follows, and the cache file is saved again with it, so a handle that later resumes from the
/// file still says when the server stored the value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_file_gets_the_servers_timestamp_of_an_own_write() {
    let (mut server, store) = server().await;
    let dir = tempfile::Builder::new().prefix("kvc-stamp-test-").tempdir().unwrap();
    let path = dir.path().join("pair.cache");
    let slow = SlowLink::store(&store, Duration::from_millis(50), false, true);
    slow.create_bucket(&BucketConfig::new("stamp")).await.unwrap();
    let a = LiveConfig::<Pair>::builder(slow, "stamp").cache_file(&path).start().await.unwrap();
    let start = a.get().revision();
    kv_config_testing::eventually("the start saved", Duration::from_secs(5), || a.status().cache_revision == Some(start)).await;
    let s = a.update(|c| c.a = 7).await.unwrap();
    let revision = s.key_revision("a").unwrap();
    let stored = store.open_bucket("stamp").await.unwrap().entry("a").await.unwrap().unwrap();
    assert!(
        matches!(s.source("a"), Some(kv_config::Provenance::Bucket { created, .. }) if created.is_none() || created == Some(stored.created)),
        "in effect, stamped or not yet: {:?}",
        s.source("a")
    );
    let stamped = kv_config::Provenance::Bucket { revision, created: Some(stored.created) };
    eventually("the handle has the server's time", || a.get().source("a") == Some(stamped)).await;
    let in_file = format!("\"a\":{{\"revision\":{revision},\"created_unix_ns\":");
    eventually("the cache file has it", || std::fs::read_to_string(&path).is_ok_and(|f| f.contains(&in_file))).await;
    drop(a);
    server.stop();
    let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
    let later = NatsStore::connect(server.url(), options).await.unwrap();
    let b = LiveConfig::<Pair>::builder(later, "stamp").cache_file(&path).cache_wait(Duration::from_millis(500)).start().await.unwrap();
    server.restart().await;
    kv_config_testing::eventually("resumed from the cache", Duration::from_secs(15), || {
        let status = b.status();
        status.resumed_from.is_some() && status.from_cache.is_none()
    })
    .await;
    assert_eq!(b.get().source("a"), Some(stamped));
}
