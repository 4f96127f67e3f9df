//! `kvc` against a server frozen (SIGSTOP) between the operator's confirmation and the write:
//! the command ends within the write deadline, says the write's outcome is unknown, and names the
//! bucket and the key the operator changed, not kv-config's guard key (the commit message of the
//! atomic batch a write of a config with cross-field checks is). Found by a probe.

mod common;

use std::time::Duration;

use common::Env;

/// Runs kvc, waits until it asks its question on stderr, calls `at_prompt`, answers `y`, and
/// returns the run and how long kvc took after the answer.
fn kvc_answering(env: &Env, args: &[&str], extra_env: &[(&str, &str)], at_prompt: impl FnOnce()) -> (common::Run, Duration) {
    use std::io::{Read, Write};
    use std::process::{Command, Stdio};
    let mut cmd = Command::new(common::kvc_path());
    cmd.args(args)
        .env("NATS_URL", env.url())
        .env("KVC_AUTHOR", "tester@test")
        .env("NO_COLOR", "1")
        .env_remove("EDITOR")
        .env_remove("VISUAL")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in extra_env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn kvc");
    let mut stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel::<Vec<u8>>();
    std::thread::spawn(move || {
        let mut buf = [0u8; 4096];
        loop {
            match stderr.read(&mut buf) {
                Ok(0) | Err(_) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
            }
        }
    });
    let mut err = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while !String::from_utf8_lossy(&err).contains("[y/N]") {
        assert!(std::time::Instant::now() < deadline, "no prompt: {}", String::from_utf8_lossy(&err));
        if let Ok(chunk) = rx.recv_timeout(Duration::from_millis(50)) {
            err.extend(chunk);
        }
    }
    at_prompt();
    let answered = std::time::Instant::now();
    child.stdin.take().expect("stdin").write_all(b"y\n").expect("answer");
    // Bounded wait: a hang is a failure, not a stuck test.
    let limit = Duration::from_secs(60);
    loop {
        if child.try_wait().expect("wait").is_some() {
            break;
        }
        if answered.elapsed() > limit {
            let _ = child.kill();
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().expect("output");
    let took = answered.elapsed();
    while let Ok(chunk) = rx.recv_timeout(Duration::from_millis(200)) {
        err.extend(chunk);
    }
    let run = common::Run {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&err).into_owned(),
    };
    (run, took)
}

#[tokio::test]
async fn a_delete_to_a_frozen_server_names_the_bucket_and_the_key_deleted() {
    let mut env = Env::start().await;
    let b = env.bucket_with_schema("app", "").await;
    b.put("name", "\"api\"".into()).await.unwrap();
    b.put("log_level", "\"warn\"".into()).await.unwrap();
    let server = &mut env.server as *mut kv_config_testing::NatsServer;
    // SAFETY: `env` outlives the call, and nothing else touches the server while kvc waits at its
    // prompt (the closure runs on this thread, before the answer).
    let (run, took) = kvc_answering(&env, &["del", "app", "log_level"], &[], || unsafe { (*server).pause() });
    env.server.resume();
    println!("figure: del against a frozen server: exit {} after {:.1}s: {}", run.code, took.as_secs_f64(), run.stderr);
    assert!(took < Duration::from_secs(20), "took {took:?}: {run:?}");
    assert_eq!(run.code, 1, "{run:?}");
    let error = run.stderr.lines().filter_map(|l| l.split_once("kvc: error:").map(|(_, e)| e)).next().unwrap_or_default();
    assert!(error.contains("bucket `app`, key `log_level`"), "names the bucket and the key deleted: {error}");
    assert!(error.contains("outcome is unknown") || error.contains("not applied"), "says what became of the write: {error}");
}
