#!/usr/bin/env bash
# kvcli watch: a watcher prints exactly the writes on its prefix, in order
# (and nothing of other prefixes); --rev replays past events; SIGINT ends it
# with exit 0; a bad --rev is a usage error; and the stream survives kill -9
# of the leader it reads from (restarted later) with no event missing or
# repeated: after healing it equals the committed writes on its prefix. A
# watcher that stops reading is cancelled (CANCELED) and resumes exactly;
# a node takes 1024 watchers and refuses one more with BUSY; a transaction's
# and a prefix delete's events come under one revision each.
# COMPACTED needs a history of 100,000 revisions here: tests/storage
# test_sm_history checks it with a small history.
# Usage: test_watch.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup watch 352 "${1:?usage: test_watch.sh BIN_DIR}"

kv_start_all
kv_wait_leader
lead_i=$KV_LEADER_I
# The watchers read from the leader first (the endpoint listed first).
eps="$(kv_addr "$lead_i")"
for i in 1 2 3; do [ "$i" = "$lead_i" ] || eps="$eps,$(kv_addr "$i")"; done

# KV_WATCHERS_MAX (1024) watchers on one node, and one more: BUSY. They go
# with their connections: then one more is taken again.
[ -x "$KV_BIN/watch_many" ] || kv_fail "no watch_many in $KV_BIN (build first)"
many_i=$((lead_i % 3 + 1)) # a follower serves watches too
many() { "$KV_BIN/watch_many" 127.0.0.1 "${KV_PORT[$many_i]}" "$1"; }
[ "$(many 1025)" = "ok=1024 busy=1 other=0" ] ||
  kv_fail "1025 watchers on n$many_i: $(many 1025), want ok=1024 busy=1 other=0"
one_again() { [ "$(many 1)" = "ok=1 busy=0 other=0" ]; }
kv_until 10 "a watcher taken again once the 1024 closed" one_again

# watch_start NAME ARGS...: kvcli watch in the background, output in NAME.out.
watch_start() {
  local name=$1
  shift
  "$KV_BIN/kvcli" --cluster "$eps" "$@" >"$KV_DIR/$name.out" 2>"$KV_DIR/$name.err" &
  KV_BG+=("$!")
  WATCH_PID=$!
}
lines() { [ "$(wc -l <"$KV_DIR/$1.out")" -ge "$2" ]; }
# watch_stop PID NAME: SIGINT; kvcli watch must exit 0.
watch_stop() {
  local rc=0
  kill -INT "$1"
  wait "$1" || rc=$?
  [ "$rc" -eq 0 ] || kv_fail "kvcli watch ($2) exited $rc after SIGINT, want 0: $(cat "$KV_DIR/$2.err")"
}

watch_start text watch w/
text_pid=$WATCH_PID
watch_start json --json watch w/
json_pid=$WATCH_PID
kv_until 10 "the watchers registered" grep -q 'WATCH' "$KV_DIR/n$lead_i.log"
sleep 0.5
kv_cli <<'EOF' >/dev/null
put w/1 v1
put o/1 other
put w/2 'two words'
del w/1
put w/2 v3
put wx no
EOF
want_text=$'PUT w/1 v1\nPUT w/2 two words\nDELETE w/1\nPUT w/2 v3'
kv_until 10 "4 events in the text watcher" lines text 4
kv_until 10 "4 events in the json watcher" lines json 4
sleep 0.5 # anything more would have arrived
[ "$(cat "$KV_DIR/text.out")" = "$want_text" ] ||
  kv_fail "the watcher printed:"$'\n'"$(cat "$KV_DIR/text.out")"$'\n'"want:"$'\n'"$want_text"
python3 - "$KV_DIR/json.out" <<'EOF' || kv_fail "json watcher output wrong: $(cat "$KV_DIR/json.out")"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
assert [(e["type"], e["key"]) for e in ev] == [("PUT", "w/1"), ("PUT", "w/2"), ("DELETE", "w/1"), ("PUT", "w/2")], ev
revs = [e["revision"] for e in ev]
assert revs == sorted(revs) and len(set(revs)) == 4, revs
assert ev[1]["version"] == 1 and ev[3]["version"] == 2 and ev[3]["create_rev"] == revs[1], ev
assert ev[0]["value"] == "v1" and "value" not in ev[2], ev
EOF
rev1=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readline())["revision"])' "$KV_DIR/json.out")
rev3=$(python3 -c 'import json,sys; print(json.loads(open(sys.argv[1]).readlines()[2])["revision"])' "$KV_DIR/json.out")
watch_stop "$json_pid" json

# --rev replays: from the first event's revision all four, from the third's two.
watch_start replay watch w/ --rev "$rev1"
kv_until 10 "the replay from revision $rev1" lines replay 4
sleep 0.3
watch_stop "$WATCH_PID" replay
[ "$(cat "$KV_DIR/replay.out")" = "$want_text" ] ||
  kv_fail "watch --rev $rev1 printed:"$'\n'"$(cat "$KV_DIR/replay.out")"
watch_start replay3 watch w/ --rev "$rev3"
kv_until 10 "the replay from revision $rev3" lines replay3 2
sleep 0.3
watch_stop "$WATCH_PID" replay3
[ "$(cat "$KV_DIR/replay3.out")" = $'DELETE w/1\nPUT w/2 v3' ] ||
  kv_fail "watch --rev $rev3 printed:"$'\n'"$(cat "$KV_DIR/replay3.out")"
kv_expect 2 kv_cli watch w/ --rev 0
kv_expect_err 'rev'
kv_expect 2 kv_cli watch
kv_expect_err 'wants 1 argument'

# A transaction's and a prefix delete's events: one revision each, in their
# order.
watch_start multi --json watch t/
multi_pid=$WATCH_PID
sleep 0.5
printf 'version("t/a") = 0\n\nput t/a 1\nput u/x 3\nput t/b 2\n\n\n' | kv_cli txn >/dev/null
kv_cli del --prefix t/ >/dev/null
kv_until 10 "4 events in the multi watcher" lines multi 4
sleep 0.3
watch_stop "$multi_pid" multi
python3 - "$KV_DIR/multi.out" <<'EOF' || kv_fail "txn/del --prefix events wrong: $(cat "$KV_DIR/multi.out")"
import json, sys
ev = [json.loads(l) for l in open(sys.argv[1])]
assert [(e["type"], e["key"]) for e in ev] == [("PUT", "t/a"), ("PUT", "t/b"), ("DELETE", "t/a"), ("DELETE", "t/b")], ev
r = [e["revision"] for e in ev]
assert r[0] == r[1] < r[2] == r[3], r
EOF

# CANCELED: a watcher that stops reading (SIGSTOP) while 20 values of 1 MiB
# are written on its prefix fills its connection past 4 MiB and is
# cancelled; once it reads again (SIGCONT) kv_watch resumes after the last
# event it printed: every value exactly once, in order.
watch_start slow watch big/
slow_pid=$WATCH_PID
sleep 1
kill -STOP "$slow_pid"
for i in $(seq 1 20); do
  { printf 'v%d-' "$i"; head -c 1048000 /dev/zero | tr '\0' x; } >"$KV_DIR/big"
  kv_cli put "big/$i" - <"$KV_DIR/big" >/dev/null
  printf 'PUT big/%d ' "$i" >>"$KV_DIR/slow.want"
  cat "$KV_DIR/big" >>"$KV_DIR/slow.want"
  echo >>"$KV_DIR/slow.want"
done
kv_until 20 "the stopped watcher cancelled (CANCELED in n$lead_i's log)" \
  grep -q 'CANCELED' "$KV_DIR/n$lead_i.log"
kill -CONT "$slow_pid"
kv_until 30 "the slow watcher printing all 20 values" lines slow 20
sleep 0.5
cmp -s "$KV_DIR/slow.want" "$KV_DIR/slow.out" ||
  kv_fail "after CANCELED the watcher printed (key, value length): $(awk '{print $2, length($3)}' "$KV_DIR/slow.out" | tr '\n' ' ')"
watch_stop "$slow_pid" slow

# kill -9 of the leader the text watcher reads from, under a writer.
kv_writer_start w/k v 5000
writer_pid=$KV_WRITER_PID
kv_until 30 "20 writes acknowledged" kv_acked_at_least 20
old_leader=$KV_LEADER
kv_kill "$lead_i"
killed_at=$(kv_acked)
kv_wait_leader "$old_leader"
kv_until 30 "20 more writes acknowledged after the kill" kv_acked_at_least $((killed_at + 20))
kv_start "$lead_i"
restarted_at=$(kv_acked)
kv_until 30 "20 more writes after the restart" kv_acked_at_least $((restarted_at + 20))
touch "$KV_DIR/stop"
wait "$writer_pid" || kv_fail "the writer loop failed"
kv_log "writes: $(kv_acked) acknowledged, $(wc -l <"$KV_DIR/unknown") unknown outcome"

# The committed writes: every w/kN present now (each key is written once,
# one write at a time, so their revision order is N's order).
kv_cli scan w/k --limit 100000 | cut -f1 | sed 's|^w/k||' | sort -n >"$KV_DIR/committed"
while read -r n; do grep -qx "$n" "$KV_DIR/committed" ||
  kv_fail "acknowledged write w/k$n is not in the store"; done <"$KV_DIR/acked"
{
  echo "$want_text"
  sed 's|.*|PUT w/k& v&|' "$KV_DIR/committed"
} >"$KV_DIR/want"
want_n=$(wc -l <"$KV_DIR/want")
kv_until 30 "the watcher printing all $want_n events" lines text "$want_n"
sleep 0.5
if ! diff "$KV_DIR/want" "$KV_DIR/text.out" >"$KV_DIR/watch.diff"; then
  head -n 20 "$KV_DIR/watch.diff" >&2
  kv_fail "the watcher's stream differs from the committed writes (diff above: < committed, > printed)"
fi
watch_stop "$text_pid" text
kv_check_alive 1
kv_check_alive 2
kv_check_alive 3
kv_stop_all
kv_pass
