//! Keeping human output bounded: every value shown in a table cell or a watch line goes through
//! [`clip_value`], every problem or error text `kvc` prints through [`clip`] (or [`clip_to`]),
//! so one huge value in a bucket (say 200 KB written by another client) can never flood the
//! terminal: a cell holds at most [`MAX_VALUE`] bytes of a value, a problem [`MAX_SHOWN`], a line
//! on stderr [`MAX_MESSAGE`]. (A table pads every cell of a column to its widest one, so values
//! are cut shorter than messages.)
//!
//! What stays whole: what the operator asked for as data. `kvc get KEY` (the table row of the
//! value, and `--json`), the values of every `--json` output (`show`, `diff`, `history`, `watch`,
//! the write commands), `kvc export` files and the document `kvc edit` opens are the values
//! themselves and are never cut. Problem texts (`reason`, `problem`) are bounded in `--json` too:
//! they are messages, not data. Secrets are redacted before anything is clipped.

/// The most bytes of one value shown in a table cell or a watch line (about a terminal line);
/// what is cut is replaced by `… (N bytes in all)`.
pub const MAX_VALUE: usize = 120;

/// The most bytes of one problem text (a refusal's reason, an invalid value's problem), a few
/// lines of a terminal; what is cut is replaced by `… (N bytes in all)`.
pub const MAX_SHOWN: usize = 300;

/// The most bytes of one error or note line on stderr (which may list several refused keys,
/// each already bounded by [`MAX_SHOWN`]).
pub const MAX_MESSAGE: usize = 4096;

/// A value as shown in a table cell or a watch line: cut to at most [`MAX_VALUE`] bytes; see
/// [`clip_to`].
///
/// ```
/// use kv_config_cli::clip::clip_value;
/// let huge = format!("{:?}", "x".repeat(204_800));
/// assert!(clip_value(&huge).ends_with("… (204,802 bytes in all)"));
/// assert_eq!(clip_value("\"debug\""), "\"debug\"");
/// ```
pub fn clip_value(text: &str) -> String {
    clip_to(text, MAX_VALUE)
}

/// A problem or message text: cut to at most [`MAX_SHOWN`] bytes; see [`clip_to`].
///
/// ```
/// use kv_config_cli::clip::{clip, MAX_SHOWN};
/// assert_eq!(clip("8080"), "8080");
/// let huge = "x".repeat(204_800);
/// let shown = clip(&huge);
/// assert!(shown.len() < MAX_SHOWN + 40);
/// assert!(shown.ends_with("… (204,800 bytes in all)"));
/// ```
pub fn clip(text: &str) -> String {
    clip_to(text, MAX_SHOWN)
}

/// `text` unchanged when it is at most `max` bytes long, else its first `max` bytes or fewer (cut
/// on a character boundary) followed by `… (N bytes in all)`, `N` being the length of the whole
/// text with thousands separators: the library's [`kv_config::redact::bound`], so `kvc` and the
/// services it manages cut text alike.
///
/// ```
/// use kv_config_cli::clip::clip_to;
/// assert_eq!(clip_to("short", 10), "short");
/// // "é" is two bytes: the cut never splits a character.
/// assert_eq!(clip_to(&"é".repeat(10), 5), "éé… (20 bytes in all)");
/// ```
pub fn clip_to(text: &str, max: usize) -> String {
    kv_config::redact::bound(text, max)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clip_is_bounded_and_keeps_short_text() {
        let text = "ü".repeat(MAX_SHOWN);
        let shown = clip(&text);
        assert!(shown.len() <= MAX_SHOWN + "… (1,000,000 bytes in all)".len(), "{shown}");
        assert!(shown.ends_with("… (600 bytes in all)"), "{shown}");
        assert_eq!(clip("ok"), "ok");
        assert_eq!(clip_to("abc", 3), "abc");
    }
}
