//! The crate's error type.

use crate::config::{DecodeError, EncodeError};
use crate::store::StoreError;

/// Everything that can go wrong loading, watching or writing a config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store failed (network, missing bucket, permissions, ...).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Values in the bucket (or the result of an update) do not make a valid config.
    #[error(transparent)]
    Decode(#[from] DecodeError),
    /// A value could not be encoded as JSON.
    #[error(transparent)]
    Encode(#[from] EncodeError),
    /// Another writer changed a key first, on every attempt.
    #[error(
        "conflict on key `{key}` in bucket `{bucket}`: the update expected revision {expected} but \
         found {}, after {attempts} attempts",
        current.map_or_else(|| "a newer one".to_string(), |c| c.to_string())
    )]
    Conflict {
        /// The bucket.
        bucket: String,
        /// The full key that changed under us.
        key: String,
        /// The revision the last attempt expected.
        expected: u64,
        /// The revision the store had, if it said.
        current: Option<u64>,
        /// How many times the update ran.
        attempts: u32,
    },
    /// `set` named a key the schema does not have.
    #[error("unknown key `{key}` for `{type_name}`; the schema's keys are: {known}")]
    UnknownKey {
        /// The key asked for.
        key: String,
        /// The config struct.
        type_name: String,
        /// The keys that exist.
        known: String,
    },
    /// A key prefix is not a valid key prefix.
    #[error("invalid key prefix `{0}`: use NATS key tokens ending with a dot, e.g. `prod.`")]
    InvalidPrefix(String),
    /// The write was stored at `revision` but this handle did not see it within the write timeout.
    #[error("the write was stored at revision {revision} of bucket `{bucket}` but the watcher did not observe it in time")]
    NotObserved {
        /// The bucket.
        bucket: String,
        /// The revision written.
        revision: u64,
    },
    /// The write is stored at `revision` but the bucket's resulting state is refused by the
    /// config's validators (another client wrote an incompatible value at the same moment), so
    /// the last good snapshot stays in effect. `reason` says what was refused (secrets redacted).
    #[error("the write of key `{key}` is stored at revision {revision} of bucket `{bucket}` but not in effect: {reason}")]
    NotInEffect {
        /// The bucket.
        bucket: String,
        /// The full key written.
        key: String,
        /// The key's revision written.
        revision: u64,
        /// Why the resulting state was refused.
        reason: String,
    },
    /// The update found nothing to write, but the handle may be behind the bucket (see
    /// [`Status::stale`](crate::Status::stale)), so it cannot say the bucket holds the config asked
    /// for. Nothing was written.
    #[error("bucket `{bucket}`: nothing written and the config may be stale ({reason})")]
    Stale {
        /// The bucket.
        bucket: String,
        /// Why the handle may be behind.
        reason: crate::StaleReason,
    },
    /// The update changes a key that an expiring override holds (see
    /// [`LiveConfig::set_for`](crate::LiveConfig::set_for)): the change could not take effect
    /// until the override expires, so nothing was written. Clear the override first
    /// ([`LiveConfig::clear_override`](crate::LiveConfig::clear_override)).
    #[error("key `{key}` of bucket `{bucket}` is overridden ({}); nothing written: clear the override first", until_text(*expires))]
    Overridden {
        /// The bucket.
        bucket: String,
        /// The key (relative to the prefix).
        key: String,
        /// When the override expires, if known.
        expires: Option<std::time::SystemTime>,
    },
    /// The config asked for is valid while the overrides in effect last, but not once they
    /// expire and the keys' own values are back; nothing was written.
    #[error("bucket `{bucket}`: the change is valid only while the override of {keys} lasts; nothing written: {source}")]
    InvalidAfterExpiry {
        /// The bucket.
        bucket: String,
        /// The overridden keys, quoted and comma-separated.
        keys: String,
        /// What the validators refuse once the overrides expire.
        source: DecodeError,
    },
    /// The cache file ([`Builder::cache_file`](crate::Builder::cache_file)) cannot be used: it
    /// belongs to another bucket, prefix or config type (a handle never overwrites such a file),
    /// or its values do not make a valid config (e.g. a required secret was left out).
    #[error("config cache `{}` for bucket `{bucket}`: {problem}", path.display())]
    Cache {
        /// The cache file.
        path: std::path::PathBuf,
        /// The bucket of the handle.
        bucket: String,
        /// What is wrong with it.
        problem: crate::CacheProblem,
    },
    /// The server could not be reached (or the bucket is missing) at start, and the cache file
    /// cannot stand in for it.
    #[error("bucket `{bucket}` could not be read ({cause}) and the config cache `{}` cannot stand in: {problem}", path.display())]
    NoServerNoCache {
        /// The bucket.
        bucket: String,
        /// The cache file.
        path: std::path::PathBuf,
        /// Why the bucket could not be read.
        #[source]
        cause: Box<Error>,
        /// Why the cache cannot be used.
        problem: crate::CacheProblem,
    },
    /// The handle's watcher has stopped.
    #[error("the config watcher for bucket `{0}` has stopped")]
    Closed(String),
}

fn until_text(expires: Option<std::time::SystemTime>) -> String {
    match expires.map(|e| e.duration_since(std::time::SystemTime::now())) {
        Some(Ok(left)) => format!("for another {}s", left.as_secs() + u64::from(left.subsec_nanos() > 0)),
        Some(Err(_)) => "expiring now".to_string(),
        None => "until its TTL expires".to_string(),
    }
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
