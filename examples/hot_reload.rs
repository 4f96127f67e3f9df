//! A service loop that reads its config on every tick and prints each change as it applies.
//!
//! `NATS_URL=nats://127.0.0.1:4222 cargo run --example hot_reload` (see the README); stop with
//! Ctrl-C, or pass a number of seconds to run for.

#[path = "common/demo_config.rs"]
mod demo_config;

use std::time::Duration;

use demo_config::{DemoConfig, BUCKET};
use kv_config::store::NatsStore;
use kv_config::LiveConfig;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt().with_env_filter("kv_config=info").init();
    let seconds: Option<u64> = std::env::args().nth(1).map(|s| s.parse()).transpose()?;
    let client = async_nats::connect(demo_config::nats_url()).await?;
    let cfg = LiveConfig::<DemoConfig>::builder(NatsStore::new(client), BUCKET).create_if_missing().start().await?;
    cfg.publish_schema().await?;
    println!("started: {:?}", cfg.get().config());

    let mut changes = cfg.subscribe();
    let printer = tokio::spawn(async move {
        while let Ok(change) = changes.changed().await {
            println!("change at revision {}: keys {:?} -> {:?}", change.revision, change.keys, change.new.config());
        }
    });

    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let deadline = seconds.map(|s| tokio::time::Instant::now() + Duration::from_secs(s));
    let mut requests = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = tokio::signal::ctrl_c() => break,
        }
        // The "request path": one atomic load, no lock.
        let snapshot = cfg.get();
        assert!(snapshot.limits.min <= snapshot.limits.max, "never a half-applied change");
        requests += 1;
        if deadline.is_some_and(|d| tokio::time::Instant::now() >= d) {
            break;
        }
    }
    println!("served {requests} ticks; status: {:?}", cfg.status());
    drop(cfg);
    printer.await?;
    Ok(())
}
