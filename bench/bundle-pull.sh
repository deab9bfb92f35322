#!/usr/bin/env bash
# Hangar's bundle pull against `curl | zstd -d` to a file, side by side,
# from one local HTTP server on 127.0.0.1 started here:
#  1. setup (untimed): a daemon (bench/lib/daemon.sh: own state dir and
#     network namespace; no VM is started) gets debian-12 (from
#     /var/cache/hangar/images when cached) and exports it with `hangar
#     image export` to a bundle in the bench's temp dir, served by
#     `python3 -m http.server` on 127.0.0.1;
#  2. N rounds, each in a new random order:
#     - hangar: `hangar image pull http://127.0.0.1:PORT/b.hangar.tar.zst
#       --sha256 HEX --name b-N` (wall time, start to exit: download, the
#       whole-file sha256, zstd, the sparse rootfs write and its fsync, the
#       image record); then `hangar image rm b-N`, untimed;
#     - peer: `curl -s URL | zstd -d -q -o FILE` (download and decompress
#       only: no digest is checked), then the file is removed, untimed.
#  3. the medians and their ratio (hangar / peer), and the daemon's peak
#     RSS during a pull (VmHWM after `echo 5 > clear_refs`).
# Usage: bench/bundle-pull.sh [ROUNDS]   (as root; default 3)
#   needs: cargo build --release -p hangar (HANGAR_BIN=path, or
#   $CARGO_TARGET_DIR/release/hangar, or target/release/hangar); curl, zstd.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=${HANGAR_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/hangar}
[ -x "$bin" ] || { echo "no release build at $bin: cargo build --release -p hangar" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
for t in curl zstd python3; do
  command -v "$t" >/dev/null || apt-get install -y -q "$t" >/dev/null
done
. bench/lib/daemon.sh

server=""
bench_on_exit() { [ -n "$server" ] && kill "$server" 2>/dev/null && wait "$server" 2>/dev/null; }
bench_daemon bundle 512 'image_cache_dir = "/var/cache/hangar/images"'

now() { echo "${EPOCHREALTIME/./}"; }                 # µs
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b - a) / 1e6}'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

t0=$(now)
"$bin" image pull debian-12 >/dev/null
echo "debian-12 ready in $(secs "$t0" "$(now)") s" >&2
mkdir -p "$work/www"
t0=$(now)
sum=$("$bin" --json image export debian-12 "$work/www/b.hangar.tar.zst" |
  python3 -c 'import json, sys; print(json.load(sys.stdin)["sha256"])')
size_mib=$(( $(stat -c %s "$work/www/b.hangar.tar.zst") >> 20 ))
echo "exported: $size_mib MiB in $(secs "$t0" "$(now)") s, sha256 $sum" >&2
# Each pull then stores a new image (not a second name for this one).
"$bin" image rm debian-12 >/dev/null

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server --bind 127.0.0.1 --directory "$work/www" "$port" >"$work/http.log" 2>&1 &
server=$!
url=http://127.0.0.1:$port/b.hangar.tar.zst
for _ in $(seq 100); do curl -sfI "$url" >/dev/null && break; sleep 0.1; done
curl -sfI "$url" >/dev/null || { echo "the HTTP server did not come up" >&2; exit 1; }

hangar_times="" peer_times="" hwm=0
for r in $(seq "$rounds"); do
  order="hangar peer"; [ $((RANDOM % 2)) = 0 ] && order="peer hangar"
  for side in $order; do
    if [ "$side" = hangar ]; then
      echo 5 > "/proc/$daemon/clear_refs"
      t0=$(now)
      "$bin" image pull "$url" --sha256 "$sum" --name "b-$r" >/dev/null
      t=$(secs "$t0" "$(now)")
      h=$(awk '/VmHWM/ {print $2}' "/proc/$daemon/status")
      [ "$h" -gt "$hwm" ] && hwm=$h
      "$bin" image rm "b-$r" >/dev/null
      hangar_times+=" $t"
    else
      t0=$(now)
      curl -sf "$url" | zstd -d -q -o "$work/peer.tar"
      t=$(secs "$t0" "$(now)")
      rm -f "$work/peer.tar"
      peer_times+=" $t"
    fi
    echo "round $r $side: $t s" >&2
  done
done
hm=$(echo "$hangar_times" | median)
pm=$(echo "$peer_times" | median)
echo
echo "bundle of debian-12: $size_mib MiB compressed; $rounds rounds; load $(cut -d' ' -f1 /proc/loadavg)"
printf "%-46s %8s %8s %7s\n" "" hangar peer ratio
printf "%-46s %8s %8s %7s\n" "pull (hangar) vs curl | zstd -d (peer), s" "$hm" "$pm" \
  "$(awk -v a="$hm" -v b="$pm" 'BEGIN {printf "%.2f", a / b}')"
echo "daemon peak RSS during a pull: $((hwm / 1024)) MiB"
