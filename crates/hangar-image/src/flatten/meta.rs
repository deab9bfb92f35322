//! An entry's metadata (mode, numeric owner, mtime, xattrs) and how it is
//! applied: through the entry's own fd where there is one, otherwise with
//! *at calls that do not follow the final component.

use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;
use nix::fcntl::AtFlags;
use nix::sys::stat::{
    fchmod, fchmodat, fstatat, futimens, utimensat, FchmodatFlags, Mode, SFlag, UtimensatFlags,
};
use nix::sys::time::TimeSpec;
use nix::unistd::{fchown, fchownat, Gid, Uid};

const XATTR_PREFIX: &[u8] = b"SCHILY.xattr.";

/// What of a header is applied to the created entry. uname/gname are
/// ignored: the image's own /etc/passwd gives the numeric ids meaning.
#[derive(Debug, Clone)]
pub(crate) struct Meta {
    /// Permission bits including setuid/setgid/sticky.
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub mtime: TimeSpec,
    pub xattrs: Vec<(Vec<u8>, Vec<u8>)>,
}

/// Reads the metadata of `entry`, PAX records included. Must run before
/// the content is read (PAX records are part of the entry's headers).
pub(crate) fn read_meta<R: Read>(entry: &mut tar::Entry<'_, R>) -> Result<Meta, String> {
    let header = entry.header();
    let mode = header.mode().map_err(|e| format!("bad mode field: {e}"))? & 0o7777;
    let uid = id(header.uid(), "uid")?;
    let gid = id(header.gid(), "gid")?;
    let secs = header
        .mtime()
        .map_err(|e| format!("bad mtime field: {e}"))?;
    let mut mtime = TimeSpec::new(i64::try_from(secs).map_err(|_| "mtime out of range")?, 0);
    let mut xattrs = Vec::new();
    if let Some(exts) = entry
        .pax_extensions()
        .map_err(|e| format!("bad PAX header: {e}"))?
    {
        for ext in exts {
            let ext = ext.map_err(|e| format!("bad PAX record: {e}"))?;
            if let Some(name) = ext.key_bytes().strip_prefix(XATTR_PREFIX) {
                xattrs.push((name.to_vec(), ext.value_bytes().to_vec()));
            } else if ext.key_bytes() == b"mtime" {
                // PAX mtimes carry sub-second precision the header lacks.
                if let Some(t) = parse_pax_time(ext.value_bytes()) {
                    mtime = t;
                }
            }
        }
    }
    Ok(Meta {
        mode,
        uid,
        gid,
        mtime,
        xattrs,
    })
}

fn id(v: std::io::Result<u64>, what: &str) -> Result<u32, String> {
    let v = v.map_err(|e| format!("bad {what} field: {e}"))?;
    u32::try_from(v).map_err(|_| format!("{what} {v} is out of range"))
}

/// `1700000000.123456789` → seconds and nanoseconds (negative times are
/// not worth supporting and keep the header value).
fn parse_pax_time(v: &[u8]) -> Option<TimeSpec> {
    let s = std::str::from_utf8(v).ok()?;
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    let digits: String = frac.chars().take(9).collect();
    let nanos: i64 = if digits.is_empty() {
        0
    } else {
        format!("{digits:0<9}").parse().ok()?
    };
    (secs >= 0).then(|| TimeSpec::new(secs, nanos))
}

fn owner(meta: &Meta) -> (Option<Uid>, Option<Gid>) {
    (Some(Uid::from_raw(meta.uid)), Some(Gid::from_raw(meta.gid)))
}

/// Owner, then mode (chown clears setuid/setgid), then xattrs (chown also
/// drops security.capability) on an open file or directory.
pub(crate) fn apply_fd(fd: BorrowedFd, meta: &Meta) -> Result<(), String> {
    let (u, g) = owner(meta);
    fchown(fd, u, g).map_err(|e| format!("chown {}:{}: {e}", meta.uid, meta.gid))?;
    fchmod(fd, Mode::from_bits_truncate(meta.mode))
        .map_err(|e| format!("chmod {:o}: {e}", meta.mode))?;
    for (name, value) in &meta.xattrs {
        set_xattr(fd, name, value)?;
    }
    Ok(())
}

pub(crate) fn set_mtime_fd(fd: BorrowedFd, mtime: &TimeSpec) -> Result<(), String> {
    futimens(fd, mtime, mtime).map_err(|e| format!("set mtime: {e}"))
}

fn set_xattr(fd: BorrowedFd, name: &[u8], value: &[u8]) -> Result<(), String> {
    let shown = String::from_utf8_lossy(name).into_owned();
    let cname = CString::new(name).map_err(|_| format!("xattr name {shown:?} contains NUL"))?;
    // SAFETY: fd is a live descriptor for the call's duration, cname is a
    // NUL-terminated string and value points to value.len() readable bytes.
    let rc = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            cname.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(rc)
        .map(drop)
        .map_err(|e| format!("set xattr {shown:?}: {e}"))
}

/// Owner and mtime of a symlink (whose mode means nothing) by name.
pub(crate) fn apply_symlink(dir: BorrowedFd, name: &[u8], meta: &Meta) -> Result<(), String> {
    skip_xattrs(meta, "symlink");
    let (u, g) = owner(meta);
    fchownat(dir, name, u, g, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| format!("chown {}:{}: {e}", meta.uid, meta.gid))?;
    set_mtime_at(dir, name, &meta.mtime)
}

/// Owner, mode and mtime of a device node or FIFO by name (they cannot be
/// opened without side effects, and xattrs are not carried for them).
pub(crate) fn apply_node(dir: BorrowedFd, name: &[u8], meta: &Meta) -> Result<(), String> {
    skip_xattrs(meta, "device node or FIFO");
    let (u, g) = owner(meta);
    fchownat(dir, name, u, g, AtFlags::AT_SYMLINK_NOFOLLOW)
        .map_err(|e| format!("chown {}:{}: {e}", meta.uid, meta.gid))?;
    chmod_nofollow(dir, name, meta.mode).map_err(|e| format!("chmod {:o}: {e}", meta.mode))?;
    set_mtime_at(dir, name, &meta.mtime)
}

/// xattrs on symlinks and nodes would need l*xattr by name; images do not
/// rely on them, so they are dropped (visibly, in debug logs).
fn skip_xattrs(meta: &Meta, what: &str) {
    if !meta.xattrs.is_empty() {
        tracing::debug!(count = meta.xattrs.len(), "not applying xattrs to a {what}");
    }
}

fn set_mtime_at(dir: BorrowedFd, name: &[u8], mtime: &TimeSpec) -> Result<(), String> {
    utimensat(dir, name, mtime, mtime, UtimensatFlags::NoFollowSymlink)
        .map_err(|e| format!("set mtime: {e}"))
}

/// fchmodat2(AT_SYMLINK_NOFOLLOW) (Linux 6.6+): fchmodat(2) itself has no
/// working no-follow flag, and the final component must never be followed.
fn chmod_nofollow(dir: BorrowedFd, name: &[u8], mode: u32) -> nix::Result<()> {
    let cname = CString::new(name).map_err(|_| Errno::EINVAL)?;
    // SAFETY: dir is live, cname is NUL-terminated; fchmodat2 reads only them.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_fchmodat2,
            dir.as_raw_fd(),
            cname.as_ptr(),
            mode as libc::c_uint,
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    match Errno::result(rc) {
        Err(Errno::ENOSYS) => chmod_checked(dir, name, mode),
        other => other.map(drop),
    }
}

/// Older kernels (Debian 12's 6.1): check that `name` is not a symlink,
/// then chmod by name. The node was created by us a moment ago in a root
/// only the daemon can reach, so nothing can swap it in between.
pub(crate) fn chmod_checked(dir: BorrowedFd, name: &[u8], mode: u32) -> nix::Result<()> {
    let st = fstatat(dir, name, AtFlags::AT_SYMLINK_NOFOLLOW)?;
    if SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT == SFlag::S_IFLNK {
        return Err(Errno::ELOOP);
    }
    fchmodat(
        dir,
        name,
        Mode::from_bits_truncate(mode),
        FchmodatFlags::FollowSymlink,
    )
}
