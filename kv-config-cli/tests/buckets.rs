//! ls, info, add, rm, completions, help, usage errors, permissions.

mod common;

use common::{stable, Env};
use kv_config_testing::NatsServer;

#[tokio::test]
async fn bucket_commands() {
    let env = Env::start().await;
    let run = env.kvc(&["ls"]);
    assert_eq!((run.code, run.stdout.trim()), (0, "no buckets"), "{run:?}");
    let run = env.kvc(&["add", "app", "--history", "20", "--description", "shared settings"]);
    assert_eq!(run.code, 0, "{run:?}");
    insta::assert_snapshot!("add_table", stable(&run.stdout));
    let run = env.kvc(&["add", "app"]);
    assert_eq!(run.code, 3, "{run:?}");
    assert_eq!(run.stderr.trim(), "kvc: error: bucket `app`: already exists");
    let run = env.kvc(&["add", "bad name"]);
    assert_eq!(run.code, 2, "{run:?}");
    let run = env.kvc(&["add", "cfg2", "--ttl", "1h", "--atomic=false"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("atomic writes  ┆ false"), "{}", run.stdout);

    let run = env.kvc(&["ls", "--json"]);
    insta::assert_snapshot!("ls_json", stable(&run.stdout));
    let run = env.kvc(&["info", "cfg2", "--json"]);
    assert_eq!(run.json()["max_age_secs"], 3600);
    assert_eq!(run.json()["atomic_writes"], false);
    assert_eq!(env.kvc(&["info", "nope"]).code, 5);

    // Multi-key set on a bucket without atomic batches: a clear error, nothing written.
    let run = env.kvc(&["set", "cfg2", "a=1", "b=2"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("bucket `cfg2`") && run.stderr.contains("atomic"), "{}", run.stderr);

    // rm asks; no answer cancels; --yes deletes; a missing bucket is 5.
    let run = env.kvc(&["rm", "cfg2"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(env.kvc(&["info", "cfg2"]).code == 0);
    let run = env.kvc_with(&["rm", "cfg2"], &[], "n\n");
    assert_eq!(run.code, 1, "{run:?}");
    let run = env.kvc(&["rm", "cfg2", "--yes", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["deleted"], true);
    assert_eq!(env.kvc(&["rm", "cfg2", "--yes"]).code, 5);
}

#[tokio::test]
async fn help_completions_usage_and_connection_errors() {
    let env = Env::start().await;
    let run = env.kvc(&["--help"]);
    assert_eq!(run.code, 0);
    for needle in ["Exit codes", "kvc set app", "lock", "--server", "--creds", "--tlsca", "--prefix"] {
        assert!(run.stdout.contains(needle), "{needle}: {}", run.stdout);
    }
    let run = env.kvc(&["set", "--help"]);
    assert!(run.stdout.contains("Examples:") && run.stdout.contains("--dry-run"), "{}", run.stdout);
    for shell in ["bash", "zsh", "fish"] {
        let run = env.kvc(&["completions", shell]);
        assert_eq!(run.code, 0, "{run:?}");
        assert!(run.stdout.contains("kvc"), "{shell}");
    }
    assert_eq!(env.kvc(&[]).code, 2);
    assert_eq!(env.kvc(&["frobnicate"]).code, 2);
    assert_eq!(env.kvc(&["diff", "app"]).code, 2, "diff needs something to compare with");
    let run = env.kvc_with(&["ls"], &[("NATS_URL", "nats://127.0.0.1:1")], "");
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.starts_with("kvc: error: cannot connect to nats://127.0.0.1:1"), "{}", run.stderr);
}

#[tokio::test]
async fn permission_denied_is_one_line_and_exit_1() {
    let conf = r#"
jetstream: enabled
accounts: {
  A: {
    jetstream: enabled
    users: [
      { user: admin, password: admin }
      { user: reader, password: reader, permissions: { publish: { deny: ["$KV.>", "$JS.API.STREAM.CREATE.>"] } } }
    ]
  }
}
"#;
    let server = NatsServer::start_with_config(conf).await;
    let kvc = |args: &[&str]| {
        let out = std::process::Command::new(common::kvc_path())
            .args(args)
            .env("NATS_URL", server.url())
            .env("NO_COLOR", "1")
            .output()
            .unwrap();
        (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (code, _, err) = kvc(&["--user", "admin", "--password", "admin", "add", "app"]);
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kvc(&["--user", "admin", "--password", "wrong", "ls"]);
    assert_eq!(code, 1, "{err}");
    let (code, _, err) = kvc(&["--user", "reader", "--password", "reader", "set", "app", "x=1"]);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("bucket `app`") && err.contains("permission denied"), "{err}");
    assert_eq!(err.lines().filter(|l| l.starts_with("kvc: error")).count(), 1, "{err}");
    let (code, out, err) = kvc(&["--user", "reader", "--password", "reader", "show", "app", "--json"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"keys\": []"), "{out}");
}
