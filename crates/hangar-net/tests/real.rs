//! Host networking against the real kernel: every bridge, TAP and address
//! lives in a network namespace the test creates and deletes (even on
//! panic). Needs root.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use hangar_net::{netns, teardown_everything, NetConfig, NetError, Network};
use serde_json::Value;
use tokio::io::AsyncReadExt;

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A uniquely named namespace, deleted on drop.
struct NetnsGuard {
    name: String,
}

impl NetnsGuard {
    /// Picks a name; `create` decides whether the test or `setup` makes it.
    fn new(create: bool) -> Self {
        hangar_testsupport::require_root("network namespaces, bridges and TAPs");
        let name = format!(
            "hgtest-net-{}-{}",
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::SeqCst)
        );
        if create {
            let ok = Command::new("ip")
                .args(["netns", "add", &name])
                .status()
                .unwrap()
                .success();
            assert!(ok, "ip netns add {name} failed (needs root)");
        }
        NetnsGuard { name }
    }
}

impl Drop for NetnsGuard {
    fn drop(&mut self) {
        if netns::path(&self.name).exists() {
            let _ = Command::new("ip")
                .args(["netns", "del", &self.name])
                .status();
        }
    }
}

fn cfg(ns: &str, pool: usize) -> NetConfig {
    NetConfig {
        netns: Some(ns.to_string()),
        bridge: "hgbr0".into(),
        subnet: "10.77.0.0/24".parse().unwrap(),
        nat: false,
        tap_pool_size: pool,
        tap_prefix: "hgtap".into(),
        vm_to_vm: false,
    }
}

/// `ip -n NS -j -d ...` parsed.
fn ip_json(ns: &str, args: &[&str]) -> Vec<Value> {
    let out = Command::new("ip")
        .args(["-n", ns, "-j", "-d"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

fn taps(ns: &str) -> Vec<(String, Option<String>, bool)> {
    let mut v: Vec<_> = ip_json(ns, &["link", "show"])
        .into_iter()
        .filter(|l| l["ifname"].as_str().unwrap().starts_with("hgtap"))
        .map(|l| {
            let up = l["flags"].as_array().unwrap().iter().any(|f| f == "UP");
            (
                l["ifname"].as_str().unwrap().to_string(),
                l["master"].as_str().map(str::to_string),
                up,
            )
        })
        .collect();
    v.sort();
    v
}

fn tap_names(ns: &str) -> Vec<String> {
    taps(ns).into_iter().map(|t| t.0).collect()
}

fn bridge_addrs(ns: &str) -> Vec<String> {
    ip_json(ns, &["addr", "show", "dev", "hgbr0"])[0]["addr_info"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|a| a["family"] == "inet")
        .map(|a| format!("{}/{}", a["local"].as_str().unwrap(), a["prefixlen"]))
        .collect()
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn setup_creates_bridge_with_gateway_and_enslaved_pool_taps() {
    let ns = NetnsGuard::new(true);

    let net = Network::setup(cfg(&ns.name, 3)).await.unwrap();

    assert_eq!(bridge_addrs(&ns.name), vec!["10.77.0.1/24"]);
    assert_eq!(net.gateway(), Ipv4Addr::new(10, 77, 0, 1));
    assert_eq!(net.prefix_len(), 24);
    let t = taps(&ns.name);
    assert_eq!(t.len(), 3, "{t:?}");
    for (name, master, up) in &t {
        assert_eq!(master.as_deref(), Some("hgbr0"), "{name} not enslaved");
        assert!(up, "{name} not up");
    }
    let br = &ip_json(&ns.name, &["link", "show", "dev", "hgbr0"])[0];
    assert_eq!(br["linkinfo"]["info_kind"], "bridge");
    let lo = &ip_json(&ns.name, &["link", "show", "dev", "lo"])[0];
    assert!(
        lo["flags"].as_array().unwrap().iter().any(|f| f == "UP"),
        "lo must be up"
    );
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn setup_creates_missing_namespace() {
    let ns = NetnsGuard::new(false);

    let net = Network::setup(cfg(&ns.name, 1)).await.unwrap();

    assert!(netns::path(&ns.name).exists());
    assert_eq!(net.netns(), Some(ns.name.as_str()));
    assert_eq!(tap_names(&ns.name).len(), 1);
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn second_setup_reuses_bridge_and_taps() {
    let ns = NetnsGuard::new(true);
    let first = Network::setup(cfg(&ns.name, 2)).await.unwrap();
    let before = tap_names(&ns.name);
    drop(first);

    let second = Network::setup(cfg(&ns.name, 2)).await.unwrap();

    assert_eq!(tap_names(&ns.name), before);
    assert_eq!(bridge_addrs(&ns.name), vec!["10.77.0.1/24"]);
    let mut idle = second.idle_taps();
    idle.sort();
    assert_eq!(idle, before);
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn acquire_hands_out_pool_tap_and_refill_restores_pool() {
    let ns = NetnsGuard::new(true);
    let net = Network::setup(cfg(&ns.name, 2)).await.unwrap();
    let pool_before = tap_names(&ns.name);

    let tap = net.acquire_tap().await.unwrap();
    net.refill().await.unwrap();

    assert!(
        pool_before.contains(&tap),
        "{tap} should come from the pool {pool_before:?}"
    );
    assert!(!net.idle_taps().contains(&tap));
    assert_eq!(net.idle_taps().len(), 2);
    assert_eq!(tap_names(&ns.name).len(), 3);
    assert!(taps(&ns.name)
        .iter()
        .all(|(_, m, up)| m.as_deref() == Some("hgbr0") && *up));
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn acquire_on_empty_pool_creates_attached_tap() {
    let ns = NetnsGuard::new(true);
    let net = Network::setup(cfg(&ns.name, 0)).await.unwrap();
    assert!(tap_names(&ns.name).is_empty());

    let tap = net.acquire_tap().await.unwrap();

    assert_eq!(taps(&ns.name), vec![(tap, Some("hgbr0".to_string()), true)]);
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn release_returns_tap_to_pool_until_full_then_deletes() {
    let ns = NetnsGuard::new(true);
    let net = Network::setup(cfg(&ns.name, 2)).await.unwrap();
    let a = net.acquire_tap().await.unwrap();
    net.refill().await.unwrap();
    // Take one idle TAP out without triggering a refill: the pool now has room for one.
    let b = net.idle_taps()[0].clone();
    net.mark_in_use(&b);

    net.release_tap(&a).await.unwrap();
    net.release_tap(&b).await.unwrap();

    let names = tap_names(&ns.name);
    assert!(
        names.contains(&a),
        "a should be back in the pool: {names:?}"
    );
    assert!(
        !names.contains(&b),
        "b should be deleted, the pool was full: {names:?}"
    );
    assert!(net.idle_taps().contains(&a));
    assert_eq!(net.idle_taps().len(), 2);
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn release_of_foreign_interface_is_refused() {
    let ns = NetnsGuard::new(true);
    let net = Network::setup(cfg(&ns.name, 0)).await.unwrap();

    let err = net.release_tap("hgbr0").await.unwrap_err();

    assert!(matches!(err, NetError::ForeignTap { .. }), "{err}");
    assert_eq!(
        ip_json(&ns.name, &["link", "show", "dev", "hgbr0"]).len(),
        1
    );
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn mark_in_use_after_restart_keeps_tap_out_of_pool() {
    let ns = NetnsGuard::new(true);
    let net = Network::setup(cfg(&ns.name, 2)).await.unwrap();
    let running = net.acquire_tap().await.unwrap();
    net.refill().await.unwrap();
    drop(net); // "daemon restart"

    let net = Network::setup(cfg(&ns.name, 2)).await.unwrap();
    net.mark_in_use(&running);
    let a = net.acquire_tap().await.unwrap();
    let b = net.acquire_tap().await.unwrap();

    assert_ne!(a, running);
    assert_ne!(b, running);
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn shutdown_removes_idle_taps_but_keeps_used_tap_bridge_and_netns() {
    let ns = NetnsGuard::new(true);
    let net = Network::setup(cfg(&ns.name, 2)).await.unwrap();
    let used = net.acquire_tap().await.unwrap();
    net.refill().await.unwrap();

    net.shutdown().await.unwrap();

    assert_eq!(tap_names(&ns.name), vec![used]);
    assert_eq!(bridge_addrs(&ns.name), vec!["10.77.0.1/24"]);
    assert!(netns::path(&ns.name).exists());
    assert!(matches!(net.acquire_tap().await, Err(NetError::ShutDown)));
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn setup_with_non_bridge_of_same_name_fails_and_creates_no_taps() {
    let ns = NetnsGuard::new(true);
    let ok = Command::new("ip")
        .args([
            "-n", &ns.name, "tuntap", "add", "dev", "hgbr0", "mode", "tap",
        ])
        .status()
        .unwrap()
        .success();
    assert!(ok);

    let err = Network::setup(cfg(&ns.name, 2)).await.unwrap_err();

    assert!(
        matches!(err, NetError::NotABridge { ref kind, .. } if kind == "tun"),
        "{err}"
    );
    assert!(tap_names(&ns.name).is_empty());
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn failed_setup_removes_the_bridge_it_created_and_keeps_foreign_links() {
    let ns = NetnsGuard::new(true);
    // A bridge named like a TAP: adopting it is refused (it is no TAP)
    // after setup created hgbr0.
    let ok = Command::new("ip")
        .args(["-n", &ns.name, "link", "add", "hgtap0", "type", "bridge"])
        .status()
        .unwrap()
        .success();
    assert!(ok);

    let err = Network::setup(cfg(&ns.name, 1)).await.unwrap_err();

    assert!(
        matches!(err, NetError::NotATap { ref kind, .. } if kind == "bridge"),
        "{err}"
    );
    let left: Vec<String> = ip_json(&ns.name, &["link", "show"])
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec!["lo", "hgtap0"]);
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn teardown_everything_deletes_taps_and_bridge() {
    let ns = NetnsGuard::new(true);
    let c = cfg(&ns.name, 2);
    let net = Network::setup(c.clone()).await.unwrap();
    let _used = net.acquire_tap().await.unwrap();

    teardown_everything(&c).unwrap();

    let left: Vec<String> = ip_json(&ns.name, &["link", "show"])
        .iter()
        .map(|l| l["ifname"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(left, vec!["lo"]);
}

/// Binds a listener inside `ns` that answers one connection with "hello".
fn serve_hello_in(ns: &str, bind: SocketAddr) -> SocketAddr {
    let listener = netns::run_in(Some(ns), move || TcpListener::bind(bind)).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        if let Ok((mut s, _)) = listener.accept() {
            let _ = s.write_all(b"hello");
        }
    });
    addr
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn connect_tcp_reaches_listener_on_gateway_inside_netns() {
    let ns = NetnsGuard::new(true);
    let net = Network::setup(cfg(&ns.name, 0)).await.unwrap();
    let addr = serve_hello_in(&ns.name, SocketAddr::from((net.gateway(), 0)));

    let mut s = net.connect_tcp(addr, Duration::from_secs(2)).await.unwrap();
    let mut buf = String::new();
    s.read_to_string(&mut buf).await.unwrap();

    assert_eq!(buf, "hello");
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn listener_on_netns_loopback_is_reachable_via_netns_but_not_from_host() {
    let ns = NetnsGuard::new(true);
    let net = Network::setup(cfg(&ns.name, 0)).await.unwrap();
    // Pick a port that is free on the host's loopback, so "refused" below
    // can only mean "different namespace".
    let addr = loop {
        let a = serve_hello_in(&ns.name, SocketAddr::from((Ipv4Addr::LOCALHOST, 0)));
        if TcpListener::bind(a).is_ok() {
            break a;
        }
    };

    let from_host = tokio::net::TcpStream::connect(addr).await;
    let from_netns = net.connect_tcp(addr, Duration::from_secs(2)).await;

    // A connect to a free port in the ephemeral range can, rarely, pick
    // that same port as its source and connect to itself (TCP
    // self-connect); that is not reaching the namespace's listener either.
    match from_host {
        Err(e) => assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused),
        Ok(s) => assert_eq!(
            s.local_addr().unwrap(),
            s.peer_addr().unwrap(),
            "the host reached the namespace's listener"
        ),
    }
    let mut buf = String::new();
    from_netns.unwrap().read_to_string(&mut buf).await.unwrap();
    assert_eq!(buf, "hello");
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn connect_tcp_to_closed_port_in_netns_is_refused() {
    let ns = NetnsGuard::new(true);
    let net = Network::setup(cfg(&ns.name, 0)).await.unwrap();

    let err = net
        .connect_tcp(SocketAddr::from((net.gateway(), 1)), Duration::from_secs(2))
        .await
        .unwrap_err();

    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionRefused);
}

#[test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
fn guest_dns_in_netns_mode_is_empty() {
    let ns = NetnsGuard::new(true);
    let rt = tokio::runtime::Runtime::new().unwrap();
    let net = rt.block_on(Network::setup(cfg(&ns.name, 0))).unwrap();

    assert!(net.guest_dns().is_empty());
}

#[test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
fn nat_ruleset_is_accepted_by_nft_check_inside_a_test_netns() {
    // `nft -c` validates without committing; run it in a throwaway
    // namespace anyway so the host ruleset is never involved.
    let ns = NetnsGuard::new(true);
    let text = hangar_net::nat::ruleset("10.77.0.0/24".parse().unwrap(), "hgbr0");
    let mut child = Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "-c", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();

    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut listing = String::new();
    Command::new("ip")
        .args(["netns", "exec", &ns.name, "nft", "list", "ruleset"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap()
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut listing)
        .unwrap();
    assert!(
        !listing.contains("hangar"),
        "check mode must not commit: {listing}"
    );
}

#[tokio::test]
#[ignore = "needs root: network namespaces, bridges and TAPs"]
async fn trim_idle_deletes_taps_beyond_the_pool_but_keeps_marked_ones() {
    let ns = NetnsGuard::new(true);
    let first = Network::setup(cfg(&ns.name, 3)).await.unwrap();
    let names = tap_names(&ns.name);
    assert_eq!(names.len(), 3);
    drop(first);
    // A smaller pool after a restart, with one TAP held by a running VM.
    let net = Network::setup(cfg(&ns.name, 1)).await.unwrap();
    net.mark_in_use(&names[0]);
    net.trim_idle().await.unwrap();
    let left = tap_names(&ns.name);
    assert_eq!(left.len(), 2, "{left:?}");
    assert!(left.contains(&names[0]), "{left:?}");
}
