use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(rename = "__kvconfig.schema")]
    schema: String,
}

fn main() {}
