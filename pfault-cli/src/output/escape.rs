//! Names from outside pfault, made safe to print. Any process names itself
//! (prctl(PR_SET_NAME) takes every byte but NUL), and files and symbols are named by whoever
//! made them: a newline would split a row in two, and an escape sequence would be obeyed by
//! the terminal of the root user reading pfault's output.

use std::borrow::Cow;

/// `s` with each control character written as C and bpftrace write it: `\n`, `\t`, `\r`,
/// else `\xHH` (ESC is `\x1b`; DEL and the C1 controls are escaped too, since terminals obey
/// those as well). Everything else, other scripts included, is left as it is; text without
/// a control character is not copied.
pub(crate) fn escape(s: &str) -> Cow<'_, str> {
    if !s.chars().any(char::is_control) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            '\r' => out.push_str("\\r"),
            // Every control character is below U+00A0.
            c if c.is_control() => out.push_str(&format!("\\x{:02x}", c as u32)),
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_written_as_escapes() {
        assert_eq!(escape("evil\ncomm"), "evil\\ncomm");
        assert_eq!(escape("\x1b[31mred\x1b[0m"), "\\x1b[31mred\\x1b[0m");
        assert_eq!(escape("a\tb\rc\0d\x7f"), "a\\tb\\rc\\x00d\\x7f");
        // C1 CSI, which some terminals take as ESC [.
        assert_eq!(escape("x\u{9b}2J"), "x\\x9b2J");
        let e = escape("\x01\x1f\n");
        assert!(!e.chars().any(char::is_control), "{e}");
    }

    #[test]
    fn ordinary_names_are_left_alone_and_not_copied() {
        for s in [
            "anon_writer",
            "kworker/0:1",
            "my prog",
            "héllo wörld",
            "日本語",
            "a\\nb",
            "",
        ] {
            assert!(matches!(escape(s), Cow::Borrowed(b) if b == s), "{s}");
        }
    }
}
