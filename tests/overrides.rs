//! Expiring overrides (`LiveConfig::set_for`) and provenance (`Snapshot::source`) on a real
//! nats-server: the override is in effect for every handle while it lives, the server's per-key
//! TTL ends it, and the key's own value (not the default) is back.

use std::time::{Duration, SystemTime};

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use kv_config::store::{BucketConfig, NatsStore, Probe, Store, StoreError, StoreErrorKind, StoreResult};
use kv_config::{Error, KvConfig, LiveConfig, Provenance};
use kv_config_testing::NatsServer;
use serde::{Deserialize, Serialize};

mod common;
use common::{Hooks, Tapped};

/// Buckets whose probes get no answer while the gate is closed (and which announce nothing):
/// the handle cannot look at the server until the test has set a bucket up.
#[derive(Clone, Debug, Default)]
struct Gate(Arc<AtomicBool>);

impl Hooks for Gate {
    type PerBucket = ();
    const SHARED_WATCHES: bool = true;
    fn probe_result(&self, _: &(), _: &str, result: StoreResult<Probe>) -> StoreResult<Probe> {
        if self.0.load(Ordering::SeqCst) {
            Err(StoreError::new(StoreErrorKind::Timeout).bucket("cfg").detail("probe held back by the test"))
        } else {
            result
        }
    }
}

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
    workers: u32,
}

async fn server() -> (NatsServer, NatsStore) {
    let server = NatsServer::start().await;
    let store = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    (server, store)
}

/// A handle on bucket `cfg` (per-key TTLs, history 10) through a [`Tapped`] store that `gate`
/// controls, with a 250 ms heartbeat; also the bucket's config, to make it again.
async fn gated_handle(store: &NatsStore, gate: &Gate, write_timeout: Option<Duration>) -> (LiveConfig<Cfg>, BucketConfig) {
    let bucket_config = BucketConfig::new("cfg").history(10).key_ttl(Duration::from_secs(1));
    let builder = LiveConfig::<Cfg>::builder(Tapped::new(store, gate.clone()), "cfg")
        .create_with(bucket_config.clone())
        .heartbeat(Duration::from_millis(250));
    let builder = match write_timeout {
        Some(t) => builder.write_timeout(t),
        None => builder,
    };
    (builder.start().await.unwrap(), bucket_config)
}

/// A handle on bucket `cfg` with per-key TTLs enabled.
async fn handle(store: &NatsStore) -> LiveConfig<Cfg> {
    let bucket = BucketConfig::new("cfg").history(10).key_ttl(Duration::from_secs(1));
    LiveConfig::<Cfg>::builder(store.clone(), "cfg").create_with(bucket).heartbeat(Duration::from_millis(250)).start().await.unwrap()
}

async fn eventually(what: &str, within: Duration, cond: impl FnMut() -> bool) -> Duration {
    kv_config_testing::eventually(what, within, cond).await
}

#[tokio::test]
async fn an_override_lives_for_its_ttl_then_the_underlying_value_returns() {
    let (server, store) = server().await;
    let cfg = handle(&store).await;
    let other = handle(&store).await;
    cfg.update(|c| c.log_level = "warn".into()).await.unwrap();

    let set_at = SystemTime::now();
    let snap = cfg.set_for("log_level", "debug", Duration::from_secs(2)).await.unwrap();
    assert_eq!(snap.log_level, "debug", "set_for returns once the override is in effect");
    match snap.source("log_level") {
        Some(Provenance::Override { expires: Some(expires), .. }) => {
            let ttl = expires.duration_since(set_at).unwrap();
            assert!(ttl >= Duration::from_millis(1900) && ttl <= Duration::from_secs(3), "expiry {ttl:?}");
        }
        other => panic!("log_level should come from an override, got {other:?}"),
    }
    eventually("the other handle sees the override", Duration::from_secs(5), || other.get().log_level == "debug").await;
    let status = other.status();
    assert_eq!(status.overrides.len(), 1, "{status:?}");
    assert_eq!(status.overrides[0].key, "log_level");
    assert!(status.is_healthy(), "an override is not a refused value: {status:?}");

    // Meanwhile someone changes the key's own value: that is what comes back.
    let raw = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let kv = raw.get_key_value("cfg").await.unwrap();
    kv.put("log_level", "\"error\"".into()).await.unwrap();
    let mut changes = other.subscribe();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(other.get().log_level, "debug", "the override still wins over the new own value");

    // The server expires it; both handles go back to the key's own value, not the default.
    let took = eventually("override expired", Duration::from_secs(6), || {
        cfg.get().log_level == "error" && other.get().log_level == "error"
    })
    .await;
    let lived = SystemTime::now().duration_since(set_at).unwrap();
    println!("figure: override with TTL 2 s ended after {:.2} s ({took:?} after the check began)", lived.as_secs_f64());
    assert!(lived >= Duration::from_secs(2), "ended before its TTL: {lived:?}");
    assert!(matches!(cfg.get().source("log_level"), Some(Provenance::Bucket { .. })));
    assert!(cfg.status().overrides.is_empty());
    let change = changes.changed().await.unwrap();
    assert!(change.keys.contains(&"log_level".to_string()), "subscribers hear about the expiry: {:?}", change.keys);
}

#[tokio::test]
async fn updates_cannot_fight_an_override_and_stay_valid_after_it() {
    let (_server, store) = server().await;
    let cfg = handle(&store).await;
    let bucket = store.open_bucket("cfg").await.unwrap();
    cfg.set_for("max", 100, Duration::from_secs(60)).await.unwrap();
    assert_eq!(cfg.get().max, 100);

    // Changing the overridden key cannot take effect: refused, nothing written.
    let before = bucket.info().await.unwrap().last_revision;
    let err = cfg.update(|c| c.max = 20).await.unwrap_err();
    assert!(matches!(&err, Error::Overridden { key, expires: Some(_), .. } if key == "max"), "{err}");
    assert!(err.to_string().contains("`max`") && err.to_string().contains("clear the override"), "{err}");

    // A change valid only while the override lasts (min 50 <= max 100, but not <= the own max 10).
    let err = cfg.update(|c| c.min = 50).await.unwrap_err();
    assert!(matches!(err, Error::InvalidAfterExpiry { .. }), "{err}");
    assert!(err.to_string().contains("min 50 > max 10"), "{err}");
    assert_eq!(bucket.info().await.unwrap().last_revision, before, "refused updates write nothing");

    // Other keys update normally, and the override stays.
    let snap = cfg.update(|c| c.workers = 4).await.unwrap();
    assert_eq!((snap.workers, snap.max), (4, 100));
    assert_eq!(bucket.get("max").await.unwrap().unwrap(), "10", "the own value is untouched");

    // An override value the validators refuse is refused before anything is sent.
    let err = cfg.set_for("max", 5000, Duration::from_secs(60)).await.unwrap_err();
    assert!(err.to_string().contains("5000 is above 1000"), "{err}");
    let err = cfg.set_for("min", 500, Duration::from_secs(60)).await.unwrap_err();
    assert!(err.to_string().contains("min 500 > max 100"), "{err}");
    let err = cfg.set_for("nope", 1, Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(err, Error::UnknownKey { .. }), "{err}");
    assert_eq!(cfg.get().max, 100);

    // Clearing the override ends it at once.
    let snap = cfg.clear_override("max").await.unwrap();
    assert_eq!(snap.max, 10);
    assert!(snap.overrides().is_empty());
    cfg.update(|c| c.max = 20).await.unwrap();
}

/// Defect (found by a probe): `set_for` checked the config with every override in effect, not
/// as the others expire before the new one. An override of `max` for 2 s, then one of `min` for
/// 60 s: once `max`'s expired, every service refused the bucket (min 50 > the own max 10).
#[tokio::test]
async fn an_override_must_stay_valid_as_the_others_expire_before_it() {
    let (_server, store) = server().await;
    let cfg = handle(&store).await;
    let bucket = store.open_bucket("cfg").await.unwrap();
    cfg.set_for("max", 100, Duration::from_secs(2)).await.unwrap();
    let before = bucket.info().await.unwrap().last_revision;
    let err = cfg.set_for("min", 50, Duration::from_secs(60)).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidAfterExpiry { keys, .. } if keys == "`max`"), "{err}");
    assert!(err.to_string().contains("min 50 > max 10") && err.to_string().contains("bucket `cfg`"), "{err}");
    assert_eq!(bucket.info().await.unwrap().last_revision, before, "nothing written");
    // Expiring first, the same override is fine: while it lasts, `max` is 100.
    let snap = cfg.set_for("min", 50, Duration::from_secs(1)).await.expect("min's override ends before max's");
    assert_eq!((snap.min, snap.max), (50, 100));
    // Updates are checked state after state too: here `min`'s override ends first, then
    // `max`'s, and every state on the way is valid.
    cfg.update(|c| c.workers = 2).await.expect("an unrelated update");
}

/// Shortening an override that outlasted another creates states that did not exist before:
/// `max` at 100 for 60 s and `min` at 50 for 30 s is fine (min ends first), but `max` again for
/// 1 s would leave min 50 > the own max 10 for 29 s. (The first version of the check looked
/// only at the states up to the new override's expiry, and none had expired before it; found by
/// a review.)
#[tokio::test]
async fn shortening_an_override_that_outlasted_another_is_checked() {
    let (_server, store) = server().await;
    let cfg = handle(&store).await;
    cfg.set_for("max", 100, Duration::from_secs(60)).await.unwrap();
    cfg.set_for("min", 50, Duration::from_secs(30)).await.unwrap();
    let err = cfg.set_for("max", 100, Duration::from_secs(1)).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidAfterExpiry { keys, .. } if keys == "`max`"), "{err}");
    assert!(err.to_string().contains("min 50 > max 10"), "{err}");
    // Lengthening it is fine.
    cfg.set_for("max", 100, Duration::from_secs(90)).await.expect("a longer override of max");
}

/// Defect (found by a probe): when an override expired while the bucket's state without it was
/// refused (another tool had written an override of `min` that needs it), the handle kept the
/// last good snapshot, which held the expired override's value; the next unrelated `update` then
/// wrote that value back as the key's own ("repairing" it), turning a temporary override into a
/// permanent value.
#[tokio::test]
async fn an_expired_overrides_value_is_never_written_as_the_keys_own() {
    let (_server, store) = server().await;
    let cfg = handle(&store).await;
    let bucket = store.open_bucket("cfg").await.unwrap();
    cfg.set_for("max", 100, Duration::from_secs(1)).await.unwrap();
    // Another tool overrides `min` with no check of its own.
    let op = kv_config::store::WriteOp::put("__kvconfig.override.min", "50".into()).ttl(Duration::from_secs(60));
    bucket.write(op).await.unwrap();
    eventually("min's override in effect", Duration::from_secs(3), || cfg.get().min == 50).await;
    // `max`'s override expires: min 50 > the own max 10 is refused, the last good snapshot stays.
    eventually("the state without max's override refused", Duration::from_secs(5), || !cfg.status().rejected.is_empty()).await;
    assert_eq!((cfg.get().min, cfg.get().max), (50, 100), "the last good snapshot stays");
    assert!(matches!(cfg.get().source("max"), Some(Provenance::Override { .. })), "{:?}", cfg.get().source("max"));
    let before = bucket.info().await.unwrap().last_revision;
    let err = cfg.update(|c| c.workers = 4).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidAfterExpiry { keys, .. } if keys == "`max`"), "{err}");
    assert!(err.to_string().contains("min 50 > max 10"), "{err}");
    assert_eq!(bucket.info().await.unwrap().last_revision, before, "nothing written");
    assert_eq!(bucket.get("max").await.unwrap().unwrap(), "10", "the own value is untouched");
    // Clearing the override that is gone cannot bring the own value into effect: it says so.
    let err = cfg.clear_override("max").await.unwrap_err();
    assert!(matches!(&err, Error::NotInEffect { key, .. } if key == "__kvconfig.override.max"), "{err}");
    assert!(err.to_string().contains("min 50 > max 10"), "{err}");
    // Setting `max` itself is a change of the own value like any other, and makes the state valid.
    let snap = cfg.update(|c| c.max = 60).await.expect("an explicit own max");
    assert_eq!((snap.min, snap.max), (50, 60));
    assert_eq!(bucket.get("max").await.unwrap().unwrap(), "60");
    assert!(cfg.status().rejected.is_empty(), "{:?}", cfg.status());
}

/// The same across a bucket's replacement: a handle runs on an override of `max`; the bucket is
/// deleted and made again (a restore from backup, a wiped store) without the override, with a
/// state its struct check refuses. The handle keeps its last good config, whose `max` is the old
/// bucket's override value: that value is still no own value of `max`, and a write that keeps
/// `max` must not store it as one (before, the reload forgot where the value came from, and the
/// next `update` wrote the incident knob into the new bucket for good).
#[tokio::test]
async fn an_override_value_carried_over_a_bucket_replacement_is_never_written_as_the_keys_own() {
    let (_server, store) = server().await;
    let gate = Gate::default();
    let (cfg, bucket_config) = gated_handle(&store, &gate, None).await;
    cfg.update(|c| c.min = 5).await.unwrap();
    cfg.set_for("max", 100, Duration::from_secs(60)).await.unwrap();
    let reloads = cfg.status().reloads;
    // The bucket is replaced: own `min` 50, no `max` (default 10), no override: min > max. The
    // handle is kept from the server until the new bucket holds that (its empty state is valid).
    gate.0.store(true, Ordering::SeqCst);
    store.delete_bucket("cfg").await.unwrap();
    let bucket = store.create_bucket(&bucket_config).await.unwrap();
    bucket.put("min", "50".into()).await.unwrap();
    gate.0.store(false, Ordering::SeqCst);
    eventually("the replaced bucket read", Duration::from_secs(10), || cfg.status().reloads > reloads && !cfg.status().rejected.is_empty()).await;
    assert_eq!((cfg.get().min, cfg.get().max), (5, 100), "the last good config stays");
    assert!(
        matches!(cfg.get().source("max"), Some(Provenance::Override { .. })),
        "max is still the old override's value: {:?}",
        cfg.get().source("max")
    );
    // A write of another field keeps `max` as it is in effect: it must not write 100 as `max`'s
    // own value. With `max` back to its own value (the default 10), `min` 5 (the handle's, written
    // back) is valid, so the write goes through and `max` is left alone.
    let snap = cfg.update(|c| c.workers = 4).await.expect("valid with max's own value");
    assert_eq!(bucket.get("max").await.unwrap(), None, "the override's value was not written as max's own");
    assert_eq!((snap.min, snap.max, snap.workers), (5, 10, 4), "the bucket's own state is in effect");
    assert!(matches!(snap.source("max"), Some(Provenance::Default)), "{:?}", snap.source("max"));
    assert!(cfg.status().rejected.is_empty(), "{:?}", cfg.status());
}

#[tokio::test]
async fn a_garbage_override_is_refused_and_named() {
    let (server, store) = server().await;
    let cfg = handle(&store).await;
    let raw = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let kv = raw.get_key_value("cfg").await.unwrap();
    let rev = kv.put("__kvconfig.override.max", "\"lots\"".into()).await.unwrap();
    eventually("garbage seen", Duration::from_secs(5), || cfg.status().seen_revision >= rev).await;
    let status = cfg.status();
    assert_eq!(cfg.get().max, 10, "the last good value stays");
    let rejected = status.rejected.iter().find(|e| e.revision == Some(rev)).expect("refused value reported");
    assert_eq!(rejected.key, "__kvconfig.override.max", "the error names where the value came from");
    assert!(rejected.to_string().contains("expected u32"), "{rejected}");
    assert!(status.overrides.is_empty());
    // A good override from any client (here without kv-config's expiry header) applies.
    kv.put("__kvconfig.override.max", "7".into()).await.unwrap();
    eventually("good override", Duration::from_secs(5), || cfg.get().max == 7).await;
    assert!(matches!(cfg.get().source("max"), Some(Provenance::Override { expires: None, .. })));
}

#[tokio::test]
async fn overrides_need_a_bucket_with_key_ttls() {
    let (_server, store) = server().await;
    let cfg = LiveConfig::<Cfg>::builder(store.clone(), "plain").create_if_missing().start().await.unwrap();
    let err = cfg.set_for("log_level", "debug", Duration::from_secs(30)).await.unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains("plain") && msg.to_lowercase().contains("ttl"), "{msg}");
    assert_eq!(cfg.get().log_level, "info");
    assert!(cfg.status().overrides.is_empty());
}

#[tokio::test]
async fn a_new_handle_starts_with_the_live_override() {
    let (_server, store) = server().await;
    let cfg = handle(&store).await;
    cfg.set_for("workers", 9, Duration::from_secs(60)).await.unwrap();
    let later = handle(&store).await;
    assert_eq!(later.get().workers, 9);
    assert_eq!(later.status().overrides[0].key, "workers");
    // One-shot load sees it too.
    let bucket = store.open_bucket("cfg").await.unwrap();
    assert_eq!(kv_config::load::<Cfg>(&*bucket, "").await.unwrap().config.workers, 9);
}

#[tokio::test]
async fn provenance_names_default_bucket_and_fallback() {
    let (_server, store) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("cfg")).await.unwrap();
    let rev = bucket.put("max", "50".into()).await.unwrap();
    let cfg = LiveConfig::<Cfg>::builder(store.clone(), "cfg").start().await.unwrap();
    let snap = cfg.get();
    match snap.source("max") {
        Some(Provenance::Bucket { revision, created: Some(created) }) => {
            assert_eq!(revision, rev);
            assert!(SystemTime::now().duration_since(created).unwrap() < Duration::from_secs(60));
        }
        other => panic!("max: {other:?}"),
    }
    assert_eq!(snap.source("log_level"), Some(Provenance::Default));
    assert_eq!(snap.source("no_such_key"), None);
    assert_eq!(snap.source("max").unwrap().to_string(), format!("bucket (revision {rev})"));

    // A start-up fallback says so.
    bucket.put("min", "99".into()).await.unwrap();
    let fallback = Cfg { log_level: "info".into(), min: 0, max: 1, workers: 1 };
    let cfg = LiveConfig::<Cfg>::builder(store.clone(), "cfg")
        .on_invalid(kv_config::OnInvalid::Fallback(fallback))
        .start()
        .await
        .unwrap();
    assert_eq!(cfg.get().source("workers"), Some(Provenance::Fallback));
}

#[tokio::test]
async fn an_override_survives_a_server_restart_and_still_expires() {
    let (mut server, store) = server().await;
    let cfg = handle(&store).await;
    cfg.update(|c| c.workers = 2).await.unwrap();
    // Long enough that a restart on a loaded machine finishes well before it expires.
    let set_at = SystemTime::now();
    cfg.set_for("workers", 8, Duration::from_secs(6)).await.unwrap();
    server.kill();
    server.restart().await;
    // The override is stored with the bucket: after the restart it is still in effect ...
    let later = handle(&store).await;
    let elapsed = SystemTime::now().duration_since(set_at).unwrap();
    assert!(elapsed < Duration::from_secs(5), "the restart took {elapsed:?}; the test needs it under the TTL");
    assert_eq!(later.get().workers, 8, "a handle started after the restart uses the live override");
    // ... and the restarted server still expires it on time, for both handles.
    eventually("override expired after restart", Duration::from_secs(10), || {
        cfg.get().workers == 2 && later.get().workers == 2
    })
    .await;
    assert!(SystemTime::now().duration_since(set_at).unwrap() >= Duration::from_secs(6), "expired early");
    eventually("healthy again", Duration::from_secs(10), || cfg.status().is_healthy()).await;
}

/// A temporary directory (removed when dropped), a cache file's path in it, and a store whose
/// client keeps trying to connect (the tests stop the server).
async fn cache_setup(server: &NatsServer, prefix: &str) -> (tempfile::TempDir, std::path::PathBuf, NatsStore) {
    let dir = tempfile::Builder::new().prefix(prefix).tempdir().unwrap();
    let path = dir.path().join("app.cache");
    let store = NatsStore::connect(server.url(), async_nats::ConnectOptions::new().retry_on_initial_connect()).await.unwrap();
    (dir, path, store)
}

/// A handle on bucket `cfg` that keeps its cache file at `path` and waits 500 ms for the server.
fn with_cache(store: &NatsStore, path: &std::path::Path) -> kv_config::Builder<Cfg> {
    LiveConfig::<Cfg>::builder(store.clone(), "cfg").heartbeat(Duration::from_millis(250)).cache_file(path).cache_wait(Duration::from_millis(500))
}

/// The cache file holds the keys' own values, not overrides (which the server expires): a handle
/// started from the cache while the server is down runs on the own value, and once the server
/// is back it loads the bucket in full and picks the live override up.
#[tokio::test]
async fn a_cache_holds_own_values_and_the_override_returns_with_the_server() {
    let (mut server, _) = server().await;
    let (_dir, path, store) = cache_setup(&server, "kvc-override-cache-").await;
    let builder = || with_cache(&store, &path);
    let bucket = BucketConfig::new("cfg").history(10).key_ttl(Duration::from_secs(1));
    let cfg = builder().create_with(bucket).start().await.unwrap();
    cfg.update(|c| c.workers = 2).await.unwrap();
    let snap = cfg.set_for("workers", 9, Duration::from_secs(120)).await.unwrap();
    eventually("cache saved", Duration::from_secs(5), || cfg.status().cache_revision >= Some(snap.revision())).await;
    drop(cfg);
    server.stop();

    let offline = builder().start().await.unwrap();
    assert_eq!(offline.get().workers, 2, "the cache holds the key's own value, not the override");
    assert!(matches!(offline.get().source("workers"), Some(Provenance::Cache { .. })));
    server.restart().await;
    eventually("back with the live override", Duration::from_secs(15), || offline.get().workers == 9).await;
    assert_eq!(offline.status().overrides.len(), 1);
    assert_eq!(offline.status().resumed_from, None, "a cache taken under an override is loaded in full");
}

/// A lapsed override's value (the override is gone, the state without it refused, so its value
/// stayed in effect) is saved in the cache file with where it came from: a handle started from
/// the cache while the server is down says the value is an override's, and once the server is
/// back and the key's own value is still refused, a write that keeps the key does not store the
/// override's value as the key's own (before, the cache made it the key's own value, and the
/// first `update` after the server came back wrote it into the bucket for good).
#[tokio::test]
async fn a_lapsed_override_read_back_from_the_cache_is_never_written_as_the_keys_own() {
    let (mut server, _) = server().await;
    let (_dir, path, store) = cache_setup(&server, "kvc-lapsed-cache-").await;
    let builder = || with_cache(&store, &path);
    let cfg = builder().create_with(BucketConfig::new("cfg").history(10).key_ttl(Duration::from_secs(1))).start().await.unwrap();
    let bucket = store.open_bucket("cfg").await.unwrap();
    cfg.set_for("max", 100, Duration::from_secs(1)).await.unwrap();
    // Another client writes max's own value, one its validator refuses, while the override lives.
    bucket.put("max", "5000".into()).await.unwrap();
    eventually("max's own value refused once the override is gone", Duration::from_secs(5), || !cfg.status().rejected.is_empty()).await;
    assert_eq!(cfg.get().max, 100, "max's lapsed override value stays in effect");
    // A change of another key makes a new snapshot, which the cache file saves.
    bucket.put("workers", "3".into()).await.unwrap();
    eventually("workers in effect", Duration::from_secs(3), || cfg.get().workers == 3).await;
    let revision = cfg.get().revision();
    eventually("cache saved", Duration::from_secs(5), || cfg.status().cache_revision >= Some(revision)).await;
    drop(cfg);
    server.stop();

    let offline = builder().start().await.unwrap();
    assert_eq!((offline.get().max, offline.get().workers), (100, 3), "the last good config, from the cache");
    assert!(
        matches!(offline.get().source("max"), Some(Provenance::Override { .. })),
        "the cache remembers max's value is an override's: {:?}",
        offline.get().source("max")
    );
    server.restart().await;
    eventually("the bucket read again, max's own value still refused", Duration::from_secs(15), || {
        let status = offline.status();
        status.from_cache.is_none() && status.connected && !status.rejected.is_empty()
    })
    .await;
    assert_eq!(offline.get().max, 100);
    let err = offline.update(|c| c.workers = 4).await.unwrap_err();
    assert!(matches!(&err, Error::InvalidAfterExpiry { keys, .. } if keys == "`max`"), "{err}");
    assert!(err.to_string().contains("5000 is above 1000"), "{err}");
    assert_eq!(bucket.get("max").await.unwrap().unwrap(), "5000", "max's own value is untouched");
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Limits {
    limits: std::collections::BTreeMap<String, u32>,
}

/// A handle that starts while more than 64 keys are overridden (the values in effect are then
/// folded into a map of their own during its decode) drops only bytes its config re-encodes: its
/// writes still check the state the overrides' expiry leaves, and once they end every key reads
/// its own value, not the override's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_started_under_many_overrides_keeps_every_keys_own_value() {
    let (server, store) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("cfg").history(10).key_ttl(Duration::from_secs(1))).await.unwrap();
    for i in 0..100u32 {
        bucket.put(&format!("limits.k{i}"), i.to_string().into()).await.unwrap();
    }
    let a = LiveConfig::<Limits>::builder(store.clone(), "cfg").start().await.unwrap();
    for i in 0..65u32 {
        a.set_for(&format!("limits.k{i}"), 1000 + i, Duration::from_secs(120)).await.unwrap();
    }
    // Another process's handle starts with the 65 overrides in effect.
    let other = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    let b = LiveConfig::<Limits>::builder(other, "cfg").start().await.unwrap();
    assert_eq!((b.get().limits["k0"], b.get().limits["k64"], b.get().limits["k65"]), (1000, 1064, 65));
    b.update(|c| {
        c.limits.insert("k99".into(), 199);
    })
    .await
    .expect("the overridden keys' own values are known");
    for i in 0..65u32 {
        a.clear_override(&format!("limits.k{i}")).await.unwrap();
    }
    eventually("every override ended", Duration::from_secs(10), || b.get().overrides().is_empty()).await;
    let snap = b.get();
    let wrong: Vec<String> = (0..100u32).filter(|i| snap.limits[&format!("k{i}")] != if *i == 99 { 199 } else { *i }).map(|i| format!("k{i}")).collect();
    assert!(wrong.is_empty(), "keys reading another value than their own: {wrong:?}");
}

/// The server's store is wiped (restarted without its data: the bucket and the override are gone)
/// while an override lives; nobody creates the bucket again for longer than the override's TTL.
/// The handle keeps its last good config and says the bucket is missing, and `set_for` fails at
/// once naming the bucket. But an override whose expiry has passed is no longer in effect
/// anywhere: the handle must not keep running on the incident knob, nor list it in
/// `status().overrides` or `source()`, past the time it was set for; the key's own last good
/// value is back, as the expiry marker would have made it. Found by a probe (before: `debug`,
/// `source` = `Override` with an expiry in the past, for as long as the bucket stayed missing).
/// Then the bucket is created again by another client: the handle reads it (no override there),
/// and a `set_for` goes to it; and a `set_for` issued right after a second wipe and re-creation
/// is either `Ok` with the new bucket's state, or an error naming the bucket that never claims
/// "nothing written" for a write the new bucket holds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_across_a_wiped_store_ends_at_its_expiry_and_set_for_never_lies() {
    use kv_config::StaleReason;
    let (mut server, store) = server().await;
    let cfg = handle(&store).await;
    cfg.update(|c| c.log_level = "warn".into()).await.unwrap();
    let ttl = Duration::from_secs(2);
    let snap = cfg.set_for("log_level", "debug", ttl).await.unwrap();
    let Some(Provenance::Override { expires: Some(expires), .. }) = snap.source("log_level") else { panic!("{:?}", snap.source("log_level")) };
    server.restart_wiped().await;
    let missing = |c: &LiveConfig<Cfg>| c.status().stale.is_some_and(|s| s.reason == StaleReason::BucketMissing);
    eventually("the wiped bucket reported missing", Duration::from_secs(10), || missing(&cfg)).await;
    if SystemTime::now() < expires {
        assert_eq!(cfg.get().log_level, "debug", "before its expiry the override stays in effect (last good config)");
    }
    let t = std::time::Instant::now();
    let err = cfg.set_for("workers", 7, Duration::from_secs(30)).await.expect_err("no write while the bucket is missing");
    assert!(matches!(&err, Error::Store(e) if *e.kind() == StoreErrorKind::NotFound), "{err}");
    assert!(err.to_string().contains("bucket `cfg`"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(1), "at once: {:?}", t.elapsed());

    // Past its expiry (plus a heartbeat of 250 ms to notice it), the override is over.
    let wait = expires.duration_since(SystemTime::now()).unwrap_or_default();
    tokio::time::sleep(wait).await;
    eventually("the expired override dropped while the bucket is missing", Duration::from_secs(2), || cfg.get().log_level == "warn").await;
    let snap = cfg.get();
    assert!(matches!(snap.source("log_level"), Some(Provenance::Bucket { .. })), "{:?}", snap.source("log_level"));
    let status = cfg.status();
    assert!(status.overrides.is_empty(), "no override listed past its expiry: {:?}", status.overrides);
    assert!(missing(&cfg), "still reported missing: {:?}", status.stale);

    // Created again by another client, with its own value and no override: read in full.
    let other = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    let bucket_config = BucketConfig::new("cfg").history(10).key_ttl(Duration::from_secs(1));
    let bucket = other.create_bucket(&bucket_config).await.unwrap();
    bucket.put("log_level", "\"error\"".into()).await.unwrap();
    eventually("the new bucket read", Duration::from_secs(10), || cfg.get().log_level == "error" && cfg.status().is_healthy()).await;
    assert!(cfg.status().overrides.is_empty());
    let snap = cfg.set_for("workers", 7, Duration::from_secs(30)).await.expect("set_for on the new bucket");
    assert_eq!(snap.workers, 7);
    assert_eq!(bucket.get("__kvconfig.override.workers").await.unwrap().as_deref(), Some(&b"7"[..]), "written to the bucket watched");

    // Wiped again while overrides live, created again at once, and a set_for at once.
    cfg.set_for("log_level", "debug", Duration::from_secs(30)).await.unwrap();
    let reloads = cfg.status().reloads;
    server.restart_wiped().await;
    let other = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    let bucket = other.create_bucket(&bucket_config).await.unwrap();
    bucket.put("log_level", "\"error\"".into()).await.unwrap();
    let t = std::time::Instant::now();
    let result = cfg.set_for("workers", 9, Duration::from_secs(30)).await;
    let took = t.elapsed();
    let held = bucket.get("__kvconfig.override.workers").await.unwrap();
    match &result {
        Ok(snap) => {
            assert_eq!((snap.workers, snap.log_level.as_str()), (9, "error"), "Ok shows the new bucket's state with the override");
            assert!(cfg.status().reloads > reloads, "Ok only after the new bucket was read");
            assert_eq!(held.as_deref(), Some(&b"9"[..]), "Ok: the bucket watched holds it");
        }
        Err(e) => {
            assert!(e.to_string().contains("`cfg`"), "names the bucket: {e}");
            let said_not_written = matches!(e, Error::Conflict { .. } | Error::Store(_)) && !matches!(e, Error::Store(s) if *s.kind() == StoreErrorKind::OutcomeUnknown);
            assert!(!(said_not_written && held.is_some()), "told not written, but the bucket holds it: {e}");
            assert_ne!(cfg.get().workers, 9, "not claimed");
        }
    }
    assert!(took < Duration::from_secs(15), "bounded: {took:?}");
    eventually("the new bucket read after the second wipe", Duration::from_secs(10), || cfg.get().log_level == "error" && cfg.status().is_healthy()).await;
    println!("figure: set_for right after a wipe and re-creation: {:?} after {took:?}", result.map(|s| s.workers).map_err(|e| e.to_string()));
}

/// The same while the server is frozen (SIGSTOP) past an override's expiry: the server cannot
/// be asked, and its expiry marker cannot come, but the override's time is over: the handle
/// drops it (the key's own value is back) while it reports the server as not answering. After
/// `SIGCONT` the server expires the override itself; the handle stays on the own value and
/// `set_for` works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_override_ends_at_its_expiry_while_the_server_is_frozen() {
    let (mut server, store) = server().await;
    let cfg = handle(&store).await;
    cfg.update(|c| c.log_level = "warn".into()).await.unwrap();
    let snap = cfg.set_for("log_level", "debug", Duration::from_secs(2)).await.unwrap();
    let Some(Provenance::Override { expires: Some(expires), .. }) = snap.source("log_level") else { panic!("{:?}", snap.source("log_level")) };
    server.pause();
    tokio::time::sleep(expires.duration_since(SystemTime::now()).unwrap_or_default()).await;
    eventually("the expired override dropped while the server is frozen", Duration::from_secs(2), || cfg.get().log_level == "warn").await;
    let status = cfg.status();
    assert!(status.overrides.is_empty(), "{:?}", status.overrides);
    assert!(status.stale.is_some(), "the frozen server is reported: {status:?}");
    assert!(matches!(cfg.get().source("log_level"), Some(Provenance::Bucket { .. })), "{:?}", cfg.get().source("log_level"));
    // Frozen for longer than three of the watch's 1 s heartbeats: its consumer is given up and
    // re-made after the thaw, possibly after the server's expiry marker (kept 1 s here) is gone.
    tokio::time::sleep(Duration::from_secs(4)).await;
    server.resume();
    eventually("current again", Duration::from_secs(10), || cfg.status().is_current()).await;
    assert_eq!(cfg.get().log_level, "warn");
    assert!(cfg.status().overrides.is_empty());
    let t = std::time::Instant::now();
    let snap = cfg.set_for("log_level", "info", Duration::from_secs(30)).await.expect("set_for after the thaw");
    assert_eq!(snap.log_level, "info");
    println!("figure: set_for after the thaw took {:?}", t.elapsed());
}

/// `set_for` of an overridden key right after the bucket was deleted and created again by
/// another client, before the handle could know (no announcements, probes held back): the new
/// bucket holds the override key at the very revision the handle expects, so the server takes
/// the write (an atomic batch with the guard key, also at the revision expected). The caller
/// must not hear `Ok` (the write went to a bucket the handle does not
/// watch yet), no reader may see the new value over the old bucket's state, and once the handle
/// reads the new bucket the write is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_for_taken_by_a_bucket_replaced_unseen_is_never_confirmed_nor_shown() {
    let (_server, store) = server().await;
    let gate = Gate::default();
    let (cfg, bucket_config) = gated_handle(&store, &gate, Some(Duration::from_secs(2))).await;
    cfg.update(|c| c.workers = 3).await.unwrap();
    let snap = cfg.set_for("log_level", "debug", Duration::from_secs(60)).await.unwrap();
    let Some(Provenance::Override { revision, .. }) = snap.source("log_level") else { panic!("{:?}", snap.source("log_level")) };
    gate.0.store(true, Ordering::SeqCst);
    store.delete_bucket("cfg").await.unwrap();
    let new = store.create_bucket(&bucket_config).await.unwrap();
    // The new bucket's override key at the revision the handle holds for the old one's.
    for _ in 1..revision {
        new.put("workers", "5".into()).await.unwrap();
    }
    assert_eq!(new.put("__kvconfig.override.log_level", "\"warn\"".into()).await.unwrap(), revision);
    // `Cfg` has a struct check: its writes are batches with the guard key, last written by the
    // set_for above right after the override (the batch's commit).
    assert_eq!(new.put("__kvconfig.guard", "0".into()).await.unwrap(), revision + 1);
    let t = std::time::Instant::now();
    let result = cfg.set_for("log_level", "info", Duration::from_secs(60)).await;
    let took = t.elapsed();
    let seen = (cfg.get().log_level.clone(), cfg.get().workers);
    let held = new.get("__kvconfig.override.log_level").await.unwrap();
    gate.0.store(false, Ordering::SeqCst);
    match &result {
        Ok(s) => panic!("Ok for a write into a bucket the handle does not watch: log_level {} workers {}", s.log_level, s.workers),
        Err(e) => {
            assert!(e.to_string().contains("`cfg`"), "names the bucket: {e}");
            if held.as_deref() == Some(&b"\"info\""[..]) {
                assert!(matches!(e, Error::NotObserved { .. } | Error::NotInEffect { .. }), "written, so never \"nothing written\": {e}");
            }
        }
    }
    assert_eq!(seen, ("debug".to_string(), 3), "readers kept the old bucket's state");
    assert!(took < Duration::from_secs(5), "bounded by the write timeout: {took:?}");
    assert_eq!(held.as_deref(), Some(&b"\"info\""[..]), "the server took the write (the case probed)");
    eventually("the new bucket read", Duration::from_secs(10), || cfg.status().reloads >= 1 && cfg.get().workers == 5 && cfg.status().is_healthy()).await;
    let expected = if held.as_deref() == Some(&b"\"info\""[..]) { "info" } else { "warn" };
    assert_eq!(cfg.get().log_level, expected, "the new bucket's override");
    println!("figure: set_for into a bucket replaced unseen: {:?} after {took:?}", result.map(|_| ()).map_err(|e| e.to_string()));
}
