//! `kvc schema [BUCKET]`: the config's JSON Schema (draft 2020-12), for validators and editors.
//!
//! The generic `kvc` prints the JSON Schema a service published with
//! `LiveConfig::publish_schema` under `<prefix>__kvconfig.json_schema`; when only
//! `<prefix>__kvconfig.schema` is there (a service on an older kv-config), it derives the JSON
//! Schema from that and says so on stderr. A service's own `kvc` (`kv_config_cli::run::<T>()`)
//! prints `T::json_schema()`, and needs neither a bucket nor a server for it. `--kv` prints
//! kv-config's own schema format instead.
//!
//! JSON: the document itself (also printed without `--json`).

use kv_config::store::Bucket;
use kv_config::JSON_SCHEMA_KEY;
use serde_json::Value;

use crate::error::{CliError, CliResult};
use crate::ops::{Ctx, Mode};
use crate::output::{Block, Report, Text};

/// Arguments of `kvc schema`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
The JSON Schema describes the config as one JSON document: a key `server.port` is the member
`port` of the object `server`. It carries types, ranges, enums, docs, defaults and required keys;
secrets are writeOnly, map fields additionalProperties.

Examples:
  kvc schema app > app.schema.json
  kvc --prefix prod schema app
  kvc schema app --kv                           kv-config's own schema format")]
pub struct Args {
    /// The bucket (a service's own kvc prints its type's schema without one, offline).
    pub bucket: Option<String>,
    /// Print kv-config's own schema (`<prefix>__kvconfig.schema`) instead of the JSON Schema.
    #[arg(long)]
    pub kv: bool,
}

/// Prints the schema.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let doc = match (&ctx.mode, &args.bucket) {
        (Mode::Typed(t), bucket) => {
            let schema = t.schema.clone();
            if let Some(name) = bucket {
                ctx.open(name).await?; // a missing bucket is still an error (exit 5)
            }
            if args.kv {
                serde_json::to_value(&schema).map_err(|e| CliError::Other(format!("cannot encode the schema: {e}")))?
            } else {
                schema.json_schema()
            }
        }
        (Mode::Generic, None) => {
            return Err(CliError::Usage(
                "`kvc schema` needs a BUCKET: kvc reads the schema a service published there (a service's own kvc prints its type's schema without one)".into(),
            ))
        }
        (Mode::Generic, Some(name)) => {
            let bucket = ctx.open(name).await?;
            if args.kv {
                published_kv(ctx, bucket.as_ref()).await?
            } else {
                published_json_schema(ctx, bucket.as_ref()).await?
            }
        }
    };
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default();
    Ok(Report { json: doc, blocks: vec![Block::Line(Text::plain(text))] })
}

/// kv-config's schema published under the prefix.
async fn published_kv(ctx: &mut Ctx, bucket: &dyn Bucket) -> CliResult<Value> {
    match ctx.schema_quiet(bucket).await? {
        Some(schema) => serde_json::to_value(&schema).map_err(|e| CliError::Other(format!("cannot encode the schema: {e}"))),
        None => Err(not_published(ctx, bucket)),
    }
}

/// The JSON Schema published under the prefix, or the one derived from the published schema.
async fn published_json_schema(ctx: &mut Ctx, bucket: &dyn Bucket) -> CliResult<Value> {
    let key = ctx.full_key(JSON_SCHEMA_KEY);
    if let Some(e) = bucket.entry(&key).await?.filter(|e| e.is_put()) {
        return serde_json::from_slice(&e.value).map_err(|err| {
            CliError::Other(format!("bucket `{}`, key `{key}`: the published JSON Schema is not JSON: {err}", bucket.name()))
        });
    }
    match ctx.schema_quiet(bucket).await? {
        Some(schema) => {
            ctx.note_once(format!(
                "note: bucket `{}` has no published JSON Schema (key `{key}`); printing the one derived from its published kv-config schema",
                bucket.name()
            ));
            Ok(schema.json_schema())
        }
        None => Err(not_published(ctx, bucket)),
    }
}

fn not_published(ctx: &Ctx, bucket: &dyn Bucket) -> CliError {
    let prefix = if ctx.prefix.is_empty() { "no prefix".to_string() } else { format!("prefix `{}`", ctx.prefix) };
    CliError::NotFound(format!(
        "bucket `{}`: no schema published ({prefix}); a service publishes it with LiveConfig::publish_schema",
        bucket.name()
    ))
}
