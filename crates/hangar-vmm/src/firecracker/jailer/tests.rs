use super::*;
use crate::Drive;

fn jail() -> Jail {
    Jail::new(
        Path::new("/srv/jailer"),
        Path::new("/usr/bin/firecracker"),
        "vm-0123",
    )
}

#[test]
fn no_cgroup_settings_means_no_cgroup_dirs() {
    let cfg = JailerConfig::new("jailer", 1, 1, "/srv/jailer");

    assert!(cgroup_dirs(&cfg, &jail()).is_empty());
}

#[test]
fn v2_cgroup_is_under_the_exec_name_or_the_parent() {
    let mut cfg = JailerConfig::new("jailer", 1, 1, "/srv/jailer");
    cfg.limit_resources = true;

    assert_eq!(
        cgroup_dirs(&cfg, &jail()),
        [PathBuf::from("/sys/fs/cgroup/firecracker/vm-0123")]
    );
    cfg.parent_cgroup = Some("hangar.slice/vms".into());
    assert_eq!(
        cgroup_dirs(&cfg, &jail()),
        [PathBuf::from("/sys/fs/cgroup/hangar.slice/vms/vm-0123")]
    );
}

#[test]
fn v1_cgroups_are_one_per_controller_named_by_the_settings() {
    let mut cfg = JailerConfig::new("jailer", 1, 1, "/srv/jailer");
    cfg.cgroup_version = 1;
    cfg.limit_resources = true;
    cfg.cgroups = vec!["cpuset.cpus=0".into(), "memory.swappiness=0".into()];

    assert_eq!(
        cgroup_dirs(&cfg, &jail()),
        ["cpu", "cpuset", "memory"]
            .map(|c| PathBuf::from(format!("/sys/fs/cgroup/{c}/firecracker/vm-0123")))
    );
}

#[test]
fn cgroup_version_follows_the_unified_hierarchy_marker() {
    let dir = tempfile::tempdir().expect("tempdir");
    assert_eq!(host_cgroup_version(dir.path()), 1);
    std::fs::write(dir.path().join("cgroup.controllers"), "cpu memory").expect("write");
    assert_eq!(host_cgroup_version(dir.path()), 2);
}

fn spec() -> VmSpec {
    VmSpec {
        id: "vm-0123".into(),
        name: "dev".into(),
        cpus: 2,
        memory_mib: 512,
        kernel: "/img/abc/vmlinux".into(),
        initrd: Some("/img/abc/initrd.img".into()),
        cmdline: "console=ttyS0".into(),
        root_disk: "/vms/vm-0123/root.ext4".into(),
        extra_drives: vec![Drive {
            id: "config".into(),
            path: "/vms/vm-0123/config.img".into(),
            read_only: true,
        }],
        tap: "tap0".into(),
        mac: "06:00:00:00:00:01".into(),
        vm_dir: "/vms/vm-0123".into(),
        serial_log: "/vms/vm-0123/serial.log".into(),
        netns: Some("hg-ns".into()),
        restore_from: None,
        run_as: None,
    }
}

fn cfg() -> JailerConfig {
    JailerConfig::new("/usr/bin/jailer", 123, 100, "/srv/jailer")
}

#[test]
fn jail_dir_is_base_exec_name_id() {
    let j = Jail::new(
        Path::new("/srv/jailer"),
        Path::new("/usr/bin/firecracker"),
        "vm-1",
    );
    assert_eq!(j.dir, PathBuf::from("/srv/jailer/firecracker/vm-1"));
    assert_eq!(j.root, PathBuf::from("/srv/jailer/firecracker/vm-1/root"));
    assert_eq!(
        j.api_socket(),
        PathBuf::from("/srv/jailer/firecracker/vm-1/root/run/firecracker.socket")
    );
}

#[test]
fn jail_from_api_socket_inverts_api_socket() {
    let j = Jail::new(
        Path::new("/srv/jailer"),
        Path::new("/opt/fc/firecracker-v1.16"),
        "vm-1",
    );
    assert_eq!(Jail::from_api_socket(&j.api_socket()), Some(j));
}

#[test]
fn jail_from_unrelated_socket_is_none() {
    assert_eq!(
        Jail::from_api_socket(Path::new("/var/lib/hangar/vms/x/firecracker.sock")),
        None
    );
    assert_eq!(
        Jail::from_api_socket(Path::new("/run/firecracker.socket")),
        None
    );
    assert_eq!(
        Jail::from_api_socket(Path::new("/srv/other/vm-1/root/run/firecracker.socket")),
        None,
        "the exec directory must name firecracker"
    );
}

#[test]
fn validate_jail_id_rejects_bad_characters_and_length() {
    assert!(validate_jail_id("vm-0123").is_ok());
    assert!(validate_jail_id("").is_err());
    assert!(validate_jail_id("../etc").is_err());
    assert!(validate_jail_id("a_b").is_err());
    assert!(validate_jail_id(&"a".repeat(65)).is_err());
}

#[test]
fn jailer_args_give_the_documented_layout() {
    let args = jailer_args(
        &cfg(),
        Path::new("/usr/bin/firecracker"),
        &spec(),
        Some("hg-ns"),
    );
    assert_eq!(
        args.join(" "),
        "--id vm-0123 --exec-file /usr/bin/firecracker --uid 123 --gid 100 \
         --chroot-base-dir /srv/jailer --netns /run/netns/hg-ns --cgroup-version 2 \
         -- --api-sock /run/firecracker.socket"
    );
}

#[test]
fn jailer_args_with_limits_add_cgroup_v2_settings_before_separator() {
    let mut c = cfg();
    c.limit_resources = true;
    c.cgroups = vec!["cpuset.cpus=0".into()];
    let args = jailer_args(&c, Path::new("/usr/bin/firecracker"), &spec(), None);
    let sep = args.iter().position(|a| a == "--").unwrap();
    let cgroups: Vec<&str> = args[..sep]
        .windows(2)
        .filter(|w| w[0] == "--cgroup")
        .map(|w| w[1].as_str())
        .collect();
    assert_eq!(
        cgroups,
        [
            "cpu.max=200000 100000",
            "memory.max=603979776",
            "cpuset.cpus=0"
        ]
    );
    assert!(!args.contains(&"--netns".to_string()));
}

#[test]
fn cgroup_limits_v1_use_cfs_quota_and_limit_in_bytes() {
    assert_eq!(
        cgroup_limits(&spec(), 1),
        [
            "cpu.cfs_period_us=100000",
            "cpu.cfs_quota_us=200000",
            "memory.limit_in_bytes=603979776"
        ]
    );
}

#[test]
fn jailer_args_with_parent_cgroup_pass_it() {
    let mut c = cfg();
    c.parent_cgroup = Some("hangar".into());
    let args = jailer_args(&c, Path::new("/usr/bin/firecracker"), &spec(), None);
    let i = args.iter().position(|a| a == "--parent-cgroup").unwrap();
    assert_eq!(args[i + 1], "hangar");
}

#[test]
fn jailed_spec_rewrites_api_paths_relative_to_jail_root() {
    let (j, _) = jailed_spec(&spec()).unwrap();
    assert_eq!(j.kernel, PathBuf::from("/vmlinux"));
    assert_eq!(j.initrd, Some(PathBuf::from("/initrd")));
    assert_eq!(j.root_disk, PathBuf::from("/drive-root"));
    assert_eq!(j.extra_drives[0].path, PathBuf::from("/drive-config"));
    assert_eq!(j.vm_dir, PathBuf::from("/"));
    assert_eq!(
        j.serial_log,
        spec().serial_log,
        "the console is not an API path"
    );
}

#[test]
fn jailed_spec_lists_files_with_writability() {
    let (_, files) = jailed_spec(&spec()).unwrap();
    let list: Vec<(String, &str, bool)> = files
        .iter()
        .map(|f| {
            (
                f.host.to_string_lossy().into_owned(),
                f.in_jail.as_str(),
                f.writable,
            )
        })
        .collect();
    assert_eq!(
        list,
        [
            ("/img/abc/vmlinux".to_string(), "/vmlinux", false),
            ("/img/abc/initrd.img".to_string(), "/initrd", false),
            ("/vms/vm-0123/root.ext4".to_string(), "/drive-root", true),
            (
                "/vms/vm-0123/config.img".to_string(),
                "/drive-config",
                false
            ),
            ("/vms/vm-0123/vmm.log".to_string(), "/vmm.log", true),
            (
                "/vms/vm-0123/metrics.json".to_string(),
                "/metrics.json",
                true
            ),
        ]
    );
}

#[test]
fn jailed_spec_with_unsafe_drive_id_fails() {
    let mut s = spec();
    s.extra_drives[0].id = "../x".into();
    assert!(matches!(
        jailed_spec(&s),
        Err(VmmError::InvalidJailId { .. })
    ));
}

#[test]
fn link_or_copy_on_same_filesystem_hard_links() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir().unwrap();
    let src = dir.path().join("disk");
    std::fs::write(&src, b"data").unwrap();
    let dst = dir.path().join("link");
    let placed = link_or_copy(&src, &dst, true).unwrap();
    assert_eq!(placed, Placed::HardLinked);
    assert_eq!(
        std::fs::metadata(&src).unwrap().ino(),
        std::fs::metadata(&dst).unwrap().ino()
    );
}

/// /dev/shm (tmpfs) and the temp dir are different filesystems on
/// this project's machines; elsewhere the cross-device tests fail
/// naming that need.
fn cross_device_dirs() -> (tempfile::TempDir, tempfile::TempDir) {
    use std::os::unix::fs::MetadataExt;
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir_in("/dev/shm").unwrap();
    let dev = |p: &Path| std::fs::metadata(p).map(|m| m.dev()).ok();
    assert_ne!(
        dev(a.path()),
        dev(b.path()),
        "needs /dev/shm and the temp dir on different filesystems (set TMPDIR to a disk directory)"
    );
    (a, b)
}

#[test]
fn link_or_copy_across_filesystems_copies_read_only_file() {
    let (a, b) = cross_device_dirs();
    let src = b.path().join("vmlinux");
    std::fs::write(&src, b"kernel").unwrap();
    let dst = a.path().join("vmlinux");
    assert_eq!(link_or_copy(&src, &dst, false).unwrap(), Placed::Copied);
    assert_eq!(std::fs::read(&dst).unwrap(), b"kernel");
}

#[test]
fn link_or_copy_across_filesystems_refuses_writable_file() {
    let (a, b) = cross_device_dirs();
    let src = b.path().join("root.ext4");
    std::fs::write(&src, b"disk").unwrap();
    let err = link_or_copy(&src, &a.path().join("drive-root"), true).unwrap_err();
    assert!(matches!(err, VmmError::JailCrossDevice { .. }), "{err:?}");
    assert!(!a.path().join("drive-root").exists());
}

#[test]
fn jailer_args_run_a_vm_with_its_own_ids_over_the_configured_ones() {
    let mut s = spec();
    let arg = |s: &VmSpec, flag: &str| {
        let a = jailer_args(&cfg(), Path::new("/usr/bin/firecracker"), s, None);
        let i = a.iter().position(|x| x == flag).unwrap();
        a[i + 1].clone()
    };
    assert_eq!(
        (arg(&s, "--uid"), arg(&s, "--gid")),
        ("123".into(), "100".into())
    );
    s.run_as = Some(crate::RunAs {
        uid: 200_005,
        gid: 200_006,
    });
    assert_eq!(
        (arg(&s, "--uid"), arg(&s, "--gid")),
        ("200005".into(), "200006".into())
    );
}

/// A block device node in `dir` (any major:minor: it is never opened).
fn fake_block_device(dir: &Path) -> (PathBuf, u64) {
    use nix::sys::stat::{makedev, mknod, Mode, SFlag};
    let dev = dir.join("dm-7");
    let rdev = makedev(252, 7);
    mknod(&dev, SFlag::S_IFBLK, Mode::S_IRUSR | Mode::S_IWUSR, rdev).unwrap();
    (dev, rdev)
}

#[test]
#[ignore = "needs root (mknod of a device node)"]
fn a_block_device_on_another_filesystem_gets_its_own_node_in_the_jail() {
    use std::os::unix::fs::{FileTypeExt, MetadataExt};
    hangar_testsupport::require_root("mknod and chown");
    let (a, b) = cross_device_dirs();
    let (src, rdev) = fake_block_device(b.path());
    let dst = a.path().join("drive-root");

    assert_eq!(link_or_copy(&src, &dst, true).unwrap(), Placed::DeviceNode);

    let m = std::fs::symlink_metadata(&dst).unwrap();
    assert!(m.file_type().is_block_device());
    assert_eq!(m.rdev(), rdev);
    assert_eq!(m.mode() & 0o777, 0o600);
}

#[test]
#[ignore = "needs root (mknod, chown)"]
fn prepare_jail_gives_the_vm_user_its_disk_node_and_a_private_copy_of_root_only_files() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    hangar_testsupport::require_root("mknod and chown");
    let (a, b) = cross_device_dirs();
    let (disk, _) = fake_block_device(b.path());
    // A root-only image file on the jail's filesystem: a hard link would
    // share it, so the jail gets a copy.
    let kernel = a.path().join("vmlinux");
    std::fs::write(&kernel, b"kernel").unwrap();
    std::fs::set_permissions(&kernel, std::fs::Permissions::from_mode(0o600)).unwrap();
    let jail = Jail::new(
        &a.path().join("jail"),
        Path::new("/usr/bin/firecracker"),
        "vm-1",
    );
    let files = [
        JailFile {
            host: disk,
            in_jail: "/drive-root".into(),
            writable: true,
        },
        JailFile {
            host: kernel.clone(),
            in_jail: "/vmlinux".into(),
            writable: false,
        },
    ];

    prepare_jail(&jail, &files, 200_011, 200_012).unwrap();

    let owner = |p: &Path| {
        let m = std::fs::metadata(p).unwrap();
        (m.uid(), m.gid())
    };
    assert_eq!(owner(&jail.host_path("/drive-root")), (200_011, 200_012));
    let copy = jail.host_path("/vmlinux");
    assert_eq!(owner(&copy), (200_011, 200_012));
    assert_eq!(std::fs::read(&copy).unwrap(), b"kernel");
    assert_eq!(
        owner(&kernel),
        (0, 0),
        "the shared image file keeps its owner"
    );
    assert_ne!(
        std::fs::metadata(&copy).unwrap().ino(),
        std::fs::metadata(&kernel).unwrap().ino()
    );
}
