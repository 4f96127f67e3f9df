//! One watch per bucket for every handle on a store (issue 11, item 4), against real nats-server
//! processes: a thousand handles are one server consumer, a handle that joins reads its keys from
//! memory, and every fault the single-handle suites cover reaches every handle on the shared watch.

use std::time::{Duration, Instant};

use kv_config::store::{Bucket, BucketConfig, NatsStore, Store, WriteOp};
use kv_config::{Error, KvConfig, LiveConfig, Provenance, StaleReason};
use kv_config_testing::{eventually, NatsServer};
use serde::{Deserialize, Serialize};

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Tenant {
    #[kv(default = 1)]
    limit: u32,
    #[kv(default = "basic")]
    plan: String,
}

/// A second config on the same prefix as a [`Tenant`]: another type reading some of its keys.
#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Limit {
    #[kv(default = 0)]
    limit: u32,
}

const HEARTBEAT: Duration = Duration::from_millis(250);
/// Handles share a watch when their heartbeat and load timeout agree; every builder here sets both.
const LOAD_TIMEOUT: Duration = Duration::from_secs(1);

async fn server() -> (NatsServer, NatsStore, async_nats::Client) {
    let server = NatsServer::start().await;
    let client = async_nats::connect(server.url()).await.expect("connect");
    (server, NatsStore::new(client.clone()), client)
}

/// A writer on its own connection, as another service or the `nats` CLI would be.
async fn raw(server: &NatsServer, bucket: &str) -> std::sync::Arc<dyn Bucket> {
    let store = NatsStore::new(async_nats::connect(server.url()).await.expect("connect"));
    store.open_bucket(bucket).await.expect("open")
}

/// How many consumers the server holds on the bucket's stream.
async fn consumers(client: &async_nats::Client, bucket: &str) -> usize {
    let js = async_nats::jetstream::new(client.clone());
    let mut stream = js.get_stream(format!("KV_{bucket}")).await.expect("stream");
    stream.info().await.expect("stream info").state.consumer_count
}

fn tenant(store: &NatsStore, i: usize) -> kv_config::Builder<Tenant> {
    LiveConfig::<Tenant>::builder(store.clone(), "tenants").prefix(format!("t.{i}.")).heartbeat(HEARTBEAT).load_timeout(LOAD_TIMEOUT)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_handles_are_one_consumer_and_each_sees_only_its_keys() {
    let (server, store, client) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("tenants").history(5)).await.unwrap();
    for i in 0..1000 {
        bucket.put(&format!("t.{i}.limit"), format!("{}", 10 + i).into()).await.unwrap();
    }
    let mut handles = Vec::new();
    for i in 0..1000 {
        handles.push(tenant(&store, i).start().await.unwrap());
    }
    for (i, h) in handles.iter().enumerate() {
        assert_eq!(h.get().limit, 10 + i as u32, "tenant {i} starts with its own value");
    }
    // Another config type on the prefix of tenant 537 joins the same watch.
    let limit = LiveConfig::<Limit>::builder(store.clone(), "tenants").prefix("t.537.").heartbeat(HEARTBEAT).load_timeout(LOAD_TIMEOUT).start().await.unwrap();
    assert_eq!(limit.get().limit, 547);
    assert_eq!(consumers(&client, "tenants").await, 1, "1,001 handles on one store and bucket are one consumer");

    let writer = raw(&server, "tenants").await;
    writer.put("t.537.limit", "99".into()).await.unwrap();
    writer.put("t.537.plan", "\"gold\"".into()).await.unwrap();
    eventually("tenant 537 sees its change", Duration::from_secs(3), || {
        handles[537].get().limit == 99 && handles[537].get().plan == "gold"
    })
    .await;
    eventually("the other config on its prefix too", Duration::from_secs(3), || limit.get().limit == 99).await;
    for (i, h) in handles.iter().enumerate().filter(|(i, _)| *i != 537) {
        assert_eq!((h.get().limit, h.status().swaps), (10 + i as u32, 1), "tenant {i} is untouched by another tenant's change");
    }
    // A write through one handle is seen by it (its write waits for the shared watch).
    handles[3].update(|t| t.limit = 7).await.unwrap();
    assert_eq!(handles[3].get().limit, 7);
    assert_eq!(writer.get("t.3.limit").await.unwrap().as_deref(), Some(&b"7"[..]));

    // Dropping handles leaves the rest live on the same watch.
    let last = handles.pop().unwrap();
    drop(handles);
    writer.put("t.999.limit", "5".into()).await.unwrap();
    eventually("the last handle still follows the bucket", Duration::from_secs(3), || last.get().limit == 5).await;
    assert!(last.status().is_healthy(), "{:?}", last.status());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_joining_a_running_watch_starts_with_every_write_made_before() {
    let (server, store, client) = server().await;
    store.create_bucket(&BucketConfig::new("tenants")).await.unwrap();
    let first = tenant(&store, 1).start().await.unwrap();
    let writer = raw(&server, "tenants").await;
    // Each write completes before the next handle starts: the join must not read memory the
    // shared watch has not brought up to date yet (a read of the bucket would see the write).
    let mut joins = Vec::new();
    let mut handles = Vec::new();
    for i in 0..50u32 {
        writer.put("t.2.limit", i.to_string().into()).await.unwrap();
        writer.put("t.2.plan", format!("\"p{i}\"").into()).await.unwrap();
        let started = Instant::now();
        let h = tenant(&store, 2).start().await.unwrap();
        joins.push(started.elapsed());
        assert_eq!((h.get().limit, h.get().plan.clone()), (i, format!("p{i}")), "join {i} starts with the writes before it");
        handles.push(h);
    }
    assert_eq!(consumers(&client, "tenants").await, 1, "51 handles, one consumer");
    writer.put("t.2.limit", "99".into()).await.unwrap();
    eventually("every joined handle follows changes", Duration::from_secs(3), || handles.iter().all(|h| h.get().limit == 99)).await;
    assert_eq!(first.get().limit, 1);
    joins.sort();
    eprintln!("figure: 50 joins after a write, median {:?}, max {:?}", joins[25], joins[49]);
}

#[tokio::test]
async fn a_joining_handle_seeds_its_defaults_and_starts_with_them() {
    let (server, store, client) = server().await;
    let a = tenant(&store, 1).create_if_missing().start().await.unwrap();
    let b = tenant(&store, 2).create_if_missing().start().await.unwrap();
    let writer = raw(&server, "tenants").await;
    for i in [1, 2] {
        assert_eq!(writer.get(&format!("t.{i}.plan")).await.unwrap().as_deref(), Some(&b"\"basic\""[..]), "tenant {i} seeded");
    }
    for h in [&a, &b] {
        assert!(
            matches!(h.get().source("limit"), Some(Provenance::Bucket { .. })),
            "the first snapshot holds the seeded value, not just the default: {:?}",
            h.get().source("limit")
        );
    }
    assert_eq!(consumers(&client, "tenants").await, 1);
}

#[tokio::test]
async fn a_dedicated_watch_and_other_timings_get_their_own_consumer() {
    let (_server, store, client) = server().await;
    let _a = tenant(&store, 1).create_if_missing().start().await.unwrap();
    let _b = tenant(&store, 2).create_if_missing().start().await.unwrap();
    assert_eq!(consumers(&client, "tenants").await, 1);
    let _c = tenant(&store, 3).create_if_missing().dedicated_watch().start().await.unwrap();
    assert_eq!(consumers(&client, "tenants").await, 2, "a dedicated watch is a consumer of its own");
    let _d = tenant(&store, 4).heartbeat(Duration::from_secs(2)).start().await.unwrap();
    assert_eq!(consumers(&client, "tenants").await, 3, "another heartbeat is another watch");
    // A clone of the store shares; a second store on the same connection does not.
    let _e = LiveConfig::<Tenant>::builder(store.clone(), "tenants").prefix("t.5.").heartbeat(HEARTBEAT).load_timeout(LOAD_TIMEOUT).start().await.unwrap();
    assert_eq!(consumers(&client, "tenants").await, 3);
}

/// A lone handle's hub keeps no map of the bucket; the second handle to join builds it with a
/// pass of its own, merged with what the shared watch delivered meanwhile, and that pass leaves
/// no consumer behind. Later handles join the map.
#[tokio::test]
async fn a_second_handle_builds_the_shared_map_and_leaves_one_consumer() {
    let (server, store, client) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("tenants")).await.unwrap();
    bucket.put("t.1.limit", "11".into()).await.unwrap();
    bucket.put("t.2.plan", "\"gold\"".into()).await.unwrap();
    bucket.delete("t.2.plan").await.unwrap();
    let first = tenant(&store, 1).start().await.unwrap();
    assert_eq!(consumers(&client, "tenants").await, 1);
    // Written after the hub's first pass: the second handle gets it from the shared watch or
    // from its own pass, whichever the merge takes.
    let writer = raw(&server, "tenants").await;
    writer.put("t.2.limit", "22".into()).await.unwrap();
    let second = tenant(&store, 2).start().await.unwrap();
    assert_eq!((second.get().limit, second.get().plan.as_str()), (22, "basic"), "the write before the start, and the deleted key's default");
    assert_eq!(consumers(&client, "tenants").await, 1, "the pass that built the map left no consumer behind");
    writer.put("t.3.limit", "33".into()).await.unwrap();
    let third = tenant(&store, 3).start().await.unwrap();
    assert_eq!(third.get().limit, 33, "a later handle joins the map");
    writer.put("t.1.limit", "12".into()).await.unwrap();
    writer.put("t.2.limit", "23".into()).await.unwrap();
    writer.put("t.3.limit", "34".into()).await.unwrap();
    eventually("every handle follows the bucket", Duration::from_secs(3), || {
        first.get().limit == 12 && second.get().limit == 23 && third.get().limit == 34
    })
    .await;
    assert_eq!(consumers(&client, "tenants").await, 1);
}

/// A start that builds the shared map and is cancelled mid-pass (its caller's timeout) leaves no
/// half-built map behind: the next start reads every key. 10,000 other keys make the pass last
/// far longer than the caller's 5 ms (about 100 ms here).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_cancelled_while_it_builds_the_map_leaves_no_partial_map() {
    use futures_util::StreamExt;
    let (_server, store, _client) = server().await;
    let bucket = store.create_bucket(&BucketConfig::new("tenants")).await.unwrap();
    bucket.put("t.2.limit", "22".into()).await.unwrap();
    let puts = futures_util::stream::iter(0..10_000).map(|i| {
        let bucket = bucket.clone();
        async move { bucket.put(&format!("bulk.k{i}"), "1".into()).await.unwrap() }
    });
    assert_eq!(puts.buffer_unordered(256).count().await, 10_000);
    // Each full start reads the 10,001 entries; a loaded machine (a build beside the tests) took
    // over a second, the default load timeout, for the first one too.
    let first = tenant(&store, 1).load_timeout(Duration::from_secs(10)).start().await.unwrap();
    let cancelled = tokio::time::timeout(Duration::from_millis(5), tenant(&store, 2).start()).await;
    assert!(cancelled.is_err(), "the start was still reading when its caller gave up");
    let second = tenant(&store, 2).load_timeout(Duration::from_secs(10)).start().await.unwrap();
    assert_eq!(second.get().limit, 22, "the key written before the cancelled start");
    assert_eq!(first.get().limit, 1);
}

/// A lone handle's hub that reloads a re-created bucket (without a map) serves a second handle
/// the new bucket, not the old one.
#[tokio::test]
async fn a_second_handle_after_a_lone_handles_reload_reads_the_new_bucket() {
    let (_server, store, client) = server().await;
    let first = tenant(&store, 1).create_if_missing().start().await.unwrap();
    first.update(|t| t.limit = 9).await.unwrap();
    store.delete_bucket("tenants").await.unwrap();
    eventually("the missing bucket is reported", Duration::from_secs(3), || stale_reason(&first) == Some(StaleReason::BucketMissing)).await;
    let bucket = store.create_bucket(&BucketConfig::new("tenants")).await.unwrap();
    bucket.put("t.1.limit", "3".into()).await.unwrap();
    bucket.put("t.2.limit", "4".into()).await.unwrap();
    eventually("the lone handle reloaded", Duration::from_secs(3), || first.get().limit == 3 && first.status().is_healthy()).await;
    let second = tenant(&store, 2).start().await.unwrap();
    assert_eq!(second.get().limit, 4);
    assert_eq!(consumers(&client, "tenants").await, 1, "the second handle joined the reloaded watch");
}

/// The second handle on a bucket builds the shared map while atomic batches stream in: its first
/// snapshot never holds half of a batch, and a handle that joins the map after a write starts with
/// it. Each round starts from a lone handle, so every round builds a map.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_map_built_during_atomic_batches_never_holds_half_of_one() {
    let (server, store, _client) = server().await;
    store.create_bucket(&BucketConfig::new("pairs").atomic_writes(true)).await.unwrap();
    // The longer load timeout of the batch tests below: a start may read the bucket afresh.
    fn on<T: KvConfig>(b: kv_config::Builder<T>) -> kv_config::Builder<T> {
        b.heartbeat(HEARTBEAT).load_timeout(Duration::from_secs(5))
    }
    let writer = raw(&server, "pairs").await;
    let (stop, batches) = batch_stream(writer.clone());
    for round in 0..40u32 {
        let first = on(LiveConfig::<Tenant>::builder(store.clone(), "pairs").prefix("t.1.")).start().await.unwrap();
        let pair = on(LiveConfig::<Pair>::builder(store.clone(), "pairs").prefix("p.")).start().await;
        let pair = pair.unwrap_or_else(|e| panic!("round {round}: the map's builder never sees half of a batch: {e}"));
        assert!(same(&pair.get()).is_ok());
        writer.put("t.2.limit", round.to_string().into()).await.unwrap();
        let later = on(LiveConfig::<Tenant>::builder(store.clone(), "pairs").prefix("t.2.")).start().await.unwrap();
        assert_eq!(later.get().limit, round, "round {round}: the join after a write starts with it");
        drop((first, pair, later));
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    eprintln!("figure: 40 map builds during {} atomic batches of {KEYS} keys", batches.await.unwrap());
}

/// Three handles on one watch: two tenants, and a second config on the first tenant's prefix.
async fn three(store: &NatsStore) -> (LiveConfig<Tenant>, LiveConfig<Tenant>, LiveConfig<Limit>) {
    let a = tenant(store, 1).create_if_missing().start().await.unwrap();
    let b = tenant(store, 2).create_if_missing().start().await.unwrap();
    let c = LiveConfig::<Limit>::builder(store.clone(), "tenants").prefix("t.1.").heartbeat(HEARTBEAT).load_timeout(LOAD_TIMEOUT).start().await.unwrap();
    a.update(|t| t.limit = 9).await.unwrap();
    b.update(|t| t.limit = 8).await.unwrap();
    eventually("c sees a's write", Duration::from_secs(3), || c.get().limit == 9).await;
    (a, b, c)
}

fn stale_reason<T: KvConfig>(h: &LiveConfig<T>) -> Option<StaleReason> {
    h.status().stale.map(|s| s.reason)
}

#[tokio::test]
async fn every_handle_on_a_shared_watch_reports_a_killed_server_and_converges() {
    let (mut server, store, _client) = server().await;
    let (a, b, c) = three(&store).await;
    server.kill();
    eventually("every handle reports it", Duration::from_secs(3), || {
        !a.status().is_current() && !b.status().is_current() && !c.status().is_current()
    })
    .await;
    assert_eq!((a.get().limit, b.get().limit, c.get().limit), (9, 8, 9), "the last good snapshots stay");
    server.restart().await;
    let writer = raw(&server, "tenants").await;
    writer.put("t.1.limit", "21".into()).await.unwrap();
    writer.put("t.2.limit", "22".into()).await.unwrap();
    // async-nats reconnects with a backoff of up to 4 s between attempts.
    eventually("every handle converged", Duration::from_secs(8), || {
        a.get().limit == 21 && b.get().limit == 22 && c.get().limit == 21
    })
    .await;
    eventually("every handle current again", Duration::from_secs(3), || {
        a.status().is_current() && b.status().is_current() && c.status().is_current()
    })
    .await;
}

#[tokio::test]
async fn every_handle_on_a_shared_watch_reports_a_frozen_server_and_recovers() {
    let (mut server, store, _client) = server().await;
    let (a, b, c) = three(&store).await;
    server.pause();
    let noticed = eventually("every handle reports no response", HEARTBEAT * 4 + Duration::from_millis(500), || {
        [stale_reason(&a), stale_reason(&b), stale_reason(&c)].iter().all(|r| *r == Some(StaleReason::NoResponse))
    })
    .await;
    // A handle started now does not join memory that may be behind: it asks the server, which
    // cannot answer, and says so within its load timeout.
    let started = Instant::now();
    let err = tenant(&store, 3).start().await.unwrap_err();
    assert!(matches!(&err, Error::Store(e) if e.to_string().contains("tenants")), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3), "bounded: {:?}", started.elapsed());
    tokio::time::sleep(Duration::from_secs(3).saturating_sub(noticed)).await;
    server.resume();
    raw(&server, "tenants").await.put("t.2.limit", "5".into()).await.unwrap();
    eventually("recovered", Duration::from_secs(5), || {
        b.get().limit == 5 && a.status().is_current() && b.status().is_current() && c.status().is_current()
    })
    .await;
    let d = tenant(&store, 3).start().await.expect("starts once the server answers");
    assert_eq!(d.get().limit, 1);
}

#[tokio::test]
async fn every_handle_on_a_shared_watch_reloads_a_recreated_bucket() {
    let (_server, store, _client) = server().await;
    let (a, b, c) = three(&store).await;
    store.delete_bucket("tenants").await.unwrap();
    eventually("every handle reports the missing bucket", Duration::from_secs(3), || {
        [stale_reason(&a), stale_reason(&b), stale_reason(&c)].iter().all(|r| *r == Some(StaleReason::BucketMissing))
    })
    .await;
    assert_eq!((a.get().limit, b.get().limit, c.get().limit), (9, 8, 9), "the last good snapshots stay");
    // Re-created with other values: revisions start again at 1.
    let bucket = store.create_bucket(&BucketConfig::new("tenants")).await.unwrap();
    bucket.put("t.1.limit", "3".into()).await.unwrap();
    bucket.put("t.2.limit", "4".into()).await.unwrap();
    eventually("every handle reloaded", Duration::from_secs(3), || {
        a.get().limit == 3 && b.get().limit == 4 && c.get().limit == 3
    })
    .await;
    for s in [a.status(), b.status(), c.status()] {
        assert!(s.is_healthy() && s.reloads == 1, "{s:?}");
    }
    b.update(|t| t.limit = 6).await.expect("writes work on the new bucket");
    assert_eq!((a.get().limit, b.get().limit), (3, 6));
}

fn same(p: &Pair) -> Result<(), String> {
    let mut values: Vec<u32> = p.v.values().copied().collect();
    values.dedup();
    if values.len() <= 1 && (p.v.is_empty() || p.v.len() == KEYS) {
        Ok(())
    } else {
        Err(format!("{} keys with values {values:?}", p.v.len()))
    }
}

const KEYS: usize = 200;

/// Every key of a [`Pair`] set to `i`, for one atomic batch.
fn pair_batch(i: u32) -> Vec<WriteOp> {
    let v = bytes::Bytes::from(i.to_string());
    (0..KEYS).map(|k| WriteOp::put(format!("p.v.k{k}"), v.clone())).collect()
}

/// Writes [`pair_batch`] 1, 2, 3 ... with `writer` until the returned flag is set; the task
/// returns the last batch written.
fn batch_stream(writer: std::sync::Arc<dyn Bucket>) -> (std::sync::Arc<std::sync::atomic::AtomicBool>, tokio::task::JoinHandle<u32>) {
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let task = tokio::spawn({
        let stop = stop.clone();
        async move {
            let mut i = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                i += 1;
                writer.write_atomic(pair_batch(i)).await.unwrap();
            }
            i
        }
    });
    (stop, task)
}

/// Two hundred keys that are only valid together, always written in one atomic batch.
#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
#[kv(validate = same)]
struct Pair {
    v: std::collections::HashMap<String, u32>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handle_joining_during_an_atomic_batch_never_starts_with_half_of_it() {
    let (server, store, _client) = server().await;
    store.create_bucket(&BucketConfig::new("pairs").atomic_writes(true)).await.unwrap();
    // A longer load timeout than the other tests': a join may have to read the bucket afresh
    // (the hub is behind the writer), and under this stream of batches on a loaded 2-core machine
    // that took over 1 s once (3 busy loops beside the test).
    let pair = || LiveConfig::<Pair>::builder(store.clone(), "pairs").prefix("p.").heartbeat(HEARTBEAT).load_timeout(Duration::from_secs(5));
    let first = pair().start().await.unwrap();
    let writer = raw(&server, "pairs").await;
    let (stop, batches) = batch_stream(writer);
    let mut joined = 0;
    for _ in 0..200 {
        let h = pair().start().await.expect("a join never sees half of a batch");
        assert!(same(&h.get()).is_ok());
        joined += 1;
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let written = batches.await.unwrap();
    eventually("the first handle caught up", Duration::from_secs(3), || first.get().v.get("k0") == Some(&written)).await;
    assert!(first.status().rejected.is_empty(), "{:?}", first.status());
    eprintln!("figure: {joined} joins during {written} atomic batches of {KEYS} keys");
}

/// Defect (nats-server 2.15 behaviour): a watch started while an atomic batch is being committed
/// on a history-1 bucket can see the batch's keys neither old nor new (the old entries removed,
/// the new ones not yet shown), and its pending count reads 0 without them. A one-shot load, a
/// dedicated start or a shared hub's first read then missed those keys (13 of 4,000 loads under
/// load), or all of them (the watch announced nothing: an empty config). The read now goes on
/// when it got fewer entries than announced, or none, and the server holds more.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_started_during_a_stream_of_atomic_batches_never_miss_a_key() {
    let (server, store, _client) = server().await;
    store.create_bucket(&BucketConfig::new("pairs").atomic_writes(true)).await.unwrap();
    let writer = raw(&server, "pairs").await;
    writer.write_atomic(pair_batch(0)).await.unwrap();
    let (stop, batches) = batch_stream(writer);
    let reader = raw(&server, "pairs").await;
    for n in 0..400 {
        let loaded = kv_config::load::<Pair>(&*reader, "p.").await.unwrap_or_else(|e| panic!("load {n}: {e}"));
        assert_eq!(loaded.config.v.len(), KEYS, "load {n}");
        if n % 20 == 0 {
            let h = LiveConfig::<Pair>::builder(store.clone(), "pairs").prefix("p.").dedicated_watch().start().await;
            let h = h.unwrap_or_else(|e| panic!("dedicated start {n}: {e}"));
            assert_eq!(h.get().v.len(), KEYS, "dedicated start {n}");
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    eprintln!("figure: 400 loads and 20 starts during {} atomic batches of {KEYS} keys", batches.await.unwrap());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_load_under_another_prefix_does_not_hold_up_a_handles_own_write() {
    let (server, store, _client) = server().await;
    // The load takes about 10 s; each write of `a` must be in effect within 2 s of it. Typical is
    // 40-200 ms; 750 ms was once exceeded with another test's batch stream running beside.
    let a = tenant(&store, 1).create_if_missing().write_timeout(Duration::from_secs(2)).start().await.unwrap();
    let bulk = raw(&server, "tenants").await;
    // Another service loads 40,000 keys under its own prefix, many writes in flight at once: the
    // shared watch is behind the whole time, with entries pending.
    let load_started = Instant::now();
    let load = tokio::spawn(async move {
        use futures_util::StreamExt;
        futures_util::stream::iter(0..40_000)
            .map(|i| {
                let bulk = bulk.clone();
                async move { bulk.put(&format!("bulk.k{i}"), "\"x\"".into()).await.unwrap() }
            })
            .buffer_unordered(512)
            .count()
            .await
    });
    let mut slowest = Duration::ZERO;
    let mut writes = 0;
    while !load.is_finished() {
        writes += 1;
        let started = Instant::now();
        a.update(|t| t.limit = writes).await.expect("a's own write is in effect within its write timeout");
        slowest = slowest.max(started.elapsed());
        assert_eq!(a.get().limit, writes);
    }
    assert_eq!(load.await.unwrap(), 40_000);
    let took = load_started.elapsed();
    assert!(writes > 1, "the load ran while a wrote");
    assert!(slowest < took / 2, "a's writes waited for the load: slowest {slowest:?} of a {took:?} load");
    eprintln!("figure: {writes} writes during a 40,000-key load under another prefix ({took:?}), slowest {slowest:?}");
}
