//! `kvc rm BUCKET`: deletes a bucket after confirmation.
//!
//! JSON: `{"bucket", "deleted": true}`.

use crate::error::CliResult;
use crate::ops::Ctx;
use crate::output::{Block, Report, Text};

/// Arguments of `kvc rm`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  kvc rm old-app\n  kvc rm old-app --yes")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
}

/// Deletes the bucket.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let bucket = ctx.open(&args.bucket).await?;
    let info = bucket.info().await?;
    ctx.confirm(
        &format!("Delete bucket `{}` and its {} stored values? This cannot be undone.", args.bucket, info.messages),
        args.yes,
    )?;
    ctx.store.delete_bucket(&args.bucket).await?;
    Ok(Report::new(
        &serde_json::json!({ "bucket": args.bucket, "deleted": true }),
        vec![Block::Line(Text::plain(format!("deleted bucket `{}`", args.bucket)))],
    ))
}
