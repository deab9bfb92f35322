//! The OpenSSH sftp extensions clients rely on (OpenSSH's PROTOCOL file,
//! section 4): `posix-rename` (a rename that replaces the target: what
//! `sftp rename`, sshfs and most libraries use), `statvfs` (`df`),
//! `hardlink` (`ln`), `fsync` (`put -f`), `copy-data` (`sftp copy`) and
//! `users-groups-by-id` (names in `sftp ls -l`, see [`crate::sftp_names`]).
//! Parsing and the path-only operations live here; the ones that use open
//! handles are applied by the sftp server itself.

use std::io;
use std::path::Path;

use russh_sftp::protocol::{ExtendedReply, Packet, StatusCode};
use russh_sftp::server::StatusReply;

/// Advertised in the version reply, with OpenSSH's extension versions.
pub const ADVERTISED: [(&str, &str); 6] = [
    ("posix-rename@openssh.com", "1"),
    ("statvfs@openssh.com", "2"),
    ("hardlink@openssh.com", "1"),
    ("fsync@openssh.com", "1"),
    ("copy-data", "1"),
    ("users-groups-by-id@openssh.com", "1"),
];

/// One extended request, decoded.
#[derive(Debug, PartialEq, Eq)]
pub enum Request {
    PosixRename { from: String, to: String },
    Statvfs { path: String },
    Hardlink { target: String, link: String },
    Fsync { handle: String },
    CopyData(CopyData),
    UsersGroupsById { uids: Vec<u32>, gids: Vec<u32> },
    Unsupported,
}

#[derive(Debug, PartialEq, Eq)]
pub struct CopyData {
    pub read_handle: String,
    pub read_offset: u64,
    /// 0: until the end of the file.
    pub length: u64,
    pub write_handle: String,
    pub write_offset: u64,
}

pub fn parse(request: &str, data: &[u8]) -> Result<Request, StatusReply> {
    let mut r = Reader(data);
    let req = match request {
        "posix-rename@openssh.com" => Request::PosixRename {
            from: r.string()?,
            to: r.string()?,
        },
        "statvfs@openssh.com" => Request::Statvfs { path: r.string()? },
        "hardlink@openssh.com" => Request::Hardlink {
            target: r.string()?,
            link: r.string()?,
        },
        "fsync@openssh.com" => Request::Fsync {
            handle: r.string()?,
        },
        "copy-data" => Request::CopyData(CopyData {
            read_handle: r.string()?,
            read_offset: r.u64()?,
            length: r.u64()?,
            write_handle: r.string()?,
            write_offset: r.u64()?,
        }),
        "users-groups-by-id@openssh.com" => Request::UsersGroupsById {
            uids: r.ids()?,
            gids: r.ids()?,
        },
        _ => Request::Unsupported,
    };
    Ok(req)
}

/// The `statvfs@openssh.com` reply for `path`.
pub fn statvfs(id: u32, path: &Path) -> io::Result<Packet> {
    use nix::sys::statvfs::FsFlags;
    let st = nix::sys::statvfs::statvfs(path).map_err(io::Error::from)?;
    // SSH2_FXE_STATVFS_ST_RDONLY and _ST_NOSUID.
    let mut flags = 0u64;
    if st.flags().contains(FsFlags::ST_RDONLY) {
        flags |= 1;
    }
    if st.flags().contains(FsFlags::ST_NOSUID) {
        flags |= 2;
    }
    let fields = [
        st.block_size() as u64,
        st.fragment_size() as u64,
        st.blocks() as u64,
        st.blocks_free() as u64,
        st.blocks_available() as u64,
        st.files() as u64,
        st.files_free() as u64,
        st.files_available() as u64,
        st.filesystem_id() as u64,
        flags,
        st.name_max() as u64,
    ];
    let data = fields.iter().flat_map(|f| f.to_be_bytes()).collect();
    Ok(Packet::ExtendedReply(ExtendedReply { id, data }))
}

/// SSH wire fields from an extended request's data.
struct Reader<'a>(&'a [u8]);

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], StatusReply> {
        if self.0.len() < n {
            return Err(StatusCode::BadMessage.with_message("truncated extended request"));
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn u32(&mut self) -> Result<u32, StatusReply> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, StatusReply> {
        let hi = u64::from(self.u32()?);
        let lo = u64::from(self.u32()?);
        Ok(hi << 32 | lo)
    }

    /// A string holding packed uint32s.
    fn ids(&mut self) -> Result<Vec<u32>, StatusReply> {
        let n = self.u32()? as usize;
        let mut inner = Reader(self.take(n)?);
        let mut ids = Vec::with_capacity(n / 4);
        while !inner.0.is_empty() {
            ids.push(inner.u32()?);
        }
        Ok(ids)
    }

    fn string(&mut self) -> Result<String, StatusReply> {
        let n = self.u32()? as usize;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map_err(|_| StatusCode::BadMessage.with_message("a path that is not UTF-8"))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn string(out: &mut Vec<u8>, s: &str) {
        out.extend_from_slice(&(s.len() as u32).to_be_bytes());
        out.extend_from_slice(s.as_bytes());
    }

    #[test]
    fn requests_are_decoded_and_truncated_ones_refused() {
        let mut d = Vec::new();
        string(&mut d, "/a");
        string(&mut d, "/b");
        assert_eq!(
            parse("posix-rename@openssh.com", &d).unwrap(),
            Request::PosixRename {
                from: "/a".into(),
                to: "/b".into()
            }
        );
        let mut c = Vec::new();
        string(&mut c, "1");
        c.extend_from_slice(&7u64.to_be_bytes());
        c.extend_from_slice(&0u64.to_be_bytes());
        string(&mut c, "2");
        c.extend_from_slice(&((1u64 << 40) + 3).to_be_bytes());
        let Request::CopyData(cd) = parse("copy-data", &c).unwrap() else {
            panic!("not copy-data");
        };
        assert_eq!(
            (cd.read_offset, cd.length, cd.write_offset),
            (7, 0, (1 << 40) + 3)
        );
        assert!(parse("hardlink@openssh.com", &d[..5]).is_err());
        assert_eq!(
            parse("nope@example.com", &[]).unwrap(),
            Request::Unsupported
        );
    }

    #[test]
    fn statvfs_reports_eleven_fields() {
        let Packet::ExtendedReply(r) = statvfs(9, Path::new("/")).unwrap() else {
            panic!("not an extended reply");
        };
        assert_eq!((r.id, r.data.len()), (9, 11 * 8));
    }
}
