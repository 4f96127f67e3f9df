use std::collections::BTreeMap;
use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct Tenant {
    limit: u32,
}

fn check(_: &Tenant) -> Result<(), String> {
    Ok(())
}

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(nested, validate_each = check)]
    tenants: BTreeMap<String, Tenant>,
}

fn main() {}
