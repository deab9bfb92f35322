#!/usr/bin/env bash
# Workspace import of a large repository (~50,000 files, a few hundred
# commits, generated here) vs git over OpenSSH into the same guest, side by
# side in one run, then `workspace export` of 100 commits made in the guest.
# The ssh side is `git push` over ssh (the daemon's key, from inside the VM
# namespace, as exec-throughput.sh does) into an empty repository in the
# guest, then `git reset --hard` there: the same work as a `git clone` into
# the guest (pack, transfer, index-pack, checkout).
# Usage: sudo bench/workspace-import.sh [FILES] [COMMITS]
#   HANGAR_BIN=path/to/hangar to use another build (default: release).
set -euo pipefail
cd "$(dirname "$0")/.."
files=${1:-50000}
commits=${2:-300}
target=${CARGO_TARGET_DIR:-$PWD/target}
bin=${HANGAR_BIN:-$target/release/hangar}
[ -x "$bin" ] || cargo build --release -p hangar
. bench/lib/daemon.sh
bench_daemon wsb 1024 'image_cache_dir = "/var/cache/hangar/images"'

secs() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null; t1=$(date +%s%N); echo "scale=2; ($t1 - $t0) / 1000000000" | bc; }

# The repository: one commit with every file, then small commits, made with
# git fast-import (seconds, not minutes).
repo=$work/repo
git init -q -b main "$repo"
git -C "$repo" config user.name "Bench User"
git -C "$repo" config user.email bench@example.com
python3 - "$files" "$commits" <<'PY' | git -C "$repo" fast-import --quiet
import sys
files, commits = int(sys.argv[1]), int(sys.argv[2])
out = sys.stdout.buffer
def data(b):
    out.write(b"data %d\n" % len(b)); out.write(b); out.write(b"\n")
for c in range(commits):
    out.write(b"commit refs/heads/main\n")
    out.write(b"committer Bench User <bench@example.com> %d +0000\n" % (1700000000 + c))
    data(b"commit %d\n" % c)
    if c == 0:
        paths = range(files)
    else:
        paths = range((c * 37) % files, (c * 37) % files + 20)
    for i in paths:
        i %= files
        out.write(b"M 100644 inline dir%03d/file%05d.txt\n" % (i % 500, i))
        data((b"file %d version %d\n" % (i, c)) * 8)
PY
git -C "$repo" reset -q --hard
size=$(du -sh "$repo/.git" | cut -f1)
echo "repo: $files files, $commits commits, .git $size"

"$bin" vm create wsb >/dev/null
ip=$("$bin" --json vm show wsb | python3 -c 'import json,sys; print(json.load(sys.stdin)["ip"])')
cat > "$work/ssh" <<SH
#!/bin/sh
exec ip netns exec $ns ssh -i $work/state/keys/id_ed25519 -o StrictHostKeyChecking=no \\
  -o UserKnownHostsFile=/dev/null -o LogLevel=ERROR "\$@"
SH
chmod +x "$work/ssh"

# Where the host side's time goes: the bundle alone.
bundle_s=$(secs git -C "$repo" bundle create -q "$work/b.bundle" HEAD --branches --tags --remotes)
bundle_size=$(du -h "$work/b.bundle" | cut -f1)
rm -f "$work/b.bundle"

hangar_s=$(secs "$bin" workspace import wsb "$repo" --dest /bench/hangar)
"$bin" exec wsb -- mkdir -p /bench
ssh_s=$(secs sh -c "
  \"$work/ssh\" root@$ip 'git init -q -b main /bench/ssh && git -C /bench/ssh config receive.denyCurrentBranch ignore' &&
  GIT_SSH=\"$work/ssh\" git -C \"$repo\" push -q ssh://root@$ip/bench/ssh 'refs/heads/*:refs/heads/*' &&
  \"$work/ssh\" root@$ip 'git -C /bench/ssh reset -q --hard'")
h1=$("$bin" exec wsb -- git -C /bench/hangar rev-parse HEAD)
h2=$("$bin" exec wsb -- git -C /bench/ssh rev-parse HEAD)
n=$("$bin" exec wsb -- sh -c 'git -C /bench/hangar ls-files | wc -l')
[ "$h1" = "$h2" ] || { echo "HEADs differ: $h1 $h2" >&2; exit 1; }

printf "%-24s %10s %10s %8s\n" "import ($n files)" "hangar" "git+ssh" "ratio"
printf "%-24s %9ss %9ss %8s\n" "" "$hangar_s" "$ssh_s" "$(echo "scale=2; $hangar_s / $ssh_s" | bc)"
echo "host: git bundle create alone ${bundle_s}s ($bundle_size)"

# 100 commits on the guest's branch, made with fast-import (100 `git
# commit`s rewrite a 50,000-entry index each: minutes under emulation).
"$bin" exec wsb -- sh -c 'cd /bench/hangar && for i in $(seq 100); do
    printf "commit refs/heads/main\ncommitter Guest <guest@example.com> %d +0000\ndata 6\nguest\n" $((1700001000 + i))
    [ "$i" = 1 ] && printf "from refs/heads/main^0\n"
    printf "M 100644 inline guest-%d.txt\ndata %d\n%s\n" "$i" "${#i}" "$i"
  done | git fast-import --quiet'
export_s=$(secs "$bin" workspace export wsb --repo "$repo" --dest /bench/hangar)
count=$(git -C "$repo" rev-list --count main..hangar/wsb)
echo "export of $count guest commits: ${export_s}s"
