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
            CliError::Lib(e) => write!(f, "{e}")?,
            CliError::Config(m) => write!(f, "configuration error: {m}")?,
            CliError::Usage(m) | CliError::Failed(m) => write!(f, "{m}")?,
        }
        if let CliError::Lib(e) = self {
            // The library's causes (e.g. the server error behind a migration failure).
            let mut source = std::error::Error::source(e);
            while let Some(s) = source {
                let text = s.to_string();
                if !text.is_empty() {
                    write!(f, "\n  caused by: {text}")?;
                }
                source = s.source();
            }
        }
        Ok(())
    }
}

impl std::error::Error for CliError {}

impl From<pgdbm::Error> for CliError {
    fn from(e: pgdbm::Error) -> Self {
        CliError::Lib(e)
    }
}

/// The CLI's result.
pub type CliResult<T = ()> = Result<T, CliError>;
