//! Text from hosts made safe to show: reports carry whatever a host sent (a compromised host can
//! send anything, THREATS W3). The templates escape HTML; this strips what escaping does not
//! cover: ANSI escape sequences and other control characters, which would otherwise reach a
//! terminal that views a copied page, or hide text.

/// `text` without ANSI escape sequences (CSI, OSC and two-byte escapes) and without control
/// characters other than newline and tab; other C0/C1 controls become `�`. Printable text,
/// including `<`, `&` and quotes, is kept: the template escapes it.
pub fn clean(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\u{1b}' => skip_escape(&mut chars),
            // A C1 CSI (U+009B) opens a sequence like ESC [ does.
            '\u{9b}' => skip_csi(&mut chars),
            '\n' | '\t' => out.push(c),
            '\r' => {}
            c if c.is_control() => out.push('\u{fffd}'),
            // Bidirectional overrides can make a message read differently than it is.
            '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// One line: [`clean`], with newlines and tabs as spaces.
pub fn clean_line(text: &str) -> String {
    clean(text).replace(['\n', '\t'], " ")
}

/// At most `max` characters of [`clean_line`], with `…` when cut.
pub fn clean_short(text: &str, max: usize) -> String {
    let line = clean_line(text);
    if line.chars().count() <= max {
        line
    } else {
        let mut cut: String = line.chars().take(max).collect();
        cut.push('…');
        cut
    }
}

fn skip_escape(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    match chars.peek() {
        Some('[') => {
            chars.next();
            skip_csi(chars);
        }
        Some(']' | 'P' | '_' | '^') => {
            // OSC / DCS / APC / PM: up to BEL or ST (ESC \).
            chars.next();
            while let Some(c) = chars.next() {
                if c == '\u{7}' {
                    break;
                }
                if c == '\u{1b}' {
                    if chars.peek() == Some(&'\\') {
                        chars.next();
                    }
                    break;
                }
            }
        }
        Some(_) => {
            // A two-character escape (ESC c, ESC 7...).
            chars.next();
        }
        None => {}
    }
}

fn skip_csi(chars: &mut std::iter::Peekable<std::str::Chars<'_>>) {
    // Parameter and intermediate bytes, then one final byte in @..~.
    for c in chars.by_ref() {
        if ('\u{40}'..='\u{7e}').contains(&c) {
            break;
        }
        if !('\u{20}'..='\u{3f}').contains(&c) {
            break;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ansi_sequences_and_controls_are_removed_markup_is_kept_for_escaping() {
        assert_eq!(clean("\u{1b}[31mred\u{1b}[0m text"), "red text");
        assert_eq!(clean("\u{1b}]0;title\u{7}after"), "after");
        assert_eq!(clean("a\u{0}b\u{8}c"), "a\u{fffd}b\u{fffd}c");
        assert_eq!(clean("line 1\r\nline 2\tx"), "line 1\nline 2\tx");
        assert_eq!(
            clean("<script>alert(1)</script>"),
            "<script>alert(1)</script>"
        );
        assert_eq!(clean("\u{9b}2Jcleared"), "cleared");
        assert_eq!(clean("ab\u{202e}cd"), "ab\u{fffd}cd");
        assert_eq!(clean_short("a\nb\u{1b}[1mccc", 4), "a bc…");
    }
}
