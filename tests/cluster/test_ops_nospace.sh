#!/usr/bin/env bash
# The disk quota: with --quota-bytes a few MB over what an idle data dir
# takes, 64 KiB writes fill it until the leader refuses writes with NOSPACE
# (kvcli exit 4, NOSPACE on stderr); reads and deletes still work; once
# the keys are deleted the nodes give the space back by themselves
# (compaction, snapshots, old log segments dropped) and writes are
# accepted again without an operator.
# Usage: test_ops_nospace.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup ops_nospace 277 "${1:?usage: test_ops_nospace.sh BIN_DIR}"

VALUE_BYTES=65536
HEADROOM_BYTES=$((8 * 1024 * 1024)) # the quota over an idle data dir
WRITES_MAX=400                      # 25 MiB: three times the headroom
CLEAR_S=30                          # the alarm must clear within this
# Small log segments (kvd's minimum is about 4.2 MB), so that dropping old
# ones frees space; a snapshot every 20 entries lets them go.
KV_EXTRA_FLAGS=(--wal-segment-bytes 4300000 --snapshot-entries 20)

MPORT=("" $((KV_PORT[1] + 5)) $((KV_PORT[1] + 6)) $((KV_PORT[1] + 7))) # base+6..8
for p in "${MPORT[1]}" "${MPORT[2]}" "${MPORT[3]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    kv_fail "metrics port $p is already in use (set KV_TEST_PORT_BASE)"
  fi
done
# ops_metric I NAME: NAME's value in node I's /metrics.
ops_metric() {
  curl -sf --max-time 3 "http://127.0.0.1:${MPORT[$1]}/metrics" >"$KV_DIR/m$1" ||
    kv_fail "GET /metrics on n$1 failed"
  awk -v n="$2" '$1 == n { print $2; found = 1 } END { exit !found }' "$KV_DIR/m$1" ||
    kv_fail "n$1's /metrics has no $2"
}
start_all() {
  local i
  for i in 1 2 3; do
    kv_start "$i" --metrics "127.0.0.1:${MPORT[$i]}"
  done
}

# What kvd counts against the quota: allocated bytes, a hard-linked file
# once (du does the same within one run).
usage() { du -sB1 "$KV_DIR/n$1" | cut -f1; }

start_all
kv_wait_leader
kv_expect 0 kv_cli put warm-up x
sleep 1.5 # let RocksDB and the log settle their files
used=0
for i in 1 2 3; do
  u=$(usage "$i")
  [ "$u" -gt "$used" ] && used=$u
done
quota=$((used + HEADROOM_BYTES))
kv_log "idle data dirs use at most $used bytes; restarting with --quota-bytes $quota"
kv_stop_all
KV_EXTRA_FLAGS+=(--quota-bytes "$quota")
start_all
kv_wait_leader

kv_random_bytes "$VALUE_BYTES" "$KV_DIR/value" v
n=0
rc=0
while [ "$n" -lt "$WRITES_MAX" ]; do
  n=$((n + 1))
  rc=0
  kv_cli --timeout 5 put "big-$n" - <"$KV_DIR/value" >"$KV_DIR/put.out" 2>"$KV_DIR/put.err" || rc=$?
  [ "$rc" -eq 0 ] || break
done
[ "$rc" -ne 0 ] ||
  kv_fail "$WRITES_MAX writes of $VALUE_BYTES bytes ($((WRITES_MAX * VALUE_BYTES)) bytes) never got NOSPACE with --quota-bytes $quota (data dirs: $(usage 1) $(usage 2) $(usage 3))"
[ "$rc" -eq 4 ] && grep -q NOSPACE "$KV_DIR/put.err" ||
  kv_fail "write $n failed with exit $rc, want 4 and NOSPACE: $(cat "$KV_DIR/put.err")"
stored=$((n - 1))
kv_log "write $n refused: $(head -n 1 "$KV_DIR/put.err") (data dirs: $(usage 1) $(usage 2) $(usage 3))"
[ "$stored" -ge 10 ] || kv_fail "NOSPACE after only $stored writes; the quota leaves $HEADROOM_BYTES bytes"

# The leader says so where an operator looks: its metrics.
kv_wait_leader
L=$KV_LEADER_I
[ "$(ops_metric "$L" kv_nospace_alarm)" = 1 ] ||
  kv_fail "the leader n$L refuses writes with NOSPACE but its kv_nospace_alarm is $(ops_metric "$L" kv_nospace_alarm)"
[ "$(ops_metric "$L" kv_disk_quota_bytes)" = "$quota" ] ||
  kv_fail "kv_disk_quota_bytes is $(ops_metric "$L" kv_disk_quota_bytes), want $quota"
[ "$(ops_metric "$L" kv_disk_used_bytes)" -gt "$quota" ] ||
  kv_fail "kv_disk_used_bytes $(ops_metric "$L" kv_disk_used_bytes) is not over the quota $quota during the alarm"
[ "$(ops_metric "$L" kv_nospace_total)" -ge 1 ] ||
  kv_fail "kv_nospace_total on the leader is $(ops_metric "$L" kv_nospace_total) after a refused write"

# Still refused a moment later (the alarm holds), any write.
kv_expect 4 kv_cli put small x
kv_expect_err NOSPACE
# Reads work, linearizable and stale; so does a scan.
kv_expect 0 kv_cli get big-1
cmp -s "$KV_OUT" "$KV_DIR/value" || kv_fail "get big-1 during NOSPACE returned other bytes"
kv_expect 0 kv_cli get --stale "big-$stored"
kv_expect 0 kv_cli scan big- --limit 3
# Deletes work: every key written.
for ((k = 1; k <= stored; k++)); do echo "del big-$k"; done >"$KV_DIR/dels"
kv_expect 0 kv_cli --timeout 10 <"$KV_DIR/dels"
[ "$(grep -c '^OK$' "$KV_OUT")" -eq "$stored" ] ||
  kv_fail "deleting $stored keys during NOSPACE: only $(grep -c '^OK$' "$KV_OUT") OK: $(grep -v '^OK$' "$KV_OUT" | head -n 3)"
kv_expect 1 kv_cli get big-1

# The alarm clears by itself: a write goes through within CLEAR_S.
deadline=$((SECONDS + CLEAR_S))
while :; do
  rc=0
  kv_cli --timeout 5 put after-nospace yes >/dev/null 2>"$KV_DIR/put.err" || rc=$?
  [ "$rc" -eq 0 ] && break
  [ "$rc" -eq 4 ] && grep -q NOSPACE "$KV_DIR/put.err" ||
    kv_fail "a write after the deletes failed with exit $rc: $(cat "$KV_DIR/put.err")"
  [ "$SECONDS" -lt "$deadline" ] ||
    kv_fail "writes still refused with NOSPACE ${CLEAR_S}s after every key was deleted (data dirs: $(usage 1) $(usage 2) $(usage 3), quota $quota)"
  sleep 0.5
done
kv_log "writes accepted again (data dirs: $(usage 1) $(usage 2) $(usage 3), quota $quota)"
kv_expect 0 kv_cli get after-nospace
kv_expect_out yes
grep -q "NOSPACE" "$KV_DIR/n$L.log" || kv_fail "the leader n$L's log has no NOSPACE line"
alarm_cleared() { [ "$(ops_metric "$1" kv_nospace_alarm)" = 0 ]; }
for i in 1 2 3; do
  kv_until 10 "n$i's kv_nospace_alarm back to 0" alarm_cleared "$i"
done
for i in 1 2 3; do
  kv_check_alive "$i"
done
kv_stop_all
kv_pass
