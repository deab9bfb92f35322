//! The client side of the guest agent's `hangar-session` subsystem
//! (docs/api.md, "Sessions in the guest agent"): one channel per request,
//! a JSON request line, a JSON reply line, then for `attach` and `logs`
//! the session's terminal bytes until an exit status.

use std::sync::Arc;

use bytes::Bytes;
use hangar_session_proto::{Reply, Request, SessionInfo, SUBSYSTEM};
use russh::client::Msg;
use russh::{ChannelMsg, ChannelReadHalf, ChannelWriteHalf};
use serde::de::DeserializeOwned;

use crate::client::GuestClient;
use crate::error::GuestError;

/// Longest reply line accepted from the guest.
const MAX_REPLY_LINE: usize = 4 << 20;

/// What an open `attach` or `logs` stream delivers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionEvent {
    /// Terminal output.
    Output(Bytes),
    /// The session's command is done (its exit status; 0 for the end of a
    /// `logs` stream).
    Exit(u32),
    /// The channel closed without a status (the connection dropped).
    Closed,
}

/// An `attach` or `logs` stream. Dropping it closes the channel, which
/// for `attach` detaches (the session goes on).
pub struct SessionStream {
    read: ChannelReadHalf,
    write: Arc<ChannelWriteHalf<Msg>>,
    /// Bytes that arrived with the reply line.
    pending: Option<Bytes>,
    exit: Option<u32>,
}

impl GuestClient {
    /// A one-shot request (`start`, `list`, `info`, `send`, `stop`,
    /// `remove`): its reply's value.
    pub async fn session_call<T: DeserializeOwned>(&self, req: &Request) -> Result<T, GuestError> {
        let (read, write) = self.session_open(req).await?;
        let reply = read_reply_value::<T>(read).await;
        let _ = write.close().await;
        reply
    }

    /// `attach` or `logs`: the session as it is, and the stream.
    pub async fn session_stream(
        &self,
        req: &Request,
    ) -> Result<(SessionInfo, SessionStream), GuestError> {
        let (mut read, write) = self.session_open(req).await?;
        let (info, rest) = read_line(&mut read).await?;
        let info = parse_reply::<SessionInfo>(&info)?;
        Ok((
            info,
            SessionStream {
                read,
                write: Arc::new(write),
                pending: (!rest.is_empty()).then(|| Bytes::from(rest)),
                exit: None,
            },
        ))
    }

    async fn session_open(
        &self,
        req: &Request,
    ) -> Result<(ChannelReadHalf, ChannelWriteHalf<Msg>), GuestError> {
        let channel = self.open_session().await?;
        let (mut read, write) = channel.split();
        write
            .request_subsystem(true, SUBSYSTEM)
            .await
            .map_err(|source| GuestError::Channel {
                action: "request the session subsystem",
                source,
            })?;
        loop {
            match read.wait().await {
                Some(ChannelMsg::Success) => break,
                Some(ChannelMsg::Failure) => {
                    let _ = write.close().await;
                    return Err(GuestError::SessionsUnsupported);
                }
                Some(ChannelMsg::Close) | None => return Err(GuestError::NoExitStatus),
                Some(_) => {}
            }
        }
        let mut line = serde_json::to_vec(req)
            .map_err(|e| GuestError::SessionProtocol(format!("cannot encode the request: {e}")))?;
        line.push(b'\n');
        write
            .data_bytes(Bytes::from(line))
            .await
            .map_err(|source| GuestError::Channel {
                action: "send the session request",
                source,
            })?;
        Ok((read, write))
    }
}

async fn read_reply_value<T: DeserializeOwned>(mut read: ChannelReadHalf) -> Result<T, GuestError> {
    let (line, _) = read_line(&mut read).await?;
    parse_reply(&line)
}

fn parse_reply<T: DeserializeOwned>(line: &[u8]) -> Result<T, GuestError> {
    match serde_json::from_slice::<Reply<T>>(line) {
        Ok(Reply::Ok(v)) => Ok(v),
        Ok(Reply::Error(e)) => Err(GuestError::Session(e)),
        Err(e) => Err(GuestError::SessionProtocol(e.to_string())),
    }
}

/// The reply line and whatever followed it in the same data message.
async fn read_line(read: &mut ChannelReadHalf) -> Result<(Vec<u8>, Vec<u8>), GuestError> {
    let mut buf = Vec::new();
    loop {
        match read.wait().await {
            Some(ChannelMsg::Data { data }) => {
                buf.extend_from_slice(&data);
                if let Some(end) = buf.iter().position(|b| *b == b'\n') {
                    let rest = buf.split_off(end + 1);
                    buf.truncate(end);
                    return Ok((buf, rest));
                }
                if buf.len() > MAX_REPLY_LINE {
                    return Err(GuestError::SessionProtocol(format!(
                        "reply line longer than {MAX_REPLY_LINE} bytes"
                    )));
                }
            }
            Some(ChannelMsg::Close) | Some(ChannelMsg::Eof) | None => {
                return Err(GuestError::SessionProtocol(
                    "the channel ended before the reply".into(),
                ))
            }
            Some(_) => {}
        }
    }
}

impl SessionStream {
    /// The next thing the guest sent. After `Exit` or `Closed` it keeps
    /// returning `Closed`.
    pub async fn next(&mut self) -> SessionEvent {
        if let Some(b) = self.pending.take() {
            return SessionEvent::Output(b);
        }
        loop {
            match self.read.wait().await {
                Some(ChannelMsg::Data { data }) => return SessionEvent::Output(data),
                Some(ChannelMsg::ExitStatus { exit_status }) => self.exit = Some(exit_status),
                Some(ChannelMsg::Eof) => {}
                Some(ChannelMsg::Close) | None => {
                    return match self.exit.take() {
                        Some(code) => SessionEvent::Exit(code),
                        None => SessionEvent::Closed,
                    }
                }
                Some(_) => {}
            }
        }
    }

    /// A handle that types into the session and resizes it, usable while
    /// another task reads with [`SessionStream::next`].
    pub fn input(&self) -> SessionInput {
        SessionInput(Arc::clone(&self.write))
    }
}

#[derive(Clone)]
pub struct SessionInput(Arc<ChannelWriteHalf<Msg>>);

impl SessionInput {
    pub async fn send(&self, data: Vec<u8>) -> Result<(), GuestError> {
        self.0
            .data_bytes(Bytes::from(data))
            .await
            .map_err(|source| GuestError::Channel {
                action: "type into the session",
                source,
            })
    }

    pub async fn resize(&self, cols: u16, rows: u16) -> Result<(), GuestError> {
        self.0
            .window_change(cols.into(), rows.into(), 0, 0)
            .await
            .map_err(|source| GuestError::Channel {
                action: "resize the session",
                source,
            })
    }

    /// Detaches (closes the channel); the session goes on.
    pub async fn close(&self) {
        let _ = self.0.close().await;
    }
}
