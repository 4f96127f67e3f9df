//! `kvc schema`: the JSON Schema a service published, through the real `kvc` binary against a
//! real nats-server, and the typed kvc's own, without a server.

mod common;

use std::sync::Arc;

use clap::Parser;
use common::{AppConfig, Buf, Env};
use kv_config::store::{BucketConfig, MemoryStore, Store};
use kv_config::{KvConfig, LiveConfig, JSON_SCHEMA_KEY};
use kv_config_cli::output::Printer;
use kv_config_cli::{execute, Cli, Mode};

#[tokio::test]
async fn schema_prints_the_published_json_schema() {
    let env = Env::start().await;
    let store: Arc<dyn Store> = env.store.clone();
    let b = store.create_bucket(&BucketConfig::new("app")).await.unwrap();
    b.put("prod.name", "\"api\"".into()).await.unwrap();
    let cfg = LiveConfig::<AppConfig>::builder_shared(store, "app").prefix("prod.").start().await.unwrap();
    cfg.publish_schema().await.unwrap();

    let run = env.kvc(&["--prefix", "prod", "schema", "app"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.stderr, "");
    assert_eq!(run.json(), AppConfig::json_schema());
    insta::assert_snapshot!("schema_json_schema", run.stdout);
    let run_json = env.kvc(&["--prefix", "prod", "schema", "app", "--json"]);
    assert_eq!((run_json.code, &run_json.stdout), (0, &run.stdout), "--json prints the same document");

    // --kv: kv-config's own schema.
    let run = env.kvc(&["--prefix", "prod", "schema", "app", "--kv"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json(), serde_json::to_value(AppConfig::schema()).unwrap());

    // What is stored is printed, not recomputed: a service's published document wins.
    b.put(&format!("prod.{JSON_SCHEMA_KEY}"), r#"{"title":"from the service"}"#.into()).await.unwrap();
    let run = env.kvc(&["--prefix", "prod", "schema", "app"]);
    assert_eq!(run.json(), serde_json::json!({ "title": "from the service" }));
    b.put(&format!("prod.{JSON_SCHEMA_KEY}"), "not json".into()).await.unwrap();
    let run = env.kvc(&["--prefix", "prod", "schema", "app"]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.starts_with("kvc: error: bucket `app`, key `prod.__kvconfig.json_schema`: the published JSON Schema is not JSON"),
        "{}",
        run.stderr
    );

    // No schema under this prefix: not found (exit 5), naming bucket and prefix.
    let run = env.kvc(&["--prefix", "dev", "schema", "app"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert_eq!(
        run.stderr.trim(),
        "kvc: error: bucket `app`: no schema published (prefix `dev.`); a service publishes it with LiveConfig::publish_schema"
    );
    let run = env.kvc(&["--prefix", "dev", "schema", "app", "--kv"]);
    assert_eq!(run.code, 5, "{run:?}");
    let run = env.kvc(&["schema", "nope"]);
    assert_eq!(run.code, 5, "{run:?}");
    assert!(run.stderr.contains("bucket `nope`: no such bucket"), "{}", run.stderr);
}

#[tokio::test]
async fn schema_of_an_older_service_is_derived_from_its_kv_schema() {
    let env = Env::start().await;
    // Only `__kvconfig.schema`, as a service on an older kv-config published it.
    env.bucket_with_schema("app", "").await;
    let run = env.kvc(&["schema", "app"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json(), AppConfig::json_schema());
    assert_eq!(
        run.stderr.trim(),
        "note: bucket `app` has no published JSON Schema (key `__kvconfig.json_schema`); printing the one derived from its published kv-config schema"
    );
}

#[tokio::test]
async fn schema_without_a_bucket_needs_no_server() {
    let env = Env::start().await;
    // The generic kvc has no type: a usage error, without trying the (closed) port.
    let run = env.kvc_with(&["schema"], &[("NATS_URL", "nats://127.0.0.1:1")], "");
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.starts_with("kvc: error: `kvc schema` needs a BUCKET"), "{}", run.stderr);

    // The typed kvc prints its type's JSON Schema; its store is never asked (an empty one).
    let (code, out, err) = typed(Arc::new(MemoryStore::new()), &["schema"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), AppConfig::json_schema());
    let (code, out, _) = typed(Arc::new(MemoryStore::new()), &["schema", "--kv", "--json"]).await;
    assert_eq!(code, 0);
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), serde_json::to_value(AppConfig::schema()).unwrap());

    // With a bucket, the typed kvc still prints its type's, but a missing bucket is exit 5.
    let store: Arc<dyn Store> = env.store.clone();
    store.create_bucket(&BucketConfig::new("app")).await.unwrap();
    let (code, out, err) = typed(store.clone(), &["schema", "app"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap(), AppConfig::json_schema());
    let (code, _, err) = typed(store, &["schema", "nope"]).await;
    assert_eq!(code, 5, "{err}");
}


/// The typed kvc for `AppConfig` in-process; returns (exit code, stdout, stderr).
async fn typed(store: Arc<dyn Store>, args: &[&str]) -> (i32, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("kvc").chain(args.iter().copied())).expect("args");
    let (out, err) = (Buf::default(), Buf::default());
    let printer = Printer::new(Box::new(out.clone()), Box::new(err.clone()), cli.global.json, false);
    let code = execute(cli, store, Mode::typed::<AppConfig>(), printer).await;
    (code, out.text(), err.text())
}
