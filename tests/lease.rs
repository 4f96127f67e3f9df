//! `Lease` against a real nats-server (issue 10 item 1): exclusive acquire, refresh, release,
//! takeover, expiry, and a holder in another OS process that is killed -9 or paused.
//!
//! Waits are conditions with deadlines derived from the TTL; the only sleeps are the faults' own
//! durations.
//!
//! The other process: this test binary runs itself again (`current_exe()`) with a filter for the
//! `#[ignore]`d test `lease_holder_process`, which calls `examples/lease_holder.rs`'s `run` (the
//! file is included below). No second build is needed (cargo builds examples only for some
//! commands, and a nested `cargo build` from a test would wait on cargo's lock), and the holder
//! code is the example's.

#[path = "../examples/lease_holder.rs"]
#[allow(dead_code)]
mod lease_holder;

use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;
use kv_config::store::{Bucket, BucketConfig, NatsStore, Operation, Store, StoreErrorKind, WatchStart};
use kv_config::{Lease, LeaseError, LostReason};
use kv_config_testing::NatsServer;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdout, Command};
use tokio::time::{timeout, Instant};

const TTL: Duration = Duration::from_secs(1);
/// How late the server's expiry may come after the TTL (its expiry timer), and the slack for a
/// loaded machine.
const EXPIRY_SLACK: Duration = Duration::from_secs(1);
const HOLDER_ENV: &str = "KV_LEASE_HOLDER_ARGS";

/// A bucket with per-key TTLs on its own connection to `server`.
async fn bucket(server: &NatsServer, name: &str) -> Arc<dyn Bucket> {
    let client = async_nats::connect(server.url()).await.expect("connect to test server");
    NatsStore::new(client)
        .create_bucket(&BucketConfig::new(name).key_ttl(Duration::from_secs(1)))
        .await
        .expect("create bucket")
}

/// A second client of the same bucket (another connection).
async fn other_client(server: &NatsServer, name: &str) -> Arc<dyn Bucket> {
    let client = async_nats::connect(server.url()).await.expect("connect to test server");
    NatsStore::new(client).open_bucket(name).await.expect("open bucket")
}

/// Acquires as `holder`, retrying every 20 ms while someone else holds the key, until `within`.
async fn acquire_within(bucket: &Arc<dyn Bucket>, key: &str, ttl: Duration, holder: &str, within: Duration) -> Lease {
    let deadline = Instant::now() + within;
    loop {
        match Lease::acquire_as(bucket.clone(), key, ttl, holder).await {
            Ok(lease) => return lease,
            Err(LeaseError::Held { .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("{holder} could not acquire `{key}` within {within:?}: {e}"),
        }
    }
}

async fn lost_within(lease: &Lease, within: Duration) -> LostReason {
    timeout(within, lease.lost())
        .await
        .unwrap_or_else(|_| panic!("lease `{}` not reported lost within {within:?}", lease.key()))
}

#[tokio::test]
async fn acquire_is_exclusive_and_names_the_holder() {
    let server = NatsServer::start().await;
    let a_bucket = bucket(&server, "locks").await;
    let b_bucket = other_client(&server, "locks").await;
    let a = Lease::acquire_as(a_bucket.clone(), "leader", Duration::from_secs(5), "node-a").await.unwrap();
    assert_eq!(a.key(), "leader");

    let err = Lease::acquire_as(b_bucket.clone(), "leader", Duration::from_secs(5), "node-b").await.unwrap_err();
    match &err {
        LeaseError::Held { bucket, key, holder, revision } => {
            assert_eq!((bucket.as_str(), key.as_str(), holder.as_deref()), ("locks", "leader", Some("node-a")));
            assert_eq!(*revision, a.revision());
        }
        other => panic!("expected Held, got {other:?}"),
    }
    let msg = err.to_string();
    assert!(msg.contains("`leader`") && msg.contains("`locks`") && msg.contains("`node-a`"), "{msg}");

    // The value is JSON naming the holder, readable by any client.
    let value = b_bucket.get("leader").await.unwrap().expect("lease value");
    let json: serde_json::Value = serde_json::from_slice(&value).unwrap();
    assert_eq!(json["holder"], "node-a");
    assert_eq!(json["ttl_secs"], 5);

    // Other keys are other leases.
    Lease::acquire_as(b_bucket.clone(), "jobs.nightly", Duration::from_secs(5), "node-b").await.unwrap();

    // A bucket without per-key TTLs says so.
    let client = async_nats::connect(server.url()).await.unwrap();
    let plain = NatsStore::new(client).create_bucket(&BucketConfig::new("plain")).await.unwrap();
    match Lease::acquire(plain, "leader", TTL).await.unwrap_err() {
        LeaseError::Store(e) => assert_eq!(*e.kind(), StoreErrorKind::KeyTtlDisabled, "{e}"),
        other => panic!("expected KeyTtlDisabled, got {other:?}"),
    }
    assert!(a.lost_reason().is_none());
}

#[tokio::test]
async fn refresh_keeps_the_lease_past_its_ttl() {
    let server = NatsServer::start().await;
    let a_bucket = bucket(&server, "locks").await;
    let b_bucket = other_client(&server, "locks").await;
    let a = Lease::acquire_as(a_bucket, "leader", TTL, "node-a").await.unwrap();
    let first = a.revision();
    let refreshed = a.refresh().await.unwrap();
    assert!(refreshed > first);
    assert_eq!(a.revision(), refreshed);

    let a = a.keep_alive();
    // Three TTLs; manual refreshes alongside the keep-alive must not refuse each other.
    let until = Instant::now() + TTL * 3;
    while Instant::now() < until {
        match Lease::acquire_as(b_bucket.clone(), "leader", TTL, "node-b").await {
            Err(LeaseError::Held { holder, .. }) => assert_eq!(holder.as_deref(), Some("node-a")),
            other => panic!("node-b got past a kept-alive lease: {other:?}"),
        }
        a.refresh().await.unwrap();
        tokio::time::sleep(TTL / 5).await;
    }
    assert!(a.lost_reason().is_none(), "{:?}", a.lost_reason());
    assert!(a.revision() > refreshed + 3);
    let entry = b_bucket.entry("leader").await.unwrap().unwrap();
    assert_eq!((entry.operation, entry.revision), (Operation::Put, a.revision()));
}

#[tokio::test]
async fn release_lets_another_acquire_at_once() {
    let server = NatsServer::start().await;
    let a_bucket = bucket(&server, "locks").await;
    let b_bucket = other_client(&server, "locks").await;
    let a = Lease::acquire_as(a_bucket, "leader", Duration::from_secs(30), "node-a").await.unwrap().keep_alive();
    let lost = tokio::spawn(a.lost());
    a.release().await.unwrap();
    let b = Lease::acquire_as(b_bucket.clone(), "leader", Duration::from_secs(30), "node-b").await.unwrap();
    assert!(matches!(timeout(TTL, lost).await.unwrap().unwrap(), LostReason::Released));
    b.refresh().await.unwrap();
    assert!(b.lost_reason().is_none());
}

#[tokio::test]
async fn release_after_takeover_is_refused() {
    let server = NatsServer::start().await;
    let a_bucket = bucket(&server, "locks").await;
    let b_bucket = other_client(&server, "locks").await;
    let acquired = Instant::now();
    let a = Lease::acquire_as(a_bucket, "leader", TTL, "node-a").await.unwrap();
    let mut watch = b_bucket.watch("leader", WatchStart::FromRevision(a.revision() + 1)).await.unwrap();
    // No refresh: the holder gives the lease up by itself once the TTL has passed.
    let reason = lost_within(&a, TTL + EXPIRY_SLACK).await;
    assert!(matches!(reason, LostReason::TtlElapsed { .. } | LostReason::Expired { .. }), "{reason:?}");
    assert!(acquired.elapsed() >= TTL - Duration::from_millis(50), "lost after only {:?}", acquired.elapsed());
    // The server's expiry reaches watchers as a purge marker (the bucket has per-key TTLs).
    let marker = timeout(TTL + EXPIRY_SLACK, watch.next()).await.expect("no expiry marker").unwrap().unwrap();
    assert_eq!(marker.operation, Operation::Purge, "{marker:?}");

    let b = acquire_within(&b_bucket, "leader", TTL * 5, "node-b", TTL + EXPIRY_SLACK).await;
    assert!(
        acquired.elapsed() <= TTL + EXPIRY_SLACK + Duration::from_millis(500),
        "node-b acquired only after {:?}",
        acquired.elapsed()
    );

    match a.refresh().await.unwrap_err() {
        LeaseError::Lost { .. } => {}
        other => panic!("a lost lease refreshed: {other:?}"),
    }
    let a_revision = a.revision();
    match a.release().await.unwrap_err() {
        LeaseError::Lost { bucket, key, revision, reason: LostReason::TakenOver { revision: taken, holder } } => {
            assert_eq!((bucket.as_str(), key.as_str(), revision), ("locks", "leader", a_revision));
            assert_eq!((taken, holder.as_deref()), (b.revision(), Some("node-b")));
        }
        other => panic!("expected Lost(TakenOver), got {other:?}"),
    }
    let entry = b_bucket.entry("leader").await.unwrap().unwrap();
    assert_eq!((entry.operation, entry.revision), (Operation::Put, b.revision()), "node-b's lease was touched");
    assert!(b.lost_reason().is_none());
}

#[tokio::test]
async fn another_write_or_a_delete_loses_the_lease() {
    let server = NatsServer::start().await;
    let a_bucket = bucket(&server, "locks").await;
    let rogue = other_client(&server, "locks").await;
    let a = Lease::acquire_as(a_bucket.clone(), "leader", Duration::from_secs(30), "node-a").await.unwrap().keep_alive();
    let c = Lease::acquire_as(a_bucket, "jobs.nightly", Duration::from_secs(30), "node-a").await.unwrap();

    let put = rogue.put("leader", "\"mine now\"".into()).await.unwrap();
    match lost_within(&a, TTL).await {
        LostReason::TakenOver { revision, holder: None } => assert_eq!(revision, put),
        other => panic!("expected TakenOver, got {other:?}"),
    }
    let del = rogue.delete("jobs.nightly").await.unwrap();
    match lost_within(&c, TTL).await {
        LostReason::Deleted { revision } => assert_eq!(revision, del),
        other => panic!("expected Deleted, got {other:?}"),
    }
    assert!(matches!(c.refresh().await, Err(LeaseError::Lost { reason: LostReason::Deleted { .. }, .. })));
    // The keep-alive stopped and wrote nothing over the rogue value.
    assert_eq!(rogue.entry("leader").await.unwrap().unwrap().revision, put);
}

#[tokio::test]
async fn a_holder_whose_refreshes_stop_learns_it_lost() {
    let server = NatsServer::start().await;
    let a_bucket = bucket(&server, "locks").await;
    let b_bucket = other_client(&server, "locks").await;
    let mut a = Lease::acquire_as(a_bucket, "leader", TTL, "node-a").await.unwrap().keep_alive();
    // Held past its TTL while the keep-alive runs.
    let until = Instant::now() + TTL + TTL / 2;
    while Instant::now() < until {
        assert!(a.lost_reason().is_none());
        tokio::time::sleep(TTL / 10).await;
    }
    let stopped = Instant::now();
    a.stop_keep_alive(); // a stalled holder: its refreshes stop
    let reason = lost_within(&a, TTL + Duration::from_millis(200)).await;
    assert!(matches!(reason, LostReason::TtlElapsed { .. } | LostReason::Expired { .. }), "{reason:?}");
    // Then the server expires it and another holder gets it.
    acquire_within(&b_bucket, "leader", TTL, "node-b", TTL + EXPIRY_SLACK).await;
    assert!(stopped.elapsed() <= TTL + EXPIRY_SLACK + Duration::from_millis(200), "{:?}", stopped.elapsed());
}

#[tokio::test]
async fn an_unreachable_server_past_the_ttl_is_a_loss() {
    let mut server = NatsServer::start().await;
    let a_bucket = bucket(&server, "locks").await;
    let a = Lease::acquire_as(a_bucket, "leader", TTL, "node-a").await.unwrap().keep_alive();
    a.refresh().await.unwrap();
    server.pause(); // SIGSTOP: the holder hears nothing at all
    let paused = Instant::now();
    let reason = lost_within(&a, TTL + Duration::from_millis(300)).await;
    server.resume();
    assert!(matches!(reason, LostReason::TtlElapsed { .. }), "{reason:?}");
    assert!(paused.elapsed() <= TTL + Duration::from_millis(300));
    assert!(matches!(a.refresh().await, Err(LeaseError::Lost { reason: LostReason::TtlElapsed { .. }, .. })));
}

/// Deletes bucket `name` and creates it again (per-key TTLs on) from another connection: what an
/// operator's reset, or a service re-creating a lost bucket with `create_if_missing`, does. The
/// new bucket's revisions start again at 1.
async fn replace_bucket(server: &NatsServer, name: &str) -> Arc<dyn Bucket> {
    let client = async_nats::connect(server.url()).await.expect("connect to test server");
    let store = NatsStore::new(client);
    store.delete_bucket(name).await.expect("delete bucket");
    store.create_bucket(&BucketConfig::new(name).key_ttl(Duration::from_secs(1))).await.expect("create bucket again")
}

/// node-a holds `job` at revision 1; the bucket is replaced and node-b acquires `job` in the new
/// one, also at revision 1. node-a's refresh must not write over node-b's lease.
#[tokio::test]
async fn a_refresh_after_the_bucket_was_replaced_is_lost_and_leaves_the_new_holder_alone() {
    let server = NatsServer::start().await;
    let a_bucket = bucket(&server, "locks").await;
    let a = Lease::acquire_as(a_bucket, "job", Duration::from_secs(30), "node-a").await.unwrap();
    let b_bucket = replace_bucket(&server, "locks").await;
    let b = Lease::acquire_as(b_bucket.clone(), "job", Duration::from_secs(30), "node-b").await.unwrap();
    assert_eq!(b.revision(), a.revision(), "precondition: both hold the same revision number");

    let err = a.refresh().await.expect_err("node-a refreshed a lease in a bucket that no longer exists");
    assert!(matches!(err, LeaseError::Lost { reason: LostReason::BucketReplaced { after_write: false }, .. }), "{err:?}");
    assert!(err.to_string().contains("deleted and created again"), "{err}");
    let reason = lost_within(&a, TTL).await;
    assert!(matches!(reason, LostReason::BucketReplaced { .. }), "{reason:?}");
    assert!(reason.to_string().contains("deleted and created again"), "{reason}");

    let entry = b_bucket.entry("job").await.unwrap().unwrap();
    assert_eq!((entry.operation, entry.revision), (Operation::Put, b.revision()), "node-b's lease was touched");
    assert!(String::from_utf8_lossy(&entry.value).contains("node-b"));
    assert!(b.lost_reason().is_none(), "{:?}", b.lost_reason());
    b.refresh().await.unwrap();
}

/// Same for `release`: node-a's release must leave node-b's key alone and say it did not release.
#[tokio::test]
async fn a_release_after_the_bucket_was_replaced_leaves_the_new_holders_key_alone() {
    let server = NatsServer::start().await;
    let a_bucket = bucket(&server, "locks").await;
    let a = Lease::acquire_as(a_bucket, "job", Duration::from_secs(30), "node-a").await.unwrap();
    let a_lost = a.lost();
    let b_bucket = replace_bucket(&server, "locks").await;
    let b = Lease::acquire_as(b_bucket.clone(), "job", Duration::from_secs(30), "node-b").await.unwrap();
    assert_eq!(b.revision(), a.revision(), "precondition: both hold the same revision number");

    let err = a.release().await.expect_err("node-a's release reported success in a bucket that no longer exists");
    match &err {
        LeaseError::Lost { bucket, key, reason: LostReason::BucketReplaced { after_write: false }, .. } => {
            assert_eq!((bucket.as_str(), key.as_str()), ("locks", "job"))
        }
        other => panic!("expected Lost(BucketReplaced), got {other:?}"),
    }
    assert!(err.to_string().contains("deleted and created again"), "{err}");
    let reason = timeout(TTL, a_lost).await.expect("lost() never resolved");
    assert!(reason.to_string().contains("deleted and created again"), "{reason}");

    let entry = b_bucket.entry("job").await.unwrap().unwrap();
    assert_eq!((entry.operation, entry.revision), (Operation::Put, b.revision()), "node-b's lease was touched");
    assert!(b.lost_reason().is_none(), "{:?}", b.lost_reason());
    b.refresh().await.unwrap();
}

/// A holder that does not refresh still learns that its bucket was replaced: the key's watch
/// ends with the old bucket, and the new watch finds another incarnation. Long before the TTL.
#[tokio::test]
async fn a_holder_learns_its_bucket_was_replaced_without_refreshing() {
    let server = NatsServer::start().await;
    let a_bucket = bucket(&server, "locks").await;
    let a = Lease::acquire_as(a_bucket, "job", Duration::from_secs(60), "node-a").await.unwrap();
    let b_bucket = replace_bucket(&server, "locks").await;
    let replaced = Instant::now();
    let b = Lease::acquire_as(b_bucket.clone(), "job", Duration::from_secs(60), "node-b").await.unwrap();
    let reason = lost_within(&a, Duration::from_secs(15)).await;
    eprintln!("node-a learned {:?} after the replacement: {reason}", replaced.elapsed());
    assert!(matches!(reason, LostReason::BucketReplaced { after_write: false }), "{reason:?}");
    let entry = b_bucket.entry("job").await.unwrap().unwrap();
    assert_eq!((entry.operation, entry.revision), (Operation::Put, b.revision()));
    assert!(b.lost_reason().is_none(), "{:?}", b.lost_reason());
}

/// No false alarm: a lease acquired through a handle opened before the bucket was replaced lives
/// in the new bucket, where it refreshes and releases as usual.
#[tokio::test]
async fn a_lease_acquired_through_a_handle_older_than_the_bucket_holds() {
    let server = NatsServer::start().await;
    let old_handle = bucket(&server, "locks").await;
    let new_bucket = replace_bucket(&server, "locks").await;
    let a = Lease::acquire_as(old_handle, "job", Duration::from_secs(30), "node-a").await.unwrap();
    let entry = new_bucket.entry("job").await.unwrap().unwrap();
    assert_eq!((entry.operation, entry.revision), (Operation::Put, a.revision()));
    let refreshed = a.refresh().await.unwrap();
    assert_eq!(new_bucket.entry("job").await.unwrap().unwrap().revision, refreshed);
    assert!(a.lost_reason().is_none(), "{:?}", a.lost_reason());
    a.release().await.unwrap();
    assert_eq!(new_bucket.entry("job").await.unwrap().unwrap().operation, Operation::Delete);
}

/// A lease holder in another OS process (this test binary, running `lease_holder_process`).
struct HolderProcess {
    child: Child,
    lines: tokio::io::Lines<BufReader<ChildStdout>>,
}

impl HolderProcess {
    fn spawn(server: &NatsServer, bucket: &str, key: &str, ttl: Duration, holder: &str) -> HolderProcess {
        let exe = std::env::current_exe().expect("the test binary's path");
        let mut child = Command::new(exe)
            .args(["lease_holder_process", "--exact", "--ignored", "--nocapture", "--test-threads=1"])
            .env(HOLDER_ENV, format!("{} {bucket} {key} {} {holder}", server.url(), ttl.as_secs()))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .expect("spawn the holder process");
        let stdout = child.stdout.take().expect("piped stdout");
        HolderProcess { child, lines: BufReader::new(stdout).lines() }
    }

    /// The first output from `prefix` to the end of its line, within `within` (libtest prints
    /// `test lease_holder_process ... ` before the holder's first line).
    async fn line(&mut self, prefix: &str, within: Duration) -> String {
        let found = timeout(within, async {
            while let Some(line) = self.lines.next_line().await.expect("read the holder's output") {
                if let Some(at) = line.find(prefix) {
                    return line[at..].to_string();
                }
            }
            panic!("the holder process exited before printing `{prefix}`");
        })
        .await;
        found.unwrap_or_else(|_| panic!("the holder process printed no `{prefix}` within {within:?}"))
    }

    fn signal(&self, signal: &str) {
        let pid = self.child.id().expect("the holder is running");
        let status = std::process::Command::new("kill")
            .arg(format!("-{signal}"))
            .arg(pid.to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{signal} {pid} failed");
    }
}

/// The other process of the two-process tests; does nothing unless spawned by them.
#[test]
#[ignore = "the holder process of the two-process lease tests; they run it"]
fn lease_holder_process() {
    let Ok(args) = std::env::var(HOLDER_ENV) else { return };
    let args = lease_holder::Args::parse(args.split(' ').map(String::from)).expect("holder arguments");
    let runtime = tokio::runtime::Runtime::new().expect("tokio runtime");
    runtime.block_on(lease_holder::run(args)).expect("the holder failed");
}

#[tokio::test]
async fn a_killed_holder_process_frees_the_lease_within_ttl_plus_1s() {
    let ttl = Duration::from_secs(2);
    let server = NatsServer::start().await;
    let b_bucket = bucket(&server, "locks").await;
    let mut holder = HolderProcess::spawn(&server, "locks", "leader", ttl, "proc-a");
    holder.line("acquired", Duration::from_secs(10)).await;

    // Held across more than a TTL by the other process's keep-alive.
    let until = Instant::now() + ttl + ttl / 2;
    while Instant::now() < until {
        match Lease::acquire_as(b_bucket.clone(), "leader", ttl, "node-b").await {
            Err(LeaseError::Held { holder, .. }) => assert_eq!(holder.as_deref(), Some("proc-a")),
            other => panic!("node-b got past a live holder process: {other:?}"),
        }
        tokio::time::sleep(ttl / 10).await;
    }

    holder.child.start_kill().expect("kill -9 the holder");
    let killed = Instant::now();
    holder.child.wait().await.expect("reap the holder");
    let b = acquire_within(&b_bucket, "leader", ttl, "node-b", ttl + Duration::from_secs(1)).await;
    let took = killed.elapsed();
    eprintln!("node-b acquired {took:?} after the holder process was killed (TTL {ttl:?})");
    assert!(took <= ttl + Duration::from_secs(1), "acquired {took:?} after the kill");
    assert!(b.lost_reason().is_none());
}

#[tokio::test]
async fn a_paused_holder_process_learns_it_lost() {
    let server = NatsServer::start().await;
    let b_bucket = bucket(&server, "locks").await;
    let mut holder = HolderProcess::spawn(&server, "locks", "leader", TTL, "proc-a");
    holder.line("acquired", Duration::from_secs(10)).await;

    holder.signal("STOP"); // the holder freezes: no refresh, no clock, no watch
    let b = acquire_within(&b_bucket, "leader", TTL * 10, "node-b", TTL + EXPIRY_SLACK).await;
    holder.signal("CONT");
    let line = holder.line("lost: ", TTL).await;
    eprintln!("the paused holder, woken, said: {line}");
    // Whichever it hears first once woken: its own clock, the server's expiry marker for the key
    // (buffered in its socket while it was frozen) or node-b's write.
    assert!(line.contains("no successful refresh") || line.contains("expired or purged") || line.contains("taken over"), "{line}");
    // The woken holder wrote nothing over node-b's lease.
    let entry = b_bucket.entry("leader").await.unwrap().unwrap();
    assert_eq!((entry.operation, entry.revision), (Operation::Put, b.revision()));
    assert!(b.lost_reason().is_none());
}
