#!/usr/bin/env bash
# make demo without a terminal: scripts/demo </dev/null runs its scripted
# tour (writes, kill -9 of the leader, reads back, restart, check,
# snapshot) against the build's binaries and exits 0; afterwards no node
# is left running and its ports are free. Then the same demo stopped by
# SIGTERM half-way still stops its nodes (the trap).
# It uses the demo's fixed ports (7001-7003, 9101-9103): ctest runs it
# alone (RUN_SERIAL).
# Usage: test_demo.sh BIN_DIR
set -euo pipefail
bin=$(cd "${1:?usage: test_demo.sh BIN_DIR}" && pwd)
root=$(cd "$(dirname "$0")/../.." && pwd)
dir=$(mktemp -d "${TMPDIR:-/tmp}/kv-demo.XXXXXX")
demo_pid=""
cleanup() {
  local rc=$?
  [ -n "$demo_pid" ] && kill -9 "$demo_pid" 2>/dev/null
  local p
  for p in $(our_nodes); do # what a failed demo left behind
    kill -9 "$p" 2>/dev/null
  done
  [ "$rc" -eq 0 ] || echo "FAILED: demo (exit $rc)" >&2
  rm -rf "$dir"
  exit "$rc"
}
trap cleanup EXIT
fail() {
  echo "FAIL: demo: $*" >&2
  exit 1
}
ports_free() {
  local p
  for p in 7001 7002 7003 9101 9102 9103; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      return 1
    fi
  done
}
# The kvd processes whose data dir is under ours (a demo's nodes).
our_nodes() { pgrep -f -- "--data-dir $dir/" || true; }

ports_free || fail "a demo port (7001-7003, 9101-9103) is in use before the test"

# 1. The tour: exit 0, every step shown, nothing left running.
rc=0
KV_BUILD=$(dirname "$bin") KV_DEMO_DATA=$dir/data timeout 240 "$root/scripts/demo" \
  </dev/null >"$dir/tour.out" 2>&1 || rc=$?
if [ "$rc" -ne 0 ]; then
  cat "$dir/tour.out" >&2
  for f in "$dir"/data/n*.log; do
    [ -e "$f" ] && { echo "===== $f" >&2; tail -n 60 "$f" >&2; }
  done
  fail "scripts/demo </dev/null exited $rc, want 0"
fi
cat "$dir/tour.out"
for want in "kill -9 the leader" "new leader: n[123]" "every acknowledged write reads back" \
  "OK: 3 members agree at index" "backup.snap: index [0-9]+ term [0-9]+: OK" "tour complete"; do
  grep -Eq -- "$want" "$dir/tour.out" || fail "the tour's output does not show /$want/"
done
[ -z "$(our_nodes)" ] || fail "kvd still running after the demo: $(our_nodes)"
ports_free || fail "a demo port is still in use after the demo exited"

# 2. Stopped half-way by SIGTERM: the trap still stops the nodes.
: >"$dir/term.out"
KV_BUILD=$(dirname "$bin") KV_DEMO_DATA=$dir/data2 "$root/scripts/demo" \
  </dev/null >"$dir/term.out" 2>&1 &
demo_pid=$!
for ((t = 0; t < 200; t++)); do
  grep -q "^leader: " "$dir/term.out" && break
  sleep 0.1
done
grep -q "^leader: " "$dir/term.out" || { cat "$dir/term.out" >&2; fail "the second demo found no leader"; }
[ -n "$(our_nodes)" ] || fail "internal: no demo nodes found to be stopped"
kill -TERM "$demo_pid"
rc=0
wait "$demo_pid" || rc=$?
demo_pid=""
[ "$rc" -ne 0 ] || fail "a demo stopped by SIGTERM exited 0"
for ((t = 0; t < 50; t++)); do
  [ -z "$(our_nodes)" ] && break
  sleep 0.1
done
[ -z "$(our_nodes)" ] || fail "kvd still running after the demo got SIGTERM: $(our_nodes)"
ports_free || fail "a demo port is still in use after the demo got SIGTERM"
echo "PASS: demo"
