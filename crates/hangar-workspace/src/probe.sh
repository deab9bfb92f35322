# Hangar workspace probe: runs in the guest as the default user of the
# image, before anything is sent. Usage: sh -c "$SCRIPT" hangar-probe DEST
# Prints "user NAME", "git yes|no", "tar yes|no", "dest exists|absent".
set -eu
printf 'user %s\n' "$(id -un)"
if command -v git >/dev/null 2>&1; then echo "git yes"; else echo "git no"; fi
if command -v tar >/dev/null 2>&1; then echo "tar yes"; else echo "tar no"; fi
if [ -e "$1" ] || [ -L "$1" ]; then echo "dest exists"; else echo "dest absent"; fi
