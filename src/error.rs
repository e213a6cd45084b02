//! The library's one error type. Each variant belongs to one of SPEC §5's exit codes, so
//! `main` maps errors to exit codes without knowing where they came from.

use std::path::PathBuf;

/// Result alias used across the library.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Everything that can go wrong, grouped by what the operator has to do about it.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The command line or an input file is wrong: fix the input (exit 2).
    #[error("{0}")]
    Usage(String),

    /// A manifest failed to parse or validate, with its position (exit 2).
    #[error("{path}:{line}:{column}: {message}")]
    Manifest {
        path: String,
        line: usize,
        column: usize,
        message: String,
    },

    /// A signature, digest or bundle structure check failed (exit 3).
    #[error("verification failed: {0}")]
    Verify(String),

    /// A network transfer failed after retries (exit 1).
    #[error("{url}: {message}")]
    Network { url: String, message: String },

    /// A local file operation failed (exit 1).
    #[error("{action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Any other runtime failure (exit 1).
    #[error("{0}")]
    Runtime(String),

    /// Reading the bundle stopped before its end for a reason outside the bundle's bytes
    /// (a volume missing or unreadable, a pulled stick, the operator stopped): exit 1, and
    /// an install keeps what it verified so far for the next run (SPEC §4).
    #[error("{0}")]
    Interrupted(String),

    /// Any of the above with what to do about it, which `main` prints on its own line
    /// (`hint: …`). Build with [`Error::with_hint`].
    #[error("{error}")]
    Hinted { error: Box<Error>, hint: String },
}

impl Error {
    /// SPEC §5: 0 success, 1 runtime, 2 usage, 3 verification.
    pub fn exit_code(&self) -> i32 {
        match self {
            Error::Usage(_) | Error::Manifest { .. } => 2,
            Error::Verify(_) => 3,
            Error::Network { .. }
            | Error::Io { .. }
            | Error::Runtime(_)
            | Error::Interrupted(_) => 1,
            Error::Hinted { error, .. } => error.exit_code(),
        }
    }

    /// Adds what the operator should do next (replacing an earlier hint).
    pub fn with_hint(self, hint: impl Into<String>) -> Self {
        let error = match self {
            Error::Hinted { error, .. } => error,
            other => Box::new(other),
        };
        Error::Hinted {
            error,
            hint: hint.into(),
        }
    }

    /// Whether reading the bundle was interrupted (see [`Error::Interrupted`]).
    pub fn is_interrupted(&self) -> bool {
        match self {
            Error::Interrupted(_) => true,
            Error::Hinted { error, .. } => error.is_interrupted(),
            _ => false,
        }
    }

    /// What the operator should do next, when the error says.
    pub fn hint(&self) -> Option<&str> {
        match self {
            Error::Hinted { hint, .. } => Some(hint),
            _ => None,
        }
    }

    /// The same error with its message passed through `edit` (the hint is kept).
    pub fn map_message(self, edit: impl FnOnce(String) -> String) -> Self {
        match self {
            Error::Usage(m) => Error::Usage(edit(m)),
            Error::Verify(m) => Error::Verify(edit(m)),
            Error::Runtime(m) => Error::Runtime(edit(m)),
            Error::Interrupted(m) => Error::Interrupted(edit(m)),
            Error::Network { url, message } => Error::Network {
                url,
                message: edit(message),
            },
            Error::Hinted { error, hint } => Error::Hinted {
                error: Box::new(error.map_message(edit)),
                hint,
            },
            other => other,
        }
    }

    /// Wraps an I/O error with the path it concerns.
    pub fn io(action: &'static str, path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            action,
            path: path.into(),
            source,
        }
    }

    /// Classifies an I/O error that happened while *reading a bundle*: an operating-system
    /// error (EIO on a failing stick) is a runtime error, anything else (a decoder or tar
    /// parser complaining, an unexpected end of file) means the bytes are wrong.
    pub fn from_bundle_read(what: &str, source: std::io::Error) -> Self {
        if source.raw_os_error().is_some() {
            Error::Interrupted(format!("reading {what}: {source}"))
        } else if source.kind() == std::io::ErrorKind::UnexpectedEof {
            Error::Verify(format!("{what} is truncated ({source})")).with_hint(DAMAGED_HINT)
        } else {
            Error::Verify(format!("{what} is corrupt: {source}")).with_hint(DAMAGED_HINT)
        }
    }
}

/// What to do about a bundle whose bytes are damaged.
const DAMAGED_HINT: &str = "the bundle's bytes were changed or cut short: copy it again from the source \
                            and check the copy with `minisign -Vm BUNDLE -p PUBKEY`";

/// Adds the path to `std::io::Result`s at the point where the path is known.
pub trait IoContext<T> {
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T>;
}

impl<T> IoContext<T> for std::io::Result<T> {
    fn at(self, action: &'static str, path: impl Into<PathBuf>) -> Result<T> {
        self.map_err(|e| Error::io(action, path, e))
    }
}
