//! OCI images from real tools, end to end: a base image made from the
//! default image's rootfs, a Dockerfile built `FROM` it with `buildah bud`
//! (vfs storage, chroot isolation) that installs a Debian package, pushed
//! to Debian's `docker-registry` on 127.0.0.1 and pulled with `hangar image
//! pull`; the same image through `buildah push oci-archive:` and
//! `docker-archive:` into `hangar image import`. Each boots and runs the
//! installed tool. Slow (a whole Debian rootfs goes through every path):
//! one test, run one at a time.
#![allow(clippy::unwrap_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use common::TestDaemon;
use hangar_testsupport::registry::LocalRegistry;

/// `buildah` with its storage (vfs) and signature policy in `dir`.
struct Buildah {
    dir: PathBuf,
}

impl Buildah {
    fn new(dir: &Path) -> Buildah {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(
            dir.join("policy.json"),
            r#"{"default":[{"type":"insecureAcceptAnything"}]}"#,
        )
        .unwrap();
        Buildah {
            dir: dir.to_path_buf(),
        }
    }

    /// Runs `buildah ARGS`, asserting success; returns stdout.
    fn run(&self, args: &[&str]) -> String {
        let d = |p: &str| self.dir.join(p).display().to_string();
        let out = Command::new("buildah")
            .args([
                "--root",
                &d("storage"),
                "--runroot",
                &d("run"),
                "--storage-driver",
                "vfs",
            ])
            .args(args)
            .env("BUILDAH_ISOLATION", "chroot")
            .stdin(Stdio::null())
            .output()
            .expect("buildah (apt-get install buildah)");
        assert!(
            out.status.success(),
            "buildah {args:?} failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    fn policy(&self) -> String {
        self.dir.join("policy.json").display().to_string()
    }
}

/// The default image's rootfs, mounted read-only for the test's life.
struct RootfsMount {
    dir: PathBuf,
}

impl RootfsMount {
    fn new(image: &Path, dir: &Path) -> RootfsMount {
        std::fs::create_dir_all(dir).unwrap();
        let ok = Command::new("mount")
            .args(["-o", "loop,ro,noload"])
            .arg(image)
            .arg(dir)
            .status()
            .unwrap()
            .success();
        assert!(ok, "mount -o loop,ro {}", image.display());
        RootfsMount {
            dir: dir.to_path_buf(),
        }
    }
}

impl Drop for RootfsMount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.dir).status();
    }
}

fn default_image_dir(d: &TestDaemon) -> PathBuf {
    d.ok(&["image", "pull", "debian-12"]);
    let info = d.json(&["image", "show", "debian-12"]);
    let digest = info["digest"]
        .as_str()
        .unwrap()
        .trim_start_matches("sha256:");
    d.state_dir().join("images").join(digest)
}

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn boot_and_check_jq(d: &TestDaemon, vm: &str, image: &str) {
    d.ok(&["vm", "create", vm, "--image", image]);
    let out = d.exec(vm, &["jq", "--version"]);
    assert!(
        stdout(&out).starts_with("jq-1."),
        "{vm}: jq --version: {out:?}"
    );
    // ENV and WORKDIR from the Dockerfile.
    let out = d.exec(vm, &["sh", "-c", "echo $GREETING; pwd"]);
    assert_eq!(stdout(&out), "from-dockerfile\n/srv\n", "{vm}: {out:?}");
    d.ok(&["vm", "rm", "-f", vm]);
}

#[test]
#[ignore = "needs root: runs the daemon, boots guests, loop-mounts the default rootfs and runs buildah and docker-registry"]
fn a_dockerfile_built_with_buildah_boots_from_a_registry_an_oci_archive_and_a_docker_archive() {
    let _serial = common::serial();
    let d = TestDaemon::start("oci-registry");
    let work = d.dir.path().join("oci");
    let registry = LocalRegistry::start(&work.join("registry"));
    let b = Buildah::new(&work.join("buildah"));
    let reg = registry.addr.clone();
    let t = Instant::now();

    // 1. A base image from the default image's rootfs, pushed.
    let image_dir = default_image_dir(&d);
    {
        let rootfs = RootfsMount::new(&image_dir.join("rootfs.ext4"), &work.join("rootfs"));
        let ctr = b.run(&["from", "--signature-policy", &b.policy(), "scratch"]);
        let mnt = b.run(&["mount", &ctr]);
        let ok = Command::new("cp")
            .args(["-a", &format!("{}/.", rootfs.dir.display()), &mnt])
            .status()
            .unwrap()
            .success();
        assert!(ok, "copy the rootfs into the container");
        // As in any base image: plain files, not Hangar's links to the
        // config drive (buildah mounts its own over them).
        for f in ["etc/resolv.conf", "etc/hosts", "etc/hostname"] {
            let p = Path::new(&mnt).join(f);
            let _ = std::fs::remove_file(&p);
            std::fs::write(&p, "").unwrap();
        }
        b.run(&["umount", &ctr]);
        b.run(&[
            "commit",
            "--signature-policy",
            &b.policy(),
            &ctr,
            "hangar-base",
        ]);
        b.run(&["rm", &ctr]);
    }
    b.run(&[
        "push",
        "--signature-policy",
        &b.policy(),
        "--tls-verify=false",
        "hangar-base",
        &format!("docker://{reg}/hangar/base:12"),
    ]);
    eprintln!("base image pushed after {:?}", t.elapsed());

    // 2. A Dockerfile FROM it that installs a Debian package.
    let ctx = work.join("ctx");
    std::fs::create_dir_all(&ctx).unwrap();
    std::fs::write(
        ctx.join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\n\
         RUN apt-get update -q && apt-get install -y -q --no-install-recommends jq && rm -rf /var/lib/apt/lists/*\n\
         ENV GREETING=from-dockerfile\nWORKDIR /srv\nCMD [\"jq\", \"--version\"]\n",
    )
    .unwrap();
    b.run(&[
        "bud",
        "--signature-policy",
        &b.policy(),
        "--tls-verify=false",
        "--isolation",
        "chroot",
        "--build-arg",
        &format!("BASE={reg}/hangar/base:12"),
        "-t",
        "tool",
        &ctx.display().to_string(),
    ]);
    b.run(&[
        "push",
        "--signature-policy",
        &b.policy(),
        "--tls-verify=false",
        "tool",
        &format!("docker://{reg}/team/tool:v1"),
    ]);
    eprintln!("tool image built and pushed after {:?}", t.elapsed());

    // 3. Pulled from the registry (plain HTTP: loopback only).
    let err = d.fails(&["image", "pull", &format!("{reg}/team/tool:v1")]);
    assert!(
        err.contains("registry") || err.contains("https") || err.contains("HTTP"),
        "{err}"
    );
    d.assert_no_image_leftovers();
    let p = Instant::now();
    d.ok(&[
        "image",
        "pull",
        &format!("{reg}/team/tool:v1"),
        "--insecure",
    ]);
    eprintln!("hangar image pull took {:?}", p.elapsed());
    let info = d.json(&["image", "show", "tool"]);
    assert!(
        info["source"]
            .as_str()
            .unwrap()
            .starts_with(&format!("oci:{reg}/team/tool:v1@sha256:")),
        "{info}"
    );
    // Built FROM a Debian rootfs with a kernel in /boot: it boots its own.
    let own = info["kernel_from"].as_str().unwrap().to_string();
    let version = own
        .strip_prefix("image:/boot/vmlinuz-")
        .unwrap_or_else(|| panic!("not its own kernel: {info}"))
        .to_string();
    d.ok(&["vm", "create", "own-kernel", "--image", "tool"]);
    assert_eq!(
        stdout(&d.exec("own-kernel", &["uname", "-r"])),
        format!("{version}\n")
    );
    // Its virtio modules came from the image's /lib/modules, and modprobe works.
    let out = d.exec(
        "own-kernel",
        &[
            "sh",
            "-c",
            "modprobe -n -v virtio_net >/dev/null && echo ok",
        ],
    );
    assert_eq!(stdout(&out), "ok\n", "{out:?}");
    d.ok(&["vm", "rm", "-f", "own-kernel"]);
    boot_and_check_jq(&d, "from-registry", "tool");

    // 4. The same image as an OCI archive file.
    let oci = work.join("tool.oci.tar");
    b.run(&[
        "push",
        "--signature-policy",
        &b.policy(),
        "tool",
        &format!("oci-archive:{}", oci.display()),
    ]);
    d.ok(&[
        "image",
        "import",
        &oci.display().to_string(),
        "--name",
        "tool-oci",
    ]);
    boot_and_check_jq(&d, "from-oci-archive", "tool-oci");

    // 5. And as a docker-archive, on stdin (`docker save IMG | hangar image import -`).
    let docker = work.join("tool.docker.tar");
    b.run(&[
        "push",
        "--signature-policy",
        &b.policy(),
        "tool",
        &format!("docker-archive:{}:tool:v1", docker.display()),
    ]);
    let body = std::fs::read(&docker).unwrap();
    let out = d.hangar_with_stdin(&["image", "import", "-", "--name", "tool-docker"], &body);
    assert!(
        out.status.success(),
        "import -: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    boot_and_check_jq(&d, "from-docker-archive", "tool-docker");

    // Every source gives the same rootfs content as the registry's image
    // (same run config; sizes within a block of each other).
    let a = d.json(&["image", "show", "tool"]);
    for other in ["tool-oci", "tool-docker"] {
        let o = d.json(&["image", "show", other]);
        assert_eq!(a["run"], o["run"], "{other}");
    }
    d.assert_no_image_leftovers();
    eprintln!("all done after {:?}", t.elapsed());
}
