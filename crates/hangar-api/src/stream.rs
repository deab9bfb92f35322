//! The framed byte stream used after `POST /v1/vms/{name}/exec` upgrades the
//! connection (`Upgrade: hangar-exec`). Each frame is one type byte, a
//! big-endian u32 length and the payload. Client → daemon: `Stdin`,
//! `StdinEof`, `Resize`. Daemon → client: `Stdout`, `Stderr`, `Exit`,
//! `Error`.

/// The `Upgrade` protocol token.
pub const UPGRADE_PROTOCOL: &str = "hangar-exec";
/// The `Upgrade` protocol of `POST /v1/vms/{name}/tcp/{port}`: after `101`
/// the connection carries the bytes of one TCP connection to the guest.
pub const TCP_UPGRADE_PROTOCOL: &str = "hangar-tcp";

/// Largest payload accepted in one frame.
pub const MAX_FRAME: usize = 1 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Stdin(Vec<u8>),
    StdinEof,
    /// Terminal size: columns, rows.
    Resize(u16, u16),
    Stdout(Vec<u8>),
    Stderr(Vec<u8>),
    /// Exit status of the remote command (128+signal when killed).
    Exit(i32),
    /// The stream failed; a message a person can act on.
    Error(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FrameError {
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("frame of {0} bytes exceeds the {MAX_FRAME} byte limit")]
    TooLarge(usize),
    #[error("frame of type {0} has a malformed payload")]
    Malformed(u8),
}

impl Frame {
    fn type_byte(&self) -> u8 {
        match self {
            Frame::Stdin(_) => 0,
            Frame::StdinEof => 1,
            Frame::Resize(..) => 2,
            Frame::Stdout(_) => 3,
            Frame::Stderr(_) => 4,
            Frame::Exit(_) => 5,
            Frame::Error(_) => 6,
        }
    }

    /// Serializes the frame with its 5-byte header.
    pub fn encode(&self) -> Vec<u8> {
        let payload: Vec<u8> = match self {
            Frame::Stdin(b) | Frame::Stdout(b) | Frame::Stderr(b) => b.clone(),
            Frame::StdinEof => Vec::new(),
            Frame::Resize(c, r) => {
                let mut v = c.to_be_bytes().to_vec();
                v.extend_from_slice(&r.to_be_bytes());
                v
            }
            Frame::Exit(code) => code.to_be_bytes().to_vec(),
            Frame::Error(m) => m.as_bytes().to_vec(),
        };
        let mut out = Vec::with_capacity(5 + payload.len());
        out.push(self.type_byte());
        out.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        out.extend_from_slice(&payload);
        out
    }

    /// Parses one frame from the front of `buf`. Returns the frame and the
    /// bytes it used, or `None` when `buf` does not yet hold a whole frame.
    pub fn decode(buf: &[u8]) -> Result<Option<(Frame, usize)>, FrameError> {
        if buf.len() < 5 {
            return Ok(None);
        }
        let ty = buf[0];
        let len = u32::from_be_bytes([buf[1], buf[2], buf[3], buf[4]]) as usize;
        if len > MAX_FRAME {
            return Err(FrameError::TooLarge(len));
        }
        if buf.len() < 5 + len {
            return Ok(None);
        }
        let p = &buf[5..5 + len];
        let frame = match ty {
            0 => Frame::Stdin(p.to_vec()),
            1 => Frame::StdinEof,
            2 => {
                if p.len() != 4 {
                    return Err(FrameError::Malformed(ty));
                }
                Frame::Resize(
                    u16::from_be_bytes([p[0], p[1]]),
                    u16::from_be_bytes([p[2], p[3]]),
                )
            }
            3 => Frame::Stdout(p.to_vec()),
            4 => Frame::Stderr(p.to_vec()),
            5 => {
                let b: [u8; 4] = p.try_into().map_err(|_| FrameError::Malformed(ty))?;
                Frame::Exit(i32::from_be_bytes(b))
            }
            6 => Frame::Error(String::from_utf8_lossy(p).into_owned()),
            other => return Err(FrameError::UnknownType(other)),
        };
        Ok(Some((frame, 5 + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip() {
        for f in [
            Frame::Stdin(b"abc".to_vec()),
            Frame::StdinEof,
            Frame::Resize(120, 40),
            Frame::Stdout(vec![0, 1, 2]),
            Frame::Stderr(Vec::new()),
            Frame::Exit(-7),
            Frame::Error("boom".into()),
        ] {
            let bytes = f.encode();
            assert_eq!(Frame::decode(&bytes).unwrap(), Some((f, bytes.len())));
        }
    }

    #[test]
    fn partial_frame_needs_more_bytes() {
        let bytes = Frame::Stdout(b"hello".to_vec()).encode();
        assert_eq!(Frame::decode(&bytes[..6]).unwrap(), None);
    }

    #[test]
    fn oversized_and_unknown_frames_are_errors() {
        let mut big = vec![3u8];
        big.extend_from_slice(&((MAX_FRAME as u32) + 1).to_be_bytes());
        assert_eq!(
            Frame::decode(&big),
            Err(FrameError::TooLarge(MAX_FRAME + 1))
        );
        assert_eq!(
            Frame::decode(&[9, 0, 0, 0, 0]),
            Err(FrameError::UnknownType(9))
        );
    }
}
