//! `kvc show BUCKET [PREFIX]`: one row per key of the schema (and per key the schema does not
//! know): value, type, default, revision, age and state.
//!
//! JSON: `{"bucket", "prefix", "schema": null | "Name version", "keys": [{"key", "value",
//! "type", "default", "doc", "secret", "revision", "created", "state", "reason"}]}` where
//! `state` is `set`, `default`, `missing`, `invalid` (with `reason`) or `unknown` (not in the
//! schema); `value` is `null` when the key has no value; secrets are `"<redacted>"`. A key with an
//! expiring override in effect also has `"override": {"value", "revision", "expires"}`.
//!
//! Bounded output (see [`crate::clip`]): table cells (values, defaults, overrides, reasons) and
//! the `reason` of `--json` are cut to a few hundred bytes; the `value`s of `--json` are whole.

use serde::Serialize;
use serde_json::Value;

use crate::error::CliResult;
use crate::ops::{self, compact, Ctx};
use crate::output::{Block, Report, Text, Tone};

/// Arguments of `kvc show`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "Examples:\n  kvc show app\n  kvc show app server          only keys starting with `server`\n  kvc --prefix prod show app --json")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// Only keys starting with this (relative to --prefix).
    pub filter: Option<String>,
}

/// One key in `kvc show --json`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyRow {
    /// The key, relative to the prefix.
    pub key: String,
    /// The value in the bucket (`null` = none).
    pub value: Option<Value>,
    /// The type (`null` when not in the schema).
    #[serde(rename = "type")]
    pub ty: Option<String>,
    /// The default (`null` = none or secret).
    pub default: Option<Value>,
    /// The doc comment.
    pub doc: String,
    /// A secret key.
    pub secret: bool,
    /// The revision of the value (`null` = none).
    pub revision: Option<u64>,
    /// When the value was written (RFC 3339).
    pub created: Option<String>,
    /// `set`, `default`, `missing`, `invalid` or `unknown`.
    pub state: String,
    /// Why the value is invalid.
    pub reason: Option<String>,
    /// The expiring override in effect instead of `value`, if any (`kvc set --for`).
    #[serde(rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_: Option<OverrideRow>,
}

/// An expiring override in `kvc show --json`.
#[derive(Debug, Clone, Serialize)]
pub struct OverrideRow {
    /// The value in effect until it expires.
    pub value: Value,
    /// The override key's revision.
    pub revision: u64,
    /// When it expires (RFC 3339; `null` when it was written without kv-config's header).
    pub expires: Option<String>,
}

/// Shows the config.
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let cur = ctx.load(&args.bucket).await?;
    let problems = ctx.problems(&cur);
    let mut rows = Vec::new();
    let wanted = |k: &str| args.filter.as_deref().map_or(true, |f| k.starts_with(f));
    let fields = cur.schema.as_ref().map(|s| s.fields.clone()).unwrap_or_default();
    // A problem of a nested struct or a map (its validator) marks every key under it.
    let reason_for = |key: &str| {
        problems.get(key).cloned().or_else(|| {
            problems.iter().find(|(p, _)| key.starts_with(&format!("{p}."))).map(|(p, m)| format!("`{p}`: {m}"))
        })
    };
    // Map entries (`flags.*`) are listed below, one row per entry key in the bucket.
    for f in fields.iter().filter(|f| wanted(&f.key) && !f.is_map_entry()) {
        let entry = cur.live_entry(&f.key);
        let reason = reason_for(&f.key);
        let state = match (&reason, entry) {
            (Some(_), Some(_)) => "invalid",
            (Some(_), None) => "missing",
            (None, Some(_)) => "set",
            (None, None) => "default",
        };
        rows.push(KeyRow {
            key: f.key.clone(),
            value: entry.map(|e| ctx.show(f.secret, &e.value)),
            ty: Some(f.ty.to_string()),
            default: f.default.clone(),
            doc: f.doc.clone(),
            secret: f.secret,
            revision: entry.map(|e| e.revision),
            created: entry.map(|e| ops::time_precise(e.created)),
            state: state.into(),
            reason,
            override_: cur.live_override(&f.key).map(|o| OverrideRow {
                value: ctx.show(f.secret, &o.value),
                revision: o.revision,
                expires: crate::overrides::expires(o).map(ops::time_precise),
            }),
        });
    }
    for (k, e) in cur.entries.iter().filter(|(k, e)| e.is_put() && wanted(k)) {
        match cur.field(k) {
            Some(f) if f.is_map_entry() => {
                let reason = reason_for(k);
                rows.push(KeyRow {
                    key: k.clone(),
                    value: Some(ctx.show(f.secret, &e.value)),
                    ty: Some(f.ty.to_string()),
                    default: None,
                    doc: f.doc.clone(),
                    secret: f.secret,
                    revision: Some(e.revision),
                    created: Some(ops::time_precise(e.created)),
                    state: if reason.is_some() { "invalid" } else { "set" }.into(),
                    reason,
                    override_: cur.live_override(k).map(|o| OverrideRow {
                        value: ctx.show(f.secret, &o.value),
                        revision: o.revision,
                        expires: crate::overrides::expires(o).map(ops::time_precise),
                    }),
                });
                continue;
            }
            Some(_) => continue,
            None => {}
        }
        let known = cur.schema.is_some();
        let reason = problems.get(k).cloned();
        rows.push(KeyRow {
            key: k.clone(),
            value: Some(ctx.show(false, &e.value)),
            ty: None,
            default: None,
            doc: String::new(),
            secret: false,
            revision: Some(e.revision),
            created: Some(ops::time_precise(e.created)),
            state: if reason.is_some() { "invalid".into() } else if known { "unknown".into() } else { "set".into() },
            reason,
            override_: None,
        });
    }
    if let Some(reason) = problems.get("(whole config)") {
        ctx.printer.note(&format!("warning: bucket `{}`: the whole config is refused: {reason}", cur.name()));
    }
    let schema_name = cur.schema.as_ref().map(|s| format!("{} {}", s.name, s.version));
    let block = if rows.is_empty() {
        Block::Line(Text::plain("no keys"))
    } else {
        Block::Table {
            header: ["key", "value", "type", "default", "revision", "age", "state"].map(String::from).to_vec(),
            rows: rows
                .iter()
                .map(|r| {
                    let entry = cur.live_entry(&r.key);
                    let state = match (&r.reason, r.state.as_str()) {
                        (Some(reason), s) => Text::toned(format!("{s}: {reason}"), Tone::Warn),
                        (None, "unknown") => Text::toned("unknown: not in schema", Tone::Warn),
                        (None, "default") => Text::toned("default", Tone::Dim),
                        (None, s) => Text::plain(s),
                    };
                    let state = match (&r.override_, cur.live_override(&r.key)) {
                        (Some(o), Some(e)) => Text::toned(
                            format!("override {} ({})", compact(&o.value), crate::overrides::time_left(e)),
                            Tone::Warn,
                        ),
                        _ => state,
                    };
                    vec![
                        Text::plain(r.key.clone()),
                        r.value.as_ref().map_or(Text::toned("-", Tone::Dim), |v| Text::plain(compact(v))),
                        Text::plain(r.ty.clone().unwrap_or_else(|| "-".into())),
                        Text::plain(match (&r.default, r.secret) {
                            (Some(d), _) => compact(d),
                            (None, true) => "(secret)".into(),
                            (None, false) => "-".into(),
                        }),
                        Text::plain(r.revision.map_or("-".into(), |v| v.to_string())),
                        Text::plain(entry.map_or("-".into(), |e| ops::age(e.created))),
                        state,
                    ]
                })
                .collect(),
        }
    };
    let json = serde_json::json!({
        "bucket": cur.name(),
        "prefix": ctx.prefix,
        "schema": schema_name,
        "keys": rows,
    });
    Ok(Report::new(&json, vec![block]))
}
