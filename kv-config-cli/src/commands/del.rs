//! `kvc del BUCKET KEY` and `kvc purge BUCKET KEY`: delete a key (validated like any write: a
//! required key cannot be deleted), after confirmation.
//!
//! JSON: the write result shape (see [`Written`]); `new` is `null`.

use kv_config::store::{WriteOp, AUTHOR_HEADER, REASON_HEADER};

use crate::cli::WriteArgs;
use crate::error::{CliError, CliResult};
use crate::ops::{Change, Ctx, Written};
use crate::output::Report;

/// Arguments of `kvc del`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "A deleted key returns to its default; its history is kept. With --override, only the key's expiring override (`kvc set --for`) ends and its own value is back.\n\nExamples:\n  kvc del app log_level -m 'back to the default'\n  kvc del app log_level --yes\n  kvc del app log_level --override -m 'incident over'")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// The key (relative to --prefix).
    pub key: String,
    /// End the key's expiring override instead of deleting the key.
    #[arg(long = "override")]
    pub override_: bool,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Reason and author.
    #[command(flatten)]
    pub write: WriteArgs,
}

/// Arguments of `kvc purge`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Removes the key's value and every retained revision (history and revert lose it).\n\nExamples:\n  kvc purge app old.setting --yes")]
pub struct PurgeArgs {
    /// The bucket.
    pub bucket: String,
    /// The key (relative to --prefix).
    pub key: String,
    /// Do not ask for confirmation.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Reason and author.
    #[command(flatten)]
    pub write: WriteArgs,
}

/// Deletes the key.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let cur = ctx.load(&args.bucket).await?;
    if args.override_ {
        let Some(entry) = cur.live_override(&args.key) else {
            return Err(CliError::NotFound(format!("bucket `{}`, key `{}`: no override in effect", args.bucket, args.key)));
        };
        let secret = cur.is_secret(&args.key);
        let row = crate::ops::DiffRow {
            key: args.key.clone(),
            old: Some(ctx.show(secret, &entry.value)),
            new: cur.live_entry(&args.key).map(|e| ctx.show(secret, &e.value)),
        };
        ctx.confirm(&format!("End the override of key `{}` in bucket `{}`?", args.key, args.bucket), args.yes)?;
        let rev = ctx.clear_override(&cur, &args.key, args.write.reason.as_deref()).await?;
        return Ok(Written { bucket: args.bucket.clone(), prefix: ctx.prefix.clone(), dry_run: false, changes: vec![row], revision: Some(rev) }.report());
    }
    if cur.live_entry(&args.key).is_none() {
        return Err(CliError::no_key(&args.bucket, &args.key));
    }
    let changes = vec![Change { key: args.key.clone(), new: None }];
    ctx.check(&cur, &changes)?;
    ctx.confirm(&format!("Delete key `{}` in bucket `{}`?", args.key, args.bucket), args.yes)?;
    Ok(ctx.apply(&cur, changes, false, args.write.reason.as_deref()).await?.report())
}

/// Purges the key.
pub async fn exec_purge(args: &PurgeArgs, ctx: &mut Ctx) -> CliResult<Report> {
    let cur = ctx.load(&args.bucket).await?;
    let Some(entry) = cur.entries.get(&args.key) else {
        return Err(CliError::no_key(&args.bucket, &args.key));
    };
    let revision = entry.revision;
    let changes = vec![Change { key: args.key.clone(), new: None }];
    ctx.check(&cur, &changes)?;
    ctx.confirm(
        &format!("Purge key `{}` in bucket `{}`, its value and all its history? This cannot be undone.", args.key, args.bucket),
        args.yes,
    )?;
    let mut op = WriteOp::purge(ctx.full_key(&args.key)).expect_revision(revision).header(AUTHOR_HEADER, ctx.author.clone());
    if let Some(r) = &args.write.reason {
        op = op.header(REASON_HEADER, r.replace(['\r', '\n'], " "));
    }
    let rows = ctx.change_rows(&cur, &changes);
    let rev = ctx.write_batch(&cur, vec![op], &changes).await?;
    Ok(Written { bucket: args.bucket.clone(), prefix: ctx.prefix.clone(), dry_run: false, changes: rows, revision: Some(rev) }.report())
}
