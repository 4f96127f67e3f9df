use std::collections::{BTreeMap, HashMap};
use kv_config::KvConfig;

// `#[kv(json)]` keeps a map in one key, so any serde key type is fine there; a map without it
// still needs `String` keys. Only the second field is an error.
#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(json)]
    by_id: HashMap<u32, String>,
    by_port: BTreeMap<u16, String>,
}

fn main() {}
