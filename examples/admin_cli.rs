//! A service's own admin CLI in three lines: `kvc` typed with the service's config struct.
//!
//! Unlike the generic `kvc` (which reads the schema the service published), this binary runs
//! `DemoConfig`'s own validators, cross-field checks included, before any write:
//!
//! ```sh
//! cargo run --example admin_cli -- add demo
//! cargo run --example admin_cli -- set demo limits.min=60        # refused: limits.min 60 > limits.max 10 (exit 4)
//! cargo run --example admin_cli -- set demo limits.min=5 limits.max=50 -m 'bigger pool'
//! cargo run --example admin_cli -- show demo
//! ```
//!
//! Connection flags and `NATS_URL` work as in `kvc` (default `nats://127.0.0.1:4222`).

#[allow(dead_code)]
#[path = "common/demo_config.rs"]
mod demo_config;

fn main() {
    kv_config_cli::run::<demo_config::DemoConfig>()
}
