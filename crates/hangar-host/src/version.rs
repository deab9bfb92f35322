//! The one parser for the versions host tools print (`firecracker
//! --version`, `qemu-system-x86_64 --version`, `mkfs.ext4 -V`, ...), so
//! every crate reads "1.16.1-dev" or "7.2" the same way.

use std::fmt;

/// A `major.minor.patch` version; ordered the way releases are.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Version {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses one word: an optional leading `v`, then `major.minor` or
    /// `major.minor.patch` (a missing patch is 0). Anything after the last
    /// number's digits ("-dev", "+dfsg", ".4") is ignored; the major number
    /// must be the whole part before the first dot, so "x1.2" is no version.
    pub fn parse(word: &str) -> Option<Version> {
        let mut parts = word.strip_prefix('v').unwrap_or(word).split('.');
        let major = parts.next()?.parse().ok()?;
        let minor = leading_number(parts.next()?)?;
        let patch = parts.next().and_then(leading_number).unwrap_or(0);
        Some(Version::new(major, minor, patch))
    }

    /// The first version in a tool's output: words are split at whitespace,
    /// commas and parentheses ("QEMU emulator version 7.2.19 (Debian ...)",
    /// "mke2fs 1.47.0 (5-Feb-2023)", "Firecracker v1.16.1").
    pub fn find_in(text: &str) -> Option<Version> {
        text.split(|c: char| c.is_whitespace() || matches!(c, ',' | '(' | ')'))
            .find_map(Version::parse)
    }
}

/// The digits `s` starts with, as a number; `None` when it starts with none.
fn leading_number(s: &str) -> Option<u32> {
    let end = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    s[..end].parse().ok()
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(major: u32, minor: u32, patch: u32) -> Option<Version> {
        Some(Version::new(major, minor, patch))
    }

    #[test]
    fn parse_reads_a_word_with_or_without_v_and_patch() {
        assert_eq!(Version::parse("1.16.1"), v(1, 16, 1));
        assert_eq!(Version::parse("v1.8.0"), v(1, 8, 0));
        assert_eq!(Version::parse("8.1"), v(8, 1, 0));
    }

    #[test]
    fn parse_ignores_what_follows_the_last_number() {
        assert_eq!(Version::parse("v1.8.0-dev"), v(1, 8, 0));
        assert_eq!(Version::parse("1.16.1-fake"), v(1, 16, 1));
        assert_eq!(Version::parse("7.2+dfsg"), v(7, 2, 0));
        assert_eq!(Version::parse("1.2.3.4"), v(1, 2, 3));
        assert_eq!(Version::parse("1.2.x"), v(1, 2, 0));
    }

    #[test]
    fn parse_rejects_words_that_are_no_version() {
        for word in [
            "",
            "v",
            "1",
            "v1",
            "1.",
            "1.x",
            "v1.x.2",
            "x1.2",
            "-1.2",
            "Firecracker",
        ] {
            assert_eq!(Version::parse(word), None, "{word:?}");
        }
    }

    #[test]
    fn find_in_reads_the_first_version_of_common_tool_outputs() {
        assert_eq!(
            Version::find_in(
                "Firecracker v1.16.1\n\nSupported snapshot data format versions: v8.0.0\n"
            ),
            v(1, 16, 1)
        );
        assert_eq!(
            Version::find_in("QEMU emulator version 7.2.19 (Debian 1:7.2+dfsg-7+deb12u18)"),
            v(7, 2, 19)
        );
        assert_eq!(Version::find_in("mke2fs 1.47.0 (5-Feb-2023)"), v(1, 47, 0));
        assert_eq!(Version::find_in("tool,8.1,"), v(8, 1, 0));
        assert_eq!(Version::find_in("(v2.0.1)"), v(2, 0, 1));
        assert_eq!(Version::find_in("no version here"), None);
        assert_eq!(Version::find_in(""), None);
    }

    #[test]
    fn versions_order_by_major_then_minor_then_patch() {
        assert!(Version::new(1, 7, 9) < Version::new(1, 8, 0));
        assert!(Version::new(1, 10, 0) > Version::new(1, 9, 9));
        assert!(Version::new(2, 0, 0) > Version::new(1, 99, 99));
    }

    #[test]
    fn display_is_dotted_triple() {
        assert_eq!(Version::new(1, 47, 0).to_string(), "1.47.0");
    }
}
