//! Runs one command in a guest through the exec stream, for commands the
//! CLI drives itself (workspaces): standard input comes from a producer
//! running on a blocking thread (a pack being written), standard output
//! goes to a sink (a temp file) up to a cap, standard error is kept
//! (capped) for the error message. Nothing of the guest reaches the
//! terminal here; callers escape what they show.

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use hangar_api::stream::Frame;
use hangar_api::{ApiError, ExecRequest};
use indicatif::ProgressBar;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

use crate::client::Client;
use crate::cmd::seg;

/// The most of the guest's standard error kept for a message.
const STDERR_CAP: usize = 64 * 1024;
/// Chunk size of standard input frames.
const CHUNK: usize = 256 * 1024;

/// What a guest command ended with.
pub struct GuestExit {
    pub code: i32,
    pub stderr: Vec<u8>,
}

/// Writes standard input frames into the stream; counts bytes on the bar.
pub struct StdinWriter {
    tx: mpsc::Sender<Frame>,
    buf: Vec<u8>,
    bar: Option<ProgressBar>,
    closed: Arc<AtomicBool>,
}

impl StdinWriter {
    fn send(&mut self) -> std::io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK));
        let n = chunk.len() as u64;
        if self.tx.blocking_send(Frame::Stdin(chunk)).is_err() {
            self.closed.store(true, Ordering::SeqCst);
            return Err(std::io::Error::new(
                std::io::ErrorKind::BrokenPipe,
                "the command in the VM stopped reading",
            ));
        }
        if let Some(b) = &self.bar {
            b.inc(n);
        }
        Ok(())
    }
}

impl Write for StdinWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        let room = CHUNK - self.buf.len();
        let n = data.len().min(room);
        self.buf.extend_from_slice(&data[..n]);
        if self.buf.len() == CHUNK {
            self.send()?;
        }
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.send()
    }
}

/// Produces standard input; an `Err` is a host-side failure (its message).
pub type Producer = Box<dyn FnOnce(&mut StdinWriter) -> Result<(), String> + Send>;

/// Runs `req` in VM `vm`. With a producer, its bytes are the command's
/// standard input (then EOF); a producer that fails also ends standard
/// input, and its message is the error. Standard output goes to `stdout`
/// (more than `stdout_cap` bytes is an error).
pub async fn run(
    client: &Client,
    vm: &str,
    req: &ExecRequest,
    producer: Option<Producer>,
    bar: Option<ProgressBar>,
    stdout: &mut (dyn Write + Send),
    stdout_cap: u64,
) -> Result<GuestExit, ApiError> {
    let io = client
        .upgrade(&format!("/v1/vms/{}/exec", seg(vm)), req)
        .await?;
    let (mut rd, mut wr) = tokio::io::split(io);
    let (tx, mut rx) = mpsc::channel::<Frame>(16);
    let closed = Arc::new(AtomicBool::new(false));
    let produced = match producer {
        Some(p) => {
            let mut w = StdinWriter {
                tx: tx.clone(),
                buf: Vec::with_capacity(CHUNK),
                bar,
                closed: closed.clone(),
            };
            Some(tokio::task::spawn_blocking(move || {
                let result = p(&mut w).and_then(|()| w.flush().map_err(|e| e.to_string()));
                let _ = w.tx.blocking_send(Frame::StdinEof);
                result
            }))
        }
        None => {
            let _ = tx.send(Frame::StdinEof).await;
            None
        }
    };
    drop(tx);
    let pump = tokio::spawn(async move {
        while let Some(f) = rx.recv().await {
            if wr.write_all(&f.encode()).await.is_err() {
                return;
            }
        }
    });

    let result = read_until_exit(&mut rd, stdout, stdout_cap).await;
    // The command is done (or the stream is): stop feeding it.
    pump.abort();
    let produced = match produced {
        Some(h) => h
            .await
            .unwrap_or_else(|e| Err(format!("the writer failed: {e}"))),
        None => Ok(()),
    };
    let exit = result?;
    match produced {
        // A host-side failure is the cause, unless the guest hung up first.
        Err(msg) if !closed.load(Ordering::SeqCst) => Err(ApiError::internal(msg)),
        _ => Ok(exit),
    }
}

async fn read_until_exit<R>(
    rd: &mut R,
    stdout: &mut (dyn Write + Send),
    stdout_cap: u64,
) -> Result<GuestExit, ApiError>
where
    R: tokio::io::AsyncRead + Unpin,
{
    let mut buf = Vec::with_capacity(64 * 1024);
    let mut chunk = vec![0u8; 64 * 1024];
    let mut stderr = Vec::new();
    let mut written = 0u64;
    loop {
        loop {
            match Frame::decode(&buf) {
                Ok(Some((frame, used))) => {
                    buf.drain(..used);
                    match frame {
                        Frame::Stdout(b) => {
                            written += b.len() as u64;
                            if written > stdout_cap {
                                return Err(ApiError::invalid(format!(
                                    "the VM sent more than {stdout_cap} bytes; stopped"
                                )));
                            }
                            stdout.write_all(&b).map_err(|e| {
                                ApiError::internal(format!("cannot write the VM's output: {e}"))
                            })?;
                        }
                        Frame::Stderr(b) => {
                            let room = STDERR_CAP.saturating_sub(stderr.len());
                            stderr.extend_from_slice(&b[..b.len().min(room)]);
                        }
                        Frame::Exit(code) => return Ok(GuestExit { code, stderr }),
                        Frame::Error(msg) => return Err(ApiError::internal(msg)),
                        _ => {}
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    return Err(ApiError::internal(format!(
                        "bad frame from the daemon: {e}"
                    )))
                }
            }
        }
        match rd.read(&mut chunk).await {
            Ok(0) => {
                return Err(ApiError::internal(
                    "the daemon closed the stream before the command exited",
                ))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e) => return Err(ApiError::internal(format!("exec stream failed: {e}"))),
        }
    }
}
