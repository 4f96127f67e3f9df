use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    port: u16,
    #[kv(rename = "port")]
    other_port: u16,
}

fn main() {}
