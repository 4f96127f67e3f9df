//! `kvc`: the generic admin CLI for kv-config settings (types from the published schema).
fn main() {
    kv_config_cli::run_generic()
}
