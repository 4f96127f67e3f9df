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
    /// The type is syntactically `HashMap<K, V>` / `BTreeMap<K, V>` (any path prefix).
    pub map: Option<MapType<'a>>,
}

/// The parts of a `HashMap<K, V>` / `BTreeMap<K, V>` field type.
pub struct MapType<'a> {
    pub key: &'a syn::Type,
    pub value: &'a syn::Type,
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
                    map: map_type(&f.ty),
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

/// `HashMap<K, V, ...>` or `BTreeMap<K, V>` by the last path segment.
fn map_type(ty: &syn::Type) -> Option<MapType<'_>> {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => {
            let last = p.path.segments.last()?;
            if last.ident != "HashMap" && last.ident != "BTreeMap" {
                return None;
            }
            let syn::PathArguments::AngleBracketed(args) = &last.arguments else { return None };
            let mut types = args.args.iter().filter_map(|a| match a {
                syn::GenericArgument::Type(t) => Some(t),
                _ => None,
            });
            Some(MapType { key: types.next()?, value: types.next()? })
        }
        syn::Type::Group(g) => map_type(&g.elem),
        _ => None,
    }
}

/// `String` (any path prefix, no arguments).
pub fn is_string(ty: &syn::Type) -> bool {
    match ty {
        syn::Type::Path(p) if p.qself.is_none() => {
            p.path.segments.last().is_some_and(|s| s.ident == "String" && s.arguments.is_empty())
        }
        syn::Type::Group(g) => is_string(&g.elem),
        _ => false,
    }
}

impl<'a> Field<'a> {
    pub fn ty_span(&self) -> Span {
        self.ty.span()
    }

    /// A map field stored as one key per entry (not `#[kv(json)]`).
    pub fn dynamic_map(&self) -> Option<&MapType<'a>> {
        if self.attrs.json.is_some() {
            None
        } else {
            self.map.as_ref()
        }
    }
}
