//! The guest fences against the real kernel, without VMs: "guests" are
//! network namespaces joined to the daemon's bridge by veth pairs whose
//! bridge end is named like a pool TAP (the nft rules match TAPs by name),
//! so every frame they send meets the same rules a VM's would. Every
//! namespace is the test's own and is deleted on drop. Needs root.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hangar_net::{netns, NetConfig, NetError, Network};

static COUNTER: AtomicU32 = AtomicU32::new(0);
const GATEWAY: &str = "10.77.0.1";

/// A uniquely named namespace, made now and deleted on drop.
struct Ns {
    name: String,
}

impl Ns {
    fn new(tag: &str) -> Ns {
        hangar_testsupport::require_root("network namespaces, bridges and TAPs");
        let name = format!(
            "hgfence-{tag}-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        run(&["ip", "netns", "add", &name]);
        Ns { name }
    }

    /// Runs `sh -c script` inside the namespace.
    fn sh(&self, script: &str) -> Output {
        Command::new("ip")
            .args(["netns", "exec", &self.name, "sh", "-c", script])
            .output()
            .unwrap()
    }

    fn ok(&self, script: &str) -> String {
        let out = self.sh(script);
        assert!(
            out.status.success(),
            "`{script}` in {} failed: {}",
            self.name,
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn pings(&self, ip: &str) -> bool {
        self.sh(&format!("busybox ping -c 1 -W 2 {ip}"))
            .status
            .success()
    }
}

impl Drop for Ns {
    fn drop(&mut self) {
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

fn run(argv: &[&str]) {
    let out = Command::new(argv[0]).args(&argv[1..]).output().unwrap();
    assert!(
        out.status.success(),
        "{argv:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn cfg(ns: &str, vm_to_vm: bool) -> NetConfig {
    NetConfig {
        netns: Some(ns.to_string()),
        bridge: "hgbr0".into(),
        subnet: "10.77.0.0/24".parse().unwrap(),
        nat: false,
        tap_pool_size: 0,
        tap_prefix: "hgtap".into(),
        vm_to_vm,
    }
}

/// A stand-in guest: its own namespace with `eth0` (MAC, IP, default route
/// via the gateway), whose peer `tap` sits on the host's bridge.
struct Guest {
    ns: Ns,
    tap: String,
    ip: String,
    mac: String,
}

impl Guest {
    fn attach(host: &Ns, n: u8) -> Guest {
        let ns = Ns::new("guest");
        let (tap, ip, mac) = (
            format!("hgtap{n}"),
            format!("10.77.0.{n}"),
            format!("02:48:47:00:00:{n:02x}"),
        );
        let h = host.name.as_str();
        run(&[
            "ip", "-n", h, "link", "add", &tap, "type", "veth", "peer", "name", "eth0", "netns",
            &ns.name,
        ]);
        run(&["ip", "-n", h, "link", "set", &tap, "master", "hgbr0", "up"]);
        ns.ok(&format!(
            "ip link set lo up && ip link set eth0 address {mac} && \
             ip addr add {ip}/24 dev eth0 && ip link set eth0 up && \
             ip route add default via {GATEWAY}"
        ));
        Guest { ns, tap, ip, mac }
    }

    async fn bind(&self, net: &Network) {
        net.bind_tap(&self.tap, &self.mac, self.ip.parse().unwrap())
            .await
            .unwrap();
    }

    /// The MAC this guest (or the host, for `host`) has for `ip`.
    fn neigh(ns: &Ns, ip: &str) -> String {
        ns.ok(&format!("ip neigh show {ip}"))
    }
}

fn nft_list(ns: &Ns, family: &str) -> String {
    ns.ok(&format!("nft list table {family} hangar"))
}

/// A TCP listener on 0.0.0.0:`port` inside `ns` (the socket lives there).
fn listen_any(ns: &Ns, port: u16) -> TcpListener {
    let l = netns::run_in(Some(&ns.name), move || {
        TcpListener::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
    })
    .unwrap();
    l.set_nonblocking(true).unwrap();
    l
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn setup_puts_up_the_fences_and_turns_ipv6_off() {
    let host = Ns::new("host");
    let mut c = cfg(&host.name, false);
    c.tap_pool_size = 1;
    let net = Network::setup(c).await.unwrap();
    let tap = net.idle_taps().pop().unwrap();

    let inet = nft_list(&host, "inet");
    assert!(
        inet.contains("iifname \"hgbr0\" jump from_guests"),
        "{inet}"
    );
    assert!(inet.contains("ip daddr 169.254.0.0/16 drop"), "{inet}");
    let bridge = nft_list(&host, "bridge");
    assert!(bridge.contains("iifname \"hgtap*\" drop"), "{bridge}");
    for ifname in ["hgbr0", tap.as_str()] {
        let v = host.ok(&format!(
            "cat /proc/sys/net/ipv6/conf/{ifname}/disable_ipv6 \
             /proc/sys/net/ipv6/conf/{ifname}/accept_ra /proc/sys/net/ipv6/conf/{ifname}/autoconf"
        ));
        assert_eq!(
            v.split_whitespace().collect::<Vec<_>>(),
            ["1", "0", "0"],
            "{ifname}"
        );
    }
    let addrs = host.ok("ip -6 addr show dev hgbr0");
    assert!(
        addrs.trim().is_empty(),
        "the bridge has IPv6 addresses: {addrs}"
    );
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn bind_adds_a_taps_rules_and_release_removes_them() {
    let host = Ns::new("host");
    let mut c = cfg(&host.name, false);
    c.tap_pool_size = 1;
    let net = Network::setup(c).await.unwrap();
    let tap = net.acquire_tap().await.unwrap();

    net.bind_tap(&tap, "02:48:47:00:00:07", Ipv4Addr::new(10, 77, 0, 7))
        .await
        .unwrap();
    let bound = nft_list(&host, "bridge");
    assert!(
        bound.contains(&format!("\"{tap}\" : jump tap_{tap}")),
        "{bound}"
    );
    assert!(
        bound.contains("ether saddr != 02:48:47:00:00:07 drop"),
        "{bound}"
    );
    assert!(bound.contains("ip saddr 10.77.0.7 accept"), "{bound}");
    // Binding again (a restart's reconcile) replaces, not adds.
    net.bind_tap(&tap, "02:48:47:00:00:08", Ipv4Addr::new(10, 77, 0, 8))
        .await
        .unwrap();
    let rebound = nft_list(&host, "bridge");
    assert!(!rebound.contains("10.77.0.7"), "{rebound}");
    assert_eq!(rebound.matches("ether saddr !=").count(), 1, "{rebound}");

    net.release_tap(&tap).await.unwrap();
    let released = nft_list(&host, "bridge");
    assert!(!released.contains(&format!("tap_{tap}")), "{released}");
    // Releasing an unbound TAP (an aborted boot) is fine too.
    let other = net.acquire_tap().await.unwrap();
    net.release_tap(&other).await.unwrap();
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn bind_refuses_bad_macs_and_foreign_interfaces() {
    let host = Ns::new("host");
    let net = Network::setup(cfg(&host.name, false)).await.unwrap();
    let ip = Ipv4Addr::new(10, 77, 0, 7);

    let bad_mac = net.bind_tap("hgtap0", "02:48:47:00:00:07 accept", ip).await;
    let foreign = net.bind_tap("hgbr0", "02:48:47:00:00:07", ip).await;

    assert!(matches!(bad_mac, Err(NetError::Config(_))), "{bad_mac:?}");
    assert!(
        matches!(foreign, Err(NetError::ForeignTap { .. })),
        "{foreign:?}"
    );
    assert!(!nft_list(&host, "bridge").contains("tap_hgtap0"));
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn setup_refuses_a_link_named_like_a_pool_tap_that_is_not_a_tap() {
    let host = Ns::new("host");
    run(&[
        "ip", "-n", &host.name, "link", "add", "hgtap0", "type", "veth", "peer", "name", "hgpeer0",
    ]);

    let err = Network::setup(cfg(&host.name, false)).await.unwrap_err();

    assert!(
        matches!(&err, NetError::NotATap { name, kind } if name == "hgtap0" && kind == "veth"),
        "{err:?}"
    );
    let links = host.ok("ip -d link show hgtap0");
    assert!(
        links.contains("veth"),
        "the foreign link must be left alone: {links}"
    );
    assert!(
        !links.contains("master"),
        "it must not join the bridge: {links}"
    );
}

/// With `vm_to_vm = true`: bound guests reach each other and the host
/// reaches them, but a guest reaches no host service, cannot claim
/// another's IP (ARP) or MAC (bridge learning), and an unbound TAP sends
/// nothing.
#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn guests_reach_only_what_they_may_and_cannot_spoof() {
    let host = Ns::new("host");
    let net = Network::setup(cfg(&host.name, true)).await.unwrap();
    let (g1, g2) = (Guest::attach(&host, 50), Guest::attach(&host, 51));

    assert!(!g1.ns.pings(&g2.ip), "an unbound TAP must send nothing");
    g1.ns.ok("ip neigh flush dev eth0"); // forget the failed resolution
    g1.bind(&net).await;
    g2.bind(&net).await;
    assert!(
        g1.ns.pings(&g2.ip),
        "vm_to_vm = true: guests reach each other"
    );
    assert!(
        host.pings(&g1.ip) && host.pings(&g2.ip),
        "the host reaches guests"
    );

    // Nothing of the host: not a listener on 0.0.0.0, not even ping.
    let listener = listen_any(&host, 7777);
    host.ok(&format!("timeout 3 bash -c '</dev/tcp/{GATEWAY}/7777'"));
    let (conn, _) = listener.accept().unwrap(); // the host's own probe
    drop(conn);
    let reach = g2
        .ns
        .sh(&format!("timeout 3 bash -c '</dev/tcp/{GATEWAY}/7777'"));
    assert!(
        !reach.status.success(),
        "a guest connected to a host listener"
    );
    assert!(
        listener.accept().is_err(),
        "the listener saw a guest connection"
    );
    assert!(!g2.ns.pings(GATEWAY), "a guest pinged the host");

    // g1 claims g2's IP and the gateway's with gratuitous ARP.
    let host_view = Guest::neigh(&host, &g2.ip);
    let g2_view = Guest::neigh(&g2.ns, GATEWAY);
    assert!(host_view.contains(&g2.mac), "{host_view}");
    assert!(!g2_view.trim().is_empty(), "g2 has resolved the gateway");
    std::thread::sleep(Duration::from_millis(1100)); // past the ARP locktime, so an update would count
    for claimed in [&g2.ip, GATEWAY] {
        g1.ns.ok(&format!(
            "ip addr add {claimed}/32 dev eth0 && \
             busybox arping -U -c 2 -w 2 -I eth0 -s {claimed} {claimed} >/dev/null; \
             ip addr del {claimed}/32 dev eth0"
        ));
    }
    assert_eq!(
        Guest::neigh(&host, &g2.ip),
        host_view,
        "the host's view of g2 changed"
    );
    let after = Guest::neigh(&g2.ns, GATEWAY);
    assert!(
        !after.contains(&g1.mac),
        "g2 now sends gateway traffic to g1: {after}"
    );
    assert!(host.pings(&g2.ip), "g2 is no longer reachable");

    // g1 takes g2's MAC: the bridge must not learn it on g1's port.
    g1.ns.ok(&format!(
        "ip link set eth0 address {} && busybox ping -c 2 -W 1 {} >/dev/null; true",
        g2.mac, g2.ip
    ));
    let fdb = host.ok(&format!(
        "bridge fdb show br hgbr0 | grep -i '{}' || true",
        g2.mac
    ));
    assert!(
        !fdb.contains(&g1.tap),
        "the bridge sends g2's frames to g1: {fdb}"
    );
    assert!(host.pings(&g2.ip), "g2 is no longer reachable");
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn isolated_guests_do_not_reach_each_other_but_the_host_reaches_both() {
    let host = Ns::new("host");
    let net = Network::setup(cfg(&host.name, false)).await.unwrap();
    let (g1, g2) = (Guest::attach(&host, 60), Guest::attach(&host, 61));
    g1.bind(&net).await;
    g2.bind(&net).await;

    assert!(host.pings(&g1.ip) && host.pings(&g2.ip));
    assert!(!g1.ns.pings(&g2.ip), "vm_to_vm = false: g1 reached g2");
    assert!(!g2.ns.pings(&g1.ip), "vm_to_vm = false: g2 reached g1");
}
