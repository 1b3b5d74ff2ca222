#!/usr/bin/env bash
# A control of kv-jepsen: a run with a known defect that must be caught.
#   control.sh ATTEMPTS PATTERN KV_JEPSEN [ARGS...]
# Runs kv-jepsen up to ATTEMPTS times; passes as soon as one run exits 1
# with output matching the extended regex PATTERN (what counts as caught),
# fails if none is.
#   --control stale-read: a stale read needs a lagging node at the right
#     moment, so 3 attempts; caught means linearizable=false.
#   --control no-fsync: one attempt (a single default run must catch it);
#     caught means lost adds, a non-linearizable history, or nodes that
#     cannot start from what the crash left.
set -uo pipefail
attempts=$1 pattern=$2 prog=$3
shift 3
for attempt in $(seq "$attempts"); do
  out=$("$prog" "$@" 2>&1)
  rc=$?
  if [ "$rc" -eq 77 ]; then
    printf '%s\n' "$out" | tail -3
    exit 77
  fi
  printf '%s\n' "$out" | grep -E "seed|nemesis:|EXITED|LOST|lost=" | tail -30
  if [ "$rc" -eq 1 ] && printf '%s\n' "$out" | grep -Eq "$pattern"; then
    echo "control: caught (attempt $attempt): $(printf '%s\n' "$out" | grep -Eo "$pattern" | sort -u | tr '\n' ' ')"
    exit 0
  fi
  echo "control: attempt $attempt not caught (exit $rc)"
done
echo "control: FAILED: $attempts run(s) with a known defect were all called correct" >&2
exit 1
