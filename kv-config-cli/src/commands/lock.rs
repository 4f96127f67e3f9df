//! `kvc lock`: run a command while holding a lease on a key, or show who holds it.
//!
//! The lease is [`kv_config::Lease`]: the key is created with a per-key TTL (the bucket needs
//! per-key TTLs: `kvc add BUCKET --key-ttl 1s`, or `BucketConfig::key_ttl`), refreshed
//! every TTL/3 while the command runs, and released when it ends. If the lease is lost (taken
//! over, deleted, expired, or no refresh got through for a whole TTL) the command is killed.
//!
//! JSON (run): `{"bucket", "key", "holder", "revision", "exit_code"}`; (status): `{"bucket", "key",
//! "state": "held"|"free", "holder", "revision", "created"}`.

use std::process::Stdio;
use std::time::Duration;

use serde::Serialize;

use crate::cli::parse_duration;
use crate::error::{CliError, CliResult};
use crate::ops::{self, Ctx};
use crate::output::{Block, Report, Text};
use kv_config::{Lease, LeaseError};

/// Arguments of `kvc lock`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Exit codes: 0 the command succeeded; 1 it failed (its own code is in the message and \
--json); 3 the lease is held by someone else, or was lost while the command ran (the command is then killed).\n\n\
The bucket needs per-key TTLs: `kvc add locks --history 1 --key-ttl 1s`.\n\n\
Examples:\n  kvc lock locks nightly-job --ttl 30s -- ./run-migration.sh\n  kvc lock locks nightly-job --status")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// The lock's key (relative to --prefix).
    pub key: String,
    /// How long the lease lives without a refresh (whole seconds).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub ttl: Duration,
    /// The name stored as the holder (default: the author, user@host).
    #[arg(long)]
    pub holder: Option<String>,
    /// Show who holds the lock instead of taking it.
    #[arg(long, conflicts_with = "command")]
    pub status: bool,
    /// The command to run while holding the lock.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// `kvc lock --json` after running a command.
#[derive(Debug, Clone, Serialize)]
pub struct Ran {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// Who held it.
    pub holder: String,
    /// The lease's last revision.
    pub revision: u64,
    /// The command's exit code.
    pub exit_code: i32,
}

/// `kvc lock --status --json`.
#[derive(Debug, Clone, Serialize)]
pub struct LockStatus {
    /// The bucket.
    pub bucket: String,
    /// The key.
    pub key: String,
    /// `held` or `free`.
    pub state: &'static str,
    /// The holder named in the value, when held.
    pub holder: Option<String>,
    /// The key's revision, when held.
    pub revision: Option<u64>,
    /// When the holder last wrote it.
    pub created: Option<String>,
}

/// Runs `kvc lock`.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let bucket = ctx.open(&args.bucket).await?;
    let full = ctx.full_key(&args.key);
    if args.status {
        let entry = bucket.entry(&full).await?.filter(|e| e.is_put());
        let status = LockStatus {
            bucket: args.bucket.clone(),
            key: args.key.clone(),
            state: if entry.is_some() { "held" } else { "free" },
            holder: entry.as_ref().map(|e| {
                serde_json::from_slice::<serde_json::Value>(&e.value)
                    .ok()
                    .and_then(|v| v.get("holder").and_then(|h| h.as_str()).map(String::from))
                    .unwrap_or_else(|| "(not a lease value)".to_string())
            }),
            revision: entry.as_ref().map(|e| e.revision),
            created: entry.as_ref().map(|e| ops::time_precise(e.created)),
        };
        let line = match (&status.holder, status.revision) {
            (Some(h), Some(r)) => format!("lock `{}` in bucket `{}` is held by `{h}` (revision {r})", args.key, args.bucket),
            _ => format!("lock `{}` in bucket `{}` is free", args.key, args.bucket),
        };
        return Ok(Report::new(&status, vec![Block::Line(Text::plain(line))]));
    }
    let Some((program, rest)) = args.command.split_first() else {
        return Err(CliError::Usage("give a command after `--` to run under the lock, or --status".into()));
    };
    let holder = args.holder.clone().unwrap_or_else(|| ctx.author.clone());
    let lease = Lease::acquire_as(bucket.clone(), &full, args.ttl, holder.clone()).await.map_err(lease_error)?.keep_alive();
    let lost = lease.lost();
    let mut child = tokio::process::Command::new(program)
        .args(rest)
        .stdin(Stdio::inherit())
        .stdout(Stdio::inherit())
        .stderr(Stdio::inherit())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| CliError::Io(format!("cannot run `{program}`: {e}")))?;
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| CliError::Io(format!("waiting for `{program}`: {e}")))?,
        reason = lost => {
            let _ = child.kill().await;
            return Err(CliError::Conflict(format!(
                "lock `{}` in bucket `{}` was lost ({reason}); `{program}` was stopped",
                args.key, args.bucket
            )));
        }
    };
    let revision = lease.revision();
    lease.release().await.map_err(lease_error)?;
    let code = status.code().unwrap_or(-1);
    if !status.success() {
        return Err(CliError::Other(format!("`{program}` exited with {code} (lock `{}` released)", args.key)));
    }
    let ran = Ran { bucket: args.bucket.clone(), key: args.key.clone(), holder, revision, exit_code: code };
    let line = format!("`{program}` finished under lock `{}` in bucket `{}`; released", args.key, args.bucket);
    Ok(Report::new(&ran, vec![Block::Line(Text::plain(line))]))
}

fn lease_error(e: LeaseError) -> CliError {
    match e {
        LeaseError::Store(s) => CliError::Store(s),
        e @ (LeaseError::Held { .. } | LeaseError::Lost { .. }) => CliError::Conflict(e.to_string()),
        e => CliError::Usage(e.to_string()),
    }
}
