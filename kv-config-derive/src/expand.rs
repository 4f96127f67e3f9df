//! Code generation for `#[derive(KvConfig)]`. Never reports user errors: `check` did.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;

use crate::ast::{Field, Input};
use crate::attr::Default;
use crate::ctxt::Ctxt;
use crate::{check, dummy};

pub fn derive(input: &syn::DeriveInput) -> TokenStream {
    let cx = Ctxt::new();
    let ast = Input::from_ast(&cx, input);
    if let Some(ast) = &ast {
        check::check(&cx, ast);
    }
    match (cx.check(), ast) {
        (Ok(()), Some(ast)) => expand(&ast),
        (Err(err), _) => {
            let mut out = err.to_compile_error();
            let is_struct = matches!(input.data, syn::Data::Struct(_));
            out.extend(dummy::impls(&input.ident, is_struct && input.generics.params.is_empty()));
            out
        }
        (Ok(()), None) => unreachable!("an input without a model always reports an error"),
    }
}

fn leaf_fields<'i, 'a>(input: &'i Input<'a>) -> impl Iterator<Item = (usize, &'i Field<'a>)> {
    input.fields.iter().enumerate().filter(|(_, f)| f.attrs.skip.is_none())
}

fn expand(input: &Input) -> TokenStream {
    let ident = input.ident;
    let name = ident.to_string();
    let schema = leaf_fields(input).map(|(_, f)| schema_entry(f));
    let encode = leaf_fields(input).map(|(_, f)| encode_field(f));
    let decode = decode_fields(input);
    let leaves = leaf_fields(input).map(|(_, f)| match f.attrs.nested.is_some() && f.dynamic_map().is_none() {
        true => {
            let ty = f.ty;
            quote!(<#ty as ::kv_config::KvConfig>::__KV_LEAVES)
        }
        false => quote!(1usize),
    });
    let build = input.fields.iter().enumerate().map(|(i, f)| {
        let member = f.ident;
        let var = format_ident!("__kv_f{}", i);
        if f.attrs.skip.is_some() {
            let value = default_value(f);
            quote!(#member: #value)
        } else {
            quote!(#member: #var?)
        }
    });
    let struct_check_of = |value: TokenStream| {
        input.attrs.validate.as_ref().map(|path| {
            quote_spanned! {path_span(path)=>
                __kv_d.check_struct(__kv_prefix, #value, &|__kv_v: &Self| {
                    #path(__kv_v).map_err(|__kv_e| ::std::string::ToString::to_string(&__kv_e))
                })?;
            }
        })
    };
    let struct_check = struct_check_of(quote!(&__kv_value));
    let struct_recheck = struct_check_of(quote!(&*self));
    let apply = leaf_fields(input).map(|(_, f)| apply_field(f));
    // A validator reads several keys when it is on the struct, on a nested field, or on a whole
    // map stored one key per entry.
    let has_own_check = input.attrs.validate.is_some()
        || leaf_fields(input).any(|(_, f)| {
            (f.attrs.nested.is_some() || f.dynamic_map().is_some()) && f.attrs.validate.is_some()
        });
    let nested_checks = leaf_fields(input).filter(|(_, f)| f.attrs.nested.is_some()).map(|(_, f)| {
        let ty = match f.dynamic_map() {
            Some(map) => map.value,
            None => f.ty,
        };
        quote!(|| <#ty as ::kv_config::KvConfig>::__KV_CROSS_CHECKS)
    });
    let debug_fields = input.fields.iter().filter(|f| f.attrs.skip.is_none()).map(|f| {
        let member = f.ident;
        let label = member.to_string();
        let label = label.strip_prefix("r#").unwrap_or(&label).to_string();
        if f.attrs.secret.is_some() {
            quote!(.field(#label, &::kv_config::__private::Redacted))
        } else {
            quote!(.field(#label, &self.#member))
        }
    });
    quote! {
        #[allow(non_upper_case_globals, unused_qualifications, clippy::all)]
        const _: () = {
            #[automatically_derived]
            impl ::kv_config::KvConfig for #ident {
                const __KV_NAME: &'static str = #name;
                const __KV_VERSION: &'static str = ::core::env!("CARGO_PKG_VERSION");
                const __KV_CROSS_CHECKS: bool = #has_own_check #(#nested_checks)*;
                const __KV_LEAVES: usize = 0usize #(+ #leaves)*;

                fn __kv_fields(
                    __kv_prefix: &str,
                    __kv_out: &mut ::std::vec::Vec<::kv_config::__private::FieldSchema>,
                ) {
                    #(#schema)*
                }

                fn __kv_encode(
                    &self,
                    __kv_prefix: &str,
                    __kv_out: &mut ::kv_config::__private::Encoder,
                ) -> ::core::result::Result<(), ::kv_config::EncodeError> {
                    #(#encode)*
                    ::core::result::Result::Ok(())
                }

                fn __kv_decode(
                    __kv_prefix: &str,
                    __kv_d: &mut ::kv_config::__private::Decoder<'_>,
                ) -> ::core::option::Option<Self> {
                    #decode
                    let __kv_value = Self { #(#build),* };
                    #struct_check
                    ::core::option::Option::Some(__kv_value)
                }

                #[allow(unused_mut)]
                fn __kv_apply(
                    &mut self,
                    __kv_prefix: &str,
                    __kv_d: &mut ::kv_config::__private::Decoder<'_>,
                ) -> ::core::option::Option<()> {
                    let mut __kv_ok = true;
                    #(#apply)*
                    if !__kv_ok {
                        return ::core::option::Option::None;
                    }
                    #struct_recheck
                    ::core::option::Option::Some(())
                }
            }

            #[automatically_derived]
            impl ::core::fmt::Debug for #ident {
                fn fmt(&self, __kv_f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    __kv_f.debug_struct(#name) #(#debug_fields)* .finish()
                }
            }
        };
    }
}

fn path_span(path: &syn::Path) -> proc_macro2::Span {
    syn::spanned::Spanned::span(path)
}

fn key_expr(f: &Field) -> TokenStream {
    let key = &f.key;
    if f.attrs.nested.is_some() {
        let dotted = format!("{key}.");
        quote!(::kv_config::__private::join(__kv_prefix, #dotted))
    } else {
        quote!(::kv_config::__private::join(__kv_prefix, #key))
    }
}

/// The value of a missing key, as an expression of the field's type.
fn default_value(f: &Field) -> TokenStream {
    let ty = f.ty;
    match &f.attrs.default {
        Some((_, Default::Expr(syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. })))) => {
            quote_spanned!(s.span()=> ::core::convert::Into::<#ty>::into(#s))
        }
        Some((_, Default::Expr(expr))) => {
            let span = syn::spanned::Spanned::span(expr);
            quote_spanned!(span=> { let __kv_d: #ty = #expr; __kv_d })
        }
        Some((span, Default::Trait)) => quote_spanned!(*span=> <#ty as ::core::default::Default>::default()),
        None if f.optional => quote!({ let __kv_d: #ty = ::core::option::Option::None; __kv_d }),
        None => quote_spanned!(f.ty_span()=> <#ty as ::core::default::Default>::default()),
    }
}

/// Optional fields, fields with a default, and maps (absent = empty) need no key.
fn has_default(f: &Field) -> bool {
    f.attrs.default.is_some() || f.optional || f.map.is_some()
}

/// `field.` under the prefix: where a map field's entries live.
fn map_prefix_expr(f: &Field) -> TokenStream {
    let dotted = format!("{}.", f.key);
    quote!(::kv_config::__private::join(__kv_prefix, #dotted))
}

fn map_schema_entry(f: &Field, value: &syn::Type) -> TokenStream {
    if f.attrs.nested.is_some() {
        let pattern = format!("{}.*.", f.key);
        return quote_spanned! {value.span()=>
            <#value as ::kv_config::KvConfig>::__kv_fields(&::kv_config::__private::join(__kv_prefix, #pattern), __kv_out);
        };
    }
    let pattern = format!("{}.*", f.key);
    let doc = &f.doc;
    let secret = f.attrs.secret.is_some();
    quote! {
        __kv_out.push(::kv_config::__private::FieldSchema {
            key: ::kv_config::__private::join(__kv_prefix, #pattern),
            ty: {
                #[allow(unused_imports)]
                use ::kv_config::__private::{DescribeAny as _, DescribeKnown as _};
                (&&::kv_config::__private::Probe::<#value>::new()).__kv_describe()
            },
            doc: ::std::string::String::from(#doc),
            default: ::core::option::Option::None,
            required: false,
            secret: #secret,
        });
    }
}

fn map_encode(f: &Field, value: &syn::Type) -> TokenStream {
    let member = f.ident;
    let key = &f.key;
    let nested = f.attrs.nested.is_some();
    let write = if nested {
        quote_spanned!(value.span()=> <#value as ::kv_config::KvConfig>::__kv_encode(__kv_v, &__kv_key, __kv_out)?;)
    } else {
        quote!(__kv_out.leaf(__kv_key, __kv_v)?;)
    };
    quote! {
        for (__kv_name, __kv_v) in &self.#member {
            let __kv_key = __kv_out.entry_key(__kv_prefix, #key, __kv_name, #nested)?;
            #write
        }
    }
}

fn map_decode(i: usize, f: &Field, value: &syn::Type) -> TokenStream {
    let ty = f.ty;
    let var = format_ident!("__kv_f{}", i);
    let prefix = map_prefix_expr(f);
    let nested = f.attrs.nested.is_some();
    let secret = f.attrs.secret.is_some();
    let validate = validator(f.attrs.validate.as_ref(), ty);
    let entry = map_entry(f, value);
    quote! {
        let #var: ::core::option::Option<#ty> = {
            let __kv_map_prefix = #prefix;
            let mut __kv_map: #ty = ::core::default::Default::default();
            let mut __kv_ok = true;
            let __kv_names = __kv_d.map_entries(&__kv_map_prefix, #nested);
            let __kv_decoded = __kv_d.entries(
                &__kv_names,
                &|__kv_name: &str, __kv_d: &mut ::kv_config::__private::Decoder<'_>| #entry,
            );
            for (__kv_name, __kv_v) in __kv_names.into_iter().zip(__kv_decoded) {
                match __kv_v {
                    ::core::option::Option::Some(__kv_v) => {
                        __kv_map.insert(__kv_name, __kv_v);
                    }
                    ::core::option::Option::None => __kv_ok = false,
                }
            }
            if __kv_ok {
                __kv_d
                    .validate_map(__kv_map_prefix.trim_end_matches('.'), &__kv_map, #validate, #secret)
                    .map(|()| __kv_map)
            } else {
                ::core::option::Option::None
            }
        };
    }
}

/// One map entry decoded: `Option<V>` from `__kv_map_prefix` and `__kv_name`.
fn map_entry(f: &Field, value: &syn::Type) -> TokenStream {
    if f.attrs.nested.is_some() {
        quote_spanned! {value.span()=>
            <#value as ::kv_config::KvConfig>::__kv_decode(&::kv_config::__private::entry_prefix(&__kv_map_prefix, &__kv_name), __kv_d)
        }
    } else {
        let secret = f.attrs.secret.is_some();
        let each = validator(f.attrs.validate_each.as_ref(), value);
        quote! {
            __kv_d.leaf::<#value>(&__kv_map_prefix, &__kv_name, #secret, ::core::option::Option::None, #each)
        }
    }
}

/// The statements of `__kv_apply` for one field: decode it again only if a key of it changed
/// (for a map, only the changed entries), and clear `__kv_ok` on any refusal.
fn apply_field(f: &Field) -> TokenStream {
    let member = f.ident;
    let ty = f.ty;
    let validate = validator(f.attrs.validate.as_ref(), ty);
    if let Some(map) = f.dynamic_map() {
        let value = map.value;
        let dotted = format!("{}.", f.key);
        let prefix = map_prefix_expr(f);
        let nested = f.attrs.nested.is_some();
        let secret = f.attrs.secret.is_some();
        let entry = map_entry(f, value);
        let fields = if nested {
            quote_spanned! {value.span()=>
                ::core::option::Option::Some(
                    <#value as ::kv_config::KvConfig>::__kv_fields
                        as fn(&str, &mut ::std::vec::Vec<::kv_config::__private::FieldSchema>),
                )
            }
        } else {
            quote!(::core::option::Option::None)
        };
        return quote! {
            if __kv_d.touched_under(__kv_prefix, #dotted) {
                let __kv_map_prefix = #prefix;
                match __kv_d.touched_entries(&__kv_map_prefix, #nested) {
                    ::core::option::Option::None => __kv_ok = false,
                    ::core::option::Option::Some(__kv_names) => {
                        for __kv_name in __kv_names {
                            match __kv_d.entry_exists(&__kv_map_prefix, &__kv_name, #fields) {
                                ::core::option::Option::None => __kv_ok = false,
                                ::core::option::Option::Some(false) => {
                                    self.#member.remove(__kv_name.as_str());
                                }
                                ::core::option::Option::Some(true) => match #entry {
                                    ::core::option::Option::Some(__kv_v) => {
                                        self.#member.insert(__kv_name, __kv_v);
                                    }
                                    ::core::option::Option::None => __kv_ok = false,
                                },
                            }
                        }
                        if __kv_ok
                            && __kv_d
                                .validate_map(__kv_map_prefix.trim_end_matches('.'), &self.#member, #validate, #secret)
                                .is_none()
                        {
                            __kv_ok = false;
                        }
                    }
                }
            }
        };
    }
    if f.attrs.nested.is_some() {
        let dotted = format!("{}.", f.key);
        let key = key_expr(f);
        return quote_spanned! {f.ty_span()=>
            if __kv_d.touched_under(__kv_prefix, #dotted) {
                let __kv_key = #key;
                if <#ty as ::kv_config::KvConfig>::__kv_apply(&mut self.#member, &__kv_key, __kv_d).is_none()
                    || __kv_d
                        .validate(__kv_key.trim_end_matches('.'), ::core::option::Option::None, &self.#member, #validate)
                        .is_none()
                {
                    __kv_ok = false;
                }
            }
        };
    }
    let name = &f.key;
    let leaf = leaf_expr(f);
    quote! {
        if __kv_d.touched(__kv_prefix, #name) {
            match #leaf {
                ::core::option::Option::Some(__kv_v) => self.#member = __kv_v,
                ::core::option::Option::None => __kv_ok = false,
            }
        }
    }
}

fn validator(attr: Option<&(proc_macro2::Span, syn::Path)>, ty: &syn::Type) -> TokenStream {
    match attr {
        Some((_, path)) => quote_spanned! {path_span(path)=>
            ::core::option::Option::Some(&|__kv_v: &#ty| {
                #path(__kv_v).map_err(|__kv_e| ::std::string::ToString::to_string(&__kv_e))
            })
        },
        None => quote!(::core::option::Option::None),
    }
}

fn schema_entry(f: &Field) -> TokenStream {
    if let Some(map) = f.dynamic_map() {
        return map_schema_entry(f, map.value);
    }
    let ty = f.ty;
    let key = key_expr(f);
    if f.attrs.nested.is_some() {
        return quote_spanned! {f.ty_span()=>
            <#ty as ::kv_config::KvConfig>::__kv_fields(&#key, __kv_out);
        };
    }
    let doc = &f.doc;
    let secret = f.attrs.secret.is_some();
    let required = !has_default(f);
    let default = if f.attrs.default.is_some() && !secret {
        let value = default_value(f);
        quote!(::kv_config::__private::serde_json::to_value(&#value).ok())
    } else {
        quote!(::core::option::Option::None)
    };
    quote! {
        __kv_out.push(::kv_config::__private::FieldSchema {
            key: #key,
            ty: {
                #[allow(unused_imports)]
                use ::kv_config::__private::{DescribeAny as _, DescribeKnown as _};
                (&&::kv_config::__private::Probe::<#ty>::new()).__kv_describe()
            },
            doc: ::std::string::String::from(#doc),
            default: #default,
            required: #required,
            secret: #secret,
        });
    }
}

fn encode_field(f: &Field) -> TokenStream {
    if let Some(map) = f.dynamic_map() {
        return map_encode(f, map.value);
    }
    let ty = f.ty;
    let member = f.ident;
    let key = key_expr(f);
    if f.attrs.nested.is_some() {
        quote_spanned!(f.ty_span()=> <#ty as ::kv_config::KvConfig>::__kv_encode(&self.#member, &#key, __kv_out)?;)
    } else if f.optional {
        quote!(__kv_out.optional(#key, &self.#member)?;)
    } else {
        quote!(__kv_out.leaf(#key, &self.#member)?;)
    }
}

/// The statements that decode every field into `__kv_f<i>`, in field order. With two or more
/// nested sections, each section's decode is a job that `Decoder::parallel` may share between
/// two threads (a large decode); otherwise each job runs here, in field order.
fn decode_fields(input: &Input) -> TokenStream {
    let is_section = |f: &Field| f.attrs.nested.is_some() && f.dynamic_map().is_none();
    let sections: Vec<(usize, &Field)> = leaf_fields(input).filter(|(_, f)| is_section(f)).collect();
    if sections.len() < 2 {
        let each = leaf_fields(input).map(|(i, f)| decode_field(i, f));
        return quote!(#(#each)*);
    }
    let slot = |i: usize| format_ident!("__kv_s{}", i);
    let slots = sections.iter().map(|(i, f)| {
        let (slot, ty) = (slot(*i), f.ty);
        quote!(let #slot = ::kv_config::__private::Slot::<#ty>::default();)
    });
    let arms = sections.iter().enumerate().map(|(job, (i, f))| {
        let (slot, var, decode) = (slot(*i), format_ident!("__kv_f{}", i), decode_field(*i, f));
        quote!(#job => { #decode #slot.put(#var, __kv_d); })
    });
    let weights = sections.iter().map(|(_, f)| {
        let ty = f.ty;
        quote!(<#ty as ::kv_config::KvConfig>::__KV_LEAVES)
    });
    let mut job = 0usize;
    let fields = leaf_fields(input).map(|(i, f)| {
        if !is_section(f) {
            return decode_field(i, f);
        }
        let (slot, var, ty) = (slot(i), format_ident!("__kv_f{}", i), f.ty);
        let this = job;
        job += 1;
        quote! {
            if !__kv_ran {
                __kv_job(#this, __kv_d);
            }
            let #var: ::core::option::Option<#ty> = #slot.take(__kv_d);
        }
    });
    quote! {
        #(#slots)*
        let __kv_job = |__kv_job_i: usize, __kv_d: &mut ::kv_config::__private::Decoder<'_>| match __kv_job_i {
            #(#arms)*
            _ => {}
        };
        let __kv_ran = __kv_d.parallel(&[#(#weights),*], &__kv_job);
        #(#fields)*
    }
}

fn decode_field(i: usize, f: &Field) -> TokenStream {
    if let Some(map) = f.dynamic_map() {
        return map_decode(i, f, map.value);
    }
    let ty = f.ty;
    let var = format_ident!("__kv_f{}", i);
    let key = key_expr(f);
    let validate = validator(f.attrs.validate.as_ref(), ty);
    if f.attrs.nested.is_some() {
        return quote_spanned! {f.ty_span()=>
            let #var: ::core::option::Option<#ty> = {
                let __kv_key = #key;
                match <#ty as ::kv_config::KvConfig>::__kv_decode(&__kv_key, __kv_d) {
                    ::core::option::Option::Some(__kv_v) => __kv_d
                        .validate(__kv_key.trim_end_matches('.'), ::core::option::Option::None, &__kv_v, #validate)
                        .map(|()| __kv_v),
                    ::core::option::Option::None => ::core::option::Option::None,
                }
            };
        };
    }
    let leaf = leaf_expr(f);
    quote! {
        let #var: ::core::option::Option<#ty> = #leaf;
    }
}

/// A leaf field decoded: `Option<T>` from the key `__kv_prefix` + the field's key.
fn leaf_expr(f: &Field) -> TokenStream {
    let ty = f.ty;
    let validate = validator(f.attrs.validate.as_ref(), ty);
    let secret = f.attrs.secret.is_some();
    let default = if has_default(f) {
        let value = default_value(f);
        quote!(::core::option::Option::Some(&|| -> #ty { #value }))
    } else {
        quote!(::core::option::Option::None)
    };
    let name = &f.key;
    quote!(__kv_d.leaf::<#ty>(__kv_prefix, #name, #secret, #default, #validate))
}
