//! kv-config
pub mod store;
