//! `kvc info BUCKET`: a bucket's configuration, counters and published schema.
//!
//! JSON: `{"bucket", "description", "history", "max_age_secs", "max_value_size", "replicas",
//! "storage", "key_ttl_secs", "atomic_writes", "values", "bytes", "last_revision",
//! "schema": null | {"name", "version", "keys"}}`.

use kv_config::store::StorageKind;
use serde::Serialize;

use crate::error::CliResult;
use crate::ops::Ctx;
use crate::output::{Block, Report, Text};

/// Arguments of `kvc info`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  kvc info app\n  kvc info app --json | jq .schema")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
}

/// The schema summary in `kvc info --json`.
#[derive(Debug, Clone, Serialize)]
pub struct SchemaSummary {
    /// The Rust struct's name.
    pub name: String,
    /// Its crate's version.
    pub version: String,
    /// How many keys it has.
    pub keys: usize,
}

/// `kvc info --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Info {
    /// Name.
    pub bucket: String,
    /// Description.
    pub description: String,
    /// Revisions kept per key.
    pub history: u8,
    /// Bucket-wide expiry in seconds (`null` = never).
    pub max_age_secs: Option<u64>,
    /// Largest value in bytes (`null` = the server's limit).
    pub max_value_size: Option<u32>,
    /// Replicas.
    pub replicas: usize,
    /// `file` or `memory`.
    pub storage: String,
    /// Lifetime of expiry markers when per-key TTLs are on (`null` = off).
    pub key_ttl_secs: Option<u64>,
    /// Atomic batches allowed.
    pub atomic_writes: bool,
    /// Stored messages.
    pub values: u64,
    /// Stored bytes.
    pub bytes: u64,
    /// Last revision.
    pub last_revision: u64,
    /// The schema published under the prefix (or the type's in typed mode).
    pub schema: Option<SchemaSummary>,
}

/// Shows a bucket.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let bucket = ctx.open(&args.bucket).await?;
    let info = bucket.info().await?;
    let schema = ctx.schema_quiet(bucket.as_ref()).await?;
    let c = info.config;
    let out = Info {
        bucket: c.name.clone(),
        description: c.description.clone(),
        history: c.history,
        max_age_secs: c.max_age.map(|d| d.as_secs()),
        max_value_size: c.max_value_size,
        replicas: c.replicas,
        storage: match c.storage {
            StorageKind::File => "file".into(),
            StorageKind::Memory => "memory".into(),
        },
        key_ttl_secs: c.key_ttl.map(|d| d.as_secs()),
        atomic_writes: c.atomic_writes,
        values: info.messages,
        bytes: info.bytes,
        last_revision: info.last_revision,
        schema: schema.map(|s| SchemaSummary { name: s.name, version: s.version, keys: s.fields.len() }),
    };
    let opt = |v: Option<u64>, none: &str| v.map_or(none.to_string(), |s| humantime::format_duration(std::time::Duration::from_secs(s)).to_string());
    let rows: Vec<(&str, String)> = vec![
        ("bucket", out.bucket.clone()),
        ("description", out.description.clone()),
        ("history", out.history.to_string()),
        ("max age", opt(out.max_age_secs, "never")),
        ("max value size", out.max_value_size.map_or("server limit".into(), |v| v.to_string())),
        ("replicas", out.replicas.to_string()),
        ("storage", out.storage.clone()),
        ("per-key TTL", opt(out.key_ttl_secs, "off")),
        ("atomic writes", out.atomic_writes.to_string()),
        ("values", out.values.to_string()),
        ("bytes", out.bytes.to_string()),
        ("last revision", out.last_revision.to_string()),
        (
            "schema",
            out.schema.as_ref().map_or("none published".into(), |s| format!("{} {} ({} keys)", s.name, s.version, s.keys)),
        ),
    ];
    let block = Block::Table {
        header: vec!["property".into(), "value".into()],
        rows: rows.into_iter().map(|(k, v)| vec![Text::plain(k), Text::plain(v)]).collect(),
    };
    Ok(Report::new(&out, vec![block]))
}
