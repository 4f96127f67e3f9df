use std::collections::BTreeMap;
use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct Tenant {
    limit: u32,
}

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(nested, json)]
    tenants: BTreeMap<String, Tenant>,
}

fn main() {}
