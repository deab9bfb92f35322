#!/usr/bin/env bash
# Compares guest boot-to-SSH time (as the daemon logs it) and create+first
# exec wall time for guest kernel argument variants, interleaved round by
# round in one run so machine load affects all variants alike.
# Usage: sudo bench/boot-args.sh ROUNDS "ARGS A" "ARGS B" ...   ("" = none)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=$1; shift
bin=$PWD/target/release/hangar
[ -x "$bin" ] || cargo build --release -p hangar
work=$(mktemp -d /tmp/hangar-bootargs.XXXXXX)
chmod 711 "$work"   # confined VMMs (their own uids) reach the state dir by path
ns=hgbootargs-$$
pids=()
cleanup() {
  set +e
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for p in $(pgrep -f "$work/" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  sleep 0.3
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
ip netns add "$ns"
i=0
for args in "$@"; do
  d=$work/v$i
  mkdir -p "$d"
  cat > "$d/config.toml" <<CONF
state_dir = "$d/state"
runtime_dir = "$d/run"
[network]
netns = "$ns"
bridge = "hgbr$i"
subnet = "10.213.$((20 + i)).0/24"
tap_prefix = "hgt$i-"
tap_pool_size = 1
[vmm]
driver = "qemu"
accel = "tcg"
kernel_args = "$args"
boot_snapshots = false   # measure kernel boots: a resumed boot skips the kernel

[defaults]
memory_mib = 512
CONF
  "$bin" --config "$d/config.toml" daemon >"$d/daemon.log" 2>&1 &
  pids+=($!)
  for _ in $(seq 200); do "$bin" --config "$d/config.toml" vm ls >/dev/null 2>&1 && break; sleep 0.05; done
  "$bin" --config "$d/config.toml" image pull debian-12 >/dev/null
  i=$((i + 1))
done
ms() { echo $(( $(date +%s%N) / 1000000 )); }
declare -A boot first
for r in $(seq "$rounds"); do
  i=0
  for args in "$@"; do
    c="$work/v$i/config.toml"
    t0=$(ms); "$bin" --config "$c" vm create "r$r" >/dev/null; "$bin" --config "$c" exec "r$r" -- true; t1=$(ms)
    b=$(grep "vm=r$r " "$work/v$i/daemon.log" | grep -o 'boot_to_ssh_ms=[0-9]*' | tail -1 | cut -d= -f2)
    boot[$i]+="$b "; first[$i]+="$((t1 - t0)) "
    "$bin" --config "$c" vm rm --force "r$r" >/dev/null
    i=$((i + 1))
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
i=0
printf "%-40s %14s %20s   %s\n" "kernel args" "boot-to-ssh" "create+first-exec" "(all rounds, ms)"
for args in "$@"; do
  printf "%-40s %14s %20s   %s | %s\n" "${args:-<none>}" "$(echo "${boot[$i]}" | median)" "$(echo "${first[$i]}" | median)" "${boot[$i]}" "${first[$i]}"
  i=$((i + 1))
done
