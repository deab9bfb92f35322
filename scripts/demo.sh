#!/usr/bin/env bash
# The main job on a fresh machine: install what is needed, build, start the
# daemon, create a VM from the default image (built locally on first use),
# run a command in it, show the result — then clean up.
#
# On shared hosts like CI boxes the VM network lives in its own network
# namespace (nothing in the host's namespace changes). KEEP=1 leaves the
# daemon and VM running and prints how to use and stop them.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "run as root (the daemon owns TAPs, bridges and disks)" >&2; exit 1; }

./scripts/install-deps.sh
export PATH="$HOME/.cargo/bin:$PATH"
cargo build --release -p hangar
./scripts/build-agent.sh   # the guest agent; the daemon finds it from target/release/hangar
bin=$PWD/target/release/hangar

work=/tmp/hangar-demo
ns=hangar-demo
mkdir -p "$work"
cat > "$work/config.toml" <<CONF
state_dir = "$work/state"
runtime_dir = "$work/run"
image_cache_dir = "/var/cache/hangar/images"

[network]
netns = "$ns"
subnet = "10.213.9.0/24"

[vmm]
driver = "qemu"
CONF
export HANGAR_CONFIG=$work/config.toml

ip netns add "$ns" 2>/dev/null || true
"$bin" daemon >"$work/daemon.log" 2>&1 &
daemon=$!
cleanup() {
  if [ "${KEEP:-0}" != 1 ]; then
    "$bin" vm rm --force demo >/dev/null 2>&1 || true
    kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null || true
    ip netns del "$ns" 2>/dev/null || true
    rm -rf "$work"   # the built image stays cached in /var/cache/hangar/images
  fi
}
trap cleanup EXIT
for _ in $(seq 100); do "$bin" vm ls >/dev/null 2>&1 && break; sleep 0.1; done

"$bin" doctor || true
"$bin" vm create demo
"$bin" exec demo -- sh -c 'echo "hello from $(hostname)"; cat /etc/os-release | head -2; uname -r'
"$bin" vm ls
if [ "${KEEP:-0}" = 1 ]; then
  echo "daemon pid $daemon keeps running; try: HANGAR_CONFIG=$HANGAR_CONFIG $bin ssh demo"
  echo "stop it with: kill $daemon; ip netns del $ns (after: $bin vm rm --force demo)"
fi
