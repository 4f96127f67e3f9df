//! `#[kv(...)]` parsed once into typed attributes. Bad attributes are reported and skipped, so a
//! build shows every mistake at once (serde_derive's policy).

use proc_macro2::Span;
use quote::ToTokens;
use syn::meta::ParseNestedMeta;
use syn::{Expr, LitStr, Path};

use crate::case::RenameRule;
use crate::ctxt::Ctxt;
use crate::symbol::*;

/// A value set at most once; the second setting is a "duplicate" error at its key.
pub struct Attr<'c, T> {
    cx: &'c Ctxt,
    name: Symbol,
    value: Option<(Span, T)>,
}

impl<'c, T> Attr<'c, T> {
    fn none(cx: &'c Ctxt, name: Symbol) -> Self {
        Attr { cx, name, value: None }
    }

    fn set<A: ToTokens>(&mut self, key: A, value: T) {
        let span = key.to_token_stream().into_iter().next().map_or_else(Span::call_site, |t| t.span());
        if self.value.is_some() {
            self.cx.error_spanned_by(key, format!("duplicate kv attribute `{}`", self.name));
        } else {
            self.value = Some((span, value));
        }
    }

    fn get(self) -> Option<(Span, T)> {
        self.value
    }
}

/// `#[kv(...)]` on the struct.
pub struct Container {
    pub rename_all: Option<RenameRule>,
    pub validate: Option<Path>,
}

/// `#[kv(default)]` or `#[kv(default = expr)]`.
pub enum Default {
    Trait,
    Expr(Expr),
}

/// `#[kv(...)]` on a field; each present attribute keeps the span of its key.
pub struct Field {
    pub rename: Option<LitStr>,
    pub default: Option<(Span, Default)>,
    pub nested: Option<Span>,
    pub secret: Option<Span>,
    pub skip: Option<Span>,
    pub validate: Option<(Span, Path)>,
    /// `#[kv(validate_each = path)]`: run on every entry of a map field.
    pub validate_each: Option<(Span, Path)>,
    /// `#[kv(json)]`: a map field stored as one JSON object instead of one key per entry.
    pub json: Option<Span>,
}

fn path_name(path: &Path) -> String {
    path.to_token_stream().to_string().replace(' ', "")
}

/// Reads the value after `=` as a path: `validate = check_port` or `validate = "check_port"`.
fn parse_path(meta: &ParseNestedMeta) -> syn::Result<Path> {
    let value = meta.value()?;
    if value.peek(LitStr) {
        let lit: LitStr = value.parse()?;
        lit.parse::<Path>().map_err(|_| syn::Error::new(lit.span(), format!("expected a function path, found {:?}", lit.value())))
    } else {
        value.parse::<Path>()
    }
}

/// Skips the value of an unknown key so parsing can go on.
fn skip_value(meta: &ParseNestedMeta) -> syn::Result<()> {
    if meta.input.peek(syn::Token![=]) {
        meta.value()?.parse::<Expr>()?;
    } else if meta.input.peek(syn::token::Paren) {
        meta.parse_nested_meta(|inner| skip_value(&inner))?;
    }
    Ok(())
}

fn for_each_kv<F>(cx: &Ctxt, attrs: &[syn::Attribute], mut f: F)
where
    F: FnMut(&ParseNestedMeta) -> syn::Result<()>,
{
    for attr in attrs {
        if attr.path() != KV {
            continue;
        }
        if let syn::Meta::List(list) = &attr.meta {
            if list.tokens.is_empty() {
                continue;
            }
        }
        if let Err(err) = attr.parse_nested_meta(|meta| f(&meta)) {
            cx.syn_error(err);
        }
    }
}

impl Container {
    pub fn from_ast(cx: &Ctxt, input: &syn::DeriveInput) -> Self {
        let mut rename_all = Attr::none(cx, RENAME_ALL);
        let mut validate = Attr::none(cx, VALIDATE);
        for_each_kv(cx, &input.attrs, |meta| {
            if meta.path == RENAME_ALL {
                let lit: LitStr = meta.value()?.parse()?;
                match RenameRule::from_str(&lit.value()) {
                    Some(rule) => rename_all.set(&meta.path, rule),
                    None => cx.error_spanned_by(
                        &lit,
                        format!("unknown rename rule `rename_all = {:?}`, expected one of {}", lit.value(), RenameRule::names()),
                    ),
                }
            } else if meta.path == VALIDATE {
                let path = parse_path(meta)?;
                validate.set(&meta.path, path);
            } else {
                cx.error_spanned_by(&meta.path, format!("unknown kv container attribute `{}`", path_name(&meta.path)));
                skip_value(meta)?;
            }
            Ok(())
        });
        Container { rename_all: rename_all.get().map(|(_, r)| r), validate: validate.get().map(|(_, p)| p) }
    }
}

impl Field {
    pub fn from_ast(cx: &Ctxt, field: &syn::Field) -> Self {
        let mut rename = Attr::none(cx, RENAME);
        let mut default = Attr::none(cx, DEFAULT);
        let mut nested = Attr::none(cx, NESTED);
        let mut secret = Attr::none(cx, SECRET);
        let mut skip = Attr::none(cx, SKIP);
        let mut validate = Attr::none(cx, VALIDATE);
        let mut validate_each = Attr::none(cx, VALIDATE_EACH);
        let mut json = Attr::none(cx, JSON);
        for_each_kv(cx, &field.attrs, |meta| {
            if meta.path == RENAME {
                let lit: LitStr = meta.value()?.parse()?;
                rename.set(&meta.path, lit);
            } else if meta.path == DEFAULT {
                if meta.input.peek(syn::Token![=]) {
                    let expr: Expr = meta.value()?.parse()?;
                    default.set(&meta.path, Default::Expr(expr));
                } else {
                    default.set(&meta.path, Default::Trait);
                }
            } else if meta.path == NESTED {
                nested.set(&meta.path, ());
            } else if meta.path == SECRET {
                secret.set(&meta.path, ());
            } else if meta.path == SKIP {
                skip.set(&meta.path, ());
            } else if meta.path == VALIDATE {
                let path = parse_path(meta)?;
                validate.set(&meta.path, path);
            } else if meta.path == VALIDATE_EACH {
                let path = parse_path(meta)?;
                validate_each.set(&meta.path, path);
            } else if meta.path == JSON {
                json.set(&meta.path, ());
            } else {
                cx.error_spanned_by(&meta.path, format!("unknown kv field attribute `{}`", path_name(&meta.path)));
                skip_value(meta)?;
            }
            Ok(())
        });
        Field {
            rename: rename.get().map(|(_, l)| l),
            default: default.get(),
            nested: nested.get().map(|(s, _)| s),
            secret: secret.get().map(|(s, _)| s),
            skip: skip.get().map(|(s, _)| s),
            validate: validate.get(),
            validate_each: validate_each.get(),
            json: json.get().map(|(s, _)| s),
        }
    }
}

/// The doc comment of an item, one line per `///`, trimmed.
pub fn doc_of(attrs: &[syn::Attribute]) -> String {
    let mut lines = Vec::new();
    for attr in attrs {
        if !attr.path().is_ident("doc") {
            continue;
        }
        if let syn::Meta::NameValue(nv) = &attr.meta {
            if let Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) = &nv.value {
                let line = s.value();
                lines.push(line.strip_prefix(' ').unwrap_or(&line).trim_end().to_string());
            }
        }
    }
    lines.join("\n").trim().to_string()
}
