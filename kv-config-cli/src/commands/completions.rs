//! `kvc completions SHELL`: a completion script on stdout.

use clap_complete::Shell;

/// Arguments of `kvc completions`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  kvc completions bash > ~/.local/share/bash-completion/completions/kvc\n  kvc completions zsh > ~/.zfunc/_kvc")]
pub struct Args {
    /// The shell.
    pub shell: Shell,
}
