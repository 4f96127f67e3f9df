//! The operations under every command: reading a config's state from a bucket, checking
//! proposed changes (against the published schema, or the Rust type's own decoder and
//! validators), and committing them as one batch with revision checks and audit headers.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::io::BufRead;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use kv_config::store::{
    is_valid_key, Bucket, BucketInfo, Entry, Operation, Store, StoreError, StoreErrorKind, WatchStart, WriteOp, AUTHOR_HEADER, REASON_HEADER,
};
use kv_config::{DecodeError, FieldSchema, KvConfig, RawValue, RawValues, Schema, Source, GUARD_KEY, OVERRIDE_PREFIX, RESERVED_PREFIX, SCHEMA_KEY};
use serde::Serialize;
use serde_json::Value;

use crate::error::{CliError, CliResult, Refusal};
use crate::output::{Block, Printer, Text, Tone};

/// What `kvc` shows instead of a secret value (without `--reveal`).
pub const REDACTED: &str = "<redacted>";

/// How long reading a bucket's state may take before `kvc` gives up.
const READ_DEADLINE: Duration = Duration::from_secs(15);

/// How `kvc` knows the types of a config's keys.
#[derive(Clone)]
pub enum Mode {
    /// Reads the schema a service published under `<prefix>__kvconfig.schema`; without one,
    /// values are only checked to be JSON.
    Generic,
    /// Uses a Rust config type: its schema, and its decoder with field and struct validators.
    Typed(Typed),
}

impl std::fmt::Debug for Mode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Mode::Generic => f.write_str("Generic"),
            Mode::Typed(t) => write!(f, "Typed({})", t.schema.name),
        }
    }
}

/// A Rust config type, erased: its schema and a decode check.
#[derive(Clone)]
pub struct Typed {
    /// The type's schema.
    pub schema: Schema,
    /// The type has validators that read several keys: writes bump the guard key.
    pub cross_checks: bool,
    check: fn(&RawValues, &Source) -> Result<(), DecodeError>,
}

fn decode_check<T: KvConfig>(values: &RawValues, source: &Source) -> Result<(), DecodeError> {
    T::decode(values, source).map(drop)
}

impl Mode {
    /// Typed mode for `T`.
    pub fn typed<T: KvConfig>() -> Self {
        Mode::Typed(Typed { cross_checks: T::schema().cross_checks, schema: T::schema(), check: decode_check::<T> })
    }
}

/// A config's state in a bucket, as read at one moment.
#[derive(Debug, Clone)]
pub struct Current {
    /// The bucket.
    pub bucket: Arc<dyn Bucket>,
    /// When the bucket was created, read before its entries: it names the incarnation the state
    /// was read from (`None` when the store does not say). A bucket deleted and created again
    /// under the same name starts its revisions again at 1, so the revisions below identify
    /// values only in this incarnation: every write checks it first ([`Ctx::write_batch`]).
    pub created: Option<SystemTime>,
    /// The schema in effect (the type's, the published one, or none).
    pub schema: Option<Schema>,
    /// The latest entry of every key under the prefix (relative keys; delete and purge markers
    /// included; kv-config's reserved keys excluded).
    pub entries: BTreeMap<String, Entry>,
    /// The revision of the config's write guard key ([`GUARD_KEY`]), markers included, if it
    /// was ever written.
    pub guard: Option<u64>,
    /// The latest entry of every override key (`__kvconfig.override.<key>`), by the relative key
    /// it overrides, markers included (see [`crate::overrides`]).
    pub overrides: BTreeMap<String, Entry>,
}

impl Current {
    /// The bucket's name.
    pub fn name(&self) -> &str {
        self.bucket.name()
    }

    /// Live values by relative key.
    pub fn live(&self) -> BTreeMap<String, Bytes> {
        self.entries.iter().filter(|(_, e)| e.is_put()).map(|(k, e)| (k.clone(), e.value.clone())).collect()
    }

    /// The live entry of a key.
    pub fn live_entry(&self, key: &str) -> Option<&Entry> {
        self.entries.get(key).filter(|e| e.is_put())
    }

    /// The schema field of a key (for a map entry such as `flags.beta`, the field `flags.*`; for
    /// an override key, the field it overrides: see [`field_of`]).
    pub fn field(&self, key: &str) -> Option<&FieldSchema> {
        field_of(self.schema.as_ref(), key)
    }

    /// `true` if the key's value must not be shown.
    pub fn is_secret(&self, key: &str) -> bool {
        self.field(key).is_some_and(|f| f.secret)
    }
}

/// The schema field that decides how the value of `key` (relative to the prefix) is typed and
/// shown: the key's own field (for a map entry such as `flags.beta`, the field `flags.*`), and
/// for an override key (`__kvconfig.override.<key>`) the field of the key it overrides, so an
/// override of a secret is a secret too.
pub fn field_of<'a>(schema: Option<&'a Schema>, key: &str) -> Option<&'a FieldSchema> {
    schema?.field_for(key.strip_prefix(OVERRIDE_PREFIX).unwrap_or(key))
}

/// One proposed change of one key: `new == None` deletes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The key, relative to the prefix.
    pub key: String,
    /// The new value (JSON bytes), or `None` to delete.
    pub new: Option<Bytes>,
}

/// One line of a diff, as shown and as serialized (`{"key", "old", "new"}`; `null` = absent,
/// secrets are the string `"<redacted>"` unless `--reveal`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DiffRow {
    /// The key, relative to the prefix.
    pub key: String,
    /// The value before (or in the other state), `None` when absent.
    pub old: Option<Value>,
    /// The value after (or in the current state), `None` when absent.
    pub new: Option<Value>,
}

/// Where the shared state of one `kvc` run lives: the store connection, the type mode, options
/// and the printer.
pub struct Ctx {
    /// The store (a NATS connection for the binary).
    pub store: Arc<dyn Store>,
    /// How types are known.
    pub mode: Mode,
    /// The config's key prefix (`""` or ending in `.`).
    pub prefix: String,
    /// Written into the author header of every write.
    pub author: String,
    /// Show secret values.
    pub reveal: bool,
    /// Renders output.
    pub printer: Printer,
    /// The editor command for `edit` (`$VISUAL`, `$EDITOR`, else `vi`).
    pub editor: String,
    noted: HashSet<String>,
}

impl std::fmt::Debug for Ctx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ctx").field("mode", &self.mode).field("prefix", &self.prefix).finish_non_exhaustive()
    }
}

/// `user@host` of this process, for the author header.
pub fn default_author() -> String {
    let user = ["USER", "USERNAME", "LOGNAME"]
        .iter()
        .find_map(|v| std::env::var(v).ok().filter(|s| !s.is_empty()))
        .unwrap_or_else(|| "unknown".to_string());
    let host = gethostname::gethostname().to_string_lossy().into_owned();
    format!("{user}@{host}")
}

/// `prod` and `prod.` both mean the prefix `prod.`.
pub fn normalize_prefix(prefix: &str) -> String {
    let p = prefix.trim();
    if p.is_empty() || p.ends_with('.') {
        p.to_string()
    } else {
        format!("{p}.")
    }
}

impl Ctx {
    /// A context; `prefix` is normalized to end in `.`.
    pub fn new(store: Arc<dyn Store>, mode: Mode, prefix: &str, printer: Printer) -> Self {
        let editor = ["VISUAL", "EDITOR"]
            .iter()
            .find_map(|v| std::env::var(v).ok().filter(|s| !s.trim().is_empty()))
            .unwrap_or_else(|| "vi".to_string());
        Ctx {
            store,
            mode,
            prefix: normalize_prefix(prefix),
            author: default_author(),
            reveal: false,
            printer,
            editor,
            noted: HashSet::new(),
        }
    }

    /// Prints a note on stderr once per run.
    pub fn note_once(&mut self, note: String) {
        if self.noted.insert(note.clone()) {
            self.printer.note(&note);
        }
    }

    /// Opens a bucket; a missing one is [`CliError::NotFound`] (exit 5).
    pub async fn open(&self, bucket: &str) -> CliResult<Arc<dyn Bucket>> {
        match self.store.open_bucket(bucket).await {
            Ok(b) => Ok(b),
            Err(e) if matches!(e.kind(), StoreErrorKind::NotFound) => {
                Err(CliError::NotFound(format!("bucket `{bucket}`: no such bucket")))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// The full key in the bucket of a relative key.
    pub fn full_key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The schema in effect for `bucket`: the type's in typed mode, else the published one (a
    /// note says once when there is none).
    pub async fn schema(&mut self, bucket: &dyn Bucket) -> CliResult<Option<Schema>> {
        self.schema_with(bucket, false).await
    }

    async fn schema_with(&mut self, bucket: &dyn Bucket, quiet: bool) -> CliResult<Option<Schema>> {
        if let Mode::Typed(t) = &self.mode {
            return Ok(Some(t.schema.clone()));
        }
        let key = self.full_key(SCHEMA_KEY);
        match bucket.entry(&key).await? {
            Some(e) if e.is_put() => match serde_json::from_slice::<Schema>(&e.value) {
                Ok(s) => Ok(Some(s)),
                Err(err) => {
                    self.note_once(format!(
                        "note: bucket `{}`, key `{key}`: the published schema is unreadable ({err}); values are checked as JSON only",
                        bucket.name()
                    ));
                    Ok(None)
                }
            },
            _ if quiet => Ok(None),
            _ => {
                self.note_once(format!(
                    "note: bucket `{}` has no published schema (key `{key}`); values are checked as JSON only",
                    bucket.name()
                ));
                Ok(None)
            }
        }
    }

    /// [`schema`](Ctx::schema) without the note when there is none.
    pub async fn schema_quiet(&mut self, bucket: &dyn Bucket) -> CliResult<Option<Schema>> {
        self.schema_with(bucket, true).await
    }

    /// Reads the config's current state in `bucket`.
    pub async fn load(&mut self, bucket: &str) -> CliResult<Current> {
        let bucket = self.open(bucket).await?;
        // Before the entries: entries read from a newer incarnation than the one recorded make
        // a later write refuse (safe); the other order could record the newer one for older
        // entries.
        let created = bucket.info().await?.created;
        let schema = self.schema(bucket.as_ref()).await?;
        let entries = read_entries(bucket.as_ref(), &self.prefix, WatchStart::LatestPerKey).await?;
        let mut latest = BTreeMap::new();
        let mut guard = None;
        let mut overrides = BTreeMap::new();
        let guard_key = self.full_key(GUARD_KEY);
        let override_prefix = self.full_key(OVERRIDE_PREFIX);
        for e in entries {
            if e.key == guard_key {
                guard = Some(e.revision);
            } else if let Some(rel) = e.key.strip_prefix(override_prefix.as_str()) {
                overrides.insert(rel.to_string(), e);
            } else if let Some(rel) = self.relative(&e.key) {
                latest.insert(rel, e);
            }
        }
        Ok(Current { bucket, created, schema, entries: latest, guard, overrides })
    }

    /// The relative key of a full key under the prefix, `None` outside it or for reserved keys.
    pub fn relative(&self, full: &str) -> Option<String> {
        let rel = full.strip_prefix(self.prefix.as_str())?;
        if rel.starts_with(RESERVED_PREFIX) {
            None
        } else {
            Some(rel.to_string())
        }
    }

    /// The config's state at a past revision or time, rebuilt from the bucket's retained history.
    /// Fails ([`CliError::NotFound`]) when the history no longer holds that state: for some key
    /// (its older revisions dropped by the per-key history limit, or purged), or for the whole
    /// bucket (messages removed from the start of its stream, e.g. by its max age, that may still
    /// have been in effect then), or never held it: a revision past its last one, a time before
    /// it was created (a bucket deleted and created again keeps nothing of the one before). A
    /// bucket replaced since `cur` was read is [`CliError::Replaced`].
    pub async fn state_at(&self, cur: &Current, cutoff: Cutoff) -> CliResult<BTreeMap<String, Bytes>> {
        let info = cur.bucket.info().await?;
        same_bucket(cur.name(), cur.created, info.created, "it was read")?;
        let depth = info.config.history as usize;
        let entries = read_entries(cur.bucket.as_ref(), &self.prefix, WatchStart::FromRevision(1)).await?;
        let oldest = oldest_retained(cur.bucket.as_ref()).await?;
        check_retained(cur.name(), &info, oldest, &entries, cutoff, SystemTime::now())?;
        let mut by_key: BTreeMap<String, Vec<Entry>> = BTreeMap::new();
        for e in entries {
            if let Some(rel) = self.relative(&e.key) {
                by_key.entry(rel).or_default().push(e);
            }
        }
        let mut state = BTreeMap::new();
        for (key, mut list) in by_key {
            list.sort_by_key(|e| e.revision);
            match list.iter().rev().find(|e| cutoff.includes(e)) {
                Some(e) if e.is_put() => {
                    state.insert(key, e.value.clone());
                }
                Some(_) => {}
                None => {
                    let oldest = &list[0];
                    if oldest.operation == Operation::Purge || list.len() >= depth {
                        return Err(CliError::NotFound(format!(
                            "bucket `{}`, key `{key}`: its value {cutoff} is no longer retained (the bucket keeps {depth} revisions per key; oldest retained is revision {})",
                            cur.name(),
                            oldest.revision
                        )));
                    }
                }
            }
        }
        Ok(state)
    }

    /// Checks proposed changes of the keys' own values against the schema or the type;
    /// `Err(Refused)` lists every problem. In typed mode the validators see the state every
    /// service will have: the new own values with the overrides in effect on top, and again as
    /// those overrides expire one after the other (see [`check_overrides`](Ctx::check_overrides)).
    pub fn check(&self, cur: &Current, changes: &[Change]) -> CliResult<()> {
        self.check_layer(cur, changes, None)
    }

    /// Checks changes that are to be written as overrides expiring at `expires` (`kvc set
    /// --for`), like [`LiveConfig::set_for`](kv_config::LiveConfig::set_for): in typed mode the
    /// config must be valid with them on top of the overrides in effect, and stay valid while
    /// they last as the other overrides expire before them (soonest first; one without a known
    /// expiry counts as the soonest).
    pub fn check_overrides(&self, cur: &Current, changes: &[Change], expires: SystemTime) -> CliResult<()> {
        self.check_layer(cur, changes, Some(expires))
    }

    fn check_layer(&self, cur: &Current, changes: &[Change], overrides_until: Option<SystemTime>) -> CliResult<()> {
        let mut problems = Vec::new();
        let refuse = |problems: &mut Vec<Refusal>, key: &str, reason: String| {
            problems.push(Refusal { key: key.to_string(), reason })
        };
        for c in changes {
            if c.key.starts_with(RESERVED_PREFIX) || c.key == RESERVED_PREFIX.trim_end_matches('.') {
                refuse(&mut problems, &c.key, "reserved for kv-config itself".into());
                continue;
            }
            if !is_valid_key(&self.full_key(&c.key)) {
                refuse(&mut problems, &c.key, "invalid key: use [-/_=.a-zA-Z0-9] with no empty token".into());
                continue;
            }
            let Some(schema) = &cur.schema else {
                if let Some(v) = &c.new {
                    if let Err(e) = serde_json::from_slice::<Value>(v) {
                        refuse(&mut problems, &c.key, format!("not JSON: {e}"));
                    }
                }
                continue;
            };
            let Some(field) = schema.field_for(&c.key) else {
                refuse(&mut problems, &c.key, format!("unknown key: not in the schema of `{}`", schema.name));
                continue;
            };
            match &c.new {
                Some(v) => {
                    if let Err(e) = field.ty.parse(v) {
                        let msg = if field.secret { format!("invalid value (redacted); expected {}", field.ty) } else { e };
                        refuse(&mut problems, &c.key, msg);
                    }
                }
                None if field.required && field.is_map_entry() => {
                    // Required within a map entry: deleting it is fine when the whole entry goes.
                    if let Some(entry) = entry_prefix(&field.key, &c.key) {
                        let deleted = |k: &str| changes.iter().any(|d| d.key == k && d.new.is_none());
                        if cur.live().keys().any(|k| k.starts_with(&entry) && !deleted(k)) {
                            refuse(
                                &mut problems,
                                &c.key,
                                format!("required in each entry (no default): delete every key of entry `{}` or set a value", entry.trim_end_matches('.')),
                            );
                        }
                    }
                }
                None if field.required => {
                    refuse(&mut problems, &c.key, "required (no default): cannot be deleted".into());
                }
                None => {}
            }
        }
        if problems.is_empty() {
            if let Mode::Typed(t) = &self.mode {
                problems.extend(self.typed_check(t, cur, changes, overrides_until));
            }
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CliError::Refused { bucket: cur.name().to_string(), problems })
        }
    }

    /// Runs the type's decoder and validators on the states the changes lead to, mirroring
    /// kv-config's own write checks: first the config every service will have (own values, the
    /// changes, the live overrides on top), then the states as the overrides expire one after the
    /// other, soonest first, each expired key holding its own value again. For own values
    /// (`overrides_until == None`) that goes until every override has expired; for new overrides
    /// it stops before they expire (what follows does not depend on them), but goes on up to
    /// where an override they replace would have expired: the states of
    /// [`expiry_states`](kv_config::overrides::expiry_states). Returns the problems of the first
    /// state refused that concern a changed key.
    fn typed_check(&self, t: &Typed, cur: &Current, changes: &[Change], overrides_until: Option<SystemTime>) -> Vec<Refusal> {
        let raw = |e: &Entry| RawValue { value: e.value.clone(), revision: e.revision, created: Some(e.created) };
        let mut own: RawValues = cur.entries.iter().filter(|(_, e)| e.is_put()).map(|(k, e)| (k.clone(), raw(e))).collect();
        // The overrides in effect and what the changes set, by key (at most one value each).
        let mut layer: BTreeMap<&str, RawValue> = cur.overrides.iter().filter(|(_, e)| e.is_put()).map(|(k, e)| (k.as_str(), raw(e))).collect();
        let in_effect: Vec<(&str, Option<SystemTime>)> =
            cur.overrides.iter().filter(|(_, e)| e.is_put()).map(|(k, e)| (k.as_str(), crate::overrides::expires(e))).collect();
        let mut new: Vec<(&str, Option<SystemTime>)> = Vec::new();
        for c in changes {
            let value = c.new.as_ref().map(|v| RawValue { value: v.clone(), revision: 0, created: None });
            match (overrides_until, value) {
                (None, Some(v)) => {
                    own.insert(c.key.clone(), v);
                }
                (None, None) => {
                    own.remove(&c.key);
                }
                (Some(until), Some(v)) => {
                    layer.insert(c.key.as_str(), v);
                    if !new.iter().any(|(k, _)| *k == c.key) {
                        new.push((c.key.as_str(), Some(until)));
                    }
                }
                // An override needs a value; writing it fails before anything is sent.
                (Some(_), None) => {}
            }
        }
        let source = Source::new(cur.name(), self.prefix.clone());
        let changed: BTreeSet<&str> = changes.iter().map(|c| c.key.as_str()).collect();
        // The same states kv-config's own writes check (`LiveConfig::set_for` and `update`).
        for expired in kv_config::overrides::expiry_states(&in_effect, &new) {
            let mut state = own.clone();
            for (k, v) in layer.iter().filter(|(k, _)| !expired.contains(*k)) {
                state.insert((*k).to_string(), v.clone());
            }
            let Err(err) = (t.check)(&state, &source) else { continue };
            let expired: Vec<String> = expired.iter().map(|k| format!("`{k}`")).collect();
            let mut out = Vec::new();
            for e in err.errors() {
                let rel = e.key.strip_prefix(self.prefix.as_str()).unwrap_or(&e.key);
                // A problem counts when it is about a changed key, or about a struct (or a nested
                // field's validator) that holds one; problems elsewhere were there before.
                let relevant = rel.is_empty() || changed.iter().any(|k| *k == rel || k.starts_with(&format!("{rel}.")));
                if relevant {
                    let key = if rel.is_empty() { "(whole config)".to_string() } else { rel.to_string() };
                    let reason = if expired.is_empty() {
                        e.problem.to_string()
                    } else {
                        let (noun, verb, it) = if expired.len() == 1 { ("override", "lasts", "it expires") } else { ("overrides", "last", "they expire") };
                        format!("valid only while the {noun} of {} {verb}; once {it}: {}", expired.join(", "), e.problem)
                    };
                    out.push(Refusal { key, reason });
                }
            }
            if !out.is_empty() {
                return out;
            }
        }
        Vec::new()
    }

    /// Every problem of the current state, by relative key (`(whole config)` for a
    /// struct-level check at the top): wrong types, missing required values, and in typed mode
    /// what the type's validators refuse. Each message is [clipped](crate::clip::clip).
    pub fn problems(&self, cur: &Current) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        if let Some(schema) = &cur.schema {
            let values: BTreeMap<String, Vec<u8>> = cur.live().into_iter().map(|(k, v)| (k, v.to_vec())).collect();
            for (k, msg) in schema.check_values(&values) {
                out.entry(k).or_insert_with(|| crate::clip::clip(&msg));
            }
        }
        if let Mode::Typed(t) = &self.mode {
            let values: RawValues = cur
                .entries
                .iter()
                .filter(|(_, e)| e.is_put())
                .map(|(k, e)| (k.clone(), RawValue { value: e.value.clone(), revision: e.revision, created: Some(e.created) }))
                .collect();
            if let Err(err) = (t.check)(&values, &Source::new(cur.name(), self.prefix.clone())) {
                for e in err.errors() {
                    let rel = e.key.strip_prefix(self.prefix.as_str()).unwrap_or(&e.key);
                    let key = if rel.is_empty() { "(whole config)".to_string() } else { rel.to_string() };
                    out.entry(key).or_insert_with(|| crate::clip::clip(&e.problem.to_string()));
                }
            }
        }
        out
    }

    /// Writes changes in one batch (one write for a single key), each checked against the
    /// revision in `cur`, with the audit headers. A failed check is a [`CliError::Conflict`]
    /// naming the keys that moved.
    pub async fn commit(&self, cur: &Current, changes: &[Change], reason: Option<&str>) -> CliResult<u64> {
        let ops: Vec<WriteOp> = changes
            .iter()
            .map(|c| {
                let key = self.full_key(&c.key);
                let op = match &c.new {
                    Some(v) => WriteOp::put(key, v.clone()),
                    None => WriteOp::delete(key),
                };
                let mut op = op.expect_revision(cur.entries.get(&c.key).map_or(0, |e| e.revision));
                op = op.header(AUTHOR_HEADER, one_line(&self.author));
                if let Some(r) = reason {
                    op = op.header(REASON_HEADER, one_line(r));
                }
                op
            })
            .collect();
        self.write_batch(cur, ops, changes).await
    }

    /// `true` when writes to this config must bump its guard key: the type has cross-field
    /// validators (the derive, or the published schema's `cross_checks`), or some writer already
    /// keeps a guard.
    pub fn needs_guard(&self, cur: &Current) -> bool {
        let published = cur.schema.as_ref().is_some_and(|s| s.cross_checks);
        match &self.mode {
            Mode::Typed(t) => t.cross_checks || published || cur.guard.is_some(),
            Mode::Generic => published || cur.guard.is_some(),
        }
    }

    /// Writes `ops` (plus the guard bump when [`needs_guard`](Ctx::needs_guard)) as one write or
    /// one atomic batch (see [`send`](Ctx::send) for the bucket checks around it); a failed
    /// revision check becomes a [`CliError::Conflict`] naming the keys that moved.
    pub async fn write_batch(&self, cur: &Current, mut ops: Vec<WriteOp>, changes: &[Change]) -> CliResult<u64> {
        if !ops.is_empty() && self.needs_guard(cur) {
            let stamp = SystemTime::now().duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| d.as_millis());
            ops.push(
                WriteOp::put(self.full_key(GUARD_KEY), Bytes::from(stamp.to_string()))
                    .expect_revision(cur.guard.unwrap_or(0))
                    .header(AUTHOR_HEADER, one_line(&self.author)),
            );
        }
        if ops.is_empty() {
            return Ok(0);
        }
        match self.send(cur, ops).await? {
            Ok(rev) => Ok(rev),
            Err(e) if e.is_wrong_revision() => {
                let moved = self.moved(cur, changes).await.unwrap_or_default();
                let keys: Vec<String> = moved.iter().map(|(k, _)| format!("`{k}`")).collect();
                if !keys.is_empty() {
                    return Err(CliError::Conflict(format!(
                        "bucket `{}`, key {}: changed by someone else since it was read; nothing written",
                        cur.name(),
                        keys.join(", ")
                    )));
                }
                let others = self.moved_anywhere(cur).await.unwrap_or_default();
                let which = if others.is_empty() { "some key".to_string() } else { format!("key {}", others.join(", ")) };
                Err(CliError::Conflict(format!(
                    "bucket `{}`, {which}: changed by someone else since it was read, and this config's validators read several keys together; nothing written",
                    cur.name()
                )))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends `ops` as one write (a single op) or one atomic batch, into the bucket `cur` was read
    /// from only. Revisions alone cannot tell: a bucket deleted and created again starts them
    /// again at 1, so a key there can have the very revision read here. Before the write, the
    /// bucket's creation time must still be [`Current::created`], else [`CliError::Replaced`]
    /// (exit 3, nothing written). After a write the server accepted, it is read again: another
    /// one means the bucket was replaced in the round trip between the check and the write,
    /// which the client cannot prevent, and the write may have gone to the new bucket:
    /// [`CliError::ReplacedAroundWrite`] (exit 1), never `Ok`. A store that does not say when a
    /// bucket was created (`None`) gets neither check. A check before the write that fails (no
    /// answer from the server) sends nothing: the store error, naming the keys of `ops`. The
    /// inner result is the store's answer to the write.
    pub async fn send(&self, cur: &Current, mut ops: Vec<WriteOp>) -> CliResult<Result<u64, StoreError>> {
        match self.check_same_bucket(cur).await {
            Ok(()) => {}
            Err(CliError::Store(e)) => {
                // The check got no answer (a frozen server, say): nothing was sent. The error
                // keeps its kind (and exit code) and names the keys the operator changed.
                let detail = match e.detail_text() {
                    Some(d) => format!("not applied, nothing was sent: the check that the bucket is still the one read failed; {d}"),
                    None => "not applied, nothing was sent: the check that the bucket is still the one read failed".to_string(),
                };
                let mut err = StoreError::new(e.kind().clone()).bucket(cur.name()).detail(detail);
                if let Some(keys) = self.op_keys(&ops) {
                    err = err.key(keys);
                }
                return Err(err.into());
            }
            Err(e) => return Err(e),
        }
        let result = match (ops.pop(), ops.is_empty()) {
            (None, _) => return Ok(Ok(0)),
            (Some(op), true) => cur.bucket.write(op).await,
            (Some(op), false) => {
                ops.push(op);
                cur.bucket.write_atomic(ops).await
            }
        };
        let Ok(revision) = result else { return Ok(result) };
        let after = match cur.bucket.info().await {
            Ok(info) => info.created,
            Err(e) => {
                return Err(CliError::ReplacedAroundWrite(format!(
                    "bucket `{}`: written at revision {revision}, but whether the bucket was deleted and created again meanwhile could not be checked ({e}); run `kvc show {}` to see what it holds",
                    cur.name(),
                    cur.name()
                )))
            }
        };
        if cur.created.is_some() && after.is_some() && after != cur.created {
            return Err(CliError::ReplacedAroundWrite(format!(
                "bucket `{}`: deleted and created again around this write (created {} when read, {} now): the write (revision {revision}) may have gone to the new bucket; run `kvc show {}` to see what it holds",
                cur.name(),
                created_text(cur.created),
                created_text(after),
                cur.name()
            )));
        }
        Ok(Ok(revision))
    }

    /// The keys `ops` write, as the operator knows them (relative to the prefix; an override key
    /// by the key it overrides; the guard key left out), for [`StoreError::key`]: several are
    /// joined so that they show as `` `a`, `b` ``. `None` when only the guard is written.
    fn op_keys(&self, ops: &[WriteOp]) -> Option<String> {
        let guard = self.full_key(GUARD_KEY);
        let override_prefix = self.full_key(OVERRIDE_PREFIX);
        let keys: Vec<&str> = ops
            .iter()
            .filter(|op| op.key != guard)
            .map(|op| {
                op.key
                    .strip_prefix(override_prefix.as_str())
                    .or_else(|| op.key.strip_prefix(self.prefix.as_str()))
                    .unwrap_or(&op.key)
            })
            .collect();
        (!keys.is_empty()).then(|| keys.join("`, `"))
    }

    /// [`CliError::Replaced`] when the bucket is no longer the incarnation `cur` was read from.
    pub async fn check_same_bucket(&self, cur: &Current) -> CliResult<()> {
        let now = cur.bucket.info().await?.created;
        same_bucket(cur.name(), cur.created, now, "it was read")
    }

    /// Every key of the config whose revision moved since `cur` was read, quoted.
    pub async fn moved_anywhere(&self, cur: &Current) -> CliResult<Vec<String>> {
        let entries = read_entries(cur.bucket.as_ref(), &self.prefix, WatchStart::LatestPerKey).await?;
        let mut out = Vec::new();
        for e in entries {
            if let Some(rel) = self.relative(&e.key) {
                if cur.entries.get(&rel).map(|c| c.revision) != Some(e.revision) {
                    out.push(format!("`{rel}`"));
                }
            }
        }
        Ok(out)
    }

    /// The changed keys whose revision moved since `cur` was read, with their entry now.
    pub async fn moved(&self, cur: &Current, changes: &[Change]) -> CliResult<Vec<(String, Option<Entry>)>> {
        let mut out = Vec::new();
        for c in changes {
            let now = cur.bucket.entry(&self.full_key(&c.key)).await?;
            let before = cur.entries.get(&c.key).map_or(0, |e| e.revision);
            if now.as_ref().map_or(0, |e| e.revision) != before {
                out.push((c.key.clone(), now));
            }
        }
        Ok(out)
    }

    /// A value as shown: JSON (a bare string becomes a JSON string), secrets redacted.
    pub fn show(&self, secret: bool, raw: &[u8]) -> Value {
        if secret && !self.reveal {
            return Value::String(REDACTED.into());
        }
        parse_stored(raw)
    }

    /// The diff between two states, only keys that differ, masked.
    pub fn diff(&self, cur: &Current, old: &BTreeMap<String, Bytes>, new: &BTreeMap<String, Bytes>) -> Vec<DiffRow> {
        let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
        keys.into_iter()
            .filter_map(|k| {
                let (o, n) = (old.get(k), new.get(k));
                let same = match (o, n) {
                    (Some(a), Some(b)) => parse_stored(a) == parse_stored(b),
                    (None, None) => true,
                    _ => false,
                };
                if same {
                    return None;
                }
                let secret = cur.is_secret(k);
                Some(DiffRow {
                    key: k.clone(),
                    old: o.map(|v| self.show(secret, v)),
                    new: n.map(|v| self.show(secret, v)),
                })
            })
            .collect()
    }

    /// The changes that turn the live state of `cur` into `target` (changed values and deletes).
    pub fn changes_to(&self, cur: &Current, target: &BTreeMap<String, Bytes>) -> Vec<Change> {
        let live = cur.live();
        let mut out = Vec::new();
        for (k, v) in target {
            if live.get(k).map(|old| parse_stored(old)) != Some(parse_stored(v)) {
                out.push(Change { key: k.clone(), new: Some(v.clone()) });
            }
        }
        for k in live.keys() {
            if !target.contains_key(k) {
                out.push(Change { key: k.clone(), new: None });
            }
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        out
    }

    /// Asks on stderr and reads a yes/no answer from stdin, unless `yes`.
    pub fn confirm(&mut self, question: &str, yes: bool) -> CliResult<()> {
        if yes {
            return Ok(());
        }
        self.printer.prompt(&format!("{question} [y/N] "));
        let mut line = String::new();
        let read = std::io::stdin().lock().read_line(&mut line).map_err(|e| CliError::Io(format!("reading the answer: {e}")))?;
        if read == 0 {
            return Err(CliError::Cancelled("cancelled: no answer on stdin (pass --yes to skip the question); nothing changed".into()));
        }
        match line.trim().to_ascii_lowercase().as_str() {
            "y" | "yes" => Ok(()),
            _ => Err(CliError::Cancelled("cancelled; nothing changed".into())),
        }
    }
}

/// [`CliError::Replaced`] when bucket `bucket`, created at `then` when something was read from
/// it, was created at `now` since: deleted and created again in between (`since` says when the
/// reading was: "it was read", "the document was read", ...). Either time unknown: `Ok`.
pub fn same_bucket(bucket: &str, then: Option<SystemTime>, now: Option<SystemTime>, since: &str) -> CliResult<()> {
    match (then, now) {
        (Some(then), Some(now)) if then != now => Err(CliError::Replaced(format!(
            "bucket `{bucket}`: deleted and created again since {since} (created {} then, {} now): its revisions started again at 1 and no longer identify the values read; nothing written",
            time_precise(then),
            time_precise(now)
        ))),
        _ => Ok(()),
    }
}

fn created_text(t: Option<SystemTime>) -> String {
    t.map_or_else(|| "at an unknown time".to_string(), time_precise)
}

/// Refuses a point in the past whose state the bucket may no longer hold: messages were removed
/// from the start of its stream (revisions `1..first`, `first` being the oldest retained one) that
/// may still have been in effect at `cutoff`. Without a max age, such removals (expired per-key
/// TTLs, history limits) only hide the states before the oldest retained message: a key's later
/// revisions are all still there, and the per-key checks of [`Ctx::state_at`] see what its
/// history limit dropped. With a max age `m`, once the bucket is older than `m` (or its age is
/// unknown), a removed message, written before `first` and aged out before `now`, may have been
/// in effect at any time before `min(first's time + m, now)`: and a key whose every revision aged
/// out leaves no trace at all. Not caught: a purge of the stream up to a sequence, or of a key's
/// last delete marker, that removed a key in effect after the oldest retained message.
/// `oldest` is the bucket's oldest retained message (any key), `entries` the retained messages
/// of the config's keys.
///
/// Also refused: a point the bucket never held. A revision past its last one (a typo, or a
/// revision of another bucket), and a time before the bucket was created: a bucket deleted and
/// created again holds nothing of the one before (its revisions start again at 1), so the config
/// then is unknown, not empty.
fn check_retained(bucket: &str, info: &BucketInfo, oldest: Option<Entry>, entries: &[Entry], cutoff: Cutoff, now: SystemTime) -> CliResult<()> {
    match cutoff {
        Cutoff::Revision(r) if r > info.last_revision => {
            return Err(CliError::NotFound(format!(
                "bucket `{bucket}`: no revision {r}: its last revision is {}",
                info.last_revision
            )));
        }
        Cutoff::Time(t) => {
            if let Some(created) = info.created.filter(|c| t < *c) {
                return Err(CliError::NotFound(format!(
                    "bucket `{bucket}`: the config {cutoff} is not held: the bucket was created at {}, after that time (a bucket deleted and created again keeps nothing of the one before)",
                    time_precise(created)
                )));
            }
        }
        Cutoff::Revision(_) => {}
    }
    let Some(first) = oldest else {
        if info.last_revision == 0 {
            return Ok(());
        }
        return Err(CliError::NotFound(format!(
            "bucket `{bucket}`: the config {cutoff} is no longer retained: none of its {} revisions is held any more",
            info.last_revision
        )));
    };
    if first.revision <= 1 {
        return Ok(());
    }
    let max_age = info.config.max_age.filter(|m| !m.is_zero());
    // The time of the cutoff: for a revision, that of the last retained message at or before it.
    let at = match cutoff {
        Cutoff::Time(t) => Some(t),
        Cutoff::Revision(r) => entries.iter().filter(|e| e.revision <= r).map(|e| e.created).max(),
    };
    // Messages age out only once the bucket is older than its max age: until then, what was
    // removed before `first` was removed by the history limit or a purge (see above).
    let aged = max_age.filter(|m| info.created.and_then(|c| c.checked_add(*m)).map_or(true, |t| t <= now));
    let horizon = match aged {
        Some(m) => first.created.checked_add(m).map_or(now, |t| t.min(now)),
        None => first.created,
    };
    if at.is_some_and(|t| t >= horizon) {
        return Ok(());
    }
    let why = match max_age {
        Some(m) => format!(" (the bucket keeps messages for {})", humantime::format_duration(m)),
        None => String::new(),
    };
    let removed = match first.revision - 1 {
        1 => "revision 1 was".to_string(),
        n => format!("revisions 1 to {n} were"),
    };
    Err(CliError::NotFound(format!(
        "bucket `{bucket}`: the config {cutoff} is no longer retained: {removed} removed{why}; the oldest retained is revision {} from {}",
        first.revision,
        time(first.created)
    )))
}

/// The bucket's oldest retained message (any key), `None` when it holds none: the server's
/// first revision, then one read of it.
async fn oldest_retained(bucket: &dyn Bucket) -> CliResult<Option<Entry>> {
    let probe = bucket.probe(">", u64::MAX).await?;
    if probe.first_revision > probe.last_revision {
        return Ok(None);
    }
    let mut watch = bucket.watch(">", WatchStart::FromRevision(probe.first_revision)).await?;
    let deadline = tokio::time::Instant::now() + READ_DEADLINE;
    let first = loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(e))) => break Some(e),
            Ok(Some(Err(e))) if e.is_transient() => continue,
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => break None,
            Err(_) => return Err(CliError::Other(format!("bucket `{}`: timed out reading its oldest retained revision", bucket.name()))),
        }
    };
    watch.close().await;
    Ok(first)
}

/// `\r` and `\n` are not allowed in a header value.
/// The keys of the map entry `key` belongs to, by the schema pattern it matches:
/// `tenants.*.limit` + `tenants.acme.limit` -> `tenants.acme.`.
fn entry_prefix(pattern: &str, key: &str) -> Option<String> {
    let n = pattern.split('.').position(|t| t == "*")? + 1;
    let tokens: Vec<&str> = key.split('.').take(n).collect();
    (tokens.len() == n).then(|| format!("{}.", tokens.join(".")))
}

fn one_line(s: &str) -> String {
    s.replace(['\r', '\n'], " ")
}

/// A stored value as JSON; a value that is not JSON is a bare string.
pub fn parse_stored(raw: &[u8]) -> Value {
    match serde_json::from_slice::<Value>(raw) {
        Ok(v) => v,
        Err(_) => Value::String(String::from_utf8_lossy(raw).into_owned()),
    }
}

/// Reads a value typed by the operator: JSON, or a bare string where the key holds strings (or
/// where nothing is known about it). Returns JSON bytes.
pub fn parse_input(field: Option<&FieldSchema>, text: &str) -> Result<Bytes, String> {
    let string_like = field.map_or(true, |f| f.ty.is_string_like());
    let as_string = || Bytes::from(serde_json::to_vec(&Value::String(text.to_string())).unwrap_or_default());
    match serde_json::from_str::<Value>(text) {
        Ok(v) => {
            if let Some(f) = field {
                if f.ty.check(&v).is_err() && string_like && f.ty.check(&Value::String(text.into())).is_ok() {
                    return Ok(as_string());
                }
            }
            Ok(Bytes::from(serde_json::to_vec(&v).unwrap_or_default()))
        }
        Err(e) if string_like => {
            let _ = e;
            Ok(as_string())
        }
        Err(e) => {
            let ty = field.map(|f| f.ty.to_string()).unwrap_or_else(|| "JSON".into());
            if field.is_some_and(|f| f.secret) {
                Err(format!("the value (redacted) is not JSON; expected {ty}"))
            } else {
                Err(format!("`{}` is not JSON ({e}); expected {ty}", crate::clip::clip_to(text, 60)))
            }
        }
    }
}

/// A point in the bucket's past.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cutoff {
    /// Everything up to and including this revision.
    Revision(u64),
    /// Everything stored at or before this time.
    Time(SystemTime),
}

impl Cutoff {
    fn includes(&self, e: &Entry) -> bool {
        match self {
            Cutoff::Revision(r) => e.revision <= *r,
            Cutoff::Time(t) => e.created <= *t,
        }
    }
}

impl std::fmt::Display for Cutoff {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cutoff::Revision(r) => write!(f, "at revision {r}"),
            Cutoff::Time(t) => write!(f, "at {}", humantime::format_rfc3339_seconds(*t)),
        }
    }
}

/// Parses `--time`: an RFC 3339 time (`2026-11-26T17:00:00Z`) or a duration ago (`10m`, `2h ago`).
pub fn parse_time(text: &str) -> Result<SystemTime, String> {
    let t = text.trim();
    if let Ok(time) = humantime::parse_rfc3339_weak(t) {
        return Ok(time);
    }
    let d = t.strip_suffix("ago").unwrap_or(t).trim();
    match humantime::parse_duration(d) {
        Ok(d) => SystemTime::now().checked_sub(d).ok_or_else(|| format!("`{t}`: too far in the past")),
        Err(_) => Err(format!("`{t}` is neither an RFC 3339 time (2026-11-26T17:00:00Z) nor a duration ago (10m, 2h)")),
    }
}

/// Every entry a watch on `<prefix>>` delivers until it is caught up.
pub async fn read_entries(bucket: &dyn Bucket, prefix: &str, start: WatchStart) -> CliResult<Vec<Entry>> {
    let pattern = if prefix.is_empty() { ">".to_string() } else { format!("{prefix}>") };
    let mut watch = bucket.watch(&pattern, start).await?;
    let mut out = Vec::new();
    if watch.initial_pending() == 0 {
        return Ok(out);
    }
    let deadline = tokio::time::Instant::now() + READ_DEADLINE;
    loop {
        match tokio::time::timeout_at(deadline, watch.next()).await {
            Ok(Some(Ok(e))) => {
                let done = e.delta == 0;
                out.push(e);
                if done {
                    return Ok(out);
                }
            }
            Ok(Some(Err(e))) if e.is_transient() => continue,
            Ok(Some(Err(e))) => return Err(e.into()),
            Ok(None) => return Ok(out),
            Err(_) => {
                return Err(CliError::Other(format!(
                    "bucket `{}`: timed out reading the keys under `{pattern}`",
                    bucket.name()
                )))
            }
        }
    }
}

/// A short age: `42s`, `5m`, `3h`, `2d`.
pub fn age(created: SystemTime) -> String {
    let secs = SystemTime::now().duration_since(created).map(|d| d.as_secs()).unwrap_or(0);
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// An RFC 3339 time to the second (for tables).
pub fn time(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

/// An RFC 3339 time to the nanosecond (for JSON: exact enough for `--time`).
pub fn time_precise(t: SystemTime) -> String {
    humantime::format_rfc3339_nanos(t).to_string()
}

/// A JSON value on one line, for tables and messages: bounded by
/// [`clip_value`](crate::clip::clip_value) (see [`crate::clip`] for what is and is not bounded).
pub fn compact(v: &Value) -> String {
    crate::clip::clip_value(&compact_whole(v))
}

/// A JSON value on one line, whole: for `kvc get` (the operator asked for this one value) and
/// the document `kvc edit` opens.
pub fn compact_whole(v: &Value) -> String {
    match v {
        Value::String(s) if s == REDACTED => REDACTED.to_string(),
        v => serde_json::to_string(v).unwrap_or_default(),
    }
}

/// A header of an entry.
pub fn header<'a>(e: &'a Entry, name: &str) -> Option<&'a str> {
    e.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// The diff as a table (`key`, `old`, `new`), or a line saying there is none.
pub fn diff_block(rows: &[DiffRow], old_title: &str, new_title: &str) -> Block {
    if rows.is_empty() {
        return Block::Line(Text::plain("no differences"));
    }
    let cell = |v: &Option<Value>, tone: Tone| match v {
        Some(v) => Text::toned(compact(v), tone),
        None => Text::toned("(absent)", Tone::Dim),
    };
    Block::Table {
        header: vec!["key".into(), old_title.into(), new_title.into()],
        rows: rows
            .iter()
            .map(|r| vec![Text::plain(r.key.clone()), cell(&r.old, Tone::Removed), cell(&r.new, Tone::Added)])
            .collect(),
    }
}

/// Prints a diff on stderr (before a question).
pub fn print_diff_note(printer: &mut Printer, rows: &[DiffRow]) {
    printer.note_block(&diff_block(rows, "old", "new"));
}

/// The result of a write command in `--json`: `{"bucket", "prefix", "dry_run", "changes":
/// [{"key", "old", "new"}], "revision"}` (`revision` is that of the last write, `null` when
/// nothing was written).
#[derive(Debug, Clone, Serialize)]
pub struct Written {
    /// The bucket.
    pub bucket: String,
    /// The config's prefix.
    pub prefix: String,
    /// `true` when nothing was written on purpose.
    pub dry_run: bool,
    /// What changed (or would change).
    pub changes: Vec<DiffRow>,
    /// The revision of the write, if one was made.
    pub revision: Option<u64>,
}

impl Written {
    /// The report of a write.
    pub fn report(self) -> crate::output::Report {
        let mut blocks = Vec::new();
        if !self.changes.is_empty() {
            blocks.push(diff_block(&self.changes, "old", "new"));
        }
        let line = match (self.changes.is_empty(), self.dry_run, self.revision) {
            (true, _, _) => "no changes; nothing written".to_string(),
            (false, true, _) => format!("dry run: {} change(s) validated, nothing written", self.changes.len()),
            (false, false, Some(rev)) => {
                format!("wrote {} key(s) to bucket `{}` at revision {rev}", self.changes.len(), self.bucket)
            }
            (false, false, None) => "nothing written".to_string(),
        };
        blocks.push(Block::Line(Text::plain(line)));
        crate::output::Report::new(&self, blocks)
    }
}

impl Ctx {
    /// The diff rows of changes against the live state of `cur`.
    pub fn change_rows(&self, cur: &Current, changes: &[Change]) -> Vec<DiffRow> {
        changes
            .iter()
            .map(|c| {
                let secret = cur.is_secret(&c.key);
                DiffRow {
                    key: c.key.clone(),
                    old: cur.live_entry(&c.key).map(|e| self.show(secret, &e.value)),
                    new: c.new.as_ref().map(|v| self.show(secret, v)),
                }
            })
            .collect()
    }

    /// Validates, then (unless `dry_run`) commits, and reports the diff.
    pub async fn apply(&self, cur: &Current, changes: Vec<Change>, dry_run: bool, reason: Option<&str>) -> CliResult<Written> {
        self.check(cur, &changes)?;
        let rows = self.change_rows(cur, &changes);
        let revision = if dry_run || changes.is_empty() { None } else { Some(self.commit(cur, &changes, reason).await?) };
        Ok(Written { bucket: cur.name().to_string(), prefix: self.prefix.clone(), dry_run, changes: rows, revision })
    }
}

#[cfg(test)]
mod tests {
    //! The race a real server cannot be made to hit on purpose: the bucket deleted and created
    //! again in the round trip between the check before a write and the write. [`Switching`]
    //! hands every call to its current bucket and switches to the new one right before the next
    //! write, as a NATS handle's writes go to whichever stream holds the bucket's name when they
    //! are stored.

    use std::sync::Mutex;

    use kv_config::store::{BucketConfig, MemoryStore, Probe, StoreResult, Watch};

    use super::*;

    /// Two incarnations of bucket `app`, created at the two times: every call goes to the
    /// current one; the next write first switches to the second.
    #[derive(Debug)]
    struct Switching {
        buckets: [Arc<dyn Bucket>; 2],
        created: [SystemTime; 2],
        current: Mutex<usize>,
        switch_before_next_write: Mutex<bool>,
    }

    impl Switching {
        fn now(&self) -> usize {
            *self.current.lock().unwrap()
        }
        fn bucket(&self) -> Arc<dyn Bucket> {
            self.buckets[self.now()].clone()
        }
        fn before_write(&self) {
            if std::mem::take(&mut *self.switch_before_next_write.lock().unwrap()) {
                *self.current.lock().unwrap() = 1;
            }
        }
    }

    #[async_trait::async_trait]
    impl Bucket for Switching {
        fn name(&self) -> &str {
            "app"
        }
        async fn info(&self) -> StoreResult<BucketInfo> {
            let mut info = self.bucket().info().await?;
            info.created = Some(self.created[self.now()]);
            Ok(info)
        }
        async fn entry(&self, key: &str) -> StoreResult<Option<Entry>> {
            self.bucket().entry(key).await
        }
        async fn entry_at(&self, key: &str, revision: u64) -> StoreResult<Option<Entry>> {
            self.bucket().entry_at(key, revision).await
        }
        async fn history(&self, key: &str) -> StoreResult<Vec<Entry>> {
            self.bucket().history(key).await
        }
        async fn keys(&self) -> StoreResult<Vec<String>> {
            self.bucket().keys().await
        }
        async fn watch(&self, pattern: &str, start: WatchStart) -> StoreResult<Watch> {
            self.bucket().watch(pattern, start).await
        }
        async fn probe(&self, pattern: &str, after: u64) -> StoreResult<Probe> {
            self.bucket().probe(pattern, after).await
        }
        async fn write(&self, op: WriteOp) -> StoreResult<u64> {
            self.before_write();
            self.bucket().write(op).await
        }
        async fn write_atomic(&self, ops: Vec<WriteOp>) -> StoreResult<u64> {
            self.before_write();
            self.bucket().write_atomic(ops).await
        }
    }

    /// `limits.max` at revision 1 in both incarnations (10 in the first, 99 in the second), the
    /// second set to take over at the next write; a context and the state read from the first.
    async fn replaced_at_next_write() -> (Arc<Switching>, Ctx, Current) {
        let store = Arc::new(MemoryStore::new());
        let mut buckets = Vec::new();
        for value in ["10", "99"] {
            let b = MemoryStore::new().create_bucket(&BucketConfig::new("app").history(10)).await.unwrap();
            assert_eq!(b.put("limits.max", value.into()).await.unwrap(), 1);
            buckets.push(b);
        }
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let switching = Arc::new(Switching {
            buckets: [buckets[0].clone(), buckets[1].clone()],
            created: [t0, t0 + Duration::from_secs(60)],
            current: Mutex::new(0),
            switch_before_next_write: Mutex::new(false),
        });
        let printer = Printer::new(Box::new(std::io::sink()), Box::new(std::io::sink()), false, false);
        let ctx = Ctx::new(store, Mode::Generic, "", printer);
        let entry = switching.entry("limits.max").await.unwrap().unwrap();
        let cur = Current {
            bucket: switching.clone(),
            created: switching.info().await.unwrap().created,
            schema: None,
            entries: [("limits.max".to_string(), entry)].into(),
            guard: None,
            overrides: BTreeMap::new(),
        };
        *switching.switch_before_next_write.lock().unwrap() = true;
        (switching, ctx, cur)
    }

    /// The write lands in the new bucket (its revision check passes: revision 1 there too). It
    /// cannot be stopped, but it must not be reported as done: exit 1, naming the bucket and
    /// saying the write may have gone to the new bucket.
    #[tokio::test]
    async fn a_write_that_raced_a_replacement_of_the_bucket_is_not_reported_done() {
        let (switching, ctx, cur) = replaced_at_next_write().await;
        let changes = [Change { key: "limits.max".into(), new: Some(Bytes::from_static(b"30")) }];
        let err = ctx.commit(&cur, &changes, None).await.unwrap_err();
        assert!(matches!(err, CliError::ReplacedAroundWrite(_)), "{err:?}");
        assert_eq!(err.exit_code(), crate::error::EXIT_ERROR);
        let msg = err.to_string();
        assert!(msg.contains("bucket `app`") && msg.contains("may have gone to the new bucket"), "{msg}");
        assert_eq!(switching.now(), 1, "the race happened");
    }

    /// A bucket replaced before the write: refused before anything is sent (exit 3).
    #[tokio::test]
    async fn a_write_to_a_bucket_replaced_since_it_was_read_sends_nothing() {
        let (switching, ctx, cur) = replaced_at_next_write().await;
        *switching.switch_before_next_write.lock().unwrap() = false;
        *switching.current.lock().unwrap() = 1;
        let changes = [Change { key: "limits.max".into(), new: None }];
        let err = ctx.commit(&cur, &changes, None).await.unwrap_err();
        assert!(matches!(err, CliError::Replaced(_)), "{err:?}");
        assert_eq!(err.exit_code(), crate::error::EXIT_CONFLICT);
        assert_eq!(switching.bucket().get("limits.max").await.unwrap().as_deref(), Some(&b"99"[..]), "the new bucket's value stands");
    }
}
