//! Per-field apply on a real nats-server: the watcher decodes only the fields a change touched.
//! Whatever the path, a handle must hold exactly what a fresh, whole decode of the bucket gives,
//! report the same unknown keys, name the changed keys, refuse what its validators refuse, and
//! share the sections a change did not touch.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use kv_config::store::{Bucket, MemoryStore, NatsStore, Store};
use kv_config::{KvConfig, LiveConfig, Problem, Snapshot};
use kv_config_testing::{eventually, NatsServer};

fn port_ok(p: &u16) -> Result<(), String> {
    if *p == 0 {
        Err("port 0 is not a port".into())
    } else {
        Ok(())
    }
}

fn quota_ok(q: &u32) -> Result<(), String> {
    if *q > 1000 {
        Err(format!("quota {q} is above 1000"))
    } else {
        Ok(())
    }
}

fn limits_ok(l: &Limits) -> Result<(), String> {
    if l.min > l.max {
        Err(format!("min {} is above max {}", l.min, l.max))
    } else {
        Ok(())
    }
}

fn cfg_ok(c: &Cfg) -> Result<(), String> {
    if c.name == "forbidden" && c.flags.get("allow") != Some(&true) {
        Err("the name `forbidden` needs flags.allow".into())
    } else {
        Ok(())
    }
}

#[derive(KvConfig, Clone, PartialEq)]
struct Server {
    #[kv(default = 8080, validate = port_ok)]
    port: u16,
    #[kv(default)]
    host: String,
}

#[derive(KvConfig, Clone, PartialEq)]
#[kv(validate = limits_ok)]
struct Limits {
    #[kv(default = 1)]
    min: u32,
    #[kv(default = 10)]
    max: u32,
}

#[derive(KvConfig, Clone, PartialEq)]
struct Tenant {
    #[kv(default = 1, validate = quota_ok)]
    quota: u32,
    #[kv(default)]
    plan: String,
}

#[derive(KvConfig, Clone, PartialEq)]
#[kv(validate = cfg_ok)]
struct Cfg {
    #[kv(default = 1)]
    a: u32,
    #[kv(default = "x")]
    name: String,
    opt: Option<u64>,
    /// A section behind an `Arc`: shared between snapshots until a change touches it.
    #[kv(nested)]
    server: Arc<Server>,
    #[kv(nested)]
    limits: Limits,
    flags: BTreeMap<String, bool>,
    #[kv(nested)]
    tenants: HashMap<String, Tenant>,
}

/// A small deterministic generator (xorshift64*), so a failing sequence can be replayed.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// One random write that keeps the config valid: a put of a good value, or a delete of a key
/// that has a default (a map entry, an optional field, an unknown key).
fn random_op(rng: &mut Rng) -> (String, Option<String>) {
    let put = |k: &str, v: String| (k.to_string(), Some(v));
    let del = |k: &str| (k.to_string(), None);
    let n = rng.below(100);
    match rng.below(14) {
        0 => put("a", n.to_string()),
        1 => put("name", format!("\"n{n}\"")),
        2 if n.is_multiple_of(2) => put("opt", n.to_string()),
        2 => del("opt"),
        3 => put("server.port", (1 + n).to_string()),
        4 if n.is_multiple_of(3) => del("server.host"),
        4 => put("server.host", format!("h{n}")), // a bare string, as `nats kv put` writes it
        5 => put("limits.min", (n % 5).to_string()),
        6 => put("limits.max", (5 + n % 5).to_string()),
        7 | 8 => {
            let key = format!("flags.f{}", n % 5);
            if n.is_multiple_of(3) {
                del(&key)
            } else {
                put(&key, (n.is_multiple_of(2)).to_string())
            }
        }
        9 | 10 => {
            let key = format!("tenants.t{}.{}", n % 4, if n.is_multiple_of(2) { "quota" } else { "plan" });
            if n.is_multiple_of(5) {
                del(&key)
            } else if key.ends_with("quota") {
                put(&key, (n * 10).to_string())
            } else {
                put(&key, format!("\"p{n}\""))
            }
        }
        // Unknown keys: at the top, under a nested struct, and under a nested map's entry.
        11 => {
            let key = ["zz.unknown", "server.bogus", "tenants.t1.bogus"][(n % 3) as usize];
            if n.is_multiple_of(2) {
                put(key, "1".into())
            } else {
                del(key)
            }
        }
        12 => del(&format!("limits.{}", if n.is_multiple_of(2) { "min" } else { "max" })),
        _ => put("flags.allow", "true".into()),
    }
}

async fn apply(bucket: &dyn Bucket, model: &mut BTreeMap<String, u64>, op: &(String, Option<String>)) -> u64 {
    let (key, value) = op;
    match value {
        Some(v) => {
            let rev = bucket.put(key, v.clone().into_bytes().into()).await.expect("put");
            model.insert(key.clone(), rev);
            rev
        }
        None => {
            let rev = bucket.delete(key).await.expect("delete");
            model.remove(key);
            rev
        }
    }
}

/// Keys whose presence or revision differs between two states of the bucket.
fn model_diff(old: &BTreeMap<String, u64>, new: &BTreeMap<String, u64>) -> Vec<String> {
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter().filter(|k| old.get(*k) != new.get(*k)).cloned().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_leaves_the_handle_equal_to_a_whole_decode() {
    random_changes(false).await;
}

/// The same with a spare ([`Builder::spare_copy`](kv_config::Builder::spare_copy)): changes are
/// applied in place to the config the change before retired, behind by that change's keys.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_change_applied_to_a_spare_leaves_the_handle_equal_to_a_whole_decode() {
    random_changes(true).await;
}

/// 300 random steps against a whole decode after each. Without a spare, the test also holds the
/// previous snapshot to check the changed keys. With one, it holds a random few snapshots for a
/// random while (so changes find their spares sometimes free, sometimes held) and checks that
/// none of them ever changes.
async fn random_changes(spare: bool) {
    let (_server, cfg, writer) = setup_with(spare).await;
    let seed = 0x5EED_u64 + std::process::id() as u64 + u64::from(spare);
    let mut rng = Rng(seed);
    let mut model = BTreeMap::new();
    let mut seen_model = model.clone();
    let mut prev: Option<Arc<Snapshot<Cfg>>> = (!spare).then(|| cfg.get_arc());
    let mut held: Vec<(Arc<Snapshot<Cfg>>, Cfg)> = Vec::new();
    let (mut single, mut bursts) = (0, 0);
    for step in 0..300 {
        if spare {
            if rng.below(4) == 0 && held.len() < 3 {
                let snap = cfg.get_arc();
                let copy = snap.config().clone();
                held.push((snap, copy));
            }
            if rng.below(3) == 0 && !held.is_empty() {
                held.remove(rng.below(held.len() as u64) as usize);
            }
        }
        // Mostly one write at a time (one swap each); sometimes a quick run of writes the watcher
        // may take as one burst, sometimes more than an apply takes on at once.
        let writes = match rng.below(10) {
            0..=6 => 1,
            7 | 8 => 2 + rng.below(4),
            _ => 40,
        };
        let mut last = 0;
        for _ in 0..writes {
            last = apply(&*writer, &mut model, &random_op(&mut rng)).await;
        }
        if writes == 1 {
            single += 1;
        } else {
            bursts += 1;
        }
        eventually("the handle caught up", Duration::from_secs(10), || cfg.get().revision() >= last).await;
        let ctx = format!("seed {seed:#x}, spare {spare}, step {step}");
        let whole = kv_config::load::<Cfg>(&*writer, "").await.unwrap_or_else(|e| panic!("{ctx}: bucket valid: {e}"));
        assert!(cfg.get().config() == &whole.config, "{ctx}: live {:?} != whole decode {:?}", cfg.get().config(), whole.config);
        let status = cfg.status();
        assert!(status.rejected.is_empty() && status.is_healthy(), "{ctx}: {status:?}");
        assert_eq!(status.unknown_keys, whole.unknown_keys, "{ctx}: unknown keys");
        for (snap, copy) in &held {
            assert!(snap.config() == copy, "{ctx}: a held snapshot changed: {:?} != {copy:?}", snap.config());
        }
        if let Some(prev) = &mut prev {
            let now = cfg.get_arc();
            assert_eq!(prev.changed_keys(&now), model_diff(&seen_model, &model), "{ctx}: changed keys");
            *prev = now;
        }
        seen_model = model.clone();
    }
    assert!(single > 100 && bursts > 20, "both paths exercised: {single} single writes, {bursts} bursts");
}

/// A server, a handle on bucket `cfg` (created, nothing seeded), and a second connection's
/// bucket to write through as another client.
async fn setup() -> (NatsServer, LiveConfig<Cfg>, Arc<dyn Bucket>) {
    setup_with(false).await
}

/// [`setup`], with or without a spare.
async fn setup_with<T: KvConfig>(spare: bool) -> (NatsServer, LiveConfig<T>, Arc<dyn Bucket>) {
    let server = NatsServer::start().await;
    let store = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    let cfg = LiveConfig::<T>::builder(store, "cfg").create_if_missing().seed_defaults(false).spare_copy(spare).start().await.unwrap();
    let writer = NatsStore::new(async_nats::connect(server.url()).await.unwrap()).open_bucket("cfg").await.unwrap();
    (server, cfg, writer)
}

async fn caught_up(cfg: &LiveConfig<Cfg>, rev: u64) {
    eventually("caught up", Duration::from_secs(10), || cfg.get().revision() >= rev).await;
}

#[tokio::test]
async fn a_refused_change_keeps_the_last_good_field_and_later_changes_still_apply() {
    let (_server, cfg, writer) = setup().await;

    // A field validator refuses one key: that key keeps its last good value, named in the status.
    caught_up(&cfg, writer.put("server.port", "9000".into()).await.unwrap()).await;
    let rev = writer.put("server.port", "0".into()).await.unwrap();
    caught_up(&cfg, rev).await;
    let status = cfg.status();
    assert_eq!(status.rejected.len(), 1, "{status:?}");
    assert_eq!((status.rejected[0].key.as_str(), status.rejected[0].revision), ("server.port", Some(rev)));
    assert!(matches!(&status.rejected[0].problem, Problem::Rejected(m) if m.contains("port 0")), "{status:?}");
    assert_eq!(cfg.get().server.port, 9000);
    // Other keys still change meanwhile, and a good value repairs the refused one.
    caught_up(&cfg, writer.put("server.host", "db".into()).await.unwrap()).await;
    assert_eq!((cfg.get().server.host.as_str(), cfg.get().server.port), ("db", 9000));
    caught_up(&cfg, writer.put("server.port", "9001".into()).await.unwrap()).await;
    assert!(cfg.status().rejected.is_empty(), "{:?}", cfg.status());
    assert_eq!(cfg.get().server.port, 9001);

    // A nested struct check refuses a change of one of its keys; the section keeps its values.
    caught_up(&cfg, writer.put("limits.max", "3".into()).await.unwrap()).await;
    let rev = writer.put("limits.min", "5".into()).await.unwrap();
    caught_up(&cfg, rev).await;
    let status = cfg.status();
    assert!(
        status.rejected.iter().any(|e| e.key == "limits" && matches!(&e.problem, Problem::Struct(m) if m.contains("min 5 is above max 3"))),
        "{status:?}"
    );
    assert_eq!((cfg.get().limits.min, cfg.get().limits.max), (1, 3));
    caught_up(&cfg, writer.put("limits.min", "2".into()).await.unwrap()).await;
    assert_eq!((cfg.get().limits.min, cfg.get().limits.max), (2, 3));
    assert!(cfg.status().rejected.is_empty(), "{:?}", cfg.status());

    // The top-level check sees the whole struct after a one-key change.
    caught_up(&cfg, writer.put("name", "forbidden".into()).await.unwrap()).await;
    assert_eq!(cfg.get().name, "x", "refused by the struct check: {:?}", cfg.status());
    assert!(!cfg.status().rejected.is_empty());
    caught_up(&cfg, writer.put("flags.allow", "true".into()).await.unwrap()).await;
    assert_eq!(cfg.get().name, "forbidden", "valid once the flag is set: {:?}", cfg.status());
    assert!(cfg.status().rejected.is_empty());

    // A refused map entry keeps its last good value; deleting it removes the entry.
    caught_up(&cfg, writer.put("tenants.acme.quota", "10".into()).await.unwrap()).await;
    caught_up(&cfg, writer.put("tenants.acme.quota", "5000".into()).await.unwrap()).await;
    assert_eq!(cfg.get().tenants["acme"].quota, 10);
    assert!(cfg.status().rejected.iter().any(|e| e.key == "tenants.acme.quota"), "{:?}", cfg.status());
    caught_up(&cfg, writer.delete("tenants.acme.quota").await.unwrap()).await;
    assert!(!cfg.get().tenants.contains_key("acme"));
    assert!(cfg.status().rejected.is_empty(), "{:?}", cfg.status());
    // A key under a map that is no legal entry is refused and named.
    caught_up(&cfg, writer.put("flags.a.b", "true".into()).await.unwrap()).await;
    assert!(cfg.status().rejected.iter().any(|e| e.key == "flags.a.b"), "{:?}", cfg.status());
    assert!(cfg.get().flags.get("allow") == Some(&true));
}

#[tokio::test]
async fn a_change_shares_the_sections_it_did_not_touch() {
    let (_server, cfg, _writer) = setup().await;
    cfg.set("server.host", "db").await.unwrap();
    let before = cfg.get_arc();
    cfg.set("a", 42).await.unwrap();
    let after = cfg.get_arc();
    assert_eq!(after.a, 42);
    assert!(Arc::ptr_eq(&before.server, &after.server), "an untouched `Arc` section is shared, not copied");
    cfg.set("server.port", 9999).await.unwrap();
    let touched = cfg.get_arc();
    assert!(!Arc::ptr_eq(&after.server, &touched.server), "a touched section is a new copy");
    assert_eq!((after.server.port, touched.server.port), (8080, 9999), "the old snapshot is unchanged");
    assert_eq!(touched.server.host, "db");
}

#[tokio::test]
async fn a_subscriber_that_fell_behind_gets_every_key_changed_since_it_last_looked() {
    let (_server, cfg, writer) = setup().await;
    let mut sub = cfg.subscribe();
    // Four swaps, one at a time, while the subscriber does not look.
    caught_up(&cfg, writer.put("a", "5".into()).await.unwrap()).await;
    caught_up(&cfg, writer.put("flags.x", "true".into()).await.unwrap()).await;
    caught_up(&cfg, writer.put("tenants.t.quota", "3".into()).await.unwrap()).await;
    caught_up(&cfg, writer.delete("tenants.t.quota").await.unwrap()).await;
    let change = tokio::time::timeout(Duration::from_secs(5), sub.changed()).await.expect("a change").expect("open");
    assert_eq!(change.keys, vec!["a".to_string(), "flags.x".to_string()], "added and deleted again is no change");
    assert_eq!((change.new.a, change.old.a), (5, 1));
    // The same answer as comparing the keys one by one.
    let by_key: Vec<String> = ["a", "flags.x", "tenants.t.quota", "name"]
        .into_iter()
        .filter(|k| change.old.key_revision(k) != change.new.key_revision(k))
        .map(String::from)
        .collect();
    assert_eq!(by_key, change.keys);
}

#[tokio::test]
async fn hundreds_of_distinct_keys_changed_one_by_one_stay_exact() {
    // Enough distinct keys for the shared values to fold their changes into a new base several
    // times while older snapshots still hold the old one.
    let (_server, cfg, writer) = setup().await;
    let first = cfg.get_arc();
    let mut held = Vec::new();
    for i in 0..400u32 {
        let mut rev = writer.put(&format!("flags.f{i}"), i.is_multiple_of(2).to_string().into()).await.unwrap();
        if i % 7 == 3 {
            rev = writer.delete(&format!("flags.f{}", i - 3)).await.unwrap();
        }
        caught_up(&cfg, rev).await;
        if i.is_multiple_of(50) {
            held.push((i, cfg.get_arc()));
        }
    }
    let whole = kv_config::load::<Cfg>(&*writer, "").await.unwrap();
    let now = cfg.get_arc();
    assert!(now.config() == &whole.config, "{:?}", cfg.status());
    assert_eq!(now.flags.len(), whole.config.flags.len());
    assert_eq!(whole.config.flags.len(), 400 - 57, "57 of the 400 were deleted again");
    // Snapshots taken along the way still show their own state.
    for (i, snap) in &held {
        assert_eq!(snap.flags.get(&format!("f{i}")), Some(&i.is_multiple_of(2)), "snapshot at {i}");
        assert!(!snap.flags.contains_key(&format!("f{}", i + 1)), "snapshot at {i} predates f{}", i + 1);
        assert_eq!(snap.flags.len() as u32, i + 1 - (0..=*i).filter(|j| j % 7 == 3).count() as u32, "snapshot at {i}");
    }
    // Every key changed since the first snapshot (457 swaps ago, through the change links), named
    // once; the deleted ones are no change from a snapshot that never had them.
    let changed = first.changed_keys(&now);
    let expected: Vec<String> = {
        let mut k: Vec<String> = whole.config.flags.keys().map(|k| format!("flags.{k}")).collect();
        k.sort();
        k
    };
    assert_eq!(changed, expected);
}

/// Clones of [`Counted`], the only type that counts them (tests run in parallel).
static COUNTED_CLONES: AtomicUsize = AtomicUsize::new(0);

/// A config that counts its clones, to tell a change applied to a copy from one applied in place.
#[derive(KvConfig, PartialEq)]
#[kv(validate = counted_ok)]
struct Counted {
    #[kv(default = 1)]
    a: u32,
    #[kv(default = "x")]
    name: String,
    #[kv(nested)]
    limits: Limits,
    #[kv(nested)]
    server: Arc<Server>,
}

fn counted_ok(c: &Counted) -> Result<(), String> {
    if c.name == "panic" {
        panic!("a validator that panics");
    }
    if c.a == 13 && c.name == "unlucky" {
        Err("a 13 and name unlucky".into())
    } else {
        Ok(())
    }
}

impl Clone for Counted {
    fn clone(&self) -> Self {
        COUNTED_CLONES.fetch_add(1, Ordering::SeqCst);
        Counted { a: self.a, name: self.name.clone(), limits: self.limits.clone(), server: self.server.clone() }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_change_goes_to_the_retired_config_in_place_once_no_reader_holds_it() {
    let clones = || COUNTED_CLONES.load(Ordering::SeqCst);
    for spare in [false, true] {
        let (_server, cfg, writer) = setup_with::<Counted>(spare).await;
        let before = clones();
        let mut expect = (1u32, "x".to_string(), 1u32, 10u32);
        for i in 0..40u32 {
            let (key, value) = match i % 4 {
                0 => ("a", (100 + i).to_string()),
                1 => ("name", format!("\"n{i}\"")),
                2 => ("limits.min", (i % 5).to_string()),
                _ => ("limits.max", (5 + i % 5).to_string()),
            };
            match i % 4 {
                0 => expect.0 = 100 + i,
                1 => expect.1 = format!("n{i}"),
                2 => expect.2 = i % 5,
                _ => expect.3 = 5 + i % 5,
            }
            let rev = writer.put(key, value.into()).await.unwrap();
            eventually("caught up", Duration::from_secs(10), || cfg.get().revision() >= rev).await;
            let now = cfg.get();
            assert_eq!((now.a, now.name.clone(), now.limits.min, now.limits.max), expect, "spare {spare}, change {i}");
            let whole = kv_config::load::<Counted>(&*writer, "").await.unwrap();
            assert!(now.config() == &whole.config, "spare {spare}, change {i}: {:?} != {:?}", now.config(), whole.config);
        }
        let copies = clones() - before;
        if !spare {
            assert_eq!(copies, 40, "without a spare every change copies the config");
            continue;
        }
        // The first change has no spare yet; every later one finds the config two snapshots back
        // free and brings it up to date in place.
        assert_eq!(copies, 1, "with a spare only the first change copies the config");

        // Readers holding retired snapshots: a change whose spares are all held copies the
        // config; a later one takes the newest spare let go since, even when it is two changes
        // behind (then it gets the keys of both). No held snapshot ever changes.
        let put = |key: &'static str, value: &'static str| {
            let writer = writer.clone();
            let cfg = &cfg;
            async move {
                let rev = writer.put(key, value.into()).await.unwrap();
                eventually("caught up", Duration::from_secs(10), || cfg.get().revision() >= rev).await;
            }
        };
        let before = clones();
        let first = cfg.get_arc();
        let first_seen = (first.a, first.name.clone(), first.limits.clone(), first.server.port);
        put("a", "7").await; // takes the spare from before `first`
        let second = cfg.get_arc();
        let second_seen = (second.a, second.name.clone(), second.limits.clone(), second.server.port);
        put("server.port", "9001").await; // its spare is `first`, held: a copy
        assert_eq!(clones() - before, 1, "the change whose only spare was held copied");
        drop(first);
        put("name", "\"late\"").await; // `second` is held, `first` is free: two changes behind
        assert_eq!(clones() - before, 1, "the older spare, let go, took the change in place");
        assert_eq!((second.a, second.name.clone(), second.limits.clone(), second.server.port), second_seen, "a held snapshot never changes");
        assert_eq!(first_seen.0, 100 + 36, "the first held snapshot had the loop's last `a`");
        let now = cfg.get_arc();
        assert_eq!((now.a, now.name.as_str(), now.server.port), (7, "late", 9001));
        let whole = kv_config::load::<Counted>(&*writer, "").await.unwrap();
        assert!(now.config() == &whole.config, "{:?} != {:?}", now.config(), whole.config);
        drop((second, now));

        // A refused change through the spare leaves the last good config; the next one applies.
        let rev = writer.put("a", "13".into()).await.unwrap();
        eventually("caught up", Duration::from_secs(10), || cfg.get().revision() >= rev).await;
        let rev = writer.put("name", "\"unlucky\"".into()).await.unwrap();
        eventually("caught up", Duration::from_secs(10), || cfg.status().seen_revision >= rev).await;
        assert_eq!((cfg.get().a, cfg.get().name.as_str()), (13, "late"), "{:?}", cfg.status());
        assert!(!cfg.status().rejected.is_empty());
        let rev = writer.put("a", "14".into()).await.unwrap();
        eventually("caught up", Duration::from_secs(10), || cfg.get().revision() >= rev).await;
        let whole = kv_config::load::<Counted>(&*writer, "").await.unwrap();
        assert!(cfg.get().config() == &whole.config, "{:?} != {:?}", cfg.get().config(), whole.config);
        assert_eq!((cfg.get().a, cfg.get().name.as_str()), (14, "unlucky"));

        // A validator that panics while a change is applied to the spare: refused, the config in
        // effect stays, the half-applied spare is never used.
        let good = cfg.get_arc().config().clone();
        let rev = writer.put("name", "\"panic\"".into()).await.unwrap();
        eventually("seen", Duration::from_secs(10), || cfg.status().seen_revision >= rev).await;
        assert!(cfg.get().config() == &good, "{:?}", cfg.status());
        assert!(cfg.status().rejected.iter().any(|e| e.to_string().contains("panicked")), "{:?}", cfg.status());
        for (key, value) in [("a", "15"), ("name", "\"after\""), ("limits.max", "9")] {
            let rev = writer.put(key, value.into()).await.unwrap();
            eventually("caught up", Duration::from_secs(10), || cfg.get().revision() >= rev).await;
        }
        let whole = kv_config::load::<Counted>(&*writer, "").await.unwrap();
        assert!(cfg.get().config() == &whole.config, "{:?} != {:?}", cfg.get().config(), whole.config);
        assert_eq!((cfg.get().a, cfg.get().name.as_str(), cfg.get().limits.max), (15, "after", 9));
    }
}

/// Readers on other threads hold `get()` guards and `get_arc()` snapshots while changes stream
/// in: a handle with a spare must never modify a snapshot one of them holds (guards of
/// `ArcSwap::load` count only once a swap pays their debt), and must end where a handle without
/// one and a whole decode end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readers_on_other_threads_never_see_a_snapshot_change_under_them() {
    let store = MemoryStore::new();
    let with = LiveConfig::<Cfg>::builder(store.clone(), "cfg").create_if_missing().seed_defaults(false).spare_copy(true).start().await.unwrap();
    let without = LiveConfig::<Cfg>::builder(store.clone(), "cfg").spare_copy(false).dedicated_watch().start().await.unwrap();
    let writer = store.open_bucket("cfg").await.unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let readers: Vec<_> = (0..2)
        .map(|r| {
            let (cfg, stop) = (with.clone(), stop.clone());
            std::thread::spawn(move || {
                let mut checks = 0u64;
                let mut held: Option<(Arc<Snapshot<Cfg>>, Cfg)> = None;
                while !stop.load(Ordering::Relaxed) {
                    let guard = cfg.get();
                    let copy = guard.config().clone();
                    for _ in 0..200 {
                        std::hint::spin_loop();
                    }
                    assert!(guard.config() == &copy, "reader {r}: a guarded snapshot changed under it");
                    drop(guard);
                    if checks.is_multiple_of(7) {
                        if let Some((snap, copy)) = held.take() {
                            assert!(snap.config() == &copy, "reader {r}: a held snapshot changed");
                        }
                        let snap = cfg.get_arc();
                        let copy = snap.config().clone();
                        held = Some((snap, copy));
                    }
                    checks += 1;
                }
                checks
            })
        })
        .collect();
    let mut rng = Rng(0xC0FFEE + std::process::id() as u64);
    let mut model = BTreeMap::new();
    for step in 0..1500 {
        let last = apply(&*writer, &mut model, &random_op(&mut rng)).await;
        if step % 50 == 49 {
            eventually("both caught up", Duration::from_secs(10), || with.get().revision() >= last && without.get().revision() >= last).await;
            let whole = kv_config::load::<Cfg>(&*writer, "").await.unwrap();
            assert!(with.get().config() == &whole.config, "step {step}: with a spare {:?} != {:?}", with.get().config(), whole.config);
            assert!(without.get().config() == &whole.config, "step {step}: without {:?} != {:?}", without.get().config(), whole.config);
        }
    }
    stop.store(true, Ordering::Relaxed);
    let checks: u64 = readers.into_iter().map(|r| r.join().expect("a reader failed")).sum();
    assert!(checks > 1000, "the readers ran: {checks} checks");
}
