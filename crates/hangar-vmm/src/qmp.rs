//! A minimal QMP client: JSON lines over a Unix socket. Each use opens a
//! fresh connection (QEMU's QMP server takes one client at a time), does
//! the capabilities handshake, runs commands, and closes.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::unix::OwnedWriteHalf;
use tokio::net::UnixStream;

use crate::error::VmmError;

/// Upper bound for one QMP reply, so a wedged QEMU cannot hang the daemon.
const REPLY_TIMEOUT: Duration = Duration::from_secs(5);

/// A connected QMP session in command mode.
pub struct Qmp {
    socket: PathBuf,
    lines: tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    writer: OwnedWriteHalf,
}

impl Qmp {
    /// Connects, reads the greeting and negotiates capabilities.
    pub async fn connect(socket: &Path) -> Result<Self, VmmError> {
        let stream = UnixStream::connect(socket)
            .await
            .map_err(|e| err(socket, "connect", "cannot connect", Some(e)))?;
        let (r, writer) = stream.into_split();
        let mut qmp = Qmp {
            socket: socket.to_path_buf(),
            lines: BufReader::new(r).lines(),
            writer,
        };
        let greeting = qmp.read_message("greeting").await?;
        if greeting.get("QMP").is_none() {
            return Err(err(
                socket,
                "greeting",
                &format!("unexpected greeting {greeting}"),
                None,
            ));
        }
        qmp.execute("qmp_capabilities", None).await?;
        Ok(qmp)
    }

    /// Runs `command` and returns its `return` value; a QMP `error` reply
    /// becomes an error carrying QEMU's description.
    pub async fn execute(
        &mut self,
        command: &str,
        arguments: Option<Value>,
    ) -> Result<Value, VmmError> {
        let mut msg = json!({ "execute": command });
        if let Some(a) = arguments {
            msg["arguments"] = a;
        }
        let mut line = msg.to_string();
        line.push('\n');
        self.writer
            .write_all(line.as_bytes())
            .await
            .map_err(|e| err(&self.socket, command, "cannot send", Some(e)))?;
        self.read_reply(command).await
    }

    /// Like [`Qmp::execute`], but passes `fd` along with the command
    /// (SCM_RIGHTS), as QMP `getfd` expects. QEMU keeps a copy of the fd
    /// under the name the command gives, for later commands of this
    /// connection.
    pub async fn execute_with_fd(
        &mut self,
        command: &str,
        arguments: Value,
        fd: std::os::fd::BorrowedFd<'_>,
    ) -> Result<Value, VmmError> {
        use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
        use std::os::fd::{AsRawFd, RawFd};
        let mut line = json!({ "execute": command, "arguments": arguments }).to_string();
        line.push('\n');
        let fds: [RawFd; 1] = [fd.as_raw_fd()];
        let stream: &UnixStream = self.writer.as_ref();
        loop {
            stream
                .writable()
                .await
                .map_err(|e| err(&self.socket, command, "cannot send", Some(e)))?;
            let sent = stream.try_io(tokio::io::Interest::WRITABLE, || {
                let iov = [std::io::IoSlice::new(line.as_bytes())];
                let cmsg = [ControlMessage::ScmRights(&fds)];
                sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)
                    .map_err(std::io::Error::from)
            });
            match sent {
                Ok(n) if n == line.len() => break,
                Ok(n) => {
                    return Err(err(
                        &self.socket,
                        command,
                        &format!("sent {n} of {} bytes", line.len()),
                        None,
                    ))
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(err(&self.socket, command, "cannot send", Some(e))),
            }
        }
        self.read_reply(command).await
    }

    /// Reads until the reply to `command`, skipping events.
    async fn read_reply(&mut self, command: &str) -> Result<Value, VmmError> {
        loop {
            let reply = self.read_message(command).await?;
            if let Some(ret) = reply.get("return") {
                return Ok(ret.clone());
            }
            if let Some(e) = reply.get("error") {
                let desc = e
                    .get("desc")
                    .and_then(Value::as_str)
                    .unwrap_or("unknown error");
                return Err(err(&self.socket, command, desc, None));
            }
            // Asynchronous events (`{"event": ...}`) are skipped.
        }
    }

    async fn read_message(&mut self, command: &str) -> Result<Value, VmmError> {
        let line = tokio::time::timeout(REPLY_TIMEOUT, self.lines.next_line())
            .await
            .map_err(|_| err(&self.socket, command, "no reply within 5 s", None))?
            .map_err(|e| err(&self.socket, command, "cannot read reply", Some(e)))?
            .ok_or_else(|| err(&self.socket, command, "QEMU closed the connection", None))?;
        serde_json::from_str(&line).map_err(|e| {
            err(
                &self.socket,
                command,
                &format!("invalid JSON {line:?}: {e}"),
                None,
            )
        })
    }
}

fn err(socket: &Path, command: &str, message: &str, source: Option<std::io::Error>) -> VmmError {
    VmmError::Qmp {
        command: command.to_string(),
        socket: socket.to_path_buf(),
        message: message.to_string(),
        source,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A fake QMP server that answers `qmp_capabilities`, then replies to
    /// the next command with `reply` (preceded by an event).
    async fn fake_server(path: &Path, reply: &'static str) -> tokio::task::JoinHandle<Vec<String>> {
        let listener = UnixListener::bind(path).unwrap();
        tokio::spawn(async move {
            let (s, _) = listener.accept().await.unwrap();
            let (r, mut w) = s.into_split();
            let mut lines = BufReader::new(r).lines();
            w.write_all(b"{\"QMP\": {\"version\": {}, \"capabilities\": []}}\n")
                .await
                .unwrap();
            let mut seen = vec![];
            let caps = lines.next_line().await.unwrap().unwrap();
            seen.push(caps);
            w.write_all(b"{\"return\": {}}\n").await.unwrap();
            if let Some(cmd) = lines.next_line().await.unwrap() {
                seen.push(cmd);
                w.write_all(b"{\"event\": \"POWERDOWN\", \"timestamp\": {}}\n")
                    .await
                    .unwrap();
                w.write_all(reply.as_bytes()).await.unwrap();
            }
            seen
        })
    }

    #[tokio::test]
    async fn execute_skips_events_and_returns_the_reply() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let server = fake_server(&sock, "{\"return\": {\"status\": \"running\"}}\n").await;
        let mut qmp = Qmp::connect(&sock).await.unwrap();
        let ret = qmp.execute("query-status", None).await.unwrap();
        assert_eq!(ret["status"], "running");
        let seen = server.await.unwrap();
        assert_eq!(seen[0], r#"{"execute":"qmp_capabilities"}"#);
        assert_eq!(seen[1], r#"{"execute":"query-status"}"#);
    }

    #[tokio::test]
    async fn execute_with_error_reply_returns_qemu_description() {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let _server = fake_server(
            &sock,
            "{\"error\": {\"class\": \"GenericError\", \"desc\": \"nope\"}}\n",
        )
        .await;
        let mut qmp = Qmp::connect(&sock).await.unwrap();
        let e = qmp.execute("system_powerdown", None).await.unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
    }

    #[tokio::test]
    async fn execute_with_fd_hands_the_fd_to_the_server() {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
        use std::io::{IoSliceMut, Write};
        use std::os::fd::{AsRawFd, FromRawFd};

        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("qmp.sock");
        let listener = std::os::unix::net::UnixListener::bind(&sock).unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.write_all(b"{\"QMP\": {}}\n").unwrap();
            let mut buf = [0u8; 256];
            let n = std::io::Read::read(&mut s, &mut buf).unwrap();
            assert!(String::from_utf8_lossy(&buf[..n]).contains("qmp_capabilities"));
            s.write_all(b"{\"return\": {}}\n").unwrap();
            let mut iov = [IoSliceMut::new(&mut buf)];
            let mut space = nix::cmsg_space!([std::os::fd::RawFd; 1]);
            let msg = recvmsg::<()>(s.as_raw_fd(), &mut iov, Some(&mut space), MsgFlags::empty())
                .unwrap();
            let mut fds = vec![];
            for c in msg.cmsgs().unwrap() {
                if let ControlMessageOwned::ScmRights(f) = c {
                    fds.extend(f);
                }
            }
            let n = msg.bytes;
            let line = String::from_utf8_lossy(&buf[..n]).to_string();
            // SAFETY: the fd was just received and is owned by nobody else.
            let mut f = unsafe { std::fs::File::from_raw_fd(fds[0]) };
            f.write_all(b"written by the server").unwrap();
            s.write_all(b"{\"return\": {}}\n").unwrap();
            (line, fds.len())
        });
        let file = dir.path().join("state");
        let out = std::fs::File::create(&file).unwrap();

        let mut qmp = Qmp::connect(&sock).await.unwrap();
        qmp.execute_with_fd(
            "getfd",
            json!({ "fdname": "x" }),
            std::os::fd::AsFd::as_fd(&out),
        )
        .await
        .unwrap();

        let (line, count) = server.join().unwrap();
        assert_eq!(
            line,
            "{\"arguments\":{\"fdname\":\"x\"},\"execute\":\"getfd\"}\n"
        );
        assert_eq!(count, 1);
        assert_eq!(std::fs::read(&file).unwrap(), b"written by the server");
    }
}
