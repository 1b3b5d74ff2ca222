#!/usr/bin/env bash
# kvcli's operator commands against a real three-node cluster, and every
# exit code of the contract:
#   member list (three voters, one leader), member add (a learner that
#   `kvd --join` brings in and the leader promotes), member remove;
#   transfer-leader to a follower, after which status shows it leading;
#   snapshot save into one file that snapshot verify passes and that
#   `kvd restore` turns back into the same data; one flipped byte makes
#   verify exit 4 naming a byte offset at or before the flip;
#   check: 0 on a healthy cluster, 3 naming a member that is down;
#   exit codes 0 done, 1 no, 2 usage, 3 unavailable, 4 refused (TOOBIG,
#   EXIST, CORRUPT).
# Usage: test_kvcli_ops.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup kvcli_ops 310 "${1:?usage: test_kvcli_ops.sh BIN_DIR}"

VALUE_MAX=1048576
DEAD_PORT=$((KV_SPARE_PORT + 3)) # nothing listens there (checked below)
RESTORE_PORT=$((KV_SPARE_PORT + 1))
for p in $DEAD_PORT $RESTORE_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    kv_fail "port $p is already in use"
  fi
done

kv_start_all
kv_wait_leader

# ---- 0 and 1 ---------------------------------------------------------------
for i in $(seq 1 30); do
  kv_expect 0 kv_cli put "key$i" "value $i"
done
kv_expect 0 kv_cli get key7
kv_expect_out "value 7"
kv_expect 1 kv_cli get no-such-key
kv_expect_err "not found"
kv_expect 1 kv_cli cas key7 wrong new
kv_expect_err "compare failed"

# ---- 2: usage --------------------------------------------------------------
kv_expect 2 kv_cli frobnicate
kv_expect_err "unknown command"
kv_expect 2 kv_cli member
kv_expect 2 kv_cli member frob
kv_expect_err "usage: kvcli member"
kv_expect 2 kv_cli member add n9
kv_expect 2 kv_cli member add "bad name" 127.0.0.1:1
kv_expect 2 kv_cli member add n9 no-port-here
kv_expect 2 kv_cli transfer-leader
kv_expect 2 kv_cli snapshot
kv_expect 2 kv_cli snapshot save
kv_expect 2 kv_cli snapshot verify "$KV_DIR/no-such-file"
kv_expect_err "No such file"
kv_expect 2 kv_cli check extra
kv_expect 2 kv_cli --timeout zero get key7
# One line saying what is wrong, one line of hint: not the whole usage.
kv_expect 2 kv_cli frobnicate
[ "$(wc -l <"$KV_ERR")" -eq 2 ] || kv_fail "unknown command: want 2 lines, got: $(cat "$KV_ERR")"
kv_expect_err "kvcli help"
kv_expect 2 kv_cli put onlykey
[ "$(wc -l <"$KV_ERR")" -eq 2 ] || kv_fail "put onlykey: want 2 lines, got: $(cat "$KV_ERR")"
kv_expect_err "^usage: kvcli put KEY VALUE"
# help COMMAND and COMMAND --help: that command only.
kv_expect 0 kv_cli help get
[ "$(head -n 1 "$KV_OUT")" = "usage: kvcli get [--stale] KEY" ] && [ "$(wc -l <"$KV_OUT")" -eq 2 ] ||
  kv_fail "help get printed: $(cat "$KV_OUT")"
kv_expect 0 kv_cli cas --help
kv_expect_out "$(printf 'usage: kvcli cas KEY EXPECTED NEW | --absent KEY NEW [--lease ID]\n      set KEY to NEW if its value is EXPECTED (--absent: if KEY is absent;\n      --lease: created attached to lease ID)')"
kv_expect 2 kv_cli help frobnicate
# Global flags anywhere on the line.
kv_expect 0 kv_cli get key7 --json
kv_strip_revs
kv_expect_out '{"key":"key7","value":"value 7"}'
kv_expect 0 "$KV_BIN/kvcli" get --timeout 5 key7 --cluster "$KV_ENDPOINTS"
kv_expect_out "value 7"
kv_expect 0 kv_cli put -- dash --json
kv_expect 0 kv_cli get dash
kv_expect_out "--json"
# Messages that name the thing.
kv_expect 2 kv_cli put "" v
kv_expect_err "an empty key: a key is 1 to 4096 bytes"
kv_expect 2 kv_cli member add n4 localhost:27004
kv_expect_err "address 'localhost:27004': the host must be a numeric IP address"
kv_expect 4 kv_cli --token-file "$KV_DIR/no-such-token" get key7
kv_expect_err "MISSING: token file $KV_DIR/no-such-token: No such file"

# ---- 3: unavailable (nothing listens; a short timeout) ----------------------
dead() { "$KV_BIN/kvcli" --cluster "127.0.0.1:$DEAD_PORT" --timeout 1 "$@"; }
kv_expect 3 dead put k v
kv_expect_err UNAVAILABLE
kv_expect 3 dead get k
kv_expect 3 dead member list
kv_expect 3 dead transfer-leader n1
kv_expect 3 dead snapshot save "$KV_DIR/never.snap"
[ ! -e "$KV_DIR/never.snap" ] && [ ! -e "$KV_DIR/never.snap.tmp" ] ||
  kv_fail "a failed snapshot save left a file behind"
kv_expect 3 dead check

# ---- 4: refused ------------------------------------------------------------
kv_random_bytes $((VALUE_MAX + 1)) "$KV_DIR/big.val" big
kv_expect 4 kv_cli put big - <"$KV_DIR/big.val"
kv_expect_err "TOOBIG: value of 1048577 bytes is over KV_VALUE_BYTES_MAX \(1048576\)"
kv_expect 4 kv_cli member add n1 "127.0.0.1:$KV_SPARE_PORT"
kv_expect_err EXIST

# ---- member list -----------------------------------------------------------
kv_expect 0 kv_cli member list
[ "$(awk 'NR > 1' "$KV_OUT" | wc -l)" -eq 3 ] || kv_fail "member list: not 3 rows: $(cat "$KV_OUT")"
for i in 1 2 3; do
  grep -Eq "^n$i +$(kv_addr "$i") +[0-9]+ +(voter|leader)$" "$KV_OUT" ||
    kv_fail "member list: no voter row for n$i: $(cat "$KV_OUT")"
done
[ "$(awk '$4 == "leader" { print $1 }' "$KV_OUT")" = "$KV_LEADER" ] ||
  kv_fail "member list does not mark $KV_LEADER as the leader: $(cat "$KV_OUT")"
kv_expect 0 kv_cli --json member list
[ "$(grep -c '^{"name":"n[123]","address":"127.0.0.1:[0-9]*","id":"[0-9]*","role":"\(voter\|leader\)","learner":false,"joining":false}$' "$KV_OUT")" -eq 3 ] ||
  kv_fail "member list --json: want 3 voter objects: $(cat "$KV_OUT")"

# ---- transfer-leader -------------------------------------------------------
target=n$((KV_LEADER_I % 3 + 1))
kv_log "transfer-leader $KV_LEADER -> $target"
kv_expect 0 kv_cli transfer-leader "$target"
kv_expect_out OK
[ "$(kv_leader)" = "$target" ] || kv_fail "after transfer-leader $target, status shows leader '$(kv_leader)'"
kv_wait_leader
kv_expect 0 kv_cli put after-transfer yes
kv_expect 1 kv_cli transfer-leader n9
kv_expect_err "not a voting member"

# ---- check -----------------------------------------------------------------
kv_expect 0 kv_cli check
grep -Eq "^OK: 3 members agree at index [0-9]+$" "$KV_OUT" || kv_fail "check said: $(cat "$KV_OUT")"
[ "$(grep -Ec ' [0-9a-f]{16} +ok$' "$KV_OUT")" -eq 3 ] || kv_fail "check: not 3 ok rows: $(cat "$KV_OUT")"
[ "$(awk 'NR > 1 && NF == 4 { print $3 }' "$KV_OUT" | sort -u | wc -l)" -eq 1 ] ||
  kv_fail "check: the hashes differ yet it said OK: $(cat "$KV_OUT")"
kv_expect 0 kv_cli --json check
[ "$(grep -c '"result":"ok"' "$KV_OUT")" -eq 3 ] || kv_fail "check --json: $(cat "$KV_OUT")"

# A member down: no hash from it, named, exit 3.
down=n$((${target#n} % 3 + 1)) # not the leader
kv_stop "${down#n}"
kv_expect 3 kv_cli --timeout 3 check
kv_expect_err "^UNAVAILABLE $down "
# The table, then the complaint, each on lines of their own (2>&1).
kv_cli --timeout 3 check >"$KV_DIR/check.both" 2>&1 || true
head -n 1 "$KV_DIR/check.both" | grep -Eq "^NAME +ADDRESS +HASH +RESULT$" ||
  kv_fail "check 2>&1: the table does not come first: $(cat "$KV_DIR/check.both")"
grep -Eq "^$down +127.0.0.1:[0-9]+ +- +UNAVAILABLE$" "$KV_DIR/check.both" &&
  grep -Eq "^UNAVAILABLE $down 127" "$KV_DIR/check.both" ||
  kv_fail "check 2>&1: row and complaint not on lines of their own: $(cat "$KV_DIR/check.both")"
# status: exit 3 while a member is unreachable, naming it.
kv_expect 3 kv_cli --timeout 2 status
grep -Eq "^- +$(kv_addr "${down#n}") .* unreachable " "$KV_OUT" ||
  kv_fail "status with $down down: $(cat "$KV_OUT")"
kv_expect_err "1 of 3 nodes not ok"
# transfer-leader to a member that is down: the leader gives the transfer up
# after an election timeout, and kvcli says so, not a bare TIMEOUT at the
# end of its own 20 s.
t0=$(date +%s)
kv_expect 3 kv_cli --timeout 20 transfer-leader "$down"
kv_expect_err "TIMEOUT.*gave the transfer up: $down did not take over within an election timeout"
[ $(($(date +%s) - t0)) -lt 15 ] || kv_fail "transfer-leader to $down (down) took $(($(date +%s) - t0)) s"
kv_start "${down#n}"
kv_until 20 "check agrees again after $down restarted" kv_cli check
kv_until 20 "status exits 0 once $down is back" kv_cli --timeout 2 status

# ---- snapshot save / verify / restore ---------------------------------------
snap=$KV_DIR/store.snap
kv_expect 0 kv_cli snapshot save "$snap"
grep -Eq "^saved $snap: index [0-9]+, [0-9]+ bytes$" "$KV_OUT" || kv_fail "save said: $(cat "$KV_OUT")"
[ -s "$snap" ] && [ ! -e "$snap.tmp" ] || kv_fail "snapshot save: no complete file (or a .tmp left)"
index=$(sed -E 's/.*index ([0-9]+),.*/\1/' "$KV_OUT")
kv_expect 0 kv_cli snapshot verify "$snap"
grep -Eq "^$snap: index $index term [0-9]+: OK$" "$KV_OUT" || kv_fail "verify said: $(cat "$KV_OUT")"
# verify is offline: it needs no cluster.
kv_expect 0 "$KV_BIN/kvcli" --cluster "127.0.0.1:$DEAD_PORT" snapshot verify "$snap"

# The file holds the whole store: a node restored from it serves it.
"$KV_BIN/kvd" restore --from "$snap" --data-dir "$KV_DIR/r1" --name r1 \
  --cluster "r1=127.0.0.1:$RESTORE_PORT" >"$KV_DIR/r1.log" 2>&1 ||
  kv_fail "kvd restore from the saved snapshot failed: $(cat "$KV_DIR/r1.log")"
"$KV_BIN/kvd" --name r1 --data-dir "$KV_DIR/r1" --listen "127.0.0.1:$RESTORE_PORT" \
  >>"$KV_DIR/r1.log" 2>&1 &
KV_BG+=($!)
kv_until 20 "the restored node serves the saved data" \
  "$KV_BIN/kvcli" --cluster "127.0.0.1:$RESTORE_PORT" --timeout 2 get key30
kv_expect 0 "$KV_BIN/kvcli" --cluster "127.0.0.1:$RESTORE_PORT" get after-transfer
kv_expect_out yes

# One flipped byte: exit 4, CORRUPT, the offset of the damaged record.
size=$(stat -c %s "$snap")
flip=$((size / 2))
cp "$snap" "$KV_DIR/flipped.snap"
orig=$(od -An -tu1 -j "$flip" -N1 "$snap" | tr -d ' ')
printf %b "\\$(printf %03o $(((orig ^ 0x5a) & 255)))" |
  dd of="$KV_DIR/flipped.snap" bs=1 seek="$flip" conv=notrunc status=none
cmp -s "$snap" "$KV_DIR/flipped.snap" && kv_fail "internal: the byte did not flip"
kv_expect 4 kv_cli snapshot verify "$KV_DIR/flipped.snap"
kv_expect_err "^CORRUPT $KV_DIR/flipped.snap offset [0-9]+: "
named=$(sed -nE 's/^CORRUPT .* offset ([0-9]+): .*/\1/p' "$KV_ERR")
[ "$named" -le "$flip" ] && [ $((flip - named)) -le $((1024 * 1024 + 4096)) ] ||
  kv_fail "verify named offset $named; the flipped byte is at $flip"
kv_expect 4 kv_cli --json snapshot verify "$KV_DIR/flipped.snap"
grep -q '^{"error":"CORRUPT","message":"CORRUPT ' "$KV_OUT" || kv_fail "verify --json: $(cat "$KV_OUT")"
head -c 100 "$snap" >"$KV_DIR/short.snap"
kv_expect 4 kv_cli snapshot verify "$KV_DIR/short.snap"
kv_expect_err "^CORRUPT "

# ---- member add / remove ----------------------------------------------------
kv_expect 0 kv_cli member add n4 "127.0.0.1:$KV_SPARE_PORT"
kv_expect 0 kv_cli member list
grep -Eq "^n4 +127.0.0.1:$KV_SPARE_PORT +[0-9]+ +(learner|joining)$" "$KV_OUT" ||
  kv_fail "member list after add: n4 is not a learner: $(cat "$KV_OUT")"
"$KV_BIN/kvd" --name n4 --data-dir "$KV_DIR/n4" --listen "127.0.0.1:$KV_SPARE_PORT" \
  --join "$(kv_addr "$KV_LEADER_I")" >>"$KV_DIR/n4.log" 2>&1 &
KV_PIDS[4]=$!
kv__save_pids
promoted() { kv_cli member list | grep -Eq "^n4 +127.0.0.1:$KV_SPARE_PORT +[0-9]+ +voter$"; }
kv_until 30 "n4 promoted to voter once caught up" promoted
kv_until 10 "n4 serves the data" \
  "$KV_BIN/kvcli" --cluster "127.0.0.1:$KV_SPARE_PORT" get --stale key30
kv_expect 0 kv_cli member remove n4
kv_expect 0 kv_cli member list
grep -q "^n4 " "$KV_OUT" && kv_fail "member list after remove still shows n4: $(cat "$KV_OUT")"
kv_expect 1 kv_cli member remove n4
kv_expect_err "n4 is not a member"
kv_expect 0 kv_cli get key30
kv_expect_out "value 30"

kv_pass
