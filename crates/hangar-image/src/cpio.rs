//! A minimal newc (SVR4, no CRC) cpio writer: what the kernel unpacks as an
//! initramfs. Written here so building an image needs no `cpio` binary and
//! owners/modes do not depend on the build host.

/// An archive being built in memory (initramfs are a few MB).
#[derive(Default)]
pub struct CpioWriter {
    buf: Vec<u8>,
    ino: u32,
}

const S_IFDIR: u32 = 0o040000;
const S_IFREG: u32 = 0o100000;
const S_IFLNK: u32 = 0o120000;
const S_IFCHR: u32 = 0o020000;

impl CpioWriter {
    pub fn new() -> Self {
        CpioWriter {
            buf: Vec::new(),
            ino: 1,
        }
    }

    fn entry(&mut self, name: &str, mode: u32, rdev: (u32, u32), data: &[u8]) {
        let nlink = if mode & S_IFDIR == S_IFDIR { 2 } else { 1 };
        let namesize = name.len() + 1;
        let header = format!(
            "070701{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}{:08x}",
            self.ino,
            mode,
            0, // uid
            0, // gid
            nlink,
            0, // mtime
            data.len(),
            0,
            0,
            rdev.0,
            rdev.1,
            namesize,
            0, // check
        );
        self.ino += 1;
        self.buf.extend_from_slice(header.as_bytes());
        self.buf.extend_from_slice(name.as_bytes());
        self.buf.push(0);
        self.pad4();
        self.buf.extend_from_slice(data);
        self.pad4();
    }

    fn pad4(&mut self) {
        let len = self.buf.len();
        self.buf.resize(len.next_multiple_of(4), 0);
    }

    pub fn dir(&mut self, name: &str, perm: u32) {
        self.entry(name, S_IFDIR | perm, (0, 0), &[]);
    }

    pub fn file(&mut self, name: &str, perm: u32, data: &[u8]) {
        self.entry(name, S_IFREG | perm, (0, 0), data);
    }

    pub fn symlink(&mut self, name: &str, target: &str) {
        self.entry(name, S_IFLNK | 0o777, (0, 0), target.as_bytes());
    }

    pub fn char_dev(&mut self, name: &str, perm: u32, major: u32, minor: u32) {
        self.entry(name, S_IFCHR | perm, (major, minor), &[]);
    }

    /// Appends the trailer and returns the archive.
    pub fn finish(mut self) -> Vec<u8> {
        self.entry("TRAILER!!!", 0, (0, 0), &[]);
        let len = self.buf.len();
        self.buf.resize(len.next_multiple_of(512), 0);
        self.buf
    }
}

/// The body of the regular file `name` in a newc archive (the first
/// archive of a concatenation), if it is there.
pub fn read_file(archive: &[u8], name: &str) -> Option<Vec<u8>> {
    let hex = |b: &[u8]| u32::from_str_radix(std::str::from_utf8(b).ok()?, 16).ok();
    let mut at = 0usize;
    loop {
        let header = archive.get(at..at + 110)?;
        if &header[..6] != b"070701" {
            return None;
        }
        let field = |i: usize| hex(&header[6 + i * 8..14 + i * 8]);
        let mode = field(1)?;
        let size = field(6)? as usize;
        let namesize = field(11)? as usize;
        let name_at = at + 110;
        let entry_name = archive.get(name_at..name_at + namesize.checked_sub(1)?)?;
        let data_at = (name_at + namesize).next_multiple_of(4);
        let data = archive.get(data_at..data_at.checked_add(size)?)?;
        if entry_name == b"TRAILER!!!" {
            return None;
        }
        if entry_name == name.as_bytes() && mode & 0o170000 == S_IFREG {
            return Some(data.to_vec());
        }
        at = (data_at + size).next_multiple_of(4);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_read_back_and_a_missing_or_broken_one_is_none() {
        let mut w = CpioWriter::new();
        w.dir("bin", 0o755);
        w.symlink("bin/sh", "busybox");
        w.file("bin/busybox", 0o755, b"BUSYBOX!!");
        w.file("init", 0o755, b"#!/bin/sh\n");
        let data = w.finish();
        assert_eq!(
            read_file(&data, "bin/busybox").as_deref(),
            Some(&b"BUSYBOX!!"[..])
        );
        assert_eq!(
            read_file(&data, "init").as_deref(),
            Some(&b"#!/bin/sh\n"[..])
        );
        assert_eq!(read_file(&data, "bin/sh"), None, "a symlink is not a file");
        assert_eq!(read_file(&data, "nope"), None);
        assert_eq!(read_file(&data[..200], "init"), None, "truncated");
        assert_eq!(read_file(b"garbage", "init"), None);
    }

    #[test]
    fn archive_lists_with_real_cpio() {
        let mut w = CpioWriter::new();
        w.dir("bin", 0o755);
        w.file("bin/hello", 0o755, b"#!/bin/sh\necho hi\n");
        w.symlink("bin/sh", "busybox");
        w.char_dev("dev/console", 0o600, 5, 1);
        let data = w.finish();
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("a.cpio");
        std::fs::write(&p, &data).expect("write");

        let listing = hangar_host::Tool::new("cpio")
            .args(["-t", "-v", "--quiet", "-F"])
            .arg(&p)
            .run_blocking()
            .expect("run cpio (apt-get install cpio)")
            .stdout;

        assert!(listing.contains("bin/hello"));
        assert!(listing.contains("bin/sh -> busybox"));
        assert!(listing.contains("crw-------"));
        assert_eq!(data.len() % 512, 0);
    }

    #[test]
    fn header_is_newc_with_name_size() {
        let mut w = CpioWriter::new();
        w.file("x", 0o644, b"abc");
        let data = w.finish();

        assert_eq!(&data[..6], b"070701");
        // namesize field (12th field) = 2 ("x" + NUL).
        assert_eq!(&data[6 + 11 * 8..6 + 12 * 8], b"00000002");
    }
}
