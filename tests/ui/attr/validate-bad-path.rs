use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(validate = "not a path")]
    port: u16,
}

fn main() {}
