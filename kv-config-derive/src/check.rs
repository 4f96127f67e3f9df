//! Cross-field rules: checks that need more than one attribute or field at a time.

use std::collections::HashMap;

use crate::ast::Input;
use crate::ctxt::Ctxt;

pub fn check(cx: &Ctxt, input: &Input) {
    check_keys(cx, input);
    check_duplicate_keys(cx, input);
    check_conflicts(cx, input);
}

/// Every key token follows the NATS key rules: `[-/_=.a-zA-Z0-9]`, no empty token.
fn check_keys(cx: &Ctxt, input: &Input) {
    for f in input.fields.iter().filter(|f| f.attrs.skip.is_none()) {
        let bad_char = f.key.chars().find(|c| !(c.is_ascii_alphanumeric() || "-/_=.".contains(*c)));
        if let Some(c) = bad_char {
            cx.error_at(
                f.key_span,
                format!("key `{}` is not a valid NATS key: `{c}` is not allowed; use [-/_=.a-zA-Z0-9] or #[kv(rename = \"...\")]", f.key),
            );
        } else if f.key.split('.').next() == Some("__kvconfig") {
            cx.error_at(f.key_span, format!("key `{}` is reserved: keys under `__kvconfig.` hold kv-config's own metadata", f.key));
        } else if f.key.is_empty() || f.key.split('.').any(str::is_empty) {
            cx.error_at(
                f.key_span,
                format!("key `{}` is not a valid NATS key: it has an empty token (leading, trailing or double dot)", f.key),
            );
        }
    }
}

/// Two fields may not map to one key.
fn check_duplicate_keys(cx: &Ctxt, input: &Input) {
    let mut seen: HashMap<&str, &syn::Ident> = HashMap::new();
    for f in input.fields.iter().filter(|f| f.attrs.skip.is_none()) {
        if let Some(first) = seen.insert(&f.key, f.ident) {
            cx.error_at(f.key_span, format!("key `{}` is used by two fields, `{}` and `{}`", f.key, first, f.ident));
        }
    }
}

/// Attribute combinations that contradict each other.
fn check_conflicts(cx: &Ctxt, input: &Input) {
    for f in &input.fields {
        let a = &f.attrs;
        if let (Some(_), Some((span, _))) = (a.nested, &a.default) {
            cx.error_at(*span, "#[kv(default)] conflicts with #[kv(nested)]: a nested struct takes its defaults from its own fields");
        }
        if let (Some(_), Some(span)) = (a.nested, a.secret) {
            cx.error_at(span, "#[kv(secret)] conflicts with #[kv(nested)]: mark the nested struct's fields secret instead");
        }
        if a.skip.is_some() {
            let others = [
                a.rename.as_ref().map(|l| ("rename", l.span())),
                a.nested.map(|s| ("nested", s)),
                a.secret.map(|s| ("secret", s)),
                a.validate.as_ref().map(|(s, _)| ("validate", *s)),
            ];
            for (name, span) in others.into_iter().flatten() {
                cx.error_at(span, format!("#[kv({name})] conflicts with #[kv(skip)]: a skipped field has no key"));
            }
        }
    }
}
