use std::collections::HashMap;
use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    flags: HashMap<String, bool>,
    #[kv(rename = "flags.beta", default)]
    beta: bool,
}

fn main() {}
