//! The CLI's errors: the library's own, or one of ours. Printed once, to stderr, by `main`.

use std::fmt;

/// Everything a command can fail with.
#[derive(Debug)]
pub enum CliError {
    /// From the library; its message carries the server's detail and hint.
    Lib(pgdbm::Error),
    /// The configuration file or the environment is wrong (names the file or key).
    Config(String),
    /// The command line asks for something impossible (bad name, missing `--yes`, ...).
    Usage(String),
    /// The command ran and found a failure it already reported in detail (e.g. `verify`).
    Failed(String),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Lib(e) => f.write_str(&with_causes(e)),
            CliError::Config(m) => write!(f, "configuration error: {m}"),
            CliError::Usage(m) | CliError::Failed(m) => f.write_str(m),
        }
    }
}

/// The library's message, then each cause that adds something (the server's detail and hint
/// behind a migration failure), without repeating what is already shown.
fn with_causes(e: &pgdbm::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        let cause = s.to_string();
        let new: Vec<&str> = cause
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && *l != "db error" && !text.contains(*l))
            .collect();
        if !new.is_empty() {
            text.push_str("\n  ");
            text.push_str(&new.join("\n  "));
        }
        source = s.source();
    }
    text
}

impl std::error::Error for CliError {}

impl From<pgdbm::Error> for CliError {
    fn from(e: pgdbm::Error) -> Self {
        CliError::Lib(e)
    }
}

/// The CLI's result.
pub type CliResult<T = ()> = Result<T, CliError>;
