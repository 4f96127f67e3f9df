//! Keeping values out of messages: every value quoted in an error, a status or a log line goes
//! through here, so it is bounded in size and secrets never appear.

/// How long one problem message may be (a refused value quoted in it is cut to fit).
pub(crate) const MAX_MESSAGE: usize = 240;

/// `text` cut to at most `max` bytes (on a character boundary), saying how long it was.
pub(crate) fn bound(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &text[..end], text.len())
}

/// `text` as a quoted string (`"abc"`), at most `max` bytes of it (cut on a character boundary)
/// followed by `… (N bytes in all)` outside the quotes when it is longer.
pub(crate) fn quoted(text: &str, max: usize) -> String {
    if text.len() <= max {
        return format!("{text:?}");
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes in all)", &text[..end], text.len())
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
        assert_eq!(quoted(&"x".repeat(1000), 3), "\"xxx\"… (1000 bytes in all)");
    }

    #[test]
    fn scrub_removes_every_secret() {
        let secrets = vec!["hunter2".to_string(), "ab".to_string()];
        assert_eq!(scrub("token hunter2 is hunter2, ab stays", &secrets), "token <redacted> is <redacted>, ab stays");
    }
}
