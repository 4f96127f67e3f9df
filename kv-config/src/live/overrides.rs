//! Expiring overrides: [`LiveConfig::set_for`] and [`LiveConfig::clear_override`].
//!
//! An override of `log_level` is the key `<prefix>__kvconfig.override.log_level`, written with a
//! per-key TTL. While it lives its value is in effect; when the server expires it (its expiry
//! marker reaches every watcher) the key's own value is back, not the default. The override layer
//! is plain KV data, so every handle and every tool sees the same overrides, and a restarted
//! service picks up the ones still alive.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;

use super::write::to_raw;
use super::{LiveConfig, Snapshot};
use crate::config::{KvConfig, RawValue};
use crate::error::{Error, Result};
use crate::overrides::whole_seconds;
use crate::store::{WriteOp, AUTHOR_HEADER};
use crate::view::{EXPIRES_HEADER, GUARD_KEY, OVERRIDE_PREFIX};

impl<T: KvConfig> LiveConfig<T> {
    /// Overrides `key` (relative to the prefix) with `value` for `ttl` (whole seconds, rounded
    /// up): an incident knob such as "log level debug for 30 minutes". The value is validated like
    /// [`set`](Self::set), then stored under `__kvconfig.override.<key>` with a per-key TTL, so
    /// every handle of the bucket uses it until the server expires it, and then goes back to the
    /// key's own value (not to the default); while the server cannot be asked (unreachable,
    /// frozen, or the bucket gone), a handle drops it at the expiry it recorded. Setting it again
    /// replaces the override and its TTL.
    /// The config must stay valid while the override lasts, also as other overrides expire before
    /// it (soonest first; one without a known expiry counts as the soonest): otherwise
    /// [`Error::InvalidAfterExpiry`] names them and nothing is written.
    ///
    /// The bucket needs per-key TTLs ([`BucketConfig::key_ttl`](crate::store::BucketConfig::key_ttl),
    /// `kvc add --key-ttl`). While an override lives, [`update`](Self::update)s that change the
    /// key fail with [`Error::Overridden`]; [`Snapshot::source`] and [`Status::overrides`](crate::Status::overrides)
    /// show it with its expiry. Returns once this handle's snapshot holds the override; errors
    /// mean what they mean for `update`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use kv_config::{KvConfig, LiveConfig, Provenance, store::{BucketConfig, MemoryStore}};
    /// #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
    /// struct App {
    ///     #[kv(default = "info")]
    ///     log_level: String,
    /// }
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), kv_config::Error> {
    /// let bucket = BucketConfig::new("app").key_ttl(Duration::from_secs(1));
    /// let cfg = LiveConfig::<App>::builder(MemoryStore::new(), "app").create_with(bucket).start().await?;
    /// let snap = cfg.set_for("log_level", "debug", Duration::from_secs(1800)).await?;
    /// assert_eq!(snap.log_level, "debug");
    /// assert!(matches!(snap.source("log_level"), Some(Provenance::Override { expires: Some(_), .. })));
    /// let snap = cfg.clear_override("log_level").await?;
    /// assert_eq!(snap.log_level, "info");
    /// # Ok(()) }
    /// ```
    pub async fn set_for<V: serde::Serialize>(&self, key: &str, value: V, ttl: Duration) -> Result<Arc<Snapshot<T>>> {
        let shared = &self.shared;
        shared.check_known(key)?;
        let ttl = whole_seconds(ttl);
        let bytes = Bytes::from(serde_json::to_vec(&value).map_err(|e| crate::EncodeError { key: key.to_string(), message: e.to_string() })?);
        let prefix = &shared.source.prefix;
        let full = format!("{prefix}{OVERRIDE_PREFIX}{key}");
        let mut attempt = 0;
        loop {
            attempt += 1;
            let base = self.get_arc();
            // The config with the override in effect must be valid.
            let mut raw = to_raw(&base.config.encode()?);
            raw.insert(key.to_string(), RawValue { value: bytes.clone(), revision: 0, created: None });
            T::decode(&raw, &shared.source)?;
            let expires = SystemTime::now() + ttl;
            // And while it lasts, as the other overrides expire before it.
            self.check_after_expiry(&base, &raw, Some((key, Some(expires))), &|_| false)?;
            let millis = expires.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            let expect = base.override_revisions.get(key).copied().unwrap_or(0);
            let mut ops = vec![WriteOp::put(full.clone(), bytes.clone()).expect_revision(expect).ttl(ttl).header(EXPIRES_HEADER, millis.to_string())];
            if T::__KV_CROSS_CHECKS {
                let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
                ops.push(WriteOp::put(format!("{prefix}{GUARD_KEY}"), Bytes::from(stamp.to_string())).expect_revision(base.guard));
            }
            if let Some(author) = &shared.options.author {
                ops = ops.into_iter().map(|op| op.header(AUTHOR_HEADER, author.clone())).collect();
            }
            let n = ops.len() as u64;
            shared.check_bucket_present()?;
            let result = if ops.len() == 1 { shared.bucket.write(ops.remove(0)).await } else { shared.bucket.write_atomic(ops).await };
            match result {
                Ok(last) => {
                    let ours = last + 1 - n;
                    return self.confirm_override(base.epoch, last, key, Some(ours)).await;
                }
                Err(e) if e.is_wrong_revision() && attempt < shared.options.max_attempts => {
                    shared.state().status.conflicts += 1;
                    let target = match e.kind() {
                        crate::store::StoreErrorKind::WrongRevision { current: Some(c), .. } => *c,
                        _ => last_revision(shared.bucket.entry(&full).await?),
                    };
                    shared.after_conflict(base.epoch, target).await;
                }
                Err(e) if e.is_wrong_revision() => {
                    let (expected, current) = match e.kind() {
                        crate::store::StoreErrorKind::WrongRevision { expected, current } => (*expected, *current),
                        _ => (expect, None),
                    };
                    let key = e.key_name().map_or_else(|| full.clone(), str::to_string);
                    return Err(Error::Conflict { bucket: shared.source.bucket.clone(), key, expected, current, attempts: attempt });
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Ends the override of `key` before its TTL does: the key's own value is back. Does nothing
    /// (and returns the current snapshot) when no override of `key` is in effect. When the state
    /// with the key's own value back is refused, the last good snapshot (with the override's
    /// value) stays and [`Error::NotInEffect`] says why; also when the override is gone already
    /// but its value stayed in effect that way.
    pub async fn clear_override(&self, key: &str) -> Result<Arc<Snapshot<T>>> {
        let shared = &self.shared;
        shared.check_known(key)?;
        let full = format!("{}{OVERRIDE_PREFIX}{key}", shared.source.prefix);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let base = self.get_arc();
            if let Some((o, _)) = base.lapsed.get(key) {
                // Gone already, but its value stays in effect: the state without it is refused.
                return Err(Error::NotInEffect { bucket: shared.source.bucket.clone(), key: full, revision: o.revision, reason: self.refusal(key) });
            }
            if !base.overridden.contains_key(key) {
                return Ok(base);
            }
            let expect = base.override_revisions.get(key).copied().unwrap_or(0);
            let mut op = WriteOp::purge(full.clone()).expect_revision(expect);
            if let Some(author) = &shared.options.author {
                op = op.header(AUTHOR_HEADER, author.clone());
            }
            shared.check_bucket_present()?;
            match shared.bucket.write(op).await {
                Ok(rev) => return self.confirm_override(base.epoch, rev, key, None).await,
                // Replaced or expired meanwhile: look again.
                Err(e) if e.is_wrong_revision() && attempt < shared.options.max_attempts => {
                    let target = last_revision(shared.bucket.entry(&full).await?);
                    shared.wait_applied(base.epoch, target).await;
                }
                Err(e) => return Err(e.into()),
            }
        }
    }

    /// Waits until the watcher applied `revision`, then checks the override of `key` is the one
    /// written (`ours`), or gone (`None`).
    async fn confirm_override(&self, epoch: u64, revision: u64, key: &str, ours: Option<u64>) -> Result<Arc<Snapshot<T>>> {
        let shared = &self.shared;
        if !shared.wait_applied(epoch, revision).await {
            return Err(Error::NotObserved { bucket: shared.source.bucket.clone(), revision });
        }
        let snapshot = self.get_arc();
        let in_effect = snapshot.overridden.get(key).map(|o| o.revision);
        let ok = match ours {
            Some(ours) => in_effect.is_some_and(|r| r >= ours),
            // Gone, and its value no longer in effect either.
            None => in_effect.is_none() && !snapshot.lapsed.contains_key(key),
        };
        if ok {
            return Ok(snapshot);
        }
        let full = format!("{}{OVERRIDE_PREFIX}{key}", shared.source.prefix);
        Err(Error::NotInEffect { bucket: shared.source.bucket.clone(), key: full, revision, reason: self.refusal(key) })
    }

    /// Why the state after a change of the override of `key` is not in effect: the refusal of
    /// the override key, or the first refusal.
    fn refusal(&self, key: &str) -> String {
        let full = format!("{}{OVERRIDE_PREFIX}{key}", self.shared.source.prefix);
        let st = self.shared.state();
        st.status.rejected.iter().find(|e| e.key == full).or(st.status.rejected.first()).map_or_else(
            || "another writer changed it at the same moment".to_string(),
            ToString::to_string,
        )
    }
}

fn last_revision(entry: Option<crate::store::Entry>) -> u64 {
    entry.map_or(0, |e| e.revision)
}
