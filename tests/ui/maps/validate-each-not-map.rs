use kv_config::KvConfig;

fn positive(v: &u32) -> Result<(), String> {
    if *v == 0 { Err("zero".into()) } else { Ok(()) }
}

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(validate_each = positive)]
    limit: u32,
}

fn main() {}
