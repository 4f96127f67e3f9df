//! What commands return and the one printer that renders it: tables for people, or one JSON
//! value per command with `--json`. Colour is used only when stdout is a terminal (and `NO_COLOR`
//! is unset).

use std::io::Write;

use comfy_table::{presets, Attribute, Cell, Color, ContentArrangement, Table};
use serde::Serialize;

/// How a table cell is emphasised on a terminal.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Tone {
    /// No emphasis.
    #[default]
    Plain,
    /// Something new (green).
    Added,
    /// Something removed or old (red).
    Removed,
    /// A problem (yellow).
    Warn,
    /// Less important (dim).
    Dim,
}

/// One table cell: text and tone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Text {
    /// What is shown.
    pub text: String,
    /// How it is emphasised on a terminal.
    pub tone: Tone,
}

impl Text {
    /// Plain text.
    pub fn plain(text: impl Into<String>) -> Self {
        Text { text: text.into(), tone: Tone::Plain }
    }

    /// Text with a tone.
    pub fn toned(text: impl Into<String>, tone: Tone) -> Self {
        Text { text: text.into(), tone }
    }
}

impl From<String> for Text {
    fn from(s: String) -> Self {
        Text::plain(s)
    }
}

impl From<&str> for Text {
    fn from(s: &str) -> Self {
        Text::plain(s)
    }
}

/// A part of a command's human output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Block {
    /// A table with a header row.
    Table {
        /// Column titles.
        header: Vec<String>,
        /// The rows.
        rows: Vec<Vec<Text>>,
    },
    /// A line of text on stdout.
    Line(Text),
}

/// What a command returns: its JSON value and its human rendering.
#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    /// The `--json` output (the documented shape of the command).
    pub json: serde_json::Value,
    /// The human output.
    pub blocks: Vec<Block>,
}

impl Report {
    /// A report from a serializable value and blocks.
    pub fn new(json: &impl Serialize, blocks: Vec<Block>) -> Self {
        Report { json: serde_json::to_value(json).unwrap_or(serde_json::Value::Null), blocks }
    }
}

/// Renders reports and notes.
pub struct Printer {
    out: Box<dyn Write + Send>,
    err: Box<dyn Write + Send>,
    json: bool,
    color: bool,
}

impl std::fmt::Debug for Printer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Printer").field("json", &self.json).field("color", &self.color).finish_non_exhaustive()
    }
}

impl Printer {
    /// A printer on these streams; `color` only applies to tables and notes, never to JSON.
    pub fn new(out: Box<dyn Write + Send>, err: Box<dyn Write + Send>, json: bool, color: bool) -> Self {
        Printer { out, err, json, color: color && !json }
    }

    /// `true` with `--json`.
    pub fn is_json(&self) -> bool {
        self.json
    }

    /// Prints a command's result.
    pub fn report(&mut self, report: &Report) {
        if self.json {
            let text = serde_json::to_string_pretty(&report.json).unwrap_or_else(|_| "null".into());
            let _ = writeln!(self.out, "{text}");
        } else {
            for block in &report.blocks {
                self.block(block);
            }
        }
        let _ = self.out.flush();
    }

    /// Prints one streamed event (watch): one JSON line, or the text line.
    pub fn event(&mut self, json: &serde_json::Value, line: &Text) {
        if self.json {
            let _ = writeln!(self.out, "{}", serde_json::to_string(json).unwrap_or_else(|_| "null".into()));
        } else {
            let text = self.paint(line);
            let _ = writeln!(self.out, "{text}");
        }
        let _ = self.out.flush();
    }

    /// A note for the operator on stderr (never on stdout, so `--json` stays parseable), cut to
    /// [`MAX_MESSAGE`](crate::clip::MAX_MESSAGE) bytes.
    pub fn note(&mut self, text: &str) {
        let _ = writeln!(self.err, "{}", crate::clip::clip_to(text, crate::clip::MAX_MESSAGE));
        let _ = self.err.flush();
    }

    /// A question on stderr, without a line break (the answer is typed after it).
    pub fn prompt(&mut self, text: &str) {
        let _ = write!(self.err, "{text}");
        let _ = self.err.flush();
    }

    /// Prints a block on stderr (e.g. a conflict or a diff shown before a prompt).
    pub fn note_block(&mut self, block: &Block) {
        let rendered = self.render(block);
        let _ = writeln!(self.err, "{rendered}");
        let _ = self.err.flush();
    }

    /// An error line on stderr, cut to [`MAX_MESSAGE`](crate::clip::MAX_MESSAGE) bytes.
    pub fn error(&mut self, text: &str) {
        let text = crate::clip::clip_to(text, crate::clip::MAX_MESSAGE);
        let line = if self.color { format!("\x1b[31merror\x1b[0m: {text}") } else { format!("error: {text}") };
        let _ = writeln!(self.err, "kvc: {line}");
        let _ = self.err.flush();
    }

    fn block(&mut self, block: &Block) {
        let rendered = self.render(block);
        let _ = writeln!(self.out, "{rendered}");
    }

    fn paint(&self, text: &Text) -> String {
        if !self.color {
            return text.text.clone();
        }
        let code = match text.tone {
            Tone::Plain => return text.text.clone(),
            Tone::Added => "32",
            Tone::Removed => "31",
            Tone::Warn => "33",
            Tone::Dim => "2",
        };
        format!("\x1b[{code}m{}\x1b[0m", text.text)
    }

    /// Renders a block as text (no trailing newline).
    pub fn render(&self, block: &Block) -> String {
        match block {
            Block::Line(text) => self.paint(text),
            Block::Table { header, rows } => {
                let mut table = Table::new();
                table.load_preset(presets::UTF8_FULL_CONDENSED);
                if self.color {
                    table.enforce_styling();
                    table.set_content_arrangement(ContentArrangement::Dynamic);
                } else {
                    table.force_no_tty();
                    table.set_content_arrangement(ContentArrangement::Disabled);
                }
                let color = self.color;
                table.set_header(header.iter().map(|h| {
                    let cell = Cell::new(h);
                    if color {
                        cell.add_attribute(Attribute::Bold)
                    } else {
                        cell
                    }
                }));
                for row in rows {
                    table.add_row(row.iter().map(|t| {
                        let cell = Cell::new(&t.text);
                        if !color {
                            return cell;
                        }
                        match t.tone {
                            Tone::Plain => cell,
                            Tone::Added => cell.fg(Color::Green),
                            Tone::Removed => cell.fg(Color::Red),
                            Tone::Warn => cell.fg(Color::Yellow),
                            Tone::Dim => cell.add_attribute(Attribute::Dim),
                        }
                    }));
                }
                table.to_string()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);
    impl Write for Buf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            self.0.lock().map_err(|_| std::io::Error::other("poisoned"))?.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    impl Buf {
        fn text(&self) -> String {
            String::from_utf8_lossy(&self.0.lock().expect("lock")).into_owned()
        }
    }

    fn report() -> Report {
        Report::new(
            &serde_json::json!({"k": 1}),
            vec![Block::Table { header: vec!["key".into()], rows: vec![vec![Text::toned("new", Tone::Added)]] }],
        )
    }

    #[test]
    fn colour_only_when_asked_and_never_in_json() {
        for (json, color, ansi) in [(false, true, true), (false, false, false), (true, true, false)] {
            let out = Buf::default();
            let mut p = Printer::new(Box::new(out.clone()), Box::new(Buf::default()), json, color);
            p.report(&report());
            assert_eq!(out.text().contains('\x1b'), ansi, "json={json} color={color}: {}", out.text());
            if json {
                assert_eq!(serde_json::from_str::<serde_json::Value>(&out.text()).expect("json"), serde_json::json!({"k": 1}));
            }
        }
    }
}
