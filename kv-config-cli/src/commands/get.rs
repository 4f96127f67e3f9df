//! `kvc get BUCKET KEY [--revision N]`: one key's value.
//!
//! JSON: `{"bucket", "key", "value", "revision", "created", "operation", "author", "reason"}`
//! (`value` is `null` for a delete or purge marker; secrets are `"<redacted>"`). The value is
//! shown whole, in the table too: the operator asked for it (unlike `show`, see [`crate::clip`]).

use serde::Serialize;
use serde_json::Value;

use crate::error::{CliError, CliResult};
use crate::ops::{self, compact_whole, header, Ctx};
use crate::output::{Block, Report, Text};

/// Arguments of `kvc get`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  kvc get app server.port\n  kvc get app server.port --revision 12\n  kvc get app api_token --reveal --json")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// The key (relative to --prefix).
    pub key: String,
    /// A past revision of the key.
    #[arg(long)]
    pub revision: Option<u64>,
}

/// `kvc get --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Got {
    /// The bucket.
    pub bucket: String,
    /// The key, relative to the prefix.
    pub key: String,
    /// The value (`null` for a marker).
    pub value: Option<Value>,
    /// Its revision.
    pub revision: u64,
    /// When it was written (RFC 3339).
    pub created: String,
    /// `PUT`, `DEL` or `PURGE`.
    pub operation: String,
    /// The KvConfig-Author header.
    pub author: Option<String>,
    /// The KvConfig-Reason header.
    pub reason: Option<String>,
}

/// Reads the key.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let bucket = ctx.open(&args.bucket).await?;
    let schema = ctx.schema(bucket.as_ref()).await?;
    let full = ctx.full_key(&args.key);
    let entry = match args.revision {
        Some(rev) => bucket.entry_at(&full, rev).await?.ok_or_else(|| {
            CliError::NotFound(format!("bucket `{}`, key `{}`: no revision {rev} of this key is retained", args.bucket, args.key))
        })?,
        None => match bucket.entry(&full).await? {
            Some(e) if e.is_put() => e,
            _ => return Err(CliError::no_key(&args.bucket, &args.key)),
        },
    };
    let secret = ops::field_of(schema.as_ref(), &args.key).is_some_and(|f| f.secret);
    let got = Got {
        bucket: args.bucket.clone(),
        key: args.key.clone(),
        value: entry.is_put().then(|| ctx.show(secret, &entry.value)),
        revision: entry.revision,
        created: ops::time_precise(entry.created),
        operation: entry.operation.to_string(),
        author: header(&entry, kv_config::store::AUTHOR_HEADER).map(String::from),
        reason: header(&entry, kv_config::store::REASON_HEADER).map(String::from),
    };
    let rows = vec![
        ("key", got.key.clone()),
        ("value", got.value.as_ref().map_or("-".into(), compact_whole)),
        ("revision", got.revision.to_string()),
        ("created", ops::time(entry.created)),
        ("operation", got.operation.clone()),
        ("author", got.author.clone().unwrap_or_else(|| "-".into())),
        ("reason", got.reason.clone().unwrap_or_else(|| "-".into())),
    ];
    let block = Block::Table {
        header: vec!["property".into(), "value".into()],
        rows: rows.into_iter().map(|(k, v)| vec![Text::plain(k), Text::plain(v)]).collect(),
    };
    Ok(Report::new(&got, vec![block]))
}
