#!/usr/bin/env bash
# A member whose disk was replaced comes back with no memory (issue 10.1,
# docs/rules.md "a replaced disk never votes").
#
# n3 is down; W is acknowledged by n1 and n2. n2's disk is replaced (an
# empty data dir) and n1 is down for maintenance. n2 restarts with the same
# flags, as systemd would: it must refuse (exit 2, saying what to do),
# never bootstrap and vote. n3 comes back: the cluster may be unavailable
# while n1 is down, but it must never answer "not found" for W. n1 comes
# back: W is there. Then n2 rejoins the documented way (member remove, member
# add, --join) and holds W too; a --join while it is still a voter is refused.
# Also: a node of another cluster set up with the same --cluster line (another
# --cluster-token) is refused by this one's members.
. "$(dirname "$0")/lib.sh"
kv_setup wiped_disk 8 "${1:?usage: test_wiped_disk.sh BIN_DIR}"

kv_start_all
kv_wait_leader
kv_stop 3
kv_expect 0 kv_cli put W acknowledged
kv_log "W acknowledged by n1 and n2 (n3 down)"
kv_kill 2
kv_stop 1
rm -rf "${KV_DIR:?}/n2"
mkdir "$KV_DIR/n2" # the replaced disk, mounted where the data dir was
kv_log "n2's disk replaced; n1 down for maintenance"

# n2 with the same flags: refused, exit 2, naming what to do.
rc=0
timeout 20 "$KV_BIN/kvd" --name n2 --data-dir "$KV_DIR/n2" --listen "$(kv_addr 2)" \
  --cluster "$KV_PEERS" >"$KV_DIR/n2.refused" 2>&1 || rc=$?
[ "$rc" -ne 124 ] || kv_fail "n2 with an empty data dir started and kept running (it must refuse)"
[ "$rc" -eq 2 ] || kv_fail "n2 with an empty data dir exited $rc, want 2: $(cat "$KV_DIR/n2.refused")"
grep -q "member remove n2" "$KV_DIR/n2.refused" && grep -q -- "--join" "$KV_DIR/n2.refused" ||
  kv_fail "n2's refusal does not say what to do: $(cat "$KV_DIR/n2.refused")"
[ -z "$(ls -A "$KV_DIR/n2")" ] || kv_fail "the refused n2 wrote into its data dir: $(ls -A "$KV_DIR/n2")"

# Even if it were left running by a supervisor loop: start it in the
# background as the test library does, and bring n3 back.
kv_start 2 || true
kv_start 3
deadline=$((SECONDS + 8))
while [ $SECONDS -lt $deadline ]; do
  rc=0
  "$KV_BIN/kvcli" --cluster "$(kv_addr 3),$(kv_addr 2)" --timeout 1 get W >"$KV_DIR/get.out" 2>&1 ||
    rc=$?
  [ "$rc" -ne 1 ] || kv_fail "W was acknowledged, and the cluster without n1 answers 'not found': $(cat "$KV_DIR/get.out")"
  [ "$rc" -ne 0 ] || grep -qx acknowledged "$KV_DIR/get.out" ||
    kv_fail "get W answered something else: $(cat "$KV_DIR/get.out")"
  sleep 0.5
done
kv_log "n3 up, n1 down: W never answered 'not found'"
wait "${KV_PIDS[2]}" 2>/dev/null && rc=0 || rc=$?
KV_PIDS[2]=""
[ "$rc" -eq 2 ] || kv_fail "n2 (empty data dir, started by the test library) exited $rc, want 2"

kv_start 1
kv_wait_leader
kv_until 20 "W readable after n1 came back" kv_cli get W
kv_expect 0 kv_cli get W
kv_expect_out acknowledged

# --join while n2 is still a voting member: refused.
rm -rf "${KV_DIR:?}/n2" && mkdir "$KV_DIR/n2"
kv_expect 2 timeout 20 "$KV_BIN/kvd" --name n2 --data-dir "$KV_DIR/n2" --listen "$(kv_addr 2)" \
  --join "$(kv_addr 1)"
kv_expect_err "voting member"

# The documented way back: remove, add, --join.
kv_expect 0 kv_cli member remove n2
kv_expect 0 kv_cli member add n2 "$(kv_addr 2)"
rm -rf "${KV_DIR:?}/n2" && mkdir "$KV_DIR/n2"
kv_start 2 --join "$(kv_addr 1)"
kv_until 30 "n2 rejoined and holds W" bash -c \
  "[ \"\$('$KV_BIN/kvcli' --cluster '$(kv_addr 2)' get --stale W 2>/dev/null)\" = acknowledged ]"
kv_log "n2 rejoined as a new member and holds W"

# A node of another cluster made with the same --cluster line is refused.
kv_stop 3
mv "$KV_DIR/n3" "$KV_DIR/n3.ours"
"$KV_BIN/kvd" init --name n3 --data-dir "$KV_DIR/n3" --listen "$(kv_addr 3)" \
  --cluster "$KV_PEERS" --cluster-token "another-cluster" >>"$KV_DIR/n3.log" 2>&1
kv_start 3
kv_until 20 "the stranger n3 refused at the handshake" grep -qE "refused our Hello.*cluster id|of cluster [0-9a-f]+; check" "$KV_DIR/n1.log" "$KV_DIR/n2.log" "$KV_DIR/n3.log"
rc=0
"$KV_BIN/kvcli" --cluster "$(kv_addr 3)" --timeout 2 get W >"$KV_DIR/get3.out" 2>&1 || rc=$?
[ "$rc" -ne 0 ] || kv_fail "n3 of another cluster answered a linearizable get: $(cat "$KV_DIR/get3.out")"
kv_pass
