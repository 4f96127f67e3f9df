//! [`Provenance`]: where a value in effect came from, and [`ActiveOverride`]: an expiring
//! override in effect.

use std::fmt;
use std::time::SystemTime;

/// Where the value in effect for one key came from (see
/// [`Snapshot::source`](crate::Snapshot::source)).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum Provenance {
    /// The field's default: the bucket holds no value for the key.
    Default,
    /// The bucket's value for the key.
    Bucket {
        /// The key's revision.
        revision: u64,
        /// When the server stored it. `None` for a handle's own write until its watch delivers
        /// it (an update is in effect on its commit, when nothing else can lie before it; the
        /// watch follows within about a millisecond on a local server).
        created: Option<SystemTime>,
    },
    /// An expiring override (see [`LiveConfig::set_for`](crate::LiveConfig::set_for)).
    Override {
        /// The override key's revision.
        revision: u64,
        /// When it was set.
        created: Option<SystemTime>,
        /// When the server expires it (`None` if another tool wrote it without saying).
        expires: Option<SystemTime>,
    },
    /// The local last-known-good cache, read while the server could not be reached.
    Cache {
        /// The key's revision when the cache was saved.
        revision: u64,
        /// When the cache was saved.
        saved: SystemTime,
    },
    /// The start-up fallback given to [`OnInvalid::Fallback`](crate::OnInvalid::Fallback): the
    /// bucket's values did not make a valid config.
    Fallback,
}

impl fmt::Display for Provenance {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Provenance::Default => f.write_str("default"),
            Provenance::Bucket { revision, .. } => write!(f, "bucket (revision {revision})"),
            Provenance::Override { revision, expires, .. } => {
                write!(f, "override (revision {revision}")?;
                if let Some(left) = expires.and_then(|e| e.duration_since(SystemTime::now()).ok()) {
                    write!(f, ", expires in {}s", left.as_secs())?;
                }
                f.write_str(")")
            }
            Provenance::Cache { revision, saved } => {
                let age = SystemTime::now().duration_since(*saved).unwrap_or_default();
                write!(f, "cache (revision {revision}, saved {}s ago)", age.as_secs())
            }
            Provenance::Fallback => f.write_str("start-up fallback"),
        }
    }
}

/// An override in effect: its key stands in for the key's own value until it expires.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ActiveOverride {
    /// The overridden key, relative to the prefix (`log_level`).
    pub key: String,
    /// The override key's revision.
    pub revision: u64,
    /// When it was set.
    pub created: Option<SystemTime>,
    /// When the server expires it (`None` if another tool wrote it without saying).
    pub expires: Option<SystemTime>,
    /// The revision of the key's own value underneath (`None`: the default applies after).
    pub underlying: Option<u64>,
}
