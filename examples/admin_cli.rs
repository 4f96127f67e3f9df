//! Placeholder until kv-config-cli lands (replaced by the CLI work).
fn main() {}
