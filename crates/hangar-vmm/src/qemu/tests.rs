use super::*;
use crate::Drive;

#[test]
fn guest_kernel_args_derive_lpj_from_the_tsc_rate_only_when_known() {
    let driver = QemuDriver::new("/nonexistent/qemu", Accel::Tcg);

    let with = driver.guest_kernel_args(Some(2_500_000));
    let without = driver.guest_kernel_args(None);

    assert!(driver.wants_host_tsc());
    assert_eq!(with.last().map(String::as_str), Some("lpj=10000000"));
    assert!(with.contains(&"mitigations=off".to_string()));
    assert!(
        !without.iter().any(|a| a.starts_with("lpj=")),
        "{without:?}"
    );
}

fn spec() -> VmSpec {
    VmSpec {
        id: "vm1".into(),
        name: "dev".into(),
        cpus: 2,
        memory_mib: 512,
        kernel: "/img/vmlinux".into(),
        initrd: Some("/img/initrd".into()),
        cmdline: "console=ttyS0 quiet".into(),
        root_disk: "/vms/vm1/root.ext4".into(),
        extra_drives: vec![Drive {
            id: "config".into(),
            path: "/vms/vm1/config.img".into(),
            read_only: true,
        }],
        tap: "hg-tap0".into(),
        mac: "52:54:00:12:34:56".into(),
        vm_dir: "/vms/vm1".into(),
        serial_log: "/vms/vm1/serial.log".into(),
        netns: None,
        restore_from: None,
        run_as: None,
    }
}

#[test]
fn build_args_tcg_gives_the_documented_layout() {
    let args = build_args(&spec(), Accel::Tcg, false).join(" ");
    assert_eq!(
        args,
        "-M microvm,acpi=on -accel tcg,thread=multi -cpu max -m 512 -smp 2 \
         -nodefaults -no-user-config -nographic -no-reboot \
         -kernel /img/vmlinux -initrd /img/initrd -append console=ttyS0 quiet \
         -drive id=root,file=/vms/vm1/root.ext4,format=raw,if=none -device virtio-blk-device,drive=root \
         -drive id=config,file=/vms/vm1/config.img,format=raw,if=none,readonly=on -device virtio-blk-device,drive=config \
         -netdev tap,id=net0,ifname=hg-tap0,script=no,downscript=no -device virtio-net-device,netdev=net0,mac=52:54:00:12:34:56 \
         -chardev file,id=serial0,path=/vms/vm1/serial.log,append=on -serial chardev:serial0 \
         -qmp unix:/vms/vm1/qmp.sock,server=on,wait=off -pidfile /vms/vm1/vmm.pid"
    );
}

#[test]
fn build_args_with_a_snapshot_resume_it_from_an_inherited_fd() {
    let mut s = spec();
    s.restore_from = Some("/snap/it's.state".into());
    let args = build_args(&s, Accel::Tcg, true);
    assert_eq!(args[args.len() - 2..], ["-incoming", "fd:3"]);
    assert!(
        !args.iter().any(|a| a.starts_with("exec:")),
        "the sandbox forbids spawning: {args:?}"
    );
    assert!(!build_args(&spec(), Accel::Tcg, true).contains(&"-incoming".to_string()));
}

fn value_of<'a>(args: &'a [String], flag: &str) -> Option<&'a str> {
    let i = args.iter().position(|a| a == flag)?;
    args.get(i + 1).map(String::as_str)
}

#[test]
fn build_args_confined_runs_under_seccomp_as_the_vm_uid() {
    let mut s = spec();
    s.run_as = Some(crate::RunAs {
        uid: 200_007,
        gid: 200_008,
    });
    let args = build_args(&s, Accel::Tcg, true);
    assert_eq!(value_of(&args, "-runas"), Some("200007:200008"));
    assert_eq!(
        value_of(&args, "-sandbox"),
        Some("on,obsolete=deny,spawn=deny,resourcecontrol=deny")
    );
}

#[test]
fn build_args_sandbox_without_runas_also_denies_privilege_changes() {
    let args = build_args(&spec(), Accel::Tcg, true);
    assert_eq!(
        value_of(&args, "-sandbox"),
        Some("on,obsolete=deny,elevateprivileges=deny,spawn=deny,resourcecontrol=deny")
    );
    assert_eq!(value_of(&args, "-runas"), None);
    let off = build_args(&spec(), Accel::Tcg, false);
    assert_eq!(value_of(&off, "-sandbox"), None);
}

/// A spec whose binary, disks and drive are real files in `dir`.
fn keyed_spec(dir: &Path, vm: &str) -> (PathBuf, VmSpec) {
    let bin = dir.join("qemu-system-x86_64");
    if !bin.exists() {
        std::fs::write(&bin, b"qemu").unwrap();
    }
    let vm_dir = dir.join(vm);
    std::fs::create_dir_all(&vm_dir).unwrap();
    let mut s = spec();
    s.id = vm.into();
    s.name = vm.into();
    s.vm_dir = vm_dir.clone();
    s.serial_log = vm_dir.join("serial.log");
    s.root_disk = vm_dir.join("root.ext4");
    s.extra_drives[0].path = vm_dir.join("config.img");
    s.tap = format!("tap-{vm}");
    s.mac = format!("02:00:00:00:00:{:02x}", vm.len());
    std::fs::File::create(&s.root_disk)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    std::fs::write(&s.extra_drives[0].path, vec![0u8; 4096]).unwrap();
    (bin, s)
}

#[test]
fn snapshot_key_is_shared_by_vms_that_differ_only_in_their_own_paths_tap_and_mac() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, a) = keyed_spec(dir.path(), "a");
    let (_, b) = keyed_spec(dir.path(), "bb");
    let key = boot_snapshot_key(&bin, &a, Accel::Tcg, true).unwrap();
    assert_eq!(
        boot_snapshot_key(&bin, &b, Accel::Tcg, true),
        Some(key.clone())
    );
    let mut restoring = b.clone();
    restoring.restore_from = Some("/snap.state".into());
    restoring.netns = Some("ns".into());
    let (_, mut confined_a) = keyed_spec(dir.path(), "a");
    confined_a.run_as = Some(crate::RunAs { uid: 7, gid: 7 });
    let mut confined_b = b.clone();
    confined_b.run_as = Some(crate::RunAs { uid: 9, gid: 9 });
    assert_eq!(
        boot_snapshot_key(&bin, &confined_a, Accel::Tcg, true),
        boot_snapshot_key(&bin, &confined_b, Accel::Tcg, true),
        "the uid a VM runs as does not change its snapshot"
    );
    assert_eq!(
        boot_snapshot_key(&bin, &restoring, Accel::Tcg, true),
        Some(key)
    );
}

#[test]
fn snapshot_key_changes_with_the_machine_the_kernel_the_disks_and_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, a) = keyed_spec(dir.path(), "a");
    let key = boot_snapshot_key(&bin, &a, Accel::Tcg, true).unwrap();
    let differ = |s: &VmSpec, accel: Accel| {
        assert_ne!(boot_snapshot_key(&bin, s, accel, true), Some(key.clone()));
    };
    differ(&a, Accel::Kvm);
    let mut s = a.clone();
    s.cpus = 1;
    differ(&s, Accel::Tcg);
    let mut s = a.clone();
    s.memory_mib = 1024;
    differ(&s, Accel::Tcg);
    let mut s = a.clone();
    s.cmdline.push_str(" quiet");
    differ(&s, Accel::Tcg);
    let mut s = a.clone();
    s.kernel = "/img/other/vmlinux".into();
    differ(&s, Accel::Tcg);

    std::fs::File::options()
        .write(true)
        .open(&a.root_disk)
        .unwrap()
        .set_len(2 << 30)
        .unwrap();
    differ(&a, Accel::Tcg);
    std::fs::File::options()
        .write(true)
        .open(&a.root_disk)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    assert_eq!(
        boot_snapshot_key(&bin, &a, Accel::Tcg, true),
        Some(key.clone())
    );

    std::fs::write(&bin, b"qemu 2").unwrap();
    differ(&a, Accel::Tcg);
}

#[test]
fn no_snapshot_key_with_a_missing_disk_or_a_missing_binary() {
    let dir = tempfile::tempdir().unwrap();
    let (bin, a) = keyed_spec(dir.path(), "a");
    let mut s = a.clone();
    s.root_disk = dir.path().join("gone.ext4");
    assert_eq!(boot_snapshot_key(&bin, &s, Accel::Tcg, true), None);
    assert_eq!(
        boot_snapshot_key(Path::new("/nonexistent/qemu"), &a, Accel::Tcg, true),
        None
    );
}

#[tokio::test]
async fn restoring_a_missing_snapshot_fails_before_spawning() {
    let dir = tempfile::tempdir().unwrap();
    let (_, mut s) = keyed_spec(dir.path(), "a");
    s.kernel = dir.path().join("vmlinux");
    s.initrd = None;
    std::fs::write(&s.kernel, b"").unwrap();
    s.restore_from = Some(dir.path().join("none.state"));
    let driver = QemuDriver::new("/nonexistent/qemu", Accel::Tcg);

    let err = driver.start(&s).await.unwrap_err();

    assert!(
        matches!(
            err,
            VmmError::MissingFile {
                what: "boot snapshot",
                ..
            }
        ),
        "{err:?}"
    );
}

fn spec_in(dir: &Path) -> VmSpec {
    let mut s = spec();
    s.kernel = dir.join("vmlinux");
    s.initrd = None;
    s.root_disk = dir.join("root.ext4");
    s.extra_drives.clear();
    s.vm_dir = dir.to_path_buf();
    s.serial_log = dir.join("serial.log");
    for f in [&s.kernel, &s.root_disk] {
        std::fs::write(f, b"").unwrap();
    }
    s
}

#[tokio::test]
async fn start_with_a_missing_binary_is_a_spawn_error() {
    let dir = tempfile::tempdir().unwrap();
    let spec = spec_in(dir.path());
    let driver = QemuDriver::new("/nonexistent/qemu", Accel::Tcg);

    let err = driver.start(&spec).await.unwrap_err();

    assert!(matches!(err, VmmError::Spawn { .. }), "{err:?}");
}

#[test]
fn build_args_kvm_uses_host_cpu() {
    let args = build_args(&spec(), Accel::Kvm, false);
    let accel = args.iter().position(|a| a == "-accel").unwrap();
    assert_eq!(args[accel + 1], "kvm");
    assert_eq!(args[accel + 3], "host");
}

#[test]
fn build_args_keeps_cmdline_as_one_argument() {
    let args = build_args(&spec(), Accel::Tcg, false);
    let i = args.iter().position(|a| a == "-append").unwrap();
    assert_eq!(args[i + 1], "console=ttyS0 quiet");
}

#[test]
fn build_args_without_initrd_omits_initrd() {
    let mut s = spec();
    s.initrd = None;
    assert!(!build_args(&s, Accel::Tcg, false)
        .iter()
        .any(|a| a == "-initrd"));
}

#[test]
fn build_args_writable_extra_drive_has_no_readonly() {
    let mut s = spec();
    s.extra_drives[0].read_only = false;
    let args = build_args(&s, Accel::Tcg, false);
    assert!(args.contains(&"id=config,file=/vms/vm1/config.img,format=raw,if=none".to_string()));
}

#[test]
fn build_args_escapes_commas_in_paths() {
    let mut s = spec();
    s.root_disk = "/vms/a,b/root.ext4".into();
    let args = build_args(&s, Accel::Tcg, false);
    assert!(args.contains(&"id=root,file=/vms/a,,b/root.ext4,format=raw,if=none".to_string()));
}
