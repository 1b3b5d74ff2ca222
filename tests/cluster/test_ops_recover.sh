#!/usr/bin/env bash
# Losing a majority for good: two of three nodes are killed (SIGKILL) and
# their data dirs deleted. The survivor, stopped, is turned into a one-node
# cluster by `kvd recover`; started again as before it leads alone and
# holds every acknowledged write. A new node added with `kvcli member add`
# and started with `kvd --join` gets all the data and becomes a voter.
# Usage: test_ops_recover.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup ops_recover 279 "${1:?usage: test_ops_recover.sh BIN_DIR}"

KEYS=200
P4=$((KV_PORT[1] + 3)) # base+4: the new node
if (exec 3<>"/dev/tcp/127.0.0.1/$P4") 2>/dev/null; then
  kv_fail "port $P4 is already in use (set KV_TEST_PORT_BASE)"
fi

# ops_member_role ENDPOINTS NAME: prints NAME's role in `kvcli member list`
# (voter, learner, joining; the leader is a voter), or nothing when it is
# not listed.
ops_member_role() {
  "$KV_BIN/kvcli" --cluster "$1" --timeout 3 member list 2>/dev/null |
    awk -v n="$2" '$1 == n { for (i = 2; i <= NF; i++) if ($i ~ /^(leader|voter|learner|joining)$/) { print ($i == "leader" ? "voter" : $i); exit } }'
}

kv_start_all
kv_wait_leader

tag=$RANDOM
for ((n = 0; n < KEYS; n++)); do
  printf 'put rec-%04d v-%d-%04d\n' "$n" "$tag" "$n"
done >"$KV_DIR/puts"
kv_expect 0 kv_cli --timeout 10 <"$KV_DIR/puts"
[ "$(grep -c '^OK$' "$KV_OUT")" -eq "$KEYS" ] ||
  kv_fail "writing $KEYS keys: only $(grep -c '^OK$' "$KV_OUT") OK"
kv_expect 0 kv_cli scan rec-
cp "$KV_OUT" "$KV_DIR/want.scan"

# The survivor: any node (seeded), once it has applied the last write (an
# operator recovers from the most up-to-date survivor).
s=$((RANDOM % 3 + 1))
last=$(printf 'rec-%04d' $((KEYS - 1)))
want_last=$(printf 'v-%d-%04d' "$tag" $((KEYS - 1)))
last_on_s() { [ "$(kv_cli_node "$s" --timeout 2 get --stale "$last")" = "$want_last" ]; }
kv_until 10 "n$s applying $last" last_on_s
kv_log "survivor n$s (the leader was $KV_LEADER)"
for i in 1 2 3; do
  [ "$i" = "$s" ] && continue
  kv_kill "$i"
  rm -rf "${KV_DIR:?}/n$i"
done

# Without a majority it cannot write: the outcome is unknown (exit 3; the
# entry may be in its log, and recover then commits it).
kv_expect 3 kv_cli_node "$s" --timeout 2 put while-alone x
kv_stop "$s"

kv_expect 0 "$KV_BIN/kvd" recover --data-dir "$KV_DIR/n$s" --name "n$s"
kv_log "kvd recover: $(head -n 1 "$KV_OUT")"
kv_start "$s" # exactly as before: the --cluster list is ignored now

s_leads() {
  kv_cli_node "$s" --timeout 2 status >"$KV_DIR/s.status" 2>&1 &&
    awk -v n="n$s" 'NR > 1 && $1 == n && $3 == "leader" { ok = 1 } END { exit !ok }' "$KV_DIR/s.status"
}
kv_until 20 "n$s leading its one-node cluster" s_leads
kv_expect 0 kv_cli_node "$s" member list
for i in 1 2 3; do
  want=voter
  [ "$i" = "$s" ] || want=""
  [ "$(ops_member_role "$(kv_addr "$s")" "n$i")" = "$want" ] ||
    kv_fail "member list after recover should list n$s alone, a voter: $(cat "$KV_OUT")"
done

# Every acknowledged write, read linearizably from the recovered node.
kv_expect 0 kv_cli_node "$s" scan rec-
diff "$KV_DIR/want.scan" "$KV_OUT" >"$KV_DIR/diff" ||
  { head -n 20 "$KV_DIR/diff" >&2; kv_fail "the recovered n$s does not hold every acknowledged write (diff above: < wanted, > got)"; }
kv_expect 0 kv_cli_node "$s" put after-recover yes

# A new node joins: member add, then kvd --join (no --cluster: it learns
# the members from the cluster).
kv_expect 0 kv_cli_node "$s" member add n4 "127.0.0.1:$P4"
KV_STARTS=$((KV_STARTS + 1))
echo "=== test: start $KV_STARTS of n4 at $(date +%T.%N) (join)" >>"$KV_DIR/n4.log"
"$KV_BIN/kvd" --name n4 --data-dir "$KV_DIR/n4" --listen "127.0.0.1:$P4" \
  --join "$(kv_addr "$s")" >>"$KV_DIR/n4.log" 2>&1 &
KV_PIDS[4]=$!
kv__save_pids

n4_voter() { [ "$(ops_member_role "$(kv_addr "$s")" n4)" = voter ]; }
kv_until 30 "n4 promoted to voter (kvcli member list)" n4_voter
n4_has_all() {
  "$KV_BIN/kvcli" --cluster "127.0.0.1:$P4" --timeout 2 get --stale after-recover | grep -qx yes
}
kv_until 20 "n4 returning after-recover (get --stale against n4 alone)" n4_has_all
sed 's/\t.*//; s/^/get --stale /' "$KV_DIR/want.scan" >"$KV_DIR/gets"
cut -f2- "$KV_DIR/want.scan" >"$KV_DIR/want.vals"
"$KV_BIN/kvcli" --cluster "127.0.0.1:$P4" --timeout 5 <"$KV_DIR/gets" >"$KV_DIR/n4.vals" 2>&1 || true
diff "$KV_DIR/want.vals" "$KV_DIR/n4.vals" >"$KV_DIR/diff" ||
  { head -n 20 "$KV_DIR/diff" >&2; kv_fail "n4 does not hold every key after joining (diff above: < wanted, > got)"; }

# Two voters now: a write needs both, and goes through.
kv_expect 0 "$KV_BIN/kvcli" --cluster "$(kv_addr "$s"),127.0.0.1:$P4" put after-join yes
kv_check_alive "$s"
kv_check_alive 4
kv_stop 4
kv_stop "$s"
kv_pass
