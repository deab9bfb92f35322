//! hangar-net: host networking for VMs.
//!
//! A bridge with the gateway address, a pool of pre-created TAP devices
//! attached to it (so VM start does not pay for `ip tuntap add`), NAT in
//! root-namespace mode, an optional dedicated network namespace, and
//! namespace-aware TCP connects for the daemon. Guests are fenced in by
//! Hangar's own nft tables in the namespace the bridge lives in: `inet
//! hangar` ([`filter`]: nothing of the host, no link-local destinations) and
//! `bridge hangar` ([`spoof`]: each TAP sends only its VM's MAC and IP; VMs
//! isolated from each other unless `vm_to_vm`), with IPv6 off on the bridge
//! and TAPs ([`sysctl`]). Everything is done by
//! shelling out to `ip` (always `ip -n NS` when a namespace is configured) and
//! `nft`, the standard tools, with errors that carry the command and stderr.
//!
//! Note for VMM drivers: a TAP is found by name in the *current* namespace of
//! the process that opens `/dev/net/tun`, so in namespace mode the VMM must
//! run inside it (e.g. `ip netns exec NS qemu ...`).

#![cfg_attr(test, allow(clippy::unwrap_used))]

mod cmd;
mod config;
mod dns;
mod error;
pub mod filter;
pub mod nat;
pub mod netns;
mod nft;
pub mod spoof;
pub mod sysctl;
mod tap;

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use cmd::Ip;
pub use config::{NetConfig, IFNAME_MAX};
pub use dns::{host_dns_servers, parse_resolv_conf, RESOLV_CONF, SYSTEMD_RESOLVED_UPSTREAM};
pub use error::NetError;
use nft::Nft;
pub use spoof::Mac;
use tap::Pool;

/// Handle to the host networking set up by [`Network::setup`]. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Network {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    cfg: NetConfig,
    gateway: Ipv4Addr,
    ip: Ip,
    nft: Nft,
    /// Leaf lock: pool bookkeeping only, never held across an await.
    pool: Mutex<Pool>,
    /// Serialises background refills with shutdown.
    refill: tokio::sync::Mutex<()>,
    /// The most recently spawned background refill (earlier ones queue
    /// ahead of it on `refill`, so awaiting this one awaits them all).
    background: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

/// What `setup` created, so a failure can undo exactly that.
#[derive(Default)]
struct Created {
    netns: Option<String>,
    bridge: bool,
    taps: Vec<String>,
}

impl Network {
    /// Ensures the namespace (if configured), the bridge with the gateway
    /// address, NAT (root namespace + `nat` only) and a full TAP pool.
    /// Idempotent: an existing namespace, bridge and TAPs are reused. On
    /// failure, whatever this call created is removed again.
    pub async fn setup(cfg: NetConfig) -> Result<Network, NetError> {
        cfg.validate()?;
        let gateway = cfg.gateway().ok_or_else(|| {
            NetError::Config(format!("subnet {} has no gateway address", cfg.subnet))
        })?;
        let ip = Ip::new(cfg.netns.as_deref());
        let nft = Nft::new(cfg.netns.as_deref());
        let mut created = Created::default();
        match Self::setup_steps(&cfg, gateway, &ip, &nft, &mut created).await {
            Ok(pool) => Ok(Network {
                inner: Arc::new(Inner {
                    cfg,
                    gateway,
                    ip,
                    nft,
                    pool: Mutex::new(pool),
                    refill: tokio::sync::Mutex::new(()),
                    background: Mutex::new(None),
                }),
            }),
            Err(e) => {
                undo_setup(&ip, &cfg, created).await;
                Err(e)
            }
        }
    }

    async fn setup_steps(
        cfg: &NetConfig,
        gateway: Ipv4Addr,
        ip: &Ip,
        nft: &Nft,
        created: &mut Created,
    ) -> Result<Pool, NetError> {
        if let Some(ns) = &cfg.netns {
            if netns::ensure(ns).await? {
                created.netns = Some(ns.clone());
            }
            netns::loopback_up(ns).await?;
        }
        // The fences go up before the bridge and TAPs do, so no guest frame
        // ever meets an open bridge. They stay when the daemon stops: VMs
        // it leaves running stay fenced in.
        nft.apply(&filter::ruleset(&cfg.bridge, gateway, cfg.vm_to_vm))
            .await?;
        nft.apply(&spoof::ruleset(&cfg.tap_prefix, cfg.vm_to_vm))
            .await?;
        created.bridge = ensure_bridge(ip, &cfg.bridge).await?;
        sysctl::ipv6_off(cfg.netns.as_deref(), &cfg.bridge).await?;
        let cidr = format!("{gateway}/{}", cfg.subnet.prefix_len());
        ip.run(&["addr", "replace", &cidr, "dev", &cfg.bridge])
            .await?;
        ip.run(&["link", "set", "dev", &cfg.bridge, "up"]).await?;
        if cfg.netns.is_none() && cfg.nat {
            nat::apply(cfg.subnet, &cfg.bridge).await?;
        }

        let mut pool = Pool::default();
        let mut existing = Vec::new();
        for link in ip.links().await? {
            if tap::index_of(&cfg.tap_prefix, &link.ifname).is_none() {
                continue;
            }
            if !link.is_tap() {
                return Err(NetError::NotATap {
                    kind: link.kind_and_mode(),
                    name: link.ifname,
                });
            }
            existing.push(link.ifname);
        }
        for name in &existing {
            // TAPs made by an older daemon may still have IPv6 on.
            sysctl::ipv6_off(cfg.netns.as_deref(), name).await?;
            tap::attach(ip, name, &cfg.bridge).await?;
        }
        pool.adopt(&cfg.tap_prefix, existing);
        while pool.free.len() < cfg.tap_pool_size {
            let name = pool.reserve_name(&cfg.tap_prefix);
            tap::create(ip, &name, &cfg.bridge).await?;
            created.taps.push(name.clone());
            pool.free.push(name);
        }
        tracing::info!(
            netns = cfg.netns.as_deref().unwrap_or("<root>"),
            bridge = %cfg.bridge,
            gateway = %cidr,
            taps = pool.free.len(),
            "host networking ready"
        );
        Ok(pool)
    }

    /// Takes an idle TAP (attached to the bridge and up), creating one when
    /// the pool is empty; the pool is refilled in the background.
    pub async fn acquire_tap(&self) -> Result<String, NetError> {
        let taken = {
            let mut pool = self.lock_pool();
            if pool.closed {
                return Err(NetError::ShutDown);
            }
            match pool.take_free() {
                Some(name) => Ok(name),
                None => {
                    let name = pool.reserve_name(&self.inner.cfg.tap_prefix);
                    pool.in_use.insert(name.clone());
                    Err(name)
                }
            }
        };
        let name = match taken {
            Ok(name) => name,
            Err(fresh) => {
                if let Err(e) = tap::create(&self.inner.ip, &fresh, &self.inner.cfg.bridge).await {
                    self.lock_pool().in_use.remove(&fresh);
                    return Err(e);
                }
                fresh
            }
        };
        self.spawn_refill();
        tracing::debug!(tap = %name, "TAP acquired");
        Ok(name)
    }

    /// Lets `tap` carry the traffic of the VM with `mac` and `ip`, and only
    /// that: frames with another source MAC, or IPv4/ARP with another
    /// sender address, are dropped (see [`spoof`]). A TAP from
    /// [`Network::acquire_tap`] sends nothing until it is bound. Binding
    /// again replaces the earlier binding.
    pub async fn bind_tap(&self, tap: &str, mac: &str, ip: Ipv4Addr) -> Result<(), NetError> {
        self.check_ours(tap)?;
        let mac: Mac = mac.parse()?;
        self.inner
            .nft
            .apply(&spoof::bind_script(tap, mac, ip))
            .await?;
        tracing::debug!(tap, %mac, %ip, "TAP bound to its VM");
        Ok(())
    }

    fn check_ours(&self, name: &str) -> Result<(), NetError> {
        let prefix = &self.inner.cfg.tap_prefix;
        if tap::index_of(prefix, name).is_none() {
            return Err(NetError::ForeignTap {
                name: name.to_string(),
                prefix: prefix.clone(),
            });
        }
        Ok(())
    }

    /// Unbinds a TAP (see [`Network::bind_tap`]) and returns it to the
    /// pool, or deletes it when the pool is full (or shut down). Names that
    /// are not ours (wrong prefix) are refused. A TAP that cannot be
    /// unbound is deleted rather than handed out again still bound.
    pub async fn release_tap(&self, name: &str) -> Result<(), NetError> {
        self.check_ours(name)?;
        if let Err(e) = self.inner.nft.apply(&spoof::unbind_script(name)).await {
            tracing::warn!(tap = name, error = %e, "cannot unbind TAP; deleting it");
            self.lock_pool().in_use.remove(name);
            if let Err(del) = tap::delete(&self.inner.ip, name).await {
                tracing::warn!(tap = name, error = %del, "cannot delete TAP");
            }
            return Err(e);
        }
        let keep = {
            let mut pool = self.lock_pool();
            if pool.free.iter().any(|n| n == name) {
                return Ok(()); // Already idle: releasing twice is harmless.
            }
            pool.in_use.remove(name);
            pool.should_keep(self.inner.cfg.tap_pool_size)
        };
        if keep {
            // Re-attach in case the VMM or an operator detached it.
            if tap::attach(&self.inner.ip, name, &self.inner.cfg.bridge)
                .await
                .is_ok()
            {
                let mut pool = self.lock_pool();
                // Re-check: a refill may have filled the pool meanwhile.
                if pool.should_keep(self.inner.cfg.tap_pool_size) {
                    pool.free.push(name.to_string());
                    return Ok(());
                }
            }
        }
        tap::delete(&self.inner.ip, name).await
    }

    /// Marks a TAP as in use (adopting a running VM after a daemon restart).
    /// Call before handing out TAPs, so a running VM's TAP is never reissued.
    pub fn mark_in_use(&self, name: &str) {
        self.lock_pool()
            .mark_in_use(&self.inner.cfg.tap_prefix, name);
    }

    /// Deletes idle TAPs beyond the pool size. Setup adopts every existing
    /// TAP as idle (it cannot know which ones running VMs hold); once the
    /// daemon has marked those in use, this trims what a previous daemon
    /// left over.
    pub async fn trim_idle(&self) -> Result<(), NetError> {
        self.wait_background().await;
        let _refill = self.inner.refill.lock().await;
        let extra: Vec<String> = {
            let mut pool = self.lock_pool();
            let keep = self.inner.cfg.tap_pool_size.min(pool.free.len());
            pool.free.split_off(keep)
        };
        self.delete_taps(extra, "surplus idle").await
    }

    /// Waits for pending background refills, then fills the pool up to its
    /// size. Afterwards the pool is full and nothing refills behind the
    /// caller's back (until the next acquire). Useful in tests.
    pub async fn refill(&self) -> Result<(), NetError> {
        self.wait_background().await;
        self.inner.refill().await
    }

    /// Deletes every TAP in `names`; a failure is logged (as a `which` TAP)
    /// and the rest are still attempted. The first error is returned.
    async fn delete_taps(&self, names: Vec<String>, which: &str) -> Result<(), NetError> {
        let mut first_err = None;
        for name in names {
            if let Err(e) = tap::delete(&self.inner.ip, &name).await {
                tracing::warn!(tap = %name, error = %e, "could not delete {which} TAP");
                first_err.get_or_insert(e);
            }
        }
        first_err.map_or(Ok(()), Err)
    }

    async fn wait_background(&self) {
        let pending = self
            .inner
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(handle) = pending {
            if let Err(e) = handle.await {
                tracing::warn!(error = %e, "background TAP refill task failed");
            }
        }
    }

    /// Deletes idle TAPs; TAPs in use, the bridge and the namespace stay
    /// (running VMs may use them). Later acquires fail with `ShutDown`.
    /// Every TAP is attempted; the first error is returned.
    pub async fn shutdown(&self) -> Result<(), NetError> {
        self.lock_pool().closed = true;
        self.wait_background().await;
        let _refill = self.inner.refill.lock().await;
        let idle = std::mem::take(&mut self.lock_pool().free);
        self.delete_taps(idle, "idle").await
    }

    /// The bridge address guests route through.
    pub fn gateway(&self) -> Ipv4Addr {
        self.inner.gateway
    }

    pub fn prefix_len(&self) -> u8 {
        self.inner.cfg.subnet.prefix_len()
    }

    pub fn netns(&self) -> Option<&str> {
        self.inner.cfg.netns.as_deref()
    }

    pub fn config(&self) -> &NetConfig {
        &self.inner.cfg
    }

    /// Names of idle TAPs (for diagnostics).
    pub fn idle_taps(&self) -> Vec<String> {
        self.lock_pool().free.clone()
    }

    /// Connects to `addr` from inside the configured namespace (if any).
    pub async fn connect_tcp(
        &self,
        addr: SocketAddr,
        timeout: Duration,
    ) -> std::io::Result<tokio::net::TcpStream> {
        netns::connect_tcp(self.netns(), addr, timeout).await
    }

    /// DNS servers for guests: the host's (from /etc/resolv.conf, without
    /// 127.x stubs) in root-namespace mode. In namespace mode guests have no
    /// route to them, so this is empty (a guest then fails fast instead of
    /// timing out on every lookup).
    pub fn guest_dns(&self) -> Vec<Ipv4Addr> {
        if self.netns().is_some() {
            return Vec::new();
        }
        host_dns_servers(&[RESOLV_CONF, SYSTEMD_RESOLVED_UPSTREAM])
    }

    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        self.inner.lock_pool()
    }

    fn spawn_refill(&self) {
        let inner = Arc::clone(&self.inner);
        let handle = tokio::spawn(async move {
            if let Err(e) = inner.refill().await {
                tracing::warn!(error = %e, "TAP pool refill failed; TAPs will be created on demand");
            }
        });
        *self
            .inner
            .background
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(handle);
    }
}

impl Inner {
    fn lock_pool(&self) -> MutexGuard<'_, Pool> {
        // A poisoned pool only means a panic elsewhere; the data is still sane.
        self.pool.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn refill(&self) -> Result<(), NetError> {
        let _guard = self.refill.lock().await;
        loop {
            let name = {
                let mut pool = self.lock_pool();
                if pool.closed || pool.free.len() >= self.cfg.tap_pool_size {
                    return Ok(());
                }
                pool.reserve_name(&self.cfg.tap_prefix)
            };
            tap::create(&self.ip, &name, &self.cfg.bridge).await?;
            let kept = {
                let mut pool = self.lock_pool();
                if !pool.closed {
                    pool.free.push(name.clone());
                }
                !pool.closed
            };
            if !kept {
                return tap::delete(&self.ip, &name).await;
            }
        }
    }
}

/// Creates the bridge unless it exists; returns whether it was created.
async fn ensure_bridge(ip: &Ip, name: &str) -> Result<bool, NetError> {
    if let Some(link) = ip.links().await?.into_iter().find(|l| l.ifname == name) {
        if link.kind() != "bridge" {
            return Err(NetError::NotABridge {
                name: name.to_string(),
                kind: link.kind().to_string(),
            });
        }
        return Ok(false);
    }
    ip.run(&["link", "add", "name", name, "type", "bridge"])
        .await?;
    Ok(true)
}

/// Removes what a failed `setup` created, newest first, carrying on past
/// errors.
async fn undo_setup(ip: &Ip, cfg: &NetConfig, created: Created) {
    for name in created.taps.iter().rev() {
        if let Err(e) = tap::delete(ip, name).await {
            tracing::warn!(tap = %name, error = %e, "cleanup after failed setup");
        }
    }
    if created.bridge {
        if let Err(e) = ip.run(&["link", "del", "dev", &cfg.bridge]).await {
            tracing::warn!(bridge = %cfg.bridge, error = %e, "cleanup after failed setup");
        }
    }
    if let Some(ns) = created.netns {
        if let Err(e) = netns::delete(&ns).await {
            tracing::warn!(netns = %ns, error = %e, "cleanup after failed setup");
        }
    }
}

/// Test helper: deletes every TAP with the configured prefix and the bridge
/// (inside the configured namespace). Leaves the namespace itself. Every
/// step is attempted; the first error is returned.
pub fn teardown_everything(cfg: &NetConfig) -> Result<(), NetError> {
    let ip = Ip::new(cfg.netns.as_deref());
    let run = |args: &[&str]| cmd::run_blocking(&ip.args(args));
    let listing = run(&["-j", "-d", "link", "show"])?;
    let links = cmd::parse_links(&listing).map_err(|source| NetError::Parse {
        command: ip.args(&["-j", "-d", "link", "show"]).join(" "),
        source,
    })?;
    let mut first_err = None;
    for link in links {
        let ours = tap::index_of(&cfg.tap_prefix, &link.ifname).is_some()
            || (link.ifname == cfg.bridge && link.kind() == "bridge");
        if ours {
            if let Err(e) = run(&["link", "del", "dev", &link.ifname]) {
                first_err.get_or_insert(e);
            }
        }
    }
    first_err.map_or(Ok(()), Err)
}
