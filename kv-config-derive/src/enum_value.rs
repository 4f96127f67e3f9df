//! `#[derive(KvValue)]`: the schema of an enum of unit variants (one key, one of these names).

use proc_macro2::TokenStream;
use quote::quote;
use syn::LitStr;

use crate::case::RenameRule;
use crate::ctxt::Ctxt;
use crate::symbol::{RENAME, RENAME_ALL, SERDE};

/// Reads `rename` / `rename_all` out of `#[serde(...)]`, ignoring every other serde key.
fn serde_rename(cx: &Ctxt, attrs: &[syn::Attribute], key: crate::symbol::Symbol) -> Option<String> {
    let mut found = None;
    for attr in attrs.iter().filter(|a| a.path() == SERDE) {
        let res = attr.parse_nested_meta(|meta| {
            if meta.path == key {
                let lit: LitStr = meta.value()?.parse()?;
                found = Some(lit.value());
            } else if meta.input.peek(syn::Token![=]) {
                meta.value()?.parse::<syn::Expr>()?;
            } else if meta.input.peek(syn::token::Paren) {
                let _ = meta.input.parse::<proc_macro2::Group>();
            }
            Ok(())
        });
        if let Err(e) = res {
            cx.syn_error(e);
        }
    }
    found
}

pub fn derive(input: &syn::DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let ident = &input.ident;
    let mut names = Vec::new();
    match &input.data {
        syn::Data::Enum(e) => {
            let rule = serde_rename(&cx, &input.attrs, RENAME_ALL).and_then(|r| RenameRule::from_str(&r));
            for v in &e.variants {
                if !matches!(v.fields, syn::Fields::Unit) {
                    cx.error_spanned_by(&v.fields, "#[derive(KvValue)] supports unit variants only; a variant with data is stored as a nested object, use a struct");
                    continue;
                }
                let name = serde_rename(&cx, &v.attrs, RENAME).unwrap_or_else(|| {
                    let s = v.ident.to_string();
                    rule.map_or(s.clone(), |r| r.apply_to_variant(&s))
                });
                names.push(name);
            }
        }
        _ => cx.error_spanned_by(ident, "#[derive(KvValue)] is for enums of unit variants; derive KvConfig for structs"),
    }
    if let Err(e) = cx.check() {
        return e.to_compile_error();
    }
    let (impl_generics, ty_generics, where_clause) = input.generics.split_for_impl();
    quote! {
        #[automatically_derived]
        impl #impl_generics ::kv_config::KvType for #ident #ty_generics #where_clause {
            fn describe() -> ::kv_config::TypeDesc {
                ::kv_config::TypeDesc::Enum {
                    variants: ::std::vec![#(::std::string::String::from(#names)),*],
                }
            }
        }
    }
}
