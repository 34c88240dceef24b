//! Registration errors.

use std::fmt;

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchError {
    /// The registry already holds its maximum number of active watchers (the payload).
    LimitExceeded(usize),
    /// A prefix must start with `/` and end with `/` (`/` alone is valid).
    InvalidPrefix,
}

impl fmt::Display for WatchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WatchError::LimitExceeded(max) => write!(f, "watcher limit ({max}) exceeded"),
            WatchError::InvalidPrefix => f.write_str("prefix must start with '/' and end with '/'"),
        }
    }
}

impl std::error::Error for WatchError {}
