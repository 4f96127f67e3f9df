use kv_config::KvConfig;

#[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
struct App {
    #[kv(defualt)]
    port: u16,
}

// Only the attribute error is reported: the dummy impl keeps this code free of follow-on errors.
fn uses_it() -> kv_config::Schema {
    App::schema()
}

fn main() {
    let _ = uses_it;
}
