use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct Inner {
    port: u16,
}

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(nested, secret)]
    inner: Inner,
}

fn main() {}
