//! Hangar's configuration file (`/etc/hangar/config.toml`). Every path and
//! address is configurable so that many daemons can run side by side (tests
//! do). Unknown keys are errors that name the key, so a typo never silently
//! falls back to a default.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where the config lives when `--config` is not given.
pub const DEFAULT_CONFIG_PATH: &str = "/etc/hangar/config.toml";
/// The environment variable the CLI reads the API socket path from.
pub const SOCKET_ENV: &str = "HANGAR_SOCKET";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// VM disks, images, keys and the store live here.
    pub state_dir: PathBuf,
    /// API socket and pid file.
    pub runtime_dir: PathBuf,
    /// Group that owns the API socket (mode 0660), so its members can use
    /// the CLI without root, like the `docker` group. Empty: root's group.
    pub socket_group: String,
    /// Built images are cached here by recipe, across state dirs.
    pub image_cache_dir: PathBuf,
    /// `tracing` filter, e.g. `info` or `hangar_daemon=debug`.
    pub log_level: String,
    /// How long finished operations stay visible.
    pub operation_retention_secs: u64,
    pub network: NetworkConfig,
    pub vmm: VmmConfig,
    pub defaults: Defaults,
    pub storage: StorageConfig,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NetworkConfig {
    /// Network namespace for the bridge, TAPs and VMM processes; empty means
    /// the host's own namespace. Created if it does not exist.
    pub netns: String,
    pub bridge: String,
    /// IPv4 subnet for guests; the first host address is the gateway.
    pub subnet: ipnet::Ipv4Net,
    /// Masquerade guest traffic (root-namespace mode only).
    pub nat: bool,
    /// TAP devices kept ready for fast VM starts.
    pub tap_pool_size: usize,
    /// Prefix of TAP device names (at most 8 characters).
    pub tap_prefix: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverChoice {
    /// Firecracker when its binary is present and KVM can boot guests, else QEMU.
    Auto,
    Firecracker,
    Qemu,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelChoice {
    /// KVM where it can boot a stock kernel, TCG otherwise.
    Auto,
    Kvm,
    Tcg,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct VmmConfig {
    pub driver: DriverChoice,
    pub accel: AccelChoice,
    /// Firecracker binary (a name is looked up on PATH).
    pub firecracker: PathBuf,
    pub qemu: PathBuf,
    /// The KVM device (a test can point it elsewhere to simulate a host
    /// without KVM).
    pub kvm_device: PathBuf,
    /// Run Firecracker under its jailer (chroot, uid/gid, cgroups, netns).
    pub jailer: bool,
    /// The jailer binary (a name is looked up on PATH).
    pub jailer_binary: PathBuf,
    /// The unprivileged user and group Firecracker runs as in the jail.
    pub jailer_uid: u32,
    pub jailer_gid: u32,
    /// Extra guest kernel arguments, appended to Hangar's own.
    pub kernel_args: String,
    /// How long to wait from VMM start to a working SSH login.
    pub boot_timeout_secs: u64,
    /// How long a graceful stop may take before the VMM is killed.
    pub stop_timeout_secs: u64,
    /// Boot snapshots (qemu driver, images built by Hangar): the first boot
    /// of an image saves the VM once its kernel is up, later boots with the
    /// same machine shape resume from there.
    pub boot_snapshots: bool,
    /// A VM's console log (`serial.log`) is rotated when it grows past this
    /// many bytes: its content moves to `serial.log.1` (replacing the older
    /// part) and `serial.log` starts again, so a guest cannot fill the
    /// host's disk through its console.
    pub console_log_max_bytes: u64,
    /// How many console logs of failed creates (`state_dir/logs/`) to keep;
    /// older ones are removed.
    pub failed_console_logs_kept: usize,
}

/// The smallest `[vmm] console_log_max_bytes`: a boot's own messages must
/// fit.
pub const MIN_CONSOLE_LOG_MAX_BYTES: u64 = 64 << 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Defaults {
    pub image: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// Root disk size for new VMs, e.g. `4G`; empty means the image's size.
    pub disk_size: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// `auto` (dm where usable, else reflink where the state dir supports
    /// it, else copy), `dm`, `reflink` or `copy`.
    pub backend: String,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            state_dir: PathBuf::from("/var/lib/hangar"),
            runtime_dir: PathBuf::from("/run/hangar"),
            socket_group: String::new(),
            image_cache_dir: PathBuf::from("/var/cache/hangar/images"),
            log_level: "info".into(),
            operation_retention_secs: 3600,
            network: NetworkConfig::default(),
            vmm: VmmConfig::default(),
            defaults: Defaults::default(),
            storage: StorageConfig::default(),
        }
    }
}

impl Default for NetworkConfig {
    fn default() -> Self {
        Self {
            netns: String::new(),
            bridge: "hangar0".into(),
            subnet: ipnet::Ipv4Net::new(std::net::Ipv4Addr::new(10, 213, 0, 0), 24)
                .unwrap_or_default(),
            nat: true,
            tap_pool_size: 2,
            tap_prefix: "hgtap".into(),
        }
    }
}

impl Default for VmmConfig {
    fn default() -> Self {
        Self {
            driver: DriverChoice::Auto,
            accel: AccelChoice::Auto,
            firecracker: PathBuf::from("firecracker"),
            qemu: PathBuf::from("qemu-system-x86_64"),
            kvm_device: PathBuf::from("/dev/kvm"),
            jailer: false,
            jailer_binary: PathBuf::from("jailer"),
            jailer_uid: 65534,
            jailer_gid: 65534,
            kernel_args: String::new(),
            boot_timeout_secs: 60,
            stop_timeout_secs: 15,
            boot_snapshots: true,
            console_log_max_bytes: 4 << 20,
            failed_console_logs_kept: 20,
        }
    }
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            image: "debian-12".into(),
            cpus: 2,
            memory_mib: 1024,
            disk_size: String::new(),
        }
    }
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            backend: "auto".into(),
        }
    }
}

impl Config {
    /// Reads and validates a config file. A missing file at the default
    /// path yields the defaults; a missing file named explicitly is an error.
    pub fn load(path: &Path, explicit: bool) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && !explicit => {
                return Ok(Config::default())
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        Self::parse(&text, path)
    }

    /// Parses config text; `path` is only used in messages.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let cfg: Config = toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim().replace('\n', " "),
        })?;
        cfg.validate().map_err(|message| ConfigError::Invalid {
            path: path.to_path_buf(),
            message,
        })?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), String> {
        let prefix = self.network.subnet.prefix_len();
        if !(8..=30).contains(&prefix) {
            return Err(format!(
                "[network] subnet {} must have a prefix length between /8 and /30",
                self.network.subnet
            ));
        }
        if self.network.subnet.network() != self.network.subnet.addr() {
            return Err(format!(
                "[network] subnet {} has host bits set; did you mean {}?",
                self.network.subnet,
                self.network.subnet.trunc()
            ));
        }
        if self.network.tap_prefix.is_empty() || self.network.tap_prefix.len() > 8 {
            return Err("[network] tap_prefix must be 1-8 characters".into());
        }
        if self.network.bridge.is_empty() || self.network.bridge.len() > 15 {
            return Err("[network] bridge must be 1-15 characters (a Linux interface name)".into());
        }
        if self.vmm.console_log_max_bytes < MIN_CONSOLE_LOG_MAX_BYTES {
            return Err(format!(
                "[vmm] console_log_max_bytes must be at least {MIN_CONSOLE_LOG_MAX_BYTES} (64 KiB), got {}",
                self.vmm.console_log_max_bytes
            ));
        }
        if self.defaults.cpus == 0 || self.defaults.cpus > 32 {
            return Err("[defaults] cpus must be between 1 and 32".into());
        }
        if self.defaults.memory_mib < 128 {
            return Err("[defaults] memory_mib must be at least 128".into());
        }
        if !self.defaults.disk_size.is_empty() {
            parse_size(&self.defaults.disk_size)
                .map_err(|e| format!("[defaults] disk_size: {e}"))?;
        }
        if !["auto", "dm", "reflink", "copy"].contains(&self.storage.backend.as_str()) {
            return Err(format!(
                "[storage] backend {:?} is not one of auto, dm, reflink, copy",
                self.storage.backend
            ));
        }
        for (key, p) in [
            ("state_dir", &self.state_dir),
            ("runtime_dir", &self.runtime_dir),
            ("image_cache_dir", &self.image_cache_dir),
        ] {
            if !p.is_absolute() {
                return Err(format!(
                    "{key} must be an absolute path, got {}",
                    p.display()
                ));
            }
        }
        Ok(())
    }

    pub fn socket_path(&self) -> PathBuf {
        self.runtime_dir.join("hangar.sock")
    }
    pub fn pid_path(&self) -> PathBuf {
        self.runtime_dir.join("hangar.pid")
    }
    pub fn store_path(&self) -> PathBuf {
        self.state_dir.join("state.db")
    }
    pub fn images_dir(&self) -> PathBuf {
        self.state_dir.join("images")
    }
    pub fn vms_dir(&self) -> PathBuf {
        self.state_dir.join("vms")
    }
    /// Boot snapshots, one directory per image digest.
    pub fn snapshots_dir(&self) -> PathBuf {
        self.state_dir.join("snapshots")
    }
    pub fn keys_dir(&self) -> PathBuf {
        self.state_dir.join("keys")
    }
    pub fn netns(&self) -> Option<&str> {
        Some(self.network.netns.as_str()).filter(|s| !s.is_empty())
    }
}

/// Parses a size like `4G`, `512M`, `2GiB`, `1073741824` into bytes
/// (binary units).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size; use e.g. 4G, 512M or a byte count"))?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        "t" | "tb" | "tib" => 1 << 40,
        other => {
            return Err(format!(
                "{s:?} has unknown unit {other:?}; use K, M, G or T"
            ))
        }
    };
    n.checked_mul(mult)
        .filter(|b| *b > 0)
        .ok_or_else(|| format!("{s:?} is not a usable size"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(text, Path::new("test.toml"))
    }

    #[test]
    fn empty_file_gives_defaults() {
        assert_eq!(parse("").unwrap(), Config::default());
    }

    #[test]
    fn console_log_cap_is_read_and_a_tiny_one_is_refused() {
        let cfg =
            parse("[vmm]\nconsole_log_max_bytes = 65536\nfailed_console_logs_kept = 3\n").unwrap();
        assert_eq!(cfg.vmm.console_log_max_bytes, 65536);
        assert_eq!(cfg.vmm.failed_console_logs_kept, 3);
        assert_eq!(parse("").unwrap().vmm.console_log_max_bytes, 4 << 20);
        let err = parse("[vmm]\nconsole_log_max_bytes = 100\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("console_log_max_bytes"), "{err}");
    }

    #[test]
    fn unknown_key_is_an_error_naming_the_key() {
        let err = parse("[network]\nbrige = \"x\"\n").unwrap_err().to_string();
        assert!(err.contains("brige"), "{err}");
    }

    #[test]
    fn nested_values_are_read() {
        let cfg = parse(
            "state_dir = \"/tmp/s\"\n[network]\nnetns = \"ns1\"\nsubnet = \"10.9.0.0/24\"\n[vmm]\ndriver = \"qemu\"\naccel = \"tcg\"\n",
        )
        .unwrap();
        assert_eq!(cfg.state_dir, PathBuf::from("/tmp/s"));
        assert_eq!(cfg.netns(), Some("ns1"));
        assert_eq!(cfg.vmm.driver, DriverChoice::Qemu);
        assert_eq!(cfg.vmm.accel, AccelChoice::Tcg);
    }

    #[test]
    fn jailer_is_a_switch_and_its_binary_a_separate_key() {
        let cfg = parse("[vmm]\njailer = true\njailer_binary = \"/opt/fc/jailer\"\n").unwrap();
        assert!(cfg.vmm.jailer);
        assert_eq!(cfg.vmm.jailer_binary, PathBuf::from("/opt/fc/jailer"));
        assert!(!parse("").unwrap().vmm.jailer);

        let err = parse("[vmm]\njailer = \"/opt/fc/jailer\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("jailer"), "{err}");
    }

    #[test]
    fn bad_driver_is_rejected() {
        let err = parse("[vmm]\ndriver = \"xen\"\n").unwrap_err().to_string();
        assert!(err.contains("xen") || err.contains("driver"), "{err}");
    }

    #[test]
    fn subnet_with_host_bits_is_rejected_with_suggestion() {
        let err = parse("[network]\nsubnet = \"10.9.0.5/24\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("10.9.0.0/24"), "{err}");
    }

    #[test]
    fn storage_backend_must_be_known() {
        assert!(parse("[storage]\nbackend = \"dm\"\n").is_ok());
        let err = parse("[storage]\nbackend = \"zfs\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("zfs") && err.contains("reflink"), "{err}");
    }

    #[test]
    fn relative_state_dir_is_rejected() {
        let err = parse("state_dir = \"rel\"\n").unwrap_err().to_string();
        assert!(err.contains("absolute"), "{err}");
    }

    #[test]
    fn missing_default_file_gives_defaults_but_explicit_is_error() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("none.toml");
        assert!(Config::load(&p, false).is_ok());
        assert!(matches!(
            Config::load(&p, true),
            Err(ConfigError::Read { .. })
        ));
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4G").unwrap(), 4 << 30);
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("2GiB").unwrap(), 2 << 30);
        assert_eq!(parse_size("1024").unwrap(), 1024);
        assert!(parse_size("0").is_err());
        assert!(parse_size("4X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("big").is_err());
    }
}
