//! The daemon: whether its API socket answers. Doctor itself never needs
//! the daemon; the CLI asks the socket and hands the answer in.

use std::path::Path;

use crate::report::{Check, Level};

/// The API socket: `Ok(detail)` when `GET /v1/info` answered.
pub fn check_daemon(socket: &Path, answer: Result<String, String>, config_path: &str) -> Check {
    const WHAT: &str = "the daemon's API socket answers (`hangar doctor` itself does not need it)";
    match answer {
        Ok(detail) => Check::new(
            "daemon",
            WHAT,
            Level::Ok,
            format!("answering on {} ({detail})", socket.display()),
        ),
        Err(e) => Check::new("daemon", WHAT, Level::Warn, format!("not reachable: {e}")).fix(
            format!("start it: `sudo hangar daemon --config {config_path}`"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answering_daemon_is_ok_with_socket_and_detail() {
        let c = check_daemon(
            Path::new("/run/hangar.sock"),
            Ok("driver: qemu".into()),
            "/etc/hangar/config.toml",
        );

        assert_eq!(c.level, Level::Ok);
        assert_eq!(c.result, "answering on /run/hangar.sock (driver: qemu)");
    }

    #[test]
    fn unreachable_daemon_warns_with_start_command_for_this_config() {
        let c = check_daemon(
            Path::new("/run/hangar.sock"),
            Err("connection refused".into()),
            "/tmp/x.toml",
        );

        assert_eq!(c.level, Level::Warn);
        assert_eq!(c.result, "not reachable: connection refused");
        assert_eq!(
            c.fix.as_deref(),
            Some("start it: `sudo hangar daemon --config /tmp/x.toml`")
        );
    }
}
