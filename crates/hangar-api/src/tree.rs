//! The tree stream of `GET`/`PUT /v1/vms/{name}/tree` (`hangar cp -r`): a
//! directory (or one file) with modes and symlinks, as a sequence of
//! entries. Each entry is a fixed header (kind byte, big-endian u32 mode,
//! u64 size, u32 path length, u32 target length), the path, the target,
//! then `size` content bytes for a file. The first entry is the root (an
//! empty path; a dir, or a file for a one-file tree); a dir comes before
//! anything inside it; `End` closes a complete stream and `Error` (its
//! message in the target) aborts it. Paths are relative, `/`-separated
//! UTF-8 whose components are never empty, `.` or `..`: a receiver checks
//! every one with [`check_path`] and writes nothing outside its root.

/// `Content-Type` of the stream.
pub const TREE_CONTENT_TYPE: &str = "application/vnd.hangar.tree";
/// Length of the fixed part of an entry header.
pub const FIXED_LEN: usize = 21;
/// Longest path, symlink target or error message accepted.
pub const MAX_TEXT: u32 = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
    /// The stream is complete.
    End,
    /// The sender failed; the message is the entry's target.
    Error,
}

impl EntryKind {
    fn byte(self) -> u8 {
        match self {
            EntryKind::Dir => b'd',
            EntryKind::File => b'f',
            EntryKind::Symlink => b'l',
            EntryKind::End => b'e',
            EntryKind::Error => b'x',
        }
    }

    fn from_byte(b: u8) -> Option<EntryKind> {
        Some(match b {
            b'd' => EntryKind::Dir,
            b'f' => EntryKind::File,
            b'l' => EntryKind::Symlink,
            b'e' => EntryKind::End,
            b'x' => EntryKind::Error,
            _ => return None,
        })
    }
}

/// One entry's header (a file's content follows it on the wire).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    /// Permission bits (at most 0o7777).
    pub mode: u32,
    /// A file's length; 0 for the other kinds.
    pub size: u64,
    /// Relative to the tree's root; empty for the root itself.
    pub path: String,
    /// A symlink's target, or an error's message; empty otherwise.
    pub target: String,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TreeError {
    /// The stream ended before its end entry.
    #[error("the copy stream ended early")]
    Truncated,
    #[error("unknown entry kind {0}")]
    UnknownKind(u8),
    #[error("entry text of {0} bytes exceeds the {MAX_TEXT} byte limit")]
    TooLong(u32),
    #[error("entry text is not UTF-8")]
    NotUtf8,
    #[error("mode {0:o} is not a permission mode")]
    BadMode(u32),
    #[error("path {0:?} is not a plain relative path (empty, `.` or `..` component, or absolute)")]
    BadPath(String),
}

impl Entry {
    pub fn dir(path: &str, mode: u32) -> Entry {
        Entry::new(EntryKind::Dir, path, mode, 0, "")
    }

    pub fn file(path: &str, mode: u32, size: u64) -> Entry {
        Entry::new(EntryKind::File, path, mode, size, "")
    }

    pub fn symlink(path: &str, target: &str) -> Entry {
        Entry::new(EntryKind::Symlink, path, 0o777, 0, target)
    }

    pub fn end() -> Entry {
        Entry::new(EntryKind::End, "", 0, 0, "")
    }

    pub fn error(message: &str) -> Entry {
        // Cut to the limit on a character boundary so that it still decodes.
        let mut end = message.len().min(MAX_TEXT as usize);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        Entry::new(EntryKind::Error, "", 0, 0, &message[..end])
    }

    fn new(kind: EntryKind, path: &str, mode: u32, size: u64, target: &str) -> Entry {
        Entry {
            kind,
            mode,
            size,
            path: path.to_string(),
            target: target.to_string(),
        }
    }

    /// The header as sent (a file's content is sent after it).
    pub fn encode(&self) -> Vec<u8> {
        let mut v = Vec::with_capacity(FIXED_LEN + self.path.len() + self.target.len());
        v.push(self.kind.byte());
        v.extend_from_slice(&self.mode.to_be_bytes());
        v.extend_from_slice(&self.size.to_be_bytes());
        v.extend_from_slice(&(self.path.len() as u32).to_be_bytes());
        v.extend_from_slice(&(self.target.len() as u32).to_be_bytes());
        v.extend_from_slice(self.path.as_bytes());
        v.extend_from_slice(self.target.as_bytes());
        v
    }
}

/// The fixed part of a header, read first: how long the texts are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fixed {
    pub kind: EntryKind,
    pub mode: u32,
    pub size: u64,
    pub path_len: u32,
    pub target_len: u32,
}

impl Fixed {
    pub fn decode(b: &[u8; FIXED_LEN]) -> Result<Fixed, TreeError> {
        let kind = EntryKind::from_byte(b[0]).ok_or(TreeError::UnknownKind(b[0]))?;
        let u32_at = |i: usize| u32::from_be_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let mut size = [0u8; 8];
        size.copy_from_slice(&b[5..13]);
        let fixed = Fixed {
            kind,
            mode: u32_at(1),
            size: u64::from_be_bytes(size),
            path_len: u32_at(13),
            target_len: u32_at(17),
        };
        for len in [fixed.path_len, fixed.target_len] {
            if len > MAX_TEXT {
                return Err(TreeError::TooLong(len));
            }
        }
        if fixed.mode > 0o7777 {
            return Err(TreeError::BadMode(fixed.mode));
        }
        Ok(fixed)
    }

    /// The whole entry, once its texts are read; the path is checked.
    pub fn finish(self, path: Vec<u8>, target: Vec<u8>) -> Result<Entry, TreeError> {
        let path = String::from_utf8(path).map_err(|_| TreeError::NotUtf8)?;
        let target = String::from_utf8(target).map_err(|_| TreeError::NotUtf8)?;
        if !path.is_empty() {
            check_path(&path)?;
        }
        let size = if self.kind == EntryKind::File {
            self.size
        } else {
            0
        };
        Ok(Entry {
            kind: self.kind,
            mode: self.mode,
            size,
            path,
            target,
        })
    }
}

/// A path inside a tree: relative, every component a plain name (not
/// empty, `.` or `..`, no NUL).
pub fn check_path(path: &str) -> Result<(), TreeError> {
    let plain = |c: &str| !c.is_empty() && c != "." && c != ".." && !c.contains('\0');
    if path.starts_with('/') || !path.split('/').all(plain) {
        return Err(TreeError::BadPath(path.to_string()));
    }
    Ok(())
}

/// The directory part of a tree path (`""` for the root's children).
pub fn parent_of(path: &str) -> &str {
    path.rsplit_once('/').map_or("", |(dir, _)| dir)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn round_trip(e: &Entry) -> Entry {
        let bytes = e.encode();
        let mut fixed = [0u8; FIXED_LEN];
        fixed.copy_from_slice(&bytes[..FIXED_LEN]);
        let f = Fixed::decode(&fixed).unwrap();
        let p_end = FIXED_LEN + f.path_len as usize;
        let t_end = p_end + f.target_len as usize;
        assert_eq!(t_end, bytes.len());
        f.finish(
            bytes[FIXED_LEN..p_end].to_vec(),
            bytes[p_end..t_end].to_vec(),
        )
        .unwrap()
    }

    #[test]
    fn entries_decode_to_what_was_encoded() {
        for e in [
            Entry::dir("", 0o755),
            Entry::file("sub/naïve ünïcødé.txt", 0o4750, 1 << 40),
            Entry::symlink("sub/l", "../../etc/passwd"),
            Entry::end(),
            Entry::error("permission denied"),
        ] {
            assert_eq!(round_trip(&e), e);
        }
    }

    #[test]
    fn paths_that_could_leave_the_root_are_refused() {
        for bad in [
            "/etc/passwd",
            "..",
            "a/../../b",
            "a//b",
            "./a",
            "a/",
            "a/.",
            "a\0b",
        ] {
            assert_eq!(
                check_path(bad),
                Err(TreeError::BadPath(bad.to_string())),
                "{bad:?}"
            );
        }
        for ok in ["a", "a/b", "..a", "a..", ".hidden/x", "ünï cødé"] {
            assert!(check_path(ok).is_ok(), "{ok:?}");
        }
    }

    #[test]
    fn a_decoded_entry_with_a_bad_path_is_refused() {
        let e = Entry::file("../x", 0o644, 1);
        let bytes = e.encode();
        let mut fixed = [0u8; FIXED_LEN];
        fixed.copy_from_slice(&bytes[..FIXED_LEN]);
        let f = Fixed::decode(&fixed).unwrap();

        let got = f.finish(b"../x".to_vec(), Vec::new());

        assert_eq!(got, Err(TreeError::BadPath("../x".into())));
    }

    #[test]
    fn headers_with_huge_texts_unknown_kinds_or_bad_modes_are_refused() {
        let mut b = Entry::dir("a", 0o755).encode();
        b[13..17].copy_from_slice(&(MAX_TEXT + 1).to_be_bytes());
        let mut fixed = [0u8; FIXED_LEN];
        fixed.copy_from_slice(&b[..FIXED_LEN]);
        assert_eq!(Fixed::decode(&fixed), Err(TreeError::TooLong(MAX_TEXT + 1)));
        fixed[13..17].copy_from_slice(&1u32.to_be_bytes());
        fixed[0] = b'?';
        assert_eq!(Fixed::decode(&fixed), Err(TreeError::UnknownKind(b'?')));
        fixed[0] = b'd';
        fixed[1..5].copy_from_slice(&0o10000u32.to_be_bytes());
        assert_eq!(Fixed::decode(&fixed), Err(TreeError::BadMode(0o10000)));
    }

    #[test]
    fn a_long_error_message_is_cut_on_a_character_boundary() {
        let e = Entry::error(&"é".repeat(3000));

        assert!(e.target.len() <= MAX_TEXT as usize);
        assert_eq!(round_trip(&e), e);
    }

    #[test]
    fn parent_of_names_the_containing_dir() {
        assert_eq!(parent_of("a"), "");
        assert_eq!(parent_of("a/b/c"), "a/b");
    }
}
