#!/usr/bin/env bash
# Attach latency: a key typed in one attached client, until it shows in a
# second client attached to the same session. Hangar (`hangar session
# attach` twice, the session runs `cat`) against the peer setup, tmux in
# the same guest with two OpenSSH clients (`ssh -tt … tmux attach`, each
# through a warm ControlMaster, from inside the VM namespace), side by side
# in one run, interleaved per batch. Prints median and p90 per side and
# the ratios. Everything network-related lives in a namespace made and
# removed here.
# Usage: sudo bench/session-attach.sh [ROUNDS_PER_BATCH [BATCHES]]   (defaults 40, 3; release build)
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-40}
batches=${2:-3}
bin=$PWD/target/release/hangar
[ -x "$bin" ] || cargo build --release -p hangar
master=""
bench_on_exit() { [ -n "$master" ] && kill "$master" 2>/dev/null; }
. bench/lib/daemon.sh
bench_daemon attach 512
"$bin" vm create lat >/dev/null
ip=$("$bin" --json vm show lat | python3 -c 'import json,sys; print(json.load(sys.stdin)["ip"])')
"$bin" session start lat echo -- cat >/dev/null
# The peer: tmux in the guest running cat, no status line.
"$bin" exec lat -- tmux new-session -d -s peer -x 80 -y 24 cat
"$bin" exec lat -- tmux set -g status off
# OpenSSH with the daemon's key and a warm ControlMaster, in the namespace.
ctl=$work/ctl
ssh_opts=(-i "$work/state/keys/id_ed25519" -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
  -o LogLevel=ERROR -o ControlPath="$ctl")
ip netns exec "$ns" ssh "${ssh_opts[@]}" -o ControlMaster=yes -N "root@$ip" &
master=$!
for _ in $(seq 100); do ip netns exec "$ns" ssh "${ssh_opts[@]}" -O check "root@$ip" 2>/dev/null && break; sleep 0.1; done
attach=("$bin" session attach lat echo)
peer=(ip netns exec "$ns" ssh "${ssh_opts[@]}" -tt "root@$ip" tmux attach -t peer)
out=$work/results
for b in $(seq "$batches"); do
  python3 bench/session-attach.py "$rounds" hangar -- "${attach[@]}" -- "${attach[@]}" | tail -1 >>"$out"
  python3 bench/session-attach.py "$rounds" tmux+ssh -- "${peer[@]}" -- "${peer[@]}" | tail -1 >>"$out"
done
python3 - "$out" "$rounds" "$batches" <<'PY'
import sys, statistics
rows = [l.split() for l in open(sys.argv[1])]
side = {}
for name, med, p90 in rows:
    side.setdefault(name, []).append((float(med), float(p90)))
print(f"key typed in client A -> shown in client B ({sys.argv[2]} keys x {sys.argv[3]} batches)")
print(f"{'':10} {'median ms':>10} {'p90 ms':>10}")
m = {}
for name, v in side.items():
    m[name] = (statistics.median(x for x, _ in v), statistics.median(y for _, y in v))
    print(f"{name:10} {m[name][0]:10.1f} {m[name][1]:10.1f}")
h, t = m["hangar"], m["tmux+ssh"]
print(f"ratio hangar/tmux+ssh: median {h[0]/t[0]:.2f}, p90 {h[1]/t[1]:.2f}")
PY
