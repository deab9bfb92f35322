//! How the sftp server names files' owners: `ls -l` lines (the
//! "longname" of READDIR entries, what most graphical clients show) in
//! OpenSSH's `sftp-server` format, and the `users-groups-by-id@openssh.com`
//! extension OpenSSH's own `sftp` uses to print names itself. Names come
//! from the image's /etc/passwd and /etc/group (the agent has no NSS);
//! times are UTC (the agent has no time zone data).

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use russh_sftp::protocol::{ExtendedReply, Packet};

/// uid and gid to name maps.
#[derive(Debug, Default)]
pub struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    /// From `root/etc/passwd` and `root/etc/group`; missing files give
    /// numbers instead of names.
    pub fn load(root: &Path) -> Names {
        Names {
            users: id_names(&root.join("etc/passwd")),
            groups: id_names(&root.join("etc/group")),
        }
    }

    fn user(&self, uid: u32) -> Option<&str> {
        self.users.get(&uid).map(String::as_str)
    }

    fn group(&self, gid: u32) -> Option<&str> {
        self.groups.get(&gid).map(String::as_str)
    }
}

/// name:x:ID:... lines; the first name of an id wins (as getpwuid).
fn id_names(file: &Path) -> HashMap<u32, String> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut map = HashMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split(':').collect();
        if let (Some(name), Some(Ok(id))) = (f.first(), f.get(2).map(|s| s.parse::<u32>())) {
            map.entry(id).or_insert_with(|| name.to_string());
        }
    }
    map
}

/// `ls -l` line as OpenSSH's sftp-server makes it (`ls_file`):
/// `-rw-r--r--    1 root     root         1234 Sep  9 01:46 name`.
pub fn longname(name: &str, m: &std::fs::Metadata, names: &Names, now: i64) -> String {
    let uid = m.uid().to_string();
    let gid = m.gid().to_string();
    let user = names.user(m.uid()).unwrap_or(&uid);
    let group = names.group(m.gid()).unwrap_or(&gid);
    format!(
        "{} {:>3} {:<8} {:<8} {:>8} {} {}",
        mode_string(m.mode()),
        m.nlink(),
        user,
        group,
        m.size(),
        date(m.mtime(), now),
        name
    )
}

/// BSD `strmode`: type, rwx with s/S/t/T, and a trailing space.
fn mode_string(mode: u32) -> String {
    let kind = match mode & libc::S_IFMT {
        libc::S_IFDIR => 'd',
        libc::S_IFLNK => 'l',
        libc::S_IFCHR => 'c',
        libc::S_IFBLK => 'b',
        libc::S_IFIFO => 'p',
        libc::S_IFSOCK => 's',
        _ => '-',
    };
    let mut s = String::with_capacity(11);
    s.push(kind);
    let special = [
        (libc::S_ISUID, 's', 'S'),
        (libc::S_ISGID, 's', 'S'),
        (libc::S_ISVTX, 't', 'T'),
    ];
    for (i, shift) in [6u32, 3, 0].into_iter().enumerate() {
        let bits = (mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        let (flag, with_x, without_x) = special[i];
        s.push(match (mode & flag != 0, bits & 1 != 0) {
            (true, true) => with_x,
            (true, false) => without_x,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s.push(' ');
    s
}

const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// `%b %e %H:%M` for the last six months, else `%b %e  %Y` (as ls).
fn date(mtime: i64, now: i64) -> String {
    let days = mtime.div_euclid(86_400);
    let secs = mtime.rem_euclid(86_400);
    let (year, month, day) = civil_from_days(days);
    let mon = MONTHS[(month - 1) as usize];
    let recent = now - 365 * 24 * 60 * 60 / 2 < mtime && now >= mtime;
    if recent {
        format!("{mon} {day:>2} {:02}:{:02}", secs / 3600, secs % 3600 / 60)
    } else {
        format!("{mon} {day:>2}  {year}")
    }
}

/// Days since 1970-01-01 to (year, month 1-12, day 1-31), proleptic
/// Gregorian (H. Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// The `users-groups-by-id@openssh.com` reply: one name per id asked for
/// (empty when unknown), users then groups, each list packed in a string.
pub fn users_groups_reply(id: u32, uids: &[u32], gids: &[u32], names: &Names) -> Packet {
    let pack = |list: Vec<&str>| {
        let mut inner = Vec::new();
        for n in list {
            inner.extend_from_slice(&(n.len() as u32).to_be_bytes());
            inner.extend_from_slice(n.as_bytes());
        }
        inner
    };
    let users = pack(uids.iter().map(|u| names.user(*u).unwrap_or("")).collect());
    let groups = pack(gids.iter().map(|g| names.group(*g).unwrap_or("")).collect());
    let mut data = Vec::with_capacity(8 + users.len() + groups.len());
    for part in [users, groups] {
        data.extend_from_slice(&(part.len() as u32).to_be_bytes());
        data.extend_from_slice(&part);
    }
    Packet::ExtendedReply(ExtendedReply { id, data })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn modes_dates_and_names_read_like_openssh() {
        assert_eq!(mode_string(libc::S_IFREG | 0o640), "-rw-r----- ");
        assert_eq!(mode_string(libc::S_IFDIR | 0o1777), "drwxrwxrwt ");
        assert_eq!(mode_string(libc::S_IFREG | 0o4754), "-rwsr-xr-- ");
        assert_eq!(mode_string(libc::S_IFREG | 0o2644), "-rw-r-Sr-- ");
        // 2001-09-09 01:46:40 UTC, long ago and a minute ago.
        assert_eq!(date(1_000_000_000, 1_700_000_000), "Sep  9  2001");
        assert_eq!(date(1_000_000_000, 1_000_000_060), "Sep  9 01:46");
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
        assert_eq!(civil_from_days(-1), (1969, 12, 31));

        let t = tempfile::tempdir().unwrap();
        std::fs::create_dir(t.path().join("etc")).unwrap();
        std::fs::write(
            t.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nbad\n",
        )
        .unwrap();
        std::fs::write(t.path().join("etc/group"), "wheel:x:10:\n").unwrap();
        let names = Names::load(t.path());
        let f = t.path().join("f");
        std::fs::write(&f, b"12345").unwrap();
        let m = std::fs::metadata(&f).unwrap();
        let line = longname("f", &m, &names, m.mtime() + 60);
        let user = names
            .user(m.uid())
            .map_or(m.uid().to_string(), str::to_string);
        assert!(line.starts_with("-rw-"), "{line}");
        assert!(line.contains(&format!("   1 {user:<8} ")), "{line}");
        assert!(line.ends_with(" f"), "{line}");
        let Packet::ExtendedReply(r) = users_groups_reply(3, &[0, 7], &[10], &names) else {
            panic!("not an extended reply");
        };
        // users: "root", ""; groups: "wheel".
        let mut want = Vec::new();
        want.extend_from_slice(&12u32.to_be_bytes());
        want.extend_from_slice(&4u32.to_be_bytes());
        want.extend_from_slice(b"root");
        want.extend_from_slice(&0u32.to_be_bytes());
        want.extend_from_slice(&9u32.to_be_bytes());
        want.extend_from_slice(&5u32.to_be_bytes());
        want.extend_from_slice(b"wheel");
        assert_eq!(r.data, want);
    }
}
