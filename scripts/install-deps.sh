#!/usr/bin/env bash
# Installs what Hangar needs to build, run and test on Debian 12: the
# toolchain comes from rustup (already on the machine or installed here),
# everything else from Debian's packages.
set -euo pipefail

packages=(
  qemu-system-x86      # the qemu VMM driver (TCG where KVM cannot boot guests)
  debootstrap          # builds the default image from Debian packages
  busybox-static       # the guest initramfs
  e2fsprogs            # mkfs.ext4 -d, resize2fs, e2fsck
  cpio zstd lz4        # initramfs and image handling
  iproute2 nftables    # bridge, TAPs, namespaces, NAT
  btrfs-progs          # reflink tests on a loop-mounted btrfs
  openssh-client openssh-server  # real sshd for the guest-SSH tests
  sqlite3              # tests inspect the store
  tmux                 # the interactive `hangar ssh` test drives a terminal
  rsync                # e2e_access: `rsync -a -e ssh` to a VM through `hangar ssh-config`
  groff-base man-db    # the man-page tests render every `hangar man` page
  ca-certificates curl python3 gcc pkg-config
  musl-tools           # the static guest agent (ring's C code builds with musl-gcc)
  docker-registry skopeo umoci buildah  # OCI image tests: a local registry, image builds and copies
  apache2-utils openssl  # registry auth tests: bcrypt htpasswd; the test token server's key, cert and JWT signatures
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# The packaged sshd service is not needed (tests start their own sshd).
if ! command -v cargo >/dev/null 2>&1; then
  if [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  else
    curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
fi
cargo --version
# The guest agent is a static musl binary (scripts/build-agent.sh). Where
# rustup cannot download the target (no access to static.rust-lang.org),
# install the rust-std-x86_64-unknown-linux-musl component from a mirror
# or an offline rustup dist, or set RUSTUP_DIST_SERVER to a reachable one.
if ! command -v rustup >/dev/null 2>&1; then
  echo "install-deps: the guest agent needs the x86_64-unknown-linux-musl target, which needs rustup (this cargo is not rustup's): install rustup (https://rustup.rs) or put a musl rust-std in place" >&2
  exit 1
elif ! rustup target list --installed | grep -qx x86_64-unknown-linux-musl; then
  rustup target add x86_64-unknown-linux-musl
fi
