#!/usr/bin/env bash
# kvcli's interactive shell through a pseudo-terminal against a real
# three-node cluster (test_shell_pty.py says what is typed and checked):
# put/get with quoting, errors shown while the shell goes on, TAB
# completion, the prompt naming the node and its role, history kept
# between sessions in $KV_HISTORY.
# Usage: test_shell.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup shell 320 "${1:?usage: test_shell.sh BIN_DIR}"

kv_start_all
kv_wait_leader

# HOME too: no ~/.editrc of the user running the tests changes the keys.
HOME=$KV_DIR python3 "$(dirname "$0")/test_shell_pty.py" "$KV_BIN/kvcli" "$KV_ENDPOINTS" \
  "$KV_LEADER" "$KV_DIR/history" || kv_fail "the shell session (above)"

kv_pass
