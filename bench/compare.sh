#!/usr/bin/env bash
# Runs kv's benchmarks and etcd's anchor in one run, so the figures sit side
# by side on the same machine, the same disk, the same minute.
#   bench/compare.sh [RUNS]     (default 3 runs of each kv figure)
# Needs a build (make build). etcd comes from ../shared/tools/etcd-anchor.
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${KV_BIN:-build/bin}
runs=${1:-3}
anchor=${ETCD_ANCHOR:-../shared/tools/etcd-anchor/run.sh}
dir=$(mktemp -d "${TMPDIR:-/tmp}/kv-compare.XXXXXX")
trap 'rm -rf "$dir"' EXIT

echo "# kv write-ahead log (kvbench wal), $runs runs each"
for i in $(seq "$runs"); do
  "$bin/kvbench" wal --data-dir "$dir/w64-$i" --records 30000 --size 256 --writers 64 | sed 's/^/wal writers=64 /'
  rm -rf "$dir/w64-$i"
  "$bin/kvbench" wal --data-dir "$dir/w64-$i" --records 30000 --size 256 --writers 64 --coalesce --threads 1 | sed 's/^/wal writers=64 coalesce threads=1 /'
  "$bin/kvbench" wal --data-dir "$dir/w1-$i" --records 3000 --size 256 --writers 1 | sed 's/^/wal writers=1 /'
  rm -rf "$dir/w64-$i" "$dir/w1-$i"
done
echo "# kv 3-node cluster on loopback (kvbench put/get through libkvclient), $runs runs each"
ports=(27101 27102 27103)
eps="127.0.0.1:${ports[0]},127.0.0.1:${ports[1]},127.0.0.1:${ports[2]}"
spec="n1=127.0.0.1:${ports[0]},n2=127.0.0.1:${ports[1]},n3=127.0.0.1:${ports[2]}"
pids=()
stop_cluster() { for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; pids=(); }
trap 'stop_cluster; rm -rf "$dir"' EXIT
for i in 1 2 3; do
  "$bin/kvd" init --name "n$i" --data-dir "$dir/kv-n$i" --cluster "$spec" --cluster-token "bench-$$" >"$dir/kv-n$i.log"
  "$bin/kvd" --name "n$i" --data-dir "$dir/kv-n$i" --cluster "$spec" >>"$dir/kv-n$i.log" 2>&1 &
  pids+=($!)
done
for _ in $(seq 100); do "$bin/kvcli" --cluster "$eps" --timeout 1 status >/dev/null 2>&1 && break; sleep 0.1; done
for i in $(seq "$runs"); do
  "$bin/kvbench" put --cluster "$eps" --clients 1 --requests 2000 --size 256
  "$bin/kvbench" put --cluster "$eps" --clients 64 --requests 40000 --size 256
  "$bin/kvbench" put --cluster "$eps" --clients 8 --async 64 --requests 80000 --size 256
done
"$bin/kvbench" get --cluster "$eps" --clients 64 --requests 40000 --size 256
stop_cluster
echo "# kv Raft core, in memory (raft-sim --bench)"
"$bin/raft-sim" --bench | tail -1
if [ -x "$anchor" ] && ! command -v etcdctl >/dev/null; then
  echo "# the etcd anchor needs etcdctl: apt-get install etcd-client" >&2
fi
if [ -x "$anchor" ]; then
  echo "# etcd 3-member cluster on loopback (etcd-anchor)"
  "$anchor" "put 1 2000 256" "put 64 40000 256" "get 64 40000 256"
else
  echo "# etcd anchor not found at $anchor: skipped"
fi
