//! `kvc import BUCKET FILE [--dry-run]`: makes the config equal to an export file (keys in its
//! scope that are missing from the file are deleted), in one atomic batch with revision checks
//! against the revisions the file carries. Refused (exit 3) if any key in scope changed since
//! the export, or if the bucket is not the one exported: deleted and created again since (its
//! creation time differs from the file's `bucket_created`), its revisions started again at 1 and
//! prove nothing. A file without `bucket_created` (from an older kvc) is checked on its
//! revisions alone, with a note on stderr.
//!
//! JSON: the write result shape (see [`Written`](crate::ops::Written)).

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;

use crate::cli::WriteArgs;
use crate::error::{CliError, CliResult};
use crate::ops::Ctx;
use crate::output::Report;

/// Arguments of `kvc import`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
The file comes from `kvc export` (edit its values as you like). Every key it carries must still
be at the revision it was exported with, no key in its scope may have been added since, and the
bucket must be the one exported (not deleted and created again since: the file records when the
bucket was created): otherwise the import is refused (exit 3) and nothing is written. Export
again and redo the edit. A file from an older kvc, without `bucket_created`, is checked on its
revisions alone (a note says so).

Examples:
  kvc export app > app.json && $EDITOR app.json && kvc import app app.json --dry-run
  kvc import app app.json -m 'apply reviewed config'")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// The export file.
    pub file: PathBuf,
    /// Validate and show the diff, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Reason and author.
    #[command(flatten)]
    pub write: WriteArgs,
}

/// Imports.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let file = super::export::read_file(&args.file)?;
    if file.bucket != args.bucket {
        return Err(CliError::Usage(format!(
            "{}: exported from bucket `{}`, not `{}`: its revisions do not apply here",
            args.file.display(),
            file.bucket,
            args.bucket
        )));
    }
    if file.prefix != ctx.prefix {
        return Err(CliError::Usage(format!(
            "{}: exported with prefix `{}`; run with --prefix '{}'",
            args.file.display(),
            file.prefix,
            file.prefix
        )));
    }
    let cur = ctx.load(&args.bucket).await?;
    check_incarnation(ctx, args, file.bucket_created.as_deref(), cur.created)?;
    let in_scope = |k: &str| file.filter.as_deref().map_or(true, |f| k.starts_with(f));
    let mut moved = Vec::new();
    for (k, v) in &file.values {
        let now = cur.entries.get(k).map_or(0, |e| e.revision);
        if now != v.revision {
            moved.push(format!("`{k}` (revision {} in the file, {now} now)", v.revision));
        }
    }
    for (k, e) in cur.entries.iter().filter(|(k, e)| e.is_put() && in_scope(k)) {
        if !file.values.contains_key(k) && e.revision > file.revision {
            moved.push(format!("`{k}` (added at revision {} after the export)", e.revision));
        }
    }
    if !moved.is_empty() {
        return Err(CliError::Conflict(format!(
            "bucket `{}`: changed since the export, nothing written: key {}",
            args.bucket,
            moved.join(", ")
        )));
    }
    // A value marked redacted is left alone; one edited without dropping the mark would be
    // ignored without a word.
    let edited: Vec<String> = file
        .values
        .iter()
        .filter(|(_, v)| v.redacted && v.value != serde_json::Value::String(crate::ops::REDACTED.into()))
        .map(|(k, _)| format!("`{k}`"))
        .collect();
    if !edited.is_empty() {
        return Err(CliError::Usage(format!(
            "bucket `{}`: key {} marked \"redacted\": true but holds a value other than \"{}\"; nothing written: drop the mark to import the value, or restore \"{}\" to leave the key alone",
            args.bucket,
            edited.join(", "),
            crate::ops::REDACTED,
            crate::ops::REDACTED
        )));
    }
    let live = cur.live();
    let mut target: BTreeMap<String, Bytes> = live.iter().filter(|(k, _)| !in_scope(k)).map(|(k, v)| (k.clone(), v.clone())).collect();
    for (k, v) in &file.values {
        let bytes = if v.redacted {
            match live.get(k) {
                Some(b) => b.clone(),
                None => continue,
            }
        } else {
            Bytes::from(serde_json::to_vec(&v.value).unwrap_or_default())
        };
        target.insert(k.clone(), bytes);
    }
    let changes = ctx.changes_to(&cur, &target);
    Ok(ctx.apply(&cur, changes, args.dry_run, args.write.reason.as_deref()).await?.report())
}

/// Refuses the file when the bucket is not the incarnation it was exported from (`exported`, the
/// file's `bucket_created`; `now`, the bucket's creation time as read). Without `exported` (a
/// file from an older kvc) only the revisions can be checked: a note says so.
fn check_incarnation(ctx: &mut Ctx, args: &Args, exported: Option<&str>, now: Option<std::time::SystemTime>) -> CliResult<()> {
    let Some(text) = exported else {
        ctx.note_once(format!(
            "note: {}: the export does not say when bucket `{}` was created (a file from an older kvc): only the revisions are checked, which cannot tell a bucket deleted and created again since",
            args.file.display(),
            args.bucket
        ));
        return Ok(());
    };
    let exported = humantime::parse_rfc3339(text).map_err(|e| {
        CliError::Usage(format!("{}: `bucket_created` is not an RFC 3339 time (`{text}`: {e})", args.file.display()))
    })?;
    match now {
        Some(now) if now != exported => Err(CliError::Replaced(format!(
            "bucket `{}`: deleted and created again since the export (exported from the bucket created {}; this one was created {}): the file's revisions do not identify its values; nothing written. Export again and redo the edit",
            args.bucket,
            crate::ops::time_precise(exported),
            crate::ops::time_precise(now)
        ))),
        _ => Ok(()),
    }
}
