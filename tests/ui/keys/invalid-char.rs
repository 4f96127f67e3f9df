use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(rename = "server port")]
    port: u16,
}

fn main() {}
