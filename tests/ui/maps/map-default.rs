use std::collections::BTreeMap;
use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(default)]
    flags: BTreeMap<String, bool>,
}

fn main() {}
