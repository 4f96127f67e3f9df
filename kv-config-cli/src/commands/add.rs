//! `kvc add BUCKET`: creates a bucket for config.
//!
//! JSON: the shape of `kvc info --json` for the new bucket.

use std::time::Duration;

use kv_config::store::BucketConfig;

use crate::cli::parse_duration;
use crate::error::{CliError, CliResult};
use crate::ops::Ctx;
use crate::output::Report;

/// Arguments of `kvc add`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  kvc add app\n  kvc add app --history 64 --description 'shared settings of app'\n  kvc add locks --history 1 --key-ttl 1s")]
pub struct Args {
    /// The bucket (`[-_a-zA-Z0-9]`).
    pub bucket: String,
    /// Revisions kept per key (1 to 64); revert and diff reach as far back as this.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u8).range(1..=64))]
    pub history: u8,
    /// Expire values after this long (e.g. `30d`; default never).
    #[arg(long, value_parser = parse_duration)]
    pub ttl: Option<Duration>,
    /// Allow per-key TTLs (needed by `kvc lock`); expiry markers live this long (e.g. `1s`).
    #[arg(long, value_parser = parse_duration)]
    pub key_ttl: Option<Duration>,
    /// Replicas in a cluster (1 to 5).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u8).range(1..=5))]
    pub replicas: u8,
    /// Allow atomic multi-key batches (needed by multi-key `set`, `edit`, `revert`, `import`).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = clap::ArgAction::Set)]
    pub atomic: bool,
    /// A description.
    #[arg(long, default_value = "")]
    pub description: String,
}

/// Creates the bucket; an existing one is a conflict (exit 3).
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    if ctx.store.bucket_names().await?.iter().any(|n| n == &args.bucket) {
        return Err(CliError::Conflict(format!("bucket `{}`: already exists", args.bucket)));
    }
    let mut config = BucketConfig::new(&args.bucket)
        .history(args.history)
        .replicas(args.replicas as usize)
        .atomic_writes(args.atomic)
        .description(args.description.clone());
    if let Some(ttl) = args.ttl {
        config = config.max_age(ttl);
    }
    if let Some(markers) = args.key_ttl {
        config = config.key_ttl(markers);
    }
    ctx.store.create_bucket(&config).await?;
    super::info::exec(&super::info::Args { bucket: args.bucket.clone() }, ctx).await
}
