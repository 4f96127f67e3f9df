use kv_config::KvConfig;

// Several mistakes are reported in one build.
#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(defualt)]
    port: u16,
    #[kv(rename = "bad key")]
    host: String,
    #[kv(secret, secret)]
    token: String,
}

fn main() {}
