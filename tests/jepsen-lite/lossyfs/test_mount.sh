#!/usr/bin/env bash
# lossyfs mounted, through real syscalls: a synced file and a synced rename
# survive a crash; an unsynced write, an unsynced create and an unsynced
# rename do not. Needs root and /dev/fuse: exits 77 (skip) without them.
#   test_mount.sh LOSSYFS
set -euo pipefail
prog=$1
if [ "$(id -u)" -ne 0 ] || [ ! -c /dev/fuse ]; then
  echo "SKIP: lossyfs_mount needs root and /dev/fuse"
  exit 77
fi
dir=$(mktemp -d /tmp/lossyfs-test.XXXXXX)
mnt=$dir/mnt
mkdir "$mnt"
"$prog" "$mnt" 2>"$dir/lossyfs.log" &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  umount -l "$mnt" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
for _ in $(seq 100); do
  [ -e "$mnt/.lossyfs-crash" ] && break
  sleep 0.05
done
[ -e "$mnt/.lossyfs-crash" ] || { echo "lossyfs did not mount"; cat "$dir/lossyfs.log"; exit 1; }
python3 - "$mnt" <<'PY'
import os, sys
m = sys.argv[1]
def fsync_dir(d):
    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY); os.fsync(fd); os.close(fd)
def write(p, data, sync):
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644); os.write(fd, data)
    if sync: os.fsync(fd)
    os.close(fd)
def read(p):
    try:
        with open(p, 'rb') as f: return f.read()
    except FileNotFoundError: return None
def crash():
    fd = os.open(m + '/.lossyfs-crash', os.O_WRONLY); os.write(fd, b'x'); os.close(fd)
os.mkdir(m + '/d'); fsync_dir(m)
write(m + '/d/synced', b'kept', True); fsync_dir(m + '/d')
write(m + '/d/synced', b'-lost', False)          # appended? no: overwrite at 0
fd = os.open(m + '/d/synced', os.O_WRONLY | os.O_APPEND); os.write(fd, b'+more'); os.close(fd)
write(m + '/d/nodirsync', b'x', True)              # file synced, entry not
write(m + '/d/tmp', b'new', True); os.rename(m + '/d/tmp', m + '/d/renamed')
os.link(m + '/d/synced', m + '/d/hard')
assert read(m + '/d/renamed') == b'new'
crash()
got = {n: read(m + '/d/' + n) for n in ['synced', 'nodirsync', 'tmp', 'renamed', 'hard']}
want = {'synced': b'kept', 'nodirsync': None, 'tmp': None, 'renamed': None, 'hard': None}
assert got == want, got
write(m + '/d/tmp2', b'v2', True); fsync_dir(m + '/d')
os.rename(m + '/d/tmp2', m + '/d/final'); fsync_dir(m + '/d')
os.truncate(m + '/d/final', 1)
crash()
assert read(m + '/d/final') == b'v2', read(m + '/d/final')
assert read(m + '/d/tmp2') is None
print('lossyfs_mount: ok')
PY
