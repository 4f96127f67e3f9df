//! `kvc set BUCKET KEY=VALUE...`: validated writes, several keys in one atomic batch.
//!
//! JSON: the write result shape (see [`Written`](crate::ops::Written)).

use std::collections::BTreeSet;

use crate::cli::WriteArgs;
use crate::error::{CliError, CliResult, Refusal};
use crate::ops::{parse_input, parse_stored, Change, Ctx};
use crate::output::Report;

/// Arguments of `kvc set`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Values are JSON (`8080`, `true`, `[\"a\",\"b\"]`, `{\"k\":1}`); for string and enum keys a bare
string works too (`log_level=debug`). Every value is checked against the schema (and, in a typed
kvc, the struct's validators) before anything is sent; several keys are written in one atomic
batch, each checked against the revision read, so either all change or none.

Examples:
  kvc set app server.port=9090
  kvc set app limits.min=5 limits.max=50 -m 'bigger pool for the sale'
  kvc set app 'tags=[\"a\",\"b\"]' --dry-run")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// KEY=VALUE pairs (keys relative to --prefix; values JSON, or bare strings for strings).
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub assignments: Vec<String>,
    /// Validate and show the diff, write nothing.
    #[arg(long)]
    pub dry_run: bool,
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
    Ok(ctx.apply(&cur, changes, args.dry_run, args.write.reason.as_deref()).await?.report())
}
