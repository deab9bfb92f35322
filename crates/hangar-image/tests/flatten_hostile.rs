//! Hostile layers: every way an entry could reach outside the staging root.
//! Each test keeps a canary beside the root and checks, after the apply
//! failed (or was safely contained), that nothing outside the root changed
//! or appeared. Only the public interface is used.

mod flatten_support;

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use flatten_support::{apply_all, LayerBuilder, Sandbox};
use hangar_image::flatten::LayerStats;
use hangar_image::ImageError;
use tar::EntryType;

/// Asserts the apply was refused for `entry` of `layer` and returns the reason.
fn refused(r: Result<Vec<LayerStats>, ImageError>, layer: &str, entry: &str) -> String {
    match r {
        Err(ImageError::BadLayerEntry {
            layer: l,
            entry: e,
            reason,
        }) => {
            assert_eq!(
                (l.as_str(), e.as_str()),
                (layer, entry),
                "refused: {reason}"
            );
            reason
        }
        other => panic!("expected {entry:?} of {layer} to be refused, got {other:?}"),
    }
}

fn read(p: &Path) -> Vec<u8> {
    fs::read(p).unwrap_or_else(|e| panic!("read {}: {e}", p.display()))
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn absolute_path_is_taken_relative_to_the_root() {
    let s = Sandbox::new();
    let abs = format!("{}/file", s.canary_str());
    let layer = LayerBuilder::new().file(&abs, b"pwned", 0o644).finish();
    apply_all(&s.root, &[layer]).expect("contained, not refused");
    let inside = s.root.join(abs.trim_start_matches('/'));
    assert_eq!(read(&inside), b"pwned");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn dotdot_paths_are_refused() {
    for name in [
        "../canary/file",
        "a/../../canary/file",
        "./a/b/../../../canary/new",
    ] {
        let s = Sandbox::new();
        let layer = LayerBuilder::new()
            .file("ok", b"fine", 0o644)
            .file(name, b"pwned", 0o644)
            .finish();
        let reason = refused(apply_all(&s.root, &[layer]), "layer0", name);
        assert!(reason.contains("climbs above the root"), "{reason}");
        s.assert_outside_untouched();
    }
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn dotdot_in_a_gnu_long_name_is_refused() {
    let s = Sandbox::new();
    let name = format!(
        "{}/../../{}/../canary/file",
        "x".repeat(120),
        "y".repeat(10)
    );
    let layer = LayerBuilder::new().file(&name, b"pwned", 0o644).finish();
    let reason = refused(apply_all(&s.root, &[layer]), "layer0", &name);
    assert!(reason.contains("climbs"), "{reason}");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn dotdot_directory_and_symlink_entries_are_refused() {
    let s = Sandbox::new();
    let l = LayerBuilder::new().dir("../canary", 0o777).finish();
    refused(apply_all(&s.root, &[l]), "layer0", "../canary");
    let l = LayerBuilder::new()
        .symlink("../canary/link", "/etc/passwd")
        .finish();
    refused(apply_all(&s.root, &[l]), "layer0", "../canary/link");
    let l = LayerBuilder::new()
        .raw(EntryType::Fifo, b"../canary/fifo", None, 0o644, b"", |_| {})
        .finish();
    refused(apply_all(&s.root, &[l]), "layer0", "../canary/fifo");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn symlink_planted_in_the_same_layer_resolves_inside_the_root() {
    let s = Sandbox::new();
    let layer = LayerBuilder::new()
        .symlink("etc", "../../../../../..")
        .file("etc/passwd", b"root::0:0::/:/bin/sh\n", 0o644)
        .finish();
    apply_all(&s.root, &[layer]).expect("contained");
    // `..` above the root stays at the root: etc/passwd is root/passwd.
    assert_eq!(read(&s.root.join("passwd")), b"root::0:0::/:/bin/sh\n");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn symlink_planted_in_an_earlier_layer_resolves_inside_the_root() {
    let s = Sandbox::new();
    let l1 = LayerBuilder::new().symlink("etc", "/").finish();
    let l2 = LayerBuilder::new()
        .file("etc/canary/file", b"pwned", 0o644)
        .dir("etc/canary", 0o777)
        .finish();
    apply_all(&s.root, &[l1, l2]).expect("contained");
    assert_eq!(read(&s.root.join("canary/file")), b"pwned");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn symlink_to_an_absolute_outside_path_is_not_followed_out() {
    let s = Sandbox::new();
    let l1 = LayerBuilder::new()
        .symlink("evil", &s.canary_str())
        .finish();
    // The link's target, taken inside the root, does not exist: refused
    // rather than following it anywhere.
    let l2 = LayerBuilder::new()
        .file("evil/file", b"pwned", 0o644)
        .finish();
    let reason = refused(apply_all(&s.root, &[l1, l2]), "layer1", "evil/file");
    assert!(reason.contains("dangling"), "{reason}");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn symlink_to_an_absolute_outside_path_existing_inside_lands_inside() {
    let s = Sandbox::new();
    let canary = s.canary_str();
    let layer = LayerBuilder::new()
        .dir(&format!("{canary}/sub"), 0o755)
        .symlink("evil", &canary)
        .file("evil/file", b"pwned", 0o644)
        .file("evil/sub/deep", b"pwned", 0o644)
        .finish();
    apply_all(&s.root, &[layer]).expect("contained");
    let inside = s.root.join(canary.trim_start_matches('/'));
    assert_eq!(read(&inside.join("file")), b"pwned");
    assert_eq!(read(&inside.join("sub/deep")), b"pwned");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn symlink_chain_resolves_inside_the_root() {
    let s = Sandbox::new();
    let layer = LayerBuilder::new()
        .symlink("a", "b")
        .symlink("b", "c/d")
        .dir("c", 0o755)
        .symlink("c/d", "../../../../")
        .file("a/canary/file", b"pwned", 0o644)
        .finish();
    apply_all(&s.root, &[layer]).expect("contained");
    assert_eq!(read(&s.root.join("canary/file")), b"pwned");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn symlink_chain_ending_outside_is_refused() {
    let s = Sandbox::new();
    let outside = s.base.path().to_str().expect("utf-8").to_string();
    let layer = LayerBuilder::new()
        .symlink("a", "b")
        .symlink("b", &outside)
        .file("a/canary/file", b"pwned", 0o644)
        .finish();
    refused(apply_all(&s.root, &[layer]), "layer0", "a/canary/file");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn symlink_loop_is_refused() {
    let s = Sandbox::new();
    let layer = LayerBuilder::new()
        .symlink("a", "b")
        .symlink("b", "a")
        .file("a/x", b"x", 0o644)
        .finish();
    refused(apply_all(&s.root, &[layer]), "layer0", "a/x");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn entries_over_a_planted_symlink_replace_the_link_not_its_target() {
    let s = Sandbox::new();
    let canary = s.canary_str();
    let l1 = LayerBuilder::new()
        .symlink("d", &canary)
        .symlink("f", &format!("{canary}/file"))
        .symlink("rel", "../canary")
        .symlink("h", &format!("{canary}/file"))
        .finish();
    let l2 = LayerBuilder::new()
        .dir("d", 0o777)
        .file("f", b"pwned", 0o666)
        .dir("rel", 0o777)
        .file("target", b"t", 0o644)
        .hardlink("h", "target")
        .finish();
    apply_all(&s.root, &[l1, l2]).expect("contained");
    assert!(fs::symlink_metadata(s.root.join("d"))
        .expect("lstat")
        .is_dir());
    assert!(fs::symlink_metadata(s.root.join("rel"))
        .expect("lstat")
        .is_dir());
    assert_eq!(read(&s.root.join("f")), b"pwned");
    let h = fs::symlink_metadata(s.root.join("h")).expect("lstat");
    assert_eq!(
        h.ino(),
        fs::metadata(s.root.join("target")).expect("stat").ino()
    );
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn hard_link_to_dotdot_outside_is_refused() {
    let s = Sandbox::new();
    for target in ["../canary/file", "a/../../canary/file"] {
        let layer = LayerBuilder::new().hardlink("stolen", target).finish();
        let reason = refused(apply_all(&s.root, &[layer]), "layer0", "stolen");
        assert!(reason.contains("link target"), "{reason}");
    }
    assert!(!s.root.join("stolen").exists());
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn hard_link_to_an_absolute_outside_path_is_refused() {
    let s = Sandbox::new();
    let target = format!("{}/file", s.canary_str());
    let layer = LayerBuilder::new().hardlink("stolen", &target).finish();
    let reason = refused(apply_all(&s.root, &[layer]), "layer0", "stolen");
    assert!(reason.contains("link target missing"), "{reason}");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn hard_link_through_a_planted_symlink_is_refused() {
    let s = Sandbox::new();
    for evil in [
        s.canary_str(),
        "../canary".to_string(),
        "../../../canary".to_string(),
    ] {
        let layer = LayerBuilder::new()
            .symlink("evil", &evil)
            .hardlink("stolen", "evil/file")
            .finish();
        let reason = refused(apply_all(&s.root, &[layer]), "layer0", "stolen");
        assert!(reason.contains("link target missing"), "{evil}: {reason}");
        let _ = fs::remove_file(s.root.join("evil"));
    }
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn hard_link_through_a_symlink_to_the_root_links_an_inside_file() {
    let s = Sandbox::new();
    let layer = LayerBuilder::new()
        .file("real", b"r", 0o644)
        .symlink("up", "../../..")
        .hardlink("sub/link", "up/real")
        .hardlink("up/link2", "real")
        .finish();
    apply_all(&s.root, &[layer]).expect("contained");
    let ino = fs::metadata(s.root.join("real")).expect("stat").ino();
    assert_eq!(
        fs::metadata(s.root.join("sub/link")).expect("stat").ino(),
        ino
    );
    assert_eq!(fs::metadata(s.root.join("link2")).expect("stat").ino(), ino);
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn hard_link_cannot_name_a_symlink_to_write_through_later() {
    // A hard link to a planted symlink links the symlink itself; a later
    // file over it replaces the link, it never writes to the canary.
    let s = Sandbox::new();
    let l1 = LayerBuilder::new()
        .symlink("sym", &format!("{}/file", s.canary_str()))
        .hardlink("hl", "sym")
        .finish();
    let l2 = LayerBuilder::new().file("hl", b"pwned", 0o644).finish();
    apply_all(&s.root, &[l1, l2]).expect("contained");
    assert_eq!(read(&s.root.join("hl")), b"pwned");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn whiteouts_that_climb_out_are_refused() {
    let s = Sandbox::new();
    for name in ["../.wh.canary", "a/../../.wh.canary", ".wh...", "x/.wh.."] {
        let layer = LayerBuilder::new().whiteout(name).finish();
        refused(apply_all(&s.root, &[layer]), "layer0", name);
    }
    let layer = LayerBuilder::new().whiteout("../.wh..wh..opq").finish();
    refused(apply_all(&s.root, &[layer]), "layer0", "../.wh..wh..opq");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn whiteouts_through_planted_symlinks_stay_inside() {
    let s = Sandbox::new();
    let base = s.base.path().to_str().expect("utf-8").to_string();
    let l1 = LayerBuilder::new()
        .symlink("abs", &base)
        .symlink("up", "../..")
        .file("canary/inside", b"i", 0o644)
        .finish();
    let l2 = LayerBuilder::new()
        .whiteout("abs/.wh.canary")
        .whiteout("up/.wh.canary")
        .finish();
    apply_all(&s.root, &[l1, l2]).expect("contained");
    // up/ is the root itself: the in-root canary went, the real one stays.
    assert!(!s.root.join("canary").exists());
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn opaque_marker_through_planted_symlinks_stays_inside() {
    let s = Sandbox::new();
    let l1 = LayerBuilder::new()
        .symlink("up", "../../..")
        .file("lower", b"l", 0o644)
        .symlink("abs", &s.canary_str())
        .finish();
    let l2 = LayerBuilder::new()
        .whiteout("up/.wh..wh..opq")
        .file("upper", b"u", 0o644)
        .finish();
    apply_all(&s.root, &[l1.clone(), l2]).expect("contained");
    assert!(!s.root.join("lower").exists());
    assert!(s.root.join("upper").exists());
    s.assert_outside_untouched();

    let s = Sandbox::new();
    let l2 = LayerBuilder::new().whiteout("abs/.wh..wh..opq").finish();
    refused(apply_all(&s.root, &[l1, l2]), "layer1", "abs/.wh..wh..opq");
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn a_refused_entry_names_the_layer_and_stops_the_apply() {
    let s = Sandbox::new();
    let l1 = LayerBuilder::new().file("first", b"1", 0o644).finish();
    let l2 = LayerBuilder::new()
        .file("second", b"2", 0o644)
        .file("../canary/file", b"pwned", 0o644)
        .file("third", b"3", 0o644)
        .finish();
    let err = flatten_support::apply_labeled(
        &s.root,
        &[
            ("sha256:aaaa".to_string(), l1.as_slice()),
            ("sha256:bbbb".to_string(), l2.as_slice()),
        ],
    )
    .expect_err("refused");
    assert!(s.root.join("first").exists());
    let msg = err.to_string();
    assert!(
        msg.contains("sha256:bbbb") && msg.contains("../canary/file"),
        "{msg}"
    );
    assert!(!s.root.join("third").exists());
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn dotdot_in_pax_path_and_linkpath_is_refused() {
    let s = Sandbox::new();
    let layer = LayerBuilder::new()
        .pax(&[("path", b"../canary/pax")])
        .file("innocent", b"pwned", 0o644)
        .finish();
    let reason = refused(apply_all(&s.root, &[layer]), "layer0", "../canary/pax");
    assert!(reason.contains("climbs"), "{reason}");
    let layer = LayerBuilder::new()
        .pax(&[("linkpath", b"../canary/file")])
        .hardlink("stolen", "innocent")
        .finish();
    let reason = refused(apply_all(&s.root, &[layer]), "layer0", "stolen");
    assert!(reason.contains("link target"), "{reason}");
    assert!(!s.root.join("innocent").exists() && !s.root.join("stolen").exists());
    s.assert_outside_untouched();
}

#[test]
#[ignore = "needs root: hostile layers are applied chrooted in the test's own dir, so a regression cannot reach the host"]
fn entries_named_through_a_planted_file_are_refused() {
    // A file where a directory is expected: not followed, not replaced.
    let s = Sandbox::new();
    let l1 = LayerBuilder::new().file("etc", b"a file", 0o644).finish();
    let l2 = LayerBuilder::new().file("etc/passwd", b"x", 0o644).finish();
    let reason = refused(apply_all(&s.root, &[l1, l2]), "layer1", "etc/passwd");
    assert!(reason.contains("not a directory"), "{reason}");
    assert_eq!(read(&s.root.join("etc")), b"a file");
    s.assert_outside_untouched();
}
