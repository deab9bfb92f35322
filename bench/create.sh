#!/usr/bin/env bash
# Measures, side by side in one run:
#  1. daemon overhead of `vm create` = wall time of `hangar vm create`
#     minus the guest's boot-to-SSH time (VMM start → SSH login works, as
#     the daemon logs it);
#  2. create from a 2 GiB image vs an 8 GiB image on a reflink-capable
#     filesystem (a loop-mounted btrfs made here) — copy-on-write, not copy;
#  3. boot to first successful `exec`;
#  4. `hangar vm ls` with 50 VM records (hyperfine).
# Everything network-related lives in a namespace made and removed here.
# Usage: sudo bench/create.sh [ROUNDS]   (needs a release build: cargo build --release -p hangar)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
bin=$PWD/target/release/hangar
[ -x "$bin" ] || cargo build --release -p hangar
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null

work=$(mktemp -d /tmp/hangar-bench.XXXXXX)
ns=hgbench-$$
mnt=$work/btrfs
daemon=""
cleanup() {
  set +e
  [ -n "$daemon" ] && kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  for p in $(pgrep -f "$work/state" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  sleep 0.3
  mountpoint -q "$mnt" && umount "$mnt"
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT

truncate -s 40G "$work/btrfs.img"
mkfs.btrfs -q "$work/btrfs.img"
mkdir -p "$mnt"
mount -o loop "$work/btrfs.img" "$mnt"
ip netns add "$ns"
cat > "$work/config.toml" <<CONF
state_dir = "$mnt/state"
runtime_dir = "$work/run"
image_cache_dir = "/var/cache/hangar/images"
[network]
netns = "$ns"
bridge = "hgbr0"
subnet = "10.213.8.0/24"
tap_pool_size = 2
[vmm]
driver = "qemu"
accel = "tcg"
[defaults]
memory_mib = 512
CONF
export HANGAR_CONFIG=$work/config.toml
"$bin" daemon >"$work/daemon.log" 2>&1 &
daemon=$!
for _ in $(seq 200); do "$bin" vm ls >/dev/null 2>&1 && break; sleep 0.05; done
echo "disk backend: $("$bin" --json doctor >/dev/null 2>&1; curl -s --unix-socket "$work/run/hangar.sock" http://h/v1/info | python3 -c 'import json,sys; i=json.load(sys.stdin); print(i["disk_backend"], "-", i["disk_reason"])')"

"$bin" image pull debian-12 >/dev/null
src=$(curl -s --unix-socket "$work/run/hangar.sock" http://h/v1/images | python3 -c 'import json,sys; print([i for i in json.load(sys.stdin) if i["name"]=="debian-12"][0]["digest"].split(":")[1])')
imgdir=$mnt/state/images/$src
# An 8 GiB variant of the same image (same files, bigger filesystem).
cp --reflink=always "$imgdir/rootfs.ext4" "$work/rootfs8.ext4" 2>/dev/null || cp --sparse=always "$imgdir/rootfs.ext4" "$work/rootfs8.ext4"
truncate -s 8G "$work/rootfs8.ext4"
e2fsck -fy "$work/rootfs8.ext4" >/dev/null 2>&1 || true
resize2fs -f "$work/rootfs8.ext4" >/dev/null 2>&1
"$bin" image register big8 --kernel "$imgdir/vmlinux" --initrd "$imgdir/initrd.img" --rootfs "$work/rootfs8.ext4" >/dev/null

ms() { echo $(( $(date +%s%N) / 1000000 )); }
boot_ms_of() { grep "vm=$1 " "$work/daemon.log" | grep -o 'boot_to_ssh_ms=[0-9]*' | tail -1 | cut -d= -f2; }

# Host speed varies a lot on shared machines (the same binary booted in 4 s
# and in 8 s within minutes here): time a fixed CPU task each round and
# print it next to the results, so a slow round is visible as such.
cpu_probe_ms() {
  local t0; t0=$(ms)
  head -c 200000000 /dev/zero | sha256sum >/dev/null
  echo $(( $(ms) - t0 ))
}

declare -A total boot first_exec overhead
probes=""
for r in $(seq "$rounds"); do
  probes+="$(cpu_probe_ms) "
  for img in debian-12 big8; do
    name=b-$img-$r
    t0=$(ms)
    "$bin" vm create "$name" --image "$img" >/dev/null
    t1=$(ms)
    "$bin" exec "$name" -- true
    t2=$(ms)
    b=$(boot_ms_of "$name")
    total[$img]+="$((t1 - t0)) "
    boot[$img]+="$b "
    first_exec[$img]+="$((t2 - t0)) "
    "$bin" vm rm --force "$name" >/dev/null
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "rounds: $rounds (median ms)"
printf "%-10s %10s %14s %16s %22s\n" image create boot-to-ssh daemon-overhead create+first-exec
for img in debian-12 big8; do
  read -ra T <<<"${total[$img]}"; read -ra B <<<"${boot[$img]}"
  o=""; for i in "${!T[@]}"; do o+="$((T[i] - B[i])) "; done
  overhead[$img]="$o"
  printf "%-10s %10s %14s %16s %22s\n" "$img" "$(echo "${total[$img]}" | median)" "$(echo "${boot[$img]}" | median)" \
    "$(echo "$o" | median)" "$(echo "${first_exec[$img]}" | median)"
done
t2=$(echo "${total[debian-12]}" | median); t8=$(echo "${total[big8]}" | median)
o2=$(echo "${overhead[debian-12]}" | median); o8=$(echo "${overhead[big8]}" | median)
python3 -c "print(f'8 GiB / 2 GiB: create time ratio {$t8/$t2:.3f}, daemon overhead ratio {$o8/max($o2,1):.3f}')"
for img in debian-12 big8; do
  echo "per round ($img): create ${total[$img]}| boot-to-ssh ${boot[$img]}| overhead ${overhead[$img]}| create+first-exec ${first_exec[$img]}"
done
echo "host CPU probe per round (sha256 of 200 MB, ms; higher = slower host): $probes"

# 50 VM records (stopped) straight into the store, then time `vm ls`.
db=$mnt/state/state.db
digest=$(sqlite3 "$db" "select digest from images where name='debian-12'")
for i in $(seq 1 50); do
  echo "INSERT INTO vms (id,name,state,image_name,image_digest,cpus,memory_mib,disk_bytes,ip,mac,driver,host_key_public,host_key_private,created_at) VALUES ('bench$i','ls-$i','stopped','debian-12','$digest',2,512,2147483648,'10.213.8.$((i+100))','02:48:47:08:00:$(printf %02x $i)','qemu','ssh-ed25519 AAAA','x','2026-11-26T00:00:00Z');"
done | sqlite3 "$db"
echo
hyperfine -N --warmup 5 --runs 50 "$bin vm ls" "$bin --json vm ls" 2>&1 | grep -E 'Benchmark|Time'
