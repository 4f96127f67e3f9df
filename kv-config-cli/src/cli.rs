//! The command line: global options (connection, prefix, output) and one subcommand.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands;

const ABOUT: &str = "Typed admin CLI for kv-config settings in NATS JetStream Key/Value";

const LONG_ABOUT: &str = "\
kvc reads and changes the settings of services built on kv-config. Every key of a config is a
JSON value in a NATS Key/Value bucket (nested structs give dotted keys like `server.port`).

Unlike `nats kv`, kvc knows the types: it reads the schema a service published under the key
`<prefix>__kvconfig.schema` (types, enums, ranges, defaults, docs, secret flags) and refuses a
wrong value before anything is sent. A service crate can also build its own `kvc` with
`kv_config_cli::run::<AppConfig>()`, which runs the struct's own validators (cross-field checks
included) before every write.

Every write is validated first; several keys go in one atomic batch, each checked against the
revision kvc read, so a concurrent change is never overwritten (exit 3). Each write carries the
audit headers KvConfig-Author (--author, default user@host) and KvConfig-Reason (-m), which
`kvc history` shows. Secrets are shown as <redacted> unless --reveal.

Exit codes: 0 ok, 1 error, 2 usage, 3 conflict (someone else changed it), 4 refused by
validation, 5 not found. Errors are one line on stderr naming bucket and key.

With --json every command prints one JSON value (watch: one JSON object per line); the shapes
are documented in the crate docs of kv_config_cli and are stable. Tables otherwise; colour only
on a terminal (NO_COLOR or --color never turns it off).

`kvc lock BUCKET KEY -- COMMAND` runs a command while holding a lease (create with a per-key TTL,
refreshed while it runs, released after; the command is killed if the lease is lost).";

const EXAMPLES: &str = "\
Examples:
  kvc ls                                        buckets on the server
  kvc add app --history 20                      a bucket for config, 20 revisions per key
  kvc show app                                  every key: value, type, default, revision, state
  kvc get app server.port
  kvc set app server.port=9090 log_level=debug -m 'more logs for INC-42'
  kvc set app limits.min=5 limits.max=50 --dry-run
  kvc edit app                                  $EDITOR on a TOML document of the config
  kvc diff app --against-defaults
  kvc diff app --time 1h                        what changed in the last hour
  kvc --prefix prod diff app --against-prefix staging
  kvc history app server.port                   revisions with author and reason
  kvc revert app --time 2026-11-26T17:00:00Z -m 'back to before the deploy'
  kvc watch app server
  kvc export app > app.json && kvc import app app.json --dry-run
  kvc schema app > app.schema.json              JSON Schema of the config, for editors
  kvc completions bash > /etc/bash_completion.d/kvc";

/// `kvc`'s command line.
#[derive(Debug, Parser)]
#[command(name = "kvc", version, about = ABOUT, long_about = LONG_ABOUT, after_help = EXAMPLES)]
pub struct Cli {
    /// Options of every command.
    #[command(flatten)]
    pub global: Global,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// When to use colour.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ColorChoice {
    /// On a terminal, unless `NO_COLOR` is set.
    Auto,
    /// Always.
    Always,
    /// Never.
    Never,
}

/// Options of every command: connection, prefix, output.
#[derive(Debug, Clone, Args)]
pub struct Global {
    /// NATS server URL(s), comma separated.
    #[arg(short = 's', long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222", global = true, help_heading = "Connection")]
    pub server: String,
    /// Username.
    #[arg(long, env = "NATS_USER", global = true, help_heading = "Connection")]
    pub user: Option<String>,
    /// Password (with --user).
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true, global = true, help_heading = "Connection")]
    pub password: Option<String>,
    /// Authentication token.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true, global = true, help_heading = "Connection")]
    pub token: Option<String>,
    /// User credentials file (JWT and NKey seed).
    #[arg(long, env = "NATS_CREDS", global = true, help_heading = "Connection")]
    pub creds: Option<PathBuf>,
    /// NKey seed file.
    #[arg(long, env = "NATS_NKEY", global = true, help_heading = "Connection")]
    pub nkey: Option<PathBuf>,
    /// TLS client certificate (with --tlskey).
    #[arg(long, env = "NATS_CERT", global = true, help_heading = "Connection")]
    pub tlscert: Option<PathBuf>,
    /// TLS client key.
    #[arg(long, env = "NATS_KEY", global = true, help_heading = "Connection")]
    pub tlskey: Option<PathBuf>,
    /// TLS certificate authority.
    #[arg(long, env = "NATS_CA", global = true, help_heading = "Connection")]
    pub tlsca: Option<PathBuf>,
    /// Time allowed to connect and for each request (e.g. `5s`).
    #[arg(long, default_value = "5s", value_parser = parse_duration, global = true, help_heading = "Connection")]
    pub timeout: Duration,

    /// The config's key prefix inside the bucket (`prod` or `prod.`; empty = none).
    #[arg(long, env = "KVC_PREFIX", default_value = "", global = true)]
    pub prefix: String,
    /// Print one JSON value instead of tables (watch: one JSON object per line).
    #[arg(long, global = true)]
    pub json: bool,
    /// Show secret values instead of masking them.
    #[arg(long, global = true)]
    pub reveal: bool,
    /// Author recorded in the KvConfig-Author header of writes (default user@host).
    #[arg(long, env = "KVC_AUTHOR", global = true)]
    pub author: Option<String>,
    /// When to use colour.
    #[arg(long, value_enum, default_value = "auto", global = true)]
    pub color: ColorChoice,
}

/// Parses `5s`, `1m`, `2h30m`.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    humantime::parse_duration(text).map_err(|e| format!("`{text}`: {e} (write e.g. 5s, 10m, 2h)"))
}

/// Options of every command that writes.
#[derive(Debug, Clone, Args)]
pub struct WriteArgs {
    /// Reason recorded in the KvConfig-Reason header.
    #[arg(short = 'm', long = "reason", value_name = "REASON")]
    pub reason: Option<String>,
}

/// A `kvc` command.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List buckets.
    Ls(commands::ls::Args),
    /// Show a bucket's configuration and counters.
    Info(commands::info::Args),
    /// Create a bucket.
    Add(commands::add::Args),
    /// Delete a bucket and everything in it.
    Rm(commands::rm::Args),
    /// Show every key of the config: value, type, default, revision, age and state.
    Show(commands::show::Args),
    /// Show one key's value.
    Get(commands::get::Args),
    /// Set keys (validated, one atomic batch with revision checks).
    Set(commands::set::Args),
    /// Edit the config in $EDITOR as a TOML document.
    Edit(commands::edit::Args),
    /// Compare the config with defaults, a past revision or time, another prefix, or a file.
    Diff(commands::diff::Args),
    /// Show a key's revisions with time, operation, author and reason.
    History(commands::history::Args),
    /// Restore a key to a revision, or the whole config to a point in time.
    Revert(commands::revert::Args),
    /// Print changes as they happen.
    Watch(commands::watch::Args),
    /// Delete a key (it returns to its default).
    Del(commands::del::Args),
    /// Delete a key and its history.
    Purge(commands::del::PurgeArgs),
    /// Write the config with revisions as JSON to stdout.
    Export(commands::export::Args),
    /// Apply an export file in one atomic batch, refused if the bucket moved since the export.
    Import(commands::import::Args),
    /// Run a command while holding a lease on a key (or show who holds it).
    Lock(commands::lock::Args),
    /// Print the config's JSON Schema (draft 2020-12), for validators and editors.
    Schema(commands::schema::Args),
    /// Print a shell completion script.
    Completions(commands::completions::Args),
}
