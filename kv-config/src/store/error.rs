//! The error every [`Store`](super::Store) and [`Bucket`](super::Bucket) operation returns.

use std::fmt;

/// What went wrong, as far as a caller handles failures differently.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum StoreErrorKind {
    /// The bucket does not exist.
    NotFound,
    /// A create found a live value, or a bucket exists with another configuration.
    AlreadyExists,
    /// A revision check failed: the key's last revision is not the one the write expected.
    WrongRevision {
        /// The revision the write expected (0 = the key must not exist).
        expected: u64,
        /// The key's current revision, when the server reported it.
        current: Option<u64>,
    },
    /// The key breaks the NATS key rules (`[-/_=.a-zA-Z0-9]`, no empty token).
    InvalidKey,
    /// The bucket name breaks the NATS bucket rules (`[-_a-zA-Z0-9]`, at most 64 characters here).
    InvalidBucketName,
    /// The value is larger than the bucket or the server allows.
    ValueTooLarge,
    /// The server runs without JetStream.
    JetStreamNotEnabled,
    /// The bucket was created without per-key TTL support (`BucketConfig::key_ttl`).
    KeyTtlDisabled,
    /// The bucket's stream does not allow atomic batches (`allow_atomic_publish`).
    AtomicWritesDisabled,
    /// The request is malformed (e.g. the same key twice in one batch, too many operations).
    InvalidRequest,
    /// The account or user may not do this.
    PermissionDenied,
    /// The server did not answer in time. For a write this is definite: kv-config checked that
    /// nothing was applied (see [`OutcomeUnknown`](Self::OutcomeUnknown) for when it could not).
    Timeout,
    /// A write went unanswered and the server stayed unreachable for the whole write deadline
    /// (`NatsStore::with_write_deadline`, 10 s by default) while kv-config resent it (single
    /// writes carry a message id, so the server applies them once) or looked it up (batches), so
    /// whether it was applied is not known. Not transient: a blind retry of a non-idempotent
    /// change could apply it twice; read the key first.
    OutcomeUnknown,
    /// No connection to the server.
    Connection,
    /// Anything else the server reported.
    Other,
}

impl fmt::Display for StoreErrorKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound => f.write_str("bucket not found (deleted, never created, or the server's store was wiped)"),
            Self::AlreadyExists => f.write_str("already exists"),
            Self::WrongRevision { expected, current: Some(current) } => {
                write!(f, "wrong revision: expected {expected}, current is {current}")
            }
            Self::WrongRevision { expected, current: None } => {
                write!(f, "wrong revision: expected {expected}")
            }
            Self::InvalidKey => {
                f.write_str("invalid key: use [-/_=.a-zA-Z0-9] with no empty token and no leading or trailing dot")
            }
            Self::InvalidBucketName => f.write_str("invalid bucket name: use 1 to 64 characters of [-_a-zA-Z0-9]"),
            Self::ValueTooLarge => f.write_str("value too large for the bucket or the server"),
            Self::JetStreamNotEnabled => {
                f.write_str("JetStream is not enabled on the server: start nats-server with `-js`")
            }
            Self::KeyTtlDisabled => f.write_str(
                "per-key TTL is not enabled on this bucket: create it with `BucketConfig::key_ttl`",
            ),
            Self::AtomicWritesDisabled => f.write_str(
                "atomic batches are not enabled on this bucket: set `allow_atomic_publish` on its \
                 stream (`nats stream edit KV_<bucket> --allow-batch`, or `Store::enable_atomic_writes`)",
            ),
            Self::InvalidRequest => f.write_str("invalid request"),
            Self::PermissionDenied => f.write_str("permission denied"),
            Self::Timeout => f.write_str(
                "timed out waiting for the server (is it up? may this user publish and subscribe to the subject?)",
            ),
            Self::Connection => f.write_str("not connected to the server"),
            Self::OutcomeUnknown => f.write_str("the write's outcome is unknown: the server did not answer"),
            Self::Other => f.write_str("server error"),
        }
    }
}

/// A failed store operation, naming the bucket and key it was about.
///
/// ```
/// use kv_config::store::{StoreError, StoreErrorKind};
/// let err = StoreError::new(StoreErrorKind::WrongRevision { expected: 3, current: Some(5) })
///     .bucket("cfg")
///     .key("server.port");
/// assert_eq!(
///     err.to_string(),
///     "bucket `cfg`, key `server.port`: wrong revision: expected 3, current is 5"
/// );
/// ```
#[derive(Debug)]
pub struct StoreError {
    kind: StoreErrorKind,
    bucket: Option<String>,
    key: Option<String>,
    detail: Option<String>,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl StoreError {
    /// A new error of this kind, without context.
    pub fn new(kind: StoreErrorKind) -> Self {
        StoreError { kind, bucket: None, key: None, detail: None, source: None }
    }

    /// Names the bucket.
    pub fn bucket(mut self, bucket: impl Into<String>) -> Self {
        self.bucket = Some(bucket.into());
        self
    }

    /// Names the key.
    pub fn key(mut self, key: impl Into<String>) -> Self {
        self.key = Some(key.into());
        self
    }

    /// Adds a human-readable detail.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Box<dyn std::error::Error + Send + Sync>>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> &StoreErrorKind {
        &self.kind
    }

    /// The bucket the operation was about, if any.
    pub fn bucket_name(&self) -> Option<&str> {
        self.bucket.as_deref()
    }

    /// The key the operation was about, if any.
    pub fn key_name(&self) -> Option<&str> {
        self.key.as_deref()
    }

    /// The human-readable detail, if any.
    pub fn detail_text(&self) -> Option<&str> {
        self.detail.as_deref()
    }

    /// `true` for [`StoreErrorKind::WrongRevision`].
    pub fn is_wrong_revision(&self) -> bool {
        matches!(self.kind, StoreErrorKind::WrongRevision { .. })
    }

    /// `true` when retrying later may succeed (timeouts and lost connections).
    pub fn is_transient(&self) -> bool {
        matches!(self.kind, StoreErrorKind::Timeout | StoreErrorKind::Connection)
    }
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.bucket, &self.key) {
            (Some(b), Some(k)) => write!(f, "bucket `{b}`, key `{k}`: ")?,
            (Some(b), None) => write!(f, "bucket `{b}`: ")?,
            (None, Some(k)) => write!(f, "key `{k}`: ")?,
            (None, None) => {}
        }
        write!(f, "{}", self.kind)?;
        if let Some(detail) = &self.detail {
            write!(f, " ({detail})")?;
        }
        Ok(())
    }
}

impl std::error::Error for StoreError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|e| e as &(dyn std::error::Error + 'static))
    }
}
