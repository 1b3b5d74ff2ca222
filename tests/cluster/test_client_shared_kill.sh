#!/usr/bin/env bash
# One kv_client shared by 32 threads writes while the leader is killed
# (SIGKILL): every acknowledged put reads back, a put refused UNAVAILABLE is
# absent, no increment (compare-and-swap) is applied twice or reported
# failed when it was applied, and puts are acknowledged again under the new
# leader (shared_writer.c says what it checks).
# Usage: test_shared_kill.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup client_shared_kill 11 "${1:?usage: test_shared_kill.sh BIN_DIR}"
[ -x "$KV_BIN/shared_writer" ] || kv_fail "no shared_writer in $KV_BIN (build first)"

kv_start_all
kv_wait_leader
old_leader=$KV_LEADER

"$KV_BIN/shared_writer" "$KV_ENDPOINTS" 32 12 "$KV_DIR/progress" "$KV_DIR/killed" \
  >"$KV_DIR/writer.out" 2>"$KV_DIR/writer.err" &
writer_pid=$!
KV_BG+=("$writer_pid")

kv_until 30 "the shared writer getting 200 puts acknowledged" test -e "$KV_DIR/progress"
sleep 0.$((RANDOM % 10))
kv_kill "$KV_LEADER_I"
touch "$KV_DIR/killed"
kv_log "killed the leader $old_leader under the shared writer"
kv_wait_leader "$old_leader"
rc=0
wait "$writer_pid" || rc=$?
kv_log "shared writer: $(cat "$KV_DIR/writer.out") (exit $rc)"
if [ "$rc" -ne 0 ]; then
  head -n 30 "$KV_DIR/writer.err" >&2
  kv_fail "the shared writer's checks failed (above)"
fi
for i in 1 2 3; do
  [ -z "${KV_PIDS[$i]}" ] || kv_stop "$i" # the two survivors
done
kv_pass
