//! `kvc export BUCKET [PREFIX] > file`: the config as JSON with every key's revision, for
//! `kvc import` (which refuses the file if the bucket moved since).
//!
//! JSON (the file, also printed without `--json`): `{"kvc_export": 1, "bucket", "prefix",
//! "filter", "revision", "bucket_created", "exported_at", "values": {"key": {"value",
//! "revision", "redacted"}}}`. Secrets are exported as `"<redacted>"` with `"redacted": true`
//! unless `--reveal`; import leaves such keys alone.
//!
//! `bucket_created` (RFC 3339, to the nanosecond) is when the bucket the values were read from
//! was created: the revisions in the file identify values only in that incarnation of the bucket
//! (one deleted and created again starts its revisions again at 1), so `kvc import` refuses the
//! file in a bucket created at another time. The field is optional: files written before it
//! existed (or by a store that does not say) import on their revisions alone, with a note on
//! stderr, and an older kvc reading a newer file ignores it.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::error::CliResult;
use crate::ops::{self, Ctx};
use crate::output::{Block, Report, Text};

/// Arguments of `kvc export`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  kvc export app > app.json\n  kvc --prefix prod export app server > prod-server.json\n  kvc export app --reveal > app-with-secrets.json")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// Only keys starting with this (relative to --prefix).
    pub filter: Option<String>,
}

/// The export file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportFile {
    /// Format version (1).
    pub kvc_export: u32,
    /// The bucket.
    pub bucket: String,
    /// The config's prefix.
    pub prefix: String,
    /// Only keys starting with this were exported.
    #[serde(default)]
    pub filter: Option<String>,
    /// The bucket's last revision before the keys were read.
    pub revision: u64,
    /// When the bucket the values were read from was created (RFC 3339, to the nanosecond): the
    /// revisions identify values only in that incarnation of the bucket. `None` in files from a
    /// kvc before this field (import then checks the revisions alone, with a note).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bucket_created: Option<String>,
    /// When (RFC 3339).
    pub exported_at: String,
    /// The values by key (relative to the prefix).
    pub values: BTreeMap<String, ExportedValue>,
}

/// One key of an export.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExportedValue {
    /// The value.
    pub value: Value,
    /// Its revision when exported.
    pub revision: u64,
    /// `true` when the value is a redacted secret (import leaves the key alone).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub redacted: bool,
}

/// Exports.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let bucket = ctx.open(&args.bucket).await?;
    let info = bucket.info().await?;
    let cur = ctx.load(&args.bucket).await?;
    // The revision and the values must come from one incarnation of the bucket.
    ops::same_bucket(&args.bucket, info.created, cur.created, "the export began")?;
    let mut values = BTreeMap::new();
    for (k, e) in cur.entries.iter().filter(|(_, e)| e.is_put()) {
        if args.filter.as_deref().is_some_and(|f| !k.starts_with(f)) {
            continue;
        }
        let redacted = cur.is_secret(k) && !ctx.reveal;
        values.insert(k.clone(), ExportedValue { value: ctx.show(cur.is_secret(k), &e.value), revision: e.revision, redacted });
    }
    let file = ExportFile {
        kvc_export: 1,
        bucket: args.bucket.clone(),
        prefix: ctx.prefix.clone(),
        filter: args.filter.clone(),
        revision: info.last_revision,
        bucket_created: cur.created.map(ops::time_precise),
        exported_at: ops::time(std::time::SystemTime::now()),
        values,
    };
    let text = serde_json::to_string_pretty(&file).unwrap_or_default();
    Ok(Report::new(&file, vec![Block::Line(Text::plain(text))]))
}

/// Reads an export file.
pub fn read_file(path: &std::path::Path) -> CliResult<ExportFile> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| crate::error::CliError::Io(format!("{}: {e}", path.display())))?;
    let file: ExportFile = serde_json::from_str(&text)
        .map_err(|e| crate::error::CliError::Usage(format!("{}: not a kvc export file: {e}", path.display())))?;
    if file.kvc_export != 1 {
        return Err(crate::error::CliError::Usage(format!(
            "{}: export format {} is not supported (this kvc reads format 1)",
            path.display(),
            file.kvc_export
        )));
    }
    Ok(file)
}
