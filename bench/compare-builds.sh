#!/usr/bin/env bash
# Two builds of hangar side by side in one run: a daemon of each (same
# config, boot snapshots on, VM disks on a loop-mounted btrfs made here),
# interleaved rounds of `vm create` → first `exec` → `vm rm --force`, then
# `hangar vm ls` of each with 50 VM records (hyperfine). For refactors that
# must not change speed: the ratio new/old is the figure, since this host's
# speed swings by 2x within minutes and both builds see the same swings.
# Everything network-related lives in namespaces made and removed here.
# Usage: sudo OLD=/path/to/old/hangar NEW=/path/to/new/hangar bench/compare-builds.sh [ROUNDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-5}
old=${OLD:?set OLD to the baseline hangar binary}
new=${NEW:-$PWD/target/release/hangar}
[ -x "$old" ] && [ -x "$new" ] || { echo "OLD and NEW must be executables" >&2; exit 2; }
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null

work=$(mktemp -d /tmp/hangar-cmp.XXXXXX)
chmod 711 "$work"   # confined VMMs (their own uids) reach the state dir by path
mnt=$work/btrfs
declare -A daemons bins
bins[old]=$old
bins[new]=$new
cleanup() {
  set +eu
  for d in "${daemons[@]}"; do kill "$d" 2>/dev/null && wait "$d" 2>/dev/null; done
  for p in $(pgrep -f "$mnt/" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  sleep 0.3
  mountpoint -q "$mnt" && umount "$mnt"
  for which in old new; do ip netns del "hgcmp-$which-$$" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

truncate -s 20G "$work/btrfs.img"
mkfs.btrfs -q "$work/btrfs.img"
mkdir -p "$mnt"
mount -o loop "$work/btrfs.img" "$mnt"

h() { local which=$1; shift; HANGAR_CONFIG=$work/$which.toml "${bins[$which]}" "$@"; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }

# start_daemon NAME SUBNET-THIRD-OCTET
start_daemon() {
  local which=$1 octet=$2 ns=hgcmp-$1-$$
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
[defaults]
memory_mib = 512
CONF
  HANGAR_CONFIG=$work/$which.toml "${bins[$which]}" daemon >"$work/$which.log" 2>&1 &
  daemons[$which]=$!
  for _ in $(seq 200); do h "$which" vm ls >/dev/null 2>&1 && break; sleep 0.05; done
}
start_daemon old 4
start_daemon new 5

declare -A pull
for which in old new; do
  t0=$(ms); h "$which" image pull debian-12 >/dev/null; pull[$which]=$(( $(ms) - t0 ))
done

boot_ms_of() { grep "vm=$2 " "$work/$1.log" | grep -o 'boot_to_ssh_ms=[0-9]*' | tail -1 | cut -d= -f2; }

declare -A total boot first_exec overhead
for r in $(seq "$rounds"); do
  # Alternate who goes first, so neither build always meets a warmer host.
  order="old new"; [ $((r % 2)) = 0 ] && order="new old"
  for which in $order; do
    name=c-$r
    t0=$(ms)
    h "$which" vm create "$name" >/dev/null
    t1=$(ms)
    h "$which" exec "$name" -- true
    t2=$(ms)
    b=$(boot_ms_of "$which" "$name")
    total[$which]+="$((t1 - t0)) "
    boot[$which]+="$b "
    overhead[$which]+="$((t1 - t0 - b)) "
    first_exec[$which]+="$((t2 - t0)) "
    h "$which" vm rm --force "$name" >/dev/null
  done
done

median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
echo
echo "rounds: $rounds (median ms; boot snapshots on)"
printf "%-6s %10s %14s %16s %22s %12s\n" build create boot-to-ssh daemon-overhead create+first-exec image-pull
for which in old new; do
  printf "%-6s %10s %14s %16s %22s %12s\n" "$which" "$(echo "${total[$which]}" | median)" \
    "$(echo "${boot[$which]}" | median)" "$(echo "${overhead[$which]}" | median)" \
    "$(echo "${first_exec[$which]}" | median)" "${pull[$which]}"
done
fo=$(echo "${first_exec[old]}" | median); fn=$(echo "${first_exec[new]}" | median)
oo=$(echo "${overhead[old]}" | median); on=$(echo "${overhead[new]}" | median)
python3 -c "print(f'new / old: create+first-exec {$fn/$fo:.3f}, daemon overhead {$on/max($oo,1):.3f}')"
for which in old new; do
  echo "per round ($which): create ${total[$which]}| boot-to-ssh ${boot[$which]}| overhead ${overhead[$which]}| create+first-exec ${first_exec[$which]}"
done

# 50 VM records (stopped) straight into each store, then time `vm ls`.
for which in old new; do
  db=$mnt/$which/state.db
  digest=$(sqlite3 "$db" "select digest from images where name='debian-12'")
  octet=$([ "$which" = old ] && echo 4 || echo 5)
  for i in $(seq 1 50); do
    echo "INSERT INTO vms (id,name,state,image_name,image_digest,cpus,memory_mib,disk_bytes,ip,mac,driver,host_key_public,host_key_private,created_at) VALUES ('bench$i','ls-$i','stopped','debian-12','$digest',2,512,2147483648,'10.213.$octet.$((i+100))','02:48:47:0$octet:00:$(printf %02x $i)','qemu','ssh-ed25519 AAAA','x','2026-11-26T00:00:00Z');"
  done | sqlite3 "$db"
done
echo
hyperfine -N --warmup 5 --runs 50 \
  -n old "env HANGAR_CONFIG=$work/old.toml $old vm ls" \
  -n new "env HANGAR_CONFIG=$work/new.toml $new vm ls" 2>&1 | grep -E 'Benchmark|Time|±|faster|times'
