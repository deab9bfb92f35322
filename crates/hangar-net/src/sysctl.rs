//! IPv6 off on the bridge and the TAPs: guests are IPv4-only, and an
//! interface with IPv6 on would give the host a link-local address guests
//! could reach, and accept router advertisements a guest could send.
//! Written through /proc/sys from a thread inside the configured namespace,
//! so only that namespace's interfaces are touched.

use std::path::Path;

use crate::{netns, NetError};

/// The sysctls (under `net/ipv6/conf/<if>/`) set on our interfaces.
pub const IPV6_OFF: &[(&str, &str)] =
    &[("accept_ra", "0"), ("autoconf", "0"), ("disable_ipv6", "1")];

/// Sets [`IPV6_OFF`] on `ifname`. A kernel without IPv6 has nothing to
/// turn off.
pub(crate) async fn ipv6_off(ns: Option<&str>, ifname: &str) -> Result<(), NetError> {
    let ns = ns.map(str::to_string);
    let dir = format!("/proc/sys/net/ipv6/conf/{ifname}");
    let action = format!("turn IPv6 off on {ifname} ({dir})");
    let result = tokio::task::spawn_blocking(move || {
        netns::run_in(ns.as_deref(), move || {
            if !Path::new("/proc/sys/net/ipv6").exists() {
                return Ok(());
            }
            for (key, value) in IPV6_OFF {
                std::fs::write(Path::new(&dir).join(key), format!("{value}\n"))?;
            }
            Ok(())
        })
    })
    .await
    .map_err(|e| std::io::Error::other(format!("sysctl task failed: {e}")));
    result
        .and_then(|r| r)
        .map_err(|source| NetError::Io { action, source })
}
