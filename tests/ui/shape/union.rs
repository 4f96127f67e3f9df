use kv_config::KvConfig;

#[derive(KvConfig)]
union App {
    a: u16,
}

fn main() {}
