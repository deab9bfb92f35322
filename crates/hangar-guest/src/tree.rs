//! Whole trees in a guest through its `sftp` subsystem (`hangar cp -r`):
//! reading one as a tree stream ([`hangar_api::tree`]) and writing one
//! from a tree stream, built in a private dir beside the target and
//! renamed into place only once complete.

use std::collections::HashSet;

use hangar_api::tree::{self, Entry, EntryKind, Fixed, FIXED_LEN};
use russh_sftp::client::error::Error as SftpError;
use russh_sftp::protocol::{FileAttributes, OpenFlags, StatusCode};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::error::GuestError;
use crate::files::{GuestFiles, COPY_BUFFER};

/// Content is read from the guest in pieces of this size.
const CHUNK: usize = 256 << 10;

/// Why a tree copy failed; each kind maps to one API error kind.
#[derive(Debug, thiserror::Error)]
pub enum TreeFail {
    /// A path that must exist does not.
    #[error("{0}")]
    NotFound(String),
    /// The destination is taken.
    #[error("{0}")]
    Exists(String),
    /// Bad input: a stream that does not parse, a path of the wrong kind.
    #[error("{0}")]
    Invalid(String),
    /// The receiver of a stream went away.
    #[error("the receiver of the copy went away")]
    Closed,
    #[error(transparent)]
    Guest(#[from] GuestError),
}

/// What a received tree held.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TreeWritten {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// The root of a tree to send: a dir, or one regular file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TreeRoot {
    pub is_dir: bool,
    pub mode: u32,
    pub len: u64,
}

fn status_of(e: &SftpError) -> Option<StatusCode> {
    match e {
        SftpError::Status(s) => Some(s.status_code),
        _ => None,
    }
}

fn sftp(action: &'static str) -> impl FnOnce(SftpError) -> TreeFail {
    move |e| {
        TreeFail::Guest(GuestError::Sftp {
            action,
            message: hangar_host::sanitize::escape_controls(e.to_string().as_bytes()),
        })
    }
}

fn attrs(mode: u32) -> FileAttributes {
    FileAttributes {
        permissions: Some(mode & 0o7777),
        ..Default::default()
    }
}

/// `dir` + `/` + `name`, without doubling a trailing `/`.
fn join(dir: &str, name: &str) -> String {
    if dir.ends_with('/') {
        format!("{dir}{name}")
    } else {
        format!("{dir}/{name}")
    }
}

/// The guest dir holding `path` (`.`, root's home, for a bare name).
fn guest_parent(path: &str) -> String {
    match path.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) => "/".into(),
        Some((dir, _)) => dir.into(),
        None => ".".into(),
    }
}

/// Reads one entry header of a tree stream.
pub async fn read_entry(r: &mut (impl AsyncRead + Unpin)) -> Result<Entry, TreeFail> {
    let bad = |e: tree::TreeError| TreeFail::Invalid(format!("bad copy stream: {e}"));
    let mut fixed = [0u8; FIXED_LEN];
    read_exact(r, &mut fixed).await?;
    let f = Fixed::decode(&fixed).map_err(bad)?;
    let mut path = vec![0u8; f.path_len as usize];
    read_exact(r, &mut path).await?;
    let mut target = vec![0u8; f.target_len as usize];
    read_exact(r, &mut target).await?;
    f.finish(path, target).map_err(bad)
}

async fn read_exact(r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> Result<(), TreeFail> {
    r.read_exact(buf).await.map(drop).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            TreeFail::Invalid(tree::TreeError::Truncated.to_string())
        } else {
            TreeFail::Invalid(format!("the copy stream broke off: {e}"))
        }
    })
}

impl GuestFiles {
    /// Where a tree sent to `path` goes: inside it as `name` when `path` is
    /// a directory (as scp does), else `path` itself, whose parent must be
    /// a directory. A taken target is refused: trees are never merged.
    pub async fn tree_target(&self, path: &str, name: Option<&str>) -> Result<String, TreeFail> {
        let exists = |p: &str| {
            TreeFail::Exists(format!(
                "{p} already exists in the guest: remove it first or copy to a new path"
            ))
        };
        match self.sftp().metadata(path).await {
            Ok(m) if m.is_dir() => {
                let Some(name) = name else {
                    return Err(exists(path));
                };
                if name.contains('/') || tree::check_path(name).is_err() {
                    return Err(TreeFail::Invalid(format!(
                        "name {name:?} is not one plain file name"
                    )));
                }
                let target = join(path, name);
                match self.sftp().symlink_metadata(target.clone()).await {
                    Ok(_) => Err(exists(&target)),
                    Err(e) if status_of(&e) == Some(StatusCode::NoSuchFile) => Ok(target),
                    Err(e) => Err(sftp("stat")(e)),
                }
            }
            Ok(_) => Err(TreeFail::Exists(format!(
                "{path} already exists in the guest and is not a directory"
            ))),
            Err(e) if status_of(&e) == Some(StatusCode::NoSuchFile) => {
                let parent = guest_parent(path);
                let missing = || {
                    TreeFail::NotFound(format!("directory {parent} does not exist in the guest"))
                };
                if path.ends_with('/') {
                    return Err(TreeFail::NotFound(format!(
                        "directory {path} does not exist in the guest"
                    )));
                }
                match self.sftp().metadata(parent.clone()).await {
                    Ok(m) if m.is_dir() => Ok(path.trim_end_matches('/').to_string()),
                    Ok(_) => Err(missing()),
                    Err(e) if status_of(&e) == Some(StatusCode::NoSuchFile) => Err(missing()),
                    Err(e) => Err(sftp("stat")(e)),
                }
            }
            Err(e) => Err(sftp("stat")(e)),
        }
    }

    /// Writes the tree stream `r` to `target` (from [`Self::tree_target`]):
    /// built in a new private dir beside it, each entry's path checked,
    /// directory modes set last, then renamed into place. On any error the
    /// new dir is removed and `target` does not exist.
    pub async fn receive_tree(
        &self,
        target: &str,
        r: &mut (impl AsyncRead + Unpin),
    ) -> Result<TreeWritten, TreeFail> {
        let parent = guest_parent(target);
        let base = target
            .trim_end_matches('/')
            .rsplit('/')
            .next()
            .unwrap_or(target);
        let tmp = join(
            &parent,
            &format!(".{base}.hangar-cp-{:08x}", crate::files::unique_suffix()),
        );
        self.sftp()
            .create_dir(tmp.clone())
            .await
            .map_err(|e| match status_of(&e) {
                Some(StatusCode::NoSuchFile) => {
                    TreeFail::NotFound(format!("directory {parent} does not exist in the guest"))
                }
                _ => sftp("create a directory")(e),
            })?;
        let filled = async {
            self.sftp()
                .set_metadata(tmp.clone(), attrs(0o700))
                .await
                .map_err(sftp("chmod"))?;
            let written = self.fill_tree(&tmp, r).await?;
            self.sftp()
                .rename(tmp.clone(), target)
                .await
                .map_err(sftp("rename into place"))?;
            Ok(written)
        }
        .await;
        if filled.is_err() {
            self.remove_tree(&tmp).await;
        }
        filled
    }

    async fn fill_tree(
        &self,
        tmp: &str,
        r: &mut (impl AsyncRead + Unpin),
    ) -> Result<TreeWritten, TreeFail> {
        let root = read_entry(r).await?;
        if root.kind != EntryKind::Dir || !root.path.is_empty() {
            return Err(TreeFail::Invalid(
                "a copy stream must start with its root directory".into(),
            ));
        }
        let mut written = TreeWritten::default();
        // Dirs made by this stream, in creation order: an entry goes only
        // into one of them, never through a symlink or an older file.
        let mut made: HashSet<String> = HashSet::from([String::new()]);
        let mut modes = vec![(tmp.to_string(), root.mode)];
        loop {
            let e = read_entry(r).await?;
            match e.kind {
                EntryKind::End => break,
                EntryKind::Error => {
                    return Err(TreeFail::Invalid(format!(
                        "the sender stopped: {}",
                        e.target
                    )))
                }
                _ if e.path.is_empty() || !made.contains(tree::parent_of(&e.path)) => {
                    return Err(TreeFail::Invalid(format!(
                        "bad copy stream: {:?} does not follow its directory",
                        e.path
                    )))
                }
                _ => {}
            }
            let full = join(tmp, &e.path);
            match e.kind {
                EntryKind::Dir => {
                    self.sftp()
                        .create_dir(full.clone())
                        .await
                        .map_err(sftp("create a directory"))?;
                    made.insert(e.path.clone());
                    modes.push((full, e.mode));
                    written.dirs += 1;
                }
                EntryKind::File => {
                    let n = self.write_new(&full, e.size, r).await?;
                    self.sftp()
                        .set_metadata(full, attrs(e.mode))
                        .await
                        .map_err(sftp("chmod"))?;
                    written.files += 1;
                    written.bytes += n;
                }
                EntryKind::Symlink => {
                    // sftp-server's SYMLINK takes the target first.
                    self.sftp()
                        .symlink(e.target.clone(), full)
                        .await
                        .map_err(sftp("create a symlink"))?;
                    written.symlinks += 1;
                }
                EntryKind::End | EntryKind::Error => {}
            }
        }
        // Deepest first, so a read-only dir is filled before it is closed.
        for (path, mode) in modes.iter().rev() {
            self.sftp()
                .set_metadata(path.clone(), attrs(*mode))
                .await
                .map_err(sftp("chmod"))?;
        }
        Ok(written)
    }

    /// A new file (never an existing one) with exactly `size` bytes of `r`.
    async fn write_new(
        &self,
        path: &str,
        size: u64,
        r: &mut (impl AsyncRead + Unpin),
    ) -> Result<u64, TreeFail> {
        let mut file = self
            .sftp()
            .open_with_flags_and_attributes(
                path,
                OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE,
                attrs(0o600),
            )
            .await
            .map_err(sftp("create"))?;
        // Whole sftp writes at a time, not tokio::io::copy's 8 KiB.
        let cap = usize::try_from(size).map_or(COPY_BUFFER, |s| s.clamp(1, COPY_BUFFER));
        let mut content = tokio::io::BufReader::with_capacity(cap, r.take(size));
        let n = tokio::io::copy_buf(&mut content, &mut file)
            .await
            .map_err(|e| TreeFail::Invalid(format!("writing {path} failed: {e}")))?;
        file.shutdown()
            .await
            .map_err(|e| TreeFail::Invalid(format!("writing {path} failed: {e}")))?;
        if n != size {
            return Err(TreeFail::Invalid(tree::TreeError::Truncated.to_string()));
        }
        Ok(n)
    }

    /// Removes a tree this copy made (best effort: cleanup never stops
    /// half way on one error).
    pub async fn remove_tree(&self, path: &str) {
        let mut dirs = vec![path.to_string()];
        let mut stack = vec![path.to_string()];
        while let Some(dir) = stack.pop() {
            let Ok(entries) = self.sftp().read_dir(dir.clone()).await else {
                continue;
            };
            for e in entries {
                let p = join(&dir, &e.file_name());
                if e.metadata().is_dir() {
                    dirs.push(p.clone());
                    stack.push(p);
                } else {
                    let _ = self.sftp().remove_file(p).await;
                }
            }
        }
        for d in dirs.iter().rev() {
            let _ = self.sftp().remove_dir(d.clone()).await;
        }
    }

    /// What `path` is (symlinks followed, as scp does for its source).
    pub async fn tree_root(&self, path: &str) -> Result<TreeRoot, TreeFail> {
        let m = self
            .sftp()
            .metadata(path)
            .await
            .map_err(|e| match status_of(&e) {
                Some(StatusCode::NoSuchFile) => {
                    TreeFail::NotFound(format!("{path} does not exist in the guest"))
                }
                _ => sftp("stat")(e),
            })?;
        if !m.is_dir() && !m.is_regular() {
            return Err(TreeFail::Invalid(format!(
                "{path} is not a regular file or a directory"
            )));
        }
        Ok(TreeRoot {
            is_dir: m.is_dir(),
            mode: m.permissions.unwrap_or(0o755) & 0o7777,
            len: m.size.unwrap_or(0),
        })
    }

    /// Sends the tree at `path` (from [`Self::tree_root`]) as a tree
    /// stream, without its end entry: pre-order, each dir's entries by
    /// name, symlinks as links; sockets, FIFOs and devices are left out.
    pub async fn send_tree(
        &self,
        path: &str,
        root: TreeRoot,
        tx: &mpsc::Sender<Vec<u8>>,
    ) -> Result<(), TreeFail> {
        let send =
            |bytes: Vec<u8>| async move { tx.send(bytes).await.map_err(|_| TreeFail::Closed) };
        if !root.is_dir {
            send(Entry::file("", root.mode, root.len).encode()).await?;
            return self.send_content(path, root.len, tx).await;
        }
        send(Entry::dir("", root.mode).encode()).await?;
        let mut stack = vec![(path.to_string(), String::new())];
        while let Some((dir, rel)) = stack.pop() {
            let mut entries: Vec<_> = self
                .sftp()
                .read_dir(dir.clone())
                .await
                .map_err(sftp("list a directory"))?
                .collect();
            entries.sort_by_key(|e| e.file_name());
            // Pushed in reverse so that the walk visits them by name.
            let mut subdirs = Vec::new();
            for e in entries {
                let name = e.file_name();
                if name.contains('/') || tree::check_path(&name).is_err() {
                    return Err(TreeFail::Invalid(format!(
                        "the guest listed a bad name {name:?} in {dir}"
                    )));
                }
                let guest = join(&dir, &name);
                let rel = if rel.is_empty() {
                    name
                } else {
                    format!("{rel}/{name}")
                };
                let m = e.metadata();
                let mode = m.permissions.unwrap_or(0) & 0o7777;
                if m.is_symlink() {
                    let target = self
                        .sftp()
                        .read_link(guest)
                        .await
                        .map_err(sftp("read a symlink"))?;
                    send(Entry::symlink(&rel, &target).encode()).await?;
                } else if m.is_dir() {
                    send(Entry::dir(&rel, mode).encode()).await?;
                    subdirs.push((guest, rel));
                } else if m.is_regular() {
                    let len = m.size.unwrap_or(0);
                    send(Entry::file(&rel, mode, len).encode()).await?;
                    self.send_content(&guest, len, tx).await?;
                } else {
                    tracing::debug!(path = %guest, "cp: not a file, dir or symlink; left out");
                }
            }
            stack.extend(subdirs.into_iter().rev());
        }
        Ok(())
    }

    /// Exactly `len` bytes of the file at `path` (it was `len` long when
    /// listed; one that shrank since is an error, one that grew is cut).
    async fn send_content(
        &self,
        path: &str,
        len: u64,
        tx: &mpsc::Sender<Vec<u8>>,
    ) -> Result<(), TreeFail> {
        let mut file = self.sftp().open(path).await.map_err(sftp("open"))?;
        let mut left = len;
        while left > 0 {
            let mut buf = vec![0u8; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
            let n = file
                .read(&mut buf)
                .await
                .map_err(|e| TreeFail::Invalid(format!("reading {path} failed: {e}")))?;
            if n == 0 {
                return Err(TreeFail::Invalid(format!(
                    "{path} shrank while it was copied"
                )));
            }
            buf.truncate(n);
            left -= n as u64;
            tx.send(buf).await.map_err(|_| TreeFail::Closed)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guest_parents_and_joins() {
        assert_eq!(guest_parent("/tmp/x"), "/tmp");
        assert_eq!(guest_parent("/x"), "/");
        assert_eq!(guest_parent("x"), ".");
        assert_eq!(guest_parent("a/b/"), "a");
        assert_eq!(join("/", "x"), "/x");
        assert_eq!(join("/tmp", "x"), "/tmp/x");
    }
}
