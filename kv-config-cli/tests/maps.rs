//! Map fields (`flags.<name>`, `tenants.<id>.limit`): kvc checks each entry key against the
//! schema's `*` pattern, in typed mode and from a published schema, and lists entries as keys.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use clap::Parser;
use common::{values, Buf, Env};
use kv_config::store::{Bucket, BucketConfig, Store};
use kv_config::{KvConfig, SCHEMA_KEY};
use kv_config_cli::output::Printer;
use kv_config_cli::{execute, Cli, Mode};
use serde::{Deserialize, Serialize};

fn positive(v: &u32) -> Result<(), String> {
    if *v == 0 {
        Err("a limit of 0 blocks the tenant".into())
    } else {
        Ok(())
    }
}

#[derive(KvConfig, Clone, Serialize, Deserialize)]
struct Tenant {
    #[kv(validate = positive)]
    limit: u32,
    #[kv(default = "free")]
    plan: String,
}

#[derive(KvConfig, Clone, Serialize, Deserialize)]
struct Flagged {
    /// Feature flags.
    flags: HashMap<String, bool>,
    #[kv(nested)]
    tenants: BTreeMap<String, Tenant>,
}


/// Runs kvc in-process (typed with `Flagged`, or generic); returns (exit code, stdout, stderr).
async fn kvc(env: &Env, mode: Mode, args: &[&str]) -> (i32, String, String) {
    let cli = Cli::try_parse_from(std::iter::once("kvc").chain(args.iter().copied())).expect("args");
    let (out, err) = (Buf::default(), Buf::default());
    let printer = Printer::new(Box::new(out.clone()), Box::new(err.clone()), cli.global.json, false);
    let code = execute(cli, env.store.clone(), mode, printer).await;
    (code, out.text(), err.text())
}

async fn bucket(env: &Env) -> Arc<dyn Bucket> {
    env.store.create_bucket(&BucketConfig::new("app").history(5)).await.unwrap()
}

#[tokio::test]
async fn typed_set_of_a_map_entry_checks_it_against_the_pattern() {
    let env = Env::start().await;
    let b = bucket(&env).await;
    let typed = || Mode::typed::<Flagged>();

    let (code, out, err) = kvc(&env, typed(), &["set", "app", "flags.beta=true", "tenants.acme.limit=5"]).await;
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(values(b.as_ref()).await, [("flags.beta".into(), "true".into()), ("tenants.acme.limit".into(), "5".into())]);

    let before = values(b.as_ref()).await;
    let refused = [
        ("flags.beta=maybe", "key `flags.beta`: "),
        ("flags.a.b=true", "key `flags.a.b`: unknown key"),
        ("tenants.acme=1", "key `tenants.acme`: unknown key"),
        ("tenants.acme.limit=0", "key `tenants.acme.limit`: rejected by validator: a limit of 0 blocks the tenant"),
    ];
    for (arg, expect) in refused {
        let (code, out, err) = kvc(&env, typed(), &["set", "app", arg]).await;
        assert_eq!(code, 4, "{arg}: {out}{err}");
        assert!(err.contains(expect), "{arg}: {err}");
    }
    assert_eq!(values(b.as_ref()).await, before, "nothing written");

    // `show` lists each entry as a typed key; the patterns themselves are no rows.
    b.put("flags.x.y", "true".into()).await.unwrap();
    let (code, out, err) = kvc(&env, typed(), &["show", "app", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows: BTreeMap<&str, &serde_json::Value> =
        json["keys"].as_array().unwrap().iter().map(|r| (r["key"].as_str().unwrap(), r)).collect();
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), ["flags.beta", "flags.x.y", "tenants.acme.limit"]);
    assert_eq!((rows["flags.beta"]["type"].as_str(), rows["flags.beta"]["state"].as_str()), (Some("bool"), Some("set")));
    assert_eq!(rows["flags.beta"]["doc"], "Feature flags.");
    assert_eq!(rows["flags.x.y"]["state"], "invalid");
    assert!(rows["flags.x.y"]["reason"].as_str().unwrap().contains("`x.y` is not a legal entry name"), "{out}");
    b.delete("flags.x.y").await.unwrap();

    // A required leaf of an entry goes only with the whole entry.
    let (code, _, err) = kvc(&env, typed(), &["set", "app", "tenants.acme.plan=pro"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kvc(&env, typed(), &["del", "app", "tenants.acme.limit", "--yes"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("delete every key of entry `tenants.acme`"), "{err}");
    let (code, _, err) = kvc(&env, typed(), &["del", "app", "tenants.acme.plan", "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = kvc(&env, typed(), &["del", "app", "tenants.acme.limit", "--yes"]).await;
    assert_eq!(code, 0, "the last key of the entry: {err}");
    let (code, _, err) = kvc(&env, typed(), &["del", "app", "flags.beta", "--yes"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(values(b.as_ref()).await.is_empty());
}

#[tokio::test]
async fn generic_kvc_reads_entry_types_from_the_published_schema() {
    let env = Env::start().await;
    let b = bucket(&env).await;
    b.put(SCHEMA_KEY, serde_json::to_vec(&Flagged::schema()).unwrap().into()).await.unwrap();
    let (code, out, err) = kvc(&env, Mode::Generic, &["set", "app", "flags.beta=true"]).await;
    assert_eq!(code, 0, "{out}{err}");
    let (code, _, err) = kvc(&env, Mode::Generic, &["set", "app", "flags.gamma=maybe"]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("expected bool"), "{err}");
    let (code, _, err) = kvc(&env, Mode::Generic, &["set", "app", "flags.a.b=true"]).await;
    assert_eq!(code, 4, "{err}");

    let (code, out, err) = kvc(&env, Mode::Generic, &["get", "app", "flags.beta", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(serde_json::from_str::<serde_json::Value>(&out).unwrap()["value"], true);

    // Export and import carry entries like any key, checked against the pattern.
    let (code, out, err) = kvc(&env, Mode::Generic, &["export", "app"]).await;
    assert_eq!(code, 0, "{err}");
    let mut file: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(file["values"]["flags.beta"]["value"], true, "{out}");
    file["values"]["flags.beta"]["value"] = "maybe".into();
    let path = env.path("app.json");
    std::fs::write(&path, file.to_string()).unwrap();
    let (code, _, err) = kvc(&env, Mode::Generic, &["import", "app", path.to_str().unwrap()]).await;
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("flags.beta") && err.contains("expected bool"), "{err}");
    file["values"]["flags.beta"]["value"] = false.into();
    std::fs::write(&path, file.to_string()).unwrap();
    let (code, out, err) = kvc(&env, Mode::Generic, &["diff", "app", "--file", path.to_str().unwrap(), "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("flags.beta") && !out.contains('*'), "{out}");
    let (code, _, err) = kvc(&env, Mode::Generic, &["import", "app", path.to_str().unwrap()]).await;
    assert_eq!(code, 0, "{err}");
    let live: Vec<(String, String)> = values(b.as_ref()).await.into_iter().filter(|(k, _)| !k.starts_with("__kvconfig")).collect();
    assert_eq!(live, [("flags.beta".to_string(), "false".to_string())]);
    let (code, out, err) = kvc(&env, Mode::Generic, &["diff", "app", "--against-defaults", "--json"]).await;
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('*'), "{out}");
}
