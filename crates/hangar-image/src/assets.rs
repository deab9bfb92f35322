//! Guest-side files embedded in the binary. They are part of the image
//! recipe: their bytes feed the cache key, so editing one rebuilds images.

/// `/init` of our initramfs (busybox sh).
pub const INITRAMFS_INIT: &str = include_str!("../assets/initramfs-init");
/// `/usr/lib/hangar/guest-init` in the rootfs: the process under tini.
pub const GUEST_INIT: &str = include_str!("../assets/guest-init");
/// `/usr/local/sbin/poweroff` (also `halt`, `shutdown`, `reboot`).
pub const POWEROFF: &str = include_str!("../assets/poweroff");
/// `/etc/ssh/sshd_config` of the image.
pub const SSHD_CONFIG: &str = include_str!("../assets/sshd_config");

/// Bumped when the build steps change in a way the assets do not show.
pub const BUILD_FORMAT: &str = "hangar-image-build-v1";

/// All assets in a fixed order, for hashing.
pub fn all() -> [(&'static str, &'static str); 4] {
    [
        ("initramfs-init", INITRAMFS_INIT),
        ("guest-init", GUEST_INIT),
        ("poweroff", POWEROFF),
        ("sshd_config", SSHD_CONFIG),
    ]
}
