#!/usr/bin/env bash
# Bytes through `hangar exec` vs OpenSSH against the same guest, side by side
# in one run: upload (stdin → `wc -c`) and download (`head -c` → stdout).
# Usage: sudo bench/exec-throughput.sh [MB]   (release build needed)
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${1:-20}
bin=$PWD/target/release/hangar
[ -x "$bin" ] || cargo build --release -p hangar
. bench/lib/daemon.sh
bench_daemon tput 512
"$bin" vm create tput >/dev/null
ip=$("$bin" --json vm show tput | python3 -c 'import json,sys; print(json.load(sys.stdin)["ip"])')
head -c $((mb * 1000000)) /dev/urandom > "$work/data"
# OpenSSH with the daemon's key, from inside the VM namespace.
cat > "$work/ssh" <<SH
#!/bin/sh
exec ip netns exec $ns ssh -i $work/state/keys/id_ed25519 -o StrictHostKeyChecking=no \\
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR root@$ip "\$@"
SH
chmod +x "$work/ssh"
secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo "scale=2; ($t1 - $t0) / 1000000000" | bc; }
up_h=$(secs sh -c "\"$bin\" exec tput -- wc -c < \"$work/data\"")
up_s=$(secs sh -c "\"$work/ssh\" wc -c < \"$work/data\"")
down_h=$(secs "$bin" exec -n tput -- head -c $((mb * 1000000)) /dev/urandom)
down_s=$(secs "$work/ssh" -n head -c $((mb * 1000000)) /dev/urandom)
printf "%-10s %12s %12s %8s\n" "$mb MB" "hangar exec" "openssh" "ratio"
printf "%-10s %11ss %11ss %8s\n" upload "$up_h" "$up_s" "$(echo "scale=2; $up_h / $up_s" | bc)"
printf "%-10s %11ss %11ss %8s\n" download "$down_h" "$down_s" "$(echo "scale=2; $down_h / $down_s" | bc)"
