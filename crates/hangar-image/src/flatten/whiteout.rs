//! OCI whiteouts: `.wh.NAME` deletes NAME from the lower layers,
//! `.wh..wh..opq` in a directory hides all lower content of that directory.

use std::collections::HashSet;
use std::os::fd::{AsFd, BorrowedFd};

use super::entrypath::RelPath;
use super::remove::{is_dir, list_names, open_subdir, remove_all_at, stat_at};

const PREFIX: &[u8] = b".wh.";
const META_PREFIX: &[u8] = b".wh..wh.";
const OPAQUE: &[u8] = b".wh..wh..opq";

/// What an entry's final name means.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    /// Not a whiteout: an ordinary entry.
    None,
    /// `.wh.NAME`: remove NAME from the same directory.
    Remove(&'a [u8]),
    /// `.wh..wh..opq`: the directory is opaque.
    Opaque,
    /// Other `.wh..wh.*` names (aufs bookkeeping): ignored, as docker does.
    Meta,
}

/// Classifies a final name. A whiteout may only name a sibling: `.wh.`,
/// `.wh..` and `.wh...` would name the directory itself or its parent and
/// are refused.
pub(crate) fn classify(name: &[u8]) -> Result<Kind<'_>, String> {
    if name == OPAQUE {
        return Ok(Kind::Opaque);
    }
    if name.starts_with(META_PREFIX) {
        return Ok(Kind::Meta);
    }
    let Some(target) = name.strip_prefix(PREFIX) else {
        return Ok(Kind::None);
    };
    match target {
        b"" | b"." | b".." => Err("a whiteout must name an entry in its own directory".into()),
        t => Ok(Kind::Remove(t)),
    }
}

/// Makes `dir` opaque: removes every descendant that is neither written by
/// this layer nor an ancestor of something it wrote (`touched` holds the
/// keys of both), descending only into real directories that stay.
pub(crate) fn make_opaque(
    dirfd: BorrowedFd,
    dir: &RelPath,
    touched: &HashSet<Vec<u8>>,
    removed: &mut Vec<RelPath>,
) -> nix::Result<()> {
    for name in list_names(dirfd)? {
        let child = dir.join(&name);
        if !touched.contains(&child.key()) {
            remove_all_at(dirfd, &name)?;
            removed.push(child);
            continue;
        }
        match stat_at(dirfd, &name)? {
            Some(st) if is_dir(&st) => {
                let sub = open_subdir(dirfd, &name)?;
                make_opaque(sub.as_fd(), &child, touched, removed)?;
            }
            _ => {}
        }
    }
    Ok(())
}
