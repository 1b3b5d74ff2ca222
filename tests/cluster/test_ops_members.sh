#!/usr/bin/env bash
# Membership changes under load: while a writer runs, `kvcli member add n4`
# and `kvd --join` bring a fourth node in (a learner, promoted to voter once
# it has caught up), then one of the original followers is removed with
# `kvcli member remove` and stopped. The writer keeps succeeding (a few
# unknown outcomes, exit 3, are allowed), every acknowledged write reads
# back from the cluster, and n4 alone (get --stale) holds them all.
# Usage: test_ops_members.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup ops_members 273 "${1:?usage: test_ops_members.sh BIN_DIR}"

WRITES_MAX=5000 # the writer's bound; it is stopped long before
UNKNOWN_MAX=3   # writes with an unknown outcome (exit 3) allowed in all
P4=$((KV_PORT[1] + 3)) # base+4: the new node
if (exec 3<>"/dev/tcp/127.0.0.1/$P4") 2>/dev/null; then
  kv_fail "port $P4 is already in use (set KV_TEST_PORT_BASE)"
fi

# ops_member_role NAME: NAME's role in `kvcli member list` (voter,
# learner, joining; the leader is a voter), or nothing when it is not
# listed.
ops_member_role() {
  kv_cli --timeout 3 member list 2>/dev/null |
    awk -v n="$1" '$1 == n { for (i = 2; i <= NF; i++) if ($i ~ /^(leader|voter|learner|joining)$/) { print ($i == "leader" ? "voter" : $i); exit } }'
}

kv_start_all
kv_wait_leader

# The writer: one kvcli per write (lib.sh kv_writer_start).
kv_writer_start mk mv "$WRITES_MAX"
writer_pid=$KV_WRITER_PID
kv_until 20 "the writer getting 20 writes acknowledged" kv_acked_at_least 20

# Add n4: it joins through a (seeded) member, not necessarily the leader.
kv_expect 0 kv_cli member add n4 "127.0.0.1:$P4"
via=$((RANDOM % 3 + 1))
KV_STARTS=$((KV_STARTS + 1))
echo "=== test: start $KV_STARTS of n4 at $(date +%T.%N) (--join n$via)" >>"$KV_DIR/n4.log"
"$KV_BIN/kvd" --name n4 --data-dir "$KV_DIR/n4" --listen "127.0.0.1:$P4" \
  --join "$(kv_addr "$via")" >>"$KV_DIR/n4.log" 2>&1 &
KV_PIDS[4]=$!
kv__save_pids
kv_log "member add n4; n4 started with --join $(kv_addr "$via") (writes acked so far: $(kv_acked))"
n4_voter() { [ "$(ops_member_role n4)" = voter ]; }
kv_until 30 "n4 promoted to voter (kvcli member list)" n4_voter
kv_log "n4 is a voter (writes acked so far: $(kv_acked))"
added_at=$(kv_acked)
kv_until 30 "100 writes acknowledged after n4 became a voter" kv_acked_at_least $((added_at + 100))

# Remove one of the original followers, then stop it.
kv_wait_leader
r=$(((KV_LEADER_I + RANDOM % 2) % 3 + 1)) # n1..n3, not the leader
kv_expect 0 kv_cli member remove "n$r"
[ -z "$(ops_member_role "n$r")" ] ||
  kv_fail "n$r is still listed after member remove: $(kv_cli member list 2>&1)"
kv_stop "$r"
removed_at=$(kv_acked)
kv_log "removed and stopped n$r (writes acked so far: $removed_at)"
kv_until 30 "100 writes acknowledged after n$r was removed" kv_acked_at_least $((removed_at + 100))
touch "$KV_DIR/stop"
wait "$writer_pid" || kv_fail "the writer loop failed"

kv_expect 0 kv_cli member list
kv_log "members now: $(tr '\n' ';' <"$KV_OUT")"
kv_log "writes: $(kv_acked) acknowledged, $(wc -l <"$KV_DIR/unknown") unknown outcome"
if [ -s "$KV_DIR/other" ]; then
  tail -n 20 "$KV_DIR/writer.err" >&2 || true
  kv_fail "writes failed with an exit code other than 0 or 3: $(head -n 5 "$KV_DIR/other" | tr '\n' ' ')"
fi
[ "$(wc -l <"$KV_DIR/unknown")" -le "$UNKNOWN_MAX" ] || {
  tail -n 20 "$KV_DIR/writer.err" >&2
  kv_fail "$(wc -l <"$KV_DIR/unknown") writes timed out (exit 3) during the changes; at most $UNKNOWN_MAX allowed"
}

# Every acknowledged write reads back (linearizable), from the cluster as
# it is now.
KV_ENDPOINTS=127.0.0.1:$P4
for i in 1 2 3; do
  [ "$i" = "$r" ] || KV_ENDPOINTS="$KV_ENDPOINTS,$(kv_addr "$i")"
done
sed 's/.*/get mk&/' "$KV_DIR/acked" >"$KV_DIR/acked.cmds"
sed 's/.*/mv&/' "$KV_DIR/acked" >"$KV_DIR/acked.want"
kv_cli --timeout 5 <"$KV_DIR/acked.cmds" >"$KV_DIR/acked.got" 2>&1 || true
diff "$KV_DIR/acked.want" "$KV_DIR/acked.got" >"$KV_DIR/acked.diff" || {
  head -n 20 "$KV_DIR/acked.diff" >&2
  kv_fail "acknowledged writes do not read back with their values (diff above: < wanted, > got)"
}
while read -r n; do
  rc=0
  kv_cli get "mk$n" >"$KV_DIR/u.out" 2>&1 || rc=$?
  case $rc in
  0) [ "$(cat "$KV_DIR/u.out")" = "mv$n" ] ||
    kv_fail "mk$n (outcome unknown) holds '$(cat "$KV_DIR/u.out")', want mv$n or absent" ;;
  1) ;;
  *) kv_fail "get mk$n exited $rc: $(cat "$KV_DIR/u.out")" ;;
  esac
done <"$KV_DIR/unknown"

# n4 alone holds every acknowledged write.
last=$(tail -n 1 "$KV_DIR/acked")
n4_cli() { "$KV_BIN/kvcli" --cluster "127.0.0.1:$P4" "$@"; }
last_on_n4() { [ "$(n4_cli --timeout 2 get --stale "mk$last")" = "mv$last" ]; }
kv_until 20 "n4 returning mk$last (get --stale against n4 alone)" last_on_n4
sed 's/^get /get --stale /' "$KV_DIR/acked.cmds" >"$KV_DIR/stale.cmds"
n4_cli --timeout 5 <"$KV_DIR/stale.cmds" >"$KV_DIR/n4.got" 2>&1 || true
diff "$KV_DIR/acked.want" "$KV_DIR/n4.got" >"$KV_DIR/n4.diff" || {
  head -n 20 "$KV_DIR/n4.diff" >&2
  kv_fail "n4 (get --stale) does not hold every acknowledged write (diff above: < wanted, > got)"
}

kv_check_alive 4
for i in 1 2 3; do
  [ "$i" = "$r" ] && continue
  kv_check_alive "$i"
done
kv_expect 0 kv_cli put after-changes yes
kv_stop 4
for i in 1 2 3; do
  [ "$i" = "$r" ] || kv_stop "$i"
done
kv_pass
