//! diff, revert, export and import: the config's past and its copies.

mod common;

use common::{stable, values, Env};
use kv_config::store::{BucketConfig, Store};

fn precise(t: std::time::SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

#[tokio::test]
async fn revert_to_a_time_restores_exactly_that_state_and_diff_shows_it() {
    let env = Env::start().await;
    let b = env.bucket_with_schema("app", "").await;
    // State at T: name, log_level, limits.min set.
    let run = env.kvc(&["set", "app", "name=api", "log_level=debug", "limits.min=2", "-m", "state T"]);
    assert_eq!(run.code, 0, "{run:?}");
    let t_entry = b.entry("limits.min").await.unwrap().unwrap();
    let state_t = values(b.as_ref()).await;
    let t = precise(t_entry.created);
    let rev_t = t_entry.revision;

    // Later: change one, add one, delete one.
    assert_eq!(env.kvc(&["set", "app", "log_level=warn", "limits.max=40"]).code, 0);
    assert_eq!(env.kvc(&["del", "app", "limits.min", "--yes"]).code, 0);

    // diff against that time and that revision: the same three keys.
    let run = env.kvc(&["diff", "app", "--time", &t]);
    assert_eq!(run.code, 0, "{run:?}");
    insta::assert_snapshot!("diff_time_table", stable(&run.stdout));
    let by_rev = env.kvc(&["diff", "app", "--revision", &rev_t.to_string(), "--json"]);
    let by_time = env.kvc(&["diff", "app", "--time", &t, "--json"]);
    assert_eq!(by_rev.json()["changes"], by_time.json()["changes"]);
    assert_eq!(by_rev.json()["changes"].as_array().unwrap().len(), 3);

    // diff against defaults.
    let run = env.kvc(&["diff", "app", "--against-defaults", "--json"]);
    insta::assert_snapshot!("diff_defaults_json", stable(&run.stdout));

    // revert --time: dry run first, then for real; exactly state T.
    let last = b.info().await.unwrap().last_revision;
    let run = env.kvc(&["revert", "app", "--time", &t, "--dry-run"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(b.info().await.unwrap().last_revision, last);
    let run = env.kvc(&["revert", "app", "--time", &t, "-m", "undo"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(values(b.as_ref()).await, state_t);
    let run = env.kvc(&["diff", "app", "--time", &t, "--json"]);
    assert_eq!(run.json()["changes"], serde_json::json!([]));

    // revert one key to a revision.
    let first = b.history("log_level").await.unwrap();
    let run = env.kvc(&["set", "app", "log_level=info"]);
    assert_eq!(run.code, 0);
    let run = env.kvc(&["revert", "app", "log_level", "--to", &first[0].revision.to_string(), "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["changes"][0]["new"], "debug");
    assert_eq!(b.get("log_level").await.unwrap().as_deref(), Some(&b"\"debug\""[..]));
    let run = env.kvc(&["revert", "app", "log_level", "--to", "999"]);
    assert_eq!(run.code, 5, "{run:?}");
    // A revert is validated like any write: name=api at revision 1 was fine, but a revision of
    // another key is not this key's.
    let run = env.kvc(&["revert", "app", "name", "--to", &rev_t.to_string()]);
    assert_eq!(run.code, 5, "{run:?}");
    // Usage.
    assert_eq!(env.kvc(&["revert", "app"]).code, 2);
    assert_eq!(env.kvc(&["revert", "app", "--time", "yesterday-ish"]).code, 2);
}

#[tokio::test]
async fn export_import_and_prefixes() {
    let env = Env::start().await;
    let b = env.bucket_with_schema("app", "prod.").await;
    env.bucket_with_schema("app", "staging.").await;
    let prod = ["--prefix", "prod"];
    let run = env.kvc(&[&prod[..], &["set", "app", "name=api", "limits.max=20", "api_token=s3cret-token"]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    let run = env.kvc(&["--prefix", "staging.", "set", "app", "name=api-staging", "limits.max=20"]);
    assert_eq!(run.code, 0, "{run:?}");

    // diff two prefixes of one bucket.
    let run = env.kvc(&["--prefix", "prod", "diff", "app", "--against-prefix", "staging", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    insta::assert_snapshot!("diff_prefix_json", stable(&run.stdout));

    // export: revisions carried, secret redacted.
    let run = env.kvc(&[&prod[..], &["export", "app"]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("s3cret"), "{}", run.stdout);
    let file = env.path("prod.json");
    std::fs::write(&file, &run.stdout).unwrap();
    let export: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(export["values"]["api_token"]["redacted"], true);
    assert!(export["values"]["name"]["revision"].is_u64());

    // Edit the file and import it: one batch, the secret left alone.
    let edited = run.stdout.replace("\"value\": 20", "\"value\": 25");
    assert_ne!(edited, run.stdout);
    let file2 = env.path("prod-edited.json");
    std::fs::write(&file2, &edited).unwrap();
    let run = env.kvc(&[&prod[..], &["diff", "app", "--file", file2.to_str().unwrap(), "--json"]].concat());
    assert_eq!(run.json()["changes"][0]["key"], "limits.max");
    let run = env.kvc(&[&prod[..], &["import", "app", file2.to_str().unwrap(), "--dry-run"]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(b.get("prod.limits.max").await.unwrap().as_deref(), Some(&b"20"[..]));
    let run = env.kvc(&[&prod[..], &["import", "app", file2.to_str().unwrap(), "-m", "reviewed"]].concat());
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(b.get("prod.limits.max").await.unwrap().as_deref(), Some(&b"25"[..]));
    assert_eq!(b.get("prod.api_token").await.unwrap().as_deref(), Some(&b"\"s3cret-token\""[..]));
    // A redacted value edited without dropping its mark is refused, not silently ignored.
    let run = env.kvc(&[&prod[..], &["export", "app"]].concat());
    let marked = run.stdout.replace("\"<redacted>\"", "\"new-token\"");
    assert_ne!(marked, run.stdout);
    let file3 = env.path("prod-marked.json");
    std::fs::write(&file3, &marked).unwrap();
    let before_marked = values(b.as_ref()).await;
    let run = env.kvc(&[&prod[..], &["import", "app", file3.to_str().unwrap()]].concat());
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("`api_token`") && run.stderr.contains("redacted") && !run.stderr.contains("new-token"), "{}", run.stderr);
    assert_eq!(values(b.as_ref()).await, before_marked, "nothing written");

    // The bucket moved since the first export: importing it again is refused, nothing written.
    let before = values(b.as_ref()).await;
    let run = env.kvc(&[&prod[..], &["import", "app", file.to_str().unwrap()]].concat());
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("key `limits.max`"), "{}", run.stderr);
    // A foreign change (another client, no kvc) after a fresh export is refused too.
    let run = env.kvc(&[&prod[..], &["export", "app"]].concat());
    std::fs::write(&file, run.stdout.replace("\"api\"", "\"api-2\"")).unwrap();
    b.put("prod.limits.min", "3".into()).await.unwrap();
    let after_foreign = values(b.as_ref()).await;
    assert_ne!(after_foreign, before);
    let run = env.kvc(&[&prod[..], &["import", "app", file.to_str().unwrap()]].concat());
    assert_eq!(run.code, 3, "{run:?}");
    assert!(run.stderr.contains("`limits.min` (added at revision"), "{}", run.stderr);
    assert_eq!(values(b.as_ref()).await, after_foreign, "untouched");
    // Wrong prefix or bucket: usage.
    let run = env.kvc(&["import", "app", file.to_str().unwrap()]);
    assert_eq!(run.code, 2, "{run:?}");
}

#[tokio::test]
async fn time_travel_refuses_a_time_whose_messages_the_bucket_no_longer_holds() {
    use std::time::{Duration, Instant, SystemTime};
    let env = Env::start().await;
    let run = env.kvc(&["add", "ttlb", "--ttl", "2s"]);
    assert_eq!(run.code, 0, "{run:?}");
    let b = kv_config::store::Store::open_bucket(env.store.as_ref(), "ttlb").await.unwrap();
    // At T the bucket holds a = 1; a = 2 comes after T.
    b.put("a", "1".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(400)).await;
    let t = precise(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(400)).await;
    b.put("a", "2".into()).await.unwrap();
    // The server removes revision 1 (max age 2 s); a value written now keeps the bucket from
    // running empty while kvc looks.
    let deadline = Instant::now() + Duration::from_secs(10);
    while b.history("a").await.unwrap().iter().any(|e| e.revision == 1) {
        assert!(Instant::now() < deadline, "revision 1 never aged out");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    b.put("c", "1".into()).await.unwrap();
    let last = b.info().await.unwrap().last_revision;

    // The state at T is not known any more: refused (not "a: absent"), naming bucket, time and
    // what is still held; nothing written.
    let runs = [
        env.kvc(&["diff", "ttlb", "--time", &t, "--json"]),
        env.kvc(&["revert", "ttlb", "--time", &t, "--dry-run", "--json"]),
        env.kvc(&["revert", "ttlb", "--time", &t, "-m", "back to T"]),
        env.kvc(&["diff", "ttlb", "--revision", "1"]),
    ];
    for run in &runs {
        assert_eq!(run.code, 5, "{run:?}");
        assert!(run.stderr.contains("bucket `ttlb`") && run.stderr.contains("oldest retained is revision"), "{}", run.stderr);
    }
    assert!(runs[0].stderr.contains(&t[..19]), "names the time: {}", runs[0].stderr);
    assert_eq!(b.info().await.unwrap().last_revision, last);
}

/// A bucket with a max age whose old revisions only the history limit removed (it is younger
/// than its max age): a past time is known and answered. (The first version of the retention
/// check refused every past time of such a bucket once its revision 1 was gone; found by a
/// review.)
#[tokio::test]
async fn time_travel_on_a_bucket_younger_than_its_max_age_is_answered() {
    use std::time::{Duration, SystemTime};
    let env = Env::start().await;
    let run = env.kvc(&["add", "agedb", "--ttl", "1h", "--history", "2"]);
    assert_eq!(run.code, 0, "{run:?}");
    let b = kv_config::store::Store::open_bucket(env.store.as_ref(), "agedb").await.unwrap();
    for v in ["1", "2", "3"] {
        b.put("a", v.into()).await.unwrap(); // revision 1 removed by the history limit
    }
    b.put("b", "1".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = precise(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(300)).await;
    b.put("c", "1".into()).await.unwrap();
    let run = env.kvc(&["diff", "agedb", "--time", &t, "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    let keys: Vec<String> = run.json()["changes"].as_array().unwrap().iter().map(|c| c["key"].as_str().unwrap().to_string()).collect();
    assert_eq!(keys, ["c"], "{}", run.stdout);
}

/// An export taken from a bucket that was since deleted and created again, where the new bucket
/// holds other values at the very revisions the file carries: the revisions prove nothing, and
/// the import is refused as `import --help` promises for a bucket changed since the export.
#[tokio::test]
async fn import_refuses_an_export_taken_before_the_bucket_was_deleted_and_created_again() {
    let env = Env::start().await;
    let b = env.store.create_bucket(&BucketConfig::new("app").history(10)).await.unwrap();
    b.put("name", "\"old\"".into()).await.unwrap();
    b.put("limits.max", "10".into()).await.unwrap();
    let run = env.kvc(&["export", "app"]);
    assert_eq!(run.code, 0, "{run:?}");
    let export: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    let created = b.info().await.unwrap().created.expect("a NATS bucket says when it was created");
    assert_eq!(export["bucket_created"], precise(created), "the export names the bucket it was taken from");
    let file = env.path("app.json");
    std::fs::write(&file, run.stdout.replace("\"value\": 10", "\"value\": 20")).unwrap();

    env.store.delete_bucket("app").await.unwrap();
    let b = env.store.create_bucket(&BucketConfig::new("app").history(10)).await.unwrap();
    b.put("name", "\"new-service\"".into()).await.unwrap();
    b.put("limits.max", "500".into()).await.unwrap();
    let before = values(b.as_ref()).await;

    for args in [&["import", "app", file.to_str().unwrap(), "--json"][..], &["import", "app", file.to_str().unwrap(), "--dry-run"]] {
        let run = env.kvc(args);
        assert_eq!(run.code, 3, "{args:?}: {run:?}");
        assert!(
            run.stderr.contains("bucket `app`") && run.stderr.contains("deleted and created again since the export") && run.stderr.contains("nothing written"),
            "{}",
            run.stderr
        );
    }
    assert_eq!(values(b.as_ref()).await, before, "the new bucket's values stand");
}

/// An export file from a kvc that did not record the bucket's creation time still imports; kvc
/// says on stderr that only the revisions were checked.
#[tokio::test]
async fn an_export_without_the_bucket_creation_time_imports_on_revisions_alone_with_a_note() {
    let env = Env::start().await;
    let b = env.store.create_bucket(&BucketConfig::new("app").history(10)).await.unwrap();
    b.put("limits.max", "10".into()).await.unwrap();
    let run = env.kvc(&["export", "app"]);
    assert_eq!(run.code, 0, "{run:?}");
    let mut export: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert!(export.as_object_mut().unwrap().remove("bucket_created").is_some(), "{}", run.stdout);
    export["values"]["limits.max"]["value"] = serde_json::json!(20);
    let file = env.path("old.json");
    std::fs::write(&file, serde_json::to_string_pretty(&export).unwrap()).unwrap();

    let run = env.kvc(&["import", "app", file.to_str().unwrap()]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(
        run.stderr.contains("does not say when bucket `app` was created") && run.stderr.contains("only the revisions are checked"),
        "{}",
        run.stderr
    );
    assert_eq!(b.get("limits.max").await.unwrap().as_deref(), Some(&b"20"[..]));
}

/// A time before the bucket was created (it was deleted and created again since): the new bucket
/// holds nothing of the old one, so the config then is unknown, not empty. Refused like a time
/// whose messages aged out.
#[tokio::test]
async fn time_travel_to_before_the_bucket_was_created_is_refused() {
    use std::time::{Duration, SystemTime};
    let env = Env::start().await;
    let b = env.store.create_bucket(&BucketConfig::new("app").history(10)).await.unwrap();
    b.put("limits.max", "10".into()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let t = precise(SystemTime::now());
    tokio::time::sleep(Duration::from_millis(300)).await;
    env.store.delete_bucket("app").await.unwrap();
    let b = env.store.create_bucket(&BucketConfig::new("app").history(10)).await.unwrap();
    b.put("limits.max", "7".into()).await.unwrap();
    let created = b.info().await.unwrap().created.expect("created");
    let before = values(b.as_ref()).await;

    for args in [
        &["diff", "app", "--time", &t, "--json"][..],
        &["revert", "app", "--time", &t, "--dry-run", "--json"],
        &["revert", "app", "--time", &t, "-m", "back"],
    ] {
        let run = env.kvc(args);
        assert_eq!(run.code, 5, "{args:?}: {run:?}");
        assert!(run.stdout.is_empty(), "no diff or plan: {}", run.stdout);
        assert!(
            run.stderr.contains("bucket `app`") && run.stderr.contains(&t[..19]) && run.stderr.contains(&format!("created at {}", &precise(created)[..19])),
            "names the bucket, the time asked and the bucket's creation: {}",
            run.stderr
        );
    }
    assert_eq!(values(b.as_ref()).await, before, "nothing written");
}

/// `diff --revision N` past the bucket's last revision (a typo, a revision of another bucket) is
/// refused like `get --revision` for a revision it does not hold, not answered "no differences".
#[tokio::test]
async fn diff_against_a_revision_the_bucket_never_had_is_refused() {
    let env = Env::start().await;
    let b = env.bucket_with_schema("app", "").await;
    b.put("name", "\"api\"".into()).await.unwrap();
    let last = b.info().await.unwrap().last_revision;
    let run = env.kvc(&["diff", "app", "--revision", "1000000"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stdout.is_empty(), "{}", run.stdout);
    assert!(
        run.stderr.contains("bucket `app`") && run.stderr.contains("no revision 1000000") && run.stderr.contains(&format!("last revision is {last}")),
        "{}",
        run.stderr
    );
    // The last revision itself is still answered.
    let run = env.kvc(&["diff", "app", "--revision", &last.to_string(), "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["changes"], serde_json::json!([]));
}
