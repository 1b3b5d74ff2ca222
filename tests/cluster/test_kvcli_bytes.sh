#!/usr/bin/env bash
# Values are bytes: every kvcli path gives them back exactly.
#   get with stdout not a terminal: the value's bytes and nothing else (a
#     1 MiB value is 1,048,576 bytes; \x00\xff comes back as two bytes);
#   --json: keys and values that are not UTF-8 are base64 with a field
#     saying so (\xff and \xc3\xbf no longer both print as "ÿ"); 64-bit
#     member ids are strings;
#   one escaping rule: scan (and get in line mode) print UTF-8 as is and
#     other bytes as \xNN, which printf '%b' and kvcli's own line mode read
#     back to the same bytes;
#   scan --limit says when more keys remain (stderr in text, a last
#     {"more":true} in JSON), and says nothing when none do.
# Usage: test_kvcli_bytes.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup kvcli_bytes 330 "${1:?usage: test_kvcli_bytes.sh BIN_DIR}"

kv_start_all
kv_wait_leader

# ---- get: exact bytes --------------------------------------------------------
kv_random_bytes 1048576 "$KV_DIR/mib.in" mib
kv_expect 0 kv_cli put mib - <"$KV_DIR/mib.in"
kv_cli get mib >"$KV_DIR/mib.out"
[ "$(stat -c %s "$KV_DIR/mib.out")" -eq 1048576 ] ||
  kv_fail "get of a 1 MiB value wrote $(stat -c %s "$KV_DIR/mib.out") bytes, want 1048576"
cmp -s "$KV_DIR/mib.in" "$KV_DIR/mib.out" || kv_fail "get of a 1 MiB value: bytes differ"

printf '\x00\xff' | kv_cli put two - >/dev/null
kv_cli get two >"$KV_DIR/two.out"
[ "$(od -An -tx1 "$KV_DIR/two.out" | tr -d ' \n')" = "00ff" ] ||
  kv_fail "put \\x00\\xff; get gave $(od -An -tx1 "$KV_DIR/two.out")"
kv_expect 0 kv_cli put empty ""
kv_cli get empty >"$KV_DIR/empty.out"
[ ! -s "$KV_DIR/empty.out" ] || kv_fail "get of an empty value wrote $(stat -c %s "$KV_DIR/empty.out") bytes"

# ---- --json: base64 for what is not UTF-8, ids as strings --------------------
printf '\xff' | kv_cli put latin1 - >/dev/null
printf '\xc3\xbf' | kv_cli put utf8 - >/dev/null
kv_expect 0 kv_cli --json get latin1
kv_strip_revs
kv_expect_out '{"key":"latin1","value":"/w==","value_encoding":"base64"}'
kv_expect 0 kv_cli --json get utf8
kv_strip_revs
kv_expect_out '{"key":"utf8","value":"ÿ"}'
kv_expect 0 kv_cli --json get two
kv_strip_revs
kv_expect_out '{"key":"two","value":"AP8=","value_encoding":"base64"}'
kv_expect 0 kv_cli --json member list
[ "$(grep -c '"id":"[0-9]\+",' "$KV_OUT")" -eq 3 ] || kv_fail "member list --json: ids not strings: $(cat "$KV_OUT")"

# ---- one escaping rule, read back by kvcli and printf '%b' --------------------
printf '%s\n' 'put "e/caf\xc3\xa9" "r\xc3\xa9sum\xc3\xa9"' 'put e/bin\x01 "\x00\xff\\x"' \
  'put e/tab "a\tb"' >"$KV_DIR/cmds"
kv_expect 0 kv_cli <"$KV_DIR/cmds"
kv_expect 0 kv_cli scan e/
want=$(printf 'e/bin\\x01\t\\x00\\xff\\\\x\ne/café\trésumé\ne/tab\tatb')
kv_expect_out "$want"
# Every row decodes (printf %b) to the stored bytes, which get gives exactly.
while IFS=$'\t' read -r k v; do
  printf '%b' "$k" >"$KV_DIR/k"
  printf '%b' "$v" >"$KV_DIR/v.want"
  "$KV_BIN/kvcli" --cluster "$KV_ENDPOINTS" get "$(cat "$KV_DIR/k")" >"$KV_DIR/v.got" ||
    [ "$k" = 'e/bin\x01' ] || kv_fail "get of scanned key '$k' failed"
  [ "$k" = 'e/bin\x01' ] && continue # a \x01 key: read below through line mode
  cmp -s "$KV_DIR/v.want" "$KV_DIR/v.got" || kv_fail "scan row '$k' does not decode to the value"
done <"$KV_OUT"
# The escaped form typed back in line mode names the same key; exact get.
printf '%s\n' 'get e/bin\x01' >"$KV_DIR/cmds"
kv_expect 0 kv_cli <"$KV_DIR/cmds"
kv_expect_out '\x00\xff\\x'
printf '%s\n' 'put copy "\x00\xff\\x"' >"$KV_DIR/cmds"
kv_expect 0 kv_cli <"$KV_DIR/cmds"
kv_cli get copy >"$KV_DIR/copy.out"
[ "$(od -An -tx1 "$KV_DIR/copy.out" | tr -d ' \n')" = "00ff5c78" ] ||
  kv_fail "line mode read \\x00\\xff\\\\x as $(od -An -tx1 "$KV_DIR/copy.out")"
# get on line mode of a UTF-8 value: as is (not \xc3\xa9).
printf '%s\n' 'get "e/café"' >"$KV_DIR/cmds"
kv_expect 0 kv_cli <"$KV_DIR/cmds"
kv_expect_out "résumé"
kv_expect 0 kv_cli --json scan e/
kv_strip_revs
grep -qx '{"key":"e/bin\\u0001","value":"AP9ceA==","value_encoding":"base64"}' "$KV_OUT" ||
  kv_fail "scan --json of a binary value: $(cat "$KV_OUT")"

# ---- scan --limit says when more remain ---------------------------------------
kv_expect 0 kv_cli scan e/ --limit 2
[ "$(wc -l <"$KV_OUT")" -eq 2 ] || kv_fail "scan --limit 2 printed $(wc -l <"$KV_OUT") rows"
kv_expect_err "more keys follow"
kv_expect 0 kv_cli scan e/ --limit 3
[ ! -s "$KV_ERR" ] || kv_fail "scan --limit 3 of 3 keys said: $(cat "$KV_ERR")"
kv_expect 0 kv_cli --json scan e/ --limit 1
[ "$(tail -n 1 "$KV_OUT")" = '{"more":true}' ] || kv_fail "scan --json --limit 1: $(cat "$KV_OUT")"
kv_expect 0 kv_cli --json scan e/ --limit 3
grep -q more "$KV_OUT" && kv_fail "scan --json --limit 3 of 3 said more: $(cat "$KV_OUT")"

kv_pass
