//! `kvc ls`: the buckets on the server.
//!
//! JSON: `{"buckets": [{"bucket", "description", "history", "values", "bytes", "last_revision"}]}`.

use serde::Serialize;

use crate::error::CliResult;
use crate::ops::Ctx;
use crate::output::{Block, Report, Text};

/// Arguments of `kvc ls`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  kvc ls\n  kvc ls --json | jq -r '.buckets[].bucket'")]
pub struct Args {}

/// One bucket in `kvc ls --json`.
#[derive(Debug, Clone, Serialize)]
pub struct BucketRow {
    /// Name.
    pub bucket: String,
    /// Description.
    pub description: String,
    /// Revisions kept per key.
    pub history: u8,
    /// Stored messages (values, markers, old revisions).
    pub values: u64,
    /// Stored bytes.
    pub bytes: u64,
    /// Last revision.
    pub last_revision: u64,
}

/// Lists buckets.
pub async fn exec(_args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let mut rows = Vec::new();
    for name in ctx.store.bucket_names().await? {
        let bucket = ctx.open(&name).await?;
        let info = bucket.info().await?;
        rows.push(BucketRow {
            bucket: name,
            description: info.config.description,
            history: info.config.history,
            values: info.messages,
            bytes: info.bytes,
            last_revision: info.last_revision,
        });
    }
    let block = if rows.is_empty() {
        Block::Line(Text::plain("no buckets"))
    } else {
        Block::Table {
            header: ["bucket", "description", "history", "values", "bytes", "last revision"].map(String::from).to_vec(),
            rows: rows
                .iter()
                .map(|r| {
                    vec![
                        Text::plain(r.bucket.clone()),
                        Text::plain(r.description.clone()),
                        Text::plain(r.history.to_string()),
                        Text::plain(r.values.to_string()),
                        Text::plain(r.bytes.to_string()),
                        Text::plain(r.last_revision.to_string()),
                    ]
                })
                .collect(),
        }
    };
    Ok(Report::new(&serde_json::json!({ "buckets": rows }), vec![block]))
}
