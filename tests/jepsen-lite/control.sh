#!/usr/bin/env bash
# The control of kv-jepsen: with --control-stale the gets read from one node
# without ReadIndex, so the checker must report a violation. A stale read
# needs a lagging node at the right moment, so up to three seeded runs are
# tried; the control passes as soon as one run is caught ("linearizability:
# FAIL", exit 1) and fails if none is.
#   control.sh KV_JEPSEN [ARGS...]
set -uo pipefail
prog=$1
shift
for attempt in 1 2 3; do
  out=$("$prog" "$@" --control-stale 2>&1)
  rc=$?
  printf '%s\n' "$out" | tail -20
  if [ "$rc" -eq 1 ] && printf '%s\n' "$out" | grep -q "linearizability: FAIL"; then
    echo "control: the stale reads were caught (attempt $attempt)"
    exit 0
  fi
  echo "control: attempt $attempt not caught (exit $rc)"
done
echo "control: FAILED: three runs with stale reads were all called linearizable" >&2
exit 1
