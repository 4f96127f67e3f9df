//! Errors of `kvc` and the exit code each one maps to.

use kv_config::store::{StoreError, StoreErrorKind};

/// Exit code: success.
pub const EXIT_OK: i32 = 0;
/// Exit code: any other error (connection, permission, server).
pub const EXIT_ERROR: i32 = 1;
/// Exit code: the command line is wrong (also clap's own usage errors).
pub const EXIT_USAGE: i32 = 2;
/// Exit code: a revision check failed, something already exists, or the bucket was deleted and
/// created again since it was read: someone else changed it.
pub const EXIT_CONFLICT: i32 = 3;
/// Exit code: a value was refused by validation (type, schema, validator, unknown key).
pub const EXIT_REFUSED: i32 = 4;
/// Exit code: the bucket, key or revision does not exist.
pub const EXIT_NOT_FOUND: i32 = 5;

/// One refused key with the reason.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Refusal {
    /// The key (relative to the prefix), or `(whole config)` for a struct-level check.
    pub key: String,
    /// Why it was refused.
    pub reason: String,
}

/// Everything that makes a `kvc` command fail. Every message is one line naming bucket and key.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// Bad command-line input.
    #[error("{0}")]
    Usage(String),
    /// A concurrent change: a revision check failed.
    #[error("{0}")]
    Conflict(String),
    /// The bucket was deleted and created again since the config was read (or exported): its
    /// revisions started again at 1, so they no longer identify the values read. Nothing was
    /// written. Exit 3 like any conflict, but kept apart from [`CliError::Conflict`]: `kvc edit`
    /// reopens its document on a conflict, and must not reopen it on another bucket.
    #[error("{0}")]
    Replaced(String),
    /// A write was sent, but the bucket was deleted and created again around it (seen right
    /// after the write): it may have gone to the new bucket. Exit 1: the outcome is unknown.
    #[error("{0}")]
    ReplacedAroundWrite(String),
    /// Validation refused one or more values; nothing was written.
    #[error("bucket `{bucket}`: refused, nothing written: {}", list(.problems))]
    Refused {
        /// The bucket.
        bucket: String,
        /// What was refused and why.
        problems: Vec<Refusal>,
    },
    /// The bucket, key or revision does not exist.
    #[error("{0}")]
    NotFound(String),
    /// The operator answered no (or could not be asked).
    #[error("{0}")]
    Cancelled(String),
    /// A store operation failed.
    #[error("{0}")]
    Store(#[from] StoreError),
    /// A local file or process failed.
    #[error("{0}")]
    Io(String),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

/// The refusals for the message, each reason [clipped](crate::clip::clip): a reason may quote a
/// huge value.
fn list(problems: &[Refusal]) -> String {
    problems.iter().map(|p| format!("key `{}`: {}", p.key, crate::clip::clip(&p.reason))).collect::<Vec<_>>().join("; ")
}

impl CliError {
    /// The process exit code for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            CliError::Usage(_) => EXIT_USAGE,
            CliError::Conflict(_) | CliError::Replaced(_) => EXIT_CONFLICT,
            CliError::Refused { .. } => EXIT_REFUSED,
            CliError::NotFound(_) => EXIT_NOT_FOUND,
            CliError::Store(e) => match e.kind() {
                StoreErrorKind::NotFound => EXIT_NOT_FOUND,
                StoreErrorKind::WrongRevision { .. } | StoreErrorKind::AlreadyExists => EXIT_CONFLICT,
                StoreErrorKind::InvalidKey | StoreErrorKind::ValueTooLarge => EXIT_REFUSED,
                StoreErrorKind::InvalidBucketName => EXIT_USAGE,
                _ => EXIT_ERROR,
            },
            CliError::Cancelled(_) | CliError::Io(_) | CliError::Other(_) | CliError::ReplacedAroundWrite(_) => EXIT_ERROR,
        }
    }

    /// A refusal of one key.
    pub fn refused(bucket: &str, key: &str, reason: impl Into<String>) -> Self {
        CliError::Refused { bucket: bucket.to_string(), problems: vec![Refusal { key: key.to_string(), reason: reason.into() }] }
    }

    /// A key that does not exist.
    pub fn no_key(bucket: &str, key: &str) -> Self {
        CliError::NotFound(format!("bucket `{bucket}`, key `{key}`: no such key"))
    }
}

/// Result of a `kvc` operation.
pub type CliResult<T> = Result<T, CliError>;
