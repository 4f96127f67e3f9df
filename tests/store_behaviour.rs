//! The seed's behaviours, run against MemoryStore and a real nats-server alike.

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kv_config::store::{
    BucketConfig, Entry, MemoryStore, NatsStore, Operation, Store, StoreErrorKind, WatchStart, WriteOp,
};
use kv_config_testing::NatsServer;

/// A store plus whatever keeps it alive (the server process).
struct Fixture {
    store: Arc<dyn Store>,
    _server: Option<NatsServer>,
}

async fn memory() -> Fixture {
    Fixture { store: Arc::new(MemoryStore::new()), _server: None }
}

async fn nats() -> Fixture {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.expect("connect to test server");
    Fixture { store: Arc::new(NatsStore::new(client)), _server: Some(server) }
}

async fn next_entry(watch: &mut kv_config::store::Watch) -> Entry {
    tokio::time::timeout(Duration::from_secs(5), watch.next())
        .await
        .expect("watch delivered nothing within 5s")
        .expect("watch ended")
        .expect("watch error")
}

async fn put_then_get(f: Fixture) {
    let b = f.store.create_bucket(&BucketConfig::new("t")).await.unwrap();
    let rev = b.put("server.port", "8080".into()).await.unwrap();
    assert!(rev > 0);
    assert_eq!(b.get("server.port").await.unwrap().as_deref(), Some(&b"8080"[..]));
    let e = b.entry("server.port").await.unwrap().unwrap();
    assert_eq!((e.revision, e.operation), (rev, Operation::Put));
    assert_eq!(b.get("missing").await.unwrap(), None);
    assert_eq!(b.entry_at("server.port", rev).await.unwrap().unwrap().value, "8080");
    let other = b.put("other", "1".into()).await.unwrap();
    assert_eq!(b.entry_at("server.port", other).await.unwrap(), None, "a revision of another key");
}

async fn delete_missing_is_harmless(f: Fixture) {
    let b = f.store.create_bucket(&BucketConfig::new("t")).await.unwrap();
    b.delete("never-there").await.unwrap();
    assert_eq!(b.get("never-there").await.unwrap(), None);
    assert!(b.keys().await.unwrap().is_empty());
}

async fn create_is_a_lock(f: Fixture) {
    let b = f.store.create_bucket(&BucketConfig::new("t")).await.unwrap();
    b.create("lock", "a".into()).await.unwrap();
    let err = b.create("lock", "b".into()).await.unwrap_err();
    assert_eq!(*err.kind(), StoreErrorKind::AlreadyExists, "{err}");
    assert!(err.to_string().contains("`lock`"), "{err}");
    b.delete("lock").await.unwrap();
    b.create("lock", "c".into()).await.unwrap();
    assert_eq!(b.get("lock").await.unwrap().as_deref(), Some(&b"c"[..]));
    b.purge("lock").await.unwrap();
    b.create("lock", "d".into()).await.unwrap();
}

async fn stale_update_fails(f: Fixture) {
    let b = f.store.create_bucket(&BucketConfig::new("t")).await.unwrap();
    let r1 = b.put("k", "1".into()).await.unwrap();
    let r2 = b.update("k", "2".into(), r1).await.unwrap();
    let err = b.update("k", "3".into(), r1).await.unwrap_err();
    match err.kind() {
        StoreErrorKind::WrongRevision { expected, current } => {
            assert_eq!(*expected, r1);
            assert_eq!(*current, Some(r2));
        }
        other => panic!("expected WrongRevision, got {other:?}: {err}"),
    }
    assert_eq!(err.key_name(), Some("k"));
    b.update("k", "3".into(), r2).await.unwrap();
    // 0 means "must not exist".
    b.update("fresh", "1".into(), 0).await.unwrap();
    assert!(b.update("fresh", "2".into(), 0).await.unwrap_err().is_wrong_revision());
    // Delete and purge with a revision check.
    let cur = b.entry("k").await.unwrap().unwrap().revision;
    assert!(b.delete_expect_revision("k", cur - 1).await.unwrap_err().is_wrong_revision());
    b.delete_expect_revision("k", cur).await.unwrap();
    let cur = b.entry("k").await.unwrap().unwrap().revision;
    b.purge_expect_revision("k", cur).await.unwrap();
}

async fn history_is_bounded(f: Fixture) {
    let b = f.store.create_bucket(&BucketConfig::new("t").history(3)).await.unwrap();
    for i in 0..5 {
        b.put("k", i.to_string().into()).await.unwrap();
    }
    let h = b.history("k").await.unwrap();
    let values: Vec<&[u8]> = h.iter().map(|e| &e.value[..]).collect();
    assert_eq!(values, vec![&b"2"[..], b"3", b"4"]);
    assert!(h.windows(2).all(|w| w[0].revision < w[1].revision));
    b.delete("k").await.unwrap();
    let h = b.history("k").await.unwrap();
    assert_eq!(h.len(), 3);
    assert_eq!(h.last().unwrap().operation, Operation::Delete);
    b.purge("k").await.unwrap();
    let h = b.history("k").await.unwrap();
    assert_eq!(h.len(), 1, "purge removes history: {h:?}");
    assert_eq!(h[0].operation, Operation::Purge);
}

async fn watch_sees_puts_and_deletes(f: Fixture) {
    let b = f.store.create_bucket(&BucketConfig::new("t")).await.unwrap();
    b.put("a", "0".into()).await.unwrap();
    let mut all = b.watch(">", WatchStart::LatestPerKey).await.unwrap();
    assert_eq!(all.initial_pending(), 1);
    let mut one = b.watch("b", WatchStart::New).await.unwrap();
    assert_eq!(one.initial_pending(), 0);
    let first = next_entry(&mut all).await;
    assert_eq!((first.key.as_str(), first.delta), ("a", 0));
    b.put("b", "1".into()).await.unwrap();
    b.put("a", "2".into()).await.unwrap();
    b.delete("b").await.unwrap();
    let e1 = next_entry(&mut all).await;
    let e2 = next_entry(&mut all).await;
    let e3 = next_entry(&mut all).await;
    assert_eq!((e1.key.as_str(), e1.operation), ("b", Operation::Put));
    assert_eq!((e2.key.as_str(), &e2.value[..]), ("a", &b"2"[..]));
    assert_eq!((e3.key.as_str(), e3.operation), ("b", Operation::Delete));
    let o1 = next_entry(&mut one).await;
    let o2 = next_entry(&mut one).await;
    assert_eq!((o1.key.as_str(), o1.operation, o2.operation), ("b", Operation::Put, Operation::Delete));
    // An empty match is caught up at once.
    let empty = b.watch("nothing.*", WatchStart::LatestPerKey).await.unwrap();
    assert_eq!(empty.initial_pending(), 0);
}

async fn removed_bucket_is_gone(f: Fixture) {
    f.store.create_bucket(&BucketConfig::new("keep")).await.unwrap();
    f.store.create_bucket(&BucketConfig::new("gone")).await.unwrap();
    assert_eq!(f.store.bucket_names().await.unwrap(), vec!["gone".to_string(), "keep".to_string()]);
    f.store.delete_bucket("gone").await.unwrap();
    assert_eq!(f.store.bucket_names().await.unwrap(), vec!["keep".to_string()]);
    let err = f.store.open_bucket("gone").await.unwrap_err();
    assert_eq!(*err.kind(), StoreErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("`gone`"), "{err}");
}

async fn bucket_info_round_trips(f: Fixture) {
    let cfg = BucketConfig::new("info")
        .history(7)
        .max_age(Duration::from_secs(3600))
        .key_ttl(Duration::from_secs(5))
        .max_value_size(1024);
    let b = f.store.create_bucket(&cfg).await.unwrap();
    b.put("k", "v".into()).await.unwrap();
    let info = b.info().await.unwrap();
    assert_eq!(info.config, cfg);
    assert_eq!(info.last_revision, 1);
    let err = b.put("k", vec![b'x'; 2048].into()).await.unwrap_err();
    assert_eq!(*err.kind(), StoreErrorKind::ValueTooLarge, "{err}");
    // Opening an existing bucket leaves its configuration alone.
    let again = f.store.create_bucket(&BucketConfig::new("info")).await.unwrap();
    assert_eq!(again.info().await.unwrap().config.history, 7);
}

async fn invalid_keys_are_refused(f: Fixture) {
    let b = f.store.create_bucket(&BucketConfig::new("t")).await.unwrap();
    for key in ["", "a..b", ".a", "a.", "a b", "ä"] {
        let err = b.put(key, "1".into()).await.unwrap_err();
        assert_eq!(*err.kind(), StoreErrorKind::InvalidKey, "{key:?}: {err}");
    }
    let err = f.store.create_bucket(&BucketConfig::new("bad.name")).await.unwrap_err();
    assert_eq!(*err.kind(), StoreErrorKind::InvalidBucketName);
    // Opening a bad name is the same error on every store (the memory store said `NotFound`).
    let err = f.store.open_bucket("bad name").await.expect_err("bad name");
    assert_eq!(*err.kind(), StoreErrorKind::InvalidBucketName, "{err}");
}

async fn atomic_batch_all_or_nothing(f: Fixture) {
    let b = f.store.create_bucket(&BucketConfig::new("t")).await.unwrap();
    let ra = b.put("a", "1".into()).await.unwrap();
    let rb = b.put("b", "1".into()).await.unwrap();
    let mut w = b.watch(">", WatchStart::New).await.unwrap();
    let last = b
        .write_atomic(vec![
            WriteOp::put("a", "2".into()).expect_revision(ra),
            WriteOp::put("b", "2".into()).expect_revision(rb),
            WriteOp::put("c", "2".into()).expect_revision(0),
        ])
        .await
        .unwrap();
    assert_eq!(b.entry("c").await.unwrap().unwrap().revision, last);
    // A watcher never reads half a batch as caught up: before the commit, every entry has more
    // pending or says the batch continues. (nats-server's pending count alone can read 0 between
    // a batch's messages: 1 run in 10 here; the batch headers cannot.)
    let seen: Vec<(u64, bool)> = [next_entry(&mut w).await, next_entry(&mut w).await, next_entry(&mut w).await]
        .iter()
        .map(|e| (e.delta, e.batch_continues))
        .collect();
    assert_eq!(seen[2], (0, false), "the commit ends the batch: {seen:?}");
    for (delta, continues) in &seen[..2] {
        assert!(*delta >= 1 || *continues, "a batch arrives with the first entries not caught up: {seen:?}");
    }
    // One stale revision rejects everything.
    let err = b
        .write_atomic(vec![
            WriteOp::put("a", "3".into()).expect_revision(ra + 100),
            WriteOp::put("b", "3".into()),
            WriteOp::delete("c"),
        ])
        .await
        .unwrap_err();
    assert!(err.is_wrong_revision(), "{err}");
    assert_eq!(err.key_name(), Some("a"), "{err}");
    for k in ["a", "b", "c"] {
        assert_eq!(b.get(k).await.unwrap().as_deref(), Some(&b"2"[..]), "{k} changed");
    }
    let err = b.write_atomic(vec![WriteOp::put("a", "1".into()), WriteOp::put("a", "2".into())]).await.unwrap_err();
    assert_eq!(*err.kind(), StoreErrorKind::InvalidRequest);
}

async fn atomic_needs_enabling(f: Fixture) {
    let b = f.store.create_bucket(&BucketConfig::new("plain").atomic_writes(false)).await.unwrap();
    let ops = vec![WriteOp::put("a", "1".into()), WriteOp::put("b", "1".into())];
    let err = b.write_atomic(ops.clone()).await.unwrap_err();
    assert_eq!(*err.kind(), StoreErrorKind::AtomicWritesDisabled, "{err}");
    assert_eq!(b.get("a").await.unwrap(), None);
    f.store.enable_atomic_writes("plain").await.unwrap();
    let b = f.store.open_bucket("plain").await.unwrap();
    b.write_atomic(ops).await.unwrap();
    assert!(b.info().await.unwrap().config.atomic_writes);
}

async fn per_key_ttl_expires(f: Fixture) {
    let plain = f.store.create_bucket(&BucketConfig::new("nottl")).await.unwrap();
    let err = plain.put_with_ttl("k", "v".into(), Duration::from_secs(1)).await.unwrap_err();
    assert_eq!(*err.kind(), StoreErrorKind::KeyTtlDisabled, "{err}");
    let b = f.store.create_bucket(&BucketConfig::new("ttl").key_ttl(Duration::from_secs(60))).await.unwrap();
    let mut w = b.watch(">", WatchStart::New).await.unwrap();
    b.create_with_ttl("lease", "me".into(), Duration::from_secs(1)).await.unwrap();
    b.put_with_ttl("session", "x".into(), Duration::from_secs(1)).await.unwrap();
    b.put("forever", "x".into()).await.unwrap();
    assert!(b.create("lease", "you".into()).await.is_err());
    let mut expired = Vec::new();
    while expired.len() < 2 {
        let e = next_entry(&mut w).await;
        if e.operation == Operation::Purge {
            expired.push(e.key);
        }
    }
    expired.sort();
    assert_eq!(expired, vec!["lease".to_string(), "session".to_string()]);
    assert_eq!(b.get("lease").await.unwrap(), None);
    assert_eq!(b.keys().await.unwrap(), vec!["forever".to_string()]);
    b.create("lease", "you".into()).await.unwrap();
}

async fn headers_travel_with_writes(f: Fixture) {
    use kv_config::store::{AUTHOR_HEADER, REASON_HEADER};
    let b = f.store.create_bucket(&BucketConfig::new("t").history(5)).await.unwrap();
    let mut watch = b.watch(">", WatchStart::New).await.unwrap();
    let op = WriteOp::put("a", "1".into()).header(AUTHOR_HEADER, "ops@host").header(REASON_HEADER, "raise the limit");
    let r1 = b.write(op).await.unwrap();
    b.write_atomic(vec![
        WriteOp::put("a", "2".into()).header(AUTHOR_HEADER, "bot"),
        WriteOp::put("b", "3".into()),
    ])
    .await
    .unwrap();
    let audit = vec![(AUTHOR_HEADER.to_string(), "ops@host".to_string()), (REASON_HEADER.to_string(), "raise the limit".to_string())];
    let seen = next_entry(&mut watch).await;
    assert_eq!((seen.revision, &seen.headers), (r1, &audit), "watch");
    assert_eq!(b.entry_at("a", r1).await.unwrap().unwrap().headers, audit, "entry_at");
    let history = b.history("a").await.unwrap();
    assert_eq!(history.len(), 2);
    assert_eq!(history[0].headers, audit, "history");
    assert_eq!(history[1].headers, vec![(AUTHOR_HEADER.to_string(), "bot".to_string())]);
    assert_eq!(b.entry("a").await.unwrap().unwrap().headers, history[1].headers, "entry");
    assert!(b.entry("b").await.unwrap().unwrap().headers.is_empty(), "NATS's own batch headers are not user headers");
    for (name, value) in [("Nats-Msg-Id", "x"), ("bad:name", "x"), ("ok", "line\nbreak")] {
        let err = b.write(WriteOp::put("a", "9".into()).header(name, value)).await.unwrap_err();
        assert_eq!(*err.kind(), StoreErrorKind::InvalidRequest, "{name}: {err}");
    }
    assert_eq!(b.get("a").await.unwrap().as_deref(), Some(&b"2"[..]), "refused writes changed nothing");
}

/// A start asks the server one question fewer: the incarnation comes with the open, and it is the
/// one a probe tells (a watcher compares the two to notice a replaced bucket).
async fn incarnation_is_known_at_open(f: Fixture) {
    let b = f.store.create_bucket(&BucketConfig::new("inc")).await.unwrap();
    let probed = b.probe(">", u64::MAX).await.unwrap().incarnation;
    assert_eq!(b.opened_incarnation(), Some(probed), "created");
    let opened = f.store.open_bucket("inc").await.unwrap();
    assert_eq!(opened.opened_incarnation(), Some(probed), "opened");
    f.store.delete_bucket("inc").await.unwrap();
    let again = f.store.create_bucket(&BucketConfig::new("inc")).await.unwrap();
    let reprobed = again.probe(">", u64::MAX).await.unwrap().incarnation;
    assert_ne!(reprobed, probed, "a re-created bucket is another incarnation");
    assert_eq!(again.opened_incarnation(), Some(reprobed), "re-created");
    assert_eq!(f.store.open_bucket("inc").await.unwrap().opened_incarnation(), Some(reprobed), "re-opened");
}

/// A bucket deleted and created again at once, many times: the server may still be removing the
/// old store when the create arrives (nats-server 2.15 error 10049, about 1 run in 10 of a single
/// cycle); the create waits for it instead of failing.
async fn a_deleted_bucket_can_be_created_again_at_once(f: Fixture) {
    let mut old = None;
    for i in 0..25u32 {
        let b = f.store.create_bucket(&BucketConfig::new("again")).await.unwrap_or_else(|e| panic!("cycle {i}: {e}"));
        b.put("k", i.to_string().into()).await.unwrap();
        old = b.opened_incarnation();
        f.store.delete_bucket("again").await.unwrap();
    }
    let b = f.store.create_bucket(&BucketConfig::new("again")).await.unwrap();
    assert_eq!(b.get("k").await.unwrap(), None, "a new bucket, not the old one: incarnation {:?} vs old {old:?}, info {:?}", b.opened_incarnation(), b.info().await);
}

/// `open_and_watch` (which the NATS store sends as two requests at once) opens the bucket and
/// watches what the pattern matches, from the latest entry of each key, then live; a missing
/// bucket or a bad name is the open's error, naming the bucket.
async fn open_and_watch_is_open_then_watch(f: Fixture) {
    let b = f.store.create_bucket(&BucketConfig::new("ow")).await.unwrap();
    b.put("a.x", "1".into()).await.unwrap();
    b.put("a.x", "2".into()).await.unwrap();
    b.put("b.y", "3".into()).await.unwrap();
    let (opened, mut watch) = f.store.open_and_watch("ow", "a.>", WatchStart::LatestPerKey).await.unwrap();
    assert_eq!(opened.name(), "ow");
    assert_eq!(opened.opened_incarnation(), b.opened_incarnation(), "the open's answer, as `open_bucket` gives it");
    assert_eq!(watch.initial_pending(), 1, "one key under `a.`");
    let first = watch.next().await.unwrap().unwrap();
    assert_eq!((first.key.as_str(), &first.value[..], first.delta), ("a.x", &b"2"[..], 0));
    opened.put("b.z", "4".into()).await.unwrap();
    let live = opened.put("a.w", "5".into()).await.unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), watch.next()).await.expect("live entry").unwrap().unwrap();
    assert_eq!((next.key.as_str(), next.revision), ("a.w", live), "live entries under the pattern only");
    let Err(err) = f.store.open_and_watch("nope", ">", WatchStart::LatestPerKey).await else { panic!("no bucket") };
    assert_eq!(*err.kind(), StoreErrorKind::NotFound, "{err}");
    assert!(err.to_string().contains("`nope`"), "{err}");
    let Err(err) = f.store.open_and_watch("bad name", ">", WatchStart::LatestPerKey).await else { panic!("bad name") };
    assert_eq!(*err.kind(), StoreErrorKind::InvalidBucketName, "{err}");
}

macro_rules! suite {
    ($($name:ident),* $(,)?) => {
        mod memory_store {
            $( #[tokio::test] async fn $name() { super::$name(super::memory().await).await } )*
        }
        mod nats_store {
            $( #[tokio::test] async fn $name() { super::$name(super::nats().await).await } )*
        }
    };
}

suite!(
    incarnation_is_known_at_open,
    a_deleted_bucket_can_be_created_again_at_once,
    open_and_watch_is_open_then_watch,
    put_then_get,
    delete_missing_is_harmless,
    create_is_a_lock,
    stale_update_fails,
    history_is_bounded,
    watch_sees_puts_and_deletes,
    removed_bucket_is_gone,
    bucket_info_round_trips,
    invalid_keys_are_refused,
    atomic_batch_all_or_nothing,
    atomic_needs_enabling,
    per_key_ttl_expires,
    headers_travel_with_writes,
);

#[tokio::test]
async fn nats_without_jetstream_says_to_start_with_js() {
    let server = NatsServer::start_without_jetstream().await;
    let store = NatsStore::new(async_nats::connect(server.url()).await.unwrap());
    let err = store.create_bucket(&BucketConfig::new("cfg")).await.unwrap_err();
    assert_eq!(*err.kind(), StoreErrorKind::JetStreamNotEnabled, "{err}");
    assert!(err.to_string().contains("-js"), "{err}");
}

#[tokio::test]
async fn nats_writes_during_an_outage_apply_once_or_say_the_outcome_is_unknown() {
    let mut server = NatsServer::start().await;
    let client = async_nats::ConnectOptions::new()
        .request_timeout(Some(Duration::from_millis(500)))
        .connect(server.url())
        .await
        .unwrap();
    let store = NatsStore::new(client.clone());
    let b = store.create_bucket(&BucketConfig::new("cfg").history(10)).await.unwrap();
    b.put("k", "1".into()).await.unwrap();
    // Down for a second: the write is resent with one message id until the server is back, and
    // applied exactly once (the server deduplicates the copies).
    server.kill();
    let writer = b.clone();
    let put = tokio::spawn(async move { writer.put("k", "2".into()).await });
    tokio::time::sleep(Duration::from_secs(1)).await; // the outage itself
    server.restart().await;
    let rev = put.await.unwrap().expect("the write resolves once the server is back");
    let history = b.history("k").await.unwrap();
    assert_eq!(history.iter().map(|e| e.value.clone()).collect::<Vec<_>>(), ["1", "2"], "applied once");
    assert_eq!(history[1].revision, rev);
    // Down for longer than the write deadline: a definite "not known", not a retryable error.
    let short = NatsStore::new(client).with_write_deadline(Duration::from_millis(1500)).open_bucket("cfg").await.unwrap();
    server.kill();
    let err = short.put("k", "3".into()).await.unwrap_err();
    assert_eq!(*err.kind(), StoreErrorKind::OutcomeUnknown, "{err}");
    assert!(!err.is_transient() && err.to_string().contains("`k`"), "{err}");
}

#[tokio::test]
async fn nats_denied_writes_are_permission_denied_at_once() {
    let server = NatsServer::start_with_config(&kv_config_testing::two_users_config(&["$KV.cfg.prod.>"])).await;
    let admin = async_nats::ConnectOptions::with_user_and_password("admin".into(), "admin".into());
    let admin = NatsStore::connect(server.url(), admin).await.unwrap();
    admin.create_bucket(&BucketConfig::new("cfg")).await.unwrap().put("prod.a", "1".into()).await.unwrap();

    // Default JetStream timeout (5 s): the denial must not wait for it.
    let dev = async_nats::ConnectOptions::with_user_and_password("dev".into(), "dev".into());
    let bucket = NatsStore::connect(server.url(), dev).await.unwrap().open_bucket("cfg").await.unwrap();
    assert_eq!(bucket.get("prod.a").await.unwrap().unwrap(), "1", "reads are allowed");
    bucket.put("dev.a", "2".into()).await.expect("a permitted prefix");
    let started = std::time::Instant::now();
    let err = bucket.put("prod.a", "2".into()).await.unwrap_err();
    assert_eq!(*err.kind(), StoreErrorKind::PermissionDenied, "{err}");
    assert!(started.elapsed() < Duration::from_secs(2), "reported after {:?}, not at once", started.elapsed());
    let msg = err.to_string();
    assert!(msg.contains("Permissions Violation") && msg.contains("`cfg`") && msg.contains("`prod.a`"), "{msg}");
    let err = bucket
        .write_atomic(vec![WriteOp::put("dev.b", "1".into()), WriteOp::put("prod.b", "1".into())])
        .await
        .unwrap_err();
    assert_eq!(*err.kind(), StoreErrorKind::PermissionDenied, "{err}");
    assert_eq!(bucket.get("dev.b").await.unwrap(), None, "a denied batch changes nothing");
    assert_eq!(bucket.get("prod.a").await.unwrap().unwrap(), "1");
}

/// `NatsStore::open_and_watch` uses the watch it sent with the open (one consumer on the stream,
/// not a second one started after the open): the consumer is newer than the stream the open
/// describes, which is how it tells a bucket deleted and created again between the two requests.
#[tokio::test]
async fn nats_open_and_watch_keeps_the_watch_it_sent_with_the_open() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = NatsStore::new(client.clone());
    store.create_bucket(&BucketConfig::new("ow")).await.unwrap().put("a", "1".into()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let consumers = || async { js.get_stream("KV_ow").await.unwrap().info().await.unwrap().state.consumer_count };
    assert_eq!(consumers().await, 0);
    let (_bucket, mut watch) = store.open_and_watch("ow", ">", WatchStart::LatestPerKey).await.unwrap();
    assert_eq!(watch.next().await.unwrap().unwrap().key, "a");
    assert_eq!(consumers().await, 1, "the early watch was kept, no second watch was started");
}

/// A watch's server consumer goes with the watch: [`Watch::close`] waits for the server's answer
/// and a dropped watch sends it in the background. The server alone would keep an ordered
/// consumer 30 s after its subscription went, for every load and every re-created watch.
#[tokio::test]
async fn nats_a_closed_or_dropped_watch_leaves_no_consumer_behind() {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.unwrap();
    let store = NatsStore::new(client.clone());
    let bucket = store.create_bucket(&BucketConfig::new("gone")).await.unwrap();
    bucket.put("a", "1".into()).await.unwrap();
    let js = async_nats::jetstream::new(client);
    let consumers = || async { js.get_stream("KV_gone").await.unwrap().info().await.unwrap().state.consumer_count };
    let watch = bucket.watch(">", WatchStart::LatestPerKey).await.unwrap();
    assert_eq!(consumers().await, 1);
    watch.close().await;
    assert_eq!(consumers().await, 0, "closed");
    let (_opened, watch) = store.open_and_watch("gone", ">", WatchStart::LatestPerKey).await.unwrap();
    assert_eq!(consumers().await, 1);
    drop(watch);
    let dropped = std::time::Instant::now();
    while consumers().await != 0 {
        assert!(dropped.elapsed() < std::time::Duration::from_secs(5), "the dropped watch's consumer is still there");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}
