//! Expiring overrides from the shell: `kvc set --for 30m KEY=VALUE` writes
//! `<prefix>__kvconfig.override.<key>` with a per-key TTL (what
//! [`LiveConfig::set_for`](kv_config::LiveConfig::set_for) does), `kvc del --override KEY` ends
//! one early, and `kvc show` shows the live ones with the time they have left.

use std::time::{Duration, SystemTime};

use bytes::Bytes;
use kv_config::store::{Entry, WriteOp, AUTHOR_HEADER, REASON_HEADER};
use kv_config::{EXPIRES_HEADER, OVERRIDE_PREFIX};

use crate::error::{CliError, CliResult};
use crate::ops::{header, Change, Ctx, Current};

impl Current {
    /// The live override of `key` (relative to the prefix), if one is in effect.
    pub fn live_override(&self, key: &str) -> Option<&Entry> {
        self.overrides.get(key).filter(|e| e.is_put())
    }
}

/// When an override entry expires, from the header kv-config writes with it.
pub fn expires(e: &Entry) -> Option<SystemTime> {
    let millis: u64 = header(e, EXPIRES_HEADER)?.trim().parse().ok()?;
    SystemTime::UNIX_EPOCH.checked_add(Duration::from_millis(millis))
}

/// `12m left`, `expiring`, or `TTL unknown` for an override written without the header.
pub fn time_left(e: &Entry) -> String {
    match expires(e).map(|t| t.duration_since(SystemTime::now())) {
        Some(Ok(left)) => format!("{} left", humantime::format_duration(Duration::from_secs(left.as_secs().max(1)))),
        Some(Err(_)) => "expiring".into(),
        None => "TTL unknown".into(),
    }
}

impl Ctx {
    /// The full key of the override of `key`.
    pub fn override_key(&self, key: &str) -> String {
        self.full_key(&format!("{OVERRIDE_PREFIX}{key}"))
    }

    /// Writes each change as an override of its key that lives `ttl` (whole seconds, rounded
    /// up), in one batch with the guard bump when the config needs one, each checked against the
    /// override's revision in `cur`. The changes must have been validated.
    pub async fn commit_overrides(&self, cur: &Current, changes: &[Change], ttl: Duration, reason: Option<&str>) -> CliResult<u64> {
        let ttl = kv_config::overrides::whole_seconds(ttl);
        let until = SystemTime::now() + ttl;
        let millis = until.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
        let mut ops = Vec::new();
        for c in changes {
            let Some(value) = &c.new else {
                return Err(CliError::Usage(format!("key `{}`: an override needs a value", c.key)));
            };
            let mut op = WriteOp::put(self.override_key(&c.key), Bytes::clone(value))
                .expect_revision(cur.overrides.get(&c.key).map_or(0, |e| e.revision))
                .ttl(ttl)
                .header(EXPIRES_HEADER, millis.to_string())
                .header(AUTHOR_HEADER, self.author.replace(['\r', '\n'], " "));
            if let Some(r) = reason {
                op = op.header(REASON_HEADER, r.replace(['\r', '\n'], " "));
            }
            ops.push(op);
        }
        self.write_overrides(cur, ops, changes).await
    }

    /// Ends the live override of `key` (a purge of its override key, checked against its
    /// revision in `cur`).
    pub async fn clear_override(&self, cur: &Current, key: &str, reason: Option<&str>) -> CliResult<u64> {
        let Some(entry) = cur.live_override(key) else {
            return Err(CliError::NotFound(format!("bucket `{}`, key `{key}`: no override in effect", cur.name())));
        };
        let mut op = WriteOp::purge(self.override_key(key))
            .expect_revision(entry.revision)
            .header(AUTHOR_HEADER, self.author.replace(['\r', '\n'], " "));
        if let Some(r) = reason {
            op = op.header(REASON_HEADER, r.replace(['\r', '\n'], " "));
        }
        self.write_overrides(cur, vec![op], &[Change { key: key.to_string(), new: None }]).await
    }

    async fn write_overrides(&self, cur: &Current, ops: Vec<WriteOp>, changes: &[Change]) -> CliResult<u64> {
        let result = if ops.len() == 1 && !self.needs_guard(cur) {
            // `send` checks the bucket is still the one read, before and after the write.
            self.send(cur, ops).await?
        } else {
            // The guard bump rides in the same batch, like any typed write.
            return self.write_batch(cur, ops, &[]).await.map_err(|e| self.override_conflict(cur, e, changes));
        };
        result.map_err(|e| self.override_conflict(cur, e.into(), changes))
    }

    fn override_conflict(&self, cur: &Current, e: CliError, changes: &[Change]) -> CliError {
        let wrong_revision = match &e {
            CliError::Store(s) => s.is_wrong_revision(),
            CliError::Conflict(_) => true,
            _ => false,
        };
        let ttl_off = matches!(&e, CliError::Store(s) if s.to_string().contains("per-key TTL"));
        if ttl_off {
            return CliError::Refused {
                bucket: cur.name().to_string(),
                problems: vec![crate::error::Refusal {
                    key: changes.first().map_or_else(String::new, |c| c.key.clone()),
                    reason: "overrides need per-key TTLs on the bucket (`kvc add --key-ttl`, or `nats kv edit --marker-ttl`)".into(),
                }],
            };
        }
        if !wrong_revision {
            return e;
        }
        let keys: Vec<String> = changes.iter().map(|c| format!("`{}`", c.key)).collect();
        CliError::Conflict(format!(
            "bucket `{}`, override of {}: changed by someone else since it was read; nothing written",
            cur.name(),
            keys.join(", ")
        ))
    }
}
