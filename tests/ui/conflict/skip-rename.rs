use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(skip, rename = "x")]
    cache: u16,
}

fn main() {}
