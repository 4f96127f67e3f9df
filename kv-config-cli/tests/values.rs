//! show, get, set, del, purge, history and watch against a real nats-server, through the real
//! `kvc` binary.

mod common;

use common::{stable, values, Env};
use kv_config::store::{BucketConfig, Store, AUTHOR_HEADER};

#[tokio::test]
async fn show_get_set_with_a_published_schema() {
    let env = Env::start().await;
    let b = env.bucket_with_schema("app", "").await;
    b.put("name", "\"api\"".into()).await.unwrap();
    b.put("api_token", "\"hunter2-secret\"".into()).await.unwrap();
    b.put("limits.max", "\"lots\"".into()).await.unwrap(); // invalid: not an integer
    b.put("legacy.flag", "true".into()).await.unwrap(); // not in the schema

    // show: one row per schema key plus unknown keys; secrets masked.
    let run = env.kvc(&["show", "app"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("hunter2"), "secret printed: {}", run.stdout);
    insta::assert_snapshot!("show_table", stable(&run.stdout));
    let run = env.kvc(&["show", "app", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("hunter2"));
    insta::assert_snapshot!("show_json", stable(&run.stdout));
    let run = env.kvc(&["show", "app", "limits"]);
    assert!(run.stdout.contains("limits.min") && !run.stdout.contains("log_level"), "{}", run.stdout);

    // --reveal shows the secret.
    let run = env.kvc(&["get", "app", "api_token", "--reveal", "--json"]);
    assert_eq!(run.json()["value"], "hunter2-secret");
    let run = env.kvc(&["get", "app", "api_token"]);
    assert!(run.stdout.contains("<redacted>") && !run.stdout.contains("hunter2"), "{}", run.stdout);

    // get: missing key is exit 5, missing bucket too.
    let run = env.kvc(&["get", "app", "limits.min"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert_eq!(run.stderr.trim(), "kvc: error: bucket `app`, key `limits.min`: no such key");
    let run = env.kvc(&["get", "nope", "x"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("bucket `nope`"), "{}", run.stderr);

    // set: a bare string for an enum, JSON for integers, two keys in one batch with the diff.
    let run = env.kvc(&["set", "app", "log_level=debug", "limits.max=50", "-m", "more logs"]);
    assert_eq!(run.code, 0, "{run:?}");
    insta::assert_snapshot!("set_table", stable(&run.stdout));
    assert_eq!(b.get("log_level").await.unwrap().as_deref(), Some(&b"\"debug\""[..]));
    let e = b.entry("limits.max").await.unwrap().unwrap();
    assert_eq!(&e.value[..], b"50");
    assert!(e.headers.contains(&(AUTHOR_HEADER.to_string(), "tester@test".to_string())), "{:?}", e.headers);
    assert_eq!(b.entry("log_level").await.unwrap().unwrap().revision, e.revision - 1, "one batch, consecutive");

    // Refusals leave the bucket untouched: wrong type, enum value, unknown key, cross-field is not
    // known to the generic kvc but ranges and types are.
    let before = values(b.as_ref()).await;
    let last = b.info().await.unwrap().last_revision;
    for (args, needle) in [
        (vec!["set", "app", "limits.min=abc"], "key `limits.min`"),
        (vec!["set", "app", "limits.min=-1"], "expected integer in 0..=4294967295"),
        (vec!["set", "app", "log_level=loud", "limits.min=2"], "key `log_level`"),
        (vec!["set", "app", "nosuch=1"], "unknown key"),
        (vec!["set", "app", "__kvconfig.schema=1"], "reserved"),
    ] {
        let run = env.kvc(&args);
        assert_eq!(run.code, 4, "{args:?}: {run:?}");
        assert!(run.stderr.contains("bucket `app`") && run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert_eq!(run.stderr.lines().count(), 1, "one line: {}", run.stderr);
    }
    let run = env.kvc(&["set", "app", "noequals"]);
    assert_eq!(run.code, 2, "{run:?}");
    assert_eq!(values(b.as_ref()).await, before);
    assert_eq!(b.info().await.unwrap().last_revision, last, "nothing written");

    // --dry-run validates and shows the diff, writes nothing; --json gives the documented shape.
    let run = env.kvc(&["set", "app", "limits.min=5", "--dry-run", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    insta::assert_snapshot!("set_dry_run_json", stable(&run.stdout));
    assert_eq!(b.info().await.unwrap().last_revision, last);
    // Setting a secret never echoes it.
    let run = env.kvc(&["set", "app", "api_token=new-secret-value"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("new-secret-value") && !run.stdout.contains("hunter2"), "{}", run.stdout);

    // get --revision: a past value of the key, with its audit headers.
    let first = b.history("limits.max").await.unwrap()[0].revision;
    let run = env.kvc(&["get", "app", "limits.max", "--revision", &first.to_string(), "--json"]);
    assert_eq!((run.code, run.json()["value"].clone()), (0, serde_json::json!("lots")), "{run:?}");
    assert_eq!(env.kvc(&["get", "app", "limits.max", "--revision", "1"]).code, 5, "revision 1 is another key's");

    // history: author and reason.
    let run = env.kvc(&["history", "app", "log_level", "--json"]);
    let revs = run.json()["revisions"].clone();
    assert_eq!(revs[0]["author"], "tester@test");
    assert_eq!(revs[0]["reason"], "more logs");
    assert_eq!(revs[0]["value"], "debug");
    let run = env.kvc(&["history", "app", "log_level"]);
    insta::assert_snapshot!("history_table", stable(&run.stdout));
    let run = env.kvc(&["history", "app", "api_token"]);
    assert!(!run.stdout.contains("secret-value") && !run.stdout.contains("hunter2"), "{}", run.stdout);
    let run = env.kvc(&["history", "app", "never.written"]);
    assert_eq!(run.code, 5, "{run:?}");

    // del: a required key is refused; confirmation needed; then a delete marker.
    let run = env.kvc(&["del", "app", "name", "--yes"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("required"), "{}", run.stderr);
    let run = env.kvc(&["del", "app", "log_level"]);
    assert_eq!(run.code, 1, "no answer on stdin: {run:?}");
    assert!(b.get("log_level").await.unwrap().is_some());
    let run = env.kvc_with(&["del", "app", "log_level", "-m", "default again"], &[], "y\n");
    assert_eq!(run.code, 0, "{run:?}");
    assert!(b.get("log_level").await.unwrap().is_none());
    let run = env.kvc(&["del", "app", "log_level", "--yes"]);
    assert_eq!(run.code, 5, "already deleted: {run:?}");

    // purge removes the history.
    let run = env.kvc(&["purge", "app", "legacy.flag", "--yes"]);
    assert_eq!(run.code, 4, "not in the schema, refused like any write: {run:?}");
    let run = env.kvc(&["purge", "app", "limits.max", "--yes", "-m", "cleanup"]);
    assert_eq!(run.code, 0, "{run:?}");
    let hist = b.history("limits.max").await.unwrap();
    assert_eq!(hist.len(), 1, "{hist:?}");
}

#[tokio::test]
async fn generic_mode_without_schema_and_watch() {
    let env = Env::start().await;
    let b = env.store.as_ref();
    let b = kv_config::store::Store::create_bucket(b, &kv_config::store::BucketConfig::new("raw").history(5)).await.unwrap();

    // No schema: said once per run, values are JSON or bare strings.
    let run = env.kvc(&["set", "raw", "greeting=hello", "count=3", "list=[1,2]"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr.matches("no published schema").count(), 1, "{}", run.stderr);
    assert_eq!(b.get("greeting").await.unwrap().as_deref(), Some(&b"\"hello\""[..]));
    assert_eq!(b.get("list").await.unwrap().as_deref(), Some(&b"[1,2]"[..]));
    let run = env.kvc(&["show", "raw", "--json"]);
    assert_eq!(run.json()["schema"], serde_json::Value::Null);
    assert_eq!(run.json()["keys"].as_array().unwrap().len(), 3);

    // watch: the current values (3 keys), then changes made by another kvc; exits after --count.
    let mut watcher = std::process::Command::new(common::kvc_path())
        .args(["watch", "raw", "--json", "--count", "4"])
        .env("NATS_URL", env.url())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("watch");
    // The watcher may subscribe before or after any one write: keep changing a key until it has
    // seen four events and exited, within a deadline.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut n = 10;
    loop {
        if watcher.try_wait().expect("try_wait").is_some() {
            break;
        }
        if std::time::Instant::now() > deadline {
            let _ = watcher.kill();
            panic!("watch did not see 4 events in time");
        }
        n += 1;
        let run = env.kvc(&["set", "raw", &format!("count={n}"), "-m", "bump"]);
        assert_eq!(run.code, 0, "{run:?}");
    }
    let out = watcher.wait_with_output().expect("watch output");
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let events: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(events.len(), 4, "{text}");
    assert!(events.iter().all(|e| e["key"].is_string() && e["revision"].is_u64()), "{text}");

    // The human form: one line per event, typed and with the audit headers.
    let run = env.kvc(&["watch", "raw", "--count", "3"]);
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 3, "{}", run.stdout);
    assert!(lines.iter().any(|l| l.contains("PUT greeting = \"hello\"")), "{}", run.stdout);
    assert!(lines.iter().any(|l| l.contains("PUT count = ") && l.contains("(by tester@test: bump)")), "{}", run.stdout);
}

/// `kvc del` read the key at revision 1; while it asks for confirmation the bucket is deleted and
/// created again, and the new bucket's `limits.max` is at revision 1 too. The delete's revision
/// check would pass: kvc must see the bucket is not the one it read (every write command commits
/// through the same check: set, del, purge, revert, import, edit).
#[tokio::test]
async fn del_refuses_a_bucket_deleted_and_created_again_since_it_was_read() {
    let env = Env::start().await;
    let b = env.store.create_bucket(&BucketConfig::new("app").history(10)).await.unwrap();
    assert_eq!(b.put("limits.max", "10".into()).await.unwrap(), 1);
    let run = env.kvc_answering_yes(&["del", "app", "limits.max"], || {
        for args in [&["rm", "app", "--yes"][..], &["add", "app", "--history", "10"], &["set", "app", "limits.max=99"]] {
            let run = env.kvc(args);
            assert_eq!(run.code, 0, "{args:?}: {run:?}");
        }
    });
    assert_eq!(run.code, 3, "conflict: {run:?}");
    assert!(
        run.stderr.contains("bucket `app`") && run.stderr.contains("deleted and created again since it was read") && run.stderr.contains("nothing written"),
        "{}",
        run.stderr
    );
    let b = env.store.open_bucket("app").await.unwrap();
    let hist = b.history("limits.max").await.unwrap();
    assert_eq!(hist.len(), 1, "the delete never reached the new bucket: {hist:?}");
    assert_eq!(&hist[0].value[..], b"99");
}
