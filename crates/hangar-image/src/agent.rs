//! Hangar's guest agent in a guest's boot. The daemon appends a small cpio
//! archive (the agent binary and the current `/init`) to the image's own
//! initramfs. Linux unpacks concatenated newc archives in order, later
//! files replacing earlier ones, so an image keeps its busybox and kernel
//! modules, boots today's `/init`, and gets the agent without being
//! rebuilt; a new agent reaches every image at its next boot.

use std::io::Write;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cpio::CpioWriter;
use crate::{assets, ImageError};

/// Boot initrds are cached in the image dir as `<prefix><digest16>.img`.
pub const AGENT_INITRD_PREFIX: &str = "initrd+agent-";

/// The agent's file name wherever it is installed.
pub const AGENT_BINARY: &str = "hangar-agent";

/// Where `[guest] agent = "auto"` looks, in order: cargo's musl build in
/// the checkout the running `hangar` (`exe`) was built in
/// (`target/<profile>/hangar` finds
/// `target/x86_64-unknown-linux-musl/agent/hangar-agent`; the plain
/// `target/<profile>/hangar-agent` beside it is the host build, which is
/// not static), beside `exe`, then the system install dirs.
pub fn agent_candidates(exe: Option<&Path>) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Some(dir) = exe.and_then(Path::parent) {
        if let Some(target) = dir.parent() {
            out.push(
                target
                    .join("x86_64-unknown-linux-musl/agent")
                    .join(AGENT_BINARY),
            );
        }
        out.push(dir.join(AGENT_BINARY));
    }
    out.push(PathBuf::from("/usr/local/lib/hangar").join(AGENT_BINARY));
    out.push(PathBuf::from("/usr/lib/hangar").join(AGENT_BINARY));
    out
}

/// What `[guest] agent` resolves to.
#[derive(Debug)]
pub enum AgentLookup {
    /// `off`.
    Off,
    Found(GuestAgent),
    /// `auto` found no usable agent: each candidate that exists, with why
    /// it is not usable, and where it looked.
    Missing {
        looked_in: Vec<PathBuf>,
        unusable: Vec<String>,
    },
}

/// Resolves `[guest] agent` for a `hangar` binary at `exe`: `off`; a path
/// (an error when it is not a usable agent); `auto`: the first usable
/// candidate of [`agent_candidates`].
pub fn find_agent(setting: &str, exe: Option<&Path>) -> Result<AgentLookup, ImageError> {
    match setting {
        "off" => Ok(AgentLookup::Off),
        "auto" => {
            let looked_in = agent_candidates(exe);
            let mut unusable = Vec::new();
            for p in looked_in.iter().filter(|p| p.is_file()) {
                match GuestAgent::load(p) {
                    Ok(a) => return Ok(AgentLookup::Found(a)),
                    Err(e) => unusable.push(e.to_string()),
                }
            }
            Ok(AgentLookup::Missing {
                looked_in,
                unusable,
            })
        }
        path => GuestAgent::load(Path::new(path)).map(AgentLookup::Found),
    }
}

/// A loaded, checked agent binary.
pub struct GuestAgent {
    path: PathBuf,
    bytes: Vec<u8>,
    /// sha256 over the agent and the `/init` it boots with.
    digest: String,
}

impl std::fmt::Debug for GuestAgent {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GuestAgent")
            .field("path", &self.path)
            .field("bytes", &self.bytes.len())
            .field("digest", &self.digest)
            .finish()
    }
}

impl GuestAgent {
    /// Reads the agent and checks it can run in any guest: a static
    /// x86-64 ELF executable (no program interpreter).
    pub fn load(path: &Path) -> Result<GuestAgent, ImageError> {
        let bytes =
            std::fs::read(path).map_err(|e| ImageError::io("read the guest agent", path, e))?;
        check_static_x86_64(path, &bytes).map_err(|reason| ImageError::BadAgent {
            path: path.to_path_buf(),
            reason,
        })?;
        let mut h = Sha256::new();
        h.update(&bytes);
        h.update(assets::INITRAMFS_INIT.as_bytes());
        Ok(GuestAgent {
            path: path.to_path_buf(),
            bytes,
            digest: hex::encode(h.finalize()),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn size(&self) -> usize {
        self.bytes.len()
    }

    /// The first 16 hex digits of the digest: names the boot initrds.
    pub fn short_digest(&self) -> &str {
        &self.digest[..16]
    }

    fn cpio(&self) -> Vec<u8> {
        let mut w = CpioWriter::new();
        w.dir("bin", 0o755);
        w.file("bin/hangar-agent", 0o755, &self.bytes);
        w.file("init", 0o755, assets::INITRAMFS_INIT.as_bytes());
        w.finish()
    }

    /// The initrd to boot an image with: its `initrd` (in `image_dir`)
    /// followed by the agent archive. Made once per image and agent
    /// (concurrent boots may both write it: each writes its own temporary
    /// file and the rename is atomic); older ones in the dir are removed.
    pub fn boot_initrd(&self, image_dir: &Path, initrd: &str) -> Result<PathBuf, ImageError> {
        let name = format!("{AGENT_INITRD_PREFIX}{}.img", self.short_digest());
        let target = image_dir.join(&name);
        if target.is_file() {
            return Ok(target);
        }
        let source = image_dir.join(initrd);
        let mut body =
            std::fs::read(&source).map_err(|e| ImageError::io("read initrd", &source, e))?;
        // newc archives start 4-byte aligned; the kernel skips zero padding.
        body.resize(body.len().next_multiple_of(4), 0);
        body.extend_from_slice(&self.cpio());
        // Unique per call: two boots of one image may make it at once, and
        // neither may touch the other's temporary file.
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = image_dir.join(format!(".{name}.{}-{n}.tmp", std::process::id()));
        let written = hangar_host::private::create_private_file(&tmp)
            .and_then(|mut f| f.write_all(&body).and_then(|()| f.sync_all()))
            .and_then(|()| std::fs::rename(&tmp, &target));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(ImageError::io("write the boot initrd", &target, e));
        }
        remove_older(image_dir, &name);
        Ok(target)
    }
}

/// A temporary boot initrd older than this was left by a daemon that died
/// while writing it (writing one takes well under a second).
const STALE_TMP: std::time::Duration = std::time::Duration::from_secs(600);

/// Removes boot initrds of other agent versions from an image dir, and
/// temporary ones a crashed daemon left.
fn remove_older(image_dir: &Path, keep: &str) {
    let Ok(entries) = std::fs::read_dir(image_dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        let old_version = name.starts_with(AGENT_INITRD_PREFIX) && name != keep;
        let stale_tmp = name.starts_with(&format!(".{AGENT_INITRD_PREFIX}"))
            && e.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok())
                .is_some_and(|age| age > STALE_TMP);
        if old_version || stale_tmp {
            let _ = std::fs::remove_file(e.path());
        }
    }
}

/// Checks for an x86-64 ELF executable without a program interpreter
/// ([`hangar_host::elf::elf_interpreter`]).
fn check_static_x86_64(path: &Path, bytes: &[u8]) -> Result<(), String> {
    match hangar_host::elf::elf_interpreter(path) {
        Err(_) => return Err("not an ELF executable".into()),
        Ok(Some(loader)) => {
            return Err(format!("dynamically linked (it needs {loader}; guests may have no libc): build it with `scripts/build-agent.sh` (target x86_64-unknown-linux-musl)"))
        }
        Ok(None) => {}
    }
    // e_machine 62: EM_X86_64.
    if bytes.get(18..20) != Some(&[62, 0][..]) {
        return Err("not an x86-64 executable".into());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A 64-bit little-endian x86-64 ELF header with no program headers.
    fn fake_static_elf() -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..4].copy_from_slice(b"\x7fELF");
        elf[4] = 2; // ELFCLASS64
        elf[5] = 1; // ELFDATA2LSB
        elf[18] = 62; // EM_X86_64
        elf[54] = 56; // e_phentsize
        elf
    }

    #[test]
    fn auto_looks_in_the_cargo_musl_dir_then_beside_the_binary_then_system_dirs() {
        let c = agent_candidates(Some(Path::new("/src/hangar/target/debug/hangar")));
        assert_eq!(
            c,
            vec![
                PathBuf::from("/src/hangar/target/x86_64-unknown-linux-musl/agent/hangar-agent"),
                PathBuf::from("/src/hangar/target/debug/hangar-agent"),
                PathBuf::from("/usr/local/lib/hangar/hangar-agent"),
                PathBuf::from("/usr/lib/hangar/hangar-agent"),
            ]
        );
    }

    #[test]
    fn auto_skips_a_host_build_and_reports_why_and_off_is_off() {
        let t = tempfile::tempdir().unwrap();
        let bin = t.path().join("target/debug");
        std::fs::create_dir_all(&bin).unwrap();
        // A dynamically linked "agent" beside the binary (a host build).
        std::fs::copy(std::env::current_exe().unwrap(), bin.join(AGENT_BINARY)).unwrap();
        match find_agent("auto", Some(&bin.join("hangar"))).unwrap() {
            AgentLookup::Missing { unusable, .. } => {
                assert!(unusable[0].contains("dynamically linked"), "{unusable:?}")
            }
            // A system-wide install on this machine is found instead.
            AgentLookup::Found(a) => assert!(a.path().starts_with("/usr")),
            AgentLookup::Off => panic!("auto is not off"),
        }
        assert!(matches!(find_agent("off", None).unwrap(), AgentLookup::Off));
        assert!(find_agent("/nonexistent/agent", None).is_err());
    }

    #[test]
    fn a_dynamic_or_foreign_binary_is_refused_with_the_fix() {
        let t = tempfile::tempdir().unwrap();
        // This test binary itself is dynamically linked (glibc target).
        let me = std::env::current_exe().unwrap();
        let err = GuestAgent::load(&me).unwrap_err().to_string();
        assert!(
            err.contains("dynamically linked") && err.contains("musl"),
            "{err}"
        );
        let text = t.path().join("agent.sh");
        std::fs::write(&text, "#!/bin/sh\n").unwrap();
        let err = GuestAgent::load(&text).unwrap_err().to_string();
        assert!(err.contains("not an ELF"), "{err}");
    }

    #[test]
    fn the_boot_initrd_is_the_image_initrd_then_the_agent_and_replaces_older_ones() {
        let t = tempfile::tempdir().unwrap();
        // A minimal static ELF: header only, no program headers.
        let elf = fake_static_elf();
        let agent_path = t.path().join("hangar-agent");
        std::fs::write(&agent_path, &elf).unwrap();
        let agent = GuestAgent::load(&agent_path).unwrap();
        std::fs::write(t.path().join("initrd.img"), b"IMAGE-INITRD!").unwrap();
        std::fs::write(
            t.path()
                .join(format!("{AGENT_INITRD_PREFIX}0000000000000000.img")),
            b"old",
        )
        .unwrap();

        let path = agent.boot_initrd(t.path(), "initrd.img").unwrap();

        let body = std::fs::read(&path).unwrap();
        assert!(body.starts_with(b"IMAGE-INITRD!\0\0\0"));
        let tail = String::from_utf8_lossy(&body[16..]);
        assert!(
            tail.starts_with("070701")
                && tail.contains("bin/hangar-agent")
                && tail.contains("init")
        );
        let names: Vec<String> = std::fs::read_dir(t.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(AGENT_INITRD_PREFIX))
            .collect();
        assert_eq!(
            names,
            vec![path.file_name().unwrap().to_string_lossy().into_owned()]
        );
        // Cached: a second call returns the same file.
        assert_eq!(agent.boot_initrd(t.path(), "initrd.img").unwrap(), path);
    }

    #[test]
    fn concurrent_boots_of_one_image_both_get_the_boot_initrd() {
        let t = tempfile::tempdir().unwrap();
        let elf = fake_static_elf();
        std::fs::write(t.path().join("hangar-agent"), &elf).unwrap();
        let agent = GuestAgent::load(&t.path().join("hangar-agent")).unwrap();
        std::fs::write(t.path().join("initrd.img"), vec![7u8; 4 << 20]).unwrap();
        std::thread::scope(|s| {
            let runs: Vec<_> = (0..4)
                .map(|_| s.spawn(|| agent.boot_initrd(t.path(), "initrd.img")))
                .collect();
            for r in runs {
                r.join().unwrap().unwrap();
            }
        });
        let tmp_left = std::fs::read_dir(t.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(tmp_left, 0);
    }
}
