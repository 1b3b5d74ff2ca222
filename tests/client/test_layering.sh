#!/usr/bin/env bash
# Dependencies point down: libkvclient (shared and static) and kvcli take
# nothing of src/storage but the snapshot formats (src/snapfile, kvsnapfile),
# and so never RocksDB. Checks each binary's NEEDED entries, its symbols
# (which also catch a static RocksDB or a storage object pulled in), and the
# pkg-config and CMake package files a user gets.
# Usage: test_layering.sh KVCLI LIBKVCLIENT_SO LIBKVCLIENT_A KVCLIENT_PC KVCLIENT_CONFIG
set -u
[ $# -eq 5 ] || { echo "usage: $0 KVCLI LIBKVCLIENT_SO LIBKVCLIENT_A KVCLIENT_PC KVCLIENT_CONFIG"; exit 2; }
kvcli=$1 so=$2 archive=$3 pc=$4 config=$5
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

# Code of src/storage beyond kvsnapfile: the state machine, snapshots on
# disk, the log, the file layer. Any of these names in a binary means a
# storage object was linked in.
storage='^(rocksdb_|sm_open$|sm__|snap_create$|snap_reader_open$|snap_recv_begin$|snap__|wal_open$|hs_save$|kv_fs_)'

for f in "$kvcli" "$so"; do
  [ -f "$f" ] || { fail "$f is not built"; continue; }
  needed=$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
  [ -n "$needed" ] || fail "$f: no NEEDED entries read (readelf failed?)"
  echo "$f NEEDED: $(echo $needed)"
  echo "$needed" | grep -qi rocksdb && fail "$f needs $(echo "$needed" | grep -i rocksdb)"
done
for f in "$kvcli" "$so" "$archive"; do
  [ -f "$f" ] || { fail "$f is not built"; continue; }
  syms=$(nm -a "$f" 2>/dev/null | awk 'NF >= 2 {print $NF}')
  [ -n "$syms" ] || fail "$f: no symbols read (stripped, or nm failed?)"
  bad=$(echo "$syms" | grep -E "$storage" | sort -u | head -5)
  [ -z "$bad" ] || fail "$f holds storage-layer code: $(echo $bad)"
  # what it must hold: the snapshot file format (kv_snapshot_save writes it)
  echo "$syms" | grep -q '^snapfile_header_encode$' ||
    fail "$f lacks snapfile_header_encode (kvsnapfile not linked the way this test expects)"
done
for f in "$pc" "$config"; do
  [ -f "$f" ] || { fail "$f is not generated"; continue; }
  grep -qi rocksdb "$f" && fail "$f names RocksDB"
done

[ "$fails" -eq 0 ] && echo "ok: kvcli and libkvclient link no RocksDB and no storage code" && exit 0
exit 1
