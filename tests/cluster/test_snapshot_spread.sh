#!/usr/bin/env bash
# Snapshots taken on a worker thread, spread between the nodes (issue 13):
# with a snapshot every 100 applied entries, 1000 writes make every node
# take several, each logged as taken off the loop with the time of its
# steps; the three nodes take theirs at different indexes (each node's
# grid is shifted by its place among the members), so they do not all
# flush and hash at the same moment; /metrics gives the loop's longest turn
# (kv_loop_turn_seconds_max). Then every node is killed (SIGKILL) while
# more writes go on, so snapshots may be cut anywhere: after a restart the
# cluster starts from what is on disk and serves every key acknowledged.
# Usage: test_snapshot_spread.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup snapshot_spread 11 "${1:?usage: test_snapshot_spread.sh BIN_DIR}"

KEYS=1000
MPORT=("" $((KV_PORT[1] + 5)) $((KV_PORT[1] + 6)) $((KV_PORT[1] + 7))) # base+6..8
for p in "${MPORT[1]}" "${MPORT[2]}" "${MPORT[3]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    kv_fail "metrics port $p is already in use (set KV_TEST_PORT_BASE)"
  fi
done
KV_EXTRA_FLAGS=(--snapshot-entries 100)
for i in 1 2 3; do kv_start "$i" --metrics "127.0.0.1:${MPORT[$i]}"; done
kv_wait_leader

tag=$RANDOM
for ((n = 0; n < KEYS; n++)); do
  printf 'put spread-%04d value-%d-%04d\n' "$n" "$tag" "$n"
done >"$KV_DIR/puts"
kv_expect 0 kv_cli --timeout 10 <"$KV_DIR/puts"
[ "$(grep -c '^OK$' "$KV_OUT")" -eq "$KEYS" ] ||
  kv_fail "writing $KEYS keys: only $(grep -c '^OK$' "$KV_OUT") OK lines"

# Every node took snapshots on its worker; the first ones are at three
# different indexes.
taken() { grep -c "took snapshot [0-9]* .* off the loop" "$KV_DIR/n$1.log" || true; }
all_took() { for i in 1 2 3; do [ "$(taken "$i")" -ge 5 ] || return 1; done; }
kv_until 20 "every node logging 5 snapshots taken off the loop" all_took
firsts=()
for i in 1 2 3; do
  firsts[$i]=$(sed -n 's/.*took snapshot \([0-9]*\) .* off the loop.*/\1/p' "$KV_DIR/n$i.log" | head -n 1)
done
kv_log "first snapshot indexes: n1 ${firsts[1]}, n2 ${firsts[2]}, n3 ${firsts[3]}"
[ "${firsts[1]}" != "${firsts[2]}" ] && [ "${firsts[1]}" != "${firsts[3]}" ] &&
  [ "${firsts[2]}" != "${firsts[3]}" ] ||
  kv_fail "the nodes took their first snapshots at indexes ${firsts[*]}: not spread apart"

metric() { # I NAME: the value of NAME on node I
  python3 -c '
import sys, urllib.request
body = urllib.request.urlopen("http://127.0.0.1:%s/metrics" % sys.argv[1], timeout=3).read().decode()
for line in body.splitlines():
    if line.startswith(sys.argv[2] + " "):
        print(line.split()[1])
' "${MPORT[$1]}" "$2"
}
for i in 1 2 3; do
  max=$(metric "$i" kv_loop_turn_seconds_max)
  [ -n "$max" ] || kv_fail "n$i's /metrics has no kv_loop_turn_seconds_max"
  [ "$(metric "$i" kv_snapshots_taken_total)" -ge 5 ] ||
    kv_fail "n$i's kv_snapshots_taken_total is $(metric "$i" kv_snapshots_taken_total), want >= 5"
  kv_log "n$i: longest loop turn ${max}s"
done

# SIGKILL of every node while a writer goes on, then a restart: every key
# acknowledged before is there.
for ((n = 0; n < 400; n++)); do printf 'put more-%04d x\n' "$n"; done >"$KV_DIR/more"
kv_cli --timeout 2 <"$KV_DIR/more" >/dev/null 2>&1 &
writer=$!
KV_BG+=("$writer")
sleep 0.5
kv_kill 1
kv_kill 2
kv_kill 3
kill "$writer" 2>/dev/null || true # it would retry each put against no node
wait "$writer" 2>/dev/null || true
for i in 1 2 3; do kv_start "$i"; done
kv_wait_leader
kv_expect 0 kv_cli --timeout 10 scan spread-
[ "$(wc -l <"$KV_OUT")" -eq "$KEYS" ] ||
  kv_fail "after the restart scan spread- lists $(wc -l <"$KV_OUT") keys, want $KEYS"
kv_expect 0 kv_cli put after-restart yes
kv_stop_all
kv_pass
