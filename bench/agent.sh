#!/usr/bin/env bash
# Hangar's guest agent (hangar-agent) against the image's OpenSSH sshd,
# side by side in one run: two daemons of the same build with the same
# config except `[guest] agent` (the agent binary vs "off"), each with its
# own network namespace and state dir (VM disks on a loop-mounted btrfs made
# here, boot snapshots on as by default). Measures, round by round
# interleaved (this host's speed swings 2x within minutes; the ratios
# agent/sshd are the figures):
#  1. exec latency on a running VM: `hangar exec VM -- true`, with its
#     breakdown: CLI start (`hangar --version`), API round trip
#     (`hangar vm show VM` minus CLI start), the rest (channel open, exec
#     request, guest process start, exit status); the guest's own cost of
#     starting `bash -c true` (what both servers run for an exec: the user's
#     shell with -c) and of a bare fork/exec, timed inside the guest;
#     OpenSSH with a warm ControlMaster to each guest (the master lives in
#     the VM namespace; the timed mux client needs no network, so it runs
#     without `ip netns exec`, which is also timed on its own rows): `true`,
#     a direct-tcpip channel to a closed guest port (one channel-open round
#     trip, no process in the guest) and `ssh -O check` (the mux client
#     alone). Every command once per round, in a new random order each round;
#     hyperfine's (not interleaved) median of `hangar exec`;
#  2. boot to ready: `vm create` → first `exec true` → `vm rm --force`,
#     wall time and the daemon's logged boot_to_ssh_ms (boot snapshots on,
#     saved by each daemon's image pull);
#  3. the agent binary's size; memory in each guest after the exec rounds
#     (VmHWM, VmRSS from status, Rss and Pss from smaps_rollup, of every
#     process but the measuring one); idle CPU of each VMM over 10 s.
# Everything network-related lives in namespaces made and removed here;
# only processes started here are stopped.
# Usage: bench/agent.sh [EXEC_ROUNDS [BOOT_ROUNDS]]   (as root; defaults 20 and 3)
#   needs: cargo build --release -p hangar; scripts/build-agent.sh
#   env: AGENT=path/to/hangar-agent, ACCEL=tcg|kvm|auto (default tcg, as the other benches)
set -euo pipefail
cd "$(dirname "$0")/.."
exec_rounds=${1:-20}
boot_rounds=${2:-3}
bin=$PWD/target/release/hangar
agent=${AGENT:-$PWD/target/x86_64-unknown-linux-musl/agent/hangar-agent}
accel=${ACCEL:-tcg}
[ -x "$bin" ] || { echo "no release build: cargo build --release -p hangar" >&2; exit 2; }
[ -x "$agent" ] || { echo "no guest agent at $agent: scripts/build-agent.sh" >&2; exit 2; }
command -v hyperfine >/dev/null || apt-get install -y -q hyperfine >/dev/null

work=$(mktemp -d /tmp/hangar-agentbench.XXXXXX)
chmod 711 "$work"   # confined VMMs reach the state dir by path
mnt=$work/btrfs
sides="agent sshd"
declare -A daemons vm ip ns masters
cleanup() {
  set +eu
  for s in "${!masters[@]}"; do kill "${masters[$s]}" 2>/dev/null; done
  for s in "${!daemons[@]}"; do
    for v in $(h "$s" --json vm ls 2>/dev/null | python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin)]' 2>/dev/null); do
      h "$s" vm rm --force "$v" >/dev/null 2>&1
    done
    kill "${daemons[$s]}" 2>/dev/null && wait "${daemons[$s]}" 2>/dev/null
  done
  for p in $(pgrep -f "$work/" 2>/dev/null); do kill -9 "$p" 2>/dev/null; done
  sleep 0.3
  mountpoint -q "$mnt" && umount "$mnt"
  for s in "${!ns[@]}"; do ip netns del "${ns[$s]}" 2>/dev/null; done
  rm -rf "$work"
}
trap cleanup EXIT

truncate -s 20G "$work/btrfs.img"
mkfs.btrfs -q "$work/btrfs.img" >/dev/null 2>&1
mkdir -p "$mnt"
mount -o loop "$work/btrfs.img" "$mnt"

h() { local s=$1; shift; HANGAR_CONFIG=$work/$s.toml "$bin" "$@"; }
ms() { echo $(( $(date +%s%N) / 1000000 )); }
median() { tr ' ' '\n' | grep -v '^$' | sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }

# start_daemon SIDE AGENT-SETTING SUBNET-THIRD-OCTET
start_daemon() {
  local s=$1 setting=$2 octet=$3
  ns[$s]=hgagent-$s-$$
  ip netns add "${ns[$s]}"
  cat > "$work/$s.toml" <<CONF
state_dir = "$mnt/$s"
runtime_dir = "$work/run-$s"
image_cache_dir = "/var/cache/hangar/images"
[network]
netns = "${ns[$s]}"
bridge = "hgbr0"
subnet = "10.213.$octet.0/24"
tap_pool_size = 2
[vmm]
driver = "qemu"
accel = "$accel"
[defaults]
memory_mib = 512
[guest]
agent = "$setting"
CONF
  HANGAR_CONFIG=$work/$s.toml "$bin" daemon >"$work/$s.log" 2>&1 &
  daemons[$s]=$!
  for _ in $(seq 600); do h "$s" vm ls >/dev/null 2>&1 && return; sleep 0.1; done
  echo "the $s daemon did not come up:" >&2; tail -20 "$work/$s.log" >&2; exit 1
}
start_daemon agent "$agent" 41
start_daemon sshd off 42
grep -q 'guest agent off' "$work/sshd.log" || { echo "sshd daemon did not turn the agent off" >&2; exit 1; }
grep -q "guest agent.*path=$agent" "$work/agent.log" || { echo "agent daemon did not load $agent:" >&2; cat "$work/agent.log" >&2; exit 1; }

declare -A pull first_vm
for s in $sides; do
  t0=$(ms); h "$s" image pull debian-12 >/dev/null; pull[$s]=$(( $(ms) - t0 ))
done

# The VM the exec rounds run against (its create+first exec is the first VM
# of the daemon, reported on its own).
for s in $sides; do
  vm[$s]=lat-$s
  t0=$(ms)
  h "$s" vm create "${vm[$s]}" >/dev/null
  h "$s" exec "${vm[$s]}" -- true
  first_vm[$s]=$(( $(ms) - t0 ))
  ip[$s]=$(h "$s" --json vm show "${vm[$s]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["ip"])')
done
# Make sure each side runs what it claims to.
h agent exec "${vm[agent]}" -- cat /proc/1/cmdline | tr '\0' ' ' | grep -q hangar-agent \
  || { echo "the agent guest's PID 1 is not hangar-agent" >&2; exit 1; }
h sshd exec "${vm[sshd]}" -- sh -c 'cat /proc/[0-9]*/comm' | grep -qx sshd \
  || { echo "no sshd in the sshd guest" >&2; exit 1; }
if h agent exec "${vm[agent]}" -- sh -c 'cat /proc/[0-9]*/comm' | grep -qx sshd; then
  echo "an sshd runs in the agent guest" >&2; exit 1
fi

# OpenSSH with a warm ControlMaster to each guest, with the daemon's key.
# ssh_args SIDE: sets `sa` to the ssh arguments up to the destination.
ssh_args() {
  sa=(-i "$mnt/$1/keys/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o LogLevel=ERROR -o BatchMode=yes -o ConnectTimeout=5 -o ControlMaster=auto
    -o ControlPath="$work/ctl-$1" -o ControlPersist=60 "root@${ip[$1]}")
}
for s in $sides; do
  ssh_args "$s"
  ip netns exec "${ns[$s]}" ssh "${sa[@]}" -fN
  masters[$s]=$(ssh "${sa[@]}" -O check 2>&1 | grep -o 'pid=[0-9]*' | cut -d= -f2)
  [ -n "${masters[$s]}" ] || { echo "no ControlMaster to the $s guest" >&2; exit 1; }
done

# --- 1. exec latency: every command once per round, in a new random order
# each round (a fixed order gives each command the same predecessor, whose
# aftermath, e.g. a guest still reaping, it would always pay for).
# *:ssh-chan: a warm ControlMaster opens a direct-tcpip channel to a closed
# port of the guest: one channel-open round trip to the server and back,
# no process started in the guest; *:ssh-check: `ssh -O check`, the mux
# client's own cost (no server involved).
# *:spawn-* time, inside the guest, what the guest itself spends per exec:
# starting `bash -c true` (what both servers run for an exec: the user's
# shell with -c), and a bare fork/exec of /bin/true (µs per start, mean of 5).
cmds=(cli-start agent:show sshd:show agent:exec sshd:exec agent:ssh-mux sshd:ssh-mux
  agent:netns-ssh-mux sshd:netns-ssh-mux netns-exec
  agent:spawn-bash sshd:spawn-bash agent:spawn-true sshd:spawn-true agent:ssh-chan sshd:ssh-chan
  agent:ssh-check sshd:ssh-check)
guest_spawn() {
  h "$1" exec "${vm[$1]}" -- sh -c "n=5; i=0; s=\$(date +%s%N); while [ \$i -lt \$n ]; do $2; i=\$((i+1)); done; e=\$(date +%s%N); echo \$(( (e - s) / n / 1000 ))"
}
run_cmd() {
  case $1 in
    cli-start) "$bin" --version ;;
    netns-exec) ip netns exec "${ns[sshd]}" true ;;
    *:show) h "${1%%:*}" vm show "${vm[${1%%:*}]}" ;;
    *:exec) h "${1%%:*}" exec "${vm[${1%%:*}]}" -- true ;;
    *:netns-ssh-mux) ssh_args "${1%%:*}"; ip netns exec "${ns[${1%%:*}]}" ssh "${sa[@]}" true ;;
    *:ssh-mux) ssh_args "${1%%:*}"; ssh "${sa[@]}" true ;;
    *:ssh-check) ssh_args "${1%%:*}"; ssh "${sa[@]}" -O check 2>/dev/null ;;
    *:ssh-chan) ssh_args "${1%%:*}"; { ssh "${sa[@]}" -W 127.0.0.1:1 </dev/null 2>&1 || true; } | grep -q 'forwarding request failed' ;;
    *:spawn-bash) guest_spawn "${1%%:*}" "bash -c true" ;;
    *:spawn-true) guest_spawn "${1%%:*}" /bin/true ;;
  esac
}
declare -A lat
for c in "${cmds[@]}"; do
  case $c in *:spawn-*) run_cmd "$c" >/dev/null; continue ;; esac
  for _ in 1 2 3; do run_cmd "$c" >/dev/null; done
done
for r in $(seq "$exec_rounds"); do
  for c in $(shuf -e "${cmds[@]}"); do
    case $c in
      *:spawn-*) lat[$c]+="$(run_cmd "$c") "; continue ;;
    esac
    a=${EPOCHREALTIME/./}
    run_cmd "$c" >/dev/null || { echo "$c failed" >&2; exit 1; }
    b=${EPOCHREALTIME/./}
    lat[$c]+="$((b - a)) "
  done
done
lat_ms() { echo "${lat[$1]}" | median | awk '{printf "%.1f", $1 / 1000}'; }

# hyperfine's view of the same (not interleaved: one command after the other).
hyperfine -N --warmup 3 --runs "$exec_rounds" --export-json "$work/hf.json" \
  -n agent "env HANGAR_CONFIG=$work/agent.toml $bin exec ${vm[agent]} -- true" \
  -n sshd "env HANGAR_CONFIG=$work/sshd.toml $bin exec ${vm[sshd]} -- true" >/dev/null 2>&1
hf=$(python3 -c 'import json,sys; r=json.load(open(sys.argv[1]))["results"]; print(" ".join("%s %.1f" % (x["command"], x["median"] * 1000) for x in r))' "$work/hf.json")

# --- 3. memory in each guest after the exec rounds: every userspace
# process but the measuring shell and its children.
mem_snippet='echo "self $$"; for d in /proc/[0-9]*; do p=${d#/proc/}; echo "== $p $(tr "\0" " " 2>/dev/null < $d/cmdline | head -c 60)"; grep -E "^(Name|PPid|VmHWM|VmRSS):" $d/status 2>/dev/null; grep -E "^(Rss|Pss):" $d/smaps_rollup 2>/dev/null | sed "s/^/S/"; done; true'
declare -A mem_total
for s in $sides; do
  h "$s" exec "${vm[$s]}" -- sh -c "$mem_snippet" > "$work/mem-$s.txt"
done
mem_report() {
  python3 - "$1" "$2" "$3" <<'PY'
import sys
side, path, totals = sys.argv[1], sys.argv[2], sys.argv[3]
procs, cur, me = {}, None, None
for line in open(path):
    line = line.rstrip("\n")
    if line.startswith("self "):
        me = line.split()[1]
    elif line.startswith("== "):
        parts = line.split(" ", 2)
        cur = parts[1]; procs[cur] = {"cmd": parts[2] if len(parts) > 2 else ""}
    elif cur and ":" in line:
        k, v = line.split(":", 1); procs[cur][k] = v.split()[0]
def measuring(p):
    seen = set()
    while p in procs and p not in seen:
        if p == me: return True
        seen.add(p); p = procs[p].get("PPid")
    return False
rows = [(p, d) for p, d in procs.items() if "VmRSS" in d and not measuring(p)]
keys = ["VmHWM", "VmRSS", "SRss", "SPss"]
tot = dict.fromkeys(keys, 0)
mib = lambda d, k: f"{int(d.get(k, 0)) / 1024:5.1f}"
for p, d in sorted(rows, key=lambda x: int(x[0])):
    print(f"  {side:5} pid {p:>4} {d.get('Name',''):13} {d['cmd'][:40]:40} VmHWM {mib(d,'VmHWM')} VmRSS {mib(d,'VmRSS')} Rss {mib(d,'SRss')} Pss {mib(d,'SPss')} MiB")
    for k in keys: tot[k] += int(d.get(k, 0))
print(f"  {side:5} all of these: VmHWM {mib(tot,'VmHWM')} VmRSS {mib(tot,'VmRSS')} Rss {mib(tot,'SRss')} Pss {mib(tot,'SPss')} MiB")
open(totals, "w").write(" ".join(str(tot[k]) for k in keys) + "\n")
PY
}
# CPU the idle guests cost the host (both VMMs over the same 10 s window),
# in % of one core: a server that polls instead of sleeping shows here.
vmm_pids=""
for s in $sides; do
  vmm_pids+="$(h "$s" --json vm show "${vm[$s]}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["pid"])') "
done
idle_cpu=$(python3 - $vmm_pids <<'PY'
import os, sys, time
def ticks(pid):
    f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(f[11]) + int(f[12])
pids = sys.argv[1:]
a = [ticks(p) for p in pids]; t0 = time.time(); time.sleep(10)
b = [ticks(p) for p in pids]; dt = time.time() - t0
hz = os.sysconf("SC_CLK_TCK")
print(" ".join(f"{(y - x) / hz / dt * 100:.1f}" for x, y in zip(a, b)))
PY
)
sshd_size=$(h sshd exec "${vm[sshd]}" -- stat -c %s /usr/sbin/sshd)
# sshd and the shared libraries it loads (which other programs share).
sshd_libs=$(h sshd exec "${vm[sshd]}" -- sh -c 'stat -L -c %s /usr/sbin/sshd $(ldd /usr/sbin/sshd | sed -n "s/.*=> \([^ ]*\) .*/\1/p")' | paste -sd+ | bc)
for s in $sides; do h "$s" vm rm --force "${vm[$s]}" >/dev/null; done

# --- 2. boot to ready, rounds interleaved, who goes first alternating.
boot_ms_of() { grep "vm=$2 " "$work/$1.log" | grep -o 'boot_to_ssh_ms=[0-9]*' | tail -1 | cut -d= -f2; }
boot_kind_of() { grep "vm=$2 " "$work/$1.log" | grep 'boot_to_ssh_ms' | tail -1 | grep -q 'resumed from boot snapshot' && echo snapshot || echo kernel; }
declare -A create first_exec boot kinds
for r in $(seq "$boot_rounds"); do
  order="agent sshd"; [ $((r % 2)) = 0 ] && order="sshd agent"
  for s in $order; do
    name=b-$r
    t0=$(ms)
    h "$s" vm create "$name" >/dev/null
    t1=$(ms)
    h "$s" exec "$name" -- true
    t2=$(ms)
    create[$s]+="$((t1 - t0)) "
    first_exec[$s]+="$((t2 - t0)) "
    boot[$s]+="$(boot_ms_of "$s" "$name") "
    kinds[$s]+="$(boot_kind_of "$s" "$name") "
    h "$s" vm rm --force "$name" >/dev/null
  done
done

# --- Summary.
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print(f'{a/b:.2f}' if b else '-')" "$1" "$2"; }
row() { printf "%-44s %10s %10s %8s\n" "$1" "$2" "$3" "$(ratio "$2" "$3")"; }
echo
echo "hangar $("$bin" --version | awk '{print $2}'), accel $accel, $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "exec rounds: $exec_rounds interleaved (median ms); boot rounds: $boot_rounds"
printf "%-44s %10s %10s %8s\n" "" agent sshd agent/sshd
row "hangar exec VM -- true" "$(lat_ms agent:exec)" "$(lat_ms sshd:exec)"
row "  hangar vm show VM (CLI + API)" "$(lat_ms agent:show)" "$(lat_ms sshd:show)"
for s in $sides; do
  declare "rest_$s=$(python3 -c "print(f'{$(lat_ms $s:exec) - $(lat_ms $s:show):.1f}')")"
done
row "  exec minus show (channel, guest, exit)" "$rest_agent" "$rest_sshd"
row "  guest: start of bash -c true (in guest)" "$(lat_ms agent:spawn-bash)" "$(lat_ms sshd:spawn-bash)"
row "  (guest: fork/exec of /bin/true)" "$(lat_ms agent:spawn-true)" "$(lat_ms sshd:spawn-true)"
row "ssh mux (warm ControlMaster) true" "$(lat_ms agent:ssh-mux)" "$(lat_ms sshd:ssh-mux)"
row "  ssh mux: channel open (direct-tcpip refused)" "$(lat_ms agent:ssh-chan)" "$(lat_ms sshd:ssh-chan)"
for s in $sides; do
  declare "open_$s=$(python3 -c "print(f'{$(lat_ms $s:ssh-chan) - $(lat_ms $s:ssh-check):.1f}')")"
done
row "    of which the server (minus ssh -O check)" "$open_agent" "$open_sshd"
for s in $sides; do
  declare "req_$s=$(python3 -c "print(f'{$(lat_ms $s:ssh-mux) - $(lat_ms $s:ssh-chan):.1f}')")"
done
row "  ssh mux true minus channel open" "$req_agent" "$req_sshd"
row "ip netns exec NS ssh mux true" "$(lat_ms agent:netns-ssh-mux)" "$(lat_ms sshd:netns-ssh-mux)"
row "hyperfine hangar exec (not interleaved)" "$(echo "$hf" | awk '{print $2}')" "$(echo "$hf" | awk '{print $4}')"
echo "  CLI start (hangar --version): $(lat_ms cli-start) ms; ip netns exec NS true: $(lat_ms netns-exec) ms"
echo "  API round trip (vm show minus --version): agent $(python3 -c "print(f'{$(lat_ms agent:show) - $(lat_ms cli-start):.1f}')") ms, sshd $(python3 -c "print(f'{$(lat_ms sshd:show) - $(lat_ms cli-start):.1f}')") ms"
m() { echo "${!1}" | median; }
for s in $sides; do declare "c_$s=${create[$s]}" "f_$s=${first_exec[$s]}" "b_$s=${boot[$s]}"; done
row "vm create (ms)" "$(m c_agent)" "$(m c_sshd)"
row "create + first exec (ms)" "$(m f_agent)" "$(m f_sshd)"
row "daemon's boot_to_ssh_ms" "$(m b_agent)" "$(m b_sshd)"
row "first VM after pull, create + exec (ms)" "${first_vm[agent]}" "${first_vm[sshd]}"
row "image pull from the cache (ms)" "${pull[agent]}" "${pull[sshd]}"
for s in $sides; do mem_report "$s" "$work/mem-$s.txt" "$work/memtot-$s" >"$work/memrep-$s"; done
read -r ah ar a_rss ap < "$work/memtot-agent"; read -r sh_ sr s_rss sp < "$work/memtot-sshd"
row "guest userspace: sum of VmHWM (KiB)" "$ah" "$sh_"
row "guest userspace: sum of Rss (KiB, smaps)" "$a_rss" "$s_rss"
row "guest userspace: sum of Pss (KiB, smaps)" "$ap" "$sp"
row "idle VMM CPU over 10 s (% of a core)" $idle_cpu
row "server binary (bytes; sshd alone)" "$(stat -c %s "$agent")" "$sshd_size"
row "server binary (bytes; sshd with its libs)" "$(stat -c %s "$agent")" "$sshd_libs"
echo
echo "memory per process (VmHWM/VmRSS: /proc/PID/status, lazily synced counters that can read 0 for an idle PID 1;"
echo "Rss/Pss: /proc/PID/smaps_rollup, counted from the page tables):"
cat "$work/memrep-agent" "$work/memrep-sshd"
echo
for s in $sides; do
  echo "per round ($s): vm show ${lat[$s:show]}(µs)"
  echo "per round ($s): exec ${lat[$s:exec]}(µs) | create+first-exec ${first_exec[$s]}| boot_to_ssh ${boot[$s]}| boot ${kinds[$s]}"
done
for s in $sides; do
  echo "per round ($s): guest bash -c true start ${lat[$s:spawn-bash]}| /bin/true ${lat[$s:spawn-true]}(µs, mean of 5 each)"
done
