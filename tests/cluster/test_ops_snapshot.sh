#!/usr/bin/env bash
# Backup and restore: `kvcli snapshot save FILE` writes the store (300 keys,
# some with binary values) to a file that `kvcli snapshot verify` accepts;
# `kvd restore` makes three new data dirs from it, and the new cluster
# started on them holds exactly the saved data: byte for byte what the old
# cluster held at the save, none of the writes made after it. A copy with
# one flipped byte is refused by verify (exit 4, naming an offset) and by
# kvd restore (exit 4, no usable data dir left behind).
# Usage: test_ops_snapshot.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup ops_snapshot 275 "${1:?usage: test_ops_snapshot.sh BIN_DIR}"

KEYS=280    # text values
BINARY=20   # binary values, through `put KEY -`
NEW_PORT=("" $((KV_PORT[1] + 10)) $((KV_PORT[1] + 11)) $((KV_PORT[1] + 12))) # base+11..13
for p in "${NEW_PORT[1]}" "${NEW_PORT[2]}" "${NEW_PORT[3]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    kv_fail "port $p is already in use (set KV_TEST_PORT_BASE)"
  fi
done
NEW_PEERS="r1=127.0.0.1:${NEW_PORT[1]},r2=127.0.0.1:${NEW_PORT[2]},r3=127.0.0.1:${NEW_PORT[3]}"
NEW_ENDPOINTS="127.0.0.1:${NEW_PORT[1]},127.0.0.1:${NEW_PORT[2]},127.0.0.1:${NEW_PORT[3]}"
new_cli() { "$KV_BIN/kvcli" --cluster "$NEW_ENDPOINTS" "$@"; }

kv_start_all
kv_wait_leader

# The data: text values (one kvcli, commands from stdin), binary values of
# seeded sizes (NUL, newline, tab and every other byte), one of 200 KiB.
tag=$RANDOM
for ((n = 0; n < KEYS; n++)); do
  printf 'put k-text-%04d value-%d-%04d\n' "$n" "$tag" "$n"
done >"$KV_DIR/puts"
kv_expect 0 kv_cli --timeout 10 <"$KV_DIR/puts"
[ "$(grep -c '^OK$' "$KV_OUT")" -eq "$KEYS" ] ||
  kv_fail "writing $KEYS keys: only $(grep -c '^OK$' "$KV_OUT") OK"
mkdir "$KV_DIR/bin"
for ((n = 0; n < BINARY; n++)); do
  size=$((RANDOM % 3000))
  [ "$n" -eq 0 ] && size=$((200 * 1024))
  [ "$n" -eq 1 ] && size=0
  kv_random_bytes "$size" "$KV_DIR/bin/$n" "bin$n"
  kv_expect 0 kv_cli put "k-bin-$n" - <"$KV_DIR/bin/$n"
done

# Save, verify; what the old cluster holds now is what the file must hold.
kv_expect 0 kv_cli --timeout 30 snapshot save "$KV_DIR/backup.snap"
kv_log "snapshot save: $(head -c 300 "$KV_OUT" | tr '\n' ' ')"
[ -s "$KV_DIR/backup.snap" ] || kv_fail "snapshot save exited 0 but $KV_DIR/backup.snap is empty or absent"
[ ! -e "$KV_DIR/backup.snap.tmp" ] || kv_fail "snapshot save left backup.snap.tmp behind"
kv_expect 0 kv_cli snapshot verify "$KV_DIR/backup.snap"
kv_expect 0 kv_cli scan k-
cp "$KV_OUT" "$KV_DIR/saved.scan"
[ "$(wc -l <"$KV_DIR/saved.scan")" -eq $((KEYS + BINARY)) ] ||
  kv_fail "scan k- on the old cluster lists $(wc -l <"$KV_DIR/saved.scan") keys, want $((KEYS + BINARY))"

# Writes after the save: new keys, an overwrite, a delete.
kv_expect 0 kv_cli put k-after-save new
kv_expect 0 kv_cli put k-text-0000 overwritten-after-save
kv_expect 0 kv_cli del k-text-0001

# Restore into three new data dirs (a new cluster, new names and ports).
for i in 1 2 3; do
  kv_expect 0 "$KV_BIN/kvd" restore --from "$KV_DIR/backup.snap" --data-dir "$KV_DIR/r$i" \
    --name "r$i" --cluster "$NEW_PEERS"
  kv_log "kvd restore r$i: $(head -n 1 "$KV_OUT")"
done
new_start() { # I: the restored node rI, as KV_PIDS[3 + I] (the trap kills it)
  local i=$1
  KV_STARTS=$((KV_STARTS + 1))
  echo "=== test: start $KV_STARTS of r$i at $(date +%T.%N)" >>"$KV_DIR/new-r$i.log"
  "$KV_BIN/kvd" --name "r$i" --data-dir "$KV_DIR/r$i" --listen "127.0.0.1:${NEW_PORT[$i]}" \
    --cluster "$NEW_PEERS" >>"$KV_DIR/new-r$i.log" 2>&1 &
  KV_PIDS[3 + i]=$!
  kv__save_pids
}
new_start 1
new_start 2
new_start 3
new_leads() {
  new_cli --timeout 2 status 2>/dev/null | awk 'NR > 1 && $3 == "leader" { ok = 1 } END { exit !ok }'
}
kv_until 20 "the restored cluster electing a leader" new_leads

# Byte for byte: the escaped scans agree, and each binary value read raw
# equals the file it was written from.
kv_expect 0 new_cli scan k-
diff "$KV_DIR/saved.scan" "$KV_OUT" >"$KV_DIR/diff" || {
  head -n 20 "$KV_DIR/diff" >&2
  kv_fail "the restored cluster's data differs from the old cluster's at the save (diff above: < old, > restored)"
}
for ((n = 0; n < BINARY; n++)); do
  new_cli get "k-bin-$n" >"$KV_DIR/got" || kv_fail "get k-bin-$n on the restored cluster failed"
  # kvcli get, stdout a file: the value's bytes alone
  cmp -s "$KV_DIR/got" "$KV_DIR/bin/$n" ||
    kv_fail "k-bin-$n on the restored cluster is not the $(stat -c %s "$KV_DIR/bin/$n") bytes written"
done
kv_expect 1 new_cli get k-after-save
kv_expect 0 new_cli get k-text-0000
kv_expect_out "value-$tag-0000"
kv_expect 0 new_cli get k-text-0001
kv_expect_out "value-$tag-0001"
# and the old cluster kept its own (the two are separate clusters)
kv_expect 0 kv_cli get k-text-0000
kv_expect_out overwritten-after-save
kv_expect 0 new_cli put k-on-restored yes
kv_expect 1 kv_cli get k-on-restored

# One flipped byte (seeded place, in the stream: past the 48-byte header,
# before the 8-byte trailer).
size=$(stat -c %s "$KV_DIR/backup.snap")
off=$((48 + (RANDOM * 32768 + RANDOM) % (size - 56)))
cp "$KV_DIR/backup.snap" "$KV_DIR/bad.snap"
python3 - "$KV_DIR/bad.snap" "$off" <<'EOF'
import sys
path, off = sys.argv[1], int(sys.argv[2])
with open(path, "r+b") as f:
    f.seek(off)
    b = f.read(1)[0]
    f.seek(off)
    f.write(bytes([b ^ 0x10]))
EOF
kv_log "flipped bit 4 of byte $off of $size"
kv_expect 4 kv_cli snapshot verify "$KV_DIR/bad.snap"
named=$(cat "$KV_OUT" "$KV_ERR" | grep -Eo 'offset [0-9]+' | head -n 1 | cut -d' ' -f2) ||
  kv_fail "snapshot verify of a damaged file names no offset: $(cat "$KV_OUT" "$KV_ERR")"
grep -q CORRUPT "$KV_OUT" "$KV_ERR" ||
  kv_fail "snapshot verify of a damaged file does not say CORRUPT: $(cat "$KV_OUT" "$KV_ERR")"
# the offset named is where the damaged record starts: at or before the byte
[ "$named" -le "$off" ] ||
  kv_fail "snapshot verify names offset $named, past the flipped byte $off: $(cat "$KV_OUT" "$KV_ERR")"
kv_expect 4 "$KV_BIN/kvd" restore --from "$KV_DIR/bad.snap" --data-dir "$KV_DIR/bad" \
  --name r1 --cluster "$NEW_PEERS"
kv_expect_err CORRUPT
if [ -e "$KV_DIR/bad" ] && [ -n "$(ls -A "$KV_DIR/bad")" ]; then
  # something was left: kvd must refuse to start on it
  rc=0
  timeout 10 "$KV_BIN/kvd" --name r1 --data-dir "$KV_DIR/bad" --listen "127.0.0.1:$KV_SPARE_PORT" \
    --cluster "$NEW_PEERS" >"$KV_DIR/bad.log" 2>&1 || rc=$?
  [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] ||
    kv_fail "kvd restore from a damaged file left $(ls -A "$KV_DIR/bad" | tr '\n' ' ') and kvd started on it (exit $rc)"
fi
# The good file still restores (the damaged copy changed nothing of it).
kv_expect 0 kv_cli snapshot verify "$KV_DIR/backup.snap"

for i in 4 5 6; do
  kv_check_alive "$i"
  kv_stop "$i"
done
kv_stop_all
kv_pass
