//! Keeping values out of messages: every value quoted in an error, a status or a log line goes
//! through here, so it is bounded in size and secrets never appear. [`bound`] and [`quoted`] are
//! public so that tools built on kv-config (such as `kvc`) cut long text the same way.

/// How long one problem message may be (a refused value quoted in it is cut to fit).
pub(crate) const MAX_MESSAGE: usize = 240;

/// `text` unchanged when it is at most `max` bytes long; else its first `max` bytes or fewer (cut
/// on a character boundary) followed by `… (N bytes in all)`, `N` being the whole text's length
/// with thousands separators.
///
/// ```
/// use kv_config::redact::bound;
/// assert_eq!(bound("short", 10), "short");
/// // "é" is two bytes: the cut never splits a character.
/// assert_eq!(bound(&"é".repeat(10), 5), "éé… (20 bytes in all)");
/// assert!(bound(&"x".repeat(204_800), 8).ends_with("… (204,800 bytes in all)"));
/// ```
pub fn bound(text: &str, max: usize) -> String {
    match cut(text, max) {
        None => text.to_string(),
        Some(head) => format!("{head}… ({} bytes in all)", thousands(text.len())),
    }
}

/// `text` as a quoted string (`"abc"`, escaped as Rust's `Debug` does), at most `max` bytes of
/// it (cut on a character boundary) followed by `… (N bytes in all)` outside the quotes when it
/// is longer.
///
/// ```
/// use kv_config::redact::quoted;
/// assert_eq!(quoted("a\"b", 10), "\"a\\\"b\"");
/// assert_eq!(quoted(&"x".repeat(1000), 3), "\"xxx\"… (1,000 bytes in all)");
/// ```
pub fn quoted(text: &str, max: usize) -> String {
    match cut(text, max) {
        None => format!("{text:?}"),
        Some(head) => format!("{head:?}… ({} bytes in all)", thousands(text.len())),
    }
}

/// The first `max` bytes of `text` or fewer, on a character boundary; `None` when it is no longer.
fn cut(text: &str, max: usize) -> Option<&str> {
    if text.len() <= max {
        return None;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    Some(&text[..end])
}

/// `204800` -> `204,800`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Replaces every occurrence of each secret in `text` with `<redacted>` (secrets shorter than
/// three bytes are left alone: they would match everywhere and reveal little).
pub(crate) fn scrub(text: &str, secrets: &[String]) -> String {
    let mut out = text.to_string();
    for s in secrets.iter().filter(|s| s.len() >= 3) {
        if out.contains(s.as_str()) {
            out = out.replace(s.as_str(), "<redacted>");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bound_cuts_long_text_on_a_char_boundary() {
        assert_eq!(bound("short", 10), "short");
        let long = "é".repeat(100);
        let cut = bound(&long, 5);
        assert!(cut.starts_with("éé…"), "{cut}");
        assert!(cut.ends_with("(200 bytes in all)"), "{cut}");
    }

    #[test]
    fn quoted_cuts_long_text_outside_the_quotes() {
        assert_eq!(quoted("a\"b", 10), "\"a\\\"b\"");
        assert_eq!(quoted(&"x".repeat(1000), 3), "\"xxx\"… (1,000 bytes in all)");
    }

    #[test]
    fn thousands_groups_digits() {
        for (n, s) in [(0, "0"), (999, "999"), (1000, "1,000"), (204_800, "204,800"), (2_400_000, "2,400,000")] {
            assert_eq!(thousands(n), s);
        }
    }

    #[test]
    fn scrub_removes_every_secret() {
        let secrets = vec!["hunter2".to_string(), "ab".to_string()];
        assert_eq!(scrub("token hunter2 is hunter2, ab stays", &secrets), "token <redacted> is <redacted>, ab stays");
    }
}
