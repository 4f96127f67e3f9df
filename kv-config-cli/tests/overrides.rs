//! `kvc set --for`, `kvc del --override` and overrides in `kvc show`, against a real nats-server
//! and a live service handle.

mod common;

use std::time::Duration;

use common::{AppConfig, Env};
use kv_config::store::{BucketConfig, Store};
use kv_config::{KvConfig, LiveConfig, Provenance, SCHEMA_KEY};

#[tokio::test]
async fn set_for_overrides_every_service_until_the_ttl_ends() {
    let env = Env::start().await;
    let b = env.store.create_bucket(&BucketConfig::new("app").history(10).key_ttl(Duration::from_secs(1))).await.unwrap();
    b.put(SCHEMA_KEY, serde_json::to_vec(&AppConfig::schema()).unwrap().into()).await.unwrap();
    b.put("name", "\"api\"".into()).await.unwrap();
    b.put("log_level", "\"warn\"".into()).await.unwrap();
    let service = LiveConfig::<AppConfig>::builder_shared(env.store.clone(), "app").heartbeat(Duration::from_millis(250)).start().await.unwrap();

    // A wrong value is refused before anything is written.
    let run = env.kvc(&["set", "app", "log_level=loud", "--for", "30m"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(b.entry("__kvconfig.override.log_level").await.unwrap().is_none());

    let run = env.kvc(&["set", "app", "log_level=debug", "--for", "3s", "-m", "incident 4711"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("expire in 3s"), "{}", run.stderr);
    let e = b.entry("__kvconfig.override.log_level").await.unwrap().expect("override written");
    assert_eq!(&e.value[..], b"\"debug\"");
    assert!(e.headers.iter().any(|(k, v)| k == "KvConfig-Reason" && v == "incident 4711"), "{:?}", e.headers);
    assert_eq!(b.get("log_level").await.unwrap().as_deref(), Some(&b"\"warn\""[..]), "the key's own value is untouched");

    // The service uses it at once, and says where it came from.
    kv_config_testing::eventually("service sees the override", Duration::from_secs(5), || {
        service.get().log_level == common::Level::Debug
    })
    .await;
    assert!(matches!(service.get().source("log_level"), Some(Provenance::Override { expires: Some(_), .. })));

    // show marks it, in the table and in JSON.
    let run = env.kvc(&["show", "app"]);
    assert!(run.stdout.contains("override \"debug\""), "{}", run.stdout);
    let json = env.kvc(&["show", "app", "--json"]).json();
    let row = json["keys"].as_array().unwrap().iter().find(|r| r["key"] == "log_level").unwrap().clone();
    assert_eq!((row["value"].clone(), row["override"]["value"].clone()), ("warn".into(), "debug".into()), "{row}");
    assert!(row["override"]["expires"].is_string(), "{row}");

    // A plain set of an overridden key says the override still wins for now.
    let run = env.kvc(&["set", "app", "log_level=info"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("has an override in effect"), "{}", run.stderr);

    // The server ends it; the service goes back to the key's own (new) value.
    kv_config_testing::eventually("override expired", Duration::from_secs(8), || {
        service.get().log_level == common::Level::Info
    })
    .await;
    assert!(matches!(service.get().source("log_level"), Some(Provenance::Bucket { .. })));
    let json = env.kvc(&["show", "app", "--json"]).json();
    let row = json["keys"].as_array().unwrap().iter().find(|r| r["key"] == "log_level").unwrap().clone();
    assert!(row.get("override").is_none(), "{row}");
}

#[tokio::test]
async fn del_override_ends_it_early_and_plain_buckets_say_what_they_lack() {
    let env = Env::start().await;
    let b = env.store.create_bucket(&BucketConfig::new("app").history(10).key_ttl(Duration::from_secs(1))).await.unwrap();
    b.put(SCHEMA_KEY, serde_json::to_vec(&AppConfig::schema()).unwrap().into()).await.unwrap();
    b.put("name", "\"api\"".into()).await.unwrap();
    let run = env.kvc(&["set", "app", "limits.max=99", "--for", "1h"]);
    assert_eq!(run.code, 0, "{run:?}");
    let run = env.kvc(&["del", "app", "limits.max", "--override", "--yes", "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert_eq!(run.json()["changes"][0]["old"], 99);
    let e = b.entry("__kvconfig.override.limits.max").await.unwrap().unwrap();
    assert!(!e.is_put(), "the override is gone");
    let run = env.kvc(&["del", "app", "limits.max", "--override", "--yes"]);
    assert_eq!(run.code, 5, "no override left: {run:?}");

    env.bucket_with_schema("plain", "").await;
    let run = env.kvc(&["set", "plain", "log_level=debug", "--for", "10m"]);
    assert_eq!(run.code, 4, "{run:?}");
    assert!(run.stderr.contains("per-key TTL") && run.stderr.contains("--key-ttl"), "{}", run.stderr);
}

#[tokio::test]
async fn a_secret_override_read_through_its_reserved_key_is_redacted() {
    let env = Env::start().await;
    let b = env.store.create_bucket(&BucketConfig::new("app").history(10).key_ttl(Duration::from_secs(1))).await.unwrap();
    b.put(SCHEMA_KEY, serde_json::to_vec(&AppConfig::schema()).unwrap().into()).await.unwrap();
    b.put("name", "\"api\"".into()).await.unwrap();
    let run = env.kvc(&["set", "app", "api_token=s3cr3t-TOKEN", "--for", "10m"]);
    assert_eq!(run.code, 0, "{run:?}");
    let key = "__kvconfig.override.api_token";

    let run = env.kvc(&["get", "app", key, "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("s3cr3t"), "{}", run.stdout);
    assert_eq!(run.json()["value"], "<redacted>");
    let run = env.kvc(&["get", "app", key]);
    assert!(run.code == 0 && !run.stdout.contains("s3cr3t") && run.stdout.contains("<redacted>"), "{run:?}");

    let run = env.kvc(&["history", "app", key, "--json"]);
    assert_eq!(run.code, 0, "{run:?}");
    assert!(!run.stdout.contains("s3cr3t"), "{}", run.stdout);
    assert_eq!(run.json()["revisions"][0]["value"], "<redacted>");
    let run = env.kvc(&["history", "app", key]);
    assert!(run.code == 0 && !run.stdout.contains("s3cr3t") && run.stdout.contains("<redacted>"), "{run:?}");

    // --reveal shows it, like the key's own value.
    let run = env.kvc(&["get", "app", key, "--reveal", "--json"]);
    assert_eq!(run.json()["value"], "s3cr3t-TOKEN", "{run:?}");
    let run = env.kvc(&["history", "app", key, "--reveal", "--json"]);
    assert_eq!(run.json()["revisions"][0]["value"], "s3cr3t-TOKEN", "{run:?}");
}
