//! A VM's console log, capped. The VMM appends the guest's console to
//! `serial.log` with `O_APPEND` (QEMU's file chardev with `append=on`,
//! Firecracker's stdout opened by us). The daemon's keeper ([`keeper`])
//! looks at every VM's log a few times a second; one past
//! `[vmm] console_log_max_bytes` is rotated by copy-and-truncate: its
//! content goes to `serial.log.1` (replacing the older part) and
//! `serial.log` is truncated. The VMM's `O_APPEND` writes go on at the new
//! end, so nothing has to reopen the file and VMs that outlive the daemon
//! keep writing. A log can overshoot the cap by what the guest writes in
//! one check interval.
//!
//! Readers see the two parts as one stream ([`ConsoleView`]): a byte keeps
//! its offset across rotations (the bytes rotated out so far plus its
//! place in `serial.log`), so `vm logs -f` follows a log through them.

mod keeper;
pub mod prune;

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

pub use keeper::CHECK_INTERVAL;

/// The older part of the console log at `log` (`serial.log.1`).
pub fn older_part(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".1");
    PathBuf::from(name)
}

/// Opens a console file the daemon (root) reads or truncates. The VM dir
/// may be writable by the VMM's unprivileged user: a symlink, a FIFO, a
/// device or a hard link put there in its place must not make the daemon
/// read, copy or truncate another file. `None` when there is no file.
pub(crate) fn open_log_file(path: &Path, write: bool) -> std::io::Result<Option<File>> {
    let opened = std::fs::OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC)
        .open(path);
    let f = match opened {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let meta = f.metadata()?;
    if !meta.is_file() || meta.nlink() != 1 {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{} is not a plain file of its own (a link or a special file); not touched",
                path.display()
            ),
        ));
    }
    Ok(Some(f))
}

/// Rotates and reads VMs' console logs; one per daemon.
#[derive(Debug)]
pub struct ConsoleLogs {
    max_bytes: u64,
    /// Per log path: how many bytes were rotated out of `serial.log` since
    /// it was created (the stream offset where `serial.log` starts). The
    /// lock also keeps a rotation and a reader's snapshot apart.
    rotated: Mutex<HashMap<PathBuf, Rotated>>,
    /// Logs the keeper could not rotate in its last pass (warned once).
    failing: Mutex<HashSet<PathBuf>>,
}

#[derive(Debug, Clone, Copy)]
struct Rotated {
    /// The inode of the `serial.log` this counts for (a new boot makes a
    /// new file).
    ino: u64,
    bytes: u64,
}

impl ConsoleLogs {
    pub fn new(max_bytes: u64) -> Self {
        ConsoleLogs {
            max_bytes,
            rotated: Mutex::new(HashMap::new()),
            failing: Mutex::new(HashSet::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, Rotated>> {
        // The map holds plain numbers: a panic elsewhere leaves it usable.
        self.rotated.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where `serial.log` (inode `ino`) starts in the stream. A log this
    /// daemon has not rotated yet (a new one, or one from before a daemon
    /// restart) starts after its older part.
    fn base(map: &mut HashMap<PathBuf, Rotated>, log: &Path, ino: u64, older_len: u64) -> u64 {
        let entry = map.entry(log.to_path_buf()).or_insert(Rotated {
            ino,
            bytes: older_len,
        });
        if entry.ino != ino {
            *entry = Rotated {
                ino,
                bytes: older_len,
            };
        }
        entry.bytes
    }

    /// Rotates `log` if it is past the cap. Returns whether it did.
    pub fn rotate_if_over(&self, log: &Path) -> std::io::Result<bool> {
        // The common case, four times a second per VM: one stat, no lock,
        // no open. Anything but a plain file goes on to be refused below.
        match std::fs::symlink_metadata(log) {
            Ok(m) if m.is_file() && m.nlink() == 1 && m.len() <= self.max_bytes => {
                return Ok(false)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
            _ => {}
        }
        let mut map = self.lock();
        let Some(mut current) = open_log_file(log, true)? else {
            return Ok(false);
        };
        let meta = current.metadata()?;
        let len = meta.len();
        if len <= self.max_bytes {
            return Ok(false);
        }
        let older = older_part(log);
        let older_len = std::fs::metadata(&older).map(|m| m.len()).unwrap_or(0);
        let base = Self::base(&mut map, log, meta.ino(), older_len);
        // The newest `max_bytes` of what is there now become the older part
        // (more than that only when the daemon was away for a while).
        let keep = len.min(self.max_bytes);
        current.seek(SeekFrom::Start(len - keep))?;
        let tmp = older.with_extension("1.tmp");
        // A fresh file (O_EXCL: whatever sat at that name, a link included,
        // is gone first and never followed).
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
            _ => {}
        }
        let mut out = hangar_host::private::create_new_private_file(&tmp)?;
        let copied = std::io::copy(&mut (&mut current).take(keep), &mut out)?;
        drop(out);
        std::fs::rename(&tmp, &older)?;
        // What the guest wrote between the copy and this truncate is lost
        // (microseconds); the VMM's next O_APPEND write lands at 0.
        current.set_len(0)?;
        map.insert(
            log.to_path_buf(),
            Rotated {
                ino: meta.ino(),
                bytes: base + len,
            },
        );
        tracing::debug!(log = %log.display(), bytes = len, kept = copied, "console log rotated");
        Ok(true)
    }

    /// A consistent view of `log`'s two parts for reading.
    pub fn view(&self, log: &Path) -> std::io::Result<ConsoleView> {
        let mut map = self.lock();
        let current = open_log_file(log, false)?;
        let older = open_log_file(&older_part(log), false)?;
        let older_len = match &older {
            Some(f) => f.metadata()?.len(),
            None => 0,
        };
        let Some(current) = current else {
            return Ok(ConsoleView {
                file_id: 0,
                base: older_len,
                older: older.map(|f| (f, older_len)),
                current: None,
            });
        };
        let meta = current.metadata()?;
        let base = Self::base(&mut map, log, meta.ino(), older_len);
        Ok(ConsoleView {
            file_id: meta.ino(),
            base,
            older: older.map(|f| (f, older_len)),
            current: Some((current, meta.len())),
        })
    }

    /// A new boot starts a new log: the old one and its older part go.
    pub fn start_over(&self, log: &Path) {
        let mut map = self.lock();
        for p in [log.to_path_buf(), older_part(log)] {
            if let Err(e) = std::fs::remove_file(&p) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    tracing::warn!(path = %p.display(), error = %e, "cannot remove the old console log");
                }
            }
        }
        map.remove(log);
    }

    /// Forgets logs whose file is gone (their VM was removed).
    fn forget_missing(&self) {
        self.lock().retain(|log, _| log.exists());
        self.failing
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|log| log.symlink_metadata().is_ok());
    }
}

/// A console log's two parts as one stream of bytes, opened at one moment
/// (a rotation after that does not move what it reads).
#[derive(Debug)]
pub struct ConsoleView {
    /// Id of the log (its inode; 0 when there is none): each boot makes a
    /// new one.
    pub file_id: u64,
    /// The stream offset where `serial.log` starts.
    base: u64,
    older: Option<(File, u64)>,
    current: Option<(File, u64)>,
}

impl ConsoleView {
    /// The stream offset of the first byte still kept.
    pub fn start(&self) -> u64 {
        self.base - self.older.as_ref().map_or(0, |(_, len)| *len)
    }

    /// The stream offset just past the last byte.
    pub fn end(&self) -> u64 {
        self.base + self.current.as_ref().map_or(0, |(_, len)| *len)
    }

    /// Where an answer starts: after `offset` when following the same
    /// log (clamped to what is still kept), else the last `tail` bytes,
    /// else everything kept.
    pub fn answer_start(&self, offset: Option<u64>, file: Option<u64>, tail: Option<u64>) -> u64 {
        let same_file = file.is_none_or(|id| id == self.file_id);
        match (offset, tail) {
            (Some(o), _) if o <= self.end() && same_file => o.max(self.start()),
            (Some(_), _) => self.start(),
            (None, Some(t)) => self.end().saturating_sub(t).max(self.start()),
            (None, None) => self.start(),
        }
    }

    /// Reads up to `max` bytes from stream offset `from`.
    pub fn into_reader(self, from: u64, max: u64) -> std::io::Result<Box<dyn Read + Send>> {
        let from = from.clamp(self.start(), self.end());
        let mut left = max.min(self.end() - from);
        let mut reader: Box<dyn Read + Send> = Box::new(std::io::empty());
        if let Some((mut f, len)) = self.older {
            if from < self.base {
                f.seek(SeekFrom::Start(len - (self.base - from)))?;
                let n = left.min(self.base - from);
                left -= n;
                reader = Box::new(reader.chain(f.take(n)));
            }
        }
        if let Some((mut f, _)) = self.current {
            if left > 0 {
                f.seek(SeekFrom::Start(from.max(self.base) - self.base))?;
                reader = Box::new(reader.chain(f.take(left)));
            }
        }
        Ok(reader)
    }
}

#[cfg(test)]
mod tests;
