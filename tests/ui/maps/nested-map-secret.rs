use std::collections::BTreeMap;
use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct Tenant {
    token: String,
}

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(nested, secret)]
    tenants: BTreeMap<String, Tenant>,
}

fn main() {}
