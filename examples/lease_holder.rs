//! Holds a lease until it is lost or Ctrl-C: acquires `KEY` in `BUCKET` with keep-alive, prints
//! `acquired <revision>`, and prints `lost: <reason>` (exit code 3) if the lease is lost.
//!
//! `cargo run --example lease_holder -- nats://127.0.0.1:4222 locks leader 2 [HOLDER]`
//! (TTL in whole seconds; the bucket is created with per-key TTLs if missing). Run it twice: the
//! second one fails with the first one's name; kill the first with `kill -9` and the key is free
//! again within the TTL (plus up to a second for the server's expiry).
//!
//! `tests/lease.rs` includes this file and calls [`run`] in a child process of the test binary.

use std::time::Duration;

use kv_config::store::{BucketConfig, NatsStore, Store};
use kv_config::Lease;

/// What to hold.
pub struct Args {
    /// The server.
    pub url: String,
    /// The bucket (created with per-key TTLs if missing).
    pub bucket: String,
    /// The key.
    pub key: String,
    /// The TTL in whole seconds.
    pub ttl_secs: u64,
    /// The holder's name.
    pub holder: String,
}

impl Args {
    /// Parses `URL BUCKET KEY TTL_SECS [HOLDER]`.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Args, String> {
        let usage = "usage: lease_holder URL BUCKET KEY TTL_SECS [HOLDER]";
        let mut it = args.into_iter();
        let mut next = |what: &str| it.next().ok_or_else(|| format!("missing {what}; {usage}"));
        let url = next("URL")?;
        let bucket = next("BUCKET")?;
        let key = next("KEY")?;
        let ttl_secs = next("TTL_SECS")?.parse().map_err(|e| format!("TTL_SECS: {e}; {usage}"))?;
        let holder = next("HOLDER").unwrap_or_else(|_| format!("lease_holder[{}]", std::process::id()));
        Ok(Args { url, bucket, key, ttl_secs, holder })
    }
}

/// Acquires the lease with keep-alive and holds it until it is lost (returns the reason) or
/// Ctrl-C (releases it, returns `None`).
pub async fn run(args: Args) -> Result<Option<String>, Box<dyn std::error::Error + Send + Sync>> {
    let client = async_nats::connect(args.url.as_str()).await?;
    let store = NatsStore::new(client);
    let bucket = store.create_bucket(&BucketConfig::new(args.bucket.as_str()).key_ttl(Duration::from_secs(1))).await?;
    let lease = Lease::acquire_as(bucket, &args.key, Duration::from_secs(args.ttl_secs), args.holder.as_str())
        .await?
        .keep_alive();
    println!("acquired {}", lease.revision());
    tokio::select! {
        reason = lease.lost() => {
            println!("lost: {reason}");
            Ok(Some(reason.to_string()))
        }
        _ = tokio::signal::ctrl_c() => {
            lease.release().await?;
            println!("released");
            Ok(None)
        }
    }
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt().with_env_filter("kv_config=info").init();
    let args = match Args::parse(std::env::args().skip(1)) {
        Ok(args) => args,
        Err(e) => {
            eprintln!("{e}");
            std::process::exit(2);
        }
    };
    match run(args).await {
        Ok(None) => {}
        Ok(Some(_lost)) => std::process::exit(3),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    }
}
