//! Impls emitted next to compile errors, so code using the struct gets no follow-on errors.

use proc_macro2::TokenStream;
use quote::quote;

pub fn impls(ident: &syn::Ident, plain: bool) -> TokenStream {
    if !plain {
        return TokenStream::new();
    }
    let name = ident.to_string();
    quote! {
        #[allow(unused_variables, unreachable_code)]
        const _: () = {
            impl ::kv_config::KvConfig for #ident {
                const __KV_NAME: &'static str = #name;
                const __KV_VERSION: &'static str = "";
                fn __kv_fields(__kv_prefix: &str, __kv_out: &mut ::std::vec::Vec<::kv_config::__private::FieldSchema>) {
                    ::core::unreachable!()
                }
                fn __kv_encode(&self, __kv_prefix: &str, __kv_out: &mut ::kv_config::__private::Encoder)
                    -> ::core::result::Result<(), ::kv_config::EncodeError> {
                    ::core::unreachable!()
                }
                fn __kv_decode(__kv_prefix: &str, __kv_d: &mut ::kv_config::__private::Decoder<'_>)
                    -> ::core::option::Option<Self> {
                    ::core::unreachable!()
                }
            }
            impl ::core::fmt::Debug for #ident {
                fn fmt(&self, __kv_f: &mut ::core::fmt::Formatter<'_>) -> ::core::fmt::Result {
                    ::core::unreachable!()
                }
            }
        };
    }
}
