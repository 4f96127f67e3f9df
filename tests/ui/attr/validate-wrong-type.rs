use kv_config::KvConfig;

fn check(v: &String) -> Result<(), String> {
    let _ = v;
    Ok(())
}

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(validate = check)]
    port: u16,
}

fn main() {}
