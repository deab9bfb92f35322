//! `hangar ssh-config [VM...] [--install]`: OpenSSH `Host NAME.hangar`
//! entries, so `ssh dev.hangar`, `scp`, `rsync -e ssh` and editors reach
//! VMs through `hangar proxy` with their pinned host keys (no trust on
//! first use) and the user's own key (the one `vm create` put in the VM).
//!
//! `--install` regenerates Hangar's own files, `~/.ssh/hangar/config` and
//! `~/.ssh/hangar/known_hosts` (0600, dir 0700), from all VMs each run, so
//! removed VMs drop out and recreated ones get their new key; it adds one
//! `Include` line at the top of `~/.ssh/config` once and never touches the
//! user's entries. Everything here runs as the invoking user; the daemon
//! only answers `GET /v1/vms`.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hangar_api::{ApiError, VmInfo};

use super::seg;
use crate::args::{Cli, SshConfigArgs};
use crate::client::Client;

/// Host names are `VM.hangar`; `hangar proxy` strips the suffix too.
pub const HOST_SUFFIX: &str = ".hangar";

/// What the entries point at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setup {
    /// This hangar binary, absolute.
    pub exe: PathBuf,
    /// `--socket P` / `--config F` as this CLI was pointed at the daemon.
    pub daemon_args: Vec<String>,
    pub known_hosts: PathBuf,
    /// The user's private keys whose `.pub` `vm create` reads.
    pub identities: Vec<PathBuf>,
}

/// A path as one ssh_config argument (quoted when it has spaces; `%`
/// doubled where the directive expands tokens).
fn config_arg(p: &Path, tokens: bool) -> Result<String, ApiError> {
    let s = p.to_str().ok_or_else(|| {
        ApiError::invalid(format!(
            "{} is not UTF-8; ssh_config cannot name it",
            p.display()
        ))
    })?;
    if s.contains(['"', '\n', '\r']) {
        return Err(ApiError::invalid(format!(
            "{s:?} holds a quote or newline; ssh_config cannot name it"
        )));
    }
    let s = if tokens {
        s.replace('%', "%%")
    } else {
        s.to_string()
    };
    Ok(if s.contains(char::is_whitespace) {
        format!("\"{s}\"")
    } else {
        s
    })
}

/// The `Host` entries of `vms` (by name).
pub fn render_config(setup: &Setup, vms: &[&VmInfo]) -> Result<String, ApiError> {
    let mut out = String::from(
        "# Written by `hangar ssh-config`; regenerated on each --install (edits are lost).\n",
    );
    let known_hosts = config_arg(&setup.known_hosts, true)?;
    let exe = setup
        .exe
        .to_str()
        .ok_or_else(|| ApiError::invalid(format!("{} is not UTF-8", setup.exe.display())))?;
    for vm in vms {
        let mut argv = vec![exe.to_string()];
        argv.extend(setup.daemon_args.iter().cloned());
        argv.extend(["proxy".to_string(), vm.name.clone()]);
        // ProxyCommand runs through /bin/sh after %-token expansion.
        let proxy = hangar_host::quote::shell_quote(&argv).replace('%', "%%");
        // The login the VM lets the user's keys use; checked here too, as
        // it lands in a config file.
        let user = vm
            .ssh_user
            .as_deref()
            .filter(|u| hangar_api::name::validate_login_name(u).is_ok());
        let user_line = match user {
            Some(u) => format!("    User {u}\n"),
            None => "    # your keys may log in as no user of this VM (its image's user is a bare uid): \
                     recreate it with `hangar vm create --ssh-user NAME`\n"
                .to_string(),
        };
        out.push_str(&format!(
            "\nHost {name}{HOST_SUFFIX}\n    HostName {name}\n{user_line}    \
             ProxyCommand {proxy}\n    HostKeyAlias {name}{HOST_SUFFIX}\n    \
             UserKnownHostsFile {known_hosts}\n    StrictHostKeyChecking yes\n",
            name = vm.name
        ));
        if setup.identities.is_empty() {
            out.push_str(
                "    # no key pair in ~/.ssh: `ssh-keygen -t ed25519`, then recreate the VM\n",
            );
        }
        for id in &setup.identities {
            out.push_str(&format!("    IdentityFile {}\n", config_arg(id, true)?));
        }
        out.push_str("    IdentitiesOnly yes\n");
    }
    Ok(out)
}

/// `NAME.hangar KEYTYPE KEY` lines for the VMs that have a host key.
pub fn render_known_hosts(vms: &[&VmInfo]) -> String {
    let mut out = String::new();
    for vm in vms {
        let mut words = vm.host_key.split_whitespace();
        if let (Some(kind), Some(key)) = (words.next(), words.next()) {
            out.push_str(&format!("{}{HOST_SUFFIX} {kind} {key}\n", vm.name));
        }
    }
    out
}

/// `~/.ssh/config` with the `Include` line at the top, or `None` when an
/// `Include` of `included` is there already.
pub fn with_include(existing: &str, included: &Path) -> Result<Option<String>, ApiError> {
    let arg = config_arg(included, false)?;
    let already = existing.lines().any(|line| {
        let mut words = line.split_whitespace();
        words
            .next()
            .is_some_and(|w| w.eq_ignore_ascii_case("include"))
            && words.any(|w| w.trim_matches('"') == arg.trim_matches('"'))
    });
    if already {
        return Ok(None);
    }
    Ok(Some(format!("Include {arg}\n{existing}")))
}

/// The private keys beside `~/.ssh/*.pub` (what `vm create` sends), sorted.
fn identities(ssh_dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(ssh_dir) else {
        return Vec::new();
    };
    let mut ids: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pub"))
        .map(|p| p.with_extension(""))
        .filter(|p| p.is_file())
        .collect();
    ids.sort();
    ids
}

fn home() -> Result<PathBuf, ApiError> {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .filter(|h| h.is_absolute())
        .ok_or_else(|| ApiError::invalid("HOME is not set to an absolute path"))
}

/// How this CLI reached the daemon, for the ProxyCommand (ssh may run
/// without this shell's environment).
fn daemon_args(cli: &Cli) -> Result<Vec<String>, ApiError> {
    let abs = |p: &Path| {
        std::path::absolute(p)
            .map(|p| p.to_string_lossy().into_owned())
            .map_err(|e| ApiError::invalid(format!("{}: {e}", p.display())))
    };
    Ok(match (&cli.socket, &cli.config) {
        (Some(s), _) => vec!["--socket".into(), abs(s)?],
        (None, Some(c)) => vec!["--config".into(), abs(c)?],
        (None, None) => Vec::new(),
    })
}

/// Writes `data` to a new file beside `path` with `mode`, then renames it
/// over `path`: readers see the old or the new file, never half of one.
fn write_atomic(path: &Path, data: &str, mode: u32) -> Result<(), ApiError> {
    let err = |p: &Path, e: std::io::Error| ApiError::invalid(crate::cp_tree::io_message(p, &e));
    let tmp = crate::cp_tree::temp_beside(path);
    let written = (|| {
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        f.write_all(data.as_bytes())?;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = written {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(path, e));
    }
    Ok(())
}

/// Adds the `Include` line to the user's config (a symlinked config is
/// written where it points); returns whether it changed.
fn install_include(user_config: &Path, included: &Path) -> Result<bool, ApiError> {
    let real = match std::fs::symlink_metadata(user_config) {
        Ok(m) if m.file_type().is_symlink() => std::fs::canonicalize(user_config)
            .map_err(|e| ApiError::invalid(crate::cp_tree::io_message(user_config, &e)))?,
        _ => user_config.to_path_buf(),
    };
    let (existing, mode) = match std::fs::read_to_string(&real) {
        Ok(text) => {
            let mode = std::fs::metadata(&real)
                .map(|m| m.permissions().mode() & 0o7777)
                .unwrap_or(0o600);
            (text, mode)
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => (String::new(), 0o600),
        Err(e) => return Err(ApiError::invalid(crate::cp_tree::io_message(&real, &e))),
    };
    match with_include(&existing, included)? {
        None => Ok(false),
        Some(text) => write_atomic(&real, &text, mode).map(|()| true),
    }
}

pub async fn run(cli: &Cli, client: &Client, a: &SshConfigArgs) -> Result<(), ApiError> {
    let vms: Vec<VmInfo> = if a.vms.is_empty() {
        client.get("/v1/vms").await?
    } else {
        let mut v = Vec::new();
        for name in &a.vms {
            v.push(client.get(&format!("/v1/vms/{}", seg(name))).await?);
        }
        v
    };
    let mut listed: Vec<&VmInfo> = vms.iter().collect();
    listed.sort_by(|x, y| x.name.cmp(&y.name));
    let home = home()?;
    let ssh_dir = home.join(".ssh");
    let hangar_dir = ssh_dir.join("hangar");
    let exe = std::env::current_exe()
        .map_err(|e| ApiError::internal(format!("cannot find this hangar binary: {e}")))?;
    let setup = Setup {
        exe,
        daemon_args: daemon_args(cli)?,
        known_hosts: hangar_dir.join("known_hosts"),
        identities: identities(&ssh_dir),
    };
    let config = render_config(&setup, &listed)?;
    if !a.install {
        print!("{config}");
        eprintln!(
            "# host keys: `hangar ssh-config --install` writes them to {}",
            setup.known_hosts.display()
        );
        return Ok(());
    }
    let private =
        |p: &Path, e: std::io::Error| ApiError::invalid(crate::cp_tree::io_message(p, &e));
    if !ssh_dir.exists() {
        hangar_host::private::create_private_dir(&ssh_dir).map_err(|e| private(&ssh_dir, e))?;
    }
    hangar_host::private::create_private_dir(&hangar_dir).map_err(|e| private(&hangar_dir, e))?;
    write_atomic(&setup.known_hosts, &render_known_hosts(&listed), 0o600)?;
    let included = hangar_dir.join("config");
    write_atomic(&included, &config, 0o600)?;
    let added = install_include(&ssh_dir.join("config"), &included)?;
    println!(
        "Wrote {} host(s) to {} ({}): ssh NAME{HOST_SUFFIX}",
        listed.len(),
        included.display(),
        listed
            .iter()
            .map(|v| format!("{}{HOST_SUFFIX}", v.name))
            .collect::<Vec<_>>()
            .join(", ")
    );
    if added {
        println!(
            "Added `Include {}` at the top of {}",
            included.display(),
            ssh_dir.join("config").display()
        );
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn vm(name: &str, key: &str) -> VmInfo {
        serde_json::from_value(serde_json::json!({
            "id": "x", "name": name, "state": "running", "image": "debian-12",
            "image_digest": "d", "cpus": 1, "memory_mib": 512, "disk_bytes": 1,
            "ip": "10.0.0.2", "mac": "02:00:00:00:00:01", "host_key": key,
            "driver": "qemu", "pid": null, "tap": null, "serial_log": "s",
            "created_at": "t", "last_error": null, "ssh_user": "root"
        }))
        .unwrap_or_else(|e| panic!("VmInfo fields changed: {e}"))
    }

    fn setup() -> Setup {
        Setup {
            exe: PathBuf::from("/usr/local/bin/hangar"),
            daemon_args: vec!["--socket".into(), "/run/my hangar/h%.sock".into()],
            known_hosts: PathBuf::from("/home/u/.ssh/hangar/known_hosts"),
            identities: vec![PathBuf::from("/home/u/.ssh/id_ed25519")],
        }
    }

    #[test]
    fn the_user_line_is_the_vms_login_user_and_never_a_bad_name() {
        let mut dev = vm("dev", "ssh-ed25519 AAAAkey hangar@dev");
        dev.ssh_user = Some("node".into());
        let text = render_config(&setup(), &[&dev]).unwrap();
        assert!(text.contains("    HostName dev\n    User node\n"), "{text}");

        for bad in [None, Some("x\n    ProxyCommand evil".to_string())] {
            dev.ssh_user = bad;
            let text = render_config(&setup(), &[&dev]).unwrap();
            assert!(!text.contains("User "), "{text}");
            assert!(!text.contains("evil"), "{text}");
            assert!(text.contains("--ssh-user"), "{text}");
        }
    }

    #[test]
    fn an_entry_proxies_through_hangar_and_pins_the_host_key_under_its_alias() {
        let dev = vm("dev", "ssh-ed25519 AAAAkey hangar@dev");

        let text = render_config(&setup(), &[&dev]).unwrap();

        assert!(
            text.contains("\nHost dev.hangar\n    HostName dev\n    User root\n"),
            "{text}"
        );
        assert!(
            text.contains(
                "    ProxyCommand /usr/local/bin/hangar --socket '/run/my hangar/h%%.sock' proxy dev\n"
            ),
            "{text}"
        );
        assert!(text.contains("    HostKeyAlias dev.hangar\n"), "{text}");
        assert!(
            text.contains("    UserKnownHostsFile /home/u/.ssh/hangar/known_hosts\n"),
            "{text}"
        );
        assert!(text.contains("    StrictHostKeyChecking yes\n"), "{text}");
        assert!(
            text.contains("    IdentityFile /home/u/.ssh/id_ed25519\n    IdentitiesOnly yes\n"),
            "{text}"
        );
        assert_eq!(
            render_known_hosts(&[&dev]),
            "dev.hangar ssh-ed25519 AAAAkey\n"
        );
    }

    #[test]
    fn a_vm_without_a_host_key_gets_no_known_hosts_line() {
        assert_eq!(render_known_hosts(&[&vm("new", "")]), "");
    }

    #[test]
    fn paths_with_spaces_are_quoted_and_quotes_are_refused() {
        assert_eq!(
            config_arg(Path::new("/home/a b/%k"), true).unwrap(),
            "\"/home/a b/%%k\""
        );
        assert!(config_arg(Path::new("/home/a\"b"), false).is_err());
    }

    #[test]
    fn the_include_goes_on_top_once_and_leaves_the_users_entries_alone() {
        let included = Path::new("/home/u/.ssh/hangar/config");
        let users = "Host work\n    User me\n";

        let first = with_include(users, included).unwrap().unwrap();
        let second = with_include(&first, included).unwrap();

        assert_eq!(
            first,
            "Include /home/u/.ssh/hangar/config\nHost work\n    User me\n"
        );
        assert_eq!(second, None);
        assert_eq!(
            with_include("  include \"/home/u/.ssh/hangar/config\"\n", included).unwrap(),
            None
        );
        assert_eq!(
            with_include("", included).unwrap().unwrap(),
            "Include /home/u/.ssh/hangar/config\n"
        );
    }

    #[test]
    fn installing_the_include_keeps_the_mode_and_follows_a_symlinked_config() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("dotfiles-ssh-config");
        std::fs::write(&real, "Host a\n").unwrap();
        std::fs::set_permissions(&real, std::fs::Permissions::from_mode(0o644)).unwrap();
        let link = dir.path().join("config");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let included = dir.path().join("hangar/config");

        assert!(install_include(&link, &included).unwrap());
        assert!(!install_include(&link, &included).unwrap());

        assert!(std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink());
        let text = std::fs::read_to_string(&real).unwrap();
        assert_eq!(text, format!("Include {}\nHost a\n", included.display()));
        let mode = std::fs::metadata(&real).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o644);
    }

    #[test]
    fn a_missing_user_config_is_created_private() {
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("config");

        assert!(install_include(&config, Path::new("/x/hangar/config")).unwrap());

        let mode = std::fs::metadata(&config).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
        assert_eq!(
            std::fs::read_to_string(&config).unwrap(),
            "Include /x/hangar/config\n"
        );
    }
}
