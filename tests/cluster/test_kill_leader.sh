#!/usr/bin/env bash
# The leader is killed (SIGKILL) while a writer runs: the two survivors
# elect a new leader, every write kvcli acknowledged (exit 0) reads back
# with its value, a write whose outcome was unknown (exit 3) is either there
# with its value or absent, and the killed node, restarted, catches up.
# Usage: test_kill_leader.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup kill_leader 2 "${1:?usage: test_kill_leader.sh BIN_DIR}"

WRITES_MAX=5000 # the writer's bound; it is stopped long before

kv_start_all
kv_wait_leader
old_leader=$KV_LEADER
old_i=$KV_LEADER_I

# The writer: one kvcli per write (lib.sh kv_writer_start).
kv_writer_start k v "$WRITES_MAX"
writer_pid=$KV_WRITER_PID

# Kill the leader after a seeded number of acknowledged writes.
before=$((20 + RANDOM % 30))
kv_until 30 "the writer getting $before writes acknowledged" kv_acked_at_least "$before"
kv_kill "$old_i"
killed_at=$(kv_acked)
kv_wait_leader "$old_leader"
kv_until 30 "20 more writes acknowledged after the new leader $KV_LEADER was elected" \
  kv_acked_at_least $((killed_at + 20))
touch "$KV_DIR/stop"
wait "$writer_pid" || kv_fail "the writer loop failed"
kv_log "writes: $(kv_acked) acknowledged, $(wc -l <"$KV_DIR/unknown") unknown outcome"
if [ -s "$KV_DIR/other" ]; then
  tail -n 20 "$KV_DIR/writer.err" >&2 || true
  kv_fail "writes failed with an exit code other than 0 or 3: $(head -n 5 "$KV_DIR/other" | tr '\n' ' ')"
fi

# Every acknowledged write reads back (linearizable reads, one kvcli).
sed 's/.*/get k&/' "$KV_DIR/acked" >"$KV_DIR/acked.cmds"
sed 's/.*/{"key":"k&","value":"v&"}/' "$KV_DIR/acked" >"$KV_DIR/acked.want"
kv_cli --json <"$KV_DIR/acked.cmds" 2>&1 |
  sed -E 's/,"create_rev":[0-9]+,"mod_rev":[0-9]+,"version":[0-9]+,"lease":[0-9]+//' >"$KV_DIR/acked.got" || true
if ! diff "$KV_DIR/acked.want" "$KV_DIR/acked.got" >"$KV_DIR/acked.diff"; then
  head -n 20 "$KV_DIR/acked.diff" >&2
  kv_fail "acknowledged writes do not read back with their values (diff above: < wanted, > got)"
fi

# A write with an unknown outcome is there with its value, or absent.
while read -r n; do
  rc=0
  kv_cli get "k$n" >"$KV_DIR/u.out" 2>&1 || rc=$?
  case $rc in
  0) [ "$(cat "$KV_DIR/u.out")" = "v$n" ] ||
    kv_fail "k$n (outcome unknown) holds '$(cat "$KV_DIR/u.out")', want v$n or absent" ;;
  1) ;;
  *) kv_fail "get k$n exited $rc: $(cat "$KV_DIR/u.out")" ;;
  esac
done <"$KV_DIR/unknown"

# The killed node restarts and catches up: a stale read against it alone
# eventually returns the last acknowledged write.
last=$(tail -n 1 "$KV_DIR/acked")
kv_start "$old_i"
last_on_restarted() { [ "$(kv_cli_node "$old_i" --timeout 2 get --stale "k$last")" = "v$last" ]; }
kv_until 30 "the restarted $old_leader returning k$last=v$last (get --stale against it)" \
  last_on_restarted
kv_check_alive 1
kv_check_alive 2
kv_check_alive 3
kv_stop_all
kv_pass
