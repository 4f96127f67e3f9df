//! One-shot typed loading.

use crate::config::{KvConfig, Source};
use crate::error::Result;
use crate::feed::{check_prefix, watch_initial};
use crate::store::Bucket;
use crate::view::{decode_view, unknown_keys, Decoding};

/// How long a one-shot load may take.
const LOAD_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(10);

/// A config read once from a bucket.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Loaded<T> {
    /// The config.
    pub config: T,
    /// The highest bucket revision read.
    pub revision: u64,
    /// Keys under the prefix that the schema does not know (also logged as warnings).
    pub unknown_keys: Vec<String>,
}

/// Loads `T` from the keys under `prefix` (`""` or e.g. `prod.`) in one pass over the bucket (one
/// watch that delivers the latest value of every key), not one round trip per key.
///
/// An empty bucket gives all defaults; every missing required key and every bad value is reported
/// in one [`DecodeError`](crate::DecodeError).
///
/// ```
/// use kv_config::{load, KvConfig, store::{BucketConfig, MemoryStore, Store}};
/// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
/// struct App {
///     #[kv(default = 8080)]
///     port: u16,
///     log_level: String,
/// }
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), kv_config::Error> {
/// let bucket = MemoryStore::new().create_bucket(&BucketConfig::new("app")).await?;
/// bucket.put("prod.log_level", "debug".into()).await?; // a bare string, as `nats kv put` writes it
/// let loaded = load::<App>(&*bucket, "prod.").await?;
/// assert_eq!((loaded.config.port, loaded.config.log_level.as_str()), (8080, "debug"));
/// # Ok(()) }
/// ```
pub async fn load<T: KvConfig>(bucket: &dyn Bucket, prefix: &str) -> Result<Loaded<T>> {
    check_prefix(prefix)?;
    let (_watch, view) = watch_initial(bucket, prefix, None, LOAD_TIMEOUT).await?;
    let source = Source::new(bucket.name(), prefix);
    let decoded = decode_view::<T>(&view, None, &source, Decoding::fresh())?;
    let unknown_keys = if decoded.has_unknown {
        unknown_keys(&view.values, &crate::schema::KeySet::from_keys(T::schema().fields.into_iter().map(|f| f.key)))
    } else {
        Vec::new()
    };
    for key in &unknown_keys {
        tracing::warn!(bucket = bucket.name(), key = %format!("{prefix}{key}"), "key not in the schema of `{}`; ignored", T::__KV_NAME);
    }
    Ok(Loaded { config: decoded.config, revision: view.seen, unknown_keys })
}
