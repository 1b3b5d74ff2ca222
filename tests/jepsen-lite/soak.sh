#!/usr/bin/env bash
# make jepsen: a long soak of `run` over random seeds, alternating 3 and 5
# nodes, every nemesis, both workloads, until JEPSEN_MINUTES (default 60)
# have passed or a run fails (its seed and replay command are printed, its
# run dir and history kept). JEPSEN_RUN_SECONDS (default 120) per run.
#   tests/jepsen-lite/soak.sh
set -uo pipefail
here=$(cd "$(dirname "$0")" && pwd)
minutes=${JEPSEN_MINUTES:-60}
per=${JEPSEN_RUN_SECONDS:-120}
end=$(($(date +%s) + minutes * 60))
runs=0
nodes=3
while [ "$(date +%s)" -lt "$end" ]; do
  seed=$(od -An -N6 -tu8 /dev/urandom | tr -d ' ')
  runs=$((runs + 1))
  echo "=== soak run $runs: --nodes $nodes --seed $seed --time $per"
  out=$("$here/run" --nodes "$nodes" --seed "$seed" --time "$per" 2>&1)
  rc=$?
  printf '%s\n' "$out" | tail -1
  if [ "$rc" -ne 0 ]; then
    printf '%s\n' "$out" | tail -60
    echo "soak: run $runs FAILED (exit $rc): tests/jepsen-lite/run --nodes $nodes --seed $seed --time $per" >&2
    exit 1
  fi
  nodes=$((nodes == 3 ? 5 : 3))
done
echo "soak: $runs runs passed in $minutes minutes"
