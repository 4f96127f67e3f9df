use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
#[kv(nested)]
struct App {
    port: u16,
}

fn main() {}
