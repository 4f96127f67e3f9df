//! Derive macros of [kv-config](https://docs.rs/kv-config): `#[derive(KvConfig)]` and
//! `#[derive(KvValue)]`. Use them through the `kv-config` crate, which re-exports both.
//!
//! Layout follows serde_derive and thiserror: `attr` parses `#[kv(...)]` into typed attributes,
//! `ast` builds the field model, `check` holds the cross-field rules, `expand` and
//! `enum_value` generate code, `dummy` emits impls that keep rustc quiet after an error.
//! Every user mistake is collected in a `ctxt::Ctxt` so one build reports all of them.

mod ast;
mod attr;
mod case;
mod check;
mod ctxt;
mod dummy;
mod enum_value;
mod expand;
mod symbol;

use proc_macro::TokenStream;
use syn::{parse_macro_input, DeriveInput};

/// Derives `kv_config::KvConfig` (and `Debug`, with secrets redacted) for a struct with named
/// fields. See the `kv-config` crate for the attributes.
#[proc_macro_derive(KvConfig, attributes(kv))]
pub fn derive_kv_config(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    expand::derive(&input).into()
}

/// Derives `kv_config::KvType` for an enum of unit variants, so its schema lists the variant
/// names (honouring `#[serde(rename_all)]` and `#[serde(rename)]`).
#[proc_macro_derive(KvValue)]
pub fn derive_kv_value(input: TokenStream) -> TokenStream {
    let input = parse_macro_input!(input as DeriveInput);
    enum_value::derive(&input).into()
}
