#!/usr/bin/env bash
# Snapshot catch-up: with a snapshot every 200 applied entries, a follower
# that was down while 1000 keys were written comes back, installs a
# snapshot (the leader's log no longer holds what it missed) and then
# answers stale reads of every key itself.
# Usage: test_snapshot.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup snapshot 3 "${1:?usage: test_snapshot.sh BIN_DIR}"

KEYS=1000
KV_EXTRA_FLAGS=(--snapshot-entries 200)
kv_start_all
kv_wait_leader
f=$(( KV_LEADER_I % 3 + 1 )) # a follower
kv_stop "$f"

# 1000 writes through one kvcli (commands from stdin).
tag=$RANDOM
for ((n = 0; n < KEYS; n++)); do
  printf 'put snap-%04d value-%d-%04d\n' "$n" "$tag" "$n"
done >"$KV_DIR/puts"
kv_expect 0 kv_cli --timeout 10 <"$KV_DIR/puts"
[ "$(grep -c '^OK$' "$KV_OUT")" -eq "$KEYS" ] ||
  kv_fail "writing $KEYS keys: only $(grep -c '^OK$' "$KV_OUT") OK lines"

kv_expect 0 kv_cli scan snap-
[ "$(wc -l <"$KV_OUT")" -eq "$KEYS" ] && [ "$(head -n 1 "$KV_OUT")" = "$(printf 'snap-0000\tvalue-%d-0000' "$tag")" ] ||
  kv_fail "scan snap- lists $(wc -l <"$KV_OUT") keys (want $KEYS) starting with '$(head -n 1 "$KV_OUT")'"

kv_start "$f"
last=$(printf 'snap-%04d' $((KEYS - 1)))
want_last=$(printf 'value-%d-%04d' "$tag" $((KEYS - 1)))
last_on_f() { [ "$(kv_cli_node "$f" --timeout 2 get --stale "$last")" = "$want_last" ]; }
kv_until 60 "the restarted n$f returning $last (get --stale against n$f alone)" last_on_f

# Every key, read from n$f alone.
for ((n = 0; n < KEYS; n++)); do
  printf 'get --stale snap-%04d\n' "$n"
done >"$KV_DIR/gets"
for ((n = 0; n < KEYS; n++)); do
  printf 'value-%d-%04d\n' "$tag" "$n"
done >"$KV_DIR/want"
kv_cli_node "$f" --timeout 5 <"$KV_DIR/gets" >"$KV_DIR/got" 2>&1 || true
if ! diff "$KV_DIR/want" "$KV_DIR/got" >"$KV_DIR/diff"; then
  head -n 20 "$KV_DIR/diff" >&2
  kv_fail "n$f does not hold every key after catching up (diff above: < wanted, > got)"
fi

# It caught up by a snapshot, after its restart.
restart_mark=$(grep -n "^=== test: start .* of n$f " "$KV_DIR/n$f.log" | tail -n 1 | cut -d: -f1)
tail -n "+$restart_mark" "$KV_DIR/n$f.log" | grep -qi "installed snapshot" ||
  kv_fail "n$f caught up without installing a snapshot: its log after the restart has no 'installed snapshot' line"

kv_expect 0 kv_cli put after-catch-up yes
kv_stop_all
kv_pass
