//! TCP connections made from inside the guest: an SSH `direct-tcpip`
//! channel (what `ssh -L` uses), so a server that listens only on the
//! guest's loopback is reachable too (`hangar proxy`, `hangar port-forward`).

use std::time::Duration;

use russh::client::Msg;
use russh::{ChannelOpenFailure, ChannelStream};

use crate::client::GuestClient;
use crate::error::GuestError;

/// One TCP connection inside the guest, as a byte stream.
pub type GuestTcpStream = ChannelStream<Msg>;

/// The guest agent gives its own connect 10 s; a little more here so its
/// answer, not this limit, is what the caller sees.
const OPEN_LIMIT: Duration = Duration::from_secs(12);

impl GuestClient {
    /// Connects to `host:port` as seen from inside the guest (normally
    /// 127.0.0.1). Fails with [`GuestError::TcpRefused`] when the guest's
    /// SSH server refuses the channel (nothing listens there, or it does
    /// not forward TCP at all), [`GuestError::TcpOpenTimedOut`] when it
    /// does not answer.
    pub async fn connect_tcp(&self, host: &str, port: u16) -> Result<GuestTcpStream, GuestError> {
        let open = self
            .handle
            .channel_open_direct_tcpip(host, u32::from(port), "127.0.0.1", 0);
        let channel = tokio::time::timeout(OPEN_LIMIT, open)
            .await
            .map_err(|_| GuestError::TcpOpenTimedOut {
                host: host.to_string(),
                port,
                after: OPEN_LIMIT,
            })?
            .map_err(|e| match e {
                russh::Error::ChannelOpenFailure(why) => GuestError::TcpRefused {
                    host: host.to_string(),
                    port,
                    reason: refusal(&why),
                },
                source => GuestError::Channel {
                    action: "open a direct-tcpip channel",
                    source,
                },
            })?;
        Ok(channel.into_stream())
    }
}

fn refusal(why: &ChannelOpenFailure) -> String {
    match why {
        ChannelOpenFailure::ConnectFailed => "connection refused or timed out".into(),
        ChannelOpenFailure::AdministrativelyProhibited => {
            "the guest's SSH server does not allow TCP forwarding".into()
        }
        ChannelOpenFailure::UnknownChannelType => {
            "the guest's SSH server does not support direct-tcpip".into()
        }
        ChannelOpenFailure::ResourceShortage => "the guest's SSH server is out of resources".into(),
        // The guest wrote this text: escaped before it reaches a terminal.
        ChannelOpenFailure::Other { code, reason } => format!(
            "refused with code {code}: {}",
            hangar_host::sanitize::escape_controls(reason.as_bytes())
        ),
    }
}
