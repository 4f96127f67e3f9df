//! Faults and bad input against real nats-server processes: every test names the defect or fault
//! it guards against (issue 8) and waits on conditions with deadlines derived from the fault.

use futures_util::StreamExt;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kv_config::store::{
    Bucket, BucketConfig, Entry, NatsStore, Probe, Store, StoreErrorKind, Watch, WatchStart, WriteOp,
};
use kv_config::{Error, KvConfig, LiveConfig, StaleReason};
use kv_config_testing::{eventually, NatsServer};

mod common;
use common::{delete_consumers, Hooks, Tapped};
use serde::{Deserialize, Serialize};

static SECOND_LOOK: AtomicU32 = AtomicU32::new(0);

/// Accepts `workers = 13` the first time it is asked after a reset and refuses it after that: a
/// validator whose answer changes between the write's own check and the watcher's (e.g. it
/// consults something outside the config). The watcher may ask more than once per change.
fn workers_ok(v: &u32) -> Result<(), String> {
    if *v == 13 && SECOND_LOOK.fetch_add(1, Ordering::SeqCst) >= 1 {
        return Err("13 workers refused on second look".into());
    }
    if *v > 64 {
        return Err(format!("{v} workers is above 64"));
    }
    Ok(())
}

fn probe_ok(v: &u32) -> Result<(), String> {
    assert!(*v != 666, "validator bug: cannot handle 666");
    Ok(())
}

fn token_ok(v: &String) -> Result<(), String> {
    if v.len() < 8 {
        Err(format!("token `{v}` is shorter than 8"))
    } else {
        Ok(())
    }
}

fn limits_ok(c: &Cfg) -> Result<(), String> {
    if c.min > c.max {
        Err(format!("min {} > max {} (token {})", c.min, c.max, c.token))
    } else {
        Ok(())
    }
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
#[kv(validate = limits_ok)]
struct Cfg {
    #[kv(default = 10)]
    min: u32,
    #[kv(default = 50)]
    max: u32,
    #[kv(default = 6, validate = workers_ok)]
    workers: u32,
    #[kv(secret, default = "initial-token", validate = token_ok)]
    token: String,
    #[kv(default, validate = probe_ok)]
    probe: u32,
}

async fn server() -> (NatsServer, NatsStore) {
    let server = NatsServer::start().await;
    let store = NatsStore::new(async_nats::connect(server.url()).await.expect("connect"));
    (server, store)
}

async fn raw(server: &NatsServer) -> Arc<dyn Bucket> {
    let store = NatsStore::new(async_nats::connect(server.url()).await.expect("connect"));
    store.open_bucket("cfg").await.expect("open")
}

fn builder(store: &NatsStore) -> kv_config::Builder<Cfg> {
    LiveConfig::<Cfg>::builder(store.clone(), "cfg").create_if_missing().heartbeat(Duration::from_millis(250))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d1_concurrent_updates_never_commit_a_state_the_validators_refuse() {
    let (server, store) = server().await;
    let a = builder(&store).start().await.unwrap();
    let b = LiveConfig::<Cfg>::builder(NatsStore::new(async_nats::connect(server.url()).await.unwrap()), "cfg").start().await.unwrap();
    for round in 0..20 {
        a.update(|c| {
            c.min = 10;
            c.max = 50;
        })
        .await
        .unwrap();
        let rev = a.get().revision();
        eventually("b caught up", Duration::from_secs(5), || b.get().revision() >= rev).await;
        let (ra, rb) = tokio::join!(a.update(|c| c.min = 40), b.update(|c| c.max = 30));
        let refused = |r: &kv_config::Result<_>| matches!(r, Err(Error::Decode(_)));
        assert!(ra.is_ok() != rb.is_ok(), "round {round}: exactly one wins, the other is refused: {:?} / {:?}", ra.err(), rb.err());
        assert!(refused(&ra) || refused(&rb), "round {round}: the loser saw the winner's value and its own check refused it");
        let loaded = kv_config::load::<Cfg>(&*raw(&server).await, "").await.expect("the bucket holds a valid config");
        assert!(loaded.config.min <= loaded.config.max, "round {round}");
    }
    assert!(a.status().is_healthy() && b.status().is_healthy(), "{:?}", b.status());
    builder(&store).start().await.expect("a new handle starts");
}

#[tokio::test]
async fn d2_update_is_ok_only_when_its_write_is_in_effect() {
    let (_server, store) = server().await;
    let cfg = builder(&store).start().await.unwrap();
    SECOND_LOOK.store(0, Ordering::SeqCst);
    // The write passes its own check, then the watcher's decode refuses the state it makes.
    let err = cfg.update(|c| c.workers = 13).await.unwrap_err();
    assert!(matches!(&err, Error::NotInEffect { key, .. } if key == "workers"), "{err}");
    assert!(err.to_string().contains("13 workers refused"), "{err}");
    assert_eq!(cfg.get().workers, 6, "the last good value stays in effect");
    cfg.update(|c| c.workers = 7).await.expect("a valid write repairs it");
    assert_eq!(cfg.get().workers, 7);
}

#[tokio::test]
async fn d3_a_write_that_keeps_a_field_repairs_its_refused_value() {
    let (server, store) = server().await;
    let cfg = builder(&store).start().await.unwrap();
    let foreign = raw(&server).await;
    foreign.put("workers", "\"lots\"".into()).await.unwrap();
    eventually("refusal reported", Duration::from_secs(5), || !cfg.status().rejected.is_empty()).await;
    assert_eq!(cfg.get().workers, 6, "last good value kept");
    cfg.set("workers", 6).await.expect("set to the value in effect");
    assert_eq!(foreign.get("workers").await.unwrap().unwrap(), "6", "the bucket holds what the caller asked for");
    assert!(cfg.status().rejected.is_empty(), "{:?}", cfg.status().rejected);
    // The same through an update that leaves the field alone, and across fields.
    foreign.put("workers", "\"lots\"".into()).await.unwrap();
    let rev = foreign.put("min", "99".into()).await.unwrap();
    eventually("both refused", Duration::from_secs(5), || cfg.status().seen_revision >= rev && !cfg.status().rejected.is_empty()).await;
    cfg.update(|c| c.probe = 1).await.expect("update");
    assert_eq!(foreign.get("workers").await.unwrap().unwrap(), "6");
    assert_eq!(foreign.get("min").await.unwrap().unwrap(), "10");
    builder(&store).start().await.expect("a new handle starts from the repaired bucket");
}

#[tokio::test]
async fn d4_a_batch_spanning_prefixes_never_stalls_a_handle() {
    let (server, store) = server().await;
    let cfg = builder(&store).prefix("a.").start().await.unwrap();
    let foreign = raw(&server).await;
    // The commit message lies outside the handle's prefix.
    foreign.write_atomic(vec![WriteOp::put("a.min", "20".into()), WriteOp::put("b.other", "1".into())]).await.unwrap();
    eventually("the handle applies its half", Duration::from_secs(2), || cfg.get().min == 20).await;
    // And a fresh start over that state loads instead of waiting for a commit it cannot see.
    let started = builder(&store).prefix("a.").load_timeout(Duration::from_secs(5)).start().await.expect("start");
    assert_eq!(started.get().min, 20);
    let loaded = kv_config::load::<Cfg>(&*foreign, "a.").await.expect("load");
    assert_eq!(loaded.config.min, 20);
}

#[tokio::test]
async fn d5_a_deleted_then_recreated_bucket_is_reported_then_reloaded() {
    let (_server, store) = server().await;
    let cfg = builder(&store).start().await.unwrap();
    cfg.update(|c| c.workers = 9).await.unwrap();
    store.delete_bucket("cfg").await.unwrap();
    let noticed = eventually("missing bucket reported", Duration::from_secs(3), || {
        cfg.status().stale.is_some_and(|s| s.reason == StaleReason::BucketMissing)
    })
    .await;
    assert!(!cfg.status().is_healthy());
    assert_eq!(cfg.get().workers, 9, "the last good snapshot stays");
    let started = Instant::now();
    let err = cfg.update(|c| c.workers = 10).await.unwrap_err();
    assert!(matches!(&err, Error::Store(e) if *e.kind() == StoreErrorKind::NotFound), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "a write to a deleted bucket fails at once, took {:?}", started.elapsed());
    let err = cfg.update(|c| c.workers = 9).await.unwrap_err();
    assert!(matches!(&err, Error::Stale { reason: StaleReason::BucketMissing, .. }), "a no-op cannot claim success: {err}");
    // Re-created with other values: its revisions start again at 1, and the handle reloads.
    let bucket = store.create_bucket(&BucketConfig::new("cfg")).await.unwrap();
    bucket.put("workers", "3".into()).await.unwrap();
    let reloaded = eventually("reloaded from the new bucket", Duration::from_secs(3), || cfg.get().workers == 3).await;
    let status = cfg.status();
    assert!(status.is_healthy() && status.reloads == 1, "{status:?}");
    cfg.update(|c| c.workers = 4).await.expect("writes work on the new bucket");
    eprintln!("figure: deleted bucket reported after {noticed:?}; re-created bucket reloaded after {reloaded:?}");
}

/// Another client deletes the bucket and creates it again, with more entries than the old one's
/// last revision, faster than the handle's heartbeat. Defect (found by a probe): the watch made a
/// new consumer in the new bucket from the old one's last revision + 1, skipping the new bucket's
/// first entries and laying the rest over the old state, a config neither bucket held, while the
/// status said healthy. Now a watch goes on only in the incarnation it began in: the handle keeps
/// the old snapshot until it reloads the new bucket whole.
async fn replaced_faster_than_the_heartbeat(dedicated: bool) {
    let (server, store) = server().await;
    let admin = NatsStore::new(async_nats::connect(server.url()).await.expect("connect"));
    let old = admin.create_bucket(&BucketConfig::new("cfg").history(5)).await.unwrap();
    for i in 1..=5u32 {
        old.put("a", i.to_string().into()).await.unwrap();
    }
    old.put("b", "100".into()).await.unwrap(); // revision 6
    let heartbeat = Duration::from_secs(8);
    let builder = LiveConfig::<Trio>::builder(store.clone(), "cfg").heartbeat(heartbeat);
    let cfg = if dedicated { builder.dedicated_watch() } else { builder }.start().await.unwrap();
    assert_eq!((cfg.get().a, cfg.get().b), (5, 100));
    admin.delete_bucket("cfg").await.unwrap();
    let new = admin.create_bucket(&BucketConfig::new("cfg").history(5)).await.unwrap();
    new.put("b", "7".into()).await.unwrap(); // revision 1 of the new bucket
    for i in 50..=60u32 {
        new.put("a", i.to_string().into()).await.unwrap(); // revisions 2-12
    }
    let started = Instant::now();
    // A state of the old bucket, or one the new bucket held as the other client filled it: the
    // handle may read it part-way (the server announces the new bucket's creation), never a mix.
    let held = |a: u32, b: u32| (a, b) == (5, 100) || (a, b) == (0, 0) || (b == 7 && (a == 0 || (50..=60).contains(&a)));
    loop {
        let (a, b) = (cfg.get().a, cfg.get().b);
        assert!(held(a, b), "a state neither bucket held: a = {a}, b = {b}, {:?}", cfg.status());
        if (a, b) == (60, 7) {
            break;
        }
        // Within a heartbeat: the server announces the deletion and the creation; without
        // announcements, the watch's consumer, gone with the old bucket, is missed after three
        // of its idle heartbeats (1 s each). Either way the new incarnation is reloaded.
        assert!(started.elapsed() < heartbeat, "the new bucket was not loaded within a heartbeat: {:?}", cfg.status());
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let status = cfg.status();
    assert!(status.is_healthy() && status.reloads == 1, "{status:?}");
    eprintln!("figure: replaced bucket reloaded after {:?} (dedicated watch: {dedicated})", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d5_a_bucket_replaced_faster_than_the_heartbeat_is_reloaded_never_mixed() {
    replaced_faster_than_the_heartbeat(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d5_a_bucket_replaced_faster_than_the_heartbeat_is_reloaded_never_mixed_dedicated_watch() {
    replaced_faster_than_the_heartbeat(true).await;
}

#[tokio::test]
async fn d5_a_server_restarted_with_a_wiped_store_is_reported_then_reloaded() {
    let (mut server, store) = server().await;
    let cfg = builder(&store).start().await.unwrap();
    cfg.update(|c| c.workers = 9).await.unwrap();
    server.restart_wiped().await;
    let noticed = eventually("missing bucket reported", Duration::from_secs(5), || {
        cfg.status().stale.is_some_and(|s| s.reason == StaleReason::BucketMissing)
    })
    .await;
    assert_eq!(cfg.get().workers, 9, "the last good snapshot stays");
    let bucket = store.create_bucket(&BucketConfig::new("cfg")).await.unwrap();
    bucket.put("workers", "2".into()).await.unwrap();
    eventually("reloaded", Duration::from_secs(3), || cfg.get().workers == 2 && cfg.status().is_healthy()).await;
    eprintln!("figure: wiped store reported after {noticed:?}");
}

#[tokio::test]
async fn d6_a_panicking_validator_is_a_refusal_and_the_watcher_keeps_going() {
    let (server, store) = server().await;
    let cfg = builder(&store).start().await.unwrap();
    let foreign = raw(&server).await;
    foreign.put("probe", "666".into()).await.unwrap();
    eventually("refusal reported", Duration::from_secs(5), || !cfg.status().rejected.is_empty()).await;
    let status = cfg.status();
    assert!(status.rejected[0].to_string().contains("panicked"), "{status:?}");
    assert_eq!(cfg.get().probe, 0);
    foreign.put("workers", "8".into()).await.unwrap();
    eventually("later changes still apply", Duration::from_secs(5), || cfg.get().workers == 8).await;
    let err = cfg.update(|c| c.probe = 666).await.unwrap_err();
    assert!(matches!(err, Error::Decode(_)), "refused before sending: {err}");
    assert!(builder(&store).start().await.is_err(), "a start over a refused required state fails cleanly, no panic");
}

#[tokio::test]
async fn d7_secret_values_never_appear_in_errors_status_or_debug() {
    let (server, store) = server().await;
    let cfg = builder(&store).start().await.unwrap();
    let err = cfg.set("token", "short").await.unwrap_err().to_string();
    assert!(!err.contains("short"), "{err}");
    cfg.set("token", "long-enough-secret").await.unwrap();
    assert!(!format!("{:?}", cfg.get()).contains("long-enough-secret"));
    let foreign = raw(&server).await;
    foreign.put("token", "\"tiny\"".into()).await.unwrap();
    eventually("refusal reported", Duration::from_secs(5), || !cfg.status().rejected.is_empty()).await;
    let status = format!("{:?}", cfg.status());
    assert!(!status.contains("tiny"), "{status}");
    // A struct-level message that quotes the secret is scrubbed too.
    foreign.put("token", "\"another-long-secret\"".into()).await.unwrap();
    foreign.put("min", "99".into()).await.unwrap();
    eventually("struct refusal", Duration::from_secs(5), || cfg.status().last_error.is_some_and(|e| e.contains("min 99"))).await;
    let status = format!("{:?}", cfg.status());
    assert!(!status.contains("another-long-secret") && status.contains("<redacted>"), "{status}");
}

#[tokio::test]
async fn refused_values_are_bounded_in_errors_and_status() {
    let (server, store) = server().await;
    let cfg = builder(&store).start().await.unwrap();
    let huge = format!("\"{}\"", "x".repeat(512 * 1024));
    raw(&server).await.put("min", huge.into()).await.unwrap();
    eventually("refusal reported", Duration::from_secs(5), || !cfg.status().rejected.is_empty()).await;
    let status = cfg.status();
    let shown = status.last_error.clone().unwrap_or_default();
    assert!(shown.len() < 1024 && shown.contains("bytes in all"), "{} bytes: {}", shown.len(), &shown[..shown.len().min(300)]);
    assert_eq!(cfg.get().min, 10);
}

#[tokio::test]
async fn bad_bucket_names_and_missing_buckets_say_why() {
    let (_server, store) = server().await;
    let long = "b".repeat(300);
    let err = LiveConfig::<Cfg>::builder(store.clone(), long).start().await.unwrap_err();
    assert!(matches!(&err, Error::Store(e) if *e.kind() == StoreErrorKind::InvalidBucketName), "{err}");
    assert!(err.to_string().contains("300 characters"), "{err}");
    let err = LiveConfig::<Cfg>::builder(store.clone(), "nope").start().await.unwrap_err();
    assert!(matches!(&err, Error::Store(e) if *e.kind() == StoreErrorKind::NotFound), "{err}");
    assert!(err.to_string().contains("`nope`"), "{err}");
}

#[tokio::test]
async fn a_frozen_server_is_reported_stale_then_recovers() {
    let (mut server, store) = server().await;
    let heartbeat = Duration::from_millis(250);
    let cfg = builder(&store).start().await.unwrap();
    let writer = raw(&server).await;
    cfg.update(|c| c.workers = 9).await.unwrap();
    eventually("current", heartbeat * 8, || cfg.status().is_current()).await;
    server.pause();
    // Detection takes a quiet heartbeat plus a probe timeout of one heartbeat; allow 4 on a busy machine.
    let noticed = eventually("staleness reported", heartbeat * 4 + Duration::from_millis(500), || {
        cfg.status().stale.is_some_and(|s| s.reason == StaleReason::NoResponse)
    })
    .await;
    assert!(cfg.status().connected, "the socket is still open: `connected` alone would lie");
    assert_eq!(cfg.get().workers, 9, "the last good snapshot stays");
    tokio::time::sleep(Duration::from_secs(10) - noticed).await; // the rest of a 10 s freeze
    server.resume();
    writer.put("workers", "11".into()).await.expect("the server answers again");
    let recovered = eventually("recovered", Duration::from_secs(5), || cfg.get().workers == 11 && cfg.status().is_current()).await;
    eprintln!("figure: frozen server reported stale after {noticed:?} (heartbeat {heartbeat:?}); converged {recovered:?} after SIGCONT + write");
}

/// A server frozen (SIGSTOP) while handles start: a first start (which opens the bucket and
/// starts its watch in one round trip), a dedicated start and a start that joins a running shared
/// watch each fail within their load timeout with a timeout naming the bucket, and leave nothing
/// behind: once the server is back, the same store starts handles that read the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_against_a_frozen_server_fails_in_bounded_time_and_leaves_nothing_behind() {
    let (mut server, store) = server().await;
    drop(builder(&store).start().await.expect("create the bucket"));
    raw(&server).await.put("workers", "5".into()).await.expect("put");
    let load_timeout = Duration::from_millis(500);
    let starts = |store: NatsStore, dedicated: bool| async move {
        let b = builder(&store).load_timeout(load_timeout);
        let b = if dedicated { b.dedicated_watch() } else { b };
        let t = Instant::now();
        (b.start().await, t.elapsed())
    };
    let timed_out = |what: &str, (result, took): (kv_config::Result<LiveConfig<Cfg>>, Duration)| {
        let err = result.expect_err(what);
        assert!(matches!(&err, Error::Store(e) if *e.kind() == StoreErrorKind::Timeout), "{what}: {err}");
        assert!(err.to_string().contains("`cfg`"), "{what}: {err}");
        // The load timeout, plus scheduling slack on a busy machine; never a hang.
        assert!(took < load_timeout * 6, "{what}: took {took:?}");
    };
    // A store that has never opened the bucket: the first start opens it.
    let fresh = NatsStore::new(async_nats::connect(server.url()).await.expect("connect"));
    server.pause();
    timed_out("first start", starts(fresh.clone(), false).await);
    timed_out("dedicated start", starts(fresh.clone(), true).await);
    server.resume();
    let first = starts(fresh.clone(), false).await.0.expect("a start once the server is back");
    assert_eq!(first.get().workers, 5);
    // A start that joins the running shared watch asks the server for the bucket's last revision.
    server.pause();
    timed_out("join", starts(fresh.clone(), false).await);
    server.resume();
    raw(&server).await.put("workers", "6".into()).await.expect("put");
    let joined = starts(fresh, false).await.0.expect("a join once the server is back");
    assert_eq!(joined.get().workers, 6, "the join read the write made after the freeze");
    eventually("the first handle converges", Duration::from_secs(5), || first.get().workers == 6 && first.status().is_current()).await;
}

#[tokio::test]
async fn a_killed_and_restarted_server_is_reported_and_converges() {
    let (mut server, store) = server().await;
    let cfg = builder(&store).start().await.unwrap();
    cfg.update(|c| c.workers = 9).await.unwrap();
    server.kill();
    eventually("staleness reported", Duration::from_secs(2), || !cfg.status().is_current()).await;
    server.restart().await;
    let writer = raw(&server).await;
    let restarted = Instant::now();
    writer.put("workers", "12".into()).await.unwrap();
    // async-nats reconnects with a backoff of up to 4 s between attempts.
    eventually("converged", Duration::from_secs(6), || cfg.get().workers == 12).await;
    eventually("current again", Duration::from_secs(3), || cfg.status().is_current()).await;
    eprintln!("figure: converged {:?} after restart", restarted.elapsed());
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Counter {
    #[kv(default)]
    n: u64,
}

fn bounded(c: &Guarded) -> Result<(), String> {
    if c.n > 1_000_000 {
        Err("too many".into())
    } else {
        Ok(())
    }
}

/// The same counter with a cross-field check: every write is a batch with the guard key.
#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
#[kv(validate = bounded)]
struct Guarded {
    #[kv(default)]
    n: u64,
}

trait Count: KvConfig {
    fn bump(&mut self);
    fn count(&self) -> u64;
}

impl Count for Counter {
    fn bump(&mut self) {
        self.n += 1;
    }
    fn count(&self) -> u64 {
        self.n
    }
}

impl Count for Guarded {
    fn bump(&mut self) {
        self.n += 1;
    }
    fn count(&self) -> u64 {
        self.n
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_writers_hundred_increments_each_lose_nothing_with_default_settings() {
    increments::<Counter>(BucketConfig::new("cfg").history(10), 100).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn guarded_increments_on_a_history_1_bucket_lose_nothing_and_apply_once() {
    increments::<Guarded>(BucketConfig::new("cfg"), 25).await;
}

async fn increments<C: Count>(bucket: BucketConfig, each: u64) {
    let (server, store) = server().await;
    LiveConfig::<C>::builder(store, "cfg").create_with(bucket).start().await.unwrap();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let store = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
        let cfg = LiveConfig::<C>::builder(store, "cfg").start().await.unwrap();
        writers.push(tokio::spawn(async move {
            let mut errors = Vec::new();
            for _ in 0..each {
                if let Err(e) = cfg.update(C::bump).await {
                    errors.push(e.to_string());
                }
            }
            (errors, cfg.status().conflicts)
        }));
    }
    let mut conflicts = 0;
    for w in writers {
        let (errors, c) = w.await.unwrap();
        assert!(errors.is_empty(), "{} failed updates, first: {}", errors.len(), errors[0]);
        conflicts += c;
    }
    let loaded = kv_config::load::<C>(&*raw(&server).await, "").await.unwrap();
    assert_eq!(loaded.config.count(), 8 * each, "every increment counted exactly once");
    eprintln!("figure: 8 x {each} increments of `{}`, 0 errors, {conflicts} conflicts retried", std::any::type_name::<C>());
}

#[tokio::test]
async fn oversize_values_are_refused_with_the_key_and_nothing_changes() {
    let (_server, store) = server().await;
    let config = BucketConfig::new("cfg").history(5).max_value_size(1024);
    let cfg = LiveConfig::<Cfg>::builder(store, "cfg").create_with(config).start().await.unwrap();
    let big = "t".repeat(4096);
    let err = cfg.set("token", big.as_str()).await.unwrap_err();
    assert!(matches!(&err, Error::Store(e) if *e.kind() == StoreErrorKind::ValueTooLarge), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("`cfg`") && msg.contains("`token`") && !msg.contains(&big[..64]), "{msg}");
    assert!(cfg.status().is_healthy());
}

#[tokio::test]
async fn a_handle_without_permission_on_its_prefix_is_told_at_once() {
    let server = NatsServer::start_with_config(&kv_config_testing::two_users_config(&["$KV.cfg.prod.>"])).await;
    let admin = async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin".into());
    let admin = NatsStore::connect(server.url(), admin).await.unwrap();
    LiveConfig::<Cfg>::builder(admin, "cfg").prefix("prod.").create_if_missing().start().await.unwrap();
    let dev = async_nats::ConnectOptions::with_user_and_password("dev".into(), "dev".into());
    let dev = NatsStore::connect(server.url(), dev).await.unwrap();
    let cfg = LiveConfig::<Cfg>::builder(dev, "cfg").prefix("prod.").start().await.expect("reading is allowed");
    let started = Instant::now();
    let err = cfg.update(|c| c.workers = 7).await.unwrap_err();
    assert!(matches!(&err, Error::Store(e) if *e.kind() == StoreErrorKind::PermissionDenied), "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "told after {:?}", started.elapsed());
    assert!(err.to_string().contains("`prod.workers`"), "{err}");
    assert_eq!(cfg.get().workers, 6);
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Required {
    name: String,
    #[kv(default)]
    workers: u32,
}

#[tokio::test]
async fn d5_after_a_reload_the_next_write_restores_required_keys_the_new_bucket_lacks() {
    let (_server, store) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("req").history(5)).await.unwrap();
    bucket.put("name", "\"api\"".into()).await.unwrap();
    let cfg = LiveConfig::<Required>::builder(store.clone(), "req").heartbeat(Duration::from_millis(250)).start().await.unwrap();
    store.delete_bucket("req").await.unwrap();
    eventually("missing reported", Duration::from_secs(3), || cfg.status().stale.is_some()).await;
    let bucket = store.create_bucket(&BucketConfig::new("req").history(5)).await.unwrap();
    bucket.put("workers", "5".into()).await.unwrap();
    eventually("reloaded", Duration::from_secs(3), || cfg.get().workers == 5).await;
    assert_eq!(cfg.get().name, "api", "the required key the new bucket lacks keeps its last good value");
    assert!(!cfg.status().rejected.is_empty(), "and the gap is reported");
    cfg.update(|c| c.workers = 6).await.expect("update");
    assert_eq!(bucket.get("name").await.unwrap().unwrap(), "\"api\"", "written back with the update");
    LiveConfig::<Required>::builder(store, "req").start().await.expect("a new handle starts");
}

/// Three keys always written together in one atomic batch. No validator ties them, so half of a
/// batch would show as data rather than be refused.
#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Trio {
    #[kv(default)]
    a: u32,
    #[kv(default)]
    b: u32,
    #[kv(default)]
    c: u32,
}

/// Watches that deliver every entry of an atomic batch but the last with a pending count of 0,
/// and pause `gap` after it; for the first `hide` of each pause the bucket handle's probes say
/// the server holds nothing after that entry. That is what a watcher sees when the server stores
/// a batch's messages one by one and is descheduled between them (a loaded machine). The rest
/// (writes, probes otherwise) is the real server's.
#[derive(Debug, Clone)]
struct SlowBatches {
    gap: Duration,
    hide: Duration,
    /// Probes that answered "not stored yet".
    hidden: Arc<AtomicU32>,
}

impl SlowBatches {
    fn store(store: &NatsStore, gap: Duration, hide: Duration) -> Tapped<SlowBatches> {
        Tapped::new(store, SlowBatches { gap, hide, hidden: Arc::default() })
    }
}

/// Per bucket handle: the batch entry a watch paused after, and until when probes say nothing
/// follows it.
type Pausing = Arc<std::sync::Mutex<Option<(u64, Instant)>>>;

impl Hooks for SlowBatches {
    type PerBucket = Pausing;
    const SHARED_WATCHES: bool = true;

    fn watch(&self, pausing: &Pausing, inner: Watch) -> Watch {
        let initial = inner.initial_pending();
        let (gap, hide, pausing) = (self.gap, self.hide, pausing.clone());
        let mut pause = false;
        let slowed = inner.then(move |item| {
            let wait = std::mem::replace(&mut pause, matches!(&item, Ok(e) if e.batch_continues));
            let pausing = pausing.clone();
            async move {
                if wait {
                    tokio::time::sleep(gap).await;
                }
                item.map(|mut e| {
                    if e.batch_continues {
                        e.delta = 0;
                        *pausing.lock().unwrap() = Some((e.revision, Instant::now() + hide));
                    }
                    e
                })
            }
        });
        Watch::new(initial, slowed)
    }

    fn probe(&self, pausing: &Pausing, mut probe: Probe) -> Probe {
        let pausing = *pausing.lock().unwrap();
        if let Some((revision, until)) = pausing {
            if Instant::now() < until && probe.last_revision > revision {
                probe.last_revision = revision;
                probe.next = probe.next.filter(|n| *n <= revision);
                self.hidden.fetch_add(1, Ordering::Relaxed);
            }
        }
        probe
    }
}

/// `t.a`, `t.b` and `t.c` set to `i` in one batch; with `outside`, the commit is a key outside the
/// prefix `t.`, so a watch of `t.` sees the batch end at `t.c` without its commit.
fn trio_batch(i: u32, outside: bool) -> Vec<WriteOp> {
    let v = bytes::Bytes::from(i.to_string());
    let mut ops: Vec<_> = ["t.a", "t.b", "t.c"].iter().map(|k| WriteOp::put(*k, v.clone())).collect();
    if outside {
        ops.push(WriteOp::put("u.other", v));
    }
    ops
}

/// Reads `handle` every millisecond until `stop`, and returns the first snapshot that holds half
/// of a batch.
fn half_batches(handle: LiveConfig<Trio>, stop: Arc<std::sync::atomic::AtomicBool>) -> tokio::task::JoinHandle<Option<Trio>> {
    tokio::spawn(async move {
        while !stop.load(Ordering::Relaxed) {
            let t = handle.get();
            if t.a != t.b || t.b != t.c {
                return Some(Trio::clone(&t));
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        None
    })
}

/// Defect: a watcher took an atomic batch as complete once nothing more arrived within 50 ms
/// after the pending count read 0 in its middle. On a loaded machine the server can store a
/// batch that slowly: the handle swapped in half of it, and a handle joining the shared watch
/// then started from half of it. Now the watcher asks the server whether the rest is stored, in
/// flight, or outside its keys, and never completes a batch on a timer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d8_a_batch_stored_slowly_never_shows_half_of_it() {
    let (_server, store) = server().await;
    store.create_bucket(&BucketConfig::new("trio").atomic_writes(true)).await.unwrap();
    // Pauses of 150 ms; the first 75 ms of each, the server says the rest is not stored yet.
    let slow = SlowBatches::store(&store, Duration::from_millis(150), Duration::from_millis(75));
    // A heartbeat above the gap: the watch is slow, not stalled.
    let trio = || LiveConfig::<Trio>::builder(slow.clone(), "trio").prefix("t.").heartbeat(Duration::from_secs(1));
    let shared = trio().start().await.unwrap();
    let dedicated = trio().dedicated_watch().start().await.unwrap();
    let writer = store.open_bucket("trio").await.unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let observers = [half_batches(shared.clone(), stop.clone()), half_batches(dedicated.clone(), stop.clone())];
    for i in 1..=4u32 {
        writer.write_atomic(trio_batch(i, i == 4)).await.unwrap();
        // Joins the shared watch while it delivers the batch, or loads afresh through the slow
        // watch when the hub is too far behind: either way, all of the batch or none of it.
        let joined = trio().start().await.expect("start");
        let t = joined.get();
        assert!(t.a == t.b && t.b == t.c, "a handle started with half of batch {i}: {:?}", *t);
        let dedicated_start = trio().dedicated_watch().start().await.expect("start");
        let t = dedicated_start.get();
        assert!(t.a == t.b && t.b == t.c, "a dedicated start loaded half of batch {i}: {:?}", *t);
        for h in [&shared, &dedicated, &joined] {
            eventually("the batch in effect", Duration::from_secs(5), || h.get().c == i).await;
        }
    }
    stop.store(true, Ordering::Relaxed);
    for o in observers {
        assert_eq!(o.await.unwrap(), None, "a handle showed half of a batch");
    }
    assert!(shared.status().is_healthy() && dedicated.status().is_healthy(), "{:?}", shared.status());
    assert!(slow.hooks.hidden.load(Ordering::Relaxed) > 0, "the watchers asked while a batch was not stored yet");
}

/// A batch whose rest the server has not stored for longer than a heartbeat: the handle says so
/// (`BatchIncomplete`) and keeps the state before the batch, then applies all of it once the
/// rest is stored and delivered, and is healthy again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn d8_a_batch_partly_stored_for_over_a_heartbeat_is_reported_and_held_back() {
    let (_server, store) = server().await;
    store.create_bucket(&BucketConfig::new("trio").atomic_writes(true)).await.unwrap();
    // The rest of each batch is "not stored" for 900 ms, then delivered 100 ms later.
    let slow = SlowBatches::store(&store, Duration::from_millis(1000), Duration::from_millis(900));
    let heartbeat = Duration::from_millis(250);
    let handle = LiveConfig::<Trio>::builder(slow.clone(), "trio").prefix("t.").heartbeat(heartbeat).start().await.unwrap();
    let writer = store.open_bucket("trio").await.unwrap();
    writer.write_atomic(trio_batch(1, false)).await.unwrap();
    let noticed = eventually("the partly stored batch reported", Duration::from_secs(2), || {
        handle.status().stale.is_some_and(|s| s.reason == StaleReason::BatchIncomplete)
    })
    .await;
    let t = handle.get();
    assert_eq!((t.a, t.b, t.c), (0, 0, 0), "the state before the batch, not half of it");
    assert!(handle.status().last_error.as_deref().is_some_and(|e| e.contains("partly stored")), "{:?}", handle.status());
    eventually("all of the batch in effect", Duration::from_secs(5), || handle.get().c == 1).await;
    let t = handle.get();
    assert_eq!((t.a, t.b, t.c), (1, 1, 1));
    eventually("healthy again", Duration::from_secs(3), || handle.status().is_healthy()).await;
    eprintln!("figure: a batch partly stored reported after {noticed:?} (heartbeat {heartbeat:?})");
}

/// The watch's consumer deleted on the server by another client. The server tells a push
/// consumer's subscriber nothing; the watch hears no heartbeat for three of them (3 s), ends, and
/// a new one starts where it stopped, long before the handle's quiet-time probe (a heartbeat of
/// 30 s here) would ask. No change is lost: the one written while no consumer existed arrives.
#[tokio::test]
async fn a_watch_consumer_deleted_by_another_client_is_replaced_at_once() {
    let (server, store) = server().await;
    // The first handle creates the bucket (its watch learns the bucket's incarnation when its
    // first consumer is re-made); the second, on a connection of its own, opens the existing
    // bucket and its watch at once (the incarnation comes from the open).
    let created = builder(&store).heartbeat(Duration::from_secs(30)).start().await.unwrap();
    let other = NatsStore::new(async_nats::connect(server.url()).await.expect("connect"));
    let opened = LiveConfig::<Cfg>::builder(other, "cfg").heartbeat(Duration::from_secs(30)).start().await.unwrap();
    let writer = raw(&server).await;
    writer.put("workers", "7".into()).await.unwrap();
    eventually("the first change", Duration::from_secs(2), || created.get().workers == 7 && opened.get().workers == 7).await;
    assert_eq!(delete_consumers(&server, "cfg").await, 2, "one consumer per handle's watch");
    let deleted = Instant::now();
    writer.put("workers", "8".into()).await.unwrap();
    let took = eventually("a change after the deletion", Duration::from_secs(6), || created.get().workers == 8 && opened.get().workers == 8).await;
    writer.put("workers", "9".into()).await.unwrap();
    for cfg in [&created, &opened] {
        eventually("the next change", Duration::from_secs(2), || cfg.get().workers == 9 && cfg.status().is_current()).await;
        // The watch made a new consumer in the same bucket: no error, and no new watch (a watch
        // that took its own bucket for another would have ended and been made again).
        let status = cfg.status();
        assert!(status.watch_restarts == 0 && status.last_error.is_none() && status.reloads == 0, "{status:?}");
    }
    eprintln!("figure: a change written right after the watch's consumer was deleted arrived {took:?} later ({:?} since the deletion)", deleted.elapsed());
}

/// A server restarted with its store kept: ephemeral consumers do not survive it, so a watch
/// must notice the reconnect itself rather than wait for its quiet-time probe (30 s here) or for
/// three silent heartbeats (about 3 s after the last entry, written right before the kill).
#[tokio::test]
async fn a_watch_notices_a_reconnect_without_waiting_for_its_probe() {
    use async_nats::connection::State;
    let (mut server, store) = server().await;
    let cfg = builder(&store).heartbeat(Duration::from_secs(30)).start().await.unwrap();
    cfg.update(|c| c.workers = 9).await.unwrap();
    server.kill();
    eventually("the client sees the kill", Duration::from_secs(2), || store.client().connection_state() != State::Connected).await;
    server.restart().await;
    eventually("the client reconnects", Duration::from_secs(8), || store.client().connection_state() == State::Connected).await;
    let reconnected = Instant::now();
    raw(&server).await.put("workers", "12".into()).await.unwrap();
    // A check every 250 ms while idle, a new consumer, the write: well under a second even on a
    // loaded machine; three silent heartbeats would end the old consumer only about 2.5 s later.
    let took = eventually("converged", Duration::from_millis(1500), || cfg.get().workers == 12).await;
    eprintln!("figure: converged {took:?} after the write, {:?} after the client reconnected", reconnected.elapsed());
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Many {
    /// One key `n.<i>` per entry.
    n: std::collections::HashMap<String, u64>,
}

/// Deletes the first consumer on `stream` once the server reports it has delivered some entries
/// and still holds some back; `false` if it got past that point first, or once `over` is set.
async fn delete_midway(stream: async_nats::jetstream::stream::Stream, over: Arc<std::sync::atomic::AtomicBool>) -> bool {
    use futures_util::TryStreamExt;
    loop {
        if over.load(Ordering::SeqCst) {
            return false;
        }
        let names: Vec<String> = stream.consumer_names().try_collect().await.expect("consumer names");
        let Some(name) = names.first() else {
            tokio::task::yield_now().await;
            continue;
        };
        let Ok(info) = stream.consumer_info(name).await else { continue };
        if info.delivered.stream_sequence == 0 {
            continue;
        }
        if info.num_pending == 0 {
            return false;
        }
        stream.delete_consumer(name).await.expect("delete");
        return true;
    }
}

/// 20,000 keys `n.<i>` = i, in a bucket of history 5; keys 19,000 to 19,499 written again
/// (i + 1,000,000) after all of them, so their old revisions lie between the others' latest.
async fn many_keys(server: &NatsServer) -> async_nats::jetstream::stream::Stream {
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
    js.create_key_value(async_nats::jetstream::kv::Config { bucket: "many".into(), history: 5, ..Default::default() }).await.expect("bucket");
    let writes = (0..MANY).map(|i| (i, i)).chain(REWRITTEN.map(|i| (i, i + 1_000_000)));
    // Acks awaited a thousand at a time: async-nats holds back publishes past its in-flight limit.
    let mut acks = Vec::new();
    for (i, v) in writes {
        acks.push(js.publish(format!("$KV.many.n.{i}"), v.to_string().into()).await.expect("publish"));
        if acks.len() == 1000 {
            for ack in acks.drain(..) {
                ack.await.expect("ack");
            }
        }
    }
    for ack in acks {
        ack.await.expect("ack");
    }
    js.get_stream("KV_many").await.expect("stream")
}

const MANY: u64 = 20_000;
const REWRITTEN: std::ops::Range<u64> = 19_000..19_500;

fn latest(i: u64) -> u64 {
    if REWRITTEN.contains(&i) {
        i + 1_000_000
    } else {
        i
    }
}

/// Runs `read` (which starts a read of the whole bucket) up to 5 times, with another client
/// deleting its consumer midway, until one deletion lands while the server still held entries
/// back; `check` gets each read's result.
async fn with_consumer_deleted_midway<R, F: std::future::Future<Output = R>>(stream: &async_nats::jetstream::stream::Stream, what: &str, read: impl Fn() -> F, check: impl Fn(R, u32)) {
    use futures_util::TryStreamExt;
    for attempt in 1..=5 {
        let over = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let deleter = tokio::spawn(delete_midway(stream.clone(), over.clone()));
        let t = Instant::now();
        let result = read().await;
        let took = t.elapsed();
        over.store(true, Ordering::SeqCst);
        let midway = tokio::time::timeout(Duration::from_secs(10), deleter).await.expect("the deleter stops").expect("deleter");
        check(result, attempt);
        if midway {
            eprintln!("figure: {what} of {MANY} keys whose consumer was deleted midway took {took:?} (attempt {attempt})");
            return;
        }
        for name in stream.consumer_names().try_collect::<Vec<String>>().await.expect("names") {
            let _ = stream.delete_consumer(&name).await;
        }
    }
    panic!("{what}: in 5 reads the server never had entries left to deliver when the consumer was deleted");
}

/// The consumer of an initial load deleted by another client while the server still had entries
/// to deliver: the load's watch falls silent and makes the pass again with a new consumer,
/// skipping what it delivered. The load returns every key with its latest value (keys written
/// twice included), never a short map and never an older value.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_load_whose_consumer_is_deleted_midway_reads_on_and_misses_nothing() {
    let (server, store) = server().await;
    let stream = many_keys(&server).await;
    let bucket = store.open_bucket("many").await.expect("open");
    let read = || async { kv_config::load::<Many>(&*bucket, "").await.expect("the load reads on after its consumer is deleted") };
    with_consumer_deleted_midway(&stream, "a load", read, |loaded, attempt| {
        assert_eq!(loaded.config.n.len() as u64, MANY, "attempt {attempt}: every key");
        for i in 0..MANY {
            assert_eq!(loaded.config.n.get(&i.to_string()), Some(&latest(i)), "attempt {attempt}: key n.{i}");
        }
    })
    .await;
}

/// The same for a store's watch of every key's latest entry (what `kvc watch` and the live
/// handles read): after the deletion it never delivers a key's older revision (a new consumer
/// from the last delivered revision + 1 would replay the rewritten keys' first values), and it
/// still says when it has caught up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_latest_per_key_watch_whose_consumer_is_deleted_midway_never_replays_old_revisions() {
    let (server, store) = server().await;
    let stream = many_keys(&server).await;
    let bucket = store.open_bucket("many").await.expect("open");
    let read = || async {
        let mut watch = bucket.watch(">", WatchStart::LatestPerKey).await.expect("watch");
        let mut got = Vec::new();
        loop {
            let e = next(&mut watch, Duration::from_secs(15)).await;
            let caught_up = e.delta == 0;
            got.push(e);
            if caught_up {
                return got;
            }
        }
    };
    with_consumer_deleted_midway(&stream, "a watch", read, |got, attempt| {
        let mut keys = std::collections::HashSet::new();
        for e in &got {
            let i: u64 = e.key.strip_prefix("n.").and_then(|i| i.parse().ok()).expect("a key n.<i>");
            assert_eq!(&e.value[..], latest(i).to_string().as_bytes(), "attempt {attempt}: key {} at revision {}", e.key, e.revision);
            keys.insert(i);
        }
        assert_eq!(keys.len() as u64, MANY, "attempt {attempt}: every key");
    })
    .await;
}

/// The next entry of `watch` within `within`: not an end, not an error.
async fn next(watch: &mut Watch, within: Duration) -> Entry {
    tokio::time::timeout(within, watch.next()).await.expect("an entry within the time").expect("the watch goes on").expect("an entry, not an error")
}

/// A store's watch on NATS outlives its consumer: deleted by another client before it delivered
/// anything, deleted again later, then lost with a restarted server. Each time the watch makes a
/// new one that goes on after the last delivered revision (or, before any, after the stream's
/// last entry when it started), so what it delivers next is the next write, exactly once: never
/// a replay, and never a write lost because it was made while no consumer existed.
#[tokio::test]
async fn a_store_watch_outlives_its_consumer_and_a_server_restart() {
    let (mut server, store) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("w")).await.expect("bucket");
    bucket.put("old", "0".into()).await.expect("put");
    let mut watch = bucket.watch(">", WatchStart::New).await.expect("watch");
    assert_eq!(delete_consumers(&server, "w").await, 1);
    bucket.put("a", "1".into()).await.expect("put");
    // Three silent heartbeats (3 s) end the deleted consumer's stream.
    let e = next(&mut watch, Duration::from_secs(6)).await;
    assert_eq!((e.key.as_str(), e.revision, &e.value[..]), ("a", 2, &b"1"[..]), "the write made while no consumer existed");
    assert_eq!(delete_consumers(&server, "w").await, 1);
    bucket.put("a", "2".into()).await.expect("put");
    let e = next(&mut watch, Duration::from_secs(6)).await;
    assert_eq!((e.revision, &e.value[..]), (3, &b"2"[..]));
    server.kill();
    server.restart().await;
    let writer = NatsStore::new(async_nats::connect(server.url()).await.expect("connect"));
    writer.open_bucket("w").await.expect("open").put("a", "3".into()).await.expect("put after the restart");
    // async-nats reconnects with a backoff of up to 4 s between attempts.
    let e = next(&mut watch, Duration::from_secs(8)).await;
    assert_eq!((e.revision, &e.value[..]), (4, &b"3"[..]), "the next write, not a replay");
}

/// Probes of a [`Tapped`] bucket fail while `fail` names their pattern (`*`: every probe);
/// bumping `end` ends every watch made so far; `watches` counts the watches made.
#[derive(Debug, Clone)]
struct Unanswered {
    fail: Arc<std::sync::Mutex<Option<String>>>,
    watches: Arc<AtomicU32>,
    end: Arc<tokio::sync::watch::Sender<u32>>,
}

impl Unanswered {
    fn new() -> Self {
        Unanswered { fail: Arc::default(), watches: Arc::default(), end: Arc::new(tokio::sync::watch::Sender::new(0)) }
    }

    fn fail(&self, pattern: Option<&str>) {
        *self.fail.lock().unwrap() = pattern.map(str::to_string);
    }
}

impl Hooks for Unanswered {
    type PerBucket = ();
    const SHARED_WATCHES: bool = false;

    fn watch(&self, _: &(), inner: Watch) -> Watch {
        self.watches.fetch_add(1, Ordering::SeqCst);
        let initial = inner.initial_pending();
        let mut end = self.end.subscribe();
        Watch::new(initial, inner.take_until(async move { end.changed().await.ok() }))
    }

    fn probe_result(&self, _: &(), pattern: &str, result: kv_config::store::StoreResult<Probe>) -> kv_config::store::StoreResult<Probe> {
        match self.fail.lock().unwrap().as_deref() {
            Some(p) if p == "*" || p == pattern => {
                Err(kv_config::store::StoreError::new(StoreErrorKind::Timeout).bucket("cfg").detail("probe dropped by the test"))
            }
            _ => result,
        }
    }
}

/// A watch ends (as on a failover) and its replacement is made, but the server answers no probe,
/// so the watcher cannot tell whether the bucket is still the incarnation it knows. The new watch
/// is kept, unread, and asked about again a heartbeat later: before, it was dropped and another
/// made for every unanswered probe, each leaving a consumer on the server when its delete was lost
/// too. Meanwhile the handle says it is stale and keeps its snapshot; once probes are answered the
/// kept watch delivers.
#[tokio::test]
async fn a_new_watch_is_kept_while_the_server_does_not_answer_whether_the_bucket_is_the_same() {
    let (server, store) = server().await;
    let hooks = Unanswered::new();
    let heartbeat = Duration::from_millis(200);
    let cfg = LiveConfig::<Cfg>::builder(Tapped::new(&store, hooks.clone()), "cfg").create_if_missing().heartbeat(heartbeat).start().await.unwrap();
    assert_eq!(hooks.watches.load(Ordering::SeqCst), 1);
    hooks.fail(Some("*"));
    hooks.end.send_modify(|n| *n += 1);
    eventually("stale while the new watch is unconfirmed", Duration::from_secs(5), || cfg.status().stale.is_some()).await;
    tokio::time::sleep(heartbeat * 8).await;
    assert_eq!(hooks.watches.load(Ordering::SeqCst), 2, "one new watch, kept while its check goes unanswered");
    assert!(cfg.status().stale.is_some(), "{:?}", cfg.status());
    assert_eq!(cfg.get().workers, 6);
    hooks.fail(None);
    raw(&server).await.put("workers", "9".into()).await.unwrap();
    eventually("the kept watch delivers", Duration::from_secs(5), || cfg.get().workers == 9 && cfg.status().is_healthy()).await;
    assert_eq!(hooks.watches.load(Ordering::SeqCst), 2, "the kept watch, no other");
}

/// The bucket is deleted and created again, and the server answers every probe but the reload's
/// (of the whole bucket): the reload would not know which incarnation it read, and the hub could
/// then not tell the next replacement from its own bucket. So no reload is made without it: the
/// handle says it is stale and keeps its last good snapshot until the server answers, then
/// reloads the new bucket. Before, it reloaded with no incarnation and said it was healthy.
#[tokio::test]
async fn a_replaced_bucket_is_reloaded_only_with_its_incarnation_known() {
    let (_server, store) = server().await;
    let hooks = Unanswered::new();
    let heartbeat = Duration::from_millis(200);
    let builder = LiveConfig::<Cfg>::builder(Tapped::new(&store, hooks.clone()), "cfg").prefix("app.").create_if_missing();
    let cfg = builder.heartbeat(heartbeat).start().await.unwrap();
    hooks.fail(Some(">"));
    store.delete_bucket("cfg").await.unwrap();
    let bucket = store.create_bucket(&BucketConfig::new("cfg")).await.unwrap();
    bucket.put("app.workers", "9".into()).await.unwrap();
    eventually("the replacement noticed", Duration::from_secs(5), || cfg.status().stale.is_some() || cfg.get().workers == 9).await;
    let until = Instant::now() + heartbeat * 10;
    while Instant::now() < until {
        let status = cfg.status();
        assert!(status.stale.is_some() && cfg.get().workers == 6, "reloaded without knowing the incarnation: {status:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    hooks.fail(None);
    eventually("reloaded", Duration::from_secs(5), || cfg.get().workers == 9 && cfg.status().is_healthy()).await;
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Aged {
    #[kv(default = 10)]
    max: u32,
    #[kv(default)]
    workers: u32,
}

/// A value the server removes without a marker (the bucket's maximum age; a purge of the whole
/// stream, as `nats stream purge` does) reaches no watch: a handle that kept it would run on a
/// value the bucket no longer holds, and say it is healthy, while a fresh handle reads the
/// default. Once a probe sees the bucket's first stored revision pass a value the handle holds,
/// the handle reads the bucket again. Found by a probe (before: `max` stayed 50, healthy, for
/// good).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_the_server_removes_without_a_marker_are_not_kept() {
    let (server, store) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("aged").history(5).max_age(Duration::from_secs(2))).await.unwrap();
    bucket.put("max", "50".into()).await.unwrap();
    let start = |dedicated: bool| {
        let b = LiveConfig::<Aged>::builder(store.clone(), "aged").heartbeat(Duration::from_millis(250));
        if dedicated { b.dedicated_watch() } else { b }
    };
    let (shared, own) = (start(false).start().await.unwrap(), start(true).start().await.unwrap());
    // A second shared handle makes the hub keep a map of the bucket, which must not keep it either.
    let joined = start(false).start().await.unwrap();
    for h in [&shared, &own, &joined] {
        assert_eq!(h.get().max, 50);
    }
    let t = Instant::now();
    while bucket.get("max").await.unwrap().is_some() {
        assert!(t.elapsed() < Duration::from_secs(10), "the server never aged the value out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let gone = t.elapsed();
    eventually("every handle back on the default", Duration::from_secs(5), || {
        [&shared, &own, &joined].iter().all(|h| h.get().max == 10)
    })
    .await;
    println!("figure: aged-out value left the handles {:?} after the server removed it", t.elapsed() - gone);
    for h in [&shared, &own, &joined] {
        let status = h.status();
        assert!(status.is_healthy(), "{status:?}");
        assert!(status.reloads >= 1, "{status:?}");
    }
    // A handle started now agrees, and a later value is applied as usual.
    let fresh = start(true).start().await.unwrap();
    assert_eq!(fresh.get().max, 10);
    shared.update(|c| c.workers = 3).await.unwrap();
    eventually("the write reaches every handle", Duration::from_secs(3), || {
        [&shared, &own, &joined, &fresh].iter().all(|h| h.get().workers == 3)
    })
    .await;

    // A purge of the whole stream removes every value at once, again without a marker.
    let purged = store.create_bucket(&BucketConfig::new("purged").history(5)).await.unwrap();
    purged.put("max", "70".into()).await.unwrap();
    purged.put("workers", "7".into()).await.unwrap();
    let h = LiveConfig::<Aged>::builder(store.clone(), "purged").heartbeat(Duration::from_millis(250)).start().await.unwrap();
    assert_eq!((h.get().max, h.get().workers), (70, 7));
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.get_stream("KV_purged").await.unwrap().purge().await.unwrap();
    eventually("the purged values gone from the handle", Duration::from_secs(5), || h.get().max == 10 && h.get().workers == 0).await;
    assert!(h.status().is_healthy(), "{:?}", h.status());
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Duo {
    #[kv(default = 0)]
    a: u32,
    #[kv(default = 0)]
    b: u32,
}

/// A store whose buckets announce nothing (as a client without permission to read the stream's
/// advisories): only probes tell of a replaced bucket.
#[derive(Clone, Debug)]
struct Unannounced;

impl Hooks for Unannounced {
    type PerBucket = ();
    const SHARED_WATCHES: bool = true;
}

/// The bucket is deleted and created again by another client, with other values at the same
/// revisions (`a` at 1, `b` at 2), faster than the handle hears of it: with no announcement and an
/// 8 s heartbeat, an `update` of `a` checks revision 1, which the new bucket's `a` also has, so
/// the server takes it. The caller must not hear `Ok`, and no reader may see the write applied
/// over the old bucket's `b` (a state neither bucket had): only the watch's delivery proves a
/// write went to the bucket the handle watches. Found by a probe (before: `Ok` with a = 5, b = 1,
/// `stale` = `None`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_taken_by_a_bucket_replaced_unannounced_is_never_confirmed_nor_shown() {
    let (_server, admin) = server().await;
    let old = admin.create_bucket(&BucketConfig::new("cfg").history(5)).await.unwrap();
    old.put("a", "1".into()).await.unwrap();
    old.put("b", "1".into()).await.unwrap();
    let cfg = LiveConfig::<Duo>::builder(Tapped::new(&admin, Unannounced), "cfg")
        .heartbeat(Duration::from_secs(8))
        .write_timeout(Duration::from_secs(2))
        .start()
        .await
        .unwrap();
    assert_eq!((cfg.get().a, cfg.get().b), (1, 1));
    admin.delete_bucket("cfg").await.unwrap();
    let new = admin.create_bucket(&BucketConfig::new("cfg").history(5)).await.unwrap();
    new.put("a", "100".into()).await.unwrap();
    new.put("b", "100".into()).await.unwrap();

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (cfg, stop) = (cfg.clone(), stop.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let s = cfg.get();
                if !seen.contains(&(s.a, s.b)) {
                    seen.push((s.a, s.b));
                }
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            seen
        })
    };
    let t = Instant::now();
    let err = cfg.update(|c| c.a = 5).await.expect_err("a write the watch never delivered is not confirmed");
    stop.store(true, Ordering::Relaxed);
    let seen = reader.await.unwrap();
    assert!(matches!(err, Error::NotObserved { .. }), "{err}");
    assert!(err.to_string().contains("bucket `cfg`"), "{err}");
    assert!(t.elapsed() < Duration::from_secs(4), "bounded by the write timeout: {:?}", t.elapsed());
    assert_eq!(seen, vec![(1, 1)], "readers saw only the old bucket's state");
    // The next probe finds the new incarnation and reads it, the write that went there included.
    eventually("the new bucket read", Duration::from_secs(12), || cfg.status().reloads >= 1 && (cfg.get().a, cfg.get().b) == (5, 100)).await;
}

/// The same with the server's announcements (a plain `NatsStore`): the deletion is known within
/// milliseconds, not a heartbeat (8 s here) later, and no write goes out until the bucket is read
/// again, so a bucket created again under the same name never takes a write checked against the
/// old one's revisions; its creation is read at once too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_deleted_and_recreated_bucket_is_known_at_once_and_no_write_goes_out_meanwhile() {
    let (_server, admin) = server().await;
    let old = admin.create_bucket(&BucketConfig::new("cfg").history(5)).await.unwrap();
    old.put("a", "1".into()).await.unwrap();
    old.put("b", "1".into()).await.unwrap();
    let cfg = LiveConfig::<Duo>::builder(admin.clone(), "cfg").heartbeat(Duration::from_secs(8)).start().await.unwrap();
    let own = LiveConfig::<Duo>::builder(admin.clone(), "cfg").heartbeat(Duration::from_secs(8)).dedicated_watch().start().await.unwrap();
    let t = Instant::now();
    admin.delete_bucket("cfg").await.unwrap();
    let missing = |h: &LiveConfig<Duo>| h.status().stale.is_some_and(|s| s.reason == StaleReason::BucketMissing);
    eventually("the deletion known", Duration::from_secs(2), || missing(&cfg) && missing(&own)).await;
    println!("figure: bucket deletion known {:?} after it (heartbeat 8 s)", t.elapsed());
    for h in [&cfg, &own] {
        let err = h.update(|c| c.a = 5).await.expect_err("no write while the bucket is gone");
        assert!(matches!(&err, Error::Store(e) if *e.kind() == StoreErrorKind::NotFound), "{err}");
        assert!(err.to_string().contains("bucket `cfg`"), "{err}");
        assert_eq!((h.get().a, h.get().b), (1, 1), "the last good snapshot stays");
    }
    let t = Instant::now();
    let new = admin.create_bucket(&BucketConfig::new("cfg").history(5)).await.unwrap();
    new.put("a", "100".into()).await.unwrap();
    new.put("b", "100".into()).await.unwrap();
    eventually("the new bucket read", Duration::from_secs(2), || {
        [&cfg, &own].iter().all(|h| h.status().reloads >= 1 && (h.get().a, h.get().b) == (100, 100) && h.status().is_healthy())
    })
    .await;
    println!("figure: re-created bucket read {:?} after its creation (heartbeat 8 s)", t.elapsed());
    // Writes are checked against the new bucket's revisions now.
    let snap = cfg.update(|c| c.a = 5).await.unwrap();
    assert_eq!((snap.a, snap.b), (5, 100));
    assert_eq!(new.get("a").await.unwrap().unwrap(), "5");
    eventually("the other handle has it", Duration::from_secs(2), || own.get().a == 5).await;
}

/// A typed write of a config with a struct-level check is an atomic batch whose last message (the
/// commit) is kv-config's guard key. When the server freezes (SIGSTOP) mid-write, the error must
/// name the key the caller changed, not the guard key it never wrote, and list the batch's keys;
/// and it comes within the store's write deadline. Found by a probe (before: only
/// `__kvconfig.guard` was named).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unanswered_typed_write_names_the_key_the_caller_changed() {
    let mut server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = NatsStore::new(client).with_write_deadline(Duration::from_secs(2));
    let cfg = LiveConfig::<Cfg>::builder(store, "cfg").create_if_missing().start().await.unwrap();
    cfg.update(|c| c.max = 60).await.unwrap();
    server.pause();
    let t = Instant::now();
    let err = cfg.update(|c| c.max = 70).await.expect_err("a frozen server answers nothing");
    let took = t.elapsed();
    server.resume();
    let text = err.to_string();
    assert!(text.contains("bucket `cfg`, key `max`"), "{text}");
    assert!(text.contains("`max`, `__kvconfig.guard`"), "{text}");
    assert!(took < Duration::from_secs(5), "bounded by the write deadline: {took:?}");
    assert!(matches!(&err, Error::Store(e) if matches!(e.kind(), StoreErrorKind::OutcomeUnknown | StoreErrorKind::Timeout)), "{err}");
    println!("figure: unanswered typed write failed after {took:?}: {text}");
}

/// A loopback TCP relay in front of a real server whose replies can be dropped (`deaf`): while
/// it is deaf the client's messages still reach the server, which stores and acknowledges a
/// write, but nothing the server sends reaches the client (the acknowledgement is lost). A
/// connection ends when either side closes.
struct Relay {
    port: u16,
    deaf: Arc<std::sync::atomic::AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Relay {
    async fn start(server_port: u16) -> Relay {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the relay");
        let port = listener.local_addr().expect("relay address").port();
        let deaf = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = deaf.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let flag = flag.clone();
                tokio::spawn(async move {
                    let Ok(server) = tokio::net::TcpStream::connect(("127.0.0.1", server_port)).await else { return };
                    let (mut from_client, mut to_client) = client.into_split();
                    let (mut from_server, mut to_server) = server.into_split();
                    let up = tokio::io::copy(&mut from_client, &mut to_server);
                    let down = async {
                        let mut buf = vec![0u8; 64 * 1024];
                        loop {
                            let n = match from_server.read(&mut buf).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => n,
                            };
                            if flag.load(Ordering::SeqCst) {
                                continue;
                            }
                            if to_client.write_all(&buf[..n]).await.is_err() {
                                return;
                            }
                        }
                    };
                    tokio::select! {
                        _ = up => {}
                        () = down => {}
                    }
                });
            }
        });
        Relay { port, deaf, task }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a write whose acknowledgement was lost may answer: `Ok` (the resend or the lookup
/// confirmed it), or an error that says the outcome is unknown. Never a definite "not written"
/// (`Timeout`, a conflict, a missing bucket) for a write the server stored.
fn honest_about_a_lost_ack<T: std::fmt::Debug>(what: &str, result: &Result<T, String>, kind: Option<&StoreErrorKind>) {
    match (result, kind) {
        (Ok(_), _) => {}
        (Err(text), Some(StoreErrorKind::OutcomeUnknown)) => {
            assert!(text.contains("bucket `") && text.contains("key `"), "{what}: names bucket and key: {text}");
            assert!(text.contains("unknown"), "{what}: says the outcome is unknown: {text}");
        }
        (Err(text), kind) => panic!("{what}: the server stored the write, but the caller was told {kind:?}: {text}"),
    }
}

/// The server stores a write, its acknowledgement is lost on the way back (a relay drops
/// everything the server sends), then the server is killed and restarted on the same store: no
/// freeze, no deleted bucket. A raw lone write (message id), `LiveConfig::set` of a config
/// without cross-field checks (a lone write) and `LiveConfig::update` of one with them (an atomic
/// batch whose commit is the guard key) each end within their deadline with `Ok` that the handle
/// shows, or `OutcomeUnknown`; never a claim that nothing was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_whose_ack_is_lost_before_a_kill_is_confirmed_or_unknown_never_denied() {
    let mut server = NatsServer::start().await;
    let relay = Relay::start(server.port()).await;
    let via_relay = NatsStore::new(async_nats::connect(relay.url()).await.expect("connect through the relay"));
    let counter = LiveConfig::<Counter>::builder(via_relay.clone(), "cnt").create_if_missing().heartbeat(Duration::from_millis(250)).start().await.unwrap();
    let cfg = builder(&via_relay).start().await.unwrap();
    let raw_bucket = via_relay.open_bucket("cfg").await.unwrap();
    counter.set("n", 1).await.unwrap();
    cfg.update(|c| c.max = 60).await.unwrap();

    for round in ["raw write", "set (lone write)", "update (atomic batch)"] {
        let direct = NatsStore::new(async_nats::connect(server.url()).await.expect("connect"));
        let (bucket, key, want) = match round {
            "raw write" => ("cfg", "workers", "7"),
            "set (lone write)" => ("cnt", "n", "2"),
            _ => ("cfg", "max", "70"),
        };
        let seen = direct.open_bucket(bucket).await.unwrap();
        relay.deaf.store(true, Ordering::SeqCst);
        let t = Instant::now();
        let write: tokio::task::JoinHandle<Result<String, (String, Option<StoreErrorKind>)>> = match round {
            "raw write" => {
                let b = raw_bucket.clone();
                tokio::spawn(async move { b.put("workers", "7".into()).await.map(|r| format!("revision {r}")).map_err(|e| (e.to_string(), Some(e.kind().clone()))) })
            }
            "set (lone write)" => {
                let c = counter.clone();
                tokio::spawn(async move { c.set("n", 2).await.map(|s| format!("n = {}", s.n)).map_err(|e| (e.to_string(), store_kind(&e))) })
            }
            _ => {
                let c = cfg.clone();
                tokio::spawn(async move { c.update(|c| c.max = 70).await.map(|s| format!("max = {}", s.max)).map_err(|e| (e.to_string(), store_kind(&e))) })
            }
        };
        // Stored, says a client that hears the server; the writer heard nothing.
        eventually_async(&format!("{round}: stored"), Duration::from_secs(5), || {
            let seen = seen.clone();
            async move { seen.get(key).await.ok().flatten().is_some_and(|v| v == want.as_bytes()) }
        })
        .await;
        assert!(!write.is_finished(), "{round}: the writer cannot have heard the acknowledgement");
        server.kill();
        relay.deaf.store(false, Ordering::SeqCst);
        server.restart().await;
        let result = tokio::time::timeout(Duration::from_secs(20), write).await.expect("bounded: no hang").expect("no panic");
        let took = t.elapsed();
        let (shown, kind) = match &result {
            Ok(s) => (Ok(s.clone()), None),
            Err((text, kind)) => (Err(text.clone()), kind.as_ref()),
        };
        honest_about_a_lost_ack(round, &shown, kind);
        println!("figure: {round} with its ack lost and the server killed: {result:?} after {took:?}");
        if let Ok(text) = &result {
            let stored = seen.entry(key).await.unwrap().expect("stored").revision;
            match round {
                "raw write" => assert_eq!(text, &format!("revision {stored}"), "{round}: Ok names the revision the server stored it at"),
                "set (lone write)" => assert_eq!(counter.get().n, 2, "{round}: Ok, so the handle shows it"),
                "update (atomic batch)" => assert_eq!(cfg.get().max, 70, "{round}: Ok, so the handle shows it"),
                _ => {}
            }
        }
        eventually("the handles are current again", Duration::from_secs(10), || counter.status().is_current() && cfg.status().is_current()).await;
    }
    assert_eq!((counter.get().n, cfg.get().max, cfg.get().workers), (2, 70, 7), "every write applied once");
}

fn store_kind(e: &Error) -> Option<StoreErrorKind> {
    match e {
        Error::Store(s) => Some(s.kind().clone()),
        _ => None,
    }
}

/// Polls an async condition every 20 ms until it holds; panics naming `what` after `within`.
async fn eventually_async<F: std::future::Future<Output = bool>>(what: &str, within: Duration, mut cond: impl FnMut() -> F) {
    let started = Instant::now();
    while !cond().await {
        assert!(started.elapsed() < within, "timed out after {within:?} waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
