//! End-to-end: build (or reuse from /var/cache/hangar/images) the default
//! image, boot it with QEMU TCG inside a private network namespace, ssh in,
//! check tmux/git/identity, power off, check the data reached the disk.
//!
//! Ignored unless run as root (`scripts/test.sh` does): needs root,
//! qemu-system-x86, openssh-client, debootstrap + the Debian mirror on a
//! cold cache (about 2-3 minutes cold, 20 s warm; the cache is the one the
//! daemon's e2e tests use). `HANGAR_IMAGE_E2E_BOOTS=N` boots N times and
//! prints QEMU-start → ssh-success times.

use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hangar_image::{
    build_or_reuse_cached, host_tsc_khz, kernel_cmdline, write_config_drive, CmdlineOptions,
    GuestIdentity, ImageManifest, Recipe, DEFAULT_CACHE_DIR,
};
use tokio_util::sync::CancellationToken;

const GUEST: &str = "10.213.0.2";

fn sh(cmd: &mut Command) -> std::process::Output {
    let out = cmd.output().expect("spawn");
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Network namespace with bridge br0 (10.213.0.1/24) and TAP tap0; removed on drop.
struct NetNs(String);

impl NetNs {
    fn new() -> Self {
        let name = format!("hgtest-img-{}", std::process::id());
        sh(Command::new("ip").args(["netns", "add", &name]));
        let ns = NetNs(name);
        for args in [
            vec!["link", "set", "lo", "up"],
            vec!["link", "add", "br0", "type", "bridge"],
            vec!["addr", "add", "10.213.0.1/24", "dev", "br0"],
            vec!["link", "set", "br0", "up"],
            vec!["tuntap", "add", "dev", "tap0", "mode", "tap"],
            vec!["link", "set", "tap0", "master", "br0"],
            vec!["link", "set", "tap0", "up"],
        ] {
            sh(Command::new("ip").arg("-n").arg(&ns.0).args(args));
        }
        ns
    }

    fn exec(&self) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.0]);
        c
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = Command::new("ip").args(["netns", "del", &self.0]).status();
    }
}

/// A QEMU process killed (by PID) on drop if still running.
struct Qemu(Child);

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn keygen(path: &Path) -> (String, String) {
    sh(Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path));
    let private = std::fs::read_to_string(path).expect("key");
    let public = std::fs::read_to_string(path.with_extension("pub")).expect("pub");
    (private, public.trim().to_string())
}

struct Ssh<'a> {
    ns: &'a NetNs,
    key: PathBuf,
    known_hosts: PathBuf,
}

impl Ssh<'_> {
    fn cmd(&self, remote: &str) -> Command {
        let mut c = self.ns.exec();
        c.arg("ssh")
            .arg("-i")
            .arg(&self.key)
            .arg("-o")
            .arg(format!("UserKnownHostsFile={}", self.known_hosts.display()))
            .args([
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "ConnectTimeout=2",
                "-o",
                "LogLevel=ERROR",
                &format!("root@{GUEST}"),
                remote,
            ])
            .stdin(Stdio::null());
        c
    }
}

#[test]
#[ignore = "needs root: builds the default image and boots it under QEMU in a network namespace"]
fn default_image_boots_and_accepts_ssh_and_powers_off() {
    hangar_testsupport::require_root("debootstrap, a network namespace, a TAP");
    let boots: usize = std::env::var("HANGAR_IMAGE_E2E_BOOTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1);
    let tmp = tempfile::tempdir().expect("tempdir");
    let image_dir = tmp.path().join("image");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    let t0 = Instant::now();
    let progress = |p: hangar_api::Progress| {
        eprintln!("{}: {}", p.phase, p.detail.unwrap_or_default());
    };
    let manifest = rt
        .block_on(build_or_reuse_cached(
            &Recipe::default_debian12(),
            Path::new(DEFAULT_CACHE_DIR),
            &image_dir,
            &progress,
            &CancellationToken::new(),
        ))
        .expect("build image");
    eprintln!("image ready in {:.1}s", t0.elapsed().as_secs_f64());
    assert_eq!(ImageManifest::load(&image_dir).expect("manifest"), manifest);

    let ns = NetNs::new();
    let key = tmp.path().join("id_ed25519");
    let (_, user_pub) = keygen(&key);
    let (host_priv, host_pub) = keygen(&tmp.path().join("host_ed25519"));
    let known_hosts = tmp.path().join("known_hosts");
    std::fs::write(&known_hosts, format!("{GUEST} {host_pub}\n")).expect("known_hosts");
    let ssh = Ssh {
        ns: &ns,
        key: key.clone(),
        known_hosts,
    };
    let config = tmp.path().join("config.img");
    write_config_drive(
        &config,
        &GuestIdentity {
            hostname: "e2e-guest".into(),
            ip: GUEST.parse().expect("ip"),
            prefix_len: 24,
            gateway: Ipv4Addr::new(10, 213, 0, 1),
            dns: vec![Ipv4Addr::new(10, 213, 0, 1)],
            authorized_keys: vec![user_pub],
            login_keys: None,
            host_key_private_openssh: host_priv,
            host_key_public_openssh: host_pub,
            mac: "52:54:00:13:00:02".into(),
            random_seed: vec![0x5a; 64],
        },
    )
    .expect("config drive");
    let cmdline = kernel_cmdline(&CmdlineOptions {
        tsc_khz: host_tsc_khz(),
        extra: vec![],
    });
    let disk = tmp.path().join("disk.ext4");
    let mut times = Vec::new();

    for boot in 0..boots {
        // A fresh copy of the rootfs per boot, like a VM's CoW disk.
        sh(Command::new("cp")
            .args(["--reflink=auto", "--sparse=always"])
            .arg(image_dir.join(&manifest.rootfs))
            .arg(&disk));
        let serial = tmp.path().join(format!("serial-{boot}.log"));
        let start = Instant::now();
        let child = ns
            .exec()
            .arg("qemu-system-x86_64")
            .args([
                "-M",
                "microvm,acpi=on",
                "-accel",
                "tcg,thread=multi",
                "-cpu",
                "max",
            ])
            .args(["-m", "1024", "-smp", "2", "-nodefaults", "-no-user-config"])
            .args(["-nographic", "-no-reboot"])
            .arg("-kernel")
            .arg(image_dir.join(&manifest.kernel))
            .arg("-initrd")
            .arg(image_dir.join(manifest.initrd.as_deref().expect("initrd")))
            .arg("-append")
            .arg(&cmdline)
            .arg("-drive")
            .arg(format!(
                "id=root,file={},format=raw,if=none",
                disk.display()
            ))
            .args(["-device", "virtio-blk-device,drive=root"])
            .arg("-drive")
            .arg(format!(
                "id=cfg,file={},format=raw,if=none,readonly=on",
                config.display()
            ))
            .args(["-device", "virtio-blk-device,drive=cfg"])
            .args(["-netdev", "tap,id=net0,ifname=tap0,script=no,downscript=no"])
            .args([
                "-device",
                "virtio-net-device,netdev=net0,mac=52:54:00:13:00:02",
            ])
            .arg("-serial")
            .arg(format!("file:{}", serial.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("qemu-system-x86_64 (apt-get install qemu-system-x86)");
        let mut qemu = Qemu(child);

        // Wait for sshd's banner on the console, then for a real login.
        let deadline = start + Duration::from_secs(60);
        loop {
            let log = std::fs::read_to_string(&serial).unwrap_or_default();
            if log.contains("Server listening") {
                break;
            }
            assert!(Instant::now() < deadline, "sshd did not start:\n{log}");
            assert!(
                qemu.0.try_wait().expect("wait").is_none(),
                "qemu exited:\n{log}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        loop {
            if ssh.cmd("true").status().expect("ssh").success() {
                break;
            }
            let log = std::fs::read_to_string(&serial).unwrap_or_default();
            assert!(Instant::now() < deadline, "ssh never succeeded:\n{log}");
            std::thread::sleep(Duration::from_millis(50));
        }
        let secs = start.elapsed().as_secs_f64();
        eprintln!("boot {boot}: QEMU start -> ssh success {secs:.2}s");
        times.push(secs);

        let out = sh(&mut ssh.cmd(
            "hostname; cat /etc/resolv.conf; tmux new-session -d -s t 'sleep 600' && tmux ls; \
             git --version; echo persisted-data > /root/e2e-marker; ps -o comm= -p 1",
        ));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("e2e-guest"), "{text}");
        assert!(text.contains("nameserver 10.213.0.1"), "{text}");
        assert!(text.contains("t: 1 windows"), "{text}");
        assert!(text.contains("git version"), "{text}");

        let _ = ssh.cmd("poweroff").status();
        let off_deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Some(st) = qemu.0.try_wait().expect("wait") {
                break st;
            }
            assert!(
                Instant::now() < off_deadline,
                "qemu still running after poweroff"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        assert!(status.success(), "qemu exit {status}");
        drop(qemu);

        let cat = sh(Command::new("debugfs")
            .args(["-R", "cat /root/e2e-marker"])
            .arg(&disk));
        assert_eq!(
            String::from_utf8_lossy(&cat.stdout).trim(),
            "persisted-data"
        );
        let fsck = Command::new("e2fsck")
            .args(["-fn"])
            .arg(&disk)
            .output()
            .expect("e2fsck");
        assert!(
            fsck.status.success(),
            "fs not clean after poweroff: {}",
            String::from_utf8_lossy(&fsck.stdout)
        );
    }
    eprintln!("boot times: {times:?}");
}
