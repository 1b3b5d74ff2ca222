#!/usr/bin/env bash
# Runs kvbench rows in order on one fresh 3-node cluster and prints, per row,
# what it cost the nodes: steadier than throughput on a small shared machine,
# where one run's ops/s moves by up to 30%.
#
#   bench/cpu_rows.sh [--bin DIR] [--port BASE] [--metric NAME]... ROW...
#
# ROW: kvbench arguments in one word, e.g. "put --clients 64 --requests
# 40000" (--cluster and --size 256 are added). DIR: where kvd, kvcli and
# kvbench are (default build/bin). BASE: the nodes listen on BASE+1..3 and
# serve /metrics on BASE+11..13 (default 27300). --metric NAME: also print
# each node's change of that /metrics sample over the row (repeatable).
#
# One line per row: kvbench's op, clients, ops_per_s, p50_us and p99_us;
# kvd_us_per_req, the user + system CPU of the kvd processes but their
# RocksDB threads (the loop, the log writer, the snapshot worker, also once
# it has exited), summed over the three nodes, per request; and the same for
# RocksDB's flush and compaction threads (rocksdb_us_per_req); and
# client_us_per_req, kvbench's own user + system CPU per request (its whole
# run: connecting, and the keys a get row writes first). Then, per
# --metric, a line "  nI NAME +DELTA".
# Compare builds by running this for each in turn, several times, and taking
# medians (docs/benchmarks.md, "fourth pass").
set -euo pipefail
export LC_ALL=C # bash's time below prints its seconds with a dot

bin=build/bin base=27300
metrics=()
while [ $# -gt 0 ]; do
  case $1 in
    --bin) bin=${2:?--bin: needs a directory}; shift 2 ;;
    --port)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] && [ "$2" -lt 32700 ] ||
        { echo "cpu_rows.sh: --port: needs a number below 32700" >&2; exit 2; }
      base=$2; shift 2 ;;
    --metric) metrics+=("${2:?--metric: needs a name}"); shift 2 ;;
    --*) echo "cpu_rows.sh: $1: unknown flag (--bin DIR, --port BASE, --metric NAME)" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: bench/cpu_rows.sh [--bin DIR] [--port BASE] [--metric NAME]... ROW..." >&2; exit 2; }
for b in kvd kvcli kvbench; do
  [ -x "$bin/$b" ] || { echo "cpu_rows.sh: $bin/$b missing: make build first" >&2; exit 1; }
done

dir=$(mktemp -d "${TMPDIR:-/tmp}/kv-cpu-rows.XXXXXX")
pids=()
cleanup() {
  [ ${#pids[@]} -eq 0 ] || kill "${pids[@]}" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT
spec="" eps=""
for i in 1 2 3; do
  spec+="${spec:+,}n$i=127.0.0.1:$((base + i))"
  eps+="${eps:+,}127.0.0.1:$((base + i))"
done
for i in 1 2 3; do
  "$bin/kvd" init --name "n$i" --data-dir "$dir/n$i" --cluster "$spec" --cluster-token cpu-rows >/dev/null
  "$bin/kvd" --name "n$i" --data-dir "$dir/n$i" --cluster "$spec" \
    --metrics "127.0.0.1:$((base + 10 + i))" >"$dir/n$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 150); do
  "$bin/kvcli" --cluster "$eps" --timeout 1 status >/dev/null 2>&1 && break
  sleep 0.2
done

# "KVD ROCKSDB": user + system CPU ticks of the nodes. ROCKSDB: their
# RocksDB threads (named rocksdb:*, alive as long as the node); KVD: the
# rest of the process, from its own stat, which also counts the threads
# that have exited (the snapshot worker is one per job: summing the live
# threads alone missed it).
ticks() {
  local p t
  for p in "${pids[@]}"; do
    # fields after the command name: 14 utime, 15 stime (proc(5))
    echo "all $(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | awk '{print $12 + $13}')"
    for t in /proc/"$p"/task/*; do
      echo "$(cut -d' ' -f1 <"$t/comm" | cut -d: -f1) $(sed 's/.*) //' "$t/stat" | awk '{print $12 + $13}')"
    done 2>/dev/null
  done | awk '{s[$1] += $2} END {print s["all"] - s["rocksdb"], s["rocksdb"] + 0}'
}
metric_values() {
  local i m
  for i in 1 2 3; do
    curl -s "127.0.0.1:$((base + 10 + i))/metrics" >"$dir/m$i" || true
    for m in "${metrics[@]}"; do
      echo "n$i $m $(awk -v n="$m" '$1 == n { print $2 }' "$dir/m$i")"
    done
  done
}

tck=$(getconf CLK_TCK)
TIMEFORMAT='%3U %3S' # bash's time: kvbench's user and system seconds
for row in "$@"; do
  read -r k0 r0 < <(ticks)
  m0=$([ ${#metrics[@]} -eq 0 ] || metric_values)
  # shellcheck disable=SC2086 # the words of one row
  ct=$({ time "$bin/kvbench" $row --cluster "$eps" --size 256 >"$dir/out" 2>"$dir/err"; } 2>&1) ||
    { echo "cpu_rows.sh: kvbench $row failed: $(tail -n 3 "$dir/err")" >&2; exit 1; }
  line=$(tail -n 1 "$dir/out")
  read -r k1 r1 < <(ticks)
  m1=$([ ${#metrics[@]} -eq 0 ] || metric_values)
  req=$(sed -n 's/.* requests=\([0-9]*\).*/\1/p' <<<"$line")
  [ -n "$req" ] && [ "$req" -gt 0 ] || { echo "cpu_rows.sh: kvbench $row: no result: $line" >&2; exit 1; }
  fields=$(grep -o 'op=[a-z]*\|clients=[0-9]*\|ops_per_s=[0-9]*\|p50_us=[0-9]*\|p99_us=[0-9]*' <<<"$line" | tr '\n' ' ')
  echo "$fields$(awk -v k=$((k1 - k0)) -v r=$((r1 - r0)) -v t="$tck" -v n="$req" -v c="$ct" \
    'BEGIN {split(c, u, " "); printf "kvd_us_per_req=%.0f rocksdb_us_per_req=%.0f client_us_per_req=%.0f",
      k * 1e6 / t / n, r * 1e6 / t / n, (u[1] + u[2]) * 1e6 / n}')"
  [ ${#metrics[@]} -eq 0 ] ||
    join -j1 <(awk '{print $1 "/" $2, $3}' <<<"$m0") <(awk '{print $1 "/" $2, $3}' <<<"$m1") |
    awk '{split($1, a, "/"); printf "  %s %s +%g\n", a[1], a[2], $3 - $2}'
done
