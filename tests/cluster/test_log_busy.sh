#!/usr/bin/env bash
# The log's queue full (a disk slower than the writes coming in): the loop
# never waits for it. Entries past the queue wait in order and go to the
# log as it drains; meanwhile the leader answers writes BUSY and the
# client backs off and retries. Every write is acknowledged (none lost to
# the back-pressure), the nodes stay up and agree afterwards (kvcli
# check). A small queue (--wal-queue-bytes, its minimum is one largest
# record) and 64 KiB values from 64 clients make it fill: one Ready's
# entries are then more than the queue holds.
# Usage: test_log_busy.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup log_busy 10 "${1:?usage: test_log_busy.sh BIN_DIR}"
[ -x "$KV_BIN/kvbench" ] || kv_fail "no kvbench binary in $KV_BIN (build first)"

KV_EXTRA_FLAGS=(--wal-queue-bytes 2200000)
kv_start_all
kv_wait_leader

kv_log "64 clients, 1000 puts of 64 KiB"
if ! "$KV_BIN/kvbench" put --cluster "$KV_ENDPOINTS" --clients 64 --requests 1000 \
  --size 65536 >"$KV_DIR/bench.out" 2>&1; then
  kv_fail "kvbench put failed: $(tail -n 3 "$KV_DIR/bench.out" | tr '\n' ' ')"
fi
kv_log "$(tail -n 1 "$KV_DIR/bench.out")"
grep -q ' errors=0' "$KV_DIR/bench.out" || kv_fail "writes failed: $(tail -n 1 "$KV_DIR/bench.out")"
full=$(cat "$KV_DIR"/n?.log | grep -c "the log's queue is full" || true)
[ "$full" -gt 0 ] || kv_fail "the log's queue never filled: nothing was tested"
kv_log "the log's queue was full $full times"
for i in 1 2 3; do kv_check_alive "$i"; done
kv_expect 0 kv_cli --timeout 10 put after-busy yes
kv_expect 0 kv_cli get after-busy
kv_expect_out yes
kv_expect 0 kv_cli --timeout 10 check
kv_pass
