//! Human output stays bounded when a bucket holds huge values (a fault probe wrote 200 KB of the
//! wrong type into a key), while `kvc get` and the values of `--json` stay whole.

mod common;

use common::Env;

/// The most a command may print (stdout and stderr together) with the huge values below.
const BOUND: usize = 8 * 1024;

fn huge_string(len: usize) -> String {
    serde_json::to_string(&"x".repeat(len)).unwrap()
}

fn printed(run: &common::Run) -> usize {
    run.stdout.len() + run.stderr.len()
}

#[tokio::test]
async fn huge_invalid_values_give_bounded_tables_and_messages() {
    let env = Env::start().await;
    let b = env.bucket_with_schema("app", "").await;
    b.put("name", "\"api\"".into()).await.unwrap();
    // 200 KB of the wrong type: a string for a u32, an array for a secret string, and a string
    // under a key the schema does not know.
    let big = huge_string(204_800);
    b.put("limits.max", big.clone().into()).await.unwrap();
    let secret = format!("[{}1]", "7,".repeat(102_400));
    b.put("api_token", secret.clone().into()).await.unwrap();
    b.put("legacy.blob", big.clone().into()).await.unwrap();

    let run = env.kvc(&["show", "app"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(printed(&run) < BOUND, "show printed {} bytes", printed(&run));
    assert!(run.stdout.contains("limits.max") && run.stdout.contains("invalid: expected integer in 0..=4294967295"), "{}", run.stdout);
    assert!(run.stdout.contains("bytes in all)"), "{}", run.stdout);
    assert!(run.stdout.contains("legacy.blob"), "{}", run.stdout);
    assert!(run.stdout.contains("<redacted>") && !run.stdout.contains("7,7,7"), "secret shown: {}", run.stdout);

    // --json: the values are whole (data), the reasons bounded (messages), secrets redacted.
    let run = env.kvc(&["show", "app", "--json"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(!run.stdout.contains("7,7,7"), "secret in --json");
    let json = run.json();
    let row = |key: &str| json["keys"].as_array().unwrap().iter().find(|r| r["key"] == key).cloned().unwrap();
    assert_eq!(row("limits.max")["value"].as_str().map(str::len), Some(204_800));
    let reason = row("limits.max")["reason"].as_str().unwrap().to_string();
    assert!(reason.len() < 1024 && reason.starts_with("expected integer"), "{reason}");
    assert_eq!(row("api_token")["value"], "<redacted>");

    // diff and history tables, a watch line.
    let run = env.kvc(&["diff", "app", "--against-defaults"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(printed(&run) < BOUND, "diff printed {} bytes", printed(&run));
    assert!(run.stdout.contains("limits.max") && run.stdout.contains("(204,802 bytes in all)"), "{}", run.stdout);
    let run = env.kvc(&["history", "app", "limits.max"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(printed(&run) < BOUND, "history printed {} bytes", printed(&run));
    assert!(run.stdout.contains("PUT") && run.stdout.contains("bytes in all)"), "{}", run.stdout);
    let run = env.kvc(&["watch", "app", "limits", "--count", "1"]);
    assert_eq!(run.code, 0, "{}", run.stderr);
    assert!(printed(&run) < BOUND, "watch printed {} bytes", printed(&run));
    assert!(run.stdout.contains("limits.max") && run.stdout.contains("!! expected integer"), "{}", run.stdout);

    // A refused write of a huge value: one bounded line naming bucket, key and problem.
    let arg = format!("limits.min={}", huge_string(100_000));
    let run = env.kvc(&["set", "app", &arg]);
    assert_eq!(run.code, 4, "{}", run.stderr);
    assert!(printed(&run) < BOUND, "set printed {} bytes", printed(&run));
    assert!(
        run.stderr.starts_with("kvc: error: bucket `app`: refused, nothing written: key `limits.min`: expected integer in 0..=4294967295, found string"),
        "{}",
        run.stderr
    );

    // Asking for the one value returns it whole.
    let run = env.kvc(&["get", "app", "limits.max", "--json"]);
    assert_eq!(run.json()["value"].as_str().map(str::len), Some(204_800));
    let run = env.kvc(&["get", "app", "limits.max"]);
    assert!(run.stdout.len() > 204_800, "get cut the value: {} bytes", run.stdout.len());
}
