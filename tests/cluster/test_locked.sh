#!/usr/bin/env bash
# A second kvd on a data dir in use exits 3 and says so, leaving the first
# one undisturbed; the lock goes with its holder, even one killed (SIGKILL).
# Usage: test_locked.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup locked 6 "${1:?usage: test_locked.sh BIN_DIR}"

kv_start_all
kv_wait_leader
kv_expect 0 kv_cli put k before

second_kvd() { # NODE: another kvd on nNODE's data dir, its own port
  timeout 30 "$KV_BIN/kvd" --name "n$1" --data-dir "$KV_DIR/n$1" \
    --listen "127.0.0.1:$KV_SPARE_PORT" --cluster "$KV_PEERS"
}
for i in 1 2 3; do
  rc=0
  second_kvd "$i" >"$KV_DIR/second.out" 2>&1 || rc=$?
  cat "$KV_DIR/second.out" >>"$KV_DIR/n$i.log"
  [ "$rc" -ne 124 ] || kv_fail "a second kvd on n$i's data dir kept running (30 s), want exit 3"
  [ "$rc" -eq 3 ] ||
    kv_fail "a second kvd on n$i's data dir exited $rc, want 3: $(head -c 500 "$KV_DIR/second.out")"
  grep -Eqi "lock|in use" "$KV_DIR/second.out" ||
    kv_fail "a second kvd on n$i's data dir did not say it is locked/in use: $(head -c 500 "$KV_DIR/second.out")"
  kv_check_alive "$i"
done

# The first ones are undisturbed.
kv_expect 0 kv_cli put k after
kv_expect 0 kv_cli get k
kv_expect_out "after"
for i in 1 2 3; do
  kv_expect 0 kv_cli_node "$i" --timeout 5 get --stale k
done

# The lock is released by a kill: the node starts again on the same dir.
kv_kill 1
kv_start 1
kv_until 20 "n1 restarted after SIGKILL serving a stale read of k" \
  eval '[ "$(kv_cli_node 1 --timeout 2 get --stale k)" = after ]'
kv_check_alive 1
kv_stop_all
kv_pass
