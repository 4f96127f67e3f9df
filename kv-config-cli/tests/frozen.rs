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
