//! `kvc set BUCKET KEY=VALUE...`: validated writes, several keys in one atomic batch.
//!
//! JSON: the write result shape (see [`Written`]).

use std::collections::BTreeSet;
use std::time::Duration;

use crate::cli::{parse_duration, WriteArgs};
use crate::error::{CliError, CliResult, Refusal};
use crate::ops::{parse_input, parse_stored, Change, Ctx, Written};
use crate::output::Report;

/// Arguments of `kvc set`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Values are JSON (`8080`, `true`, `[\"a\",\"b\"]`, `{\"k\":1}`); for string and enum keys a bare
string works too (`log_level=debug`). Every value is checked against the schema (and, in a typed
kvc, the struct's validators) before anything is sent; several keys are written in one atomic
batch, each checked against the revision read, so either all change or none.

With --for, the values are expiring overrides: every service uses them until the TTL ends, then
the keys' own values are back (the bucket needs per-key TTLs: `kvc add --key-ttl`). `kvc del
--override KEY` ends one early; `kvc show` lists them with the time left.

Examples:
  kvc set app server.port=9090
  kvc set app limits.min=5 limits.max=50 -m 'bigger pool for the sale'
  kvc set app 'tags=[\"a\",\"b\"]' --dry-run
  kvc set app log_level=debug --for 30m -m 'incident 4711'")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// KEY=VALUE pairs (keys relative to --prefix; values JSON, or bare strings for strings).
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub assignments: Vec<String>,
    /// Validate and show the diff, write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Write the values as overrides that expire after this long (e.g. 30m, 2h).
    #[arg(long = "for", value_name = "DURATION", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    /// Reason and author.
    #[command(flatten)]
    pub write: WriteArgs,
}

/// Sets the keys.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let mut pairs = Vec::new();
    let mut seen = BTreeSet::new();
    for a in &args.assignments {
        let Some((k, v)) = a.split_once('=') else {
            return Err(CliError::Usage(format!("`{a}`: expected KEY=VALUE")));
        };
        let k = k.trim().to_string();
        if !seen.insert(k.clone()) {
            return Err(CliError::Usage(format!("key `{k}` given twice")));
        }
        pairs.push((k, v.to_string()));
    }
    let cur = ctx.load(&args.bucket).await?;
    let mut changes = Vec::new();
    let mut problems = Vec::new();
    for (k, v) in pairs {
        match parse_input(cur.field(&k), &v) {
            Ok(bytes) if args.for_.is_some() => changes.push(Change { key: k, new: Some(bytes) }),
            Ok(bytes) => {
                let unchanged = cur.live_entry(&k).is_some_and(|e| parse_stored(&e.value) == parse_stored(&bytes));
                if !unchanged {
                    changes.push(Change { key: k, new: Some(bytes) });
                }
            }
            Err(reason) => problems.push(Refusal { key: k, reason }),
        }
    }
    if !problems.is_empty() {
        return Err(CliError::Refused { bucket: args.bucket.clone(), problems });
    }
    let Some(ttl) = args.for_ else {
        for c in &changes {
            if let Some(o) = cur.live_override(&c.key) {
                ctx.printer.note(&format!(
                    "note: key `{}` has an override in effect ({}); the new value applies when it ends (`kvc del --override`)",
                    c.key,
                    crate::overrides::time_left(o)
                ));
            }
        }
        return Ok(ctx.apply(&cur, changes, args.dry_run, args.write.reason.as_deref()).await?.report());
    };
    let ttl = kv_config::overrides::whole_seconds(ttl);
    ctx.check_overrides(&cur, &changes, std::time::SystemTime::now() + ttl)?;
    let mut rows = ctx.change_rows(&cur, &changes);
    for row in &mut rows {
        // The old value is the one in effect: an override already there, or the key's own.
        if let Some(e) = cur.live_override(&row.key) {
            row.old = Some(ctx.show(cur.is_secret(&row.key), &e.value));
        }
    }
    let revision = if args.dry_run { None } else { Some(ctx.commit_overrides(&cur, &changes, ttl, args.write.reason.as_deref()).await?) };
    if revision.is_some() {
        ctx.printer.note(&format!(
            "override(s) expire in {}; the keys' own values return then",
            humantime::format_duration(Duration::from_secs(ttl.as_secs().max(1)))
        ));
    }
    Ok(Written { bucket: args.bucket.clone(), prefix: ctx.prefix.clone(), dry_run: args.dry_run, changes: rows, revision }.report())
}
