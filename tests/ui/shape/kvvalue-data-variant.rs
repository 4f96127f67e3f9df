use kv_config::KvValue;

#[derive(KvValue)]
enum Level {
    Debug,
    Custom(String),
}

fn main() {}
