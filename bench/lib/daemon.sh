# Sourced by the benches: one hangar daemon ($bin) with its own state dir
# and its own network namespace, made here and removed on exit.
#   bench_daemon TAG MEMORY_MIB [EXTRA_CONFIG_LINE]
# sets $work (a 0711 temp dir), $ns, $daemon, exports HANGAR_CONFIG and
# waits until the daemon answers. On exit: bench_on_exit (if the bench
# defines it), every VM removed, the daemon stopped, the namespace and
# $work deleted. Only processes started here are stopped.
bench_daemon() {
  local tag=$1 memory=$2 extra=${3:-}
  work=$(mktemp -d "/tmp/hangar-$tag.XXXXXX")
  chmod 711 "$work"   # confined VMMs (their own uids) reach the state dir by path
  ns=hg$tag-$$
  daemon=""
  trap bench_cleanup EXIT
  ip netns add "$ns"
  cat > "$work/config.toml" <<CONF
state_dir = "$work/state"
runtime_dir = "$work/run"
$extra
[network]
netns = "$ns"
subnet = "10.213.31.0/24"
[vmm]
driver = "qemu"
[defaults]
memory_mib = $memory
CONF
  export HANGAR_CONFIG=$work/config.toml
  "$bin" daemon >"$work/daemon.log" 2>&1 &
  daemon=$!
  for _ in $(seq 200); do "$bin" vm ls >/dev/null 2>&1 && return 0; sleep 0.05; done
  echo "the daemon did not answer; its log: $work/daemon.log" >&2
  return 1
}

bench_cleanup() {
  set +eu
  declare -F bench_on_exit >/dev/null && bench_on_exit
  if [ -n "$daemon" ]; then
    for v in $("$bin" --json vm ls 2>/dev/null | python3 -c 'import json,sys; [print(v["name"]) for v in json.load(sys.stdin)]' 2>/dev/null); do
      "$bin" vm rm --force "$v" >/dev/null 2>&1
    done
    kill "$daemon" 2>/dev/null && wait "$daemon" 2>/dev/null
  fi
  ip netns del "$ns" 2>/dev/null
  rm -rf "$work"
}
