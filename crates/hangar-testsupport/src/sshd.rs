//! A private OpenSSH `sshd` for tests (on 127.0.0.1, its own config, host
//! key and authorized keys; the system's sshd service is never touched):
//! the reference server of the guest SSH tests and the agent conformance
//! suite.

use std::path::Path;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

/// Debian's sshd.
pub const SSHD: &str = "/usr/sbin/sshd";

/// The config every private sshd shares: listen on loopback, keys from the
/// test's files (`authorized_keys` for any user, `authorized_keys.USER`
/// for USER only, as in a Hangar guest), root by key only, no PAM, no
/// banners. Append more lines for a test's needs.
pub fn base_config(host_key: &Path, authorized_keys: &Path) -> String {
    format!(
        "ListenAddress 127.0.0.1\n\
         HostKey {}\n\
         AuthorizedKeysFile {ak} {ak}.%u\n\
         PidFile none\n\
         UsePAM no\n\
         PermitRootLogin prohibit-password\n\
         StrictModes no\n\
         PasswordAuthentication no\n\
         KbdInteractiveAuthentication no\n\
         PrintMotd no\n\
         PrintLastLog no\n",
        host_key.display(),
        ak = authorized_keys.display()
    )
}

/// `sshd -D -e -f CONFIG -p PORT`, after checking sshd is installed and its
/// privilege-separation dir exists.
#[track_caller]
pub fn command(config: &Path, port: u16) -> Command {
    assert!(
        Path::new(SSHD).exists(),
        "{SSHD} is missing: apt-get install -y openssh-server"
    );
    // sshd refuses to start without it; creating it changes nothing else.
    std::fs::create_dir_all("/run/sshd").unwrap_or_else(|e| panic!("create /run/sshd: {e}"));
    let mut c = Command::new(SSHD);
    c.arg("-D")
        .arg("-e")
        .arg("-f")
        .arg(config)
        .arg("-p")
        .arg(port.to_string());
    c
}

/// Stops a server (sshd or the agent) started by a test: waits (briefly)
/// for its per-connection children to finish first, since a listener
/// killed first could not reap them and they would linger as zombies.
pub fn stop_after_its_children(mut child: Child) {
    let children = format!("/proc/{0}/task/{0}/children", child.id());
    let until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < until
        && !std::fs::read_to_string(&children)
            .unwrap_or_default()
            .trim()
            .is_empty()
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    let _ = child.wait();
}
