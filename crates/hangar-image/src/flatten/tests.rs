//! Unit tests of layer application: each entry kind and its metadata,
//! whiteouts and opaque directories across layers, replacement of kinds.

use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;

use tar::EntryType;

use super::entrypath::RelPath;
use super::whiteout::{classify, Kind};
use super::{Flattener, LayerStats};
use crate::ImageError;

#[path = "../../tests/flatten_support/mod.rs"]
mod support;
use support::{apply_unjailed as apply_all, LayerBuilder, MTIME};

fn root() -> tempfile::TempDir {
    tempfile::tempdir().expect("tempdir")
}

fn mode(p: &Path) -> u32 {
    fs::symlink_metadata(p).expect("lstat").permissions().mode() & 0o7777
}

fn refused(r: Result<Vec<LayerStats>, ImageError>) -> (String, String, String) {
    match r {
        Err(ImageError::BadLayerEntry {
            layer,
            entry,
            reason,
        }) => (layer, entry, reason),
        other => panic!("expected BadLayerEntry, got {other:?}"),
    }
}

#[test]
fn flattener_can_move_to_a_blocking_thread() {
    fn is_send<T: Send>() {}
    is_send::<Flattener>();
}

// ---- names -------------------------------------------------------------

#[test]
fn names_are_normalized_and_climbing_refused() {
    let key = |s: &[u8]| RelPath::parse(s).map(|p| p.key());
    assert_eq!(key(b"./a/b").expect("ok"), b"a/b");
    assert_eq!(key(b"/etc//passwd").expect("ok"), b"etc/passwd");
    assert_eq!(key(b"a/./b/../c/").expect("ok"), b"a/c");
    assert_eq!(key(b"./").expect("ok"), b"");
    assert!(key(b"../x").is_err());
    assert!(key(b"a/../../x").is_err());
    assert!(key(b"/../x").is_err());
    assert!(key(b"a\0b").is_err());
}

#[test]
fn whiteout_names_are_classified() {
    assert_eq!(classify(b"x").expect("ok"), Kind::None);
    assert_eq!(classify(b".wh.x").expect("ok"), Kind::Remove(b"x"));
    assert_eq!(classify(b".wh..wh..opq").expect("ok"), Kind::Opaque);
    assert_eq!(classify(b".wh..wh.plnk").expect("ok"), Kind::Meta);
    assert!(classify(b".wh.").is_err());
    assert!(classify(b".wh..").is_err());
    assert!(classify(b".wh...").is_err());
}

// ---- entry kinds and metadata -----------------------------------------

#[test]
fn regular_file_has_content_mode_and_mtime() {
    let r = root();
    let layer = LayerBuilder::new()
        .file("etc/hostname", b"hangar\n", 0o640)
        .finish();
    let stats = apply_all(r.path(), &[layer]).expect("apply");
    let p = r.path().join("etc/hostname");
    assert_eq!(fs::read(&p).expect("read"), b"hangar\n");
    assert_eq!(mode(&p), 0o640);
    assert_eq!(fs::metadata(&p).expect("stat").mtime(), MTIME as i64);
    assert_eq!(
        stats[0],
        LayerStats {
            entries: 1,
            bytes: 7,
            whiteouts: 0
        }
    );
}

#[test]
#[ignore = "needs root: chown to other ids"]
fn setuid_mode_and_numeric_owner_survive_chown() {
    let r = root();
    let mut b = LayerBuilder::new();
    b.uid = 1234;
    b.gid = 5678;
    b.file("usr/bin/su", b"\x7fELF", 0o4755)
        .dir("tmp", 0o1777)
        .raw(
            EntryType::Regular,
            b"usr/bin/wall",
            None,
            0o2755,
            b"x",
            |h| {
                h.set_username("nobody-here").expect("uname");
            },
        );
    apply_all(r.path(), &[b.finish()]).expect("apply");
    let su = fs::metadata(r.path().join("usr/bin/su")).expect("stat");
    assert_eq!((su.uid(), su.gid()), (1234, 5678));
    assert_eq!(su.permissions().mode() & 0o7777, 0o4755);
    assert_eq!(mode(&r.path().join("tmp")), 0o1777);
    let wall = fs::metadata(r.path().join("usr/bin/wall")).expect("stat");
    assert_eq!(wall.permissions().mode() & 0o7777, 0o2755);
    assert_eq!(wall.uid(), 1234, "uname is ignored, the numeric uid wins");
    // Implicit parents are root:root 0755.
    let usr = fs::metadata(r.path().join("usr")).expect("stat");
    assert_eq!(
        (usr.uid(), usr.gid(), usr.permissions().mode() & 0o7777),
        (0, 0, 0o755)
    );
}

#[test]
fn directory_mtime_is_set_at_finish_after_its_children() {
    let r = root();
    let l1 = LayerBuilder::new()
        .dir("var", 0o755)
        .dir("var/lib", 0o700)
        .file("var/lib/a", b"a", 0o644)
        .finish();
    let l2 = LayerBuilder::new().file("var/lib/b", b"b", 0o644).finish();
    apply_all(r.path(), &[l1, l2]).expect("apply");
    for d in ["var", "var/lib"] {
        let md = fs::metadata(r.path().join(d)).expect("stat");
        assert_eq!(md.mtime(), MTIME as i64, "{d}");
    }
    assert_eq!(mode(&r.path().join("var/lib")), 0o700);
}

#[test]
fn pax_mtime_has_nanoseconds() {
    let r = root();
    let layer = LayerBuilder::new()
        .pax(&[("mtime", b"1600000000.25")])
        .file("f", b"x", 0o644)
        .finish();
    apply_all(r.path(), &[layer]).expect("apply");
    let md = fs::metadata(r.path().join("f")).expect("stat");
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 250_000_000));
}

#[test]
fn symlink_keeps_its_target_and_gets_its_own_mtime() {
    let r = root();
    let layer = LayerBuilder::new()
        .file("usr/lib/x", b"x", 0o644)
        .symlink("lib", "usr/lib")
        .symlink("dangling", "/nowhere")
        .finish();
    apply_all(r.path(), &[layer]).expect("apply");
    let lib = r.path().join("lib");
    assert_eq!(fs::read_link(&lib).expect("readlink"), Path::new("usr/lib"));
    assert_eq!(
        fs::symlink_metadata(&lib).expect("lstat").mtime(),
        MTIME as i64
    );
    assert_eq!(fs::read(lib.join("x")).expect("read through"), b"x");
    assert_eq!(
        fs::read_link(r.path().join("dangling")).expect("readlink"),
        Path::new("/nowhere")
    );
}

#[test]
fn hard_link_shares_the_inode() {
    let r = root();
    let layer = LayerBuilder::new()
        .file("bin/busybox", b"bb", 0o755)
        .hardlink("bin/sh", "bin/busybox")
        .hardlink("/sbin/init", "./bin/busybox")
        .finish();
    apply_all(r.path(), &[layer]).expect("apply");
    let a = fs::metadata(r.path().join("bin/busybox")).expect("stat");
    let b = fs::metadata(r.path().join("bin/sh")).expect("stat");
    let c = fs::metadata(r.path().join("sbin/init")).expect("stat");
    assert_eq!(a.ino(), b.ino());
    assert_eq!(a.ino(), c.ino());
    assert_eq!(a.nlink(), 3);
}

#[test]
fn hard_link_to_a_missing_target_is_refused() {
    let r = root();
    let layer = LayerBuilder::new().hardlink("a", "nothing").finish();
    let (layer, entry, reason) = refused(apply_all(r.path(), &[layer]));
    assert_eq!((layer.as_str(), entry.as_str()), ("layer0", "a"));
    assert!(reason.contains("link target missing"), "{reason}");
}

#[test]
fn fifo_is_created_with_its_mode() {
    let r = root();
    let layer = LayerBuilder::new()
        .raw(EntryType::Fifo, b"run/initctl", None, 0o620, b"", |_| {})
        .finish();
    apply_all(r.path(), &[layer]).expect("apply");
    let p = r.path().join("run/initctl");
    assert!(fs::symlink_metadata(&p)
        .expect("lstat")
        .file_type()
        .is_fifo());
    assert_eq!(mode(&p), 0o620);
}

#[test]
#[ignore = "needs root: mknod of character and block devices"]
fn devices_have_their_numbers() {
    let r = root();
    let layer = LayerBuilder::new()
        .raw(EntryType::Char, b"dev/null", None, 0o666, b"", |h| {
            h.set_device_major(1).expect("major");
            h.set_device_minor(3).expect("minor");
        })
        .raw(EntryType::Block, b"dev/vdb", None, 0o660, b"", |h| {
            h.set_device_major(254).expect("major");
            h.set_device_minor(16).expect("minor");
        })
        .finish();
    apply_all(r.path(), &[layer]).expect("apply");
    let md = fs::symlink_metadata(r.path().join("dev/null")).expect("lstat");
    assert!(md.file_type().is_char_device());
    assert_eq!(md.rdev(), libc::makedev(1, 3));
    assert_eq!(md.permissions().mode() & 0o7777, 0o666);
    let md = fs::symlink_metadata(r.path().join("dev/vdb")).expect("lstat");
    assert!(md.file_type().is_block_device());
    assert_eq!(md.rdev(), libc::makedev(254, 16));
    assert_eq!(
        (md.permissions().mode() & 0o7777, md.mtime()),
        (0o660, MTIME as i64)
    );
}

fn get_xattr(p: &Path, name: &str) -> Option<Vec<u8>> {
    let path = std::ffi::CString::new(p.as_os_str().as_bytes()).expect("path");
    let name = std::ffi::CString::new(name).expect("name");
    let mut buf = vec![0u8; 256];
    // SAFETY: valid C strings and a buffer of the given length.
    let n = unsafe {
        libc::lgetxattr(
            path.as_ptr(),
            name.as_ptr(),
            buf.as_mut_ptr().cast(),
            buf.len(),
        )
    };
    (n >= 0).then(|| {
        buf.truncate(n as usize);
        buf
    })
}

#[test]
fn pax_xattrs_land_on_files_and_dirs() {
    let r = root();
    let layer = LayerBuilder::new()
        .pax(&[("SCHILY.xattr.user.test", b"on a dir")])
        .dir("d", 0o755)
        .pax(&[("SCHILY.xattr.user.test", b"\x00binary\xff")])
        .file("d/f", b"f", 0o644)
        .finish();
    apply_all(r.path(), &[layer]).expect("apply");
    assert_eq!(
        get_xattr(&r.path().join("d"), "user.test").as_deref(),
        Some(&b"on a dir"[..])
    );
    assert_eq!(
        get_xattr(&r.path().join("d/f"), "user.test").as_deref(),
        Some(&b"\x00binary\xff"[..])
    );
}

#[test]
fn long_and_non_utf8_names_and_pax_paths() {
    let r = root();
    let long = format!("{}/{}", "d".repeat(120), "f".repeat(150));
    let mut b = LayerBuilder::new();
    b.file(&long, b"long", 0o644)
        .raw(
            EntryType::Regular,
            b"latin1-\xe9t\xe9",
            None,
            0o644,
            b"bytes",
            |_| {},
        )
        .symlink("longlink", &long)
        .pax(&[("path", b"from/pax/header")])
        .file("ignored-short-name", b"pax", 0o644);
    apply_all(r.path(), &[b.finish()]).expect("apply");
    assert_eq!(fs::read(r.path().join(&long)).expect("read"), b"long");
    let latin = std::ffi::OsStr::from_bytes(b"latin1-\xe9t\xe9");
    assert_eq!(fs::read(r.path().join(latin)).expect("read"), b"bytes");
    assert_eq!(
        fs::read_link(r.path().join("longlink")).expect("link"),
        Path::new(&long)
    );
    assert_eq!(
        fs::read(r.path().join("from/pax/header")).expect("read"),
        b"pax"
    );
    assert!(!r.path().join("ignored-short-name").exists());
}

#[test]
fn zero_blocks_become_holes_and_content_is_intact() {
    let r = root();
    let mut data = vec![0u8; 1 << 20];
    data[5000] = 1;
    data.extend_from_slice(b"tail");
    data.extend(vec![0u8; 8192]);
    let layer = LayerBuilder::new().file("sparse", &data, 0o644).finish();
    let stats = apply_all(r.path(), &[layer]).expect("apply");
    let p = r.path().join("sparse");
    assert_eq!(fs::read(&p).expect("read"), data);
    assert_eq!(stats[0].bytes, data.len() as u64);
    let allocated = fs::metadata(&p).expect("stat").blocks() * 512;
    assert!(allocated < 64 * 1024, "{allocated} bytes allocated");
}

#[test]
fn gnu_sparse_entries_are_expanded() {
    let r = root();
    // GNU tar's sparse form: the header lists (offset, length) chunks and
    // the archive holds only their data.
    let layer = LayerBuilder::new()
        .raw(EntryType::GNUSparse, b"s", None, 0o644, &[b'x'; 512], |h| {
            let gnu = h.as_gnu_mut().expect("gnu header");
            gnu.sparse[0].offset.copy_from_slice(b"00000010000\0");
            gnu.sparse[0].numbytes.copy_from_slice(b"00000001000\0");
            // GNU tar ends the map with an empty chunk at the real size.
            gnu.sparse[1].offset.copy_from_slice(b"00000020000\0");
            gnu.sparse[1].numbytes.copy_from_slice(b"00000000000\0");
            gnu.realsize.copy_from_slice(b"00000020000\0");
        })
        .finish();
    apply_all(r.path(), &[layer]).expect("apply");
    let got = fs::read(r.path().join("s")).expect("read");
    let mut want = vec![0u8; 0o20000];
    want[0o10000..0o10000 + 512].fill(b'x');
    assert_eq!(got, want);
}

#[test]
fn global_headers_are_skipped_and_volume_labels_refused() {
    let r = root();
    let ok = LayerBuilder::new()
        .raw(
            EntryType::XGlobalHeader,
            b"pax_global_header",
            None,
            0o644,
            b"20 comment=hello\n",
            |_| {},
        )
        .file("f", b"f", 0o644)
        .finish();
    let stats = apply_all(r.path(), &[ok]).expect("apply");
    assert_eq!(stats[0].entries, 1);
    let bad = LayerBuilder::new()
        .raw(EntryType::new(b'V'), b"VOLUME", None, 0o644, b"", |_| {})
        .finish();
    let (_, entry, reason) = refused(apply_all(root().path(), &[bad]));
    assert_eq!(entry, "VOLUME");
    assert!(reason.contains("not allowed"), "{reason}");
}

#[test]
fn cancellation_is_polled_between_entries() {
    let r = root();
    let layer = LayerBuilder::new().file("a", b"a", 0o644).finish();
    let mut f = Flattener::new(r.path()).expect("new");
    let res = f.apply_layer(layer.as_slice(), "l", &|| true);
    assert!(matches!(res, Err(ImageError::Cancelled)), "{res:?}");
    assert!(!r.path().join("a").exists());
}

#[test]
fn root_entry_sets_root_metadata_and_a_file_cannot_replace_it() {
    let r = root();
    let layer = LayerBuilder::new().dir("./", 0o711).finish();
    apply_all(r.path(), &[layer]).expect("apply");
    assert_eq!(mode(r.path()), 0o711);
    let bad = LayerBuilder::new().file("/", b"x", 0o644).finish();
    let (_, _, reason) = refused(apply_all(root().path(), &[bad]));
    assert!(reason.contains("root"), "{reason}");
}

// ---- replacement ------------------------------------------------------

#[test]
fn dir_over_dir_keeps_content_and_updates_mode() {
    let r = root();
    let l1 = LayerBuilder::new()
        .dir("d", 0o755)
        .file("d/keep", b"k", 0o644)
        .finish();
    let l2 = LayerBuilder::new().dir("d", 0o700).finish();
    apply_all(r.path(), &[l1, l2]).expect("apply");
    assert_eq!(fs::read(r.path().join("d/keep")).expect("kept"), b"k");
    assert_eq!(mode(&r.path().join("d")), 0o700);
}

#[test]
fn file_replaced_by_dir_and_dir_by_file_and_symlink() {
    let r = root();
    let l1 = LayerBuilder::new()
        .file("a", b"file", 0o644)
        .dir("b", 0o755)
        .file("b/inner", b"i", 0o644)
        .symlink("c", "b")
        .finish();
    let l2 = LayerBuilder::new()
        .dir("a", 0o755)
        .file("a/x", b"x", 0o644)
        .file("b", b"now a file", 0o600)
        .dir("c", 0o750)
        .finish();
    let l3 = LayerBuilder::new().symlink("a", "c").finish();
    apply_all(r.path(), &[l1, l2, l3]).expect("apply");
    assert_eq!(
        fs::read_link(r.path().join("a")).expect("link"),
        Path::new("c")
    );
    assert_eq!(fs::read(r.path().join("b")).expect("file"), b"now a file");
    let c = fs::symlink_metadata(r.path().join("c")).expect("lstat");
    assert!(c.is_dir());
    assert_eq!(c.permissions().mode() & 0o7777, 0o750);
}

#[test]
fn a_file_is_never_written_through_an_existing_hard_link() {
    let r = root();
    let l1 = LayerBuilder::new()
        .file("orig", b"original", 0o644)
        .hardlink("alias", "orig")
        .finish();
    let l2 = LayerBuilder::new()
        .file("alias", b"replaced", 0o644)
        .finish();
    apply_all(r.path(), &[l1, l2]).expect("apply");
    assert_eq!(fs::read(r.path().join("orig")).expect("read"), b"original");
    assert_eq!(fs::read(r.path().join("alias")).expect("read"), b"replaced");
}

// ---- whiteouts --------------------------------------------------------

#[test]
fn whiteouts_remove_files_and_whole_dirs_across_layers() {
    let r = root();
    let l1 = LayerBuilder::new()
        .file("etc/a", b"a", 0o644)
        .file("etc/b", b"b", 0o644)
        .dir("var/cache", 0o755)
        .file("var/cache/x/y", b"y", 0o644)
        .finish();
    let l2 = LayerBuilder::new()
        .whiteout("etc/.wh.a")
        .whiteout("var/.wh.cache")
        .whiteout("nothing/.wh.here")
        .whiteout("etc/.wh.absent")
        .finish();
    let l3 = LayerBuilder::new()
        .file("var/cache/new", b"n", 0o644)
        .finish();
    let stats = apply_all(r.path(), &[l1, l2, l3]).expect("apply");
    assert_eq!(stats[1].whiteouts, 4);
    assert!(!r.path().join("etc/a").exists());
    assert!(r.path().join("etc/b").exists());
    assert!(!r.path().join("var/cache/x").exists());
    assert!(r.path().join("var/cache/new").exists());
    assert!(
        !r.path().join("nothing").exists(),
        "a whiteout creates nothing"
    );
    let names: Vec<_> = fs::read_dir(r.path().join("etc"))
        .expect("ls")
        .map(|e| e.expect("entry").file_name())
        .collect();
    assert_eq!(names, vec!["b"], "whiteout files are never created");
}

#[test]
fn opaque_dir_keeps_only_this_layers_entries_before_and_after_the_marker() {
    let r = root();
    let l1 = LayerBuilder::new()
        .file("opt/old", b"old", 0o644)
        .file("opt/sub/old", b"old", 0o644)
        .file("opt/both", b"lower", 0o644)
        .file("keep/me", b"m", 0o644)
        .finish();
    let l2 = LayerBuilder::new()
        .dir("opt", 0o755)
        .file("opt/before", b"b", 0o644)
        .dir("opt/sub", 0o755)
        .file("opt/sub/new", b"n", 0o644)
        .whiteout("opt/.wh..wh..opq")
        .file("opt/after", b"a", 0o644)
        .file("opt/both", b"upper", 0o644)
        .finish();
    let l3 = LayerBuilder::new().file("opt/later", b"l", 0o644).finish();
    apply_all(r.path(), &[l1, l2, l3]).expect("apply");
    let tree: Vec<String> = support::snapshot(&r.path().join("opt"))
        .keys()
        .map(|p| p.display().to_string())
        .collect();
    assert_eq!(
        tree,
        ["after", "before", "both", "later", "sub", "sub/new"],
        "lower content hidden, this layer's kept"
    );
    assert_eq!(fs::read(r.path().join("opt/both")).expect("read"), b"upper");
    assert!(r.path().join("keep/me").exists());
}

#[test]
fn opaque_marker_in_a_new_dir_creates_it_empty() {
    let r = root();
    let layer = LayerBuilder::new().whiteout("new/.wh..wh..opq").finish();
    apply_all(r.path(), &[layer]).expect("apply");
    assert!(r.path().join("new").is_dir());
    assert_eq!(fs::read_dir(r.path().join("new")).expect("ls").count(), 0);
}

#[test]
fn whiteout_naming_itself_or_its_parent_is_refused() {
    for name in [".wh..", "d/.wh...", "d/.wh."] {
        let layer = LayerBuilder::new().whiteout(name).finish();
        let (_, entry, reason) = refused(apply_all(root().path(), &[layer]));
        assert_eq!(entry, name);
        assert!(reason.contains("whiteout"), "{reason}");
    }
}

#[test]
fn copy_sparse_handles_short_reads() {
    // A reader returning 1000 bytes at a time: the buffer is still filled
    // to full blocks, so zero detection stays aligned.
    struct Dribble(std::io::Cursor<Vec<u8>>);
    impl std::io::Read for Dribble {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            let n = buf.len().min(1000);
            self.0.read(&mut buf[..n])
        }
    }
    let dir = root();
    let mut data = vec![0u8; 3 * 4096];
    data[4096] = 7;
    let mut f = fs::File::create(dir.path().join("o")).expect("create");
    let mut buf = vec![0u8; 8192];
    let n = super::copy::copy_sparse(
        &mut Dribble(std::io::Cursor::new(data.clone())),
        &mut f,
        &mut buf,
    )
    .expect("copy");
    assert_eq!(n, data.len() as u64);
    assert_eq!(fs::read(dir.path().join("o")).expect("read"), data);
}

#[test]
fn copy_sparse_sha256_hashes_everything_and_keeps_holes() {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let dir = root();
    // 8 MiB: zeros with data at the start, in the middle and a partial
    // block at the end (several chunks of the 1 MiB buffer).
    let mut data = vec![0u8; 8 << 20];
    data[..100].fill(1);
    data[(4 << 20) + 5] = 9;
    data.extend_from_slice(b"tail");
    let path = dir.path().join("o");
    let mut f = fs::File::create(&path).expect("create");
    let mut buf = vec![0u8; 1 << 20];
    let (n, hex) =
        super::copy::copy_sparse_sha256(&mut std::io::Cursor::new(data.clone()), &mut f, &mut buf)
            .expect("copy");
    assert_eq!(n, data.len() as u64);
    assert_eq!(hex, hex::encode(sha2::Sha256::digest(&data)));
    assert_eq!(fs::read(&path).expect("read"), data);
    let allocated = fs::metadata(&path).expect("stat").blocks() * 512;
    assert!(
        allocated < 1 << 20,
        "zeros were written: {allocated} bytes allocated"
    );
}

#[test]
fn chmod_fallback_for_old_kernels_refuses_symlinks() {
    let dir = root();
    nix::unistd::mkfifo(
        &dir.path().join("p"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .expect("mkfifo");
    std::os::unix::fs::symlink("p", dir.path().join("l")).expect("symlink");
    let fd = fs::File::open(dir.path()).expect("open dir");
    use std::os::fd::AsFd;
    super::meta::chmod_checked(fd.as_fd(), b"p", 0o640).expect("chmod fifo");
    assert_eq!(mode(&dir.path().join("p")), 0o640);
    let err = super::meta::chmod_checked(fd.as_fd(), b"l", 0o777).expect_err("symlink");
    assert_eq!(err, nix::errno::Errno::ELOOP);
    assert_eq!(mode(&dir.path().join("p")), 0o640, "not followed");
}

#[test]
fn a_truncated_or_corrupt_layer_is_an_error_naming_where_it_broke() {
    let r = root();
    let mut tar = LayerBuilder::new().file("a", b"a", 0o644).finish();
    tar.truncate(512 + 512); // header and data of `a`, then garbage
    tar.extend([b'x'; 512]);
    let (_, entry, reason) = refused(apply_all(r.path(), &[tar]));
    assert_eq!(entry, "a");
    assert!(reason.contains("entry after this one"), "{reason}");
    let (_, entry, reason) = refused(apply_all(root().path(), &[vec![b'x'; 512]]));
    assert_eq!(entry, "");
    assert!(reason.contains("first entry"), "{reason}");
}
