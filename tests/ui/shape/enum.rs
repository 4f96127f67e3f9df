use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
enum App {
    A,
}

fn main() {}
