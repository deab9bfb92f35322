//! Hangar's own directories: made private at start (state dir, image
//! cache and their subdirs 0700; the runtime dir 0750 root:socket_group so
//! group members reach the socket), and repaired from older versions
//! that left files or dirs readable by others.

use std::path::Path;

use anyhow::{Context, Result};
use hangar_config::Config;
use hangar_host::private::{create_private_dir, repair_private_tree, RepairCount};
use tracing::{info, warn};

/// Shared system dirs that must never be taken as Hangar's own: the
/// start-up repair would chmod everything in them.
const SYSTEM_DIRS: &[&str] = &[
    "/",
    "/run",
    "/var/run",
    "/var",
    "/var/lib",
    "/var/cache",
    "/tmp",
    "/var/tmp",
    "/home",
    "/root",
    "/etc",
    "/usr",
    "/opt",
    "/srv",
    "/mnt",
    "/media",
    "/dev",
    "/proc",
    "/sys",
    "/boot",
];

/// Refuses a state, runtime or cache dir that is a shared system dir.
fn check_own_dir(what: &str, dir: &Path) -> Result<()> {
    if SYSTEM_DIRS.iter().any(|s| Path::new(s) == dir) {
        anyhow::bail!(
            "{what} {} is a shared system directory; Hangar makes its dirs private (0700) and would change its mode: use a directory of its own, such as {}/hangar",
            dir.display(),
            dir.display().to_string().trim_end_matches('/')
        );
    }
    Ok(())
}

/// Creates the state dir and its fixed subdirs (0700), then repairs the
/// modes below it and below the image cache dir.
pub fn prepare_state_dirs(config: &Config) -> Result<()> {
    check_own_dir("state_dir", &config.state_dir)?;
    check_own_dir("image_cache_dir", &config.image_cache_dir)?;
    // Repair first, so the count in the log is what older versions left
    // (creating the fixed subdirs below tightens them too).
    // The jailer's chroot base (`daemon.rs` `choose_driver`).
    let jails = config.state_dir.join("jail");
    crate::confine::check_state_dir_reachable(config).map_err(anyhow::Error::msg)?;
    let granted = |p: &Path, m: &std::fs::Metadata| crate::confine::granted_bits(config, p, m);
    repair("state_dir", &config.state_dir, &[&jails], &granted);
    repair("image_cache_dir", &config.image_cache_dir, &[], &|_, _| 0);
    for dir in [
        &config.state_dir,
        &config.images_dir(),
        &config.vms_dir(),
        &config.keys_dir(),
        &config.snapshots_dir(),
    ] {
        create_private_dir(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    if config.vmm.confine {
        crate::confine::open_search_path(config)
            .context("cannot open the state dir's path to confined VMMs")?;
    }
    Ok(())
}

/// Creates the runtime dir (0700) when it is missing, and nothing else:
/// this runs before the pid-file lock, so another daemon may be serving
/// from it and its modes are not ours to touch yet.
pub fn create_runtime_dir(config: &Config) -> Result<()> {
    let dir = &config.runtime_dir;
    check_own_dir("runtime_dir", dir)?;
    if !dir.exists() {
        create_private_dir(dir)
            .with_context(|| format!("cannot create runtime dir {}", dir.display()))?;
    }
    Ok(())
}

/// Once the pid-file lock is held: the runtime dir is 0700, or 0750
/// root:`socket_gid` when there is a socket group (its members must reach
/// the socket; nobody else may look in). What it holds needs no repair:
/// the pid file is rewritten 0600 and the socket is bound anew.
pub fn secure_runtime_dir(config: &Config, socket_gid: Option<nix::unistd::Gid>) -> Result<()> {
    let dir = &config.runtime_dir;
    create_private_dir(dir)
        .with_context(|| format!("cannot create runtime dir {}", dir.display()))?;
    if let Some(gid) = socket_gid {
        use std::os::unix::fs::PermissionsExt;
        nix::unistd::chown(dir, Some(nix::unistd::Uid::from_raw(0)), Some(gid))
            .with_context(|| format!("cannot give {} to group {gid}", dir.display()))?;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o750))
            .with_context(|| format!("cannot set mode 0750 on {}", dir.display()))?;
    }
    Ok(())
}

/// Repairs one tree; failures are logged, never fatal (the daemon still
/// works with a file it could not chmod).
fn repair(
    what: &str,
    dir: &Path,
    not_into: &[&Path],
    keep: &dyn Fn(&Path, &std::fs::Metadata) -> u32,
) {
    match repair_private_tree(dir, not_into, keep) {
        Ok(RepairCount {
            fixed: 0,
            failed: 0,
        }) => {}
        Ok(RepairCount { fixed, failed }) => {
            warn!(dir = %dir.display(), fixed, failed, "{what}: files or dirs readable by others (made by an older version) set private");
        }
        Err(e) => warn!(dir = %dir.display(), error = %e, "{what}: cannot repair modes"),
    }
    info!(dir = %dir.display(), "{what} is private");
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn shared_system_dirs_are_refused_with_a_clear_error() {
        let err = check_own_dir("runtime_dir", Path::new("/run")).unwrap_err();
        assert!(err.to_string().contains("/run/hangar"), "{err}");
        assert!(check_own_dir("state_dir", Path::new("/var/lib/hangar")).is_ok());
    }

    #[test]
    fn state_dirs_are_made_private_and_old_loose_files_repaired() {
        let t = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: t.path().join("state"),
            image_cache_dir: t.path().join("cache"),
            // Without confinement every dir is 0700 (with it, the search
            // path to the VM dirs is 0711: `confine::open_search_path`).
            vmm: hangar_config::VmmConfig {
                confine: false,
                ..Default::default()
            },
            ..Default::default()
        };
        std::fs::create_dir_all(config.vms_dir().join("old")).unwrap();
        let planted = config.vms_dir().join("old/config.img");
        std::fs::write(&planted, "key").unwrap();
        for (p, m) in [
            (&config.state_dir, 0o755),
            (&config.vms_dir(), 0o755),
            (&planted, 0o644),
        ] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap();
        }
        prepare_state_dirs(&config).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for d in [
            config.state_dir.clone(),
            config.vms_dir(),
            config.vms_dir().join("old"),
            config.keys_dir(),
            config.snapshots_dir(),
            config.images_dir(),
        ] {
            assert_eq!(mode(&d), 0o700, "{}", d.display());
        }
        assert_eq!(mode(&planted), 0o600);
    }

    #[test]
    fn with_confinement_the_search_path_to_vm_dirs_is_0711_and_stays() {
        let t = tempfile::tempdir().unwrap();
        let config = Config {
            state_dir: t.path().join("state"),
            image_cache_dir: t.path().join("cache"),
            ..Default::default()
        };
        assert!(config.vmm.confine);
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        for _ in 0..2 {
            prepare_state_dirs(&config).unwrap();
            for d in [
                config.state_dir.clone(),
                config.vms_dir(),
                config.snapshots_dir(),
            ] {
                assert_eq!(mode(&d), 0o711, "{}", d.display());
            }
            assert_eq!(mode(&config.keys_dir()), 0o700);
            assert_eq!(mode(&config.images_dir()), 0o700);
        }
    }
}
