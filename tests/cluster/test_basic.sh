#!/usr/bin/env bash
# Three kvd processes elect a leader; kvcli's commands give the documented
# output and exit codes; a clean stop (SIGTERM, exit 0) and restart of all
# three loses nothing.
# Usage: test_basic.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup basic 1 "${1:?usage: test_basic.sh BIN_DIR}"

kv_start_all
kv_wait_leader

# put / get / del
kv_expect 0 kv_cli put a 1
kv_expect_out "OK"
kv_expect 0 kv_cli get a
kv_expect_out "1"
kv_expect 1 kv_cli get nope
kv_expect_err "not found"
kv_expect 0 kv_cli put "with space" "a value  with   spaces"
kv_expect 0 kv_cli get "with space"
kv_expect_out "a value  with   spaces"
kv_expect 0 kv_cli put gone x
kv_expect 0 kv_cli del gone
kv_expect_out "OK"
kv_expect 1 kv_cli del gone
kv_expect_err "not found"
kv_expect 1 kv_cli get gone

# compare-and-set
kv_expect 0 kv_cli put c v1
kv_expect 0 kv_cli cas c v1 v2
kv_expect_out "OK"
kv_expect 1 kv_cli cas c v1 v3
kv_expect_err "compare failed: current value is v2"
kv_expect 0 kv_cli get c
kv_expect_out "v2"
kv_expect 1 kv_cli cas --absent c v9
kv_expect_err "compare failed: key exists"
kv_expect 1 kv_cli cas absent-key x y
kv_expect_err "compare failed: key is absent"
kv_expect 1 kv_cli get absent-key
kv_expect 0 kv_cli cas --absent fresh f1
kv_expect 0 kv_cli get fresh
kv_expect_out "f1"

# scan: every key under the prefix in order, paged, escaped
kv_expect 0 kv_cli put s/1 one
kv_expect 0 kv_cli put s/2 "two words"
kv_expect 0 kv_cli put s/3 'back\slash'
kv_expect 0 kv_cli put t/1 other
kv_expect 0 kv_cli scan s/
kv_expect_out "$(printf 's/1\tone\ns/2\ttwo words\ns/3\tback\\\\slash')"
kv_expect 0 kv_cli scan s/ --limit 2
kv_expect_out "$(printf 's/1\tone\ns/2\ttwo words')"
kv_expect 0 kv_cli scan s/nothing
kv_expect_out ""

# a binary value through stdin, byte for byte
kv_random_bytes 3000 "$KV_DIR/bin.in" bin
printf '\0\n\r\t\\\377' >>"$KV_DIR/bin.in"
kv_expect 0 kv_cli put bin - <"$KV_DIR/bin.in"
get_bin() { # NAME: get bin (stdout a file: the bytes alone) compared with bin.in
  kv_expect 0 kv_cli get bin
  cmp -s "$KV_DIR/bin.in" "$KV_OUT" ||
    kv_fail "$1: the binary value read back differs from what was put ($(cmp "$KV_DIR/bin.in" "$KV_OUT" 2>&1 || true))"
}
get_bin "after put"

# --json
kv_expect 0 kv_cli --json get "with space"
grep -Eqx '\{"key":"with space","value":"a value  with   spaces","create_rev":[1-9][0-9]*,"mod_rev":[1-9][0-9]*,"version":1,"lease":0\}' "$KV_OUT" ||
  kv_fail "get --json: $(cat "$KV_OUT")"
kv_expect 1 kv_cli --json get nope
kv_expect_out '{"error":"NOTFOUND"}'
kv_expect 0 kv_cli --json put j '"quoted"'
kv_expect_out '{"ok":true}'

# commands from stdin, one per line
printf '%s\n' 'put "line key" "line value"' '# a comment' '' 'get "line key"' 'get nope' >"$KV_DIR/cmds"
kv_expect 1 kv_cli <"$KV_DIR/cmds"
kv_expect_out "$(printf 'OK\nline value')"

# usage errors: exit 2, naming what was wrong
kv_expect 2 kv_cli frobnicate
kv_expect_err "unknown command 'frobnicate'"
kv_expect 2 kv_cli put onlykey
kv_expect_err "put: wants 2 arguments, got 1"
kv_expect 2 kv_cli --bogus get a
kv_expect_err "bogus"
kv_expect 2 kv_cli get --bogus a
kv_expect_err "bogus"

# status: one row per node, all healthy once the followers heard the leader
status_all_ok() {
  kv_cli status >"$KV_DIR/status" 2>&1 || { cat "$KV_DIR/status"; return 1; }
  cat "$KV_DIR/status"
  [ "$(awk 'NR > 1 && $8 == "ok"' "$KV_DIR/status" | wc -l)" -eq 3 ]
}
kv_until 10 "kvcli status showing 3 healthy nodes" status_all_ok
[ "$(awk 'NR > 1 && $3 == "leader"' "$KV_DIR/status" | wc -l)" -eq 1 ] ||
  kv_fail "status does not show exactly one leader: $(cat "$KV_DIR/status")"

# Without a quorum a write fails with exit 3; a stale read still works.
kv_stop 1
kv_stop 2
kv_expect 3 kv_cli --timeout 2 put no-quorum x
kv_expect_err "UNAVAILABLE|TIMEOUT"
no_quorum_applied=unknown
grep -q "not applied" "$KV_ERR" && no_quorum_applied=no
kv_expect 0 kv_cli_node 3 --timeout 2 get --stale a
kv_expect_out "1"

# A clean stop and restart of the whole cluster keeps everything.
kv_stop 3
kv_expect 3 kv_cli --timeout 2 status
kv_expect 3 kv_cli --timeout 2 put while-down x
kv_expect_err "UNAVAILABLE"
kv_start_all
kv_wait_leader
kv_expect 0 kv_cli get a
kv_expect_out "1"
kv_expect 0 kv_cli get "with space"
kv_expect_out "a value  with   spaces"
kv_expect 1 kv_cli get gone
kv_expect 0 kv_cli get c
kv_expect_out "v2"
kv_expect 0 kv_cli get fresh
kv_expect_out "f1"
kv_expect 0 kv_cli get "line key"
kv_expect_out "line value"
kv_expect 0 kv_cli scan s/
kv_expect_out "$(printf 's/1\tone\ns/2\ttwo words\ns/3\tback\\\\slash')"
get_bin "after a restart of all nodes"
kv_expect 1 kv_cli get while-down
if [ "$no_quorum_applied" = no ]; then # kvcli said "not applied": it must not be there
  kv_expect 1 kv_cli get no-quorum
fi
kv_expect 0 kv_cli put after-restart yes
kv_stop_all
kv_pass
