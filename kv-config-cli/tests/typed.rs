//! Typed mode: `kv_config_cli` run with the Rust config type runs its validators, cross-field
//! checks included, before any write. Called through the library (the same code as
//! `kv_config_cli::run::<AppConfig>()`), with output captured.

mod common;

use std::sync::Arc;

use clap::Parser;
use common::{values, AppConfig, Buf, Env};
use kv_config_cli::output::Printer;
use kv_config_cli::{execute, Cli, Mode};


/// Runs the typed kvc in-process; returns (exit code, stdout, stderr).
async fn typed(env: &Env, args: &[&str]) -> (i32, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("kvc").chain(args.iter().copied())).expect("args");
    let (out, err) = (Buf::default(), Buf::default());
    let printer = Printer::new(Box::new(out.clone()), Box::new(err.clone()), cli.global.json, false);
    let code = execute(cli, env.store.clone(), Mode::typed::<AppConfig>(), printer).await;
    (code, out.text(), err.text())
}

#[tokio::test]
async fn typed_mode_runs_the_structs_validators_before_writing() {
    let env = Env::start().await;
    // No schema is published: typed mode needs none.
    let b = kv_config::store::Store::create_bucket(env.store.as_ref(), &kv_config::store::BucketConfig::new("app").history(5))
        .await
        .unwrap();
    b.put("name", "\"api\"".into()).await.unwrap();

    // The cross-field rule (limits.min <= limits.max) is not in the published schema: the
    // generic kvc cannot see it, the typed one refuses.
    let before = values(b.as_ref()).await;
    let last = b.info().await.unwrap().last_revision;
    let (code, out, err) = typed(&env, &["set", "app", "limits.min=60"]).await;
    assert_eq!(code, 4, "{out}{err}");
    assert_eq!(
        err.trim(),
        "kvc: error: bucket `app`: refused, nothing written: key `limits`: rejected by validator: limits.min 60 > limits.max 10"
    );
    assert!(!err.contains("no published schema"), "{err}");
    assert_eq!(values(b.as_ref()).await, before);
    assert_eq!(b.info().await.unwrap().last_revision, last);

    // Both together pass, in one batch.
    let (code, out, err) = typed(&env, &["set", "app", "limits.min=60", "limits.max=100", "--json"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["changes"].as_array().unwrap().len(), 2);

    // Deleting a required key, or a key that would break the rule, is refused.
    let (code, _, err) = typed(&env, &["del", "app", "name", "--yes"]).await;
    assert_eq!(code, 4, "{err}");
    let (code, _, err) = typed(&env, &["del", "app", "limits.max", "--yes"]).await;
    assert_eq!(code, 4, "max back to its default 10 < min 60: {err}");

    // A foreign write that breaks the rule shows as invalid in `show`.
    b.put("limits.max", "5".into()).await.unwrap();
    let (code, out, err) = typed(&env, &["show", "app", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(json["schema"], "AppConfig 0.1.0");
    let keys = json["keys"].as_array().unwrap();
    assert!(keys.iter().any(|k| k["key"] == "name" && k["state"] == "set"), "{out}");
    // The struct-level refusal names `limits`, the struct's prefix: not a key, so a warning.
    assert!(err.contains("limits.min 60 > limits.max 5") || out.contains("limits.min 60 > limits.max 5"), "{out}{err}");

    // Typed edit: the refused document is reopened; saved unchanged, it gives up with exit 4.
    let editor = env.script("min.sh", "sed -i 's/^\"limits.min\" = .*/\"limits.min\" = 70/; s/^\"limits.max\" = .*/\"limits.max\" = 6/' \"$1\"");
    let args = ["edit", "app", "--yes"];
    let cli = Cli::try_parse_from(std::iter::once("kvc").chain(args.iter().copied())).unwrap();
    let (out, err) = (Buf::default(), Buf::default());
    let printer = Printer::new(Box::new(out.clone()), Box::new(err.clone()), false, false);
    let store: Arc<dyn kv_config::store::Store> = env.store.clone();
    let mut ctx = kv_config_cli::Ctx::new(store, Mode::typed::<AppConfig>(), "", printer);
    ctx.editor = editor.display().to_string();
    let before = values(b.as_ref()).await;
    let result = kv_config_cli::dispatch(&cli.command, &mut ctx).await;
    // The script edits again on the second opening (same edit): unchanged document, so it gives up.
    let e = result.expect_err("refused");
    assert_eq!(e.exit_code(), 4, "{e}");
    assert!(e.to_string().contains("limits.min 70 > limits.max 6"), "{e}");
    assert_eq!(values(b.as_ref()).await, before);
}

#[tokio::test]
async fn a_change_between_read_and_write_is_a_conflict_and_nothing_is_written() {
    let env = Env::start().await;
    let b = env.bucket_with_schema("app", "").await;
    b.put("name", "\"api\"".into()).await.unwrap();
    let store: Arc<dyn kv_config::store::Store> = env.store.clone();
    let printer = Printer::new(Box::new(Buf::default()), Box::new(Buf::default()), false, false);
    let mut ctx = kv_config_cli::Ctx::new(store, Mode::Generic, "", printer);
    let cur = ctx.load("app").await.unwrap();
    // Someone else changes one of the two keys after kvc read them.
    b.put("limits.max", "40".into()).await.unwrap();
    let before = values(b.as_ref()).await;
    let changes = vec![
        kv_config_cli::ops::Change { key: "limits.min".into(), new: Some("5".into()) },
        kv_config_cli::ops::Change { key: "limits.max".into(), new: Some("50".into()) },
    ];
    let err = ctx.apply(&cur, changes, false, Some("test")).await.expect_err("conflict");
    assert_eq!(err.exit_code(), 3, "{err}");
    assert_eq!(
        err.to_string(),
        "bucket `app`, key `limits.max`: changed by someone else since it was read; nothing written"
    );
    assert_eq!(values(b.as_ref()).await, before, "the batch is all or nothing");
}

#[tokio::test]
async fn writes_of_a_config_with_cross_field_checks_bump_the_guard_key() {
    let env = Env::start().await;
    let b = env.bucket_with_schema("app", "").await;
    b.put("name", "\"api\"".into()).await.unwrap();
    let guard = kv_config::GUARD_KEY;

    // The typed kvc knows AppConfig has a cross-field validator: its write bumps the guard in the
    // same batch.
    let (code, out, err) = typed(&env, &["set", "app", "limits.min=2"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let g1 = b.entry(guard).await.unwrap().expect("guard written").revision;
    assert_eq!(b.entry("limits.min").await.unwrap().unwrap().revision + 1, g1, "same batch");
    // The generic kvc sees the guard and bumps it too.
    let run = env.kvc(&["set", "app", "limits.max=20"]);
    assert_eq!(run.code, 0, "{run:?}");
    let g2 = b.entry(guard).await.unwrap().unwrap().revision;
    assert!(g2 > g1);

    // Another writer changes a *different* key (bumping the guard, as LiveConfig::update does)
    // between kvc's read and its write: kvc's write is refused, nothing written.
    let store: Arc<dyn kv_config::store::Store> = env.store.clone();
    let printer = Printer::new(Box::new(Buf::default()), Box::new(Buf::default()), false, false);
    let mut ctx = kv_config_cli::Ctx::new(store, Mode::typed::<AppConfig>(), "", printer);
    let cur = ctx.load("app").await.unwrap();
    b.write_atomic(vec![
        kv_config::store::WriteOp::put("limits.max", "3".into()),
        kv_config::store::WriteOp::put(guard, "1".into()).expect_revision(g2),
    ])
    .await
    .unwrap();
    let before = values(b.as_ref()).await;
    let changes = vec![kv_config_cli::ops::Change { key: "limits.min".into(), new: Some("15".into()) }];
    let err = ctx.apply(&cur, changes, false, None).await.expect_err("guard conflict");
    assert_eq!(err.exit_code(), 3, "{err}");
    assert!(err.to_string().starts_with("bucket `app`, key `limits.max`: changed by someone else"), "{err}");
    assert_eq!(values(b.as_ref()).await, before);

    // The same situation in `edit`: while the document is open, another admin changes
    // limits.max. The operator's edit of limits.min is validated against the state it will land
    // on (max 30, not the 3 the document showed), and the other admin's value is kept.
    let state = env.dir.path();
    let editor = env.script(
        "guard.sh",
        &format!(
            "n=$(cat {s}/g 2>/dev/null || echo 0); n=$((n+1)); echo $n > {s}/g\ncp \"$1\" {s}/g$n.toml\n\
             if [ $n = 1 ]; then\n  NATS_URL={url} {kvc} set app limits.max=30 > {s}/other.out 2>&1\n  \
             sed -i 's/^\"limits.min\" = .*/\"limits.min\" = 25/' \"$1\"\nfi",
            s = state.display(),
            url = env.url(),
            kvc = common::kvc_path().display()
        ),
    );
    let cli = Cli::try_parse_from(["kvc", "edit", "app", "--yes"]).unwrap();
    let printer = Printer::new(Box::new(Buf::default()), Box::new(Buf::default()), false, false);
    let store: Arc<dyn kv_config::store::Store> = env.store.clone();
    let mut ctx = kv_config_cli::Ctx::new(store, Mode::typed::<AppConfig>(), "", printer);
    ctx.editor = editor.display().to_string();
    let report = kv_config_cli::dispatch(&cli.command, &mut ctx).await.expect("edit applies after reopening");
    assert!(report.is_some());
    let other = std::fs::read_to_string(state.join("other.out")).unwrap();
    assert!(other.contains("wrote 1 key(s)"), "{other}");
    let first = std::fs::read_to_string(state.join("g1.toml")).unwrap();
    assert!(first.contains("\n\"limits.max\" = 3\n"), "{first}");
    assert!(!state.join("g2.toml").exists(), "no reopening: the edited key did not move");
    assert_eq!(b.get("limits.min").await.unwrap().as_deref(), Some(&b"25"[..]));
    assert_eq!(b.get("limits.max").await.unwrap().as_deref(), Some(&b"30"[..]));
}

#[tokio::test]
async fn typed_writes_are_checked_with_the_overrides_in_effect_and_as_they_expire() {
    use std::time::Duration;
    let env = Env::start().await;
    let b = kv_config::store::Store::create_bucket(
        env.store.as_ref(),
        &kv_config::store::BucketConfig::new("app").history(10).key_ttl(Duration::from_secs(1)),
    )
    .await
    .unwrap();
    b.put("name", "\"api\"".into()).await.unwrap();
    let (code, out, err) = typed(&env, &["set", "app", "limits.max=3", "--for", "10m"]).await;
    assert_eq!(code, 0, "{out}{err}");

    // Every service runs with limits.max = 3 now: an own value, or a second override, that breaks
    // limits.min <= limits.max together with it is refused, nothing written.
    let before = values(b.as_ref()).await;
    let last = b.info().await.unwrap().last_revision;
    for args in [&["set", "app", "limits.min=5"][..], &["set", "app", "limits.min=5", "--for", "10m"][..]] {
        let (code, out, err) = typed(&env, args).await;
        assert_eq!(code, 4, "{args:?}: {out}{err}");
        assert!(
            err.contains("bucket `app`: refused") && err.contains("key `limits`") && err.contains("limits.min 5 > limits.max 3"),
            "{args:?}: {err}"
        );
    }
    assert_eq!(values(b.as_ref()).await, before);
    assert_eq!(b.info().await.unwrap().last_revision, last);

    // Valid while an override lasts, invalid once it expires and the own value is back: refused,
    // naming the override.
    let (code, out, err) = typed(&env, &["del", "app", "limits.max", "--override", "--yes"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = typed(&env, &["set", "app", "limits.min=5"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = typed(&env, &["set", "app", "limits.max=20", "--for", "10m"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, out, err) = typed(&env, &["set", "app", "limits.max=3"]).await;
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains("override of `limits.max`") && err.contains("limits.min 5 > limits.max 3"), "{err}");

    // An override that outlives another one must hold once the other one expires (own
    // limits.max = 10 then); one that expires first need not.
    let (code, out, err) = typed(&env, &["set", "app", "limits.min=15", "--for", "1h"]).await;
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains("override of `limits.max`") && err.contains("limits.min 15 > limits.max 10"), "{err}");
    let (code, out, err) = typed(&env, &["set", "app", "limits.min=15", "--for", "1m"]).await;
    assert_eq!(code, 0, "{out}{err}");
    // Shortening limits.max's override (10 m) to before limits.min's (1 m) ends makes a new state,
    // limits.min 15 over the own limits.max 10: refused (found by a review).
    let (code, out, err) = typed(&env, &["set", "app", "limits.max=20", "--for", "30s"]).await;
    assert_eq!(code, 4, "{out}{err}");
    assert!(err.contains("override of `limits.max`") && err.contains("limits.min 15 > limits.max 10"), "{err}");
}
