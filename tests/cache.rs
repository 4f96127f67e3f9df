//! The last-known-good cache file (issue 10, item 3) against real nats-server processes: a
//! handle starts from its cache while the server is down or the bucket is missing, converges once
//! the server is back (resuming after the cached revision when it can), and never trusts a
//! corrupt or foreign file.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use kv_config::store::{Bucket, BucketConfig, NatsStore, Store, StoreErrorKind};
use kv_config::{CacheProblem, Error, KvConfig, LiveConfig, StaleReason};
use kv_config_testing::{eventually, NatsServer};
use serde::{Deserialize, Serialize};

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct App {
    #[kv(default = 8080)]
    port: u16,
    #[kv(default = "hello")]
    greeting: String,
    #[kv(secret, default = "tok-default")]
    token: String,
}

/// Another config type with the name `App` and one more field: another schema.
mod v2 {
    use super::*;
    #[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
    pub struct App {
        #[kv(default = 8080)]
        pub port: u16,
        #[kv(default = "hello")]
        pub greeting: String,
        #[kv(secret, default = "tok-default")]
        pub token: String,
        #[kv(default = 1)]
        pub workers: u32,
    }
}

#[derive(KvConfig, Clone, PartialEq, Serialize, Deserialize)]
struct Secretive {
    #[kv(secret)]
    password: String,
    #[kv(default = 1)]
    n: u32,
}

const HEARTBEAT: Duration = Duration::from_millis(250);

/// A directory for cache files, removed when dropped. `tempfile` names it at random: a name made
/// of the process id could meet a directory left behind by an earlier run with the same id.
struct Dir(tempfile::TempDir);

impl Dir {
    fn new() -> Dir {
        Dir(tempfile::Builder::new().prefix("kvc-cache-test-").tempdir().expect("temp dir"))
    }
    fn file(&self) -> PathBuf {
        self.0.path().join("app.cache")
    }
}

/// A store that can be created while the server is down (the client connects in the background).
async fn store(server: &NatsServer) -> NatsStore {
    let options = async_nats::ConnectOptions::new().retry_on_initial_connect();
    NatsStore::connect(server.url(), options).await.expect("connect")
}

async fn raw(server: &NatsServer) -> std::sync::Arc<dyn Bucket> {
    let store = NatsStore::new(async_nats::connect(server.url()).await.expect("connect"));
    store.open_bucket("cfg").await.expect("open")
}

fn builder<T: KvConfig>(store: &NatsStore, path: &Path) -> kv_config::Builder<T> {
    LiveConfig::<T>::builder(store.clone(), "cfg").heartbeat(HEARTBEAT).cache_file(path).cache_wait(Duration::from_millis(500))
}

/// Runs a handle with a cache until the cache holds its latest snapshot, then drops it.
async fn run_and_save<T: KvConfig>(server: &NatsServer, path: &Path, secrets: bool, change: impl FnMut(&mut T) + Send) -> u64 {
    let store = store(server).await;
    let a = builder::<T>(&store, path).create_if_missing().cache_secrets(secrets).start().await.expect("start A");
    a.update(change).await.expect("update");
    let revision = a.get().revision();
    eventually("the cache holds the latest snapshot", Duration::from_secs(5), || a.status().cache_revision == Some(revision)).await;
    revision
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_down_at_boot_starts_from_the_cache_then_resumes_after_the_cached_revision() {
    let mut server = NatsServer::start().await;
    let dir = Dir::new();
    let cached = run_and_save::<App>(&server, &dir.file(), false, |c| c.port = 9000).await;
    // Changed while no handle runs: the cache does not have it.
    let changed = raw(&server).await.put("greeting", "\"changed\"".into()).await.expect("put");
    server.stop();

    let store = store(&server).await;
    let b = builder::<App>(&store, &dir.file()).create_if_missing().start().await.expect("start from the cache");
    assert_eq!((b.get().port, b.get().greeting.as_str()), (9000, "hello"), "the cached config");
    assert_eq!(b.get().revision(), cached);
    let status = b.status();
    assert!(matches!(status.stale.map(|s| s.reason), Some(StaleReason::FromCache { .. })), "{status:?}");
    assert!(!status.connected && !status.is_current());
    let age = status.cache_age().expect("from the cache");
    assert!(age < Duration::from_secs(60), "cache age {age:?}");
    let err = b.bucket().put("port", "1".into()).await.expect_err("no server yet");
    assert_eq!(*err.kind(), StoreErrorKind::Connection, "{err}");

    server.restart().await;
    // async-nats reconnects with a backoff of up to 4 s between attempts.
    eventually("converged on the bucket's value", Duration::from_secs(15), || b.get().greeting == "changed").await;
    eventually("current again", Duration::from_secs(5), || b.status().is_current()).await;
    let status = b.status();
    assert_eq!(status.resumed_from, Some(cached + 1), "resumed after the cached revision");
    assert_eq!(status.reloads, 0, "no full load");
    assert_eq!(status.from_cache, None);
    assert_eq!(b.get().revision(), changed);
    b.update(|c| c.port = 9100).await.expect("writes work once connected");
    assert_eq!(b.get().port, 9100);
    // The watch the handle made on reaching the server goes on in the same bucket when its
    // consumer is re-made (after three silent seconds): no error, no new watch, no reload. The
    // change is written once the new consumer exists, so the handle's own check (a quarter
    // second here) never finds it undelivered and re-creates the watch itself.
    let before = b.status();
    assert_eq!(common::delete_consumers(&server, "cfg").await, 1, "the handle's watch");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while common::consumers(&server, "cfg").await.is_empty() {
        assert!(std::time::Instant::now() < deadline, "no new consumer within 10 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    raw(&server).await.put("greeting", "\"again\"".into()).await.expect("put");
    eventually("a change after the consumer was deleted", Duration::from_secs(10), || b.get().greeting == "again").await;
    let status = b.status();
    assert!(status.watch_restarts == before.watch_restarts && status.reloads == 0 && status.last_error == before.last_error, "{status:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_cache_with_nothing_new_stops_saying_from_cache() {
    let mut server = NatsServer::start().await;
    let dir = Dir::new();
    let cached = run_and_save::<App>(&server, &dir.file(), false, |c| c.port = 9000).await;
    server.stop();
    let store = store(&server).await;
    let b = builder::<App>(&store, &dir.file()).start().await.expect("start from the cache");
    assert!(b.status().from_cache.is_some());
    server.restart().await;
    // Nothing changed in the bucket: no entry arrives, yet the snapshot must become the
    // bucket's (the server confirmed it) rather than keep claiming to be the cache's.
    eventually("no longer from the cache", Duration::from_secs(15), || {
        let status = b.status();
        status.from_cache.is_none() && status.is_current()
    })
    .await;
    assert_eq!(b.status().resumed_from, Some(cached + 1));
    assert!(matches!(b.get().source("port"), Some(kv_config::Provenance::Bucket { .. })), "{:?}", b.get().source("port"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wiped_store_means_a_full_load_not_a_resume() {
    let mut server = NatsServer::start().await;
    let dir = Dir::new();
    run_and_save::<App>(&server, &dir.file(), false, |c| c.port = 9000).await;
    server.restart_wiped().await;

    // The server is up but the bucket is gone (and not to be created): start from the cache.
    let store = store(&server).await;
    let b = builder::<App>(&store, &dir.file()).start().await.expect("start from the cache");
    assert_eq!(b.get().port, 9000);
    assert!(matches!(b.status().stale.map(|s| s.reason), Some(StaleReason::FromCache { .. })));
    let err = b.bucket().get("port").await.expect_err("no bucket yet");
    assert_eq!(*err.kind(), StoreErrorKind::NotFound, "{err}");

    let admin = NatsStore::new(async_nats::connect(server.url()).await.expect("connect"));
    let bucket = admin.create_bucket(&BucketConfig::new("cfg").history(10)).await.expect("create");
    bucket.put("port", "7000".into()).await.expect("put");
    eventually("loaded the new bucket", Duration::from_secs(10), || b.get().port == 7000 && b.status().is_current()).await;
    let status = b.status();
    assert_eq!(status.resumed_from, None, "another incarnation: no resume");
    assert_eq!(status.reloads, 1, "a full load");
    assert_eq!(b.get().greeting, "hello", "the new bucket has no greeting: the default, not the cached value");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cache_of_another_bucket_prefix_or_schema_is_refused() {
    let mut server = NatsServer::start().await;
    let dir = Dir::new();
    run_and_save::<App>(&server, &dir.file(), false, |c| c.port = 9000).await;
    let before = std::fs::read(dir.file()).expect("cache");
    let store = store(&server).await;

    let err = builder::<App>(&store, &dir.file()).prefix("other.").create_if_missing().start().await.expect_err("another prefix");
    assert!(
        matches!(&err, Error::Cache { problem: CacheProblem::Foreign { what: "prefix", .. }, .. }),
        "{err}"
    );
    let msg = err.to_string();
    assert!(msg.contains(&dir.file().display().to_string()) && msg.contains("prefix is ``"), "{msg}");

    let err = LiveConfig::<App>::builder(store.clone(), "other")
        .cache_file(dir.file())
        .create_if_missing()
        .start()
        .await
        .expect_err("another bucket");
    assert!(matches!(&err, Error::Cache { problem: CacheProblem::Foreign { what: "bucket", .. }, .. }), "{err}");
    assert_eq!(std::fs::read(dir.file()).expect("cache"), before, "another config's file is left alone");

    server.stop();
    let err = builder::<v2::App>(&store, &dir.file()).start().await.expect_err("another schema, no server");
    assert!(matches!(&err, Error::NoServerNoCache { problem: CacheProblem::Foreign { what: "schema", .. }, .. }), "{err}");
    let msg = err.to_string();
    assert!(msg.contains("bucket `cfg` could not be read") && msg.contains("schema"), "{msg}");

    // With the server up, the config's older schema is only a warning and the first save
    // replaces the file with one the new schema can start from.
    server.restart().await;
    let store = self::store(&server).await;
    let c = builder::<v2::App>(&store, &dir.file()).start().await.expect("server up");
    let revision = c.get().revision();
    eventually("cache saved", Duration::from_secs(5), || c.status().cache_revision == Some(revision)).await;
    drop(c);
    server.stop();
    let d = builder::<v2::App>(&store, &dir.file()).start().await.expect("the replaced cache has the new schema");
    assert_eq!((d.get().port, d.get().workers), (9000, 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_cache_is_refused_without_a_server_and_replaced_with_one() {
    let mut server = NatsServer::start().await;
    let dir = Dir::new();
    run_and_save::<App>(&server, &dir.file(), false, |c| c.port = 9000).await;
    let good = std::fs::read(dir.file()).expect("cache");
    server.stop();
    let store = store(&server).await;

    let mut flipped = good.clone();
    let at = flipped.len() / 2;
    flipped[at] ^= 0x04;
    for (what, bytes) in [("flipped byte", flipped), ("truncated", good[..good.len() - 7].to_vec())] {
        std::fs::write(dir.file(), &bytes).expect("write");
        let err = builder::<App>(&store, &dir.file()).start().await.expect_err(what);
        assert!(matches!(&err, Error::NoServerNoCache { problem: CacheProblem::Corrupt(_), .. }), "{what}: {err}");
        assert!(err.to_string().contains("checksum mismatch"), "{what}: {err}");
    }
    std::fs::write(dir.file(), b"").expect("write");
    let err = builder::<App>(&store, &dir.file()).start().await.expect_err("empty file");
    assert!(matches!(&err, Error::NoServerNoCache { problem: CacheProblem::Corrupt(_), .. }), "{err}");
    std::fs::remove_file(dir.file()).expect("rm");
    let err = builder::<App>(&store, &dir.file()).start().await.expect_err("no file");
    assert!(matches!(&err, Error::NoServerNoCache { problem: CacheProblem::Missing, .. }), "{err}");

    // With the server up a corrupt cache is a warning, and the first save replaces it.
    std::fs::write(dir.file(), &good[..good.len() / 2]).expect("write");
    server.restart().await;
    let store = self::store(&server).await;
    let c = builder::<App>(&store, &dir.file()).start().await.expect("server up");
    let revision = c.get().revision();
    eventually("cache saved", Duration::from_secs(5), || c.status().cache_revision == Some(revision)).await;
    drop(c);
    server.stop();
    let d = builder::<App>(&store, &dir.file()).start().await.expect("the replaced cache is valid");
    assert_eq!(d.get().port, 9000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn secrets_are_cached_only_on_request() {
    let mut server = NatsServer::start().await;
    let dir = Dir::new();
    run_and_save::<App>(&server, &dir.file(), false, |c| c.token = "s3cr3t-value".into()).await;
    let file = std::fs::read_to_string(dir.file()).expect("cache");
    assert!(!file.contains("s3cr3t-value"), "secret written by default: {file}");

    // A cache that left the secret out starts on the default, and is never resumed from: the
    // first contact loads the bucket in full, secret included.
    server.stop();
    let store = store(&server).await;
    let b = builder::<App>(&store, &dir.file()).start().await.expect("start from the cache");
    assert_eq!(b.get().token, "tok-default");
    server.restart().await;
    eventually("the real secret loaded", Duration::from_secs(15), || b.get().token == "s3cr3t-value").await;
    assert_eq!(b.status().resumed_from, None);
    drop(b);

    let dir2 = Dir::new();
    run_and_save::<App>(&server, &dir2.file(), true, |c| c.port = 1).await;
    let file = std::fs::read_to_string(dir2.file()).expect("cache");
    assert!(file.contains("s3cr3t-value"), "opted in, the secret is written");

    // A required secret left out: starting from that cache fails and says why.
    let dir3 = Dir::new();
    let admin = raw(&server).await;
    admin.put("password", "\"pw-123456\"".into()).await.expect("put");
    run_and_save::<Secretive>(&server, &dir3.file(), false, |c| c.n = 2).await;
    server.stop();
    let err = builder::<Secretive>(&store, &dir3.file()).start().await.expect_err("required secret not cached");
    assert!(err.to_string().contains("leaves out the secret `password`"), "{err}");
}

/// A handle started from a cache that left the secret out reaches the server again: an update
/// that commits while the bucket is loaded in full (30,000 other keys make that take a while)
/// must not apply itself to the cache's view, which lacks the secret: it never returns a state
/// the bucket did not have.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_as_a_cache_started_handle_reaches_the_server_never_returns_the_caches_state() {
    let mut server = NatsServer::start().await;
    let dir = Dir::new();
    let js = async_nats::jetstream::new(async_nats::connect(server.url()).await.expect("connect"));
    NatsStore::new(async_nats::connect(server.url()).await.expect("connect")).create_bucket(&BucketConfig::new("cfg")).await.expect("bucket");
    for chunk in 0..30 {
        let mut acks = Vec::new();
        for i in 0..1000 {
            acks.push(js.publish(format!("$KV.cfg.other.k{chunk}_{i}"), "1".into()).await.expect("publish"));
        }
        for ack in acks {
            ack.await.expect("stored");
        }
    }
    run_and_save::<App>(&server, &dir.file(), false, |c| c.token = "s3cr3t-value".into()).await;
    server.stop();
    let store = store(&server).await;
    let b = builder::<App>(&store, &dir.file()).start().await.expect("start from the cache");
    assert_eq!(b.get().token, "tok-default");
    server.restart().await;
    let started = std::time::Instant::now();
    for n in 1.. {
        match b.update(|c| c.port = 2000 + n).await {
            Ok(s) => {
                assert_eq!(s.token, "s3cr3t-value", "update {n} returned the cache's view as the bucket's state");
                break;
            }
            Err(e) => {
                assert!(started.elapsed() < Duration::from_secs(30), "no update went through: {e}");
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
    }
    assert_eq!(b.get().token, "s3cr3t-value");
}
