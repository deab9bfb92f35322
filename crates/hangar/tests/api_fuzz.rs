//! API fuzz: random and mutated raw HTTP requests (methods, paths with
//! `..` and escapes, huge and contradictory headers, bad JSON, bad chunked
//! encoding, huge Content-Length, plain garbage) sent to a real daemon over
//! its socket for a bounded time. Afterwards the daemon must be alive,
//! answer `vm ls`, have logged no panic, and have created nothing.
//!
//! `HANGAR_API_FUZZ_SECS` sets the duration (default 30), and
//! `HANGAR_API_FUZZ_SEED` replays a run (the seed is printed at the start).
//! Request bodies never name a real image or an existing file, so even a
//! well-formed request cannot start real work.

#![allow(clippy::unwrap_used)]

mod common;

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use common::TestDaemon;

/// splitmix64: small, seedable, good enough to pick cases.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn pick<'a, T: ?Sized>(&mut self, items: &[&'a T]) -> &'a T {
        items[self.below(items.len())]
    }
    fn chance(&mut self, one_in: usize) -> bool {
        self.below(one_in) == 0
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

const METHODS: &[&str] = &[
    "GET", "POST", "DELETE", "PUT", "PATCH", "HEAD", "OPTIONS", "TRACE", "CONNECT", "get", "G\0T",
    "",
];

const PATHS: &[&str] = &[
    "/v1/vms",
    "/v1/vms/NAME",
    "/v1/vms/NAME/start",
    "/v1/vms/NAME/stop",
    "/v1/vms/NAME/restart",
    "/v1/vms/NAME/exec",
    "/v1/vms/NAME/console",
    "/v1/images",
    "/v1/images/catalog",
    "/v1/images/pull",
    "/v1/images/register",
    "/v1/images/NAME",
    "/v1/operations",
    "/v1/operations/NAME",
    "/v1/operations/NAME/cancel",
    "/v1/info",
    "/v1/openapi.json",
    "/",
    "*",
    "/v1/../../etc/shadow",
    "//v1//vms",
    "/v1/vms/%2e%2e/%2e%2e/etc/passwd",
];

const NAMES: &[&str] = &[
    "..",
    "../../etc/shadow",
    "%2e%2e%2f",
    "a%00b",
    "nosuch",
    "%ff%fe",
    "x y",
    "-rf",
    "ünïcødé",
    "LONG",
];

const QUERIES: &[&str] = &[
    "",
    "?wait_ms=18446744073709551615",
    "?wait_ms=-1",
    "?wait_ms=abc",
    "?wait_ms=1500",
    "?force=true",
    "?force=maybe",
    "?lines=99999999999",
    "?tail=-5&follow=1",
    "?&&&==",
];

/// A name that is never a real image, VM or file.
fn bogus_name(rng: &mut Rng) -> String {
    match rng.pick(NAMES) {
        "LONG" => "n".repeat(1 + rng.below(70_000)),
        n => n.to_string(),
    }
}

fn json_body(rng: &mut Rng) -> Vec<u8> {
    let name = serde_json::to_string(&bogus_name(rng)).unwrap();
    let image = serde_json::to_string(&format!("nosuch-image-{}", bogus_name(rng))).unwrap();
    let body = match rng.below(10) {
        0 => format!(
            r#"{{"name":{name},"image":{image},"cpus":{},"memory_mib":{},"disk_bytes":{}}}"#,
            rng.next() as u32,
            rng.next() as u32,
            rng.next()
        ),
        1 => format!(
            r#"{{"name":{name},"image":{image},"authorized_keys":["{}"]}}"#,
            "A".repeat(rng.below(100_000))
        ),
        // Every body that names something names no real image: the
        // default image (a catalog one) would start a real pull.
        2 => format!(r#"{{"name":{image},"image":{image}}}"#),
        3 => format!(
            r#"{{"name":{name},"kernel":"/nonexistent/k","rootfs":"/nonexistent/r","initrd":"/nonexistent/i"}}"#
        ),
        4 => format!(r#"{{"command":["sh","-c",{name}]}}"#),
        5 => "[".repeat(rng.below(100_000)),
        6 => format!(r#"{{"name":{name}"#),
        7 => r#"{"name":null,"image":17,"cpus":"two"}"#.to_string(),
        8 => "{}".to_string(),
        _ => {
            let n = rng.below(4096);
            return rng.bytes(n);
        }
    };
    body.into_bytes()
}

/// One request, as raw bytes.
fn request(rng: &mut Rng) -> Vec<u8> {
    if rng.chance(20) {
        let n = rng.below(8192);
        return rng.bytes(n);
    }
    let method = rng.pick(METHODS);
    let path = rng.pick(PATHS).replace("NAME", &bogus_name(rng));
    let query = rng.pick(QUERIES);
    let version = if rng.chance(15) {
        rng.pick(&["HTTP/1.0", "HTTP/2.0", "HTTP/9", "", "HTTP/1.1 extra"])
    } else {
        "HTTP/1.1"
    };
    let mut head = format!("{method} {path}{query} {version}\r\n");
    if !rng.chance(10) {
        head.push_str("host: hangar\r\n");
    }
    let mut body = if rng.chance(3) {
        Vec::new()
    } else {
        json_body(rng)
    };
    if rng.chance(2) {
        head.push_str("content-type: application/json\r\n");
    }
    match rng.below(8) {
        0 => head.push_str(&format!("content-length: {}\r\n", rng.next())),
        1 => head.push_str("content-length: -1\r\n"),
        2 => head.push_str(&format!(
            "content-length: {}\r\ncontent-length: 3\r\n",
            body.len()
        )),
        3 => {
            head.push_str("transfer-encoding: chunked\r\n");
            let mut chunked = match rng.below(3) {
                0 => format!("{:x}\r\n", body.len()).into_bytes(),
                1 => b"fffffffffffffffffff\r\n".to_vec(),
                _ => b"zz;ext=1\r\n".to_vec(),
            };
            chunked.extend_from_slice(&body);
            if rng.chance(2) {
                chunked.extend_from_slice(b"\r\n0\r\n\r\n");
            }
            body = chunked;
        }
        4 => head.push_str("transfer-encoding: chunked\r\ncontent-length: 5\r\n"),
        5 => {}
        _ => head.push_str(&format!("content-length: {}\r\n", body.len())),
    }
    match rng.below(12) {
        0 => head.push_str(&format!("x-huge: {}\r\n", "h".repeat(rng.below(200_000)))),
        1 => {
            for i in 0..rng.below(500) {
                head.push_str(&format!("x-many-{i}: v\r\n"));
            }
        }
        2 => head.push_str("connection: upgrade\r\nupgrade: hangar-exec\r\n"),
        3 => head.push_str("bad header line without colon\r\n"),
        4 => head.push_str("expect: 100-continue\r\n"),
        _ => {}
    }
    if rng.chance(2) {
        head.push_str("connection: close\r\n");
    }
    let mut raw = head.into_bytes();
    if !rng.chance(15) {
        raw.extend_from_slice(b"\r\n");
    }
    raw.extend_from_slice(&body);
    if rng.chance(10) {
        // Cut short anywhere.
        raw.truncate(rng.below(raw.len() + 1));
    }
    raw
}

/// Sends one request and reads a little of the answer; errors are the
/// daemon's right (it may close on us).
fn send(d: &TestDaemon, raw: &[u8]) -> bool {
    let Ok(mut s) = UnixStream::connect(d.socket()) else {
        return false;
    };
    s.set_write_timeout(Some(Duration::from_secs(2))).unwrap();
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let _ = s.write_all(raw);
    let mut buf = [0u8; 512];
    let _ = s.read(&mut buf);
    true
}

#[test]
#[ignore = "needs root: runs the daemon"]
fn api_fuzz_random_raw_requests_do_not_crash_the_daemon() {
    let secs: u64 = std::env::var("HANGAR_API_FUZZ_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(30);
    let seed: u64 = std::env::var("HANGAR_API_FUZZ_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("api fuzz: {secs} s, HANGAR_API_FUZZ_SEED={seed}");
    let mut d = TestDaemon::start("apifuzz");
    let mut rng = Rng(seed);
    let began = Instant::now();
    let (mut sent, mut unconnected) = (0u64, 0u64);
    while began.elapsed() < Duration::from_secs(secs) {
        let raw = request(&mut rng);
        if !send(&d, &raw) {
            unconnected += 1;
        }
        sent += 1;
        if sent % 200 == 0 {
            if let Some(Ok(Some(st))) = d.child.as_mut().map(|c| c.try_wait()) {
                panic!(
                    "the daemon exited ({st}) after {sent} requests (seed {seed}); last request: {:?}\n{}",
                    String::from_utf8_lossy(&raw[..raw.len().min(300)]),
                    common::tail(&d.log(), 30)
                );
            }
        }
    }
    eprintln!("api fuzz: {sent} requests, {unconnected} could not connect");
    assert!(
        unconnected * 100 <= sent,
        "{unconnected} of {sent} connections failed (seed {seed})"
    );
    let alive = d.child.as_mut().map(|c| c.try_wait().unwrap().is_none());
    assert_eq!(alive, Some(true), "the daemon died (seed {seed})");
    assert_eq!(d.ok(&["--json", "vm", "ls"]).trim(), "[]", "seed {seed}");
    assert_eq!(d.ok(&["--json", "image", "ls"]).trim(), "[]", "seed {seed}");
    assert!(d.vm_dirs().is_empty(), "VM dirs were made (seed {seed})");
    let log = d.log();
    assert!(
        !log.contains("panicked"),
        "the daemon panicked (seed {seed}):\n{}",
        common::tail(&log, 40)
    );
}
