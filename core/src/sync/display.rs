//! Text from a directory (user names, server messages) shown to a person: a user name holding
//! `ESC[2J` must be shown as text, never interpreted by a terminal.

use std::borrow::Cow;

/// `text` with every control character (C0, DEL, C1 — ESC, BEL, CR, backspace ...) written as
/// its escape (`\u{1b}`), so printing it cannot move the cursor, clear the screen or hide what
/// came before on the line. Plain text comes back borrowed.
pub fn terminal_safe(text: &str) -> Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c.is_control() {
            out.extend(c.escape_default());
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::terminal_safe;

    #[test]
    fn control_characters_are_shown_not_interpreted() {
        assert_eq!(terminal_safe("alice@example.com"), "alice@example.com");
        assert!(matches!(
            terminal_safe("plain ü"),
            std::borrow::Cow::Borrowed(_)
        ));
        assert_eq!(terminal_safe("a\u{1b}[2Jb"), "a\\u{1b}[2Jb");
        assert_eq!(
            terminal_safe("x\ry\u{7}\u{9b}z\n"),
            "x\\ry\\u{7}\\u{9b}z\\n"
        );
    }
}
