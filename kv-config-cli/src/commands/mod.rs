//! One module per command: its clap arguments and an `exec` that returns a [`Report`](crate::output::Report).

pub mod add;
pub mod completions;
pub mod del;
pub mod diff;
pub mod edit;
pub mod export;
pub mod get;
pub mod history;
pub mod import;
pub mod info;
pub mod lock;
pub mod ls;
pub mod revert;
pub mod rm;
pub mod schema;
pub mod set;
pub mod show;
pub mod watch;
