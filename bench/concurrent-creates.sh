#!/usr/bin/env bash
# N concurrent `hangar vm create`s (default 20), optionally with K VMs
# already running, against one build in two modes, one after the other:
#   nogate: [vmm] max_concurrent_boots = 1000 (every boot at once, as before
#           the admission queue existed)
#   gate:   [vmm] max_concurrent_boots = 0 (the default: from the cores and
#           the accelerator)
# For each: how many creates succeeded, the total wall time, the slowest
# create, and the first line of each distinct failure.
# Each mode gets its own daemon, state dir (on a loop-mounted btrfs made
# here, so VM disks are reflinks) and network namespace, all removed at
# the end. Only processes started here are stopped, by pid.
# Usage: sudo [BIN=target/debug/hangar] [MODES="nogate gate"] bench/concurrent-creates.sh [N] [K]
# Boots guests: on a shared host, run it under the boot lock.
set -euo pipefail
cd "$(dirname "$0")/.."
n=${1:-20}
k=${2:-0}
bin=${BIN:-$PWD/target/debug/hangar}
modes=${MODES:-nogate gate}
[ -x "$bin" ] || { echo "no hangar binary at $bin (cargo build -p hangar, or set BIN)" >&2; exit 2; }

work=$(mktemp -d /tmp/hangar-conc.XXXXXX)
chmod 711 "$work"   # confined VMMs (their own uids) reach the state dir by path
mnt=$work/btrfs
daemon_pid=
ns=
cleanup() {
  set +eu
  stop_daemon
  mountpoint -q "$mnt" && umount "$mnt"
  rm -rf "$work"
}
trap cleanup EXIT
trap "exit 130" INT TERM

truncate -s 40G "$work/btrfs.img"
mkfs.btrfs -q "$work/btrfs.img"
mkdir -p "$mnt"
mount -o loop "$work/btrfs.img" "$mnt"

ms() { echo $(( $(date +%s%N) / 1000000 )); }
h() { HANGAR_CONFIG=$work/$mode.toml "$bin" "$@"; }

# Kills the VMMs of the current mode's VMs (by their pid files) and its
# daemon (by pid), then removes its namespace.
stop_daemon() {
  [ -n "$daemon_pid" ] || return 0
  for f in "$mnt/$mode"/vms/*/vmm.pid; do
    [ -f "$f" ] && kill -9 "$(cat "$f")" 2>/dev/null
  done
  kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
  daemon_pid=
  [ -n "$ns" ] && ip netns del "$ns" 2>/dev/null
  ns=
}

start_daemon() {
  local boots=$1
  ns=hgconc-$mode-$$
  ip netns add "$ns"
  cat > "$work/$mode.toml" <<CONF
state_dir = "$mnt/$mode"
runtime_dir = "$work/run-$mode"
image_cache_dir = "/var/cache/hangar/images"
[network]
netns = "$ns"
bridge = "hgbr0"
subnet = "10.213.64.0/24"
tap_pool_size = 2
[vmm]
driver = "qemu"
accel = "tcg"
max_concurrent_boots = $boots
[defaults]
memory_mib = 512
CONF
  HANGAR_CONFIG=$work/$mode.toml "$bin" daemon >"$work/$mode.log" 2>&1 &
  daemon_pid=$!
  for _ in $(seq 200); do h vm ls >/dev/null 2>&1 && break; sleep 0.05; done
}

declare -A ok total slowest failures limit
for mode in $modes; do
  case $mode in
    nogate) start_daemon 1000 ;;
    gate) start_daemon 0 ;;
    *) echo "unknown mode $mode" >&2; exit 2 ;;
  esac
  h image pull debian-12 >/dev/null
  limit[$mode]=$(grep -o 'max_concurrent_boots=[0-9]*' "$work/$mode.log" | head -1 | cut -d= -f2)
  for i in $(seq 1 "$k"); do h vm create "bg-$i" >/dev/null; done
  mkdir -p "$work/$mode-out"
  t0=$(ms)
  for i in $(seq 1 "$n"); do
    (
      s=$(ms)
      if h vm create "c-$i" >"$work/$mode-out/$i.log" 2>&1; then r=0; else r=$?; fi
      echo "$r $(( $(ms) - s ))" >"$work/$mode-out/$i.rc"
    ) &
  done
  wait $(jobs -p | grep -v "^$daemon_pid$") 2>/dev/null || true
  total[$mode]=$(( $(ms) - t0 ))
  ok[$mode]=0; slowest[$mode]=0
  for i in $(seq 1 "$n"); do
    read -r rc took <"$work/$mode-out/$i.rc"
    [ "$rc" = 0 ] && ok[$mode]=$(( ok[$mode] + 1 ))
    [ "$took" -gt "${slowest[$mode]}" ] && slowest[$mode]=$took
  done
  failures[$mode]=$(for i in $(seq 1 "$n"); do
      read -r rc _ <"$work/$mode-out/$i.rc"
      [ "$rc" = 0 ] || grep -m1 -i 'error\|fail\|did not' "$work/$mode-out/$i.log" | cut -c1-160
    done | sed -E 's/c-[0-9]+/c-N/g; s/[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+(:[0-9]+)?/ADDR/g; s/[0-9.]+s \([0-9]+ attempts\)/Ns/g' | cut -c1-120 | sort | uniq -c)
  for i in $(seq 1 "$n"); do h vm rm --force "c-$i" >/dev/null 2>&1 & done
  wait $(jobs -p | grep -v "^$daemon_pid$") 2>/dev/null || true
  for i in $(seq 1 "$k"); do h vm rm --force "bg-$i" >/dev/null 2>&1 || true; done
  stop_daemon
done

echo
echo "$n concurrent creates, $k VMs already running, qemu TCG, $(nproc) cores, boot_timeout 60 s"
printf "%-7s %20s %10s %14s %16s\n" mode max_concurrent_boots succeeded total_ms slowest_create_ms
for mode in $modes; do
  printf "%-7s %20s %10s %14s %16s\n" "$mode" "${limit[$mode]:-?}" "${ok[$mode]}/$n" "${total[$mode]}" "${slowest[$mode]}"
done
for mode in $modes; do
  [ -n "${failures[$mode]}" ] && { echo "failures ($mode):"; echo "${failures[$mode]}"; }
done
exit 0
