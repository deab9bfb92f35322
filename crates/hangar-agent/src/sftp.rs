//! `hangar-agent sftp-server`: the sftp subsystem (protocol version 3, as
//! OpenSSH's `sftp-server`) on stdin/stdout. The SSH server starts it as
//! the logged-in user, so the kernel enforces that user's rights on every
//! path; nothing here checks permissions itself.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use russh_sftp::protocol::{
    Attrs, Data, File as NameEntry, FileAttributes, Handle, Name, OpenFlags, Packet, Status,
    StatusCode, Version,
};
use russh_sftp::server::StatusReply;

use crate::sftp_ext::{self, CopyData, Request};
use crate::sftp_names::{self, Names};

/// Largest read served in one packet (OpenSSH's limit too).
const MAX_READ: u32 = 256 * 1024;
/// Entries returned per READDIR.
const DIR_BATCH: usize = 128;
/// Open handles per session; a client leaking handles gets an error.
const MAX_HANDLES: usize = 1024;

pub async fn serve_stdio() -> anyhow::Result<()> {
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let stream = tokio::io::join(tokio::io::stdin(), tokio::io::stdout());
    russh_sftp::server::run(stream, Sftp::new(done_tx)).await;
    // `run` serves on its own task; the handler is dropped when the client
    // closes the stream.
    let _ = done_rx.await;
    Ok(())
}

enum Open {
    File(File),
    Dir { entries: Vec<NameEntry>, sent: bool },
}

pub struct Sftp {
    handles: HashMap<String, Open>,
    next: u64,
    done: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for Sftp {
    fn drop(&mut self) {
        if let Some(d) = self.done.take() {
            let _ = d.send(());
        }
    }
}

impl Sftp {
    fn new(done: tokio::sync::oneshot::Sender<()>) -> Sftp {
        Sftp {
            handles: HashMap::new(),
            next: 0,
            done: Some(done),
        }
    }

    fn add(&mut self, open: Open) -> Result<String, StatusReply> {
        if self.handles.len() >= MAX_HANDLES {
            return Err(StatusCode::Failure.with_message("too many open handles"));
        }
        self.next += 1;
        let h = self.next.to_string();
        self.handles.insert(h.clone(), open);
        Ok(h)
    }

    /// `copy-data`: bytes from one open file to another, server side.
    fn copy_data(&mut self, c: &CopyData) -> Result<(), StatusReply> {
        if c.read_handle == c.write_handle {
            return Err(StatusCode::Failure.with_message("copy-data within one handle"));
        }
        let mut from = self.file(&c.read_handle)?.try_clone().map_err(err)?;
        let to = self.file(&c.write_handle)?;
        from.seek(SeekFrom::Start(c.read_offset)).map_err(err)?;
        to.seek(SeekFrom::Start(c.write_offset)).map_err(err)?;
        let limit = if c.length == 0 { u64::MAX } else { c.length };
        std::io::copy(&mut (&mut from).take(limit), to).map_err(err)?;
        Ok(())
    }

    fn file(&mut self, handle: &str) -> Result<&mut File, StatusReply> {
        match self.handles.get_mut(handle) {
            Some(Open::File(f)) => Ok(f),
            _ => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Success".into(),
        language_tag: "en-US".into(),
    }
}

fn err(e: std::io::Error) -> StatusReply {
    let code = match e.kind() {
        std::io::ErrorKind::NotFound => StatusCode::NoSuchFile,
        std::io::ErrorKind::PermissionDenied => StatusCode::PermissionDenied,
        _ => StatusCode::Failure,
    };
    code.with_message(e.to_string())
}

/// Attributes as OpenSSH reports them (mode with the file type bits).
pub fn attrs(m: &std::fs::Metadata) -> FileAttributes {
    FileAttributes {
        size: Some(m.size()),
        uid: Some(m.uid()),
        gid: Some(m.gid()),
        permissions: Some(m.mode()),
        atime: Some(m.atime().clamp(0, u32::MAX as i64) as u32),
        mtime: Some(m.mtime().clamp(0, u32::MAX as i64) as u32),
        ..Default::default()
    }
}

fn apply_attrs(path: &Path, a: &FileAttributes) -> std::io::Result<()> {
    if let Some(size) = a.size {
        OpenOptions::new().write(true).open(path)?.set_len(size)?;
    }
    if let Some(mode) = a.permissions {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode & 0o7777))?;
    }
    if a.uid.is_some() || a.gid.is_some() {
        std::os::unix::fs::chown(path, a.uid, a.gid)?;
    }
    if let (Some(atime), Some(mtime)) = (a.atime, a.mtime) {
        let t = |s: u32| nix::sys::time::TimeSpec::new(i64::from(s), 0);
        nix::sys::stat::utimensat(
            nix::fcntl::AT_FDCWD,
            path,
            &t(atime),
            &t(mtime),
            nix::sys::stat::UtimensatFlags::FollowSymlink,
        )
        .map_err(std::io::Error::from)?;
    }
    Ok(())
}

impl russh_sftp::server::Handler for Sftp {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.into()
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        let mut v = Version::new();
        for (name, version) in sftp_ext::ADVERTISED {
            v.extensions.insert(name.into(), version.into());
        }
        Ok(v)
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let mut o = OpenOptions::new();
        o.read(pflags.contains(OpenFlags::READ))
            .write(pflags.contains(OpenFlags::WRITE))
            .append(pflags.contains(OpenFlags::APPEND))
            .truncate(pflags.contains(OpenFlags::TRUNCATE));
        if pflags.contains(OpenFlags::CREATE) {
            if pflags.contains(OpenFlags::EXCLUDE) {
                o.create_new(true);
            } else {
                o.create(true);
            }
        }
        o.mode(attrs.permissions.map_or(0o666, |p| p & 0o7777));
        let f = o.open(&filename).map_err(err)?;
        let handle = self.add(Open::File(f))?;
        Ok(Handle { id, handle })
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            Some(_) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        let f = self.file(&handle)?;
        f.seek(SeekFrom::Start(offset)).map_err(err)?;
        let mut data = vec![0u8; len.min(MAX_READ) as usize];
        let n = f.read(&mut data).map_err(err)?;
        if n == 0 && len > 0 {
            return Err(StatusCode::Eof.into());
        }
        data.truncate(n);
        Ok(Data { id, data })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        let f = self.file(&handle)?;
        f.seek(SeekFrom::Start(offset)).map_err(err)?;
        f.write_all(&data).map_err(err)?;
        Ok(ok(id))
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let m = std::fs::symlink_metadata(&path).map_err(err)?;
        Ok(Attrs {
            id,
            attrs: attrs(&m),
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let m = std::fs::metadata(&path).map_err(err)?;
        Ok(Attrs {
            id,
            attrs: attrs(&m),
        })
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let m = self.file(&handle)?.metadata().map_err(err)?;
        Ok(Attrs {
            id,
            attrs: attrs(&m),
        })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        apply_attrs(Path::new(&path), &attrs).map_err(err)?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        handle: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let f = self.file(&handle)?;
        // Through /proc/self/fd so the same checks as setstat apply.
        use std::os::fd::AsRawFd;
        let path = PathBuf::from(format!("/proc/self/fd/{}", f.as_raw_fd()));
        if let Some(size) = attrs.size {
            f.set_len(size).map_err(err)?;
        }
        let rest = FileAttributes {
            size: None,
            ..attrs
        };
        apply_attrs(&path, &rest).map_err(err)?;
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let names = Names::load(Path::new("/"));
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() as i64);
        let longname =
            |name: &str, m: &std::fs::Metadata| sftp_names::longname(name, m, &names, now);
        let mut entries = Vec::new();
        for name in [".", ".."] {
            if let Ok(m) = std::fs::symlink_metadata(Path::new(&path).join(name)) {
                entries.push(NameEntry {
                    filename: name.into(),
                    longname: longname(name, &m),
                    attrs: attrs(&m),
                });
            }
        }
        for e in std::fs::read_dir(&path).map_err(err)? {
            let e = e.map_err(err)?;
            let name = e.file_name().to_string_lossy().into_owned();
            if let Ok(m) = std::fs::symlink_metadata(e.path()) {
                entries.push(NameEntry {
                    longname: longname(&name, &m),
                    filename: name,
                    attrs: attrs(&m),
                });
            }
        }
        let handle = self.add(Open::Dir {
            entries,
            sent: false,
        })?;
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Dir { entries, sent }) => {
                if entries.is_empty() && *sent {
                    return Err(StatusCode::Eof.into());
                }
                *sent = true;
                let n = entries.len().min(DIR_BATCH);
                if n == 0 {
                    return Err(StatusCode::Eof.into());
                }
                let files = entries.drain(..n).collect();
                Ok(Name { id, files })
            }
            _ => Err(StatusCode::Failure.with_message("invalid handle")),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        std::fs::remove_file(&filename).map_err(err)?;
        Ok(ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .mode(attrs.permissions.map_or(0o777, |p| p & 0o7777))
            .create(&path)
            .map_err(err)?;
        Ok(ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        std::fs::remove_dir(&path).map_err(err)?;
        Ok(ok(id))
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        // Relative paths are relative to the user's home (the cwd).
        let p = if path.is_empty() {
            ".".to_string()
        } else {
            path
        };
        let resolved = std::fs::canonicalize(&p).unwrap_or_else(|_| normalize(&p));
        let name = resolved.to_string_lossy().into_owned();
        Ok(Name {
            id,
            files: vec![NameEntry::dummy(name)],
        })
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        // SFTP v3 rename must not overwrite (OpenSSH uses link+unlink);
        // clients that want overwrite use posix-rename, unsupported here.
        if std::fs::symlink_metadata(&newpath).is_ok() {
            return Err(StatusCode::Failure.with_message("target exists"));
        }
        std::fs::rename(&oldpath, &newpath).map_err(err)?;
        Ok(ok(id))
    }

    async fn readlink(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let target = std::fs::read_link(&path).map_err(err)?;
        Ok(Name {
            id,
            files: vec![NameEntry::dummy(target.to_string_lossy().into_owned())],
        })
    }

    async fn symlink(
        &mut self,
        id: u32,
        linkpath: String,
        targetpath: String,
    ) -> Result<Status, Self::Error> {
        // OpenSSH's sftp-server swaps the arguments (a long-standing quirk
        // every client relies on): the first is the target.
        std::os::unix::fs::symlink(&linkpath, &targetpath).map_err(err)?;
        Ok(ok(id))
    }

    async fn extended(
        &mut self,
        id: u32,
        request: String,
        data: Vec<u8>,
    ) -> Result<Packet, Self::Error> {
        match sftp_ext::parse(&request, &data)? {
            Request::PosixRename { from, to } => std::fs::rename(from, to).map_err(err)?,
            Request::Hardlink { target, link } => std::fs::hard_link(target, link).map_err(err)?,
            Request::Statvfs { path } => {
                return sftp_ext::statvfs(id, Path::new(&path)).map_err(err)
            }
            Request::Fsync { handle } => self.file(&handle)?.sync_all().map_err(err)?,
            Request::CopyData(c) => self.copy_data(&c)?,
            Request::UsersGroupsById { uids, gids } => {
                let names = Names::load(Path::new("/"));
                return Ok(sftp_names::users_groups_reply(id, &uids, &gids, &names));
            }
            Request::Unsupported => return Err(StatusCode::OpUnsupported.into()),
        }
        Ok(Packet::Status(ok(id)))
    }
}

/// Lexical `.`/`..` cleanup for paths that do not exist yet.
fn normalize(p: &str) -> PathBuf {
    let base = if p.starts_with('/') {
        PathBuf::from("/")
    } else {
        std::env::current_dir().unwrap_or_else(|_| PathBuf::from("/"))
    };
    let mut out = base;
    for part in p.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                out.pop();
            }
            other => out.push(other),
        }
    }
    out
}
