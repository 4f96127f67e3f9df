//! `kvc watch BUCKET [PREFIX]`: prints every change as it happens (first the current value of
//! each key unless `--new`), typed and masked, until Ctrl-C or `--count` events.
//!
//! JSON: one object per line: `{"revision", "created", "operation", "key", "value", "author",
//! "reason", "problem"}` (`value` is `null` for deletes; `problem` says why a value does not fit
//! the schema). Lines are bounded (see [`crate::clip`]): values, headers and problems are cut
//! to a few hundred bytes; in `--json` only `problem` is, values stay whole.

use futures_util::StreamExt;
use kv_config::store::WatchStart;
use serde::Serialize;
use serde_json::Value;

use crate::clip::{clip, clip_value};
use crate::error::CliResult;
use crate::ops::{self, compact, header, Ctx};
use crate::output::{Text, Tone};

/// Arguments of `kvc watch`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  kvc watch app\n  kvc watch app server --new\n  kvc watch app --json --count 1      wait for the next change, print it, exit")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// Only keys starting with this (relative to --prefix).
    pub filter: Option<String>,
    /// Only changes made from now on (not the current values).
    #[arg(long)]
    pub new: bool,
    /// Exit after this many events.
    #[arg(long)]
    pub count: Option<usize>,
}

/// One event of `kvc watch --json`.
#[derive(Debug, Clone, Serialize)]
pub struct Event {
    /// The revision.
    pub revision: u64,
    /// When (RFC 3339).
    pub created: String,
    /// `PUT`, `DEL` or `PURGE`.
    pub operation: String,
    /// The key, relative to the prefix.
    pub key: String,
    /// The value (`null` for markers; secrets redacted).
    pub value: Option<Value>,
    /// The KvConfig-Author header.
    pub author: Option<String>,
    /// The KvConfig-Reason header.
    pub reason: Option<String>,
    /// Why the value does not fit the schema, if it does not.
    pub problem: Option<String>,
}

/// Watches until Ctrl-C or `--count`.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<()> {
    let bucket = ctx.open(&args.bucket).await?;
    let schema = ctx.schema(bucket.as_ref()).await?;
    let pattern = if ctx.prefix.is_empty() { ">".to_string() } else { format!("{}>", ctx.prefix) };
    let start = if args.new { WatchStart::New } else { WatchStart::LatestPerKey };
    let mut watch = bucket.watch(&pattern, start).await?;
    let mut seen = 0usize;
    if args.count == Some(0) {
        return Ok(());
    }
    loop {
        let next = tokio::select! {
            next = watch.next() => next,
            _ = tokio::signal::ctrl_c() => return Ok(()),
        };
        let e = match next {
            None => return Ok(()),
            Some(Err(e)) if e.is_transient() => {
                ctx.printer.note(&format!("warning: {e}; still watching"));
                continue;
            }
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(e)) => e,
        };
        let Some(key) = ctx.relative(&e.key) else { continue };
        if args.filter.as_deref().is_some_and(|f| !key.starts_with(f)) {
            continue;
        }
        let field = ops::field_of(schema.as_ref(), &key);
        let secret = field.is_some_and(|f| f.secret);
        let problem = match (field, e.is_put(), &schema) {
            (Some(f), true, _) => f.ty.parse(&e.value).err().map(|m| if secret { format!("invalid value (redacted); expected {}", f.ty) } else { clip(&m) }),
            (None, true, Some(_)) => Some("unknown key: not in the schema".into()),
            _ => None,
        };
        let event = Event {
            revision: e.revision,
            created: ops::time_precise(e.created),
            operation: e.operation.to_string(),
            key: key.clone(),
            value: e.is_put().then(|| ctx.show(secret, &e.value)),
            author: header(&e, kv_config::store::AUTHOR_HEADER).map(String::from),
            reason: header(&e, kv_config::store::REASON_HEADER).map(String::from),
            problem,
        };
        let mut line = format!("{} rev {} {} {}", event.created, event.revision, event.operation, event.key);
        if let Some(v) = &event.value {
            line.push_str(&format!(" = {}", compact(v)));
        }
        match (event.author.as_deref().map(clip_value), event.reason.as_deref().map(clip_value)) {
            (Some(a), Some(r)) => line.push_str(&format!("  (by {a}: {r})")),
            (Some(a), None) => line.push_str(&format!("  (by {a})")),
            (None, Some(r)) => line.push_str(&format!("  ({r})")),
            (None, None) => {}
        }
        let tone = if let Some(p) = &event.problem {
            line.push_str(&format!("  !! {p}"));
            Tone::Warn
        } else {
            Tone::Plain
        };
        let json = serde_json::to_value(&event).unwrap_or(Value::Null);
        ctx.printer.event(&json, &Text::toned(line, tone));
        seen += 1;
        if args.count.is_some_and(|c| seen >= c) {
            return Ok(());
        }
    }
}
