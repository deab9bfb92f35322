//! Asking a guest to power off cleanly (sync, unmount, ACPI off).

use russh::ChannelMsg;

use crate::client::GuestClient;
use crate::error::GuestError;

/// The guest agent's power-off subsystem (docs/api.md, "Guest agent
/// protocol"): it works on images without a shell or `poweroff`.
pub const POWEROFF_SUBSYSTEM: &str = "hangar-poweroff";

impl GuestClient {
    /// Asks the guest to power off and returns once it has accepted. The
    /// guest agent takes the `hangar-poweroff` subsystem; a server that
    /// refuses it (an image's own sshd) gets `poweroff` run by its shell.
    pub async fn request_power_off(&self) -> Result<(), GuestError> {
        let channel = self.open_session().await?;
        let (mut read, write) = channel.split();
        write
            .request_subsystem(true, POWEROFF_SUBSYSTEM)
            .await
            .map_err(|source| GuestError::Channel {
                action: "request power-off",
                source,
            })?;
        loop {
            match read.wait().await {
                Some(ChannelMsg::Success) => return Ok(()),
                Some(ChannelMsg::Failure) => break,
                // Going down already.
                Some(ChannelMsg::Close) | None => return Ok(()),
                Some(_) => {}
            }
        }
        let _ = write.close().await;
        self.run("nohup poweroff >/dev/null 2>&1 &")
            .await
            .map(|_| ())
    }
}
