//! A stage of a streaming read on a thread of its own: the thread reads
//! its source ahead in chunks, and the next stage reads those chunks. A
//! bundle pull reads the download and takes its sha256 this way, so the
//! zstd decode (the longest stage) has a core to itself.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::thread::{Scope, ScopedJoinHandle};

use crate::flatten::copy::fill;

/// Bytes per chunk handed between stages.
const CHUNK: usize = 1 << 20;
/// Chunks queued between two stages: bounds each stage's memory to a few
/// MiB however large the stream.
const IN_FLIGHT: usize = 4;

/// What a stage sends: a chunk, the end (an empty chunk), or the error
/// that stopped it.
type Message = io::Result<Vec<u8>>;

/// Reads the chunks a stage thread produced, in order; hands emptied
/// chunks back for reuse.
pub(crate) struct ChunkReader {
    rx: Receiver<Message>,
    spent: SyncSender<Vec<u8>>,
    chunk: Vec<u8>,
    at: usize,
    ended: bool,
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.at == self.chunk.len() {
            if self.ended || buf.is_empty() {
                return Ok(0);
            }
            let next = match self.rx.recv() {
                Ok(Ok(chunk)) => chunk,
                Ok(Err(e)) => {
                    self.ended = true;
                    return Err(e);
                }
                // Every stage ends with an empty chunk or an error; a
                // thread that vanished without either must not pass for
                // the end of the stream.
                Err(_) => {
                    self.ended = true;
                    return Err(io::Error::other("a reading thread ended early"));
                }
            };
            let spent = std::mem::replace(&mut self.chunk, next);
            let _ = self.spent.try_send(spent);
            self.at = 0;
            if self.chunk.is_empty() {
                self.ended = true;
            }
        }
        let n = buf.len().min(self.chunk.len() - self.at);
        buf[..n].copy_from_slice(&self.chunk[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}

/// Reads `source` to its end on a new thread of `scope`, ahead of the
/// returned reader. At the end, `finish` gets the source back (to drain
/// it, or take a digest) and its result is the thread's. The thread stops
/// early, with an error, when the reader is dropped.
pub(crate) fn read_ahead<'scope, R, T>(
    scope: &'scope Scope<'scope, '_>,
    mut source: R,
    finish: impl FnOnce(R) -> io::Result<T> + Send + 'scope,
) -> (ChunkReader, ScopedJoinHandle<'scope, io::Result<T>>)
where
    R: Read + Send + 'scope,
    T: Send + 'scope,
{
    let (tx, rx) = sync_channel::<Message>(IN_FLIGHT);
    let (spent_tx, spent_rx) = sync_channel::<Vec<u8>>(IN_FLIGHT + 2);
    let thread = scope.spawn(move || {
        let gone = || io::Error::new(io::ErrorKind::BrokenPipe, "the next stage stopped reading");
        loop {
            // A chunk the reader is done with, else a new one.
            let mut chunk: Vec<u8> = spent_rx.try_recv().unwrap_or_default();
            chunk.resize(CHUNK, 0);
            let n = match fill(&mut source, &mut chunk) {
                Ok(n) => n,
                Err(e) => {
                    let told = io::Error::new(e.kind(), e.to_string());
                    let _ = tx.send(Err(e));
                    return Err(told);
                }
            };
            chunk.truncate(n);
            if n == 0 {
                // The source is done: `finish` runs before the end is
                // sent, so an error in it reaches the reader.
                return match finish(source) {
                    Ok(t) => {
                        tx.send(Ok(chunk)).map_err(|_| gone())?;
                        Ok(t)
                    }
                    Err(e) => {
                        let told = io::Error::new(e.kind(), e.to_string());
                        let _ = tx.send(Err(e));
                        Err(told)
                    }
                };
            }
            tx.send(Ok(chunk)).map_err(|_| gone())?;
        }
    });
    let reader = ChunkReader {
        rx,
        spent: spent_tx,
        chunk: Vec::new(),
        at: 0,
        ended: false,
    };
    (reader, thread)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_passes_through_whole_and_in_order() {
        let data: Vec<u8> = (0..(3 * CHUNK + 12345)).map(|i| (i % 251) as u8).collect();
        std::thread::scope(|s| {
            let (mut r, t) = read_ahead(s, &data[..], |rest| Ok(rest.len()));
            let mut got = Vec::new();
            r.read_to_end(&mut got).unwrap();
            assert_eq!(got, data);
            assert_eq!(t.join().unwrap().unwrap(), 0);
        });
    }

    #[test]
    fn a_source_error_reaches_the_reader_and_a_dropped_reader_stops_the_thread() {
        struct Failing(usize);
        impl Read for Failing {
            fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
                if self.0 == 0 {
                    return Err(io::Error::other("disk on fire"));
                }
                let n = buf.len().min(self.0);
                self.0 -= n;
                Ok(n)
            }
        }
        std::thread::scope(|s| {
            let (mut r, t) = read_ahead(s, Failing(10), |_| Ok(()));
            let err = r.read_to_end(&mut Vec::new()).unwrap_err();
            assert!(err.to_string().contains("disk on fire"), "{err}");
            assert!(t.join().unwrap().is_err());

            let endless = io::repeat(7);
            let (r, t) = read_ahead(s, endless, |_| Ok(()));
            drop(r);
            assert!(t.join().unwrap().is_err());
        });
    }

    #[test]
    fn a_finish_error_is_the_readers_error() {
        std::thread::scope(|s| {
            let (mut r, t) = read_ahead(s, &b"abc"[..], |_| -> io::Result<()> {
                Err(io::Error::other("digest mismatch"))
            });
            let err = r.read_to_end(&mut Vec::new()).unwrap_err();
            assert!(err.to_string().contains("digest mismatch"), "{err}");
            assert!(t.join().unwrap().is_err());
        });
    }
}
