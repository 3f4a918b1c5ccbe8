//! One error type for the launcher: a message for the user, already phrased as "what failed, why,
//! what to do". The process exits with status 1 when one reaches main().

use std::fmt;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error(String);

impl Error {
    pub fn new(message: impl Into<String>) -> Self {
        Error(message.into())
    }

    /// Wraps an OS error with what we were doing: "Failed to open '/x': No such file or directory".
    pub fn io(context: impl fmt::Display, err: impl fmt::Display) -> Self {
        Error(format!("{context}: {err}"))
    }

    pub fn message(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// `bail!("...", args)` returns an `Error` from the current function.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::error::Error::new(format!($($arg)*)))
    };
}
