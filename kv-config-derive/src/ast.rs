//! The derive's model of a config struct, borrowed from the `DeriveInput`.

use proc_macro2::Span;
use syn::spanned::Spanned;

use crate::attr;
use crate::ctxt::Ctxt;

pub struct Input<'a> {
    pub ident: &'a syn::Ident,
    pub attrs: attr::Container,
    pub fields: Vec<Field<'a>>,
}

pub struct Field<'a> {
    pub ident: &'a syn::Ident,
    pub ty: &'a syn::Type,
    pub attrs: attr::Field,
    pub doc: String,
    /// The key token this field contributes (`port`, or the rename).
    pub key: String,
    /// Where to point at errors about the key: the rename literal or the field name.
    pub key_span: Span,
    /// `Option<...>`: missing means `None`.
    pub optional: bool,
}

impl<'a> Input<'a> {
    /// `None` if the input is not a struct with named fields (already reported).
    pub fn from_ast(cx: &Ctxt, input: &'a syn::DeriveInput) -> Option<Self> {
        let attrs = attr::Container::from_ast(cx, input);
        let named = match &input.data {
            syn::Data::Struct(syn::DataStruct { fields: syn::Fields::Named(named), .. }) => named,
            syn::Data::Struct(syn::DataStruct { fields: syn::Fields::Unnamed(f), .. }) => {
                cx.error_spanned_by(f, "#[derive(KvConfig)] needs named fields, one per key; tuple structs are not supported");
                return None;
            }
            syn::Data::Struct(syn::DataStruct { fields: syn::Fields::Unit, .. }) => {
                cx.error_spanned_by(&input.ident, "#[derive(KvConfig)] needs named fields, one per key; unit structs are not supported");
                return None;
            }
            syn::Data::Enum(e) => {
                cx.error_spanned_by(
                    e.enum_token,
                    "#[derive(KvConfig)] is for structs; for an enum of unit variants stored in one key use #[derive(KvValue)]",
                );
                return None;
            }
            syn::Data::Union(u) => {
                cx.error_spanned_by(u.union_token, "#[derive(KvConfig)] is for structs with named fields, not unions");
                return None;
            }
        };
        if !input.generics.params.is_empty() {
            cx.error_spanned_by(&input.generics, "#[derive(KvConfig)] does not support generic structs");
        }
        let fields = named
            .named
            .iter()
            .map(|f| {
                let ident = f.ident.as_ref().expect("named field");
                let field_attrs = attr::Field::from_ast(cx, f);
                let name = ident.to_string();
                let name = name.strip_prefix("r#").unwrap_or(&name).to_string();
                let (key, key_span) = match &field_attrs.rename {
                    Some(lit) => (lit.value(), lit.span()),
                    None => (attrs.rename_all.map_or(name.clone(), |r| r.apply_to_field(&name)), ident.span()),
                };
                Field {
                    ident,
                    ty: &f.ty,
                    doc: attr::doc_of(&f.attrs),
                    optional: is_option(&f.ty),
                    attrs: field_attrs,
                    key,
                    key_span,
                }
            })
            .collect();
        Some(Input { ident: &input.ident, attrs, fields })
    }
}

fn is_option(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => {
            p.path.segments.last().is_some_and(|s| s.ident == "Option" && !s.arguments.is_empty())
        }
        syn::Type::Group(g) => is_option(&g.elem),
        _ => false,
    }
}

impl Field<'_> {
    pub fn ty_span(&self) -> Span {
        self.ty.span()
    }
}
