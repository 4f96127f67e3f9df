//! `kvc`: a typed admin CLI for kv-config settings (work in progress).
#![deny(missing_docs)]
