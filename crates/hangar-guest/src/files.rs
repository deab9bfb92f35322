//! Files in a guest through its `sftp` subsystem (Hangar's guest agent
//! serves it on every image, with or without a shell): `hangar cp`.

use russh_sftp::client::fs::File;
use russh_sftp::client::SftpSession;
use russh_sftp::protocol::{FileAttributes, OpenFlags};
use tokio::io::{AsyncRead, AsyncWriteExt};

use crate::client::GuestClient;
use crate::error::GuestError;

/// What `stat` says of a guest path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GuestFileInfo {
    pub is_dir: bool,
    pub is_regular: bool,
    pub len: u64,
}

/// The guest writes sftp's error texts: they reach API errors and the
/// user's terminal only with control characters escaped.
fn sftp_err(action: &'static str) -> impl FnOnce(russh_sftp::client::error::Error) -> GuestError {
    move |e| GuestError::Sftp {
        action,
        message: hangar_host::sanitize::escape_controls(e.to_string().as_bytes()),
    }
}

/// Bytes handed to the sftp file per write call: several whole WRITE
/// requests at once. With russh-sftp's 16 requests in flight, at most
/// 16 x [`WRITE_PACKET`] + this is buffered per upload, whatever its size.
pub(crate) const COPY_BUFFER: usize = 256 << 10;
/// Largest sftp WRITE packet: 128 KiB of data (4x OpenSSH's 32 KiB, so the
/// guest's sftp-server handles a quarter of scp's requests for the same
/// bytes) plus room for the request's header and handle, which russh-sftp
/// counts in this limit; so a [`COPY_BUFFER`] goes out as two writes, not
/// three. Both the agent's and OpenSSH's sftp-server take packets up to
/// 256 KiB.
const WRITE_PACKET: u32 = (128 << 10) + 1024;

/// One sftp session on its own channel.
pub struct GuestFiles {
    sftp: SftpSession,
}

impl GuestClient {
    /// Opens an sftp session (as the connection's user, root).
    pub async fn files(&self) -> Result<GuestFiles, GuestError> {
        let channel = self.open_session().await?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|source| GuestError::Channel {
                action: "request the sftp subsystem",
                source,
            })?;
        let cfg = russh_sftp::client::Config {
            max_write_packet_len: WRITE_PACKET,
            ..Default::default()
        };
        let sftp = SftpSession::new_with_config(channel.into_stream(), cfg)
            .await
            .map_err(sftp_err("start sftp"))?;
        Ok(GuestFiles { sftp })
    }
}

impl GuestFiles {
    pub(crate) fn sftp(&self) -> &SftpSession {
        &self.sftp
    }

    /// Follows symlinks, like `cp` does for its source.
    pub async fn stat(&self, path: &str) -> Result<GuestFileInfo, GuestError> {
        let m = self.sftp.metadata(path).await.map_err(sftp_err("stat"))?;
        Ok(GuestFileInfo {
            is_dir: m.is_dir(),
            is_regular: m.is_regular(),
            len: m.size.unwrap_or(0),
        })
    }

    pub async fn open_read(&self, path: &str) -> Result<File, GuestError> {
        self.sftp.open(path).await.map_err(sftp_err("open"))
    }

    /// Writes `data` to `path` without ever leaving a half-written file
    /// there: into a new file beside it, then renamed over it. On any
    /// error the new file is removed and `path` is as it was.
    pub async fn write_replacing(
        &self,
        path: &str,
        mode: u32,
        data: &mut (impl AsyncRead + Unpin),
    ) -> Result<u64, GuestError> {
        let (dir, name) = match path.rsplit_once('/') {
            Some((d, n)) => (format!("{d}/"), n),
            None => (String::new(), path),
        };
        if name.is_empty() || name == "." || name == ".." {
            return Err(GuestError::Sftp {
                action: "write",
                message: format!("{path:?} does not name a file"),
            });
        }
        // EXCLUDE below makes a clash an error, never a shared file.
        let tmp = format!("{dir}.{name}.hangar-cp-{:08x}", unique_suffix());
        let attrs = FileAttributes {
            permissions: Some(mode & 0o7777),
            ..Default::default()
        };
        let mut file = self
            .sftp
            .open_with_flags_and_attributes(
                tmp.clone(),
                OpenFlags::CREATE | OpenFlags::EXCLUDE | OpenFlags::WRITE | OpenFlags::TRUNCATE,
                attrs,
            )
            .await
            .map_err(sftp_err("create"))?;
        let written = async {
            // Whole sftp writes at a time: tokio::io::copy's 8 KiB buffer
            // made every WRITE request 8 KiB, four times the requests (and
            // guest-side work) of OpenSSH's 32 KiB.
            let mut r = tokio::io::BufReader::with_capacity(COPY_BUFFER, data);
            let n = tokio::io::copy_buf(&mut r, &mut file).await?;
            // fsync, then close: the rename below publishes complete data.
            file.flush().await?;
            file.shutdown().await?;
            tracing::debug!(bytes = n, "sftp upload written");
            Ok::<u64, std::io::Error>(n)
        }
        .await;
        let n = match written {
            Ok(n) => n,
            Err(e) => {
                let _ = self.sftp.remove_file(tmp.clone()).await;
                return Err(GuestError::Sftp {
                    action: "write",
                    message: e.to_string(),
                });
            }
        };
        // SFTP v3 rename does not replace: remove the old file first (the
        // new one is complete by now).
        if self.sftp.rename(tmp.clone(), path).await.is_err() {
            let replaced = match self.sftp.remove_file(path).await {
                Ok(()) => self.sftp.rename(tmp.clone(), path).await,
                Err(e) => Err(e),
            };
            if let Err(e) = replaced {
                let _ = self.sftp.remove_file(tmp).await;
                return Err(sftp_err("rename into place")(e));
            }
        }
        Ok(n)
    }
}

pub(crate) fn unique_suffix() -> u32 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    nanos ^ std::process::id().rotate_left(16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_guests_sftp_error_text_cannot_drive_the_users_terminal() {
        let status = russh_sftp::protocol::Status {
            id: 1,
            status_code: russh_sftp::protocol::StatusCode::Failure,
            error_message: "no\x1b]0;pwned\x07\x1b[2J".into(),
            language_tag: "en".into(),
        };
        let err = sftp_err("open")(status.into());
        let text = err.to_string();
        assert!(!text.contains('\x1b') && !text.contains('\x07'), "{text:?}");
        assert!(text.contains("pwned"), "{text:?}");
    }
}
