use kv_config::KvValue;

#[derive(KvValue)]
struct Level {
    a: u8,
}

fn main() {}
