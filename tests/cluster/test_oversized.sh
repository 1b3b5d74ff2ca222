#!/usr/bin/env bash
# The limits, at and one past: a 4097-byte key and a 1048577-byte value are
# refused with TOOBIG (exit 4) and nothing is stored; a 4096-byte key and a
# 1048576-byte value are stored, read back whole, and still read back after
# every node restarted (the log's decoder takes what the write path took).
# Usage: test_oversized.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup oversized 4 "${1:?usage: test_oversized.sh BIN_DIR}"

KEY_MAX=4096
VALUE_MAX=1048576

kv_start_all
kv_wait_leader

rep() { head -c "$2" /dev/zero | tr '\0' "$1"; } # rep CHAR N
big_key="big-$(rep a $((KEY_MAX + 1 - 4)))"
max_key="max-$(rep b $((KEY_MAX - 4)))"
[ ${#big_key} -eq $((KEY_MAX + 1)) ] && [ ${#max_key} -eq $KEY_MAX ] ||
  kv_fail "internal: key lengths ${#big_key} ${#max_key}"

# One past the key limit.
kv_expect 4 kv_cli put "$big_key" v
kv_expect_err "TOOBIG: key of 4097 bytes is over KV_KEY_BYTES_MAX \(4096\)"
kv_expect 0 kv_cli scan big-
kv_expect_out ""

# One past the value limit (through stdin: argv holds at most 128 KiB).
kv_random_bytes $((VALUE_MAX + 1)) "$KV_DIR/big.val" big
kv_expect 4 kv_cli put bigval - <"$KV_DIR/big.val"
kv_expect_err "TOOBIG: value of 1048577 bytes is over KV_VALUE_BYTES_MAX"
kv_expect 1 kv_cli get bigval
kv_expect 4 kv_cli cas --absent bigval - <"$KV_DIR/big.val"
kv_expect_err TOOBIG
kv_expect 1 kv_cli get bigval

# At the limits.
kv_expect 0 kv_cli put "$max_key" at-key-limit
kv_expect 0 kv_cli get "$max_key"
kv_expect_out "at-key-limit"
head -c "$VALUE_MAX" "$KV_DIR/big.val" >"$KV_DIR/max.val"
kv_expect 0 kv_cli put maxval - <"$KV_DIR/max.val"
check_max_value() { # WHEN
  kv_expect 0 kv_cli get maxval # stdout a file: the value's bytes alone
  [ "$(stat -c %s "$KV_OUT")" -eq $VALUE_MAX ] ||
    kv_fail "$1: get maxval printed $(stat -c %s "$KV_OUT") bytes, want $VALUE_MAX"
  cmp -s "$KV_OUT" "$KV_DIR/max.val" ||
    kv_fail "$1: the $VALUE_MAX-byte value read back differs from what was put"
  kv_expect 0 kv_cli get "$max_key"
  kv_expect_out "at-key-limit"
}
check_max_value "after put"

# A scan pages (about 1 MiB per answer) through values near the limit.
rep p 700000 >"$KV_DIR/page.val"
for n in 1 2 3; do
  kv_expect 0 kv_cli put "page/$n" - <"$KV_DIR/page.val"
done
kv_expect 0 kv_cli scan page/
[ "$(cut -f1 "$KV_OUT" | tr '\n' ' ')" = "page/1 page/2 page/3 " ] ||
  kv_fail "scan over three 700000-byte values did not list page/1..3 (paging): $(cut -c1-20 "$KV_OUT")"
[ "$(stat -c %s "$KV_OUT")" -eq $((3 * (7 + 700000 + 1))) ] ||
  kv_fail "scan over three 700000-byte values printed $(stat -c %s "$KV_OUT") bytes"

# The cluster keeps serving, every node alive.
kv_expect 0 kv_cli put small ok
kv_expect 0 kv_cli get small
kv_expect_out "ok"
kv_check_alive 1
kv_check_alive 2
kv_check_alive 3

# Entries at the limit survive a restart of every node (read from the log).
kv_stop_all
kv_start_all
kv_wait_leader
check_max_value "after a restart of all nodes"
kv_expect 1 kv_cli get bigval
kv_stop_all
kv_pass
