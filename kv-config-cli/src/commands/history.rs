//! `kvc history BUCKET KEY`: every retained revision with time, operation, author and reason.
//!
//! JSON: `{"bucket", "key", "revisions": [{"revision", "created", "operation", "value",
//! "author", "reason"}]}` (oldest first; `value` is `null` for markers). Table cells are
//! bounded (see [`crate::clip`]); `--json` is whole.

use serde::Serialize;
use serde_json::Value;

use crate::clip::clip_value;
use crate::error::{CliError, CliResult};
use crate::ops::{self, compact, header, Ctx};
use crate::output::{Block, Report, Text, Tone};

/// Arguments of `kvc history`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  kvc history app server.port\n  kvc history app server.port --json | jq '.revisions[-1].author'")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// The key (relative to --prefix).
    pub key: String,
}

/// One revision in `kvc history --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Revision {
    /// The revision.
    pub revision: u64,
    /// When (RFC 3339).
    pub created: String,
    /// `PUT`, `DEL` or `PURGE`.
    pub operation: String,
    /// The value (`null` for markers; secrets redacted).
    pub value: Option<Value>,
    /// The KvConfig-Author header.
    pub author: Option<String>,
    /// The KvConfig-Reason header.
    pub reason: Option<String>,
}

/// Lists the revisions.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let bucket = ctx.open(&args.bucket).await?;
    let schema = ctx.schema(bucket.as_ref()).await?;
    let secret = ops::field_of(schema.as_ref(), &args.key).is_some_and(|f| f.secret);
    let list = bucket.history(&ctx.full_key(&args.key)).await?;
    if list.is_empty() {
        return Err(CliError::no_key(&args.bucket, &args.key));
    }
    let revs: Vec<Revision> = list
        .iter()
        .map(|e| Revision {
            revision: e.revision,
            created: ops::time_precise(e.created),
            operation: e.operation.to_string(),
            value: e.is_put().then(|| ctx.show(secret, &e.value)),
            author: header(e, kv_config::store::AUTHOR_HEADER).map(String::from),
            reason: header(e, kv_config::store::REASON_HEADER).map(String::from),
        })
        .collect();
    let block = Block::Table {
        header: ["revision", "time", "age", "op", "value", "author", "reason"].map(String::from).to_vec(),
        rows: revs
            .iter()
            .zip(&list)
            .map(|(r, e)| {
                vec![
                    Text::plain(r.revision.to_string()),
                    Text::plain(ops::time(e.created)),
                    Text::plain(ops::age(e.created)),
                    Text::plain(r.operation.clone()),
                    r.value.as_ref().map_or(Text::toned("-", Tone::Dim), |v| Text::plain(compact(v))),
                    Text::plain(r.author.as_deref().map_or_else(|| "-".into(), clip_value)),
                    Text::plain(r.reason.as_deref().map_or_else(|| "-".into(), clip_value)),
                ]
            })
            .collect(),
    };
    Ok(Report::new(&serde_json::json!({ "bucket": args.bucket, "key": args.key, "revisions": revs }), vec![block]))
}
