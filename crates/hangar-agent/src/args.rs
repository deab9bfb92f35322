//! Command-line modes. Hand-parsed: the agent is small and its callers are
//! Hangar's initramfs and the agent itself.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

pub const USAGE: &str = "usage:
  hangar-agent init
  hangar-agent serve [--listen ADDR] [--host-key PATH] [--authorized-keys PATH]
                     [--login-grace-time SECS] [--max-startups START:RATE:FULL]
                     [--allow-poweroff]
                     [--sessions-dir DIR]
  hangar-agent sftp-server";

/// Where the config drive is unpacked by the initramfs.
pub const CONFIG_DIR: &str = "/run/hangar";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    pub host_key: PathBuf,
    pub authorized_keys: PathBuf,
    /// Honour the `hangar-poweroff` subsystem (signal PID 1). Only `init`
    /// passes it: a test server on a host must never power the host off.
    pub allow_poweroff: bool,
    /// A connection not logged in by then is dropped (sshd's
    /// LoginGraceTime, same default).
    pub login_grace_time: Duration,
    /// The cap on connections not logged in yet (sshd's MaxStartups).
    pub max_startups: crate::server::MaxStartups,
    /// Where long-lived sessions keep their records and logs.
    pub sessions_dir: PathBuf,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([0, 0, 0, 0], 22)),
            host_key: PathBuf::from(CONFIG_DIR).join("ssh_host_ed25519_key"),
            authorized_keys: PathBuf::from(CONFIG_DIR).join("authorized_keys"),
            allow_poweroff: false,
            login_grace_time: crate::server::DEFAULT_LOGIN_GRACE,
            max_startups: crate::server::MaxStartups::default(),
            sessions_dir: PathBuf::from(crate::sessions::DEFAULT_DIR),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Mode {
    Init,
    Serve(ServeOptions),
    SftpServer,
    Help,
}

pub fn parse(args: &[String]) -> Result<Mode, String> {
    let Some((mode, rest)) = args.split_first() else {
        return Err("a mode is required".into());
    };
    match mode.as_str() {
        "init" | "sftp-server" if !rest.is_empty() => {
            Err(format!("{mode} takes no arguments, got {rest:?}"))
        }
        "init" => Ok(Mode::Init),
        "sftp-server" => Ok(Mode::SftpServer),
        "serve" => parse_serve(rest).map(Mode::Serve),
        "-h" | "--help" | "help" => Ok(Mode::Help),
        other => Err(format!("unknown mode {other:?}")),
    }
}

fn parse_serve(rest: &[String]) -> Result<ServeOptions, String> {
    let mut opts = ServeOptions::default();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        if flag == "--allow-poweroff" {
            opts.allow_poweroff = true;
            continue;
        }
        let value = it.next().ok_or_else(|| format!("{flag} needs a value"))?;
        match flag.as_str() {
            "--listen" => {
                opts.listen = value
                    .parse()
                    .map_err(|e| format!("--listen {value:?}: {e} (give IP:PORT)"))?;
            }
            "--host-key" => opts.host_key = PathBuf::from(value),
            "--authorized-keys" => opts.authorized_keys = PathBuf::from(value),
            "--sessions-dir" => opts.sessions_dir = PathBuf::from(value),
            "--login-grace-time" => {
                let secs: u64 = value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                    format!("--login-grace-time {value:?}: give whole seconds, at least 1")
                })?;
                opts.login_grace_time = Duration::from_secs(secs);
            }
            "--max-startups" => {
                opts.max_startups = value.parse().map_err(|e| format!("--max-startups: {e}"))?;
            }
            _ => return Err(format!("unknown flag {flag:?}")),
        }
    }
    Ok(opts)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn strings(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn serve_defaults_to_the_config_drive_and_port_22() {
        let Mode::Serve(o) = parse(&strings(&["serve"])).unwrap() else {
            panic!("not serve");
        };
        assert_eq!(o.listen.port(), 22);
        assert_eq!(
            o.authorized_keys,
            PathBuf::from("/run/hangar/authorized_keys")
        );
        assert!(!o.allow_poweroff);
        assert_eq!(o.login_grace_time, Duration::from_secs(120));
        assert_eq!(o.max_startups, crate::server::MaxStartups::default());
    }

    #[test]
    fn serve_flags_are_parsed_and_bad_ones_named() {
        let Mode::Serve(o) = parse(&strings(&[
            "serve",
            "--listen",
            "127.0.0.1:2222",
            "--host-key",
            "/k",
            "--allow-poweroff",
            "--login-grace-time",
            "7",
            "--sessions-dir",
            "/s",
        ]))
        .unwrap() else {
            panic!("not serve");
        };
        assert_eq!(o.listen, "127.0.0.1:2222".parse().unwrap());
        assert_eq!(o.host_key, PathBuf::from("/k"));
        assert!(o.allow_poweroff);
        assert_eq!(o.login_grace_time, Duration::from_secs(7));
        assert_eq!(o.sessions_dir, PathBuf::from("/s"));
        let err = parse(&strings(&["serve", "--login-grace-time", "0"])).unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
        let err = parse(&strings(&["serve", "--listen", "nope"])).unwrap_err();
        assert!(err.contains("IP:PORT"), "{err}");
        let err = parse(&strings(&["serve", "--bogus", "x"])).unwrap_err();
        assert!(err.contains("--bogus"), "{err}");
        assert!(parse(&strings(&["init", "x"])).is_err());
        assert!(parse(&[]).is_err());
    }
}
