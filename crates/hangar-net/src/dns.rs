//! Which DNS servers to hand to guests: the host's own, minus loopback stubs
//! (systemd-resolved's 127.0.0.53 is unreachable from a guest).

use std::net::Ipv4Addr;

/// IPv4 `nameserver` entries of a resolv.conf, in order, without 127.0.0.0/8,
/// 0.0.0.0 and duplicates.
/// The host's resolver configuration.
pub const RESOLV_CONF: &str = "/etc/resolv.conf";
/// With systemd-resolved, /etc/resolv.conf names only its loopback stub
/// (127.0.0.53), which guests cannot reach; this file lists the upstream
/// servers it forwards to.
pub const SYSTEMD_RESOLVED_UPSTREAM: &str = "/run/systemd/resolve/resolv.conf";

/// Nameservers guests can use: those of the first file in `files` that
/// names any non-loopback server.
pub fn host_dns_servers(files: &[&str]) -> Vec<Ipv4Addr> {
    for f in files {
        match std::fs::read_to_string(f) {
            Ok(text) => {
                let servers = parse_resolv_conf(&text);
                if !servers.is_empty() {
                    return servers;
                }
            }
            Err(e) => tracing::debug!(file = f, error = %e, "cannot read resolver config"),
        }
    }
    tracing::warn!("no usable DNS server in {files:?}; guests get none");
    Vec::new()
}

pub fn parse_resolv_conf(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("").trim();
        let mut words = line.split_whitespace();
        if words.next() != Some("nameserver") {
            continue;
        }
        let Some(Ok(ip)) = words.next().map(str::parse::<Ipv4Addr>) else {
            continue;
        };
        if ip.is_loopback() || ip.is_unspecified() || out.contains(&ip) {
            continue;
        }
        out.push(ip);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_skips_loopback_stub() {
        let text = "nameserver 127.0.0.53\nnameserver 10.255.255.53\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![Ipv4Addr::new(10, 255, 255, 53)]
        );
    }

    #[test]
    fn parse_ignores_ipv6_comments_and_options() {
        let text = "# generated\nsearch example.org\noptions edns0\nnameserver ::1\nnameserver 2001:db8::1\n; nameserver 9.9.9.9\nnameserver 1.1.1.1 # cloudflare\n";
        assert_eq!(parse_resolv_conf(text), vec![Ipv4Addr::new(1, 1, 1, 1)]);
    }

    #[test]
    fn parse_keeps_order_and_drops_duplicates() {
        let text = "nameserver 8.8.8.8\nnameserver 1.1.1.1\nnameserver 8.8.8.8\n";
        assert_eq!(
            parse_resolv_conf(text),
            vec![Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(1, 1, 1, 1)]
        );
    }

    #[test]
    fn parse_of_empty_file_is_empty() {
        assert!(parse_resolv_conf("").is_empty());
    }
}

#[cfg(test)]
mod fallback_tests {
    use super::host_dns_servers;

    #[test]
    fn stub_only_resolv_conf_falls_back_to_the_upstream_file() {
        let dir = tempfile::tempdir().unwrap();
        let stub = dir.path().join("resolv.conf");
        let upstream = dir.path().join("upstream.conf");
        std::fs::write(&stub, "nameserver 127.0.0.53\n").unwrap();
        std::fs::write(&upstream, "nameserver 192.0.2.53\n").unwrap();
        let files = [stub.to_str().unwrap(), upstream.to_str().unwrap()];
        assert_eq!(
            host_dns_servers(&files),
            vec!["192.0.2.53".parse::<std::net::Ipv4Addr>().unwrap()]
        );
    }

    #[test]
    fn first_file_with_usable_servers_wins_and_missing_files_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let main = dir.path().join("resolv.conf");
        std::fs::write(&main, "nameserver 198.51.100.1\n").unwrap();
        let files = ["/nonexistent/resolv.conf", main.to_str().unwrap()];
        assert_eq!(
            host_dns_servers(&files),
            vec!["198.51.100.1".parse::<std::net::Ipv4Addr>().unwrap()]
        );
    }
}
