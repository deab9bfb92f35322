#!/usr/bin/env bash
# Hangar's OCI pull against the peer pipeline (skopeo + umoci + mkfs.ext4),
# side by side, from one docker-registry on 127.0.0.1 started here:
#  1. setup (untimed): the default image's rootfs (loop-mounted read-only
#     from the daemon's own copy of debian-12) pushed as one layer
#     (`buildah from scratch` + `cp -a`, commit) plus a small second layer:
#     REG/bench/img:1 (~0.5 GiB uncompressed); the same plus a layer of
#     ~500 MiB of incompressible random files: REG/bench/big:1 (~1 GiB);
#  2. N rounds, interleaved, each in a new random order:
#     - hangar: `hangar image pull REG/bench/img:1 --insecure --name bench-N`
#       on a running release daemon (wall time of the command, start to
#       exit; then `hangar image rm bench-N`, untimed), the daemon's peak
#       RSS (VmHWM, reset before the pull) recorded too;
#     - peer: `skopeo copy` to an OCI layout, `umoci unpack`, then
#       `mkfs.ext4 -q -F -L root -m 0 -d BUNDLE/rootfs FILE` into a sparse
#       file sized as hangar sizes its rootfs (allocated bytes + 256 per
#       inode, + 25% + 256 MiB; the walk that measures it is in the mkfs
#       step's time); each step timed; removed afterwards, untimed.
#     Hangar's time includes what it does beyond that: the image-config
#     checks, copying the default image's kernel and initrd, removing its
#     staging tree and recording the image.
#  3. peak memory of the daemon during a pull of the ~1 GiB image vs the
#     ~0.5 GiB one: VmHWM from /proc/PID/status after `echo 5 >
#     /proc/PID/clear_refs`, and the maximum of VmRSS sampled every 50 ms.
#     (The peer steps' max RSS, from /usr/bin/time, is shown for scale.)
#  4. where hangar's time goes: one more pull with its operation's phases
#     polled, against curl | gzip -dc and curl | tar -xz of the same blobs.
# The daemon has its own state dir in the bench's temp dir and its own
# network namespace (no VM is started); only processes started here are
# stopped; the registry, the mount, the namespace and the temp dir are
# removed on exit.
# Usage: bench/oci-pull.sh [ROUNDS]   (as root; default 3)
#   needs: cargo build --release -p hangar (HANGAR_BIN=path, or
#   $CARGO_TARGET_DIR/release/hangar, or target/release/hangar);
#   docker-registry, buildah, skopeo, umoci (installed if missing);
#   debian-12 in /var/cache/hangar/images or a few minutes to build it.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
bin=${HANGAR_BIN:-${CARGO_TARGET_DIR:-$PWD/target}/release/hangar}
[ -x "$bin" ] || { echo "no release build at $bin: cargo build --release -p hangar" >&2; exit 2; }
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
missing=""
for t in docker-registry:docker-registry jq:jq buildah:buildah skopeo:skopeo umoci:umoci /usr/bin/time:time; do
  command -v "${t%%:*}" >/dev/null || missing+=" ${t#*:}"
done
[ -z "$missing" ] || apt-get install -y -q $missing >/dev/null

work=$(mktemp -d /tmp/hangar-ocibench.XXXXXX)
chmod 711 "$work"
ns=hgoci-$$
daemon="" registry="" rootfs_mnt=$work/rootfs sampler=""
cleanup() {
  set +eu
  [ -n "$sampler" ] && kill "$sampler" 2>/dev/null
  if [ -n "$daemon" ]; then
    for v in $(h --json vm ls 2>/dev/null | python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin)]' 2>/dev/null); do
      h vm rm --force "$v" >/dev/null 2>&1
    done
    kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  fi
  [ -n "$registry" ] && kill "$registry" 2>/dev/null && wait "$registry" 2>/dev/null
  for p in $(pgrep -f "$work/" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  sleep 0.3
  mountpoint -q "$rootfs_mnt" && umount "$rootfs_mnt"
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

h() { HANGAR_CONFIG=$work/hangar.toml "$bin" "$@"; }
now() { echo "${EPOCHREALTIME/./}"; }                 # µs
secs() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2f", (b - a) / 1e6}'; }
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
max() { tr ' ' '\n' | grep -v '^$' | sort -g | tail -1; }
kib_mib() { awk -v k="$1" 'BEGIN {printf "%.0f", k / 1024}'; }

# --- the daemon, as bench/agent.sh starts them (own state dir, config,
# network namespace).
ip netns add "$ns"
cat > "$work/hangar.toml" <<CONF
state_dir = "$work/state"
runtime_dir = "$work/run"
image_cache_dir = "/var/cache/hangar/images"
[network]
netns = "$ns"
bridge = "hgbr0"
subnet = "10.213.51.0/24"
tap_pool_size = 1
[vmm]
driver = "qemu"
accel = "tcg"
[guest]
agent = "off"
CONF
HANGAR_CONFIG=$work/hangar.toml "$bin" daemon >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 600); do h vm ls >/dev/null 2>&1 && break; sleep 0.1; done
h vm ls >/dev/null 2>&1 || { echo "the daemon did not come up:" >&2; tail -20 "$work/daemon.log" >&2; exit 1; }
t0=$(now)
h image pull debian-12 >/dev/null
echo "debian-12 ready in $(secs "$t0" "$(now)") s (from /var/cache/hangar/images when cached)" >&2
digest=$(h --json image show debian-12 | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"].split(":")[-1])')
base_rootfs=$work/state/images/$digest/rootfs.ext4
[ -f "$base_rootfs" ] || { echo "no $base_rootfs" >&2; exit 1; }

# --- the registry on 127.0.0.1, storing in the temp dir.
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
mkdir -p "$work/registry/storage"
cat > "$work/registry/config.yml" <<CONF
version: 0.1
log:
  level: warn
storage:
  filesystem:
    rootdirectory: $work/registry/storage
  delete:
    enabled: true
http:
  addr: $reg
CONF
docker-registry serve "$work/registry/config.yml" >"$work/registry/registry.log" 2>&1 &
registry=$!
for _ in $(seq 200); do curl -sf "http://$reg/v2/" >/dev/null && break; sleep 0.1; done
curl -sf "http://$reg/v2/" >/dev/null || { echo "docker-registry did not come up:" >&2; cat "$work/registry/registry.log" >&2; exit 1; }

# --- the test images, built with buildah (vfs storage in the temp dir).
echo '{"default":[{"type":"insecureAcceptAnything"}]}' > "$work/policy.json"
b() { BUILDAH_ISOLATION=chroot buildah --root "$work/buildah/storage" --runroot "$work/buildah/run" --storage-driver vfs "$@"; }
t0=$(now)
mkdir -p "$rootfs_mnt"
mount -o loop,ro,noload "$base_rootfs" "$rootfs_mnt"
ctr=$(b from --signature-policy "$work/policy.json" scratch)
mnt=$(b mount "$ctr")
cp -a "$rootfs_mnt/." "$mnt/"
# As in any base image: plain files, not Hangar's links to the config drive.
for f in etc/resolv.conf etc/hosts etc/hostname; do rm -f "$mnt/$f"; : > "$mnt/$f"; done
b umount "$ctr" >/dev/null
b commit -q --signature-policy "$work/policy.json" "$ctr" bench-base >/dev/null
b rm "$ctr" >/dev/null
umount "$rootfs_mnt"
# The small second layer: a few MiB in ~1300 files (the host's zoneinfo).
ctr=$(b from --signature-policy "$work/policy.json" bench-base)
mnt=$(b mount "$ctr")
mkdir -p "$mnt/srv/bench"
cp -a /usr/share/zoneinfo/. "$mnt/srv/bench/"
b umount "$ctr" >/dev/null
b commit -q --signature-policy "$work/policy.json" "$ctr" bench-img >/dev/null
b rm "$ctr" >/dev/null
# The big one: + ~500 MiB of random files (50 x 10 MiB).
ctr=$(b from --signature-policy "$work/policy.json" bench-img)
mnt=$(b mount "$ctr")
mkdir -p "$mnt/srv/random"
for i in $(seq 50); do head -c 10M /dev/urandom > "$mnt/srv/random/r$i"; done
b umount "$ctr" >/dev/null
b commit -q --signature-policy "$work/policy.json" "$ctr" bench-big >/dev/null
b rm "$ctr" >/dev/null
b push -q --signature-policy "$work/policy.json" --tls-verify=false bench-img "docker://$reg/bench/img:1"
b push -q --signature-policy "$work/policy.json" --tls-verify=false bench-big "docker://$reg/bench/big:1"
# buildah's copies are no longer needed: free the disk before the rounds.
rm -rf "$work/buildah"
echo "images built and pushed in $(secs "$t0" "$(now)") s" >&2
layers() {  # REPO → "compressed MiB" of each layer and the sum
  curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json, application/vnd.docker.distribution.manifest.v2+json' \
    "http://$reg/v2/$1/manifests/1" | python3 -c '
import json, sys
m = json.load(sys.stdin)
s = [l["size"] for l in m["layers"]]
print(" + ".join(f"{x / 2**20:.1f}" for x in s), f"= {sum(s) / 2**20:.1f} MiB compressed", m["layers"][0]["mediaType"].rsplit(".", 1)[-1])'
}

# --- the peer pipeline, each step timed.
# tm FILE CMD...: runs CMD, its max RSS (KiB) into FILE.
tm() { /usr/bin/time -f %M -o "$1" "${@:2}"; }
peer() {  # sets peer_s peer_u peer_m peer_t (seconds), peer_rss (KiB x3), peer_size (MiB)
  local dir=$work/peer/oci bundle=$work/peer/bundle file=$work/peer/rootfs.ext4 t0 t1 t2 t3 size
  mkdir -p "$work/peer"
  t0=$(now)
  tm "$work/rss1" skopeo --policy "$work/policy.json" copy -q --src-tls-verify=false "docker://$reg/bench/img:1" "oci:$dir:img"
  t1=$(now)
  tm "$work/rss2" umoci unpack --image "$dir:img" "$bundle" >/dev/null 2>"$work/umoci.err" \
    || { echo "umoci unpack failed:" >&2; cat "$work/umoci.err" >&2; exit 1; }
  t2=$(now)
  # Sized like hangar: allocated bytes + 256 per inode, + 25% + 256 MiB, to the MiB.
  size=$(find "$bundle/rootfs" -printf '%b\n' | awk '{b += $1 * 512 + 256} END {s = b + int(b / 4) + 256 * 2^20; printf "%d", int((s + 2^20 - 1) / 2^20) * 2^20}')
  truncate -s "$size" "$file"
  tm "$work/rss3" mkfs.ext4 -q -F -L root -m 0 -d "$bundle/rootfs" "$file"
  t3=$(now)
  peer_s=$(secs "$t0" "$t1") peer_u=$(secs "$t1" "$t2") peer_m=$(secs "$t2" "$t3") peer_t=$(secs "$t0" "$t3")
  peer_rss="$(cat "$work/rss1") $(cat "$work/rss2") $(cat "$work/rss3")"
  peer_size=$((size >> 20))
  rm -rf "$work/peer"
}

# --- hangar, timed; the daemon's VmHWM reset before and read after, its
# VmRSS sampled every 50 ms meanwhile.
start_sampler() {
  echo 0 > "$work/rss-max"
  ( m=0; while [ -e "/proc/$daemon/status" ]; do
      r=$(awk '/^VmRSS:/ {print $2}' "/proc/$daemon/status"); [ "${r:-0}" -gt "$m" ] && m=$r && echo "$m" > "$work/rss-max"
      sleep 0.05; done ) &
  sampler=$!
}
stop_sampler() { kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true; sampler=""; }
hangar_pull() {  # REPO NAME; sets hangar_t (s), hangar_hwm and hangar_rss (KiB), hangar_size (bytes)
  local t0 t1
  echo 5 > "/proc/$daemon/clear_refs"
  start_sampler
  t0=$(now)
  h image pull "$reg/bench/$1:1" --insecure --name "$2" >/dev/null 2>"$work/pull.err" \
    || { echo "hangar image pull $1 failed:" >&2; cat "$work/pull.err" >&2; exit 1; }
  t1=$(now)
  hangar_hwm=$(awk '/^VmHWM:/ {print $2}' "/proc/$daemon/status")
  stop_sampler
  hangar_rss=$(cat "$work/rss-max")
  hangar_t=$(secs "$t0" "$t1")
  hangar_size=$(h --json image show "$2" | python3 -c 'import json,sys; print(json.load(sys.stdin)["rootfs_bytes"])')
  h image rm "$2" >/dev/null
}

# A warm-up of each (not counted): the registry's blobs into the page cache.
hangar_pull img bench-warm
echo "warm-up: hangar $hangar_t s" >&2
peer
echo "warm-up: peer $peer_t s" >&2

declare -a H P S U M HW
for r in $(seq "$rounds"); do
  for side in $(shuf -e hangar peer); do
    if [ "$side" = hangar ]; then
      hangar_pull img "bench-$r"
      H[$r]=$hangar_t HW[$r]=$hangar_hwm hsize=$hangar_size
      echo "round $r: hangar ${H[$r]} s (daemon VmHWM $(kib_mib "$hangar_hwm") MiB)" >&2
    else
      peer
      S[$r]=$peer_s U[$r]=$peer_u M[$r]=$peer_m P[$r]=$peer_t
      echo "round $r: peer ${P[$r]} s (skopeo ${S[$r]}, umoci ${U[$r]}, mkfs ${M[$r]})" >&2
    fi
  done
done

# --- memory: the ~1 GiB image vs the ~0.5 GiB one, twice each, alternating.
declare -a MS MB RS RB TS TB
for i in 1 2; do
  hangar_pull img "bench-mem-small-$i"; TS[$i]=$hangar_t MS[$i]=$hangar_hwm RS[$i]=$hangar_rss
  echo "memory: img:1 VmHWM $(kib_mib "$hangar_hwm") MiB, $hangar_t s" >&2
  hangar_pull big "bench-mem-big-$i"; TB[$i]=$hangar_t MB[$i]=$hangar_hwm RB[$i]=$hangar_rss
  echo "memory: big:1 VmHWM $(kib_mib "$hangar_hwm") MiB, $hangar_t s" >&2
done

# --- where hangar's time goes: one more pull of img:1 with --no-wait, its
# operation's phase polled every ~0.1 s (each poll is a CLI call, so the
# phases are good to ~0.2 s); against it, the same layers through curl |
# gzip -dc (decompression alone) and curl | tar -xz (GNU tar: no digest
# check, no safety checks) into the same file system.
t0=$(now)
op=$(h image pull "$reg/bench/img:1" --insecure --name bench-phases --no-wait | grep -o 'op-[0-9a-f]*' | head -1)
: > "$work/phases"
last=""
while :; do
  st=$(h --json op show "$op" | jq -r '.state + " " + .progress.phase')
  if [ "${st#* }" != "$last" ]; then echo "$(now) ${st#* }" >> "$work/phases"; last=${st#* }; fi
  case ${st%% *} in running|queued|pending) sleep 0.1 ;; *) break ;; esac
done
t1=$(now)
[ "${st%% *}" = succeeded ] || { echo "the phase pull ended $st" >&2; exit 1; }
h image rm bench-phases >/dev/null
phase_line=$(awk -v t0="$t0" -v t1="$t1" '{t[NR]=$1; p[NR]=$2} END {for (i = 1; i <= NR; i++) {e = (i < NR ? t[i+1] : t1); printf "%s %.1f, ", p[i], (e - t[i]) / 1e6}}' "$work/phases")
blobs=$(curl -sf -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$reg/v2/bench/img/manifests/1" | jq -r '.layers[].digest')
t2=$(now)
for d in $blobs; do curl -sf "http://$reg/v2/bench/img/blobs/$d" | gzip -dc > /dev/null; done
t3=$(now)
mkdir -p "$work/tarx"
for d in $blobs; do curl -sf "http://$reg/v2/bench/img/blobs/$d" | tar -xzp --numeric-owner -C "$work/tarx"; done
t4=$(now)
rm -rf "$work/tarx"

# --- summary.
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf (b > 0 ? "%.2f" : "-"), a / b}'; }
echo
echo "hangar $("$bin" --version | awk '{print $2}'), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "REG/bench/img:1 layers: $(layers bench/img)"
echo "REG/bench/big:1 layers: $(layers bench/big)"
echo "rootfs file (sparse) for img:1: hangar $((hsize >> 20)) MiB, peer $peer_size MiB; for big:1: hangar $((hangar_size >> 20)) MiB"
echo "pull of REG/bench/img:1, seconds (rounds interleaved, random order each round):"
printf "%-7s %8s %8s %8s %8s %8s %11s\n" round hangar peer skopeo umoci mkfs peer/hangar
for r in $(seq "$rounds"); do
  printf "%-7s %8s %8s %8s %8s %8s %11s\n" "$r" "${H[$r]}" "${P[$r]}" "${S[$r]}" "${U[$r]}" "${M[$r]}" "$(ratio "${P[$r]}" "${H[$r]}")"
done
mh=$(echo "${H[*]}" | median) mp=$(echo "${P[*]}" | median)
printf "%-7s %8s %8s %8s %8s %8s %11s\n" median "$mh" "$mp" "$(echo "${S[*]}" | median)" \
  "$(echo "${U[*]}" | median)" "$(echo "${M[*]}" | median)" "$(ratio "$mp" "$mh")"
echo "  (goal: peer/hangar >= 1.0, aim 1.5)"
echo "daemon VmHWM during the timed pulls (MiB): $(for r in $(seq "$rounds"); do printf "%s " "$(kib_mib "${HW[$r]}")"; done)"
echo "peer max RSS of the last round (MiB): skopeo $(kib_mib "$(echo "$peer_rss" | cut -d' ' -f1)"), umoci $(kib_mib "$(echo "$peer_rss" | cut -d' ' -f2)"), mkfs.ext4 $(kib_mib "$(echo "$peer_rss" | cut -d' ' -f3)")"
echo "daemon peak memory per pull (MiB): VmHWM after clear_refs / max VmRSS sampled every 50 ms; seconds"
for i in 1 2; do
  echo "  ~0.5 GiB img:1  VmHWM $(kib_mib "${MS[$i]}")  VmRSS max $(kib_mib "${RS[$i]}")  ${TS[$i]} s"
  echo "  ~1 GiB   big:1  VmHWM $(kib_mib "${MB[$i]}")  VmRSS max $(kib_mib "${RB[$i]}")  ${TB[$i]} s"
done
echo "hangar's phases, one more pull of img:1 (s): ${phase_line%, } (total $(secs "$t0" "$t1"))"
echo "  the same blobs: curl | gzip -dc $(secs "$t2" "$t3") s; curl | tar -xzp (GNU tar) $(secs "$t3" "$t4") s"
echo "  big/small VmHWM: $(ratio "$(echo "${MB[*]}" | max)" "$(echo "${MS[*]}" | max)") (max of each)"
