#!/usr/bin/env bash
# End-to-end check of the golden image (slow: minutes; not part of the test
# suite). As root, from anywhere in the repo:
#   images/golden/check.sh
# 1. starts its own Hangar daemon (own config, state dir and network
#    namespace) and builds/loads the default image `debian-12`;
# 2. makes the base image from the default image's rootfs (loop-mounted
#    read-only, buildah from scratch + cp -a) and pushes it to Debian's
#    `docker-registry` on 127.0.0.1;
# 3. `buildah bud` of images/golden/Dockerfile FROM it (timed), pushed;
# 4. `hangar image pull REG/hangar/golden:check --insecure`, boots a VM;
# 5. as the image's user `dev`: tmux -V, mise --version, opencode --version,
#    sudo -n true, docker info, and `docker run` of a local image made from
#    the guest's static busybox (no Docker Hub);
# 6. prints the sizes (compressed layers, rootfs) and the build time.
# Everything made here (daemon, VM, namespace, registry, buildah storage,
# loop mount, temp dir) is removed on exit; only processes started here are
# stopped, by PID.
# env: HANGAR=path/to/hangar (default: target/debug/hangar of this repo),
#      ACCEL=auto|kvm|tcg (default auto), VM_MEMORY (default 2G),
#      HOLD=1: keep everything up after the checks until $WORK/release is
#      removed (for poking at the VM; the config path is printed).
{ # read the whole script before running it (safe to edit while it runs)
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
bin=${HANGAR:-$repo/target/debug/hangar}
accel=${ACCEL:-auto}
vm_memory=${VM_MEMORY:-2G}
[ "$(id -u)" = 0 ] || { echo "run as root" >&2; exit 2; }
[ -x "$bin" ] || { echo "no hangar binary at $bin (cargo build -p hangar, or HANGAR=...)" >&2; exit 2; }
for t in buildah docker-registry skopeo python3; do
	command -v "$t" >/dev/null || { echo "needs $t (apt-get install buildah docker-registry skopeo)" >&2; exit 2; }
done

work=$(mktemp -d /tmp/hangar-golden.XXXXXX)
chmod 711 "$work"   # confined VMMs reach the state dir by path
ns=hggolden-$$
daemon_pid=""
registry_pid=""
rootfs_mnt=$work/rootfs
fails=0
h() { "$bin" --config "$work/config.toml" "$@"; }
b() { BUILDAH_ISOLATION=chroot buildah --root "$work/buildah/storage" --runroot "$work/buildah/run" --storage-driver vfs "$@"; }
policy=$work/buildah/policy.json
say() { printf '\n== %s\n' "$*"; }

cleanup() {
	set +eu
	if [ -n "$daemon_pid" ]; then
		for v in $(h --json vm ls 2>/dev/null | python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin)]' 2>/dev/null); do
			h vm rm --force "$v" >/dev/null 2>&1
		done
		kill "$daemon_pid" 2>/dev/null && wait "$daemon_pid" 2>/dev/null
	fi
	[ -n "$registry_pid" ] && kill "$registry_pid" 2>/dev/null && wait "$registry_pid" 2>/dev/null
	mountpoint -q "$rootfs_mnt" 2>/dev/null && umount "$rootfs_mnt"
	if [ -d "$work/buildah" ]; then
		b umount --all >/dev/null 2>&1
		b rm --all >/dev/null 2>&1
		b rmi --all --force >/dev/null 2>&1
	fi
	ip netns del "$ns" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

# --- 1. daemon
ip netns add "$ns"
cat > "$work/config.toml" <<CONF
state_dir = "$work/state"
runtime_dir = "$work/run"
image_cache_dir = "/var/cache/hangar/images"
[network]
netns = "$ns"
bridge = "hgbr0"
subnet = "10.213.61.0/24"
tap_pool_size = 1
[vmm]
driver = "qemu"
accel = "$accel"
boot_timeout_secs = 180
[defaults]
cpus = 2
memory_mib = 1024
CONF
"$bin" daemon --config "$work/config.toml" >"$work/daemon.log" 2>&1 &
daemon_pid=$!
for _ in $(seq 600); do h vm ls >/dev/null 2>&1 && break; sleep 0.1; done
h vm ls >/dev/null 2>&1 || { echo "the daemon did not come up:" >&2; tail -20 "$work/daemon.log" >&2; exit 1; }
say "default image"
h image pull debian-12 >/dev/null
digest=$(h --json image show debian-12 | python3 -c 'import json,sys; print(json.load(sys.stdin)["digest"].split(":")[-1])')
default_rootfs=$work/state/images/$digest/rootfs.ext4
[ -f "$default_rootfs" ] || { echo "no rootfs at $default_rootfs" >&2; exit 1; }

# --- 2. registry and base image
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
reg=127.0.0.1:$port
mkdir -p "$work/registry/storage" "$work/buildah"
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
docker-registry serve "$work/registry/config.yml" >"$work/registry/registry.log" 2>&1 </dev/null &
registry_pid=$!
for _ in $(seq 200); do (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break; sleep 0.1; done
echo '{"default":[{"type":"insecureAcceptAnything"}]}' > "$policy"

say "base image from the default image's rootfs -> $reg/hangar/base:12"
t0=$(date +%s)
mkdir -p "$rootfs_mnt"
mount -o loop,ro,noload "$default_rootfs" "$rootfs_mnt"
ctr=$(b from --signature-policy "$policy" scratch)
mnt=$(b mount "$ctr")
cp -a "$rootfs_mnt/." "$mnt"
# Plain files as in any base image, not Hangar's links to the config drive.
for f in etc/resolv.conf etc/hosts etc/hostname; do rm -f "$mnt/$f"; : > "$mnt/$f"; done
b umount "$ctr" >/dev/null
umount "$rootfs_mnt"
b commit --quiet --signature-policy "$policy" "$ctr" hangar-base >/dev/null
b rm "$ctr" >/dev/null
b push --quiet --signature-policy "$policy" --tls-verify=false hangar-base "docker://$reg/hangar/base:12"
base_secs=$(( $(date +%s) - t0 ))
echo "base image made and pushed in ${base_secs}s"

# --- 3. the golden image
say "buildah bud images/golden -> $reg/hangar/golden:check"
t0=$(date +%s)
# Behind a TLS-intercepting proxy (a CA of the host's own in
# /usr/local/share/ca-certificates) npm needs that CA during the build: the
# host's bundle is mounted for the build only (BUILD_CA= to not pass one).
build_ca=${BUILD_CA-}
if [ -z "${BUILD_CA+set}" ] && ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
	build_ca=/etc/ssl/certs/ca-certificates.crt
fi
ca_args=()
[ -n "$build_ca" ] && ca_args=(-v "$build_ca:/run/build-ca.crt:ro" --build-arg NPM_CAFILE=/run/build-ca.crt)
if ! b bud --signature-policy "$policy" --tls-verify=false --isolation chroot "${ca_args[@]}" \
	--build-arg "BASE=$reg/hangar/base:12" -t golden "$here" 2>&1 | tee "$work/build.log" \
	| { grep -E --line-buffered '^(STEP|COMMIT)|Error|error:|ERR!' || true; }; then
	echo "buildah bud failed:" >&2; tail -40 "$work/build.log" >&2; exit 1
fi
build_secs=$(( $(date +%s) - t0 ))
t0=$(date +%s)
b push --quiet --signature-policy "$policy" --tls-verify=false golden "docker://$reg/hangar/golden:check"
push_secs=$(( $(date +%s) - t0 ))
echo "built in ${build_secs}s, pushed in ${push_secs}s"
# Compressed sizes from the registry's manifests (the layers as pulled).
layer_sizes() {
	skopeo inspect --raw --tls-verify=false "docker://$reg/$1" \
		| python3 -c 'import json,sys; m=json.load(sys.stdin); print(sum(l["size"] for l in m["layers"]), len(m["layers"]))'
}
read -r golden_c golden_n < <(layer_sizes hangar/golden:check)
read -r base_c _ < <(layer_sizes hangar/base:12)

# --- 4. pull and boot
say "hangar image pull $reg/hangar/golden:check --insecure"
t0=$(date +%s)
h image pull "$reg/hangar/golden:check" --insecure >/dev/null
pull_secs=$(( $(date +%s) - t0 ))
h --json image show golden > "$work/golden.json"
python3 -m json.tool < "$work/golden.json"
gdigest=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["digest"].split(":")[-1])' "$work/golden.json")
gdir=$work/state/images/$gdigest
rootfs_file=$(stat -c %s "$gdir/rootfs.ext4")
mkdir -p "$rootfs_mnt"
mount -o loop,ro,noload "$gdir/rootfs.ext4" "$rootfs_mnt"
rootfs_used=$(du -sxb "$rootfs_mnt" | cut -f1)
umount "$rootfs_mnt"

say "vm create golden (memory $vm_memory)"
t0=$(date +%s)
h vm create golden --image golden --memory "$vm_memory" >/dev/null
boot_secs=$(( $(date +%s) - t0 ))

# --- 5. checks, as the image's user (no -u: the image's USER, dev)
# check NAME EXPECTED-REGEX COMMAND...
check() {
	local name=$1 want=$2; shift 2
	local out rc=0
	out=$(h exec golden -- "$@" 2>&1) || rc=$?
	if [ $rc = 0 ] && printf '%s' "$out" | grep -Eq -- "$want"; then
		printf 'ok    %-28s %s\n' "$name" "$(printf '%s' "$out" | tail -1)"
	else
		printf 'FAIL  %-28s rc=%s\n%s\n' "$name" "$rc" "$out" | sed 's/^/      /'
		fails=$((fails + 1))
	fi
}
say "checks as the image's user"
check "whoami / pwd" '^dev /home/dev$' sh -c 'echo "$(whoami) $(pwd)"'
check "id (docker group)" 'docker' id
check "tmux -V" '^tmux [0-9]' tmux -V
check "git --version" '^git version' git --version
check "node --version" '^v[0-9]+' node --version
check "mise --version" '[0-9]{4}\.[0-9]+\.[0-9]+' mise --version
check "opencode --version" '^[0-9]+\.[0-9]+\.[0-9]+' opencode --version
check "sudo -n true" '^sudo-ok$' sh -c 'sudo -n true && echo sudo-ok'
check "cgroup2 mounted" 'cgroup2' sh -c 'grep " /sys/fs/cgroup " /proc/mounts'
# dockerd starts in the background at boot: wait for its socket.
check "dockerd up" '^up$' sh -c 'for i in $(seq 120); do sudo -n docker info >/dev/null 2>&1 && { echo up; exit 0; }; sleep 0.5; done; echo "dockerd not up:"; sudo -n tail -30 /var/log/dockerd.log; exit 1'
check "docker info (as dev)" 'overlay2' docker info --format '{{.ServerVersion}} storage {{.Driver}}, cgroup v{{.CgroupVersion}} {{.CgroupDriver}}, kernel {{.KernelVersion}}'
check "docker import busybox" 'sha256:' sh -c 'tar -C / -ch bin/busybox | docker import - bb'
check "docker run --network none" '^hi$' docker run --rm --network none bb /bin/busybox echo hi
check "docker run (default bridge)" '^hi$' docker run --rm bb /bin/busybox echo hi
check "container sees its bridge net" 'eth0' docker run --rm bb /bin/busybox ip -o addr

check "kernel modules loaded" 'overlay' sh -c 'cut -d" " -f1 /proc/modules | sort | tr "\n" " "'

say "summary"
mib() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }
echo "base image (default rootfs):   compressed $(mib "$base_c")"
echo "golden image:                  compressed $(mib "$golden_c") in $golden_n layers ($(mib $((golden_c - base_c))) on top of the base)"
echo "golden rootfs:                 $(mib "$rootfs_used") used, rootfs.ext4 file $(mib "$rootfs_file")"
echo "times: base ${base_secs}s, buildah bud ${build_secs}s, push ${push_secs}s, hangar pull ${pull_secs}s, vm create ${boot_secs}s"
echo "checks failed: $fails"

if [ "${HOLD:-}" = 1 ]; then
	touch "$work/release"
	echo "HOLD: config $work/config.toml; rm $work/release to clean up"
	while [ -e "$work/release" ]; do sleep 2; done
fi
[ "$fails" = 0 ]
exit
}
