//! kv-config
mod config;
mod error;
mod live;
mod load;
mod schema;
pub mod store;
mod view;

pub use config::{DecodeError, EncodeError, Encoded, KeyError, KvConfig, Problem, RawValue, RawValues, Source};
pub use error::{Error, Result};
pub use kv_config_derive::{KvConfig, KvValue};
pub use live::{Builder, Change, LiveConfig, OnInvalid, Snapshot, Status, Subscription};
pub use load::{load, Loaded};
pub use schema::{FieldSchema, KvType, Schema, TypeDesc};
pub use view::{RESERVED_PREFIX, SCHEMA_KEY};
#[doc(hidden)]
pub mod __private {
    pub use crate::config::{Decoder, Encoder};
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

    /// Debug stand-in for a `#[kv(secret)]` field.
    pub struct Redacted;
    impl core::fmt::Debug for Redacted {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result { f.write_str("\"<redacted>\"") }
    }
}
