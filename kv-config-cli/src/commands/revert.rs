//! `kvc revert BUCKET KEY --to REV` and `kvc revert BUCKET --time T`: restore one key to a
//! revision, or the whole config (under --prefix) to its state at a point in time, in one
//! atomic batch, validated like any write.
//!
//! JSON: the write result shape (see [`Written`](crate::ops::Written)).

use crate::cli::WriteArgs;
use crate::error::{CliError, CliResult};
use crate::ops::{parse_stored, parse_time, Change, Ctx, Cutoff};
use crate::output::Report;

/// Arguments of `kvc revert`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
With --time every key returns to the value it had then: keys set since are deleted, keys deleted
since come back. It reaches as far back as the bucket's history (`kvc info`), and no further
than the bucket's creation: a time before it is refused (exit 5), since a bucket deleted and
created again holds nothing of the one before.

Examples:
  kvc revert app server.port --to 12
  kvc revert app --time 2026-11-26T17:00:00Z -m 'undo the 17:05 deploy'
  kvc revert app --time 30m --dry-run")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// The key to restore (with --to).
    #[arg(requires = "to")]
    pub key: Option<String>,
    /// The revision of KEY to restore.
    #[arg(long, requires = "key", conflicts_with = "time")]
    pub to: Option<u64>,
    /// Restore the whole config to this time (RFC 3339, or a duration ago such as `30m`).
    #[arg(long, required_unless_present = "to")]
    pub time: Option<String>,
    /// Validate and show the diff, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Reason and author.
    #[command(flatten)]
    pub write: WriteArgs,
}

/// Reverts.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let cur = ctx.load(&args.bucket).await?;
    let changes = match (&args.key, args.to, &args.time) {
        (Some(key), Some(rev), _) => {
            let old = cur.bucket.entry_at(&ctx.full_key(key), rev).await?.ok_or_else(|| {
                CliError::NotFound(format!("bucket `{}`, key `{key}`: no revision {rev} of this key is retained", args.bucket))
            })?;
            let new = old.is_put().then(|| old.value.clone());
            let same = match (cur.live_entry(key), &new) {
                (Some(e), Some(v)) => parse_stored(&e.value) == parse_stored(v),
                (None, None) => true,
                _ => false,
            };
            if same {
                Vec::new()
            } else {
                vec![Change { key: key.clone(), new }]
            }
        }
        (None, _, Some(time)) => {
            let at = parse_time(time).map_err(CliError::Usage)?;
            let target = ctx.state_at(&cur, Cutoff::Time(at)).await?;
            ctx.changes_to(&cur, &target)
        }
        _ => return Err(CliError::Usage("give KEY --to REVISION, or --time TIME".into())),
    };
    Ok(ctx.apply(&cur, changes, args.dry_run, args.write.reason.as_deref()).await?.report())
}
