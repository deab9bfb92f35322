//! Guest bytes made safe for a terminal. A guest's console output is
//! written by untrusted code: escape sequences in it could set the
//! terminal's title, clear the screen, rewrite what was printed before or
//! (on some terminals) answer back with input. Everything that is not
//! plain text is shown visibly instead (`\x1b`, `\u{9b}`, `\xff`), so the
//! bytes can be read but never act.
//!
//! Kept as is: printable characters, `\n`, `\t` and `\r` directly before
//! `\n` (serial consoles end lines with `\r\n`). Shown escaped: every
//! other C0 control and DEL (`\x1b`, `\x07`, a lone `\r`), C1 controls
//! (`\u{9b}` is a one-character CSI), Unicode bidi overrides and
//! isolates (they reorder what the user sees) and bytes that are not
//! UTF-8 (`\xff`).

use std::fmt::Write;

/// Escapes a whole buffer; see the module docs for the rules.
pub fn escape_controls(bytes: &[u8]) -> String {
    let mut s = Sanitizer::default();
    let mut out = s.push(bytes);
    out.push_str(&s.finish());
    out
}

/// [`escape_controls`] for a stream that arrives in pieces: a UTF-8
/// character or a `\r\n` split between two pieces is judged whole.
#[derive(Debug, Default)]
pub struct Sanitizer {
    /// The end of the last piece that could not be judged yet: an
    /// unfinished UTF-8 sequence, or a `\r` that may precede `\n`.
    pending: Vec<u8>,
}

impl Sanitizer {
    /// The safe text of `bytes`, holding back an unfinished end.
    pub fn push(&mut self, bytes: &[u8]) -> String {
        let mut buf = std::mem::take(&mut self.pending);
        buf.extend_from_slice(bytes);
        let mut out = String::with_capacity(buf.len());
        let mut rest = buf.as_slice();
        loop {
            match std::str::from_utf8(rest) {
                Ok(text) => {
                    self.pending = escape_text(text, &mut out, true);
                    break;
                }
                Err(e) => {
                    let (valid, after) = rest.split_at(e.valid_up_to());
                    let text = std::str::from_utf8(valid).unwrap_or_default();
                    match e.error_len() {
                        Some(bad) => {
                            // A `\r` before invalid bytes is a lone `\r`.
                            escape_text(text, &mut out, false);
                            for b in &after[..bad] {
                                let _ = write!(out, "\\x{b:02x}");
                            }
                            rest = &after[bad..];
                        }
                        None => {
                            // An unfinished character at the end: wait for
                            // the next piece.
                            let mut held = escape_text(text, &mut out, false);
                            held.extend_from_slice(after);
                            self.pending = held;
                            break;
                        }
                    }
                }
            }
        }
        out
    }

    /// What is still held back, escaped (the stream ended).
    pub fn finish(&mut self) -> String {
        let held = std::mem::take(&mut self.pending);
        if held == b"\r" {
            return "\\r".to_string();
        }
        // Otherwise an unfinished UTF-8 sequence: never valid now.
        let mut out = String::new();
        for b in held {
            let _ = write!(out, "\\x{b:02x}");
        }
        out
    }
}

/// Appends the escaped `text` to `out`. With `hold_cr`, a `\r` at the very
/// end is not judged but returned (the next piece may start with `\n`).
fn escape_text(text: &str, out: &mut String, hold_cr: bool) -> Vec<u8> {
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\n' | '\t' => out.push(c),
            '\r' => match chars.peek() {
                Some('\n') => out.push(c),
                None if hold_cr => return vec![b'\r'],
                _ => out.push_str("\\r"),
            },
            c if (c as u32) < 0x20 || c == '\u{7f}' => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c if is_c1_or_bidi(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Vec::new()
}

/// C1 controls (U+0080..U+009F, e.g. U+009B, a one-character CSI) and the
/// bidi embeddings, overrides and isolates that reorder text on screen.
fn is_c1_or_bidi(c: char) -> bool {
    matches!(c as u32, 0x80..=0x9f | 0x202a..=0x202e | 0x2066..=0x2069)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::{escape_controls, Sanitizer};

    fn no_controls(s: &str) -> bool {
        s.chars()
            .all(|c| c == '\n' || c == '\t' || c == '\r' || !c.is_control())
    }

    #[test]
    fn plain_text_newlines_tabs_and_crlf_pass_unchanged() {
        let text = "[    0.1] Linux version 6.1\r\n\tok: ünïcødé ✓\nlast";
        assert_eq!(escape_controls(text.as_bytes()), text);
    }

    #[test]
    fn csi_sequences_are_shown_not_sent() {
        let out = escape_controls(b"\x1b[2J\x1b[H\x1b[31mred\x1b[0m");
        assert_eq!(out, "\\x1b[2J\\x1b[H\\x1b[31mred\\x1b[0m");
    }

    #[test]
    fn osc_title_setting_and_the_bell_are_shown_not_sent() {
        let out = escape_controls(b"\x1b]0;pwned\x07\x1b]2;x\x1b\\ \x1b]52;c;ZWNobw==\x07");
        assert_eq!(
            out,
            "\\x1b]0;pwned\\x07\\x1b]2;x\\x1b\\ \\x1b]52;c;ZWNobw==\\x07"
        );
        assert!(no_controls(&out));
    }

    #[test]
    fn other_c0_controls_del_and_a_lone_cr_are_escaped() {
        let out = escape_controls(b"a\x00b\x08c\x7fd\re\x0cf\x0bg");
        assert_eq!(out, "a\\x00b\\x08c\\x7fd\\re\\x0cf\\x0bg");
    }

    #[test]
    fn c1_controls_and_bidi_overrides_are_escaped() {
        // U+009B is CSI in one character; U+202E reverses text on screen.
        let out = escape_controls("x\u{9b}2Jy\u{202e}txt.exe\u{2066}z".as_bytes());
        assert_eq!(out, "x\\u{9b}2Jy\\u{202e}txt.exe\\u{2066}z");
        assert!(no_controls(&out));
    }

    #[test]
    fn invalid_utf8_is_shown_byte_by_byte() {
        // 0x9b alone is the 8-bit CSI of some terminals; 0xc3 starts a
        // character that never ends.
        let out = escape_controls(b"a\x9b2Jb\xff\xc3");
        assert_eq!(out, "a\\x9b2Jb\\xff\\xc3");
    }

    #[test]
    fn a_stream_split_inside_a_character_or_a_crlf_is_judged_whole() {
        let text = "é\r\nok\x1b[Kend";
        let bytes = text.as_bytes();
        for cut in 0..=bytes.len() {
            let mut s = Sanitizer::default();
            let mut out = s.push(&bytes[..cut]);
            out.push_str(&s.push(&bytes[cut..]));
            out.push_str(&s.finish());
            assert_eq!(out, "é\r\nok\\x1b[Kend", "cut at {cut}");
        }
    }

    #[test]
    fn a_stream_that_ends_on_a_cr_or_a_broken_character_shows_it() {
        let mut s = Sanitizer::default();
        assert_eq!(s.push(b"line\r"), "line");
        assert_eq!(s.finish(), "\\r");
        let mut s = Sanitizer::default();
        assert_eq!(s.push(b"x\xe2\x9c"), "x");
        assert_eq!(s.finish(), "\\xe2\\x9c");
    }
}
