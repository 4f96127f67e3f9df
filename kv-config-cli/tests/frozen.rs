//! `kvc` against a server frozen (SIGSTOP) between the operator's confirmation and the write:
//! the command ends in bounded time, says what became of the write (kvc's check that the bucket
//! is still the one read meets the freeze first: nothing was sent), and names the bucket and the
//! key the operator changed, never kv-config's guard key (the commit message of the atomic batch a
//! write of a config with cross-field checks is; found by a probe).

mod common;

use std::time::Duration;

use common::Env;

#[tokio::test]
async fn a_delete_to_a_frozen_server_names_the_bucket_and_the_key_deleted() {
    let mut env = Env::start().await;
    let b = env.bucket_with_schema("app", "").await;
    b.put("name", "\"api\"".into()).await.unwrap();
    b.put("log_level", "\"warn\"".into()).await.unwrap();
    let server = &mut env.server as *mut kv_config_testing::NatsServer;
    // SAFETY: `env` outlives the call, and nothing else touches the server while kvc waits at its
    // prompt (the closure runs on this thread, before the answer).
    let started = std::time::Instant::now();
    let run = env.kvc_answering_yes(&["del", "app", "log_level"], || unsafe { (*server).pause() });
    let took = started.elapsed();
    env.server.resume();
    println!("figure: del against a frozen server: exit {} after {:.1}s: {}", run.code, took.as_secs_f64(), run.stderr);
    assert!(took < Duration::from_secs(20), "took {took:?}: {run:?}");
    assert_eq!(run.code, 1, "{run:?}");
    let error = run.stderr.lines().filter_map(|l| l.split_once("kvc: error:").map(|(_, e)| e)).next().unwrap_or_default();
    assert!(error.contains("bucket `app`, key `log_level`"), "names the bucket and the key deleted: {error}");
    assert!(error.contains("outcome is unknown") || error.contains("not applied"), "says what became of the write: {error}");
}

/// Reads a child's pipe on a thread into a shared buffer, so the test can look at what was
/// printed so far without blocking.
fn collect(mut pipe: impl std::io::Read + Send + 'static) -> std::sync::Arc<std::sync::Mutex<String>> {
    let out = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    let sink = out.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        while let Ok(n) = pipe.read(&mut buf) {
            if n == 0 {
                return;
            }
            sink.lock().unwrap().push_str(&String::from_utf8_lossy(&buf[..n]));
        }
    });
    out
}

/// Waits (polling) until `cond` holds on the text, or panics after `within` naming `what`.
fn wait_for(what: &str, text: &std::sync::Mutex<String>, within: Duration, cond: impl Fn(&str) -> bool) {
    let deadline = std::time::Instant::now() + within;
    while !cond(&text.lock().unwrap()) {
        assert!(std::time::Instant::now() < deadline, "timed out after {within:?} waiting for {what}: {}", text.lock().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `kvc watch` while the server is frozen (SIGSTOP) for longer than the watch's heartbeats, then
/// thawed: the watch says on stderr that it hears nothing (and keeps watching), does not exit
/// and does not hang: a change another client makes after the thaw is printed, and `--count`
/// ends the command.
#[tokio::test]
async fn watch_says_a_frozen_server_stalled_it_and_shows_the_changes_after_the_thaw() {
    let mut env = Env::start().await;
    let b = env.bucket_with_schema("app", "").await;
    b.put("name", "\"api\"".into()).await.unwrap();
    let mut child = std::process::Command::new(common::kvc_path())
        .args(["watch", "app", "--new", "--json", "--count", "2"])
        .env("NATS_URL", env.url())
        .env("NO_COLOR", "1")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("spawn kvc watch");
    let stdout = collect(child.stdout.take().expect("stdout"));
    let stderr = collect(child.stderr.take().expect("stderr"));
    // A first change proves the watch is live (kvc may subscribe after any one write: repeat).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut n = 0;
    while !stdout.lock().unwrap().contains("\"log_level\"") {
        assert!(std::time::Instant::now() < deadline, "no first event: {} / {}", stdout.lock().unwrap(), stderr.lock().unwrap());
        n += 1;
        if n <= 20 {
            b.put("log_level", "\"warn\"".into()).await.unwrap();
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let events_before = stdout.lock().unwrap().lines().count();
    assert_eq!(events_before, 1, "{}", stdout.lock().unwrap());

    env.server.pause();
    let frozen = std::time::Instant::now();
    // The watch's consumer heartbeat is 1 s; three silent ones end the consumer, and the request
    // for a new one times out (async-nats's 5 s): about 8 s in all, measured 7.8 s. Bounded.
    wait_for("a warning that the watch hears nothing", &stderr, Duration::from_secs(15), |t| t.contains("warning"));
    let said = frozen.elapsed();
    assert!(child.try_wait().expect("try_wait").is_none(), "kvc watch exited during the freeze: {}", stderr.lock().unwrap());
    let warning = stderr.lock().unwrap().clone();
    assert!(warning.contains("still watching"), "{warning}");
    assert!(warning.contains("`app`"), "names the bucket: {warning}");
    env.server.resume();

    // A change made after the thaw by another client is printed, and `--count 2` ends the watch.
    let store = kv_config::store::NatsStore::new(async_nats::connect(env.url()).await.expect("connect"));
    let other = kv_config::store::Store::open_bucket(&store, "app").await.expect("open after the thaw");
    other.put("name", "\"thawed\"".into()).await.expect("put after the thaw");
    wait_for("the change made after the thaw", &stdout, Duration::from_secs(10), |t| t.contains("thawed"));
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("kvc watch did not exit after its second event: {}", stderr.lock().unwrap());
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status:?}: {}", stderr.lock().unwrap());
    let text = stdout.lock().unwrap().clone();
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).expect("one JSON object per line")).collect();
    assert_eq!(events.len(), 2, "{text}");
    assert_eq!(events[1]["key"], "name", "{text}");
    assert_eq!(events[1]["value"], "thawed", "{text}");
    println!("figure: kvc watch warned {said:?} after the freeze: {}", warning.trim());
}
