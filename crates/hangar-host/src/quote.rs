//! POSIX shell quoting, for command lines a shell parses: SSH carries a
//! guest command as one string, QEMU runs `exec:` migration URIs through
//! `/bin/sh`.

/// Joins `argv` into one string that a POSIX shell splits back into exactly
/// the same words (see [`quote_word`]).
pub fn shell_quote(argv: &[String]) -> String {
    argv.iter()
        .map(|word| quote_word(word))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `word` as one shell word. Words made only of characters that a shell
/// never treats specially are left bare (so logs stay readable); everything
/// else is wrapped in single quotes, with embedded single quotes written as
/// `'\''`.
pub fn quote_word(word: &str) -> String {
    if !word.is_empty() && word.chars().all(is_safe_char) {
        return word.to_string();
    }
    let mut quoted = String::with_capacity(word.len() + 2);
    quoted.push('\'');
    for c in word.chars() {
        if c == '\'' {
            quoted.push_str("'\\''");
        } else {
            quoted.push(c);
        }
    }
    quoted.push('\'');
    quoted
}

fn is_safe_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '/' | ',' | ':' | '+' | '@' | '%')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(w: &[&str]) -> Vec<String> {
        w.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn plain_words_stay_bare() {
        let argv = words(&["ls", "-la", "/var/lib"]);

        let quoted = shell_quote(&argv);

        assert_eq!(quoted, "ls -la /var/lib");
    }

    #[test]
    fn words_with_spaces_and_metacharacters_are_single_quoted() {
        let argv = words(&["echo", "a b", "$HOME", "x;y", "*"]);

        let quoted = shell_quote(&argv);

        assert_eq!(quoted, "echo 'a b' '$HOME' 'x;y' '*'");
    }

    #[test]
    fn embedded_single_quote_is_escaped() {
        let argv = words(&["echo", "it's"]);

        let quoted = shell_quote(&argv);

        assert_eq!(quoted, r"echo 'it'\''s'");
    }

    #[test]
    fn empty_word_becomes_empty_quotes() {
        let argv = words(&["printf", ""]);

        let quoted = shell_quote(&argv);

        assert_eq!(quoted, "printf ''");
    }

    #[test]
    fn empty_argv_is_empty_string() {
        let quoted = shell_quote(&[]);

        assert_eq!(quoted, "");
    }

    #[test]
    fn quoted_words_round_trip_through_a_real_shell() {
        let argv = words(&[
            "a b",
            "it's",
            "$x",
            "\"q\"",
            "back\\slash",
            "new\nline",
            "",
            "~",
            "/plain/path",
        ]);
        let script = format!(
            "for w in {}; do printf '%s\\0' \"$w\"; done",
            shell_quote(&argv)
        );

        let out = crate::process::Tool::new("sh")
            .arg("-c")
            .arg(&script)
            .run_blocking()
            .expect("run sh");

        let got: Vec<&str> = out.stdout.split('\0').collect();
        let mut expected: Vec<&str> = argv.iter().map(String::as_str).collect();
        expected.push(""); // trailing piece after the last NUL
        assert_eq!(got, expected);
    }
}
