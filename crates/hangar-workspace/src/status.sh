# Hangar workspace status: runs in the guest as the workspace's owner.
# Usage: sh -c "$SCRIPT" hangar-status DEST
# Prints "branch NAME" (empty when detached), "head SHA", "base SHA",
# "ahead N", then a NUL and `git status --porcelain -z`.
set -eu
dest=$1

fail() {
  printf 'hangar-status: %s\n' "$*" >&2
  exit 1
}

command -v git >/dev/null 2>&1 || fail "git is not installed in this VM"
cd -- "$dest" 2>/dev/null || fail "no workspace at $dest in this VM"
base=$(git rev-parse --verify -q 'refs/hangar/base^{commit}') ||
  fail "$dest was not imported by hangar (no refs/hangar/base)"
printf 'branch %s\n' "$(git symbolic-ref -q --short HEAD || true)"
printf 'head %s\n' "$(git rev-parse --verify -q HEAD || true)"
printf 'base %s\n' "$base"
printf 'ahead %s\n' "$(git rev-list --count "$base..HEAD")"
printf '\000'
git status --porcelain -z
