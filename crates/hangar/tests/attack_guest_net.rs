//! Attack suite, guests on the network (`docs/security.md`, "Who may do
//! what": a guest reaches the internet when NAT is on, nothing else of the
//! host, and nothing of other VMs unless `[network] vm_to_vm` allows it).
//! Each test boots real guests (QEMU TCG) and runs the attacks inside them
//! with `hangar exec`; several attacks share a boot, each with its own
//! assertion naming it. Run under the host-wide boot lock:
//! `sudo cargo test -p hangar --test attack_guest_net -- --include-ignored`.

#![allow(clippy::unwrap_used)]

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{Options, TestDaemon};

/// `sh -c script` inside guest `vm`.
fn guest(d: &TestDaemon, vm: &str, script: &str) -> Output {
    d.hangar(&["exec", vm, "--", "sh", "-c", script])
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// `sh -c script` in the daemon's network namespace (the "host" side).
fn host(d: &TestDaemon, script: &str) -> String {
    let out = Command::new("ip")
        .args(["netns", "exec", &d.netns.name, "sh", "-c", script])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "`{script}`: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout(&out)
}

/// Reads a few bytes of the banner of TCP `ip:port` from inside `vm`
/// (empty when the connection fails).
fn banner(d: &TestDaemon, vm: &str, ip: &str, port: u16) -> String {
    stdout(&guest(
        d,
        vm,
        &format!("timeout 8 bash -c 'exec 3<>/dev/tcp/{ip}/{port}; head -c 7 <&3' 2>/dev/null"),
    ))
}

/// The lladdr of `ip` in a `ip neigh show` listing ("" when unresolved).
fn lladdr(neigh: &str) -> String {
    let mut words = neigh.split_whitespace();
    while let Some(w) = words.next() {
        if w == "lladdr" {
            return words.next().unwrap_or_default().to_lowercase();
        }
    }
    String::new()
}

/// A TCP server on 0.0.0.0:`port` in the daemon's namespace: it greets
/// with `HOSTSVC` and logs each client's address to `log`.
struct HostService {
    child: std::process::Child,
}

impl HostService {
    fn start(d: &TestDaemon, port: u16, log: &Path) -> HostService {
        let script = format!(
            "import socket\n\
             s = socket.socket()\n\
             s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)\n\
             s.bind(('0.0.0.0', {port}))\n\
             s.listen()\n\
             open('{log}', 'w').close()\n\
             while True:\n\
             \x20   c, a = s.accept()\n\
             \x20   open('{log}', 'a').write(a[0] + '\\n')\n\
             \x20   c.sendall(b'HOSTSVC')\n\
             \x20   c.close()\n",
            log = log.display()
        );
        // The host's own probe of the service goes over loopback.
        host(d, "ip link set lo up");
        let child = Command::new("ip")
            .args(["netns", "exec", &d.netns.name, "python3", "-c", &script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        common::wait_until(
            "the host service to listen",
            Duration::from_secs(10),
            || log.exists(),
        );
        HostService { child }
    }
}

impl Drop for HostService {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// "The internet" beyond the daemon's uplink: a namespace joined by a veth
/// pair and the default route, serving HTTP on 0.0.0.0:8080 (answering with
/// the client's address) at [`Self::SERVER`] and at the cloud metadata
/// address, which a guest must not reach.
struct FakeInternet {
    _ns: common::Netns,
    server: std::process::Child,
}

impl FakeInternet {
    const SERVER: &'static str = "198.51.100.1";
    const UPLINK: &'static str = "198.51.100.2";
    const METADATA: &'static str = "169.254.169.254";

    fn attach(host_ns: &str) -> FakeInternet {
        let ns = common::Netns::create("inet");
        let run = |args: &[&str]| {
            let st = Command::new("ip").args(args).status().unwrap();
            assert!(st.success(), "ip {args:?} failed");
        };
        let inet = ns.name.as_str();
        run(&[
            "-n", host_ns, "link", "add", "hgup", "type", "veth", "peer", "name", "hgdown",
            "netns", inet,
        ]);
        run(&[
            "-n",
            host_ns,
            "addr",
            "add",
            "198.51.100.2/24",
            "dev",
            "hgup",
        ]);
        run(&["-n", host_ns, "link", "set", "hgup", "up"]);
        run(&[
            "-n",
            host_ns,
            "route",
            "add",
            "default",
            "via",
            Self::SERVER,
        ]);
        run(&[
            "-n",
            inet,
            "addr",
            "add",
            "198.51.100.1/24",
            "dev",
            "hgdown",
        ]);
        run(&[
            "-n",
            inet,
            "addr",
            "add",
            "169.254.169.254/32",
            "dev",
            "hgdown",
        ]);
        run(&["-n", inet, "link", "set", "hgdown", "up"]);
        run(&["-n", inet, "link", "set", "lo", "up"]);
        let script = "import http.server as h\n\
            class H(h.BaseHTTPRequestHandler):\n\
            \x20   def do_GET(self):\n\
            \x20       b = self.client_address[0].encode()\n\
            \x20       self.send_response(200)\n\
            \x20       self.send_header('Content-Length', str(len(b)))\n\
            \x20       self.end_headers()\n\
            \x20       self.wfile.write(b)\n\
            h.HTTPServer(('0.0.0.0', 8080), H).serve_forever()\n";
        let server = Command::new("ip")
            .args(["netns", "exec", inet, "python3", "-c", script])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        FakeInternet { _ns: ns, server }
    }
}

impl Drop for FakeInternet {
    fn drop(&mut self) {
        let _ = self.server.kill();
        let _ = self.server.wait();
    }
}

/// Root-namespace mode (the daemon inside the test's namespace, NAT on),
/// default config: guest `a` tries every way to the host and to `b`, and
/// still reaches the internet.
#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn guest_cannot_reach_host_services_metadata_or_other_vms_but_reaches_the_internet() {
    let _serial = common::serial();
    // The image must be cached first: this daemon has no route to a mirror.
    TestDaemon::start("gnetimg").ok(&["image", "pull", "debian-12"]);
    let mut d = TestDaemon::with(
        "gnet",
        Options {
            daemon_in_netns: true,
            start: false,
            ..Options::default()
        },
    );
    let inet = FakeInternet::attach(&d.netns.name);
    d.spawn();
    let log = d.dir.path().join("hostsvc.log");
    let svc = HostService::start(&d, 7777, &log);
    d.ok(&["vm", "create", "a", "--cpus", "1"]);
    d.ok(&["vm", "create", "b", "--cpus", "1"]);
    let b = d.json(&["vm", "show", "b"]);
    let gateway = "10.213.7.1";
    // The service is up: the host itself gets its greeting.
    let own = host(
        &d,
        &format!("timeout 5 bash -c 'exec 3<>/dev/tcp/{gateway}/7777; head -c 7 <&3'"),
    );
    assert_eq!(own, "HOSTSVC");
    let before = std::fs::read_to_string(&log).unwrap();

    // A service listening on 0.0.0.0, at the bridge address and at the
    // host's uplink address.
    for target in [gateway, FakeInternet::UPLINK] {
        let got = banner(&d, "a", target, 7777);
        assert_ne!(got, "HOSTSVC", "guest reached the host service at {target}");
    }
    assert_eq!(
        std::fs::read_to_string(&log).unwrap(),
        before,
        "the host service saw a guest connection"
    );
    // ICMP to the host.
    let ping = guest(&d, "a", &format!("busybox ping -c 2 -W 2 {gateway}"));
    assert!(
        !ping.status.success(),
        "guest pinged the host: {}",
        stdout(&ping)
    );
    // The host's IPv6 link-local address, found with all-nodes multicast.
    let ll = guest(
        &d,
        "a",
        "busybox ping6 -c 2 -w 3 -I eth0 ff02::1 2>&1; echo; ip -6 -o addr show dev eth0",
    );
    let text = stdout(&ll);
    let (replies, own_addrs) = text.split_once("\n\n").unwrap_or((&text, ""));
    for line in replies.lines().filter(|l| l.contains("bytes from")) {
        let from = line
            .split_whitespace()
            .nth(3)
            .unwrap_or_default()
            .trim_end_matches(':');
        assert!(
            own_addrs.contains(from),
            "something answered on IPv6 link-local: {line}\n{text}"
        );
    }
    // Cloud metadata, which NAT would carry out.
    let meta = guest(
        &d,
        "a",
        &format!(
            "curl -s --max-time 8 http://{}:8080/",
            FakeInternet::METADATA
        ),
    );
    assert!(
        !meta.status.success(),
        "guest reached the metadata address: {}",
        stdout(&meta)
    );
    // Another VM (vm_to_vm is off by default).
    let b_ip = b["ip"].as_str().unwrap();
    assert_ne!(
        banner(&d, "a", b_ip, 22),
        "SSH-2.0",
        "guest reached b's sshd"
    );
    let ping_b = guest(&d, "a", &format!("busybox ping -c 2 -W 2 {b_ip}"));
    assert!(!ping_b.status.success(), "guest pinged b");

    // What guests may do still works: the internet, through NAT.
    let out = guest(
        &d,
        "a",
        &format!(
            "curl -s --max-time 20 http://{}:8080/",
            FakeInternet::SERVER
        ),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout(&out), FakeInternet::UPLINK);

    d.ok(&["vm", "rm", "--force", "a"]);
    d.ok(&["vm", "rm", "--force", "b"]);
    d.assert_nothing_left(1);
    drop(svc);
    drop(d);
    drop(inet);
}

/// With `vm_to_vm = true` (so frames of `a` do reach `b`): `a` claims
/// `b`'s IP and the gateway's with gratuitous ARP, then sends with `b`'s MAC.
/// Neither the host nor `b` is fooled, and `b` stays reachable.
#[test]
#[ignore = "needs root: runs the daemon and boots guests (network namespace, TAPs, QEMU)"]
fn guest_claiming_another_vms_ip_or_mac_does_not_disturb_it() {
    let _serial = common::serial();
    let d = TestDaemon::with(
        "gspoof",
        Options {
            vm_to_vm: true,
            ..Options::default()
        },
    );
    d.ok(&["image", "pull", "debian-12"]);
    d.ok(&["vm", "create", "a", "--cpus", "1"]);
    d.ok(&["vm", "create", "b", "--cpus", "1"]);
    let (a, b) = (d.json(&["vm", "show", "a"]), d.json(&["vm", "show", "b"]));
    let (a_mac, b_mac) = (a["mac"].as_str().unwrap(), b["mac"].as_str().unwrap());
    let b_ip = b["ip"].as_str().unwrap();
    let b_tap = b["tap"].as_str().unwrap();
    let gateway = "10.213.7.1";

    assert_eq!(
        banner(&d, "a", b_ip, 22),
        "SSH-2.0",
        "vm_to_vm = true: a reaches b"
    );
    // b resolves the gateway (the ping itself is dropped: host input).
    let _ = guest(&d, "b", &format!("busybox ping -c 1 -W 1 {gateway}"));
    let b_sees_gw = lladdr(&stdout(&guest(
        &d,
        "b",
        &format!("ip neigh show {gateway}"),
    )));
    let host_sees_b = lladdr(&host(&d, &format!("ip neigh show {b_ip}")));
    assert!(!b_sees_gw.is_empty(), "b has not resolved the gateway");
    assert_eq!(host_sees_b, b_mac);
    // Past the ARP locktime (1 s), so that an update would be taken.
    std::thread::sleep(Duration::from_millis(1100));

    // Claiming the gateway's address or taking b's MAC cuts a's own
    // connection to the daemon, so the attack runs detached and says
    // when it is done.
    let attack = format!(
        "for ip in {b_ip} {gateway}; do \
           ip addr add $ip/32 dev eth0; \
           busybox arping -U -c 3 -w 3 -I eth0 -s $ip $ip; \
           ip addr del $ip/32 dev eth0; \
         done; \
         ip link set eth0 address {b_mac}; busybox ping -c 3 -W 1 {b_ip}; \
         ip link set eth0 address {a_mac}; touch /run/attack-done"
    );
    let _ = guest(
        &d,
        "a",
        &format!("setsid sh -c '{attack}' >/dev/null 2>&1 </dev/null &"),
    );
    let done = common::poll_until(Duration::from_secs(90), || {
        guest(&d, "a", "test -e /run/attack-done").status.success()
    });
    assert!(done, "the attack in a did not finish");

    assert_eq!(
        lladdr(&host(&d, &format!("ip neigh show {b_ip}"))),
        b_mac,
        "the host now sends b's traffic to a"
    );
    let now = lladdr(&stdout(&guest(
        &d,
        "b",
        &format!("ip neigh show {gateway}"),
    )));
    assert_ne!(now, a_mac, "b now sends its gateway traffic to a");
    let fdb = host(
        &d,
        &format!("bridge fdb show br hgbr0 | grep -i '{b_mac}' || true"),
    );
    assert!(
        fdb.lines().all(|l| l.contains(b_tap)),
        "the bridge learnt b's MAC on another port: {fdb}"
    );

    let still = guest(&d, "b", "echo alive");
    assert_eq!(stdout(&still).trim(), "alive", "b is disturbed");
    d.ok(&["vm", "rm", "--force", "a"]);
    d.ok(&["vm", "rm", "--force", "b"]);
    d.assert_nothing_left(1);
}
