use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
#[kv(rename_all = "shouty")]
struct App {
    port: u16,
}

fn main() {}
