//! The local side of `hangar cp -r`, as the user: a local tree read into a
//! tree stream ([`hangar_api::tree`]), and a tree stream from a guest
//! written into a new local tree.
//!
//! Guests are untrusted. A received tree is built in a new private dir
//! beside the destination: every entry's path is checked (relative, no
//! `.`/`..`/empty component), an entry goes only into a dir this stream
//! made (never through a symlink it planted), every create is exclusive and
//! never follows a symlink, and only a complete tree is renamed into place
//! (never over an existing one). Symlinks are recreated as they are, never
//! followed; setuid/setgid/sticky bits from a guest are dropped.

use std::collections::HashSet;
use std::io::Read;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use bytes::Bytes;
use hangar_api::tree::{self, Entry, EntryKind, Fixed, FIXED_LEN};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::progress::Progress;

/// Pieces of content read at once.
const CHUNK: usize = 256 << 10;

/// Permission bits a received entry may keep (no setuid/setgid/sticky).
const RECEIVED_MODE_MASK: u32 = 0o777;

/// A local I/O error with the path it concerns, in words a user can act on.
pub fn io_message(path: &Path, e: &std::io::Error) -> String {
    let what = match e.kind() {
        std::io::ErrorKind::NotFound => "no such file or directory".to_string(),
        std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
        _ => e.to_string(),
    };
    format!("{}: {what}", path.display())
}

/// Where the sender writes the stream; a dropped receiver ends the walk.
pub type Sink = mpsc::Sender<Result<Bytes, std::io::Error>>;

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{0}")]
    Local(String),
    /// The daemon stopped reading (its answer says why).
    #[error("the daemon stopped reading the copy")]
    Closed,
}

fn put(out: &Sink, bytes: Vec<u8>) -> Result<(), SendError> {
    out.blocking_send(Ok(Bytes::from(bytes)))
        .map_err(|_| SendError::Closed)
}

/// Sends the local dir `root` (followed if it is a symlink, as scp does)
/// as a tree stream, ending with its end entry; a local failure is sent
/// as an error entry too, so the daemon drops what it made. Blocking: run
/// it off the async runtime.
pub fn send_local_tree(root: &Path, out: &Sink, progress: &Progress) -> Result<(), SendError> {
    let walked = walk(root, out, progress);
    match &walked {
        Ok(()) => put(out, Entry::end().encode())?,
        Err(SendError::Local(m)) => put(out, Entry::error(m).encode())?,
        Err(SendError::Closed) => {}
    }
    walked
}

fn local(p: &Path) -> impl Fn(std::io::Error) -> SendError + '_ {
    move |e| SendError::Local(io_message(p, &e))
}

fn walk(root: &Path, out: &Sink, progress: &Progress) -> Result<(), SendError> {
    let meta = std::fs::metadata(root).map_err(local(root))?;
    put(
        out,
        Entry::dir("", meta.permissions().mode() & 0o7777).encode(),
    )?;
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, rel)) = stack.pop() {
        let mut names = std::fs::read_dir(&dir)
            .map_err(local(&dir))?
            .map(|e| e.map(|e| e.file_name()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(local(&dir))?;
        names.sort();
        let mut subdirs = Vec::new();
        for os_name in names {
            let path = dir.join(&os_name);
            let Some(name) = os_name.to_str() else {
                return Err(SendError::Local(format!(
                    "{}: the name is not UTF-8, which sftp cannot carry; rename it",
                    path.display()
                )));
            };
            let rel = if rel.is_empty() {
                name.to_string()
            } else {
                format!("{rel}/{name}")
            };
            let m = std::fs::symlink_metadata(&path).map_err(local(&path))?;
            let mode = m.permissions().mode() & 0o7777;
            let ft = m.file_type();
            if ft.is_symlink() {
                let target = std::fs::read_link(&path).map_err(local(&path))?;
                let Some(target) = target.to_str() else {
                    return Err(SendError::Local(format!(
                        "{}: the symlink's target is not UTF-8",
                        path.display()
                    )));
                };
                put(out, Entry::symlink(&rel, target).encode())?;
            } else if ft.is_dir() {
                put(out, Entry::dir(&rel, mode).encode())?;
                subdirs.push((path, rel));
            } else if ft.is_file() {
                send_file(&path, &rel, out, progress)?;
            } else {
                eprintln!(
                    "hangar cp: left out {} (not a file, directory or symlink)",
                    path.display()
                );
            }
        }
        stack.extend(subdirs.into_iter().rev());
    }
    Ok(())
}

fn send_file(path: &Path, rel: &str, out: &Sink, progress: &Progress) -> Result<(), SendError> {
    let local = |e: std::io::Error| SendError::Local(io_message(path, &e));
    // O_NOFOLLOW: a file swapped for a symlink since it was listed is an
    // error, not a way to read elsewhere.
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(local)?;
    let m = file.metadata().map_err(local)?;
    let len = m.len();
    put(
        out,
        Entry::file(rel, m.permissions().mode() & 0o7777, len).encode(),
    )?;
    let mut left = len;
    while left > 0 {
        let mut buf = vec![0u8; CHUNK.min(usize::try_from(left).unwrap_or(CHUNK))];
        let n = file.read(&mut buf).map_err(local)?;
        if n == 0 {
            return Err(SendError::Local(format!(
                "{}: shrank while it was copied",
                path.display()
            )));
        }
        buf.truncate(n);
        left -= n as u64;
        progress.add(n as u64);
        put(out, buf)?;
    }
    Ok(())
}

/// Reads one entry header of a tree stream.
pub async fn read_entry(r: &mut (impl AsyncRead + Unpin)) -> Result<Entry, String> {
    let mut fixed = [0u8; FIXED_LEN];
    read_exact(r, &mut fixed).await?;
    let f = Fixed::decode(&fixed).map_err(|e| format!("bad copy stream from the VM: {e}"))?;
    let mut path = vec![0u8; f.path_len as usize];
    read_exact(r, &mut path).await?;
    let mut target = vec![0u8; f.target_len as usize];
    read_exact(r, &mut target).await?;
    f.finish(path, target)
        .map_err(|e| format!("bad copy stream from the VM: {e}"))
}

async fn read_exact(r: &mut (impl AsyncRead + Unpin), buf: &mut [u8]) -> Result<(), String> {
    r.read_exact(buf).await.map(drop).map_err(|e| {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            tree::TreeError::Truncated.to_string()
        } else {
            format!("the copy broke off: {e}")
        }
    })
}

/// The private dir (or file) name a receive builds in, beside `target`.
pub fn temp_beside(target: &Path) -> PathBuf {
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    target.with_file_name(format!(".{name}.hangar-cp-{}", std::process::id()))
}

/// What a received tree held.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Received {
    pub files: u64,
    pub dirs: u64,
    pub symlinks: u64,
    pub bytes: u64,
}

/// Receives a tree stream whose root entry `root` was read already: a dir
/// becomes `target` (which must not exist), a file replaces `target`.
/// Nothing is left at `target` or beside it on failure.
pub async fn receive(
    root: &Entry,
    r: &mut (impl AsyncRead + Unpin),
    target: &Path,
    progress: &Progress,
) -> Result<Received, String> {
    let tmp = temp_beside(target);
    let got = match root.kind {
        EntryKind::File => receive_file(root, r, target, &tmp, progress).await,
        EntryKind::Dir => receive_dir(root, r, target, &tmp, progress).await,
        EntryKind::Error => Err(format!("the VM side failed: {}", root.target)),
        _ => Err("bad copy stream from the VM: it does not start with its root".into()),
    };
    if got.is_err() {
        remove_partial(&tmp);
    }
    got
}

async fn receive_file(
    root: &Entry,
    r: &mut (impl AsyncRead + Unpin),
    target: &Path,
    tmp: &Path,
    progress: &Progress,
) -> Result<Received, String> {
    let bytes = write_new(tmp, root.size, root.mode, r, progress).await?;
    expect_end(r).await?;
    std::fs::rename(tmp, target).map_err(|e| io_message(target, &e))?;
    Ok(Received {
        files: 1,
        bytes,
        ..Received::default()
    })
}

async fn receive_dir(
    root: &Entry,
    r: &mut (impl AsyncRead + Unpin),
    target: &Path,
    tmp: &Path,
    progress: &Progress,
) -> Result<Received, String> {
    if std::fs::symlink_metadata(target).is_ok() {
        return Err(format!(
            "{} already exists: remove it first or copy to a new path",
            target.display()
        ));
    }
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(tmp)
        .map_err(|e| io_message(tmp, &e))?;
    let mut got = Received::default();
    let mut made: HashSet<String> = HashSet::from([String::new()]);
    let mut modes = vec![(tmp.to_path_buf(), root.mode)];
    loop {
        let e = read_entry(r).await?;
        match e.kind {
            EntryKind::End => break,
            EntryKind::Error => return Err(format!("the VM side failed: {}", e.target)),
            _ if e.path.is_empty() || !made.contains(tree::parent_of(&e.path)) => {
                return Err(format!(
                    "bad copy stream from the VM: {:?} does not follow its directory",
                    e.path
                ))
            }
            _ => {}
        }
        let path = tmp.join(&e.path);
        match e.kind {
            EntryKind::Dir => {
                // Owner-writable until the end, then its own mode.
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&path)
                    .map_err(|err| io_message(&target.join(&e.path), &err))?;
                made.insert(e.path.clone());
                modes.push((path, e.mode));
                got.dirs += 1;
            }
            EntryKind::File => {
                got.bytes += write_new(&path, e.size, e.mode, r, progress).await?;
                got.files += 1;
            }
            EntryKind::Symlink => {
                std::os::unix::fs::symlink(&e.target, &path)
                    .map_err(|err| io_message(&target.join(&e.path), &err))?;
                got.symlinks += 1;
            }
            EntryKind::End | EntryKind::Error => {}
        }
    }
    for (dir, mode) in modes.iter().rev() {
        std::fs::set_permissions(
            dir,
            std::fs::Permissions::from_mode(mode & RECEIVED_MODE_MASK),
        )
        .map_err(|e| io_message(dir, &e))?;
    }
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        tmp,
        nix::fcntl::AT_FDCWD,
        target,
        nix::fcntl::RenameFlags::RENAME_NOREPLACE,
    )
    .map_err(|e| io_message(target, &std::io::Error::from(e)))?;
    Ok(got)
}

/// A new file (exclusive, never through a symlink) with exactly `size`
/// bytes of `r`, then its mode.
async fn write_new(
    path: &Path,
    size: u64,
    mode: u32,
    r: &mut (impl AsyncRead + Unpin),
    progress: &Progress,
) -> Result<u64, String> {
    let err = |e: std::io::Error| io_message(path, &e);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
        .map_err(err)?;
    let mut file = tokio::fs::File::from_std(file);
    let mut left = size;
    let mut buf = vec![0u8; CHUNK];
    while left > 0 {
        let want = CHUNK.min(usize::try_from(left).unwrap_or(CHUNK));
        let n = r
            .read(&mut buf[..want])
            .await
            .map_err(|e| format!("the copy broke off: {e}"))?;
        if n == 0 {
            return Err(tree::TreeError::Truncated.to_string());
        }
        file.write_all(&buf[..n]).await.map_err(err)?;
        left -= n as u64;
        progress.add(n as u64);
    }
    file.flush().await.map_err(err)?;
    file.set_permissions(std::fs::Permissions::from_mode(mode & RECEIVED_MODE_MASK))
        .await
        .map_err(err)?;
    Ok(size)
}

async fn expect_end(r: &mut (impl AsyncRead + Unpin)) -> Result<(), String> {
    let e = read_entry(r).await?;
    match e.kind {
        EntryKind::End => Ok(()),
        EntryKind::Error => Err(format!("the VM side failed: {}", e.target)),
        _ => Err("bad copy stream from the VM: more than one file".into()),
    }
}

/// Removes what a failed receive made (its dirs may be read-only by now).
fn remove_partial(tmp: &Path) {
    let Ok(m) = std::fs::symlink_metadata(tmp) else {
        return;
    };
    if !m.is_dir() {
        let _ = std::fs::remove_file(tmp);
        return;
    }
    let mut stack = vec![tmp.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for e in entries.flatten() {
                if e.file_type().is_ok_and(|t| t.is_dir()) {
                    stack.push(e.path());
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(tmp);
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::os::unix::fs::MetadataExt;

    use super::*;

    fn stream(entries: &[(Entry, &[u8])]) -> Vec<u8> {
        let mut v = Vec::new();
        for (e, content) in entries {
            v.extend(e.encode());
            v.extend_from_slice(content);
        }
        v
    }

    async fn receive_bytes(bytes: Vec<u8>, target: &Path) -> Result<Received, String> {
        let mut r = std::io::Cursor::new(bytes);
        let root = read_entry(&mut r).await?;
        receive(&root, &mut r, target, &Progress::start("test")).await
    }

    fn left_in(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_tree_arrives_with_modes_symlinks_and_unicode_names() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        let bytes = stream(&[
            (Entry::dir("", 0o750), b""),
            (Entry::dir("sub", 0o500), b""),
            (Entry::file("sub/ünï cødé", 0o4755, 5), b"hello"),
            (Entry::symlink("link", "sub/ünï cødé"), b""),
            (Entry::end(), b""),
        ]);

        let got = receive_bytes(bytes, &target).await.unwrap();

        assert_eq!(
            got,
            Received {
                files: 1,
                dirs: 1,
                symlinks: 1,
                bytes: 5
            }
        );
        assert_eq!(std::fs::read(target.join("link")).unwrap(), b"hello");
        let file = std::fs::metadata(target.join("sub/ünï cødé")).unwrap();
        assert_eq!(file.mode() & 0o7777, 0o755, "setuid dropped");
        assert_eq!(
            std::fs::metadata(target.join("sub")).unwrap().mode() & 0o7777,
            0o500
        );
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o750);
        assert_eq!(left_in(dir.path()), ["t"]);
        std::fs::set_permissions(target.join("sub"), std::fs::Permissions::from_mode(0o700))
            .unwrap();
    }

    #[tokio::test]
    async fn a_guest_cannot_write_through_a_symlink_it_planted() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        let target = dir.path().join("t");
        let bytes = stream(&[
            (Entry::dir("", 0o755), b""),
            (Entry::symlink("evil", outside.to_str().unwrap()), b""),
            (Entry::file("evil/pwned", 0o644, 1), b"x"),
            (Entry::end(), b""),
        ]);

        let err = receive_bytes(bytes, &target).await.unwrap_err();

        assert!(err.contains("does not follow its directory"), "{err}");
        assert!(left_in(&outside).is_empty());
        assert_eq!(left_in(dir.path()), ["outside"]);
    }

    #[tokio::test]
    async fn a_file_over_a_planted_symlink_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let outside = dir.path().join("victim");
        std::fs::write(&outside, "safe").unwrap();
        let target = dir.path().join("t");
        let bytes = stream(&[
            (Entry::dir("", 0o755), b""),
            (Entry::symlink("f", outside.to_str().unwrap()), b""),
            (Entry::file("f", 0o644, 4), b"evil"),
            (Entry::end(), b""),
        ]);

        let err = receive_bytes(bytes, &target).await.unwrap_err();

        assert!(err.contains("exists"), "{err}");
        assert_eq!(std::fs::read_to_string(&outside).unwrap(), "safe");
        assert_eq!(left_in(dir.path()), ["victim"]);
    }

    #[tokio::test]
    async fn names_that_leave_the_tree_are_refused_before_anything_is_written() {
        for bad in ["../x", "/tmp/x", "a/../../x", "."] {
            let dir = tempfile::tempdir().unwrap();
            let mut bytes = stream(&[(Entry::dir("", 0o755), b"")]);
            let mut e = Entry::file("placeholder", 0o644, 0).encode();
            // Forge the path past the sender's checks.
            e.truncate(13);
            e.extend((bad.len() as u32).to_be_bytes());
            e.extend(0u32.to_be_bytes());
            e.extend(bad.as_bytes());
            bytes.extend(e);

            let err = receive_bytes(bytes, &dir.path().join("t"))
                .await
                .unwrap_err();

            assert!(err.contains("not a plain relative path"), "{bad}: {err}");
            assert!(left_in(dir.path()).is_empty(), "{bad}");
        }
    }

    #[tokio::test]
    async fn a_stream_that_breaks_off_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let bytes = stream(&[
            (Entry::dir("", 0o755), b""),
            (Entry::dir("d", 0o555), b""),
            (Entry::file("d/f", 0o644, 10), b"short"),
        ]);

        let err = receive_bytes(bytes, &dir.path().join("t"))
            .await
            .unwrap_err();

        assert!(err.contains("ended early"), "{err}");
        assert!(left_in(dir.path()).is_empty());
    }

    #[tokio::test]
    async fn an_existing_destination_dir_is_never_merged_into() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("t");
        std::fs::create_dir(&target).unwrap();
        let bytes = stream(&[(Entry::dir("", 0o755), b""), (Entry::end(), b"")]);

        let err = receive_bytes(bytes, &target).await.unwrap_err();

        assert!(err.contains("already exists"), "{err}");
        assert_eq!(left_in(dir.path()), ["t"]);
    }

    #[tokio::test]
    async fn a_local_tree_is_sent_as_the_stream_it_is_received_from() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("src");
        std::fs::create_dir_all(src.join("b")).unwrap();
        std::fs::write(src.join("b/ü.txt"), "data").unwrap();
        std::fs::set_permissions(src.join("b/ü.txt"), std::fs::Permissions::from_mode(0o640))
            .unwrap();
        std::os::unix::fs::symlink("b/ü.txt", src.join("a-link")).unwrap();
        let (tx, mut rx) = mpsc::channel(1024);
        let walk_src = src.clone();

        tokio::task::spawn_blocking(move || {
            send_local_tree(&walk_src, &tx, &Progress::start("test"))
        })
        .await
        .unwrap()
        .unwrap();
        let mut bytes = Vec::new();
        while let Some(b) = rx.recv().await {
            bytes.extend_from_slice(&b.unwrap());
        }
        let target = dir.path().join("copy");
        receive_bytes(bytes, &target).await.unwrap();

        assert_eq!(
            std::fs::read_link(target.join("a-link")).unwrap(),
            Path::new("b/ü.txt")
        );
        assert_eq!(
            std::fs::read_to_string(target.join("b/ü.txt")).unwrap(),
            "data"
        );
        assert_eq!(
            std::fs::metadata(target.join("b/ü.txt")).unwrap().mode() & 0o777,
            0o640
        );
    }
}
