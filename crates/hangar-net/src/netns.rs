//! Network namespaces: making sure one exists, and running code inside it.
//!
//! A socket belongs to the namespace of the thread that created it, for its
//! whole life. So to talk to guests that live in a dedicated namespace, the
//! daemon creates sockets on a short-lived thread that has `setns()`'d into
//! it, then uses them from anywhere (tokio included).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use nix::sched::CloneFlags;

use crate::cmd::{self, Ip};
use crate::NetError;

/// Where `ip netns` keeps named namespaces.
pub fn path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

/// Creates the namespace unless it exists; returns whether it was created.
pub(crate) async fn ensure(name: &str) -> Result<bool, NetError> {
    if path(name).exists() {
        return Ok(false);
    }
    cmd::run(
        &[
            "ip".to_string(),
            "netns".to_string(),
            "add".to_string(),
            name.to_string(),
        ],
        None,
    )
    .await?;
    tracing::info!(netns = name, "network namespace created");
    Ok(true)
}

/// Deletes a namespace (interfaces inside it go with it).
pub(crate) async fn delete(name: &str) -> Result<(), NetError> {
    cmd::run(
        &[
            "ip".to_string(),
            "netns".to_string(),
            "del".to_string(),
            name.to_string(),
        ],
        None,
    )
    .await?;
    Ok(())
}

/// Brings up `lo` inside the namespace (a fresh namespace has it down).
pub(crate) async fn loopback_up(name: &str) -> Result<(), NetError> {
    Ip::new(Some(name))
        .run(&["link", "set", "lo", "up"])
        .await?;
    Ok(())
}

/// Runs `f` on a fresh thread that has entered namespace `name` (or the
/// caller's namespace when `None`) and waits for it. File descriptors `f`
/// creates (sockets, TAP fds) stay in that namespace. Blocking.
pub fn run_in<T, F>(name: Option<&str>, f: F) -> std::io::Result<T>
where
    T: Send + 'static,
    F: FnOnce() -> std::io::Result<T> + Send + 'static,
{
    let ns_path = name.map(path);
    let handle = std::thread::Builder::new()
        .name("hangar-netns".to_string())
        .spawn(move || -> std::io::Result<T> {
            if let Some(p) = ns_path {
                let file = std::fs::File::open(&p).map_err(|e| {
                    std::io::Error::new(
                        e.kind(),
                        format!("open network namespace {}: {e}", p.display()),
                    )
                })?;
                nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(std::io::Error::from)?;
            }
            f()
        })?;
    handle.join().map_err(|_| {
        std::io::Error::other("thread running inside the network namespace panicked")
    })?
}

/// Connects to `addr` from inside namespace `name` (or from here when `None`)
/// with a timeout, returning a tokio stream.
pub async fn connect_tcp(
    name: Option<&str>,
    addr: SocketAddr,
    timeout: Duration,
) -> std::io::Result<tokio::net::TcpStream> {
    let Some(name) = name else {
        return match tokio::time::timeout(timeout, tokio::net::TcpStream::connect(addr)).await {
            Ok(res) => res,
            Err(_) => Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("connect to {addr} timed out after {timeout:?}"),
            )),
        };
    };
    let name = name.to_string();
    let std_stream = tokio::task::spawn_blocking(move || {
        run_in(Some(&name), move || {
            let s = std::net::TcpStream::connect_timeout(&addr, timeout)?;
            s.set_nonblocking(true)?;
            Ok(s)
        })
    })
    .await
    .map_err(|e| std::io::Error::other(format!("connect task failed: {e}")))??;
    tokio::net::TcpStream::from_std(std_stream)
}
