//! Property test: random layer stacks applied by the Flattener give the
//! same tree as a small in-memory model of the OCI changeset semantics
//! (entries replace what is there except dir over dir, `.wh.NAME` removes,
//! an opaque dir keeps only what its layer wrote, missing parents appear
//! as 0755 directories, hard links share the inode).
//!
//! Operations the model does not describe are left out of the generated
//! tarballs as they are built: writing through a symlink or a file
//! (resolution is covered by flatten_hostile.rs) and hard links to
//! anything but a regular file.

mod flatten_support;

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use flatten_support::{apply_all, LayerBuilder, Node};
use proptest::prelude::*;

type MPath = Vec<&'static str>;

#[derive(Debug, Clone)]
enum Op {
    File(MPath, u8, u32),
    Dir(MPath, u32),
    Symlink(MPath, &'static str),
    Hardlink(MPath, MPath),
    Whiteout(MPath),
    Opaque(MPath),
}

/// What a path holds, in the model and as read back from disk.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Seen {
    Dir { mode: u32 },
    File { mode: u32, content: Vec<u8> },
    Symlink { target: String },
}

#[derive(Debug, Clone)]
enum MNode {
    Dir { mode: u32 },
    File { ino: usize },
    Symlink { target: &'static str },
}

/// The reference semantics, applied op by op; an op it returns `false`
/// for is not part of the layer.
#[derive(Default)]
struct Model {
    tree: BTreeMap<MPath, MNode>,
    inodes: Vec<(Vec<u8>, u32)>,
    touched: HashSet<MPath>,
}

fn content(i: u8) -> Vec<u8> {
    match i % 4 {
        0 => Vec::new(),
        // Zero blocks, so the sparse writer is part of the property.
        1 => {
            let mut v = vec![0u8; 9000];
            v.push(i);
            v
        }
        _ => format!("content {i}").into_bytes(),
    }
}

fn key(p: &[&str]) -> String {
    p.join("/")
}

impl Model {
    fn begin_layer(&mut self) {
        self.touched.clear();
    }

    /// True if every proper prefix of `p` (and `p` itself when `inclusive`)
    /// is a directory or absent.
    fn walkable(&self, p: &[&'static str], inclusive: bool) -> bool {
        let n = if inclusive {
            p.len()
        } else {
            p.len().saturating_sub(1)
        };
        (1..=n).all(|i| matches!(self.tree.get(&p[..i]), None | Some(MNode::Dir { .. })))
    }

    fn make_parents(&mut self, p: &[&'static str], inclusive: bool) {
        let n = if inclusive { p.len() } else { p.len() - 1 };
        for i in 1..=n {
            self.tree
                .entry(p[..i].to_vec())
                .or_insert(MNode::Dir { mode: 0o755 });
        }
    }

    fn remove_subtree(&mut self, p: &[&'static str]) {
        self.tree.retain(|k, _| !k.starts_with(p));
    }

    fn touch(&mut self, p: &[&'static str]) {
        for i in 0..=p.len() {
            self.touched.insert(p[..i].to_vec());
        }
    }

    fn apply(&mut self, op: &Op) -> bool {
        match op {
            Op::File(p, c, mode) => {
                if !self.walkable(p, false) {
                    return false;
                }
                self.make_parents(p, false);
                self.remove_subtree(p);
                self.inodes.push((content(*c), *mode));
                let ino = self.inodes.len() - 1;
                self.tree.insert(p.clone(), MNode::File { ino });
                self.touch(p);
            }
            Op::Dir(p, mode) => {
                if !self.walkable(p, false) {
                    return false;
                }
                self.make_parents(p, false);
                if !matches!(self.tree.get(p), Some(MNode::Dir { .. })) {
                    self.remove_subtree(p);
                }
                self.tree.insert(p.clone(), MNode::Dir { mode: *mode });
                self.touch(p);
            }
            Op::Symlink(p, target) => {
                if !self.walkable(p, false) {
                    return false;
                }
                self.make_parents(p, false);
                self.remove_subtree(p);
                self.tree.insert(p.clone(), MNode::Symlink { target });
                self.touch(p);
            }
            Op::Hardlink(p, target) => {
                let Some(MNode::File { ino }) = self.tree.get(target) else {
                    return false;
                };
                let ino = *ino;
                // Replacing `p` would remove the target first.
                if !self.walkable(p, false) || (target.starts_with(p) && target != p) {
                    return false;
                }
                self.make_parents(p, false);
                let same = matches!(self.tree.get(p), Some(MNode::File { ino: i }) if *i == ino);
                if !same {
                    self.remove_subtree(p);
                    self.tree.insert(p.clone(), MNode::File { ino });
                }
                self.touch(p);
            }
            Op::Whiteout(p) => {
                if !self.walkable(p, false) {
                    return false;
                }
                self.remove_subtree(p);
            }
            Op::Opaque(d) => {
                if !self.walkable(d, true) {
                    return false;
                }
                self.make_parents(d, true);
                self.touch(d);
                let touched = &self.touched;
                self.tree
                    .retain(|k, _| !(k.starts_with(d) && k.len() > d.len()) || touched.contains(k));
            }
        }
        true
    }

    fn seen(&self) -> BTreeMap<String, Seen> {
        self.tree
            .iter()
            .map(|(p, n)| {
                let s = match n {
                    MNode::Dir { mode } => Seen::Dir { mode: *mode },
                    MNode::File { ino } => Seen::File {
                        mode: self.inodes[*ino].1,
                        content: self.inodes[*ino].0.clone(),
                    },
                    MNode::Symlink { target } => Seen::Symlink {
                        target: target.to_string(),
                    },
                };
                (key(p), s)
            })
            .collect()
    }

    /// Sets of paths sharing an inode, for groups of two or more.
    fn link_groups(&self) -> BTreeSet<BTreeSet<String>> {
        let mut by_ino: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
        for (p, n) in &self.tree {
            if let MNode::File { ino } = n {
                by_ino.entry(*ino).or_default().insert(key(p));
            }
        }
        by_ino.into_values().filter(|g| g.len() > 1).collect()
    }
}

fn read_tree(root: &Path) -> (BTreeMap<String, Seen>, BTreeSet<BTreeSet<String>>) {
    let mut seen = BTreeMap::new();
    let mut by_ino: BTreeMap<u64, BTreeSet<String>> = BTreeMap::new();
    for (rel, full) in flatten_support::snapshot(root) {
        let k = String::from_utf8(rel.as_os_str().as_bytes().to_vec()).expect("utf-8");
        let s = match full.node {
            Node::Dir { mode } => Seen::Dir { mode },
            Node::File { mode, content } => {
                by_ino.entry(full.ino).or_default().insert(k.clone());
                Seen::File { mode, content }
            }
            Node::Symlink { target } => Seen::Symlink {
                target: String::from_utf8(target).expect("utf-8"),
            },
            Node::Other { mode } => panic!("unexpected special file {k} ({mode:o})"),
        };
        seen.insert(k, s);
    }
    (seen, by_ino.into_values().filter(|g| g.len() > 1).collect())
}

fn path(max: usize) -> impl Strategy<Value = MPath> {
    prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 1..=max)
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (path(3), any::<u8>(), prop::sample::select(vec![0o644, 0o600, 0o755, 0o4755]))
            .prop_map(|(p, c, m)| Op::File(p, c, m)),
        3 => (path(3), prop::sample::select(vec![0o755, 0o700, 0o750]))
            .prop_map(|(p, m)| Op::Dir(p, m)),
        2 => (path(3), prop::sample::select(vec!["a", "../b", "/a/b", "c/a", "."]))
            .prop_map(|(p, t)| Op::Symlink(p, t)),
        2 => (path(3), path(3)).prop_map(|(p, t)| Op::Hardlink(p, t)),
        2 => path(3).prop_map(Op::Whiteout),
        1 => prop::collection::vec(prop::sample::select(vec!["a", "b", "c"]), 0..=2)
            .prop_map(Op::Opaque),
    ]
}

/// The tar entry of an op the model accepted.
fn emit(b: &mut LayerBuilder, op: &Op) {
    match op {
        Op::File(p, c, mode) => b.file(&key(p), &content(*c), *mode),
        Op::Dir(p, mode) => b.dir(&format!("./{}/", key(p)), *mode),
        Op::Symlink(p, t) => b.symlink(&key(p), t),
        Op::Hardlink(p, t) => b.hardlink(&key(p), &format!("/{}", key(t))),
        Op::Whiteout(p) => {
            let (name, parent) = p.split_last().expect("non-empty path");
            let mut w = parent.to_vec();
            let marker = format!(".wh.{name}");
            w.push(&marker);
            b.whiteout(&key(&w))
        }
        Op::Opaque(d) => {
            let mut w = d.clone();
            w.push(".wh..wh..opq");
            b.whiteout(&key(&w))
        }
    };
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    #[ignore = "needs root: layers are applied chrooted in the test's own dir"]
    fn flattener_matches_the_model(layers in prop::collection::vec(prop::collection::vec(op(), 0..12), 1..=3)) {
        let mut model = Model::default();
        let mut tars = Vec::new();
        for layer in &layers {
            model.begin_layer();
            let mut b = LayerBuilder::new();
            for op in layer {
                if model.apply(op) {
                    emit(&mut b, op);
                }
            }
            tars.push(b.finish());
        }
        let base = tempfile::tempdir().expect("tempdir");
        let root = base.path().join("root");
        std::fs::create_dir(&root).expect("mkdir root");
        apply_all(&root, &tars).map_err(|e| TestCaseError::fail(e.to_string()))?;
        let (seen, groups) = read_tree(&root);
        prop_assert_eq!(seen, model.seen());
        prop_assert_eq!(groups, model.link_groups());
    }
}
