//! Lexical normalization of tar entry names: the only place `..`, `.`,
//! empty components and leading `/` are dealt with, so everything after it
//! sees plain names relative to the root.

/// A normalized root-relative path: components are non-empty, never `.` or
/// `..`, and contain neither `/` nor NUL. No components is the root itself.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct RelPath {
    comps: Vec<Vec<u8>>,
}

impl RelPath {
    /// Normalizes a tar name. A leading `/` is stripped (the name is taken
    /// as root-relative, as docker does); a `..` that would climb above the
    /// root is refused rather than clamped, since no honest layer has one.
    pub(crate) fn parse(raw: &[u8]) -> Result<RelPath, String> {
        if raw.contains(&0) {
            return Err("the name contains a NUL byte".into());
        }
        let mut comps: Vec<Vec<u8>> = Vec::new();
        for comp in raw.split(|b| *b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => {
                    if comps.pop().is_none() {
                        return Err("the path climbs above the root (`..`)".into());
                    }
                }
                name => comps.push(name.to_vec()),
            }
        }
        Ok(RelPath { comps })
    }

    pub(crate) fn root() -> RelPath {
        RelPath { comps: Vec::new() }
    }

    pub(crate) fn comps(&self) -> &[Vec<u8>] {
        &self.comps
    }

    /// The parent and the final name; `None` for the root.
    pub(crate) fn split_last(&self) -> Option<(RelPath, &[u8])> {
        let (last, parent) = self.comps.split_last()?;
        Some((
            RelPath {
                comps: parent.to_vec(),
            },
            last,
        ))
    }

    pub(crate) fn join(&self, name: &[u8]) -> RelPath {
        let mut comps = self.comps.clone();
        comps.push(name.to_vec());
        RelPath { comps }
    }

    /// `a/b/c`, or `.` for the root: what the *at calls are given.
    pub(crate) fn to_bytes(&self) -> Vec<u8> {
        if self.comps.is_empty() {
            return b".".to_vec();
        }
        self.comps.join(&b'/')
    }

    /// The key for per-path bookkeeping (the root is the empty key).
    pub(crate) fn key(&self) -> Vec<u8> {
        self.comps.join(&b'/')
    }

    /// This path's key and the keys of all its ancestors, root included.
    pub(crate) fn keys_with_ancestors(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        (0..=self.comps.len()).map(|n| self.comps[..n].join(&b'/'))
    }

    pub(crate) fn prefix(&self, n: usize) -> RelPath {
        RelPath {
            comps: self.comps[..n].to_vec(),
        }
    }
}
