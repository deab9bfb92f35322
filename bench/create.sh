#!/usr/bin/env bash
# Measures, side by side in one run (two daemons, interleaved rounds):
#  1. daemon overhead of `vm create` = wall time of `hangar vm create`
#     minus the guest's boot-to-SSH time (VMM start → SSH login works, as
#     the daemon logs it);
#  2. create from a 2 GiB image vs an 8 GiB image on a reflink-capable
#     filesystem (a loop-mounted btrfs made here) — copy-on-write, not copy;
#     both booted cold (daemon "cold": boot_snapshots = false), so only the
#     disk differs;
#  3. boot to first successful `exec`, kernel boot (daemon "cold") against
#     a boot resumed from a boot snapshot (daemon "snap", whose image pull
#     saves the snapshot; its first VM is timed on its own);
#  4. `hangar vm ls` with 50 VM records (hyperfine).
# Everything network-related lives in namespaces made and removed here.
# Usage: sudo bench/create.sh [ROUNDS]   (needs a release build: cargo build --release -p hangar)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
bin=$PWD/target/release/hangar
[ -x "$bin" ] || cargo build --release -p hangar
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null

work=$(mktemp -d /tmp/hangar-bench.XXXXXX)
chmod 711 "$work"   # confined VMMs (their own uids) reach the state dir by path
mnt=$work/btrfs
declare -A daemons
cleanup() {
  set +eu
  for d in "${daemons[@]}"; do kill "$d" 2>/dev/null && wait "$d" 2>/dev/null; done
  for p in $(pgrep -f "$mnt/" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  sleep 0.3
  mountpoint -q "$mnt" && umount "$mnt"
  for which in cold snap; do ip netns del "hgbench-$which-$$" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

truncate -s 40G "$work/btrfs.img"
mkfs.btrfs -q "$work/btrfs.img"
mkdir -p "$mnt"
mount -o loop "$work/btrfs.img" "$mnt"

# start_daemon NAME SNAPSHOTS SUBNET-THIRD-OCTET
start_daemon() {
  local which=$1 snapshots=$2 octet=$3 ns=hgbench-$1-$$
  ip netns add "$ns"
  cat > "$work/$which.toml" <<CONF
state_dir = "$mnt/$which"
runtime_dir = "$work/run-$which"
image_cache_dir = "/var/cache/hangar/images"
[network]
netns = "$ns"
bridge = "hgbr0"
subnet = "10.213.$octet.0/24"
tap_pool_size = 2
[vmm]
driver = "qemu"
accel = "tcg"
boot_snapshots = $snapshots
[defaults]
memory_mib = 512
CONF
  HANGAR_CONFIG=$work/$which.toml "$bin" daemon >"$work/$which.log" 2>&1 &
  daemons[$which]=$!
  for _ in $(seq 200); do h "$which" vm ls >/dev/null 2>&1 && break; sleep 0.05; done
}
h() { local which=$1; shift; HANGAR_CONFIG=$work/$which.toml "$bin" "$@"; }

ms() { echo $(( $(date +%s%N) / 1000000 )); }
start_daemon cold false 8
start_daemon snap true 6
echo "disk backend: $(curl -s --unix-socket "$work/run-cold/hangar.sock" http://h/v1/info | python3 -c 'import json,sys; i=json.load(sys.stdin); print(i["disk_backend"], "-", i["disk_reason"])')"

# The snap daemon's pull also saves the boot snapshot of the default shape.
t0=$(ms); h cold image pull debian-12 >/dev/null; pull_cold=$(( $(ms) - t0 ))
t0=$(ms); h snap image pull debian-12 >/dev/null; pull_snap=$(( $(ms) - t0 ))
src=$(curl -s --unix-socket "$work/run-cold/hangar.sock" http://h/v1/images | python3 -c 'import json,sys; print([i for i in json.load(sys.stdin) if i["name"]=="debian-12"][0]["digest"].split(":")[1])')
imgdir=$mnt/cold/images/$src
# An 8 GiB variant of the same image (same files, bigger filesystem).
cp --reflink=always "$imgdir/rootfs.ext4" "$work/rootfs8.ext4" 2>/dev/null || cp --sparse=always "$imgdir/rootfs.ext4" "$work/rootfs8.ext4"
truncate -s 8G "$work/rootfs8.ext4"
e2fsck -fy "$work/rootfs8.ext4" >/dev/null 2>&1 || true
resize2fs -f "$work/rootfs8.ext4" >/dev/null 2>&1
h cold image register big8 --kernel "$imgdir/vmlinux" --initrd "$imgdir/initrd.img" --rootfs "$work/rootfs8.ext4" >/dev/null

boot_ms_of() { grep "vm=$2 " "$work/$1.log" | grep -o 'boot_to_ssh_ms=[0-9]*' | tail -1 | cut -d= -f2; }

# The snap daemon's first VM, right after the pull.
t0=$(ms)
h snap vm create first >/dev/null
h snap exec first -- true
first_vm=$(( $(ms) - t0 ))
h snap vm rm --force first >/dev/null

# Host speed varies a lot on shared machines (the same binary booted in 4 s
# and in 8 s within minutes here): time a fixed CPU task each round and
# print it next to the results, so a slow round is visible as such.
cpu_probe_ms() {
  local t0; t0=$(ms)
  head -c 200000000 /dev/zero | sha256sum >/dev/null
  echo $(( $(ms) - t0 ))
}

variants="cold:debian-12 cold:big8 snap:debian-12"
declare -A total boot first_exec overhead
probes=""
for r in $(seq "$rounds"); do
  probes+="$(cpu_probe_ms) "
  for v in $variants; do
    which=${v%%:*} img=${v#*:}
    name=b-$img-$r
    t0=$(ms)
    h "$which" vm create "$name" --image "$img" >/dev/null
    t1=$(ms)
    h "$which" exec "$name" -- true
    t2=$(ms)
    b=$(boot_ms_of "$which" "$name")
    total[$v]+="$((t1 - t0)) "
    boot[$v]+="$b "
    first_exec[$v]+="$((t2 - t0)) "
    h "$which" vm rm --force "$name" >/dev/null
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "rounds: $rounds (median ms)"
printf "%-16s %10s %14s %16s %22s\n" daemon:image create boot-to-ssh daemon-overhead create+first-exec
for v in $variants; do
  read -ra T <<<"${total[$v]}"; read -ra B <<<"${boot[$v]}"
  o=""; for i in "${!T[@]}"; do o+="$((T[i] - B[i])) "; done
  overhead[$v]="$o"
  printf "%-16s %10s %14s %16s %22s\n" "$v" "$(echo "${total[$v]}" | median)" "$(echo "${boot[$v]}" | median)" \
    "$(echo "$o" | median)" "$(echo "${first_exec[$v]}" | median)"
done
t2=$(echo "${total[cold:debian-12]}" | median); t8=$(echo "${total[cold:big8]}" | median)
o2=$(echo "${overhead[cold:debian-12]}" | median); o8=$(echo "${overhead[cold:big8]}" | median)
python3 -c "print(f'8 GiB / 2 GiB (both kernel boots): create time ratio {$t8/$t2:.3f}, daemon overhead ratio {$o8/max($o2,1):.3f}')"
fc=$(echo "${first_exec[cold:debian-12]}" | median); fs=$(echo "${first_exec[snap:debian-12]}" | median)
python3 -c "print(f'create+first-exec, boot snapshot / kernel boot: {$fs/$fc:.3f}')"
echo "image pull from the cache: $pull_cold ms without, $pull_snap ms with saving the boot snapshot"
echo "first VM of the snap daemon after its pull, create+first-exec: $first_vm ms"
for v in $variants; do
  echo "per round ($v): create ${total[$v]}| boot-to-ssh ${boot[$v]}| overhead ${overhead[$v]}| create+first-exec ${first_exec[$v]}"
done
echo "host CPU probe per round (sha256 of 200 MB, ms; higher = slower host): $probes"

# 50 VM records (stopped) straight into the store, then time `vm ls`.
db=$mnt/cold/state.db
digest=$(sqlite3 "$db" "select digest from images where name='debian-12'")
for i in $(seq 1 50); do
  echo "INSERT INTO vms (id,name,state,image_name,image_digest,cpus,memory_mib,disk_bytes,ip,mac,driver,host_key_public,host_key_private,created_at) VALUES ('bench$i','ls-$i','stopped','debian-12','$digest',2,512,2147483648,'10.213.8.$((i+100))','02:48:47:08:00:$(printf %02x $i)','qemu','ssh-ed25519 AAAA','x','2026-11-26T00:00:00Z');"
done | sqlite3 "$db"
echo
HANGAR_CONFIG=$work/cold.toml hyperfine -N --warmup 5 --runs 50 "$bin vm ls" "$bin --json vm ls" 2>&1 | grep -E 'Benchmark|Time'
