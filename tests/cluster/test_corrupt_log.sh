#!/usr/bin/env bash
# A corrupted record in the middle of a node's log (valid records after
# it): `kvd check` and kvd itself refuse it with exit 4, naming the file and
# the offset, and the file is left as it was (never truncated silently).
# The other two nodes keep serving.
# Usage: test_corrupt_log.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup corrupt_log 7 "${1:?usage: test_corrupt_log.sh BIN_DIR}"

KEYS=200
kv_start_all
kv_wait_leader
for ((n = 0; n < KEYS; n++)); do
  printf 'put key-%04d value-%04d-%s\n' "$n" "$n" "$(head -c 40 /dev/zero | tr '\0' x)"
done >"$KV_DIR/puts"
kv_expect 0 kv_cli --timeout 10 <"$KV_DIR/puts"

# Stop a node and check its data dir is clean first.
v=3
kv_stop "$v"
d=$KV_DIR/n$v
kv_expect 0 "$KV_BIN/kvd" check --data-dir "$d"

# The segment holding the records; segments are zero-filled past them.
seg=""
best=0
for f in "$d"/wal/*.wal; do
  [ -e "$f" ] || kv_fail "no WAL segment in $d/wal: $(ls -la "$d" "$d/wal" 2>&1)"
  e=$(python3 -c 'import sys; print(len(open(sys.argv[1],"rb").read().rstrip(b"\0")))' "$f")
  if [ "$e" -gt "$best" ]; then seg=$f best=$e; fi
done
[ "$best" -gt 8192 ] || kv_fail "the log of n$v holds only $best bytes after $KEYS writes"

# Flip a non-zero byte near the middle (seeded), inside a record.
off=$(python3 -c '
import sys
b = open(sys.argv[1], "rb").read()
o = int(sys.argv[2])
while b[o] == 0:
    o += 1
print(o)' "$seg" $((best / 2 + RANDOM % 256)))
kv_log "flipping the byte at offset $off of $seg (records end at $best)"
old=$(od -An -tu1 -j "$off" -N1 "$seg" | tr -d ' ')
printf "$(printf '\\%03o' $((255 - old)))" | dd of="$seg" bs=1 seek="$off" conv=notrunc status=none
sum=$(md5sum <"$seg")
size=$(stat -c %s "$seg")

kv_expect 4 "$KV_BIN/kvd" check --data-dir "$d"
grep -q "^CORRUPT $seg offset [0-9]" "$KV_OUT" ||
  kv_fail "kvd check did not name $seg and an offset: $(head -c 500 "$KV_OUT")"

# kvd itself refuses to start on it.
rc=0
timeout 30 "$KV_BIN/kvd" --name "n$v" --data-dir "$d" --listen "$(kv_addr "$v")" \
  --cluster "$KV_PEERS" >"$KV_DIR/start.out" 2>&1 || rc=$?
cat "$KV_DIR/start.out" >>"$KV_DIR/n$v.log"
[ "$rc" -ne 124 ] || kv_fail "kvd started on a log corrupted in the middle and kept running (30 s)"
[ "$rc" -eq 4 ] || kv_fail "kvd on a log corrupted in the middle exited $rc, want 4"
grep -q "$(basename "$seg")" "$KV_DIR/start.out" ||
  kv_fail "kvd's refusal does not name the segment $(basename "$seg"): $(head -c 500 "$KV_DIR/start.out")"
grep -Eq "offset [0-9]+" "$KV_DIR/start.out" ||
  kv_fail "kvd's refusal does not give the offset: $(head -c 500 "$KV_DIR/start.out")"
[ "$(md5sum <"$seg")" = "$sum" ] && [ "$(stat -c %s "$seg")" -eq "$size" ] ||
  kv_fail "kvd changed the corrupt segment $seg (it must never truncate or repair it silently)"

# The two others still serve every key.
kv_expect 0 kv_cli get key-0000
kv_expect_out "value-0000-$(head -c 40 /dev/zero | tr '\0' x)"
kv_expect 0 kv_cli put after corrupt
kv_stop 1
kv_stop 2
kv_pass
