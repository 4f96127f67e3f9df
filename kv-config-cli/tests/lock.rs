//! `kvc lock`: a command runs only while its lease is held, and is stopped when the lease is lost.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{kvc_path, Env};
use kv_config::store::Store;
use kv_config::Lease;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lock_runs_a_command_under_a_lease_refuses_when_held_and_stops_it_when_lost() {
    let env = Env::start().await;
    assert_eq!(env.kvc(&["add", "locks", "--history", "1", "--key-ttl", "1s"]).code, 0);
    let bucket = env.store.open_bucket("locks").await.unwrap();

    // Free: the command runs, the lease is released after it.
    let marker = env.path("ran");
    let script = env.script("job.sh", &format!("touch {}", marker.display()));
    let run = env.kvc(&["lock", "locks", "job", "--ttl", "2s", "--json", "--", script.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(marker.exists(), "the command ran");
    assert_eq!(run.json()["holder"], "tester@test");
    assert_eq!(env.kvc(&["lock", "locks", "job", "--status", "--json"]).json()["state"], "free", "released after");

    // Held by someone else: refused with the holder named, the command never runs.
    let held = Lease::acquire_as(bucket.clone(), "job", Duration::from_secs(5), "node-a").await.unwrap();
    let other = env.path("other");
    let run = env.kvc(&["lock", "locks", "job", "--", "touch", other.to_str().unwrap()]);
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("node-a"), "{run:?}");
    assert!(!other.exists(), "the command did not run");
    let status = env.kvc(&["lock", "locks", "job", "--status"]);
    assert!(status.stdout.contains("held by `node-a`"), "{status:?}");
    held.release().await.unwrap();

    // A failing command: exit 1 naming its code, lease released.
    let run = env.kvc(&["lock", "locks", "job", "--", "sh", "-c", "exit 7"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("exited with 7"), "{run:?}");

    // Lost while running (someone overwrote the key): the command is stopped, exit 3.
    let mut child = std::process::Command::new(kvc_path())
        .args(["lock", "locks", "job", "--ttl", "2s", "--", "sleep", "30"])
        .env("NATS_URL", env.url())
        .env("KVC_AUTHOR", "tester@test")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while bucket.get("job").await.unwrap().is_none() {
        assert!(Instant::now() < deadline, "kvc never took the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let taken = Instant::now();
    bucket.put("job", "\"intruder\"".into()).await.unwrap();
    let out = loop {
        if child.try_wait().unwrap().is_some() {
            break child.wait_with_output().unwrap();
        }
        assert!(taken.elapsed() < Duration::from_secs(5), "kvc did not stop the command after losing the lock");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{stderr}");
    assert!(stderr.contains("was lost") && stderr.contains("taken over"), "{stderr}");
    assert_eq!(bucket.get("job").await.unwrap().unwrap(), "\"intruder\"", "the new holder's value is untouched");
}
