//! Eddy's interactive SQL shell: a REPL like ksqlDB's CLI that talks to any server of ksqlDB's
//! REST API, and runs statements from `-e` or a file without prompting.

pub mod client;
pub mod input;
pub mod interactive;
pub mod render;
pub mod shell;
pub mod table;

use std::path::PathBuf;

pub use client::{Client, ClientError, Credentials};
pub use render::OutputFormat;
pub use shell::Shell;

/// Why the shell could not run.
#[derive(Debug, thiserror::Error)]
pub enum ReplError {
    /// The server URL is not usable.
    #[error(transparent)]
    Client(#[from] ClientError),
    /// The terminal or the runtime failed.
    #[error("the shell's I/O failed: {0}")]
    Io(#[from] std::io::Error),
    /// The line editor failed.
    #[error("the line editor failed: {0}")]
    Readline(#[from] rustyline::error::ReadlineError),
}

/// How the shell is started.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The server's URL.
    pub url: String,
    /// Statements to run instead of prompting (`-e`).
    pub execute: Option<String>,
    /// A file of statements to run instead of prompting (`-f`).
    pub file: Option<PathBuf>,
    /// Variables defined before the first statement (`--define name=value`).
    pub defines: Vec<(String, String)>,
    /// How results print.
    pub output: OutputFormat,
    /// Where the prompt's history is kept; none keeps no history.
    pub history: Option<PathBuf>,
    /// HTTP Basic credentials and CA certificates.
    pub credentials: Credentials,
}

/// Runs the shell: the statements of `-e` / `-f` if given, else the prompt. Returns whether
/// everything succeeded (the prompt always does; a script stops at its first failure).
pub fn run(options: Options) -> Result<bool, ReplError> {
    let mut shell = Shell::new(Client::with_credentials(
        &options.url,
        options.credentials.clone(),
    )?)?;
    shell.set_output(options.output);
    for (name, value) in &options.defines {
        shell.define(name, value);
    }
    if let Some(text) = &options.execute {
        return Ok(shell.execute(text).is_ok());
    }
    if let Some(path) = &options.file {
        return Ok(shell.run_script(&path.to_string_lossy()).is_ok());
    }
    interactive::run(shell, options.history)?;
    Ok(true)
}

/// The default history file: `~/.eddy_history`.
pub fn default_history_file() -> Option<PathBuf> {
    std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".eddy_history"))
}
