//! The quickstart: derive, load, typed read, write.
//!
//! `cargo run --example quickstart` runs on an embedded in-process store (no server needed);
//! with `NATS_URL=nats://127.0.0.1:4222` it uses that nats-server (JetStream on).

use std::sync::Arc;

use kv_config::store::{MemoryStore, NatsStore, Store};
use kv_config::{KvConfig, LiveConfig};
use serde::{Deserialize, Serialize};

#[derive(KvConfig, Clone, Serialize, Deserialize)]
struct AppConfig {
    /// Log filter, e.g. `info` or `debug`.
    #[kv(default = "info")]
    log_level: String,
    /// HTTP server settings (keys `server.host`, `server.port`).
    #[kv(nested)]
    server: Server,
    /// Redacted in Debug output and errors.
    #[kv(secret, default)]
    api_token: String,
}

#[derive(KvConfig, Clone, Serialize, Deserialize)]
struct Server {
    #[kv(default = "127.0.0.1")]
    host: String,
    #[kv(default = 8080)]
    port: u16,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let store: Arc<dyn Store> = match std::env::var("NATS_URL") {
        Ok(url) => {
            println!("using nats-server at {url}");
            Arc::new(NatsStore::new(async_nats::connect(url).await?))
        }
        Err(_) => {
            println!("NATS_URL not set: using the embedded MemoryStore");
            Arc::new(MemoryStore::new())
        }
    };
    // Load (creating the bucket and seeding defaults if needed) and keep it live.
    let cfg = LiveConfig::<AppConfig>::builder_shared(store, "quickstart").create_if_missing().start().await?;
    println!("loaded:  {:?}", cfg.get().config());

    // A typed read is one atomic load.
    let port = cfg.get().server.port;
    println!("listening on {}:{port}", cfg.get().server.host);

    // A write: compare-and-swap on every changed key, all keys in one atomic batch.
    let snap = cfg
        .update(|c| {
            c.server.port = port.wrapping_add(1).max(1024);
            c.log_level = "debug".into();
        })
        .await?;
    println!("updated: {:?} (revision {})", snap.config(), snap.revision());
    Ok(())
}
