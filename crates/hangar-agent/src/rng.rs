//! VMs restored from one boot snapshot share that snapshot's kernel RNG
//! state. The daemon puts a per-VM seed on the config drive; it is mixed
//! in (RNDADDENTROPY) and a reseed forced (RNDRESEEDCRNG) before anything
//! in the guest draws keys, then the seed file is removed.

use std::os::fd::AsRawFd;
use std::path::Path;

// From <linux/random.h>: _IOW('R', 0x03, int[2]) and _IO('R', 0x07).
const RNDADDENTROPY: libc::Ioctl = 0x4008_5203;
const RNDRESEEDCRNG: libc::Ioctl = 0x5207;
/// The kernel refuses larger entropy buffers; the daemon writes 64 bytes.
const MAX_SEED: usize = 4096;

pub fn reseed_from(seed_file: &Path) -> std::io::Result<bool> {
    let seed = match std::fs::read(seed_file) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    let _ = std::fs::remove_file(seed_file);
    let seed = &seed[..seed.len().min(MAX_SEED)];
    let urandom = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/urandom")?;
    // struct rand_pool_info { int entropy_count; int buf_size; __u32 buf[]; }
    let mut info = Vec::with_capacity(8 + seed.len());
    let bits = i32::try_from(seed.len() * 8).unwrap_or(i32::MAX);
    let len = i32::try_from(seed.len()).unwrap_or(i32::MAX);
    info.extend_from_slice(&bits.to_ne_bytes());
    info.extend_from_slice(&len.to_ne_bytes());
    info.extend_from_slice(seed);
    // SAFETY: the ioctls read `info` (header + buf_size bytes), which
    // outlives the calls; the fd is open for the whole call.
    let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDADDENTROPY, info.as_ptr()) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: RNDRESEEDCRNG takes no argument.
    let rc = unsafe { libc::ioctl(urandom.as_raw_fd(), RNDRESEEDCRNG, 0) };
    if rc != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(true)
}
