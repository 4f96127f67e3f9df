use std::collections::HashMap;
use kv_config::KvConfig;

fn short(s: &String) -> Result<(), String> {
    if s.len() > 8 { Err("too long".into()) } else { Ok(()) }
}

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(validate_each = short)]
    limits: HashMap<String, u32>,
}

fn main() {}
