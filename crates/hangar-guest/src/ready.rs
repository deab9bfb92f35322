//! Readiness: a guest is ready when an SSH handshake and auth succeed, not
//! when a port merely accepts connections (sshd may accept before it can
//! serve, and a port probe says nothing about keys).

use std::time::Duration;

use tokio::time::{sleep, Instant};

use crate::client::{connect_within, ConnectFn, GuestClient, GuestTarget, TCP_ATTEMPT_LIMIT};
use crate::error::{chain_to_string, GuestError};
use crate::keys::DaemonKey;

/// First pause between attempts; guests boot in seconds, so detect fast.
const FIRST_RETRY: Duration = Duration::from_millis(50);
/// Longest pause between attempts.
const MAX_RETRY: Duration = Duration::from_millis(250);
/// Pause after a refused connection: the guest is up and sshd is about to
/// listen, and a refusal costs the guest one RST, so poll closely.
const REFUSED_RETRY: Duration = Duration::from_millis(25);
const FIRST_TCP_LIMIT: Duration = Duration::from_millis(300);

/// Retries connect+handshake+auth until it works or the deadline passes.
/// Readiness = SSH handshake and auth succeed (not just a port probe). The
/// timeout error says how long it waited and the last error seen; the
/// caller adds the serial log path.
///
/// Refused or reset connections are normal while the guest boots and are
/// retried; a host key mismatch is returned at once.
pub async fn wait_ready(
    connect: &ConnectFn,
    target: &GuestTarget,
    key: &DaemonKey,
    deadline: Duration,
) -> Result<GuestClient, GuestError> {
    let started = Instant::now();
    let mut pause = FIRST_RETRY;
    let mut attempts: u32 = 0;
    // A connect sent before the guest has its address waits for ARP to
    // give up (seconds); start with a short TCP limit and widen it only
    // when attempts keep timing out (a slow, loaded guest).
    let mut tcp_limit = FIRST_TCP_LIMIT;
    let mut last_error = String::from("no attempt was made (deadline was zero)");
    loop {
        let remaining = deadline.saturating_sub(started.elapsed());
        if remaining.is_zero() {
            return Err(GuestError::NotReady {
                addr: target.addr,
                waited: started.elapsed(),
                attempts,
                last_error,
            });
        }
        attempts += 1;
        let refused = match connect_within(connect, target, key, tcp_limit, remaining).await {
            Ok(client) => {
                tracing::debug!(addr = %target.addr, attempts, elapsed = ?started.elapsed(), "guest SSH ready");
                return Ok(client);
            }
            Err(err) if err.is_permanent() => return Err(err),
            Err(err) => {
                if matches!(err, GuestError::ConnectTimeout { .. }) {
                    tcp_limit = (tcp_limit * 2).min(TCP_ATTEMPT_LIMIT);
                }
                last_error = chain_to_string(&err);
                tracing::trace!(addr = %target.addr, attempts, error = %last_error, "guest SSH not ready yet");
                err.is_connection_refused()
            }
        };
        let remaining = deadline.saturating_sub(started.elapsed());
        if refused {
            sleep(REFUSED_RETRY.min(remaining)).await;
        } else {
            sleep(pause.min(remaining)).await;
            pause = (pause * 2).min(MAX_RETRY);
        }
    }
}
