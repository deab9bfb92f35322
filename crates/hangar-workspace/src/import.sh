# Hangar workspace import: runs in the guest as root (POSIX sh + git + tar),
# reading a pack (crates/hangar-workspace/src/pack.rs) on standard input.
# Usage: sh -c "$SCRIPT" hangar-import DEST FORCE(0|1) OWNER
# Everything is built in a temp dir beside DEST and renamed into place only
# once complete: a failure leaves DEST as it was.
set -eu
umask 022
dest=$1
force=$2
owner=$3

fail() {
  printf 'hangar-import: %s\n' "$*" >&2
  exit 1
}

command -v git >/dev/null 2>&1 || fail "git is not installed in this VM (the image needs git)"
command -v tar >/dev/null 2>&1 || fail "tar is not installed in this VM"
case $dest in
/*) ;;
*) fail "the destination must be an absolute path: $dest" ;;
esac
case $dest in
*/) dest=${dest%/} ;;
esac
[ -n "$dest" ] || fail "the destination cannot be /"
uid=$(id -u -- "$owner") || fail "no user $owner in this VM"
gid=$(id -g -- "$owner")
if [ -e "$dest" ] || [ -L "$dest" ]; then
  [ "$force" = 1 ] || fail "$dest already exists in the VM (--force replaces it)"
fi

parent=$(dirname -- "$dest")
if [ ! -d "$parent" ]; then
  mkdir -p -- "$parent"
  chown -- "$uid:$gid" "$parent"
fi
tmp=$(mktemp -d "$parent/.hangar-import.XXXXXX")
trap 'cd / && rm -rf -- "$tmp"' EXIT
trap 'exit 1' HUP INT TERM
pack=$tmp/pack
work=$tmp/work
mkdir -- "$pack"
# The host's uids mean nothing here: everything is owned by OWNER below.
tar -x -f - -C "$pack" --no-same-owner || fail "cannot unpack the workspace stream"
[ -f "$pack/end" ] || fail "the workspace stream is incomplete (the host side stopped early)"
kind=$(cat "$pack/meta/kind")

if [ "$kind" = plain ]; then
  mkdir -- "$work"
  cp -a -- "$pack/files/." "$work/"
elif [ "$kind" = git ]; then
  head=$(cat "$pack/meta/head")
  branch=$(cat "$pack/meta/branch")
  git -c init.defaultBranch=main init -q -- "$work"
  cd "$work"
  if [ -f "$pack/meta/shallow" ]; then
    cp -- "$pack/meta/shallow" .git/shallow
  fi
  git fetch -q --no-tags --update-head-ok "$pack/repo.bundle" \
    '+refs/*:refs/*' '+HEAD:refs/hangar/base' || fail "cannot read the history bundle"
  if [ -n "$branch" ]; then
    git symbolic-ref HEAD "refs/heads/$branch"
  else
    git update-ref --no-deref HEAD "$head"
  fi
  [ "$(git rev-parse --verify -q HEAD)" = "$head" ] || fail "the bundle does not hold HEAD $head"
  git update-ref refs/hangar/base "$head"
  git reset -q --hard
  if [ -s "$pack/staged.patch" ]; then
    git apply --index --whitespace=nowarn "$pack/staged.patch" || fail "cannot apply the staged changes"
  fi
  if [ -s "$pack/unstaged.patch" ]; then
    git apply --whitespace=nowarn "$pack/unstaged.patch" || fail "cannot apply the unstaged changes"
  fi
  # Submodules: each from its own bundle, at the commit it was at on the
  # host, its origin the URL .gitmodules gives.
  if [ -d "$pack/submodules" ]; then
    for sub in "$pack"/submodules/*; do
      path=$(cat "$sub/path")
      sub_head=$(cat "$sub/head")
      rmdir -- "$work/$path" 2>/dev/null || true
      git clone -q --no-checkout "$sub/repo.bundle" "$work/$path" || fail "cannot read the bundle of submodule $path"
      git -C "$work/$path" checkout -q --detach "$sub_head" || fail "cannot check out submodule $path"
      name=$(git config -f .gitmodules --get-regexp '^submodule\..*\.path$' | while read -r key p; do
        if [ "$p" = "$path" ]; then
          key=${key#submodule.}
          printf '%s\n' "${key%.path}"
        fi
      done)
      url=
      if [ -n "$name" ]; then
        url=$(git config -f .gitmodules --get "submodule.$name.url" || true)
      fi
      if [ -n "$url" ]; then
        git -C "$work/$path" remote set-url origin "$url"
        git submodule init -q -- "$path" || true
      else
        git -C "$work/$path" remote remove origin
      fi
    done
  fi
  if [ -d "$pack/untracked" ]; then
    cp -a -- "$pack/untracked/." "$work/"
  fi
  # Remotes: NAME and URL lines, in pairs.
  if [ -f "$pack/meta/remotes" ]; then
    while IFS= read -r name && IFS= read -r url; do
      git remote add "$name" "$url"
    done <"$pack/meta/remotes"
  fi
  if [ -n "$branch" ] && [ -f "$pack/meta/upstream" ]; then
    { IFS= read -r up_remote && IFS= read -r up_merge; } <"$pack/meta/upstream"
    git config "branch.$branch.remote" "$up_remote"
    git config "branch.$branch.merge" "$up_merge"
  fi
  if [ -f "$pack/meta/user.name" ]; then
    git config user.name "$(cat "$pack/meta/user.name")"
  fi
  if [ -f "$pack/meta/user.email" ]; then
    git config user.email "$(cat "$pack/meta/user.email")"
  fi
  # Refresh the index's stat data, so the first `git status` is quick.
  git update-index -q --refresh >/dev/null || true
  cd /
else
  fail "unknown workspace kind: $kind"
fi

# Everything was made by this script's user: a tree for that same user
# needs no walk (50,000 chowns are seconds under emulation).
if [ "$uid:$gid" != "$(id -u):$(id -g)" ]; then
  chown -R -- "$uid:$gid" "$work"
fi
if [ -e "$dest" ] || [ -L "$dest" ]; then
  [ "$force" = 1 ] || fail "$dest appeared in the VM during the import"
  mv -- "$dest" "$tmp/replaced"
fi
mv -T -- "$work" "$dest"
printf 'hangar-import: %s ready\n' "$dest" >&2
