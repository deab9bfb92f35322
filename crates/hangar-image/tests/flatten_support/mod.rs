//! Test support for hangar-image::flatten: layer tarballs with raw names
//! (`..`, absolute, long, non-UTF-8), a canary beside the root, and a
//! snapshot of a tree to compare.
//!
//! Shared by the unit tests (src/flatten/tests.rs, via `#[path]`) and the
//! integration tests, so every test builds layers the same way.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hangar_image::flatten::{Flattener, LayerStats};
use hangar_image::ImageError;
use tar::{EntryType, Header};

pub const MTIME: u64 = 1_600_000_000;

/// Builds one layer tar entry by entry, writing names into the raw header
/// bytes (or a GNU long-name entry) so hostile names survive unchanged.
pub struct LayerBuilder {
    out: Vec<u8>,
    pub uid: u64,
    pub gid: u64,
}

impl Default for LayerBuilder {
    fn default() -> Self {
        Self::new()
    }
}

impl LayerBuilder {
    /// Entries are owned by the caller's own ids, so tests without root
    /// can apply them (chown to oneself is allowed).
    pub fn new() -> Self {
        LayerBuilder {
            out: Vec::new(),
            uid: u64::from(nix::unistd::geteuid().as_raw()),
            gid: u64::from(nix::unistd::getegid().as_raw()),
        }
    }

    /// The general form: any type, raw name and link name, a header tweak.
    pub fn raw(
        &mut self,
        kind: EntryType,
        name: &[u8],
        link: Option<&[u8]>,
        mode: u32,
        data: &[u8],
        tweak: impl FnOnce(&mut Header),
    ) -> &mut Self {
        if name.len() > 100 {
            self.long(EntryType::GNULongName, name);
        }
        if let Some(link) = link.filter(|l| l.len() > 100) {
            self.long(EntryType::GNULongLink, link);
        }
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_uid(self.uid);
        h.set_gid(self.gid);
        h.set_mtime(MTIME);
        h.set_size(data.len() as u64);
        put(&mut h.as_old_mut().name, name);
        if let Some(link) = link {
            put(&mut h.as_old_mut().linkname, link);
        }
        tweak(&mut h);
        h.set_cksum();
        self.push(&h, data);
        self
    }

    pub fn file(&mut self, name: &str, data: &[u8], mode: u32) -> &mut Self {
        self.raw(
            EntryType::Regular,
            name.as_bytes(),
            None,
            mode,
            data,
            |_| {},
        )
    }

    pub fn dir(&mut self, name: &str, mode: u32) -> &mut Self {
        self.raw(
            EntryType::Directory,
            name.as_bytes(),
            None,
            mode,
            b"",
            |_| {},
        )
    }

    pub fn symlink(&mut self, name: &str, target: &str) -> &mut Self {
        let t = target.as_bytes();
        self.raw(
            EntryType::Symlink,
            name.as_bytes(),
            Some(t),
            0o777,
            b"",
            |_| {},
        )
    }

    pub fn hardlink(&mut self, name: &str, target: &str) -> &mut Self {
        let t = target.as_bytes();
        self.raw(
            EntryType::Link,
            name.as_bytes(),
            Some(t),
            0o644,
            b"",
            |_| {},
        )
    }

    /// A whiteout marker: an empty regular file with a `.wh.` name.
    pub fn whiteout(&mut self, name: &str) -> &mut Self {
        self.file(name, b"", 0o644)
    }

    /// A PAX extended header applying to the next entry.
    pub fn pax(&mut self, records: &[(&str, &[u8])]) -> &mut Self {
        let mut body = Vec::new();
        for (key, value) in records {
            body.extend(pax_record(key, value));
        }
        let mut h = Header::new_ustar();
        h.set_entry_type(EntryType::XHeader);
        h.set_size(body.len() as u64);
        h.set_mode(0o644);
        put(&mut h.as_old_mut().name, b"PaxHeader");
        h.set_cksum();
        self.push(&h, &body);
        self
    }

    pub fn finish(&mut self) -> Vec<u8> {
        let mut out = std::mem::take(&mut self.out);
        out.extend([0u8; 1024]);
        out
    }

    fn long(&mut self, kind: EntryType, name: &[u8]) {
        let mut data = name.to_vec();
        data.push(0);
        let mut h = Header::new_gnu();
        h.set_entry_type(kind);
        h.set_size(data.len() as u64);
        put(&mut h.as_old_mut().name, b"././@LongLink");
        h.set_cksum();
        self.push(&h, &data);
    }

    fn push(&mut self, h: &Header, data: &[u8]) {
        self.out.extend_from_slice(h.as_bytes());
        self.out.extend_from_slice(data);
        let pad = (512 - data.len() % 512) % 512;
        self.out.extend(std::iter::repeat_n(0u8, pad));
    }
}

/// Copies `v` into a fixed header field (truncated; the long-name entry
/// carries the whole name).
fn put(field: &mut [u8], v: &[u8]) {
    field.fill(0);
    let n = v.len().min(field.len());
    field[..n].copy_from_slice(&v[..n]);
}

/// `LEN key=value\n` where LEN counts the whole record, itself included.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // ' ', '=', '\n'
    let mut len = rest + 1;
    while len != rest + len.to_string().len() {
        len = rest + len.to_string().len();
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

/// Applies layers in order into `root` and finishes.
pub fn apply_all(root: &Path, layers: &[Vec<u8>]) -> Result<Vec<LayerStats>, ImageError> {
    let labeled: Vec<(String, &[u8])> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("layer{i}"), l.as_slice()))
        .collect();
    apply_labeled(root, &labeled)
}

/// Applies `(label, tar)` layers into `root` in a child process jailed
/// (chroot) in `root`'s parent directory, which must belong to the test.
///
/// Why: these layers are built to escape. Should the flattener ever
/// regress, an escape must land in the test's own directory (where the
/// canary checks see it), never on the host: an opaque whiteout through
/// `up -> ../../..` removes the children of whatever `up` reaches.
pub fn apply_labeled(
    root: &Path,
    layers: &[(String, &[u8])],
) -> Result<Vec<LayerStats>, ImageError> {
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{fork, ForkResult};
    use std::io::{Read, Write};

    assert!(
        nix::unistd::geteuid().is_root(),
        "hostile-layer tests run the flattener chrooted: run them as root"
    );
    let jail = root.parent().expect("root has a parent");
    let name = root.file_name().expect("root has a name");
    assert!(
        jail.starts_with(std::env::temp_dir()) && jail != std::env::temp_dir(),
        "the jail {} must be the test's own temp dir",
        jail.display()
    );
    let (mut rx, tx) = nix::unistd::pipe()
        .map(|(r, w)| (fs::File::from(r), fs::File::from(w)))
        .expect("pipe");
    // SAFETY: the child only chroots, runs the flattener (no locks held
    // across fork: it takes none), writes to a pipe and `_exit`s.
    match unsafe { fork() }.expect("fork") {
        ForkResult::Child => {
            drop(rx);
            let mut tx = tx;
            let code = (|| {
                nix::unistd::chroot(jail).ok()?;
                std::env::set_current_dir("/").ok()?;
                let inner = Path::new("/").join(name);
                let answer = match run_layers(&inner, layers) {
                    Ok(stats) => {
                        serde_json::json!({"ok": stats.iter().map(|s| [s.entries, s.bytes, s.whiteouts]).collect::<Vec<_>>()})
                    }
                    Err(ImageError::BadLayerEntry {
                        layer,
                        entry,
                        reason,
                    }) => serde_json::json!({"bad": [layer, entry, reason]}),
                    Err(ImageError::Cancelled) => serde_json::json!({"cancelled": true}),
                    Err(e) => serde_json::json!({"other": format!("{e:?}")}),
                };
                tx.write_all(answer.to_string().as_bytes()).ok()?;
                Some(())
            })();
            // SAFETY: ends the forked child without running the parent's
            // atexit handlers or test harness.
            unsafe { libc::_exit(if code.is_some() { 0 } else { 1 }) }
        }
        ForkResult::Parent { child } => {
            drop(tx);
            let mut out = String::new();
            rx.read_to_string(&mut out).expect("read child answer");
            let status = waitpid(child, None).expect("waitpid");
            assert!(
                matches!(status, WaitStatus::Exited(_, 0)),
                "jailed flattener child: {status:?} ({out})"
            );
            let v: serde_json::Value = serde_json::from_str(&out).expect("child answer");
            if let Some(ok) = v.get("ok").and_then(|o| o.as_array()) {
                return Ok(ok
                    .iter()
                    .map(|s| LayerStats {
                        entries: s[0].as_u64().unwrap_or(0),
                        bytes: s[1].as_u64().unwrap_or(0),
                        whiteouts: s[2].as_u64().unwrap_or(0),
                    })
                    .collect());
            }
            if let Some(bad) = v.get("bad") {
                let f = |i: usize| bad[i].as_str().unwrap_or_default().to_string();
                return Err(ImageError::BadLayerEntry {
                    layer: f(0),
                    entry: f(1),
                    reason: f(2),
                });
            }
            if v.get("cancelled").is_some() {
                return Err(ImageError::Cancelled);
            }
            Err(ImageError::BadOci {
                what: "jailed flattener".into(),
                reason: v["other"].as_str().unwrap_or_default().to_string(),
            })
        }
    }
}

/// Applies layers in this process, unjailed: for the unit tests, whose
/// layers stay inside the tree by construction (nothing there is built to
/// escape; hostile layers go through [`apply_labeled`]).
pub fn apply_unjailed(root: &Path, layers: &[Vec<u8>]) -> Result<Vec<LayerStats>, ImageError> {
    let labeled: Vec<(String, &[u8])> = layers
        .iter()
        .enumerate()
        .map(|(i, l)| (format!("layer{i}"), l.as_slice()))
        .collect();
    run_layers(root, &labeled)
}

fn run_layers(root: &Path, layers: &[(String, &[u8])]) -> Result<Vec<LayerStats>, ImageError> {
    let mut f = Flattener::new(root)?;
    let mut stats = Vec::new();
    for (label, layer) in layers {
        stats.push(f.apply_layer(*layer, label, &|| false)?);
    }
    f.finish()?;
    Ok(stats)
}

/// What a walk records of one path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Node {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Symlink { target: Vec<u8> },
    Other { mode: u32 },
}

/// One path's full record: the node plus owner and mtime, for "unchanged".
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Full {
    pub node: Node,
    pub uid: u32,
    pub gid: u32,
    pub mtime: i64,
    pub ino: u64,
}

/// Every path under `dir` (relative, `dir` itself excluded), not following
/// symlinks.
pub fn snapshot(dir: &Path) -> BTreeMap<PathBuf, Full> {
    let mut out = BTreeMap::new();
    walk(dir, Path::new(""), &mut out);
    out
}

fn walk(base: &Path, rel: &Path, out: &mut BTreeMap<PathBuf, Full>) {
    let mut names: Vec<_> = fs::read_dir(base.join(rel))
        .expect("read_dir")
        .map(|e| e.expect("dir entry").file_name())
        .collect();
    names.sort();
    for name in names {
        let r = rel.join(&name);
        let p = base.join(&r);
        let md = fs::symlink_metadata(&p).expect("lstat");
        let mode = md.permissions().mode() & 0o7777;
        let ft = md.file_type();
        let node = if ft.is_dir() {
            Node::Dir { mode }
        } else if ft.is_file() {
            Node::File {
                mode,
                content: fs::read(&p).expect("read"),
            }
        } else if ft.is_symlink() {
            Node::Symlink {
                target: fs::read_link(&p)
                    .expect("readlink")
                    .as_os_str()
                    .as_bytes()
                    .to_vec(),
            }
        } else {
            Node::Other { mode }
        };
        out.insert(
            r.clone(),
            Full {
                node,
                uid: md.uid(),
                gid: md.gid(),
                mtime: md.mtime(),
                ino: md.ino(),
            },
        );
        if ft.is_dir() {
            walk(base, &r, out);
        }
    }
}

/// A staging root with a canary directory beside it. Hostile layers must
/// leave the canary (and the rest of the base directory) exactly as it was.
pub struct Sandbox {
    pub base: tempfile::TempDir,
    pub root: PathBuf,
    pub canary: PathBuf,
    before: BTreeMap<PathBuf, Full>,
}

impl Sandbox {
    pub fn new() -> Self {
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join("root");
        let canary = base.path().join("canary");
        fs::create_dir(&root).expect("mkdir root");
        fs::create_dir_all(canary.join("sub")).expect("mkdir canary");
        fs::write(canary.join("file"), b"canary content").expect("write canary");
        fs::write(canary.join("sub/deep"), b"deep canary").expect("write canary");
        fs::set_permissions(&canary, fs::Permissions::from_mode(0o750)).expect("chmod");
        let before = Self::outside(base.path());
        Sandbox {
            base,
            root,
            canary,
            before,
        }
    }

    /// Everything in the base directory except the root's contents.
    fn outside(base: &Path) -> BTreeMap<PathBuf, Full> {
        snapshot(base)
            .into_iter()
            .filter(|(p, _)| !p.starts_with("root") || p.as_os_str() == OsStr::new("root"))
            .map(|(p, mut f)| {
                if p.as_os_str() == OsStr::new("root") {
                    // The root's own mtime changes with every entry.
                    f.mtime = 0;
                    f.node = Node::Dir { mode: 0 };
                }
                (p, f)
            })
            .collect()
    }

    /// Panics if anything outside the root changed or appeared.
    pub fn assert_outside_untouched(&self) {
        let now = Self::outside(self.base.path());
        assert_eq!(self.before, now, "the tree outside the root changed");
    }

    /// The absolute path of the canary, as a hostile symlink target.
    pub fn canary_str(&self) -> String {
        self.canary.to_str().expect("utf-8 temp path").to_string()
    }
}

impl Default for Sandbox {
    fn default() -> Self {
        Self::new()
    }
}
