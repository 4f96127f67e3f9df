//! A second process that changes two fields atomically with `update`.
//!
//! `NATS_URL=nats://127.0.0.1:4222 cargo run --example admin_edit -- 5 50` sets
//! `limits.min = 5` and `limits.max = 50` in one atomic batch, each key checked against the
//! revision this process read. A watching `hot_reload` never sees one without the other.

#[path = "common/demo_config.rs"]
mod demo_config;

use demo_config::{DemoConfig, BUCKET};
use kv_config::store::NatsStore;
use kv_config::LiveConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let min: u32 = args.next().as_deref().unwrap_or("5").parse()?;
    let max: u32 = args.next().as_deref().unwrap_or("50").parse()?;
    let client = async_nats::connect(demo_config::nats_url()).await?;
    let cfg = LiveConfig::<DemoConfig>::builder(NatsStore::new(client), BUCKET).create_if_missing().start().await?;
    println!("before: {:?}", cfg.get().config());
    match cfg
        .update(|c| {
            c.limits.min = min;
            c.limits.max = max;
        })
        .await
    {
        Ok(snap) => println!("after:  {:?} (revision {})", snap.config(), snap.revision()),
        Err(e) => {
            eprintln!("refused: {e}");
            std::process::exit(1);
        }
    }
    Ok(())
}
