#!/usr/bin/env bash
# `hangar cp` vs `scp` through `hangar proxy` to the same guest, side by side
# in one run, each direction: a file of MB megabytes (sha256 checked), and a
# tree (`cp -r` vs `scp -r`) of FILES small files. Interleaved rounds; medians.
# Usage: sudo bench/cp.sh [MB] [ROUNDS] [FILES]   (release build; honours
# CARGO_TARGET_DIR; HANGAR_BIN=PATH benches that binary instead, e.g. an
# older build kept for a before/after comparison)
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${1:-100}
rounds=${2:-3}
files=${3:-200}
target=${CARGO_TARGET_DIR:-$PWD/target}
bin=${HANGAR_BIN:-$target/release/hangar}
[ -x "$bin" ] || [ -n "${HANGAR_BIN:-}" ] || cargo build --release -p hangar
[ -x "$bin" ] || { echo "bench: no hangar binary at $bin" >&2; exit 1; }
. bench/lib/daemon.sh
bench_daemon cpb 1024
"$bin" vm create cpb >/dev/null
# OpenSSH through `hangar proxy`, the daemon's key, the VM's pinned host key.
"$bin" --json vm show cpb | python3 -c 'import json,sys; print("cpb", json.load(sys.stdin)["host_key"])' > "$work/known_hosts"
cat > "$work/ssh_config" <<CONF
Host cpb
  User root
  ProxyCommand $bin --config $work/config.toml proxy %h
  IdentityFile $work/state/keys/id_ed25519
  UserKnownHostsFile $work/known_hosts
  StrictHostKeyChecking yes
  BatchMode yes
CONF
head -c $((mb * 1000000)) /dev/urandom > "$work/data"
sum=$(sha256sum < "$work/data")
mkdir -p "$work/tree/sub"
for i in $(seq "$files"); do head -c 4096 /dev/urandom > "$work/tree/sub/f$i"; done
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo "scale=3; ($t1 - $t0) / 1000000000" | bc; }
check() { [ "$(sha256sum < "$1")" = "$sum" ] || { echo "bench: $1 differs" >&2; exit 1; }; }
scp_() { scp -q -F "$work/ssh_config" "$@"; }
declare -A t
for r in $(seq "$rounds"); do
  "$bin" exec cpb -- rm -rf /root/h /root/s /root/ht /root/st
  rm -rf "$work"/down-* 
  # Alternate which tool goes first, so neither always gets the warm cache.
  if [ $((r % 2)) = 1 ]; then order="h s"; else order="s h"; fi
  for who in $order; do
    if [ "$who" = h ]; then
      t[up_h]+="$(secs "$bin" cp "$work/data" cpb:/root/h) "
      t[down_h]+="$(secs "$bin" cp cpb:/root/h "$work/down-h") "; check "$work/down-h"
      t[tup_h]+="$(secs "$bin" cp -r "$work/tree" cpb:/root/ht) "
      t[tdown_h]+="$(secs "$bin" cp -r cpb:/root/ht "$work/down-ht") "
    else
      t[up_s]+="$(secs scp_ "$work/data" cpb:/root/s) "
      t[down_s]+="$(secs scp_ cpb:/root/s "$work/down-s") "; check "$work/down-s"
      t[tup_s]+="$(secs scp_ -r "$work/tree" cpb:/root/st) "
      t[tdown_s]+="$(secs scp_ -r cpb:/root/st "$work/down-st") "
    fi
  done
done
median() { tr ' ' '\n' | grep . | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
printf "%-22s %12s %12s %8s   (median of %s rounds; all rounds: hangar | scp)\n" "" "hangar cp" "scp+proxy" "ratio" "$rounds"
for k in up down tup tdown; do
  case $k in up) label="$mb MB upload";; down) label="$mb MB download";; tup) label="$files files cp -r up";; tdown) label="$files files cp -r down";; esac
  h=$(echo "${t[${k}_h]}" | median); s=$(echo "${t[${k}_s]}" | median)
  printf "%-22s %11ss %11ss %8s   %s| %s\n" "$label" "$h" "$s" "$(echo "scale=2; $h / $s" | bc)" "${t[${k}_h]}" "${t[${k}_s]}"
done
