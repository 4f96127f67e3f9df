//! Cross-field rules: checks that need more than one attribute or field at a time.

use std::collections::HashMap;

use crate::ast::Input;
use crate::ctxt::Ctxt;

pub fn check(cx: &Ctxt, input: &Input) {
    check_keys(cx, input);
    check_duplicate_keys(cx, input);
    check_conflicts(cx, input);
    check_maps(cx, input);
    check_map_overlap(cx, input);
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
        if let (Some(_), Some((span, _)), None) = (a.nested, &a.default, f.dynamic_map()) {
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
                a.validate_each.as_ref().map(|(s, _)| ("validate_each", *s)),
                a.json.map(|s| ("json", s)),
            ];
            for (name, span) in others.into_iter().flatten() {
                cx.error_at(span, format!("#[kv({name})] conflicts with #[kv(skip)]: a skipped field has no key"));
            }
        }
    }
}

/// Map fields (`HashMap<String, V>` / `BTreeMap<String, V>`): one key per entry, so the entry
/// name must be a `String`, an absent map is empty (no default), and `json` / `validate_each`
/// only make sense on maps.
fn check_maps(cx: &Ctxt, input: &Input) {
    for f in input.fields.iter().filter(|f| f.attrs.skip.is_none()) {
        let a = &f.attrs;
        match (&f.map, a.json) {
            (None, Some(span)) => cx.error_at(
                span,
                "#[kv(json)] belongs on a HashMap or BTreeMap field (to store the whole map as one JSON key); other fields are one JSON key already",
            ),
            (Some(_), Some(_)) => {
                if let Some(nested) = a.nested {
                    cx.error_at(nested, "#[kv(nested)] conflicts with #[kv(json)]: a map stored as one JSON key has no keys per entry");
                }
                if let Some((each, _)) = &a.validate_each {
                    cx.error_at(*each, "#[kv(validate_each)] conflicts with #[kv(json)]: use #[kv(validate = ...)] on the whole map");
                }
            }
            (Some(map), None) => {
                if !crate::ast::is_string(map.key) {
                    cx.error_spanned_by(
                        map.key,
                        "a map field needs `String` keys: each entry name becomes a key token (`field.<name>`); use #[kv(json)] to store the map as one JSON key",
                    );
                }
                if let Some((span, _)) = &a.default {
                    cx.error_at(
                        *span,
                        "#[kv(default)] is not supported on a map field: a map with no entries in the bucket is empty; use #[kv(json)] to store the map as one key with a default",
                    );
                }
                if let (Some(_), Some((each, _))) = (a.nested, &a.validate_each) {
                    cx.error_at(
                        *each,
                        "#[kv(validate_each)] conflicts with #[kv(nested)]: validate a nested entry with #[kv(validate = ...)] on its struct",
                    );
                }
            }
            (None, None) => {
                if let Some((each, _)) = &a.validate_each {
                    cx.error_at(*each, "#[kv(validate_each)] belongs on a HashMap<String, V> or BTreeMap<String, V> field; use #[kv(validate = ...)] here");
                }
            }
        }
    }
}

/// A map field owns every key under `field.`: no other field may map there.
fn check_map_overlap(cx: &Ctxt, input: &Input) {
    let fields: Vec<_> = input.fields.iter().filter(|f| f.attrs.skip.is_none()).collect();
    for m in fields.iter().filter(|f| f.dynamic_map().is_some()) {
        let owned = format!("{}.", m.key);
        for f in fields.iter().filter(|f| f.key.starts_with(&owned)) {
            cx.error_at(
                f.key_span,
                format!("key `{}` lies under map field `{}`, whose entries own every key `{}<name>`", f.key, m.ident, owned),
            );
        }
    }
}
