//! `kvc edit BUCKET [PREFIX]`: the config as one TOML document in `$EDITOR`, with comments
//! giving each key's type, default and doc. On save: diff, validate, confirm, and commit every
//! changed key in one atomic batch with revision checks. If someone changed one of those keys
//! meanwhile, kvc says which, shows theirs and yours, and reopens the document (holding theirs
//! for those keys, yours everywhere else): nothing is overwritten. A refused value reopens the
//! document with the reasons at the top. A bucket deleted and created again while the document
//! was open is refused (exit 3, nothing written): the document showed another bucket's values.
//!
//! JSON: the write result shape (see [`Written`]).

use std::collections::{BTreeMap, HashSet};

use serde_json::Value;

use crate::cli::WriteArgs;
use crate::error::{CliError, CliResult, Refusal};
use crate::ops::{compact, parse_stored, same_bucket, Change, Ctx, Current, Written};
use kv_config::store::Entry;
use crate::output::{Block, Report, Text};

/// Arguments of `kvc edit`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
The document has one line per key, `\"server.port\" = 8080` (TOML). A commented-out line is a key
without a value (it takes its default): uncomment it to set the key, delete or comment out a line
to delete the key. Secrets are left out unless --reveal. Save an empty file to cancel.

A key someone else changed while the document was open is not overwritten: the document reopens
with their value. If the bucket was deleted and created again meanwhile, nothing is written
(exit 3): edit again.

The editor is $VISUAL, else $EDITOR, else vi; it may hold arguments (EDITOR='code --wait').

Examples:
  kvc edit app
  kvc edit app server --dry-run
  EDITOR=nano kvc --prefix prod edit app -m 'raise limits'")]
pub struct Args {
    /// The bucket.
    pub bucket: String,
    /// Only keys starting with this (relative to --prefix).
    pub filter: Option<String>,
    /// Stop after showing the diff; write nothing.
    #[arg(long)]
    pub dry_run: bool,
    /// Do not ask for confirmation before writing.
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Reason and author.
    #[command(flatten)]
    pub write: WriteArgs,
}

/// A key whose value someone else changed while the document was open.
#[derive(Debug, Clone)]
struct Conflict {
    key: String,
    theirs: Option<Value>,
    yours: Option<Value>,
}

/// The values a document shows, by key (keys it leaves out are not in the map).
type Shown = BTreeMap<String, Value>;

/// Edits.
///
/// The document is rendered from one state of the bucket (`base`); what the operator changed is
/// measured against it, so a key someone else changed meanwhile is never written back with the
/// old value. Before validating, kvc reads the bucket again: if a key the operator changed has
/// moved, that is a conflict; otherwise the changes are validated against the fresh state (the
/// one they will land on) and written with revision checks. The bucket must still be the one the
/// document was rendered from (its creation time, [`Current::created`]); otherwise the edit
/// ends with [`CliError::Replaced`].
pub async fn exec(args: &Args, ctx: &mut Ctx) -> CliResult<Report> {
    let filter = args.filter.as_deref();
    let mut base = ctx.load(&args.bucket).await?;
    let mut doc = render(ctx, &base, filter, &BTreeMap::new(), &[]).0;
    let mut retry = false;
    loop {
        let edited = open_editor(ctx, &doc).await?;
        if edited.trim().is_empty() {
            return Err(CliError::Cancelled(format!("bucket `{}`: empty document, edit cancelled; nothing changed", args.bucket)));
        }
        let parsed = match parse(&edited, &known_keys(&base)) {
            Ok(p) => p,
            Err(e) => {
                let err = CliError::Usage(format!("bucket `{}`: the document is not valid TOML: {e}", args.bucket));
                if retry && edited == doc {
                    return Err(err);
                }
                ctx.printer.note(&format!("{err}; reopening the document (save it unchanged to give up)"));
                doc = with_notes(&edited, &[format!("not valid TOML: {e}")]);
                retry = true;
                continue;
            }
        };
        let edits = edits_of(&render(ctx, &base, filter, &BTreeMap::new(), &[]).1, &parsed);
        let changes = changes_of(&base, &edits);
        let prefix = ctx.prefix.clone();
        let written = |changes, dry_run, revision| Written {
            bucket: args.bucket.clone(),
            prefix: prefix.clone(),
            dry_run,
            changes,
            revision,
        };
        if changes.is_empty() {
            return Ok(written(Vec::new(), args.dry_run, None).report());
        }
        // Someone may have written while the editor was open. The document's revisions mean
        // something only in the bucket it was rendered from: one deleted and created again since
        // restarts its revisions at 1, so a key there can have the revision shown here.
        let fresh = ctx.load(&args.bucket).await?;
        same_bucket(&args.bucket, base.created, fresh.created, "the document was read")?;
        let moved: Vec<(String, Option<Entry>)> = changes
            .iter()
            .filter(|c| revision(&base, &c.key) != revision(&fresh, &c.key))
            .map(|c| (c.key.clone(), fresh.entries.get(&c.key).cloned()))
            .collect();
        if !moved.is_empty() {
            let keys: Vec<String> = moved.iter().map(|(k, _)| format!("`{k}`")).collect();
            let msg = format!("bucket `{}`, key {}: changed by someone else while you edited; nothing written", args.bucket, keys.join(", "));
            (base, doc) = reopen(ctx, args, &fresh, moved, edits, &msg).await?;
            retry = false;
            continue;
        }
        if let Err(err) = ctx.check(&fresh, &changes) {
            let CliError::Refused { problems, .. } = &err else { return Err(err) };
            if retry && edited == doc {
                return Err(err);
            }
            let notes: Vec<String> =
                problems.iter().map(|p: &Refusal| format!("refused: key `{}`: {}", p.key, p.reason)).collect();
            ctx.printer.note(&format!("{err}; reopening the document (save it unchanged to give up)"));
            doc = with_notes(&edited, &notes);
            retry = true;
            continue;
        }
        let rows = ctx.change_rows(&fresh, &changes);
        if args.dry_run {
            return Ok(written(rows, true, None).report());
        }
        crate::ops::print_diff_note(&mut ctx.printer, &rows);
        ctx.confirm(&format!("Write {} change(s) to bucket `{}`?", rows.len(), args.bucket), args.yes)?;
        match ctx.commit(&fresh, &changes, args.write.reason.as_deref()).await {
            Ok(rev) => return Ok(written(rows, false, Some(rev)).report()),
            Err(CliError::Conflict(msg)) => {
                let moved = ctx.moved(&fresh, &changes).await?;
                let now = ctx.load(&args.bucket).await?;
                same_bucket(&args.bucket, fresh.created, now.created, "the document was read")?;
                (base, doc) = reopen(ctx, args, &now, moved, edits, &msg).await?;
                retry = false;
            }
            Err(e) => return Err(e),
        }
    }
}

/// The key's last revision (markers included; 0 = never written).
fn revision(cur: &Current, key: &str) -> u64 {
    cur.entries.get(key).map_or(0, |e| e.revision)
}

/// The writes that apply `edits` to `base` (edits that leave a value as it is are dropped).
fn changes_of(base: &Current, edits: &BTreeMap<String, Option<Value>>) -> Vec<Change> {
    let mut changes = Vec::new();
    for (key, value) in edits {
        let same = match (base.live_entry(key), value) {
            (Some(e), Some(v)) => parse_stored(&e.value) == *v,
            (None, None) => true,
            _ => false,
        };
        if !same {
            let new = value.as_ref().map(|v| bytes::Bytes::from(serde_json::to_vec(v).unwrap_or_default()));
            changes.push(Change { key: key.clone(), new });
        }
    }
    changes
}

/// After a conflict: tells the operator which keys moved (theirs vs yours) and renders the
/// document again from `now`, holding their values for those keys and the operator's other
/// edits. Returns the new base and document.
async fn reopen(
    ctx: &mut Ctx,
    args: &Args,
    now: &Current,
    moved: Vec<(String, Option<Entry>)>,
    edits: BTreeMap<String, Option<Value>>,
    msg: &str,
) -> CliResult<(Current, String)> {
    let conflicts: Vec<Conflict> = moved
        .iter()
        .map(|(key, entry)| {
            let secret = now.is_secret(key);
            let mask = |v: Value| if secret && !ctx.reveal { Value::String(crate::ops::REDACTED.into()) } else { v };
            Conflict {
                key: key.clone(),
                theirs: entry.as_ref().filter(|e| e.is_put()).map(|e| ctx.show(secret, &e.value)),
                yours: edits.get(key).cloned().flatten().map(mask),
            }
        })
        .collect();
    if conflicts.is_empty() {
        ctx.printer.note(&format!("{msg}; reopening the document on the new values with your edits on top"));
    } else {
        ctx.printer.note(&format!("{msg}; reopening the document with their value for those keys (your other edits are kept)"));
        let cell = |v: &Option<Value>| Text::plain(v.as_ref().map_or("(absent)".to_string(), compact));
        ctx.printer.note_block(&Block::Table {
            header: vec!["key".into(), "theirs (now in the bucket)".into(), "yours".into()],
            rows: conflicts.iter().map(|c| vec![Text::plain(c.key.clone()), cell(&c.theirs), cell(&c.yours)]).collect(),
        });
    }
    let pending: BTreeMap<String, Option<Value>> =
        edits.into_iter().filter(|(k, _)| !conflicts.iter().any(|c| &c.key == k)).collect();
    let mut doc = render(ctx, now, args.filter.as_deref(), &pending, &conflicts).0;
    if conflicts.is_empty() {
        // Only other keys moved (the config's validators read keys together).
        doc = format!("# !! {msg}.\n# !! The document now holds the new values with your edits on top; save to apply them.\n{doc}");
    }
    Ok((now.clone(), doc))
}

/// The document with `notes` at the top (earlier notes removed).
fn with_notes(doc: &str, notes: &[String]) -> String {
    let mut out: String = notes.iter().map(|n| format!("# !! {n}\n")).collect();
    out.push_str("# !! Fix the document and save again, or save it unchanged to give up.\n");
    for l in doc.lines().filter(|l| !l.starts_with("# !! ")) {
        out.push_str(l);
        out.push('\n');
    }
    out
}

/// Keys that hold one value even when it is a TOML table.
fn known_keys(cur: &Current) -> HashSet<String> {
    let mut keys: HashSet<String> = cur.entries.keys().cloned().collect();
    if let Some(s) = &cur.schema {
        keys.extend(s.fields.iter().map(|f| f.key.clone()));
    }
    keys
}


/// What the operator changed: keys whose value differs from `base` (`Some`), keys of `base`
/// that are gone (`None`).
fn edits_of(base: &Shown, parsed: &Shown) -> BTreeMap<String, Option<Value>> {
    let mut out = BTreeMap::new();
    for (k, v) in parsed {
        if base.get(k) != Some(v) {
            out.insert(k.clone(), Some(v.clone()));
        }
    }
    for k in base.keys() {
        if !parsed.contains_key(k) {
            out.insert(k.clone(), None);
        }
    }
    out
}

/// Parses the edited document: `"key" = value` lines. Unquoted dotted keys and `[table]`
/// headers are flattened to dotted keys, except for keys that hold an object.
fn parse(text: &str, known: &HashSet<String>) -> Result<Shown, String> {
    let table: toml::Table = toml::from_str(text).map_err(|e| e.to_string().replace('\n', " "))?;
    let mut out = Shown::new();
    flatten("", &table, known, &mut out);
    Ok(out)
}

fn flatten(prefix: &str, table: &toml::Table, known: &HashSet<String>, out: &mut Shown) {
    for (k, v) in table {
        let key = format!("{prefix}{k}");
        match v {
            toml::Value::Table(t) if !known.contains(&key) => flatten(&format!("{key}."), t, known, out),
            v => {
                out.insert(key, toml_to_json(v));
            }
        }
    }
}

fn toml_to_json(v: &toml::Value) -> Value {
    match v {
        toml::Value::String(s) => Value::String(s.clone()),
        toml::Value::Integer(i) => Value::from(*i),
        toml::Value::Float(f) => serde_json::Number::from_f64(*f).map_or(Value::Null, Value::Number),
        toml::Value::Boolean(b) => Value::Bool(*b),
        toml::Value::Datetime(d) => Value::String(d.to_string()),
        toml::Value::Array(a) => Value::Array(a.iter().map(toml_to_json).collect()),
        toml::Value::Table(t) => Value::Object(t.iter().map(|(k, v)| (k.clone(), toml_to_json(v))).collect()),
    }
}

/// A JSON value as an inline TOML value; `None` when TOML cannot hold it (null, huge integers).
fn toml_inline(v: &Value) -> Option<String> {
    Some(match v {
        Value::Null => return None,
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64()?;
                let s = f.to_string();
                if s.contains(['.', 'e', 'E']) || !f.is_finite() { s } else { format!("{s}.0") }
            } else {
                n.as_i64()?.to_string()
            }
        }
        Value::String(s) => toml_string(s),
        Value::Array(a) => {
            let items: Option<Vec<String>> = a.iter().map(toml_inline).collect();
            format!("[{}]", items?.join(", "))
        }
        Value::Object(o) => {
            if o.is_empty() {
                return Some("{}".into());
            }
            let items: Option<Vec<String>> = o.iter().map(|(k, v)| toml_inline(v).map(|v| format!("{} = {v}", toml_string(k)))).collect();
            format!("{{ {} }}", items?.join(", "))
        }
    })
}

fn toml_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() => out.push_str(&format!("\\u{:04X}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// The document, and the values it shows (what an unchanged save means).
fn render(
    ctx: &Ctx,
    cur: &Current,
    filter: Option<&str>,
    pending: &BTreeMap<String, Option<Value>>,
    conflicts: &[Conflict],
) -> (String, Shown) {
    let wanted = |k: &str| filter.map_or(true, |f| k.starts_with(f));
    let mut doc = String::new();
    let mut shown = Shown::new();
    let schema = cur.schema.as_ref();
    doc.push_str(&format!("# kvc edit: bucket `{}`", cur.name()));
    if !ctx.prefix.is_empty() {
        doc.push_str(&format!(", prefix `{}`", ctx.prefix));
    }
    match schema {
        Some(s) => doc.push_str(&format!(", schema {} {}\n", s.name, s.version)),
        None => doc.push_str(", no schema (values are checked as JSON only)\n"),
    }
    doc.push_str("# One line per key: \"key\" = value (TOML). A commented-out line has no value (the default applies):\n");
    doc.push_str("# uncomment it to set the key; delete or comment out a line to delete the key.\n");
    doc.push_str("# Save and quit to review the diff; save an empty file to cancel.\n");
    for c in conflicts {
        let show = |v: &Option<Value>| v.as_ref().map_or("(absent)".to_string(), compact);
        doc.push_str(&format!(
            "#\n# !! key `{}` was changed by someone else while you edited.\n# !!   theirs (shown below): {}\n# !!   yours: {}\n# !! Put yours back on its line to overwrite theirs.\n",
            c.key,
            show(&c.theirs),
            show(&c.yours)
        ));
    }
    let mut line = |doc: &mut String, key: &str, value: Option<&Value>, commented_default: Option<&Value>| {
        let pend = pending.get(key);
        let value: Option<Value> = match pend {
            Some(p) => p.clone(),
            None => value.cloned(),
        };
        match value.as_ref().map(|v| (v, toml_inline(v))) {
            Some((v, Some(text))) => {
                doc.push_str(&format!("{} = {text}\n", toml_string(key)));
                if pend.is_none() {
                    shown.insert(key.to_string(), v.clone());
                }
            }
            Some((v, None)) => {
                doc.push_str(&format!("# {} = {}   (not expressible in TOML; use `kvc set`)\n", toml_string(key), crate::ops::compact_whole(v)));
            }
            None => match commented_default.and_then(toml_inline) {
                Some(text) => doc.push_str(&format!("#{} = {text}\n", toml_string(key))),
                None => doc.push_str(&format!("#{} = \n", toml_string(key))),
            },
        }
    };
    if let Some(s) = schema {
        for f in s.fields.iter().filter(|f| wanted(&f.key)) {
            doc.push('\n');
            let mut head = format!("# {}: {}", f.key, f.ty);
            match (&f.default, f.required, f.secret) {
                (Some(d), _, _) => head.push_str(&format!("; default {}", compact(d))),
                (None, true, _) => head.push_str("; required"),
                (None, false, true) => head.push_str("; has a default"),
                (None, false, false) => {}
            }
            if f.secret {
                head.push_str("; secret");
            }
            if f.is_map_entry() {
                head.push_str("; one key per map entry, `*` is the entry name");
            }
            doc.push_str(&head);
            doc.push('\n');
            for l in f.doc.lines() {
                doc.push_str(&format!("# {l}\n"));
            }
            if f.is_map_entry() {
                let entries = cur.entries.iter().filter(|(k, e)| e.is_put() && wanted(k) && kv_config::key_matches(&f.key, k));
                for (k, e) in entries {
                    if f.secret && !ctx.reveal {
                        doc.push_str(&format!("# {k}: (set; hidden: run with --reveal to edit it, or add a line to replace it)\n"));
                        if let Some(text) = pending.get(k).cloned().flatten().as_ref().and_then(toml_inline) {
                            doc.push_str(&format!("{} = {text}\n", toml_string(k)));
                        }
                    } else {
                        line(&mut doc, k, Some(&parse_stored(&e.value)), None);
                    }
                }
                continue;
            }
            let entry = cur.live_entry(&f.key);
            if f.secret && !ctx.reveal {
                let state = if entry.is_some() { "set" } else { "not set" };
                doc.push_str(&format!("# ({state}; hidden: run with --reveal to edit it, or add a line to replace it)\n"));
                if let Some(Some(v)) = pending.get(&f.key) {
                    if let Some(text) = toml_inline(v) {
                        doc.push_str(&format!("{} = {text}\n", toml_string(&f.key)));
                    }
                }
                continue;
            }
            let value = entry.map(|e| parse_stored(&e.value));
            line(&mut doc, &f.key, value.as_ref(), f.default.as_ref());
        }
    }
    let unknown: Vec<(&String, Value)> = cur
        .entries
        .iter()
        .filter(|(k, e)| e.is_put() && wanted(k) && cur.field(k).is_none())
        .map(|(k, e)| (k, parse_stored(&e.value)))
        .collect();
    if !unknown.is_empty() {
        doc.push('\n');
        if schema.is_some() {
            doc.push_str("# Keys in the bucket that the schema does not know:\n");
        }
        for (k, v) in unknown {
            line(&mut doc, k, Some(&v), None);
        }
    }
    let extra: Vec<(&String, &Option<Value>)> =
        pending
            .iter()
            .filter(|(k, _)| cur.field(k).map_or(true, |f| f.is_map_entry()) && cur.live_entry(k).is_none())
            .collect();
    for (k, v) in extra {
        if let Some(text) = v.as_ref().and_then(toml_inline) {
            doc.push_str(&format!("{} = {text}\n", toml_string(k)));
        }
    }
    (doc, shown)
}

/// Writes the document to a temporary file, runs the editor on it, and reads it back.
async fn open_editor(ctx: &Ctx, doc: &str) -> CliResult<String> {
    let file = tempfile::Builder::new()
        .prefix("kvc-edit-")
        .suffix(".toml")
        .tempfile()
        .map_err(|e| CliError::Io(format!("creating a temporary file: {e}")))?;
    std::fs::write(file.path(), doc).map_err(|e| CliError::Io(format!("{}: {e}", file.path().display())))?;
    let status = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(format!("{} \"$1\"", ctx.editor))
        .arg("kvc-editor")
        .arg(file.path())
        .status()
        .await
        .map_err(|e| CliError::Io(format!("running the editor `{}`: {e}", ctx.editor)))?;
    if !status.success() {
        return Err(CliError::Cancelled(format!("the editor `{}` exited with {status}; nothing changed", ctx.editor)));
    }
    std::fs::read_to_string(file.path()).map_err(|e| CliError::Io(format!("{}: {e}", file.path().display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn toml_round_trip_of_values() {
        for v in [
            serde_json::json!(8080),
            serde_json::json!(-3),
            serde_json::json!(1.5),
            serde_json::json!(2.0),
            serde_json::json!("a \"quoted\"\n\\ string"),
            serde_json::json!(["a", 1, true]),
            serde_json::json!({"k": 1, "weird key": "v"}),
        ] {
            let text = format!("\"key\" = {}\n", toml_inline(&v).unwrap());
            let back = parse(&text, &HashSet::from(["key".to_string()])).unwrap();
            assert_eq!(back.get("key"), Some(&v), "{text}");
        }
        assert_eq!(toml_inline(&Value::Null), None);
    }

    #[test]
    fn edits_are_changes_and_removals() {
        let base: Shown = [("a".to_string(), serde_json::json!(1)), ("b".to_string(), serde_json::json!(2))].into();
        let parsed: Shown = [("a".to_string(), serde_json::json!(1)), ("c".to_string(), serde_json::json!(3))].into();
        let edits = edits_of(&base, &parsed);
        assert_eq!(edits.get("b"), Some(&None));
        assert_eq!(edits.get("c"), Some(&Some(serde_json::json!(3))));
        assert!(!edits.contains_key("a"));
    }
}
