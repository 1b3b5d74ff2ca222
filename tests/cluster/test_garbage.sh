#!/usr/bin/env bash
# Garbage on a node's port: random bytes, a truncated frame header, a
# header with wrong checksums, and a connection that says nothing. The node
# closes each such connection (the silent ones within ~6 s), stays up and
# keeps serving. A write without a key (rawreq.c, a hand-made client) is
# answered PROTO.
# Usage: test_garbage.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup garbage 5 "${1:?usage: test_garbage.sh BIN_DIR}"
probe=$(dirname "$0")/probe.py

IDLE_CLOSE_S=8 # "within ~6 s", with slack for a loaded machine

kv_start_all
kv_wait_leader
kv_expect 0 kv_cli put before garbage

for i in 1 2 3; do
  for mode in garbage badheader truncated idle; do
    rc=0
    python3 "$probe" 127.0.0.1 "${KV_PORT[$i]}" "$mode" "$KV_SEED-$i" "$IDLE_CLOSE_S" \
      >"$KV_DIR/probe.out" 2>&1 || rc=$?
    kv_log "n$i: $(cat "$KV_DIR/probe.out")"
    kv_check_alive "$i"
    case $rc in
    0) ;;
    1) kv_fail "n$i kept a connection open ${IDLE_CLOSE_S}s after it sent $mode (want it closed)" ;;
    *) kv_fail "could not probe n$i with $mode: $(cat "$KV_DIR/probe.out")" ;;
    esac
  done
done

# Requests the client library never sends, from a hand-made client: a write
# without a key is answered PROTO (it was answered nothing: the client hung
# until its timeout), and the node goes on.
for t in 2 3; do # PUT, DELETE
  out=$("$KV_BIN/rawreq" 127.0.0.1 "${KV_PORT[$KV_LEADER_I]}" "$t" "" v 2>&1) ||
    kv_fail "a request of type $t without a key got no answer from $KV_LEADER: $out"
  kv_log "type $t without a key: $out"
  case $out in
  code=PROTO*) ;;
  *) kv_fail "a request of type $t without a key: want code=PROTO, got: $out" ;;
  esac
done
kv_check_alive "$KV_LEADER_I"

# Everyone else is still served, every node is up.
kv_expect 0 kv_cli put after garbage
kv_expect 0 kv_cli get before
kv_expect_out "garbage"
for i in 1 2 3; do
  kv_check_alive "$i"
  kv_expect 0 kv_cli_node "$i" --timeout 5 get --stale before
  kv_expect_out "garbage"
done
kv_stop_all
kv_pass
