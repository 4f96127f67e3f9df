//! `kvc diff BUCKET`: the current config against its defaults, a past revision or time,
//! another prefix in the same bucket, or an export file. Only keys that differ are listed.
//!
//! JSON: `{"bucket", "prefix", "against", "changes": [{"key", "old", "new"}]}` where `old` is
//! the other state and `new` the current one (`null` = absent). The exit code is 0 either way;
//! a past state the bucket does not hold (see [`Ctx::state_at`]) is exit 5.
//! Table cells are bounded (see [`crate::clip`]); `--json` values are whole.

use std::collections::BTreeMap;
use std::path::PathBuf;

use bytes::Bytes;

use crate::error::{CliError, CliResult};
use crate::ops::{diff_block, normalize_prefix, parse_time, Ctx, Cutoff};
use crate::output::Report;

/// Arguments of `kvc diff`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
The config's own prefix is the global --prefix; compare two prefixes (e.g. staging and prod in
one bucket) with --against-prefix.

--revision and --time reach as far back as the bucket holds: a past state it no longer holds, a
revision past its last one, or a time before the bucket was created (deleted and created again
since) is refused with exit 5.

Examples:
  kvc diff app --against-defaults
  kvc diff app --revision 40
  kvc diff app --time 2026-11-26T17:00:00Z
  kvc diff app --time 1h
  kvc --prefix prod diff app --against-prefix staging
  kvc diff app --file app.json")]
#[command(group = clap::ArgGroup::new("against").required(true).multiple(false))]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// Compare with the schema's defaults.
    #[arg(long, group = "against")]
    pub against_defaults: bool,
    /// Compare with the config as it was at this bucket revision.
    #[arg(long, group = "against")]
    pub revision: Option<u64>,
    /// Compare with the config as it was at this time (RFC 3339, or a duration ago: `1h`).
    #[arg(long, group = "against")]
    pub time: Option<String>,
    /// Compare with the config under another prefix of the same bucket.
    #[arg(long, group = "against", value_name = "OTHER")]
    pub against_prefix: Option<String>,
    /// Compare with a `kvc export` file.
    #[arg(long, group = "against", value_name = "FILE")]
    pub file: Option<PathBuf>,
}

/// Diffs.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let cur = ctx.load(&args.bucket).await?;
    let (label, other): (String, BTreeMap<String, Bytes>) = if args.against_defaults {
        let Some(schema) = &cur.schema else {
            return Err(CliError::Usage(format!("bucket `{}`: no schema, so no defaults to compare with", args.bucket)));
        };
        let defaults = schema
            .fields
            .iter()
            .filter(|f| !f.is_map_entry())
            .filter_map(|f| f.default.as_ref().map(|d| (f.key.clone(), Bytes::from(serde_json::to_vec(d).unwrap_or_default()))))
            .collect();
        ("defaults".into(), defaults)
    } else if let Some(rev) = args.revision {
        (format!("revision {rev}"), ctx.state_at(&cur, Cutoff::Revision(rev)).await?)
    } else if let Some(time) = &args.time {
        let at = parse_time(time).map_err(CliError::Usage)?;
        (format!("at {}", crate::ops::time(at)), ctx.state_at(&cur, Cutoff::Time(at)).await?)
    } else if let Some(other) = &args.against_prefix {
        let mine = std::mem::replace(&mut ctx.prefix, normalize_prefix(other));
        let loaded = ctx.load(&args.bucket).await;
        let label = format!("prefix `{}`", ctx.prefix);
        ctx.prefix = mine;
        (label, loaded?.live())
    } else if let Some(path) = &args.file {
        let file = super::export::read_file(path)?;
        // A redacted secret in the file says nothing about its value: compare it as unchanged.
        let live = cur.live();
        let values = file
            .values
            .into_iter()
            .filter_map(|(k, v)| {
                let bytes = if v.redacted { live.get(&k)?.clone() } else { Bytes::from(serde_json::to_vec(&v.value).unwrap_or_default()) };
                Some((k, bytes))
            })
            .collect();
        (path.display().to_string(), values)
    } else {
        return Err(CliError::Usage("say what to compare with (--against-defaults, --revision, --time, --against-prefix or --file)".into()));
    };
    let mut rows = ctx.diff(&cur, &other, &cur.live());
    if args.against_defaults {
        // A key without a value takes its default: no difference.
        rows.retain(|r| r.new.is_some());
    }
    let block = diff_block(&rows, &label, "current");
    let json = serde_json::json!({ "bucket": cur.name(), "prefix": ctx.prefix, "against": label, "changes": rows });
    Ok(Report::new(&json, vec![block]))
}
