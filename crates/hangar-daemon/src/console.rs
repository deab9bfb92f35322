//! Reading a guest's serial console log: waiting for a message (the
//! snapshot point) and its last lines for error messages.

use std::time::{Duration, Instant};

use crate::snapshot_service::SnapshotError;

/// Waits until the console log contains `needle`. Fails when `alive`
/// says the VMM is gone or after `timeout`.
pub async fn wait_for_console(
    log: &std::path::Path,
    needle: &str,
    timeout: Duration,
    alive: impl Fn() -> bool,
) -> Result<(), SnapshotError> {
    use std::io::{Read, Seek, SeekFrom};
    let began = Instant::now();
    let mut offset = 0u64;
    // The unmatched end of what was read, in case the needle is split.
    let mut carry = String::new();
    loop {
        if let Ok(Some(mut f)) = crate::console_log::open_log_file(log, false) {
            // Shorter than what was read: the log was rotated (its start
            // moved to serial.log.1); read the new part from its start.
            if f.metadata().is_ok_and(|m| m.len() < offset) {
                offset = 0;
            }
            let mut buf = Vec::new();
            if f.seek(SeekFrom::Start(offset)).is_ok() && f.read_to_end(&mut buf).is_ok() {
                offset += buf.len() as u64;
                carry.push_str(&String::from_utf8_lossy(&buf));
                if carry.contains(needle) {
                    return Ok(());
                }
                let keep = carry.len().saturating_sub(needle.len());
                let cut = (keep..=carry.len())
                    .find(|&i| carry.is_char_boundary(i))
                    .unwrap_or(carry.len());
                carry.drain(..cut);
            }
        }
        if !alive() {
            return Err(SnapshotError::VmmExited);
        }
        if began.elapsed() > timeout {
            return Err(SnapshotError::NotReached {
                secs: timeout.as_secs(),
            });
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The last lines of a console log (across a rotation: the end of
/// `serial.log.1`, then `serial.log`), for error messages (a boot that
/// fails usually says why on the console).
pub fn console_tail(path: &std::path::Path) -> String {
    const MAX_BYTES: u64 = 4096;
    const MAX_LINES: usize = 12;
    if !path.exists() {
        return String::new();
    }
    let current = last_bytes(path, MAX_BYTES);
    let missing = MAX_BYTES.saturating_sub(current.len() as u64);
    let mut buf = if missing > 0 {
        last_bytes(&crate::console_log::older_part(path), missing)
    } else {
        Vec::new()
    };
    buf.extend_from_slice(&current);
    // Guest bytes reach the user's terminal (and the daemon's log) through
    // this message: escape sequences are shown escaped, never sent as is.
    let text = hangar_host::sanitize::escape_controls(&buf);
    let lines: Vec<&str> = text.lines().filter(|l| !l.trim().is_empty()).collect();
    if lines.is_empty() {
        return " (the console printed nothing)".to_string();
    }
    let tail = &lines[lines.len().saturating_sub(MAX_LINES)..];
    format!("; its last lines:\n  {}", tail.join("\n  "))
}

/// The last `max` bytes of a file (none when it cannot be read).
fn last_bytes(path: &std::path::Path, max: u64) -> Vec<u8> {
    use std::io::{Read, Seek, SeekFrom};
    // Never through a link: this text goes to the API's users.
    let Ok(Some(mut f)) = crate::console_log::open_log_file(path, false) else {
        return Vec::new();
    };
    let len = f.metadata().map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::new();
    if f.seek(SeekFrom::Start(len.saturating_sub(max))).is_ok() {
        let _ = f.take(max).read_to_end(&mut buf);
    }
    buf
}

#[cfg(test)]
mod tests {
    use super::{console_tail, wait_for_console, SnapshotError};
    use std::io::Write;
    use std::time::Duration;

    #[tokio::test]
    async fn wait_for_console_finds_a_message_written_in_pieces() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                let mut f = std::fs::File::create(&log).unwrap();
                f.write_all(b"[ 0.1] boot\nhangar-initramfs: waiting for")
                    .unwrap();
                tokio::time::sleep(Duration::from_millis(100)).await;
                f.write_all(b" the config drive (snapshot point)\n")
                    .unwrap();
            })
        };
        let r = wait_for_console(
            &log,
            "hangar-initramfs: waiting for the config drive",
            Duration::from_secs(5),
            || true,
        )
        .await;
        writer.await.unwrap();
        assert!(r.is_ok(), "{r:?}");
    }

    #[tokio::test]
    async fn wait_for_console_gives_up_when_the_vmm_is_gone_or_time_is_up() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(&log, "kernel panic\n").unwrap();

        let gone = wait_for_console(&log, "snapshot point", Duration::from_secs(5), || false).await;
        assert!(matches!(gone, Err(SnapshotError::VmmExited)), "{gone:?}");

        let late =
            wait_for_console(&log, "snapshot point", Duration::from_millis(50), || true).await;
        assert!(
            matches!(late, Err(SnapshotError::NotReached { .. })),
            "{late:?}"
        );
    }

    #[test]
    fn console_tail_shows_the_last_twelve_lines() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        let text: String = (1..=20).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&log, text).unwrap();
        let tail = console_tail(&log);
        assert!(tail.starts_with("; its last lines:\n  line 9\n"), "{tail}");
        assert!(tail.ends_with("line 20"), "{tail}");
    }

    #[test]
    fn console_tail_of_an_empty_log_says_so_and_of_a_missing_one_is_empty() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(&log, "\n\n").unwrap();
        assert_eq!(console_tail(&log), " (the console printed nothing)");
        assert_eq!(console_tail(&dir.path().join("none")), "");
    }

    #[test]
    fn console_tail_reaches_into_the_older_part_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(crate::console_log::older_part(&log), "why it failed\n").unwrap();
        std::fs::write(&log, "last words\n").unwrap();
        let tail = console_tail(&log);
        assert_eq!(tail, "; its last lines:\n  why it failed\n  last words");
    }

    #[tokio::test]
    async fn wait_for_console_finds_a_message_written_after_a_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(&log, vec![b'x'; 4096]).unwrap();
        let writer = {
            let log = log.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(100)).await;
                // Rotated: truncated, then written again from the start.
                std::fs::write(&log, "snapshot point\n").unwrap();
            })
        };
        let r = wait_for_console(&log, "snapshot point", Duration::from_secs(5), || true).await;
        writer.await.unwrap();
        assert!(r.is_ok(), "{r:?}");
    }

    #[test]
    fn console_tail_never_reads_through_a_link() {
        let dir = tempfile::tempdir().unwrap();
        let secret = dir.path().join("secret");
        std::fs::write(&secret, "root:$6$hash\n").unwrap();
        let log = dir.path().join("serial.log");
        std::os::unix::fs::symlink(&secret, &log).unwrap();
        let tail = console_tail(&log);
        assert!(!tail.contains("root:"), "{tail}");
    }

    #[test]
    fn console_tail_escapes_the_guests_control_characters() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("serial.log");
        std::fs::write(&log, "ok\n\x1b]0;owned\x07 \x1b[2Jtext\r\n").unwrap();
        let tail = console_tail(&log);
        assert!(!tail.contains('\x1b') && !tail.contains('\x07'), "{tail:?}");
        assert!(tail.contains("\\x1b[2Jtext"), "{tail:?}");
    }
}
