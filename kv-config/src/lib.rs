//! Typed, live configuration shared through NATS JetStream Key/Value.
//!
//! Write `#[derive(KvConfig)]` on a config struct: every field becomes a key of a KV bucket
//! (nested structs become dotted keys such as `server.port`), stored as JSON so the `nats` CLI or
//! any client can read and write it. [`LiveConfig`] loads the struct in one pass over the bucket,
//! keeps an [`arc_swap`] snapshot current through a KV watcher, and writes changes back with
//! per-key revision checks, several keys in one atomic batch.
//!
//! ```
//! use kv_config::{KvConfig, LiveConfig, store::MemoryStore};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(KvConfig, Clone, Serialize, Deserialize)]
//! struct AppConfig {
//!     /// Log filter.
//!     #[kv(default = "info")]
//!     log_level: String,
//!     #[kv(nested)]
//!     server: Server,
//! }
//!
//! #[derive(KvConfig, Clone, Serialize, Deserialize)]
//! struct Server {
//!     #[kv(default = 8080)]
//!     port: u16,
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), kv_config::Error> {
//! // `NatsStore::new(async_nats::connect(url).await?)` for a real server.
//! let cfg = LiveConfig::<AppConfig>::builder(MemoryStore::new(), "app")
//!     .create_if_missing()
//!     .start()
//!     .await?;
//! assert_eq!(cfg.get().server.port, 8080); // one atomic load
//! cfg.update(|c| c.server.port = 9090).await?; // compare-and-swap on `server.port`
//! assert_eq!(cfg.get().server.port, 9090);
//! # Ok(()) }
//! ```
//!
//! # Attributes
//!
//! | attribute | where | meaning |
//! |---|---|---|
//! | `#[kv(rename_all = "kebab-case")]` | struct | key spelling of every field (serde's rule names) |
//! | `#[kv(validate = path)]` | struct | `fn(&Self) -> Result<(), impl Display>` run after decoding, for rules across fields |
//! | `#[kv(rename = "key")]` | field | this field's key |
//! | `#[kv(default)]` / `#[kv(default = expr)]` | field | value when the key is missing (`Default::default()` / `expr`; a string literal converts with `Into`) |
//! | `#[kv(nested)]` | field | the field's type derives `KvConfig`; its keys live under `field.` |
//! | `#[kv(secret)]` | field | redacted in `Debug`, errors and admin output; its default is never published |
//! | `#[kv(skip)]` | field | not a key; takes its default |
//! | `#[kv(validate = path)]` | field | `fn(&T) -> Result<(), impl Display>` run on decode and before every write |
//! | `#[kv(validate_each = path)]` | map field | `fn(&V) -> Result<(), impl Display>` run on every entry, reported at the entry's key |
//! | `#[kv(json)]` | map field | store the whole map as one JSON object key instead of one key per entry |
//!
//! Validators should be pure functions of what they are given: a change is checked before it is
//! written and again when the watcher applies it (field validators of the changed fields, then
//! the struct checks on the way up), and once more by a whole decode if anything was refused.
//! A large decode (4,096 keys or more: a start, a bucket read again) shares the struct's nested
//! sections, or a map's entries, between the calling thread and a second one (more on machines
//! with more cores, at most four), so validators and `Deserialize` impls may run on a thread
//! other than the caller's; the result and its errors, in field order, are those of one thread.
//! [`set_decode_threads`]`(1)` keeps every decode on the caller's thread.
//! A `#[kv(nested)]` field may be an `Arc<T>`: cloning the config then shares that section, and a
//! change elsewhere does not copy it (see [`KvConfig`]'s implementation for `Arc<T>`).
//!
//! `Option<T>` fields are optional (a missing key is `None`). The derive also implements `Debug`
//! (with secrets redacted), so do not derive `Debug` yourself. Enums of unit variants stored in one
//! key can `#[derive(KvValue)]` so the schema lists their names.
//!
//! # Map fields
//!
//! A field whose type is `HashMap<String, V>` or `BTreeMap<String, V>` (any path prefix) holds
//! one key per entry: `flags.<name>` holding `V` as JSON, or with `#[kv(nested)]` (`V` derives
//! `KvConfig`) the keys of each entry under `tenants.<name>.`. Other clients add and delete
//! entries one key at a time; [`LiveConfig::update`] writes the keys of entries that were added
//! or changed and deletes the keys of removed ones, each with its own revision check, and
//! [`Change::keys`] names every entry key that changed.
//!
//! ```
//! use std::collections::{BTreeMap, HashMap};
//! use kv_config::{KvConfig, RawValue, RawValues, Source};
//!
//! #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
//! struct Tenant {
//!     limit: u32,
//! }
//!
//! #[derive(KvConfig, Clone, serde::Serialize, serde::Deserialize)]
//! struct App {
//!     flags: HashMap<String, bool>,
//!     #[kv(nested)]
//!     tenants: BTreeMap<String, Tenant>,
//! }
//!
//! let keys: Vec<String> = App::schema().fields.into_iter().map(|f| f.key).collect();
//! assert_eq!(keys, ["flags.*", "tenants.*.limit"]);
//! let mut values = RawValues::new();
//! for (k, v) in [("flags.beta", "true"), ("tenants.acme.limit", "10")] {
//!     values.insert(k.into(), RawValue { value: v.into(), revision: 1, created: None });
//! }
//! let app = App::decode(&values, &Source::new("cfg", "")).unwrap();
//! assert!(app.flags["beta"]);
//! assert_eq!(app.tenants["acme"].limit, 10);
//! assert_eq!(app.encode().unwrap()["tenants.acme.limit"], "10");
//! ```
//!
//! - An absent map is empty: map fields are never required and take no `default` (with
//!   `#[kv(json)]` they are one ordinary key, and may have one).
//! - Entry names must be one NATS key token: non-empty, no `.`, only `[-/_=a-zA-Z0-9]`. Encoding
//!   a map with another name fails with an [`EncodeError`] naming the field and the name; a key
//!   in the bucket such as `flags.a.b` is refused like an invalid value (the last good value
//!   stays in effect and [`Status::rejected`] names the key).
//! - The schema publishes one [`FieldSchema`] per entry leaf, with a `*` token for the entry
//!   name (`flags.*`, `tenants.*.limit`); [`Schema::field_for`] finds the field of a concrete
//!   key. For a nested entry, `required` means required within each entry.
//! - `#[kv(validate = f)]` on a map field checks the whole map (it reads several keys, so writes
//!   carry the cross-check guard); `#[kv(validate_each = f)]` checks each entry of a map of
//!   values; `#[kv(secret)]` makes every entry of a map of values secret.
//! - The key type must be `String`, and no other field may have a key under the map's `field.`.
//!
//! # Values from other clients
//!
//! Values are JSON. A value that is not JSON is taken as a bare string where the field accepts a
//! string, so `nats kv put app log_level debug` works. An invalid value never crashes a service
//! or replaces the last good snapshot: it is logged with bucket, key and revision and shows in
//! [`LiveConfig::status`], and that key keeps its last good value until a valid one arrives.
//!
//! # Atomic multi-key writes
//!
//! [`LiveConfig::update`] writes several changed keys as one JetStream atomic batch (nats-server
//! 2.12+), all or nothing. Buckets that kv-config creates allow it; for an existing bucket run
//! `nats stream edit KV_<bucket> --allow-batch` or [`store::Store::enable_atomic_writes`].
//! Without it a multi-key update fails with
//! [`StoreErrorKind::AtomicWritesDisabled`](store::StoreErrorKind::AtomicWritesDisabled); there is
//! no silent non-atomic fallback.
//!
//! # Faults
//!
//! A handle never reports itself current while it may be behind: [`Status::stale`] says why
//! (disconnected, a server that does not answer, a stalled watch, a missing bucket), found by
//! probing the server whenever the watch is quiet for a [heartbeat](Builder::heartbeat). Stalled
//! watches are re-created from the last applied revision, a deleted and re-created bucket is
//! reloaded, and the last good snapshot stays in effect meanwhile. [`LiveConfig::update`]
//! documents what each error means for the bucket. `RELIABILITY.md` in the repository lists every
//! fault the tests inject and the figures measured.
//!
//! kv-config never logs a secret value, but async-nats logs whole messages, payloads included, at
//! `TRACE` level: keep `async_nats=trace` off where secrets flow.
#![deny(missing_docs, rustdoc::broken_intra_doc_links, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

mod config;
mod error;
mod exact;
mod feed;
pub mod json_schema;
mod lease;
mod live;
mod load;
pub mod overrides;
pub mod redact;
mod schema;
pub mod store;
mod values;
mod view;

pub use config::{set_decode_threads, DecodeError, EncodeError, Encoded, KeyError, KvConfig, Problem, RawValue, RawValues, Source};
pub use error::{Error, Result};
pub use json_schema::{JSON_SCHEMA_DRAFT, JSON_SCHEMA_KEY};
pub use kv_config_derive::{KvConfig, KvValue};
pub use lease::{Lease, LeaseError, LostReason};
pub use live::{ActiveOverride, Builder, CacheProblem, Change, LiveConfig, OnInvalid, Provenance, Snapshot, Stale, StaleReason, Status, Subscription};
pub use load::{load, Loaded};
pub use schema::{key_matches, FieldSchema, KvType, Schema, SchemaLookup, StringFormat, TypeDesc};
pub use view::{EXPIRES_HEADER, GUARD_KEY, OVERRIDE_PREFIX, RESERVED_PREFIX, SCHEMA_KEY};
/// Used by derived code; not part of the public API.
#[doc(hidden)]
#[allow(missing_docs, unreachable_pub)]
pub mod __private {
    pub use crate::config::{set_parallel_decode, Decoder, Encoder, Slot, Validator};
    pub use serde_json;
    pub use crate::schema::{FieldSchema, KvType, TypeDesc};
    use std::marker::PhantomData;

    /// Autoref probe: `(&&Probe::<T>::new()).__kv_describe()` uses `KvType` when `T` has it,
    /// and falls back to [`TypeDesc::Any`] otherwise.
    pub struct Probe<T: ?Sized>(PhantomData<T>);
    impl<T: ?Sized> Probe<T> {
        pub fn new() -> Self { Probe(PhantomData) }
    }
    impl<T: ?Sized> Default for Probe<T> {
        fn default() -> Self { Self::new() }
    }
    pub trait DescribeKnown { fn __kv_describe(&self) -> TypeDesc; }
    impl<T: KvType + ?Sized> DescribeKnown for &Probe<T> {
        fn __kv_describe(&self) -> TypeDesc { T::describe() }
    }
    pub trait DescribeAny { fn __kv_describe(&self) -> TypeDesc; }
    impl<T: ?Sized> DescribeAny for Probe<T> {
        fn __kv_describe(&self) -> TypeDesc { TypeDesc::Any }
    }

    pub fn join(prefix: &str, name: &str) -> String {
        let mut s = String::with_capacity(prefix.len() + name.len());
        s.push_str(prefix);
        s.push_str(name);
        s
    }

    /// The prefix of a nested map entry's keys: `tenants.` + `acme` -> `tenants.acme.`.
    pub fn entry_prefix(map_prefix: &str, name: &str) -> String {
        let mut s = String::with_capacity(map_prefix.len() + name.len() + 1);
        s.push_str(map_prefix);
        s.push_str(name);
        s.push('.');
        s
    }

    /// Debug stand-in for a `#[kv(secret)]` field.
    pub struct Redacted;
    impl core::fmt::Debug for Redacted {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result { f.write_str("\"<redacted>\"") }
    }
}
