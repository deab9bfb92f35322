//! Which DNS servers to hand to guests: the host's own, minus loopback stubs
//! (systemd-resolved's 127.0.0.53 is unreachable from a guest).

use std::net::Ipv4Addr;

/// IPv4 `nameserver` entries of a resolv.conf, in order, without 127.0.0.0/8,
/// 0.0.0.0 and duplicates.
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
