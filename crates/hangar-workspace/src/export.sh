# Hangar workspace export: runs in the guest as the workspace's owner.
# Usage: sh -c "$SCRIPT" hangar-export DEST UNCOMMITTED(0|1)
# Points refs/hangar/export at HEAD (or, with UNCOMMITTED=1 and a dirty
# tree, at one extra commit holding the uncommitted state, made with a
# temporary index: the branch, index and files stay as they are) and writes
# a bundle of refs/hangar/base..refs/hangar/export to standard output.
# Exit 3: nothing to export.
set -eu
dest=$1
uncommitted=$2

fail() {
  printf 'hangar-export: %s\n' "$*" >&2
  exit 1
}

command -v git >/dev/null 2>&1 || fail "git is not installed in this VM"
cd -- "$dest" 2>/dev/null || fail "no workspace at $dest in this VM"
base=$(git rev-parse --verify -q 'refs/hangar/base^{commit}') ||
  fail "$dest was not imported by hangar (no refs/hangar/base)"
git config user.name >/dev/null || export GIT_AUTHOR_NAME=hangar GIT_COMMITTER_NAME=hangar
git config user.email >/dev/null || export GIT_AUTHOR_EMAIL=hangar@localhost GIT_COMMITTER_EMAIL=hangar@localhost
git rev-parse --verify -q HEAD >/dev/null || fail "HEAD in $dest has no commit"
if [ "$uncommitted" = 1 ] && [ -n "$(git status --porcelain)" ]; then
  idx=$(mktemp)
  trap 'rm -f -- "$idx"' EXIT
  cp -- "$(git rev-parse --git-path index)" "$idx"
  GIT_INDEX_FILE=$idx git add -A
  tree=$(GIT_INDEX_FILE=$idx git write-tree)
  commit=$(git commit-tree "$tree" -p HEAD -m "hangar: uncommitted changes in the VM")
  git update-ref refs/hangar/export "$commit"
else
  git update-ref refs/hangar/export HEAD
fi
count=$(git rev-list --count "$base..refs/hangar/export")
if [ "$count" -eq 0 ]; then
  printf 'hangar-export: no commits since the import\n' >&2
  exit 3
fi
git bundle create -q - "$base..refs/hangar/export"
