#!/usr/bin/env bash
# Transactions and delete by prefix through kvcli on a real cluster: txn's
# output and exit codes on success and failure, compares of each target,
# quoting, a parse error naming its line; del --prefix past
# KV_DELETE_PREFIX_KEYS_MAX (several entries); get/scan --json revisions.
# Usage: test_txn.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup txn 343 "${1:?usage: test_txn.sh BIN_DIR}"

kv_start_all
kv_wait_leader

txn() { # kvcli txn with stdin from the argument
  kv_cli txn <<<"$1"
}

kv_expect 0 kv_cli put a 1
# success: the ops run in order, a get sees the put before it
kv_expect 0 txn 'value("a") = "1"
version("a") = 1
mod("a") > 0

put b 2
get b
del nope
del a

put c 3'
kv_expect_out "$(printf 'SUCCESS\n\nOK\n\nb\n2\n\n0\n\n1')"
kv_expect 1 kv_cli get a
kv_expect 0 kv_cli get b
kv_expect_out "2"
kv_expect 1 kv_cli get c

# failure: exit 1, the failure ops ran, the success ops did not
kv_expect 1 txn 'value("b") = "9"

put d 4

put c 3
get c'
kv_expect_out "$(printf 'FAILURE\n\nOK\n\nc\n3')"
kv_expect 1 kv_cli get d
kv_expect 0 kv_cli get c
kv_expect_out "3"

# an absent key: version 0, create 0; its value equals nothing
kv_expect 0 txn 'version("zz") = 0
create("zz") = 0
value("zz") != ""
lease("b") = 0

put zz made'
kv_expect 1 txn 'value("zz") = "other"'
kv_expect_out "FAILURE"

# quoting: keys and values with spaces, quotes and backslashes
kv_expect 0 txn '
put "q k" "say \"hi\" \\ there"'
kv_expect 0 kv_cli get "q k" # not a terminal: the bytes as they are
kv_expect_out 'say "hi" \ there'
kv_expect 0 txn 'value("q k") = "say \"hi\" \\ there"

get "q k"'
kv_expect_out $'SUCCESS\n\nq k\nsay "hi" \\\\ there' # escaped as scan's rows

# parse errors: exit 2, the line named, nothing sent
kv_expect 2 txn 'value("b") = "2"
bogus("b") = 1

put x 1'
kv_expect_err "line 2"
kv_expect 2 txn 'value("b") = "2"

put x'
kv_expect_err "line 3: put wants a key and a value"
kv_expect 2 txn 'mod("b") < many'
kv_expect_err "line 1: 'many' is not a number"
kv_expect 1 kv_cli get x

# revisions: mod_rev rises with each write, create_rev stays, version counts
kv_expect 0 kv_cli put r one
kv_expect 0 kv_cli --json get r
j1=$(cat "$KV_OUT")
kv_expect 0 kv_cli put r two
kv_expect 0 kv_cli --json get r
j2=$(cat "$KV_OUT")
python3 - "$j1" "$j2" <<'PY' || kv_fail "revisions: $j1 then $j2"
import json, sys
a, b = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert a["version"] == 1 and b["version"] == 2, (a, b)
assert a["create_rev"] == a["mod_rev"] > 0, a
assert b["create_rev"] == a["create_rev"] and b["mod_rev"] > a["mod_rev"], (a, b)
assert b["value"] == "two" and b["lease"] == 0, b
PY
# a stale read shows them too (as the node it asked applied them)
kv_expect 0 kv_cli --json get --stale r
js=$(cat "$KV_OUT")
python3 - "$j1" "$js" <<'PY' || kv_fail "revisions of a stale get: $js (after $j1)"
import json, sys
a, s = json.loads(sys.argv[1]), json.loads(sys.argv[2])
assert s["create_rev"] == a["create_rev"] and s["mod_rev"] >= a["mod_rev"] > 0, (a, s)
assert s["version"] >= 1, s
PY
# a txn on the mod revision just read: the first wins, the second fails
m2=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["mod_rev"])' "$j2")
kv_expect 0 txn "mod(\"r\") = $m2

put r three"
kv_expect 1 txn "mod(\"r\") = $m2

put r four"
kv_expect 0 kv_cli get r
kv_expect_out "three"
kv_expect 0 kv_cli --json scan r
python3 -c '
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
assert len(rows) == 1 and rows[0]["version"] == 3 and rows[0]["mod_rev"] > int(sys.argv[2]), rows
' "$KV_OUT" "$m2" || kv_fail "scan --json: $(cat "$KV_OUT")"

# del --prefix past KV_DELETE_PREFIX_KEYS_MAX (10000): written 128 keys a
# txn, deleted in several entries, counted in all
n=0
for t in $(seq 1 79); do
  { echo; for i in $(seq 1 128); do echo "put p/$t/$i v"; done; } >"$KV_DIR/big.txn"
  kv_expect 0 kv_cli txn <"$KV_DIR/big.txn"
  n=$((n + 128))
done
kv_expect 0 kv_cli put p0 outside
kv_expect 0 kv_cli put p/79/128 last
kv_expect 0 kv_cli del --prefix p/
kv_expect_out "$n"
kv_expect 0 kv_cli scan p/
kv_expect_out ""
kv_expect 0 kv_cli get p0
kv_expect_out "outside"
kv_expect 0 kv_cli --json del --prefix p/
kv_expect_out '{"deleted":0}'
# a txn of one op past KV_TXN_OPS_MAX: refused by the parser, naming the line
{ echo; for i in $(seq 1 129); do echo "put o/$i v"; done; } >"$KV_DIR/over.txn"
kv_expect 2 kv_cli txn <"$KV_DIR/over.txn"
kv_expect_err "line 130: .*KV_TXN_OPS_MAX"
kv_expect 0 kv_cli scan o/
kv_expect_out ""

# among commands on stdin: a txn is the lines after it, up to the blank
# line after the failure ops; the next line is a command again
kv_expect 0 kv_cli <<'EOF'
put s1 1
txn
value("s1") = "1"

put s2 2

put s3 3

get s2
EOF
kv_expect_out "$(printf 'OK\nSUCCESS\n\nOK\n2')"
kv_expect 1 kv_cli get s3
# a line of it that does not parse: the rest of the txn is skipped, none of
# its lines runs as a command, nothing of it is sent; the command after runs
kv_expect 2 kv_cli <<'EOF'
txn
bogus("s1") = "1"

put s4 4

put s6 6

put s5 5
EOF
kv_expect_err "txn: line 1: "
kv_expect 1 kv_cli get s4
kv_expect 1 kv_cli get s6
kv_expect 0 kv_cli get s5
kv_expect_out "5"

# every node agrees on all of it
kv_expect 0 kv_cli check
kv_pass
