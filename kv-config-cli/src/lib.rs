//! `kvc`: a typed admin CLI for [kv-config](kv_config) settings in NATS JetStream Key/Value,
//! and the library under it.
//!
//! The binary `kvc` is generic: it learns a config's types from the schema a service published
//! with `LiveConfig::publish_schema` (under `<prefix>__kvconfig.schema`), and without one works
//! on raw JSON (saying so once). A service crate can instead build its own admin binary that
//! knows its config type and runs the type's own validators (cross-field checks included)
//! before any write:
//!
//! ```no_run
//! # use kv_config::KvConfig;
//! # #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
//! # struct AppConfig { #[kv(default = 8080)] port: u16 }
//! fn main() {
//!     kv_config_cli::run::<AppConfig>()
//! }
//! ```
//!
//! Every command is a module of [`commands`] that returns data (a [`output::Report`]); one
//! [`output::Printer`] renders it as a table or, with `--json`, as one JSON value. The work is
//! in [`ops`].
//!
//! # Exit codes
//!
//! | code | meaning |
//! |---|---|
//! | 0 | ok |
//! | 1 | error (connection, permission, server, cancelled; a write whose outcome is unknown, e.g. the bucket was deleted and created again around it) |
//! | 2 | usage (bad flags or arguments) |
//! | 3 | conflict: someone changed a key since it was read, it already exists, or the bucket was deleted and created again since it was read (or exported); nothing written |
//! | 4 | refused by validation (wrong type, unknown key, validator); nothing written |
//! | 5 | not found (bucket, key, revision; a past state the bucket no longer or never held) |
//!
//! # JSON output (stable)
//!
//! Values are JSON values as stored (a bare string becomes a JSON string); secrets are the
//! string `"<redacted>"` unless `--reveal`. Times are RFC 3339 strings.
//!
//! | command | shape |
//! |---|---|
//! | `ls` | `{"buckets": [{"bucket", "description", "history", "values", "bytes", "last_revision"}]}` |
//! | `info`, `add` | `{"bucket", "description", "history", "max_age_secs", "max_value_size", "replicas", "storage", "key_ttl_secs", "atomic_writes", "values", "bytes", "last_revision", "schema": null \| {"name", "version", "keys"}}` |
//! | `rm` | `{"bucket", "deleted": true}` |
//! | `show` | `{"bucket", "prefix", "schema", "keys": [{"key", "value", "type", "default", "doc", "secret", "revision", "created", "state", "reason"}]}`; `state` is `set`, `default`, `missing`, `invalid` or `unknown` |
//! | `get` | `{"bucket", "key", "value", "revision", "created", "operation", "author", "reason"}` |
//! | `set`, `edit`, `del`, `purge`, `revert`, `import` | `{"bucket", "prefix", "dry_run", "changes": [{"key", "old", "new"}], "revision"}` (`null` = absent / nothing written) |
//! | `diff` | `{"bucket", "prefix", "against", "changes": [{"key", "old", "new"}]}` (`old` = the other state) |
//! | `history` | `{"bucket", "key", "revisions": [{"revision", "created", "operation", "value", "author", "reason"}]}` |
//! | `watch` | one object per line: `{"revision", "created", "operation", "key", "value", "author", "reason", "problem"}` |
//! | `schema` | the JSON Schema document itself (`--kv`: kv-config's schema, `{"name", "version", "fields", "cross_checks"}`) |
//! | `export` | `{"kvc_export": 1, "bucket", "prefix", "filter", "revision", "bucket_created"?, "exported_at", "values": {"key": {"value", "revision", "redacted"?}}}` |
//!
//! Human output is bounded: a value in a table cell or a watch line, and a problem or error
//! text, is cut to a few hundred bytes with `… (N bytes in all)` (see [`clip`]); `kvc get` and
//! the values of `--json` output stay whole.
//!
//! Errors are never JSON: one line on stderr (`kvc: error: bucket `b`, key `k`: ...`) and the
//! exit code.
//!
//! # A bucket deleted and created again
//!
//! A bucket deleted and created again under the same name starts its revisions again at 1, so a
//! revision alone does not identify a value. kvc records the bucket's creation time with every
//! state it reads ([`ops::Current::created`]) and checks it before each write (exit 3 when it
//! changed, nothing written) and again after it (exit 1 when it changed: the write may have gone
//! to the new bucket); `kvc edit` checks it against the state its document was rendered from. An
//! export records it as `bucket_created` (RFC 3339), and `kvc import` refuses the file in a
//! bucket created at another time; a file without it (from an older kvc) is checked on its
//! revisions alone, with a note on stderr. `kvc diff` and `kvc revert --time` refuse a time
//! before the bucket was created (exit 5): what it held then is unknown, not empty.
//!
//! `kvc lock` runs a command while holding a [`kv_config::Lease`] (see [`commands::lock`]).
#![deny(missing_docs)]

pub mod cli;
pub mod clip;
pub mod commands;
pub mod connect;
pub mod error;
pub mod ops;
pub mod output;
pub mod overrides;

use std::ffi::OsString;
use std::io::IsTerminal;
use std::sync::Arc;

use clap::{CommandFactory, Parser};
use kv_config::store::Store;
use kv_config::KvConfig;

pub use cli::Cli;
pub use error::{CliError, CliResult};
pub use ops::{Ctx, Mode};

use cli::{ColorChoice, Command};
use output::Printer;

/// Runs `kvc` for the config type `T` on the process's arguments and exits: the whole admin
/// binary of a service crate.
pub fn run<T: KvConfig>() -> ! {
    run_mode(Mode::typed::<T>())
}

/// Runs the generic `kvc` (types from the published schema) and exits.
pub fn run_generic() -> ! {
    run_mode(Mode::Generic)
}

fn run_mode(mode: Mode) -> ! {
    let code = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt.block_on(main_with(std::env::args_os(), mode)),
        Err(e) => {
            eprintln!("kvc: error: cannot start the async runtime: {e}");
            error::EXIT_ERROR
        }
    };
    std::process::exit(code)
}

/// Parses `args` (the first is the program name), connects, runs the command on stdout and
/// stderr, and returns the exit code.
pub async fn main_with<I, A>(args: I, mode: Mode) -> i32
where
    I: IntoIterator<Item = A>,
    A: Into<OsString> + Clone,
{
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            let _ = e.print();
            return e.exit_code();
        }
    };
    let color = match cli.global.color {
        ColorChoice::Always => true,
        ColorChoice::Never => false,
        ColorChoice::Auto => std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none(),
    };
    let mut printer = Printer::new(Box::new(std::io::stdout()), Box::new(std::io::stderr()), cli.global.json, color);
    if let Command::Completions(c) = &cli.command {
        let mut cmd = Cli::command();
        clap_complete::generate(c.shell, &mut cmd, "kvc", &mut std::io::stdout());
        return error::EXIT_OK;
    }
    if let Command::Schema(commands::schema::Args { bucket: None, .. }) = &cli.command {
        // Without a bucket, `schema` reads no server (typed: the type's schema; generic: a usage error).
        return execute(cli, Arc::new(kv_config::store::MemoryStore::new()), mode, printer).await;
    }
    let store = match connect::connect(&cli.global).await {
        Ok(s) => s,
        Err(e) => {
            printer.error(&e.to_string());
            return e.exit_code();
        }
    };
    execute(cli, Arc::new(store), mode, printer).await
}

/// Runs a parsed command on a store and prints through `printer`; returns the exit code.
pub async fn execute(cli: Cli, store: Arc<dyn Store>, mode: Mode, printer: Printer) -> i32 {
    let mut ctx = Ctx::new(store, mode, &cli.global.prefix, printer);
    ctx.reveal = cli.global.reveal;
    if let Some(a) = &cli.global.author {
        ctx.author = a.clone();
    }
    match dispatch(&cli.command, &mut ctx).await {
        Ok(Some(report)) => {
            ctx.printer.report(&report);
            error::EXIT_OK
        }
        Ok(None) => error::EXIT_OK,
        Err(e) => {
            ctx.printer.error(&e.to_string().replace('\n', " "));
            e.exit_code()
        }
    }
}

/// Runs one command; `Ok(None)` for commands that print as they go (watch, completions).
pub async fn dispatch(command: &Command, ctx: &mut Ctx) -> CliResult<Option<output::Report>> {
    use commands::*;
    let report = match command {
        Command::Ls(a) => ls::exec(a, ctx).await?,
        Command::Info(a) => info::exec(a, ctx).await?,
        Command::Add(a) => add::exec(a, ctx).await?,
        Command::Rm(a) => rm::exec(a, ctx).await?,
        Command::Show(a) => show::exec(a, ctx).await?,
        Command::Get(a) => get::exec(a, ctx).await?,
        Command::Set(a) => set::exec(a, ctx).await?,
        Command::Edit(a) => edit::exec(a, ctx).await?,
        Command::Diff(a) => diff::exec(a, ctx).await?,
        Command::History(a) => history::exec(a, ctx).await?,
        Command::Revert(a) => revert::exec(a, ctx).await?,
        Command::Watch(a) => {
            watch::exec(a, ctx).await?;
            return Ok(None);
        }
        Command::Del(a) => del::exec(a, ctx).await?,
        Command::Purge(a) => del::exec_purge(a, ctx).await?,
        Command::Export(a) => export::exec(a, ctx).await?,
        Command::Import(a) => import::exec(a, ctx).await?,
        Command::Lock(a) => lock::exec(a, ctx).await?,
        Command::Schema(a) => schema::exec(a, ctx).await?,
        Command::Completions(c) => {
            let mut cmd = Cli::command();
            let mut buf = Vec::new();
            clap_complete::generate(c.shell, &mut cmd, "kvc", &mut buf);
            let text = String::from_utf8_lossy(&buf).into_owned();
            output::Report::new(&serde_json::json!({ "script": text }), vec![output::Block::Line(output::Text::plain(text))])
        }
    };
    Ok(Some(report))
}
