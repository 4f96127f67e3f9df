use std::collections::HashMap;
use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    limits: HashMap<u32, u64>,
}

fn main() {}
