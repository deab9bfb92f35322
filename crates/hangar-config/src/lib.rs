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
    pub api: ApiConfig,
    pub images: ImagesConfig,
    pub guest: GuestConfig,
}

/// What Hangar brings into every guest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GuestConfig {
    /// Hangar's guest agent (`hangar-agent`, a static binary): PID 1 helper
    /// and SSH server of every guest booted with Hangar's initramfs, so
    /// images need no init, shell or sshd. `auto`: found beside the
    /// `hangar` binary (or in cargo's musl build dir next to it), then in
    /// /usr/local/lib/hangar and /usr/lib/hangar; if none is found, guests
    /// start the image's own sshd and `hangar doctor` says so. A path: that
    /// file (the daemon refuses to start without it). `off`: the image's
    /// own init and sshd.
    pub agent: String,
}

impl Default for GuestConfig {
    fn default() -> Self {
        Self {
            agent: "auto".into(),
        }
    }
}

impl GuestConfig {
    fn validate(&self) -> Result<(), String> {
        match self.agent.as_str() {
            "auto" | "off" => Ok(()),
            p if p.starts_with('/') => Ok(()),
            other => Err(format!(
                "[guest] agent = {other:?}: use \"auto\", \"off\" or an absolute path"
            )),
        }
    }
}

/// Limits of the API socket, so that no client can exhaust the daemon.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiConfig {
    /// Open connections of all non-root clients together; beyond it a new
    /// connection is answered `unavailable` and closed. Root is not counted.
    pub max_connections: usize,
    /// Open connections of one non-root user (by the socket's peer uid).
    pub max_connections_per_user: usize,
    /// A client must send a whole request head within this time; it also
    /// closes keep-alive connections idle for that long. Requests being
    /// served (long-polls) and exec streams are not affected.
    pub header_read_timeout_secs: u64,
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
    /// Let guests reach each other over the bridge. Off: each VM talks
    /// only to the gateway (and, with NAT, the outside).
    pub vm_to_vm: bool,
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
    /// Unset means on where its needs are met (the jailer binary is found
    /// and Firecracker is statically linked); `hangar doctor` says when
    /// they are not. `false` is for debugging only.
    pub jailer: Option<bool>,
    /// The jailer binary (a name is looked up on PATH).
    pub jailer_binary: PathBuf,
    /// The user and group Firecracker runs as in the jail when `confine`
    /// is off (with `confine` on, each VM has its own uid/gid).
    pub jailer_uid: u32,
    pub jailer_gid: u32,
    /// Confine every VMM: QEMU under `-sandbox` (seccomp) and `-runas` the
    /// VM's own uid/gid, Firecracker's jail with the VM's own uid/gid.
    /// `false` is for debugging only (`hangar doctor` warns).
    pub confine: bool,
    /// The first uid (and gid) of the range VMMs run as: VM n of the
    /// subnet (its address's offset) runs as `uid_base + n`. No user or
    /// group of the host may have an id in the range.
    pub uid_base: u32,
    /// How many uids the range holds; it must cover every address of
    /// `[network] subnet`.
    pub uid_count: u32,
    /// Extra guest kernel arguments, appended to Hangar's own.
    pub kernel_args: String,
    /// How long to wait from VMM start to a working SSH login.
    pub boot_timeout_secs: u64,
    /// How long a graceful stop may take before the VMM is killed.
    pub stop_timeout_secs: u64,
    /// How many VMs may boot at once (VMM start to SSH ready, including the
    /// boot-snapshot VM of a pull); the others wait in a queue, in order.
    /// 0: chosen from the core count and accelerator (see docs/config.md).
    pub max_concurrent_boots: usize,
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

/// Limits on images clients upload (`hangar image register`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ImagesConfig {
    /// Largest kernel file an upload may carry, e.g. `256M`.
    pub max_kernel_size: String,
    /// Largest initrd file an upload may carry.
    pub max_initrd_size: String,
    /// Largest rootfs file an upload may carry (its apparent size).
    pub max_rootfs_size: String,
    /// An upload that sends no byte for this long is dropped, with
    /// everything it wrote.
    pub upload_idle_timeout_secs: u64,
    /// Extra image catalogs (JSON; `file://PATH` or `https://URL`), merged
    /// after the built-in one in this order, later entries overriding.
    pub catalogs: Vec<String>,
    /// PEM files of CA certificates trusted, besides the system's, for
    /// registries, bundle URLs and catalogs over HTTPS (a private CA).
    pub ca_certs: Vec<PathBuf>,
}

impl Default for ImagesConfig {
    fn default() -> Self {
        Self {
            max_kernel_size: "256M".into(),
            max_initrd_size: "1G".into(),
            max_rootfs_size: "64G".into(),
            upload_idle_timeout_secs: 60,
            catalogs: Vec::new(),
            ca_certs: Vec::new(),
        }
    }
}

impl ImagesConfig {
    /// The size limits in bytes: kernel, initrd, rootfs. The config was
    /// validated at load, so a value that does not parse cannot occur; it
    /// would count as 0 (nothing may be uploaded), never as unlimited.
    pub fn max_bytes(&self) -> (u64, u64, u64) {
        let parse = |s: &str| parse_size(s).unwrap_or(0);
        (
            parse(&self.max_kernel_size),
            parse(&self.max_initrd_size),
            parse(&self.max_rootfs_size),
        )
    }

    fn validate(&self) -> Result<(), String> {
        for (key, v) in [
            ("max_kernel_size", &self.max_kernel_size),
            ("max_initrd_size", &self.max_initrd_size),
            ("max_rootfs_size", &self.max_rootfs_size),
        ] {
            match parse_size(v) {
                Ok(0) => return Err(format!("[images] {key} must be more than 0")),
                Ok(_) => {}
                Err(e) => return Err(format!("[images] {key}: {e}")),
            }
        }
        if self.upload_idle_timeout_secs == 0 {
            return Err("[images] upload_idle_timeout_secs must be at least 1".into());
        }
        for c in &self.catalogs {
            let ok =
                c.starts_with("file:///") || c.starts_with("https://") || c.starts_with("http://");
            if !ok {
                return Err(format!(
                    "[images] catalogs: {c:?} is not a file:///PATH or https:// URL"
                ));
            }
        }
        for c in &self.ca_certs {
            if !c.is_absolute() {
                return Err(format!(
                    "[images] ca_certs: {} is not an absolute path",
                    c.display()
                ));
            }
        }
        Ok(())
    }
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
            api: ApiConfig::default(),
            images: ImagesConfig::default(),
            guest: GuestConfig::default(),
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
            vm_to_vm: false,
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
            jailer: None,
            jailer_binary: PathBuf::from("jailer"),
            jailer_uid: 65534,
            jailer_gid: 65534,
            confine: true,
            uid_base: 200_000,
            uid_count: 65_536,
            kernel_args: String::new(),
            boot_timeout_secs: 60,
            stop_timeout_secs: 15,
            max_concurrent_boots: 0,
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

impl Default for ApiConfig {
    fn default() -> Self {
        Self {
            max_connections: 2048,
            max_connections_per_user: 256,
            header_read_timeout_secs: 10,
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
                .and_then(hangar_api::size::check_disk_bytes)
                .map_err(|e| format!("[defaults] disk_size: {e}"))?;
        }
        if !["auto", "dm", "reflink", "copy"].contains(&self.storage.backend.as_str()) {
            return Err(format!(
                "[storage] backend {:?} is not one of auto, dm, reflink, copy",
                self.storage.backend
            ));
        }
        self.validate_api()?;
        if self.vmm.max_concurrent_boots > 1024 {
            return Err("[vmm] max_concurrent_boots must be between 0 (automatic) and 1024".into());
        }
        self.validate_uid_range()?;
        self.images.validate()?;
        self.guest.validate()?;
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

    fn validate_api(&self) -> Result<(), String> {
        let api = &self.api;
        if api.max_connections_per_user == 0 {
            return Err("[api] max_connections_per_user must be at least 1".into());
        }
        if api.max_connections < api.max_connections_per_user {
            return Err(format!(
                "[api] max_connections ({}) must be at least max_connections_per_user ({})",
                api.max_connections, api.max_connections_per_user
            ));
        }
        if api.max_connections > 1_000_000 {
            return Err("[api] max_connections must be at most 1000000".into());
        }
        if !(1..=3600).contains(&api.header_read_timeout_secs) {
            return Err("[api] header_read_timeout_secs must be between 1 and 3600".into());
        }
        Ok(())
    }

    /// The VMM uid range: above root, below the invalid id (u32::MAX), and
    /// large enough that every address of the subnet has its own uid.
    fn validate_uid_range(&self) -> Result<(), String> {
        let v = &self.vmm;
        if v.uid_base == 0 {
            return Err("[vmm] uid_base must not be 0 (root)".into());
        }
        if u64::from(v.uid_base) + u64::from(v.uid_count) > u64::from(u32::MAX) {
            return Err(format!(
                "[vmm] uid_base {} + uid_count {} goes past the largest uid {}",
                v.uid_base,
                v.uid_count,
                u32::MAX - 1
            ));
        }
        let addresses = 1u64 << (32 - u32::from(self.network.subnet.prefix_len()));
        if v.confine && u64::from(v.uid_count) < addresses {
            return Err(format!(
                "[vmm] uid_count {} is smaller than the {addresses} addresses of [network] subnet {}: each VM needs its own uid; raise uid_count",
                v.uid_count, self.network.subnet
            ));
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

/// Sizes in the config (`4G`, `512M`, a byte count) read as everywhere else.
pub use hangar_api::size::parse_size;

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
    fn vms_are_isolated_from_each_other_unless_vm_to_vm_is_set() {
        assert!(!parse("").unwrap().network.vm_to_vm);
        assert!(
            parse("[network]\nvm_to_vm = true\n")
                .unwrap()
                .network
                .vm_to_vm
        );
        let err = parse("[network]\nvm_to_vm = \"yes\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("vm_to_vm"), "{err}");
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
        assert_eq!(cfg.vmm.jailer, Some(true));
        assert_eq!(cfg.vmm.jailer_binary, PathBuf::from("/opt/fc/jailer"));
        assert_eq!(parse("").unwrap().vmm.jailer, None);
        assert_eq!(
            parse("[vmm]\njailer = false\n").unwrap().vmm.jailer,
            Some(false)
        );

        let err = parse("[vmm]\njailer = \"/opt/fc/jailer\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("jailer"), "{err}");
    }

    #[test]
    fn confinement_is_on_by_default_with_a_uid_range_covering_the_subnet() {
        let cfg = parse("").unwrap();
        assert!(cfg.vmm.confine);
        assert_eq!((cfg.vmm.uid_base, cfg.vmm.uid_count), (200_000, 65_536));
        assert!(!parse("[vmm]\nconfine = false\n").unwrap().vmm.confine);
    }

    #[test]
    fn uid_range_must_exclude_root_fit_in_u32_and_cover_the_subnet() {
        let err = |text: &str| parse(text).unwrap_err().to_string();
        assert!(err("[vmm]\nuid_base = 0\n").contains("root"));
        assert!(err("[vmm]\nuid_base = 4294967000\n").contains("largest uid"));
        let small = err("[network]\nsubnet = \"10.9.0.0/16\"\n[vmm]\nuid_count = 1000\n");
        assert!(
            small.contains("uid_count 1000") && small.contains("65536"),
            "{small}"
        );
        assert!(parse("[network]\nsubnet = \"10.9.0.0/16\"\n").is_ok());
        assert!(parse("[vmm]\nconfine = false\nuid_count = 1\n").is_ok());
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
    fn image_upload_limits_are_read_and_bad_ones_rejected() {
        let cfg =
            parse("[images]\nmax_kernel_size = \"64M\"\nupload_idle_timeout_secs = 5\n").unwrap();
        assert_eq!(cfg.images.max_bytes(), (64 << 20, 1 << 30, 64 << 30));
        assert_eq!(cfg.images.upload_idle_timeout_secs, 5);

        let err = parse("[images]\nmax_rootfs_size = \"lots\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("max_rootfs_size") && err.contains("lots"),
            "{err}"
        );
        let err = parse("[images]\nmax_initrd_size = \"0\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("max_initrd_size"), "{err}");
        let err = parse("[images]\nupload_idle_timeout_secs = 0\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("upload_idle_timeout_secs"), "{err}");
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
    fn api_limits_have_defaults_and_are_validated() {
        let cfg = parse("").unwrap();
        assert_eq!(cfg.api.max_connections_per_user, 256);
        assert_eq!(cfg.vmm.max_concurrent_boots, 0);
        let cfg = parse("[api]\nmax_connections = 10\nmax_connections_per_user = 5\nheader_read_timeout_secs = 3\n[vmm]\nmax_concurrent_boots = 4\n").unwrap();
        assert_eq!(
            (cfg.api.max_connections, cfg.api.max_connections_per_user),
            (10, 5)
        );
        assert_eq!(cfg.api.header_read_timeout_secs, 3);
        assert_eq!(cfg.vmm.max_concurrent_boots, 4);
        for (bad, key) in [
            (
                "[api]\nmax_connections_per_user = 0\n",
                "max_connections_per_user",
            ),
            (
                "[api]\nmax_connections = 4\nmax_connections_per_user = 5\n",
                "max_connections",
            ),
            (
                "[api]\nheader_read_timeout_secs = 0\n",
                "header_read_timeout_secs",
            ),
            (
                "[vmm]\nmax_concurrent_boots = 5000\n",
                "max_concurrent_boots",
            ),
            ("[api]\nmax_conections = 5\n", "max_conections"),
        ] {
            let err = parse(bad).unwrap_err().to_string();
            assert!(err.contains(key), "{bad}: {err}");
        }
    }

    #[test]
    fn a_default_disk_size_out_of_range_is_rejected() {
        let err = parse("[defaults]\ndisk_size = \"100T\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("out of range"), "{err}");
        assert!(parse("[defaults]\ndisk_size = \"8G\"\n").is_ok());
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
}
