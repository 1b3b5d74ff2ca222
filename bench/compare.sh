#!/usr/bin/env bash
# Runs kv's cluster benchmarks and etcd's in one run, so the figures sit side
# by side on the same machine, the same disk, the same minute.
#
#   bench/compare.sh [--quick] [--rounds N] [--no-etcd] [--no-plot] [--wal]
#                    [--failover-only] [--keep DIR]
#
# kv: a 3-node kvd cluster on loopback (kvd init; ports 27101-27103, or
# KV_BENCH_PORT+1..3), driven by kvbench through libkvclient. etcd: the
# shared anchor (../shared/tools/etcd-anchor/run.sh, a 3-member etcd measured
# with etcd's own Go client; it installs etcd and Go from Debian on first
# use) for put and get, and for mixed, txn, watch and failover a 3-member
# etcd of our own (the anchor's etcd binary and flags, ports 24110-24131 or
# ETCD_EXTRA_PORT) driven by bench/etcd/etcdextra.go, built like the
# anchor's client.
#
# Workloads, 256-byte values: put at 1, 16, 64, 256 and 1,024 clients
# (synchronous, one request in flight each), get (linearizable) at 64, mixed
# 90% gets / 10% puts at 64 over 1,000 keys, txn at 64 (each a compare-and-
# swap of a random one of 1,000 keys: if its value is the one the client last
# read then put a new one else get it; a failed compare is an answer, not an
# error), watch (one watcher on a prefix, 16 writers putting under it:
# events/s delivered, put sent to event received, events missed as errors;
# kvbench watch, etcdextra -op watch), kv's put with 8 connections x 64
# in flight, kv's put and get with 64 threads sharing one kv_client
# (kvbench --shared 64, the CSV's depth "1s64"), kv's put and get with 64
# requests in flight on one kv_client (kvbench --clients 1 --async 64) and
# its put with 1,024 in flight on one (with each kvd's peak memory): etcd's
# anchor runs its 64 or 1,024 clients as goroutines sharing one clientv3
# connection, which these rows match, beside it; kv's put with 8 x 64 in
# flight for 600,000 requests (--quick 200,000) on a fresh cluster, the
# sustained load at which RocksDB's flushes and compactions weigh (the CSV's
# depth "64sus"), and N failover rounds (default 10; --quick 3): kill -9 of the
# leader, then the time until the first put sent after the kill is
# acknowledged to a client that keeps retrying (kvbench writer, etcdextra
# -op writer); the node is restarted and the cluster healthy again before the
# next round. The 1,024-client row also gives each kvd's peak resident memory
# (VmHWM, reset through /proc/PID/clear_refs just before the row). Each of
# its clients makes 40 requests (--quick 16), both systems: a client's
# requests run one after another and the row ends with its slowest client,
# so with a few each it measured the start of 1,024 connections at once
# and their stragglers more than the load held (10 each: 11,700-17,300
# puts/s in alternating runs of one build; 40 each: 14,600-18,900).
#
# Output: a table (markdown) on stdout with both systems and the ratios;
# bench/results/DATE.csv with every figure (one row per workload and system,
# one per failover round with failover_ms and round; the anchor gives no
# p999 for etcd's put and get); bench/results/DATE.png
# (gnuplot: throughput and p99 against clients, puts, both systems). gnuplot
# is installed on first use (scripts/install-deps --bench). --quick: fewer
# requests per row and 3 failover rounds, a few minutes in all; --no-etcd:
# kv only; --no-plot: no PNG; --wal: first the log alone (kvbench wal: 64
# writers, 64 coalesced on one thread, 1 writer) and the Raft core in memory
# (raft-sim --bench, when built), one run each, on stderr. --failover-only:
# only the failover rounds (kv's, and etcd's on our own 3 members unless
# --no-etcd; no anchor, no other row). --keep DIR: copy the nodes' logs and
# each round's writer output to DIR (made if missing), with rounds.txt
# ("SYSTEM ROUND T0_NS MS KILLED"), to break each round down afterwards.
# KV_BENCH_KVD_FLAGS: extra flags for every kvd, e.g. "--read-lease".
#
# Needs a build (make build, or cmake --build build --target kvbench kvd kvcli).
# Exit status: 0 done (rows whose requests failed are in the table with their
# error count), 1 a cluster did not start, 2 bad usage.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
bin=${KV_BIN:-build/bin}
anchor=${ETCD_ANCHOR:-../shared/tools/etcd-anchor/run.sh}
quick=0 rounds="" etcd=1 plot=1 wal=0 fo_only=0 keep=""
while [ $# -gt 0 ]; do
  case $1 in
    --quick) quick=1 ;;
    --rounds)
      [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "compare.sh: --rounds: needs a count >= 1" >&2; exit 2; }
      rounds=$2; shift ;;
    --no-etcd) etcd=0 ;;
    --no-plot) plot=0 ;;
    --wal) wal=1 ;;
    --failover-only) fo_only=1 plot=0 ;;
    --keep)
      [ -n "${2:-}" ] || { echo "compare.sh: --keep: needs a directory" >&2; exit 2; }
      keep=$2; shift ;;
    -h|--help) sed -n '2,/^set -e/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "compare.sh: $1: unknown flag (--quick, --rounds N, --no-etcd, --no-plot, --wal, --failover-only, --keep DIR)" >&2; exit 2 ;;
  esac
  shift
done
for b in kvbench kvd kvcli; do
  [ -x "$bin/$b" ] || { echo "compare.sh: $bin/$b missing: make build first" >&2; exit 1; }
done
if [ $quick = 1 ]; then
  rounds=${rounds:-3}
  n_put1=500 n_put16=4000 n_put=10000 n_put1024=16384 n_read=10000 n_async=20000 n_txn=3000 n_watch=2000
  n_sustained=200000
else
  rounds=${rounds:-10}
  n_put1=2000 n_put16=20000 n_put=40000 n_put1024=40960 n_read=40000 n_async=80000 n_txn=10000 n_watch=8000
  n_sustained=600000
fi
stamp=$(date +%Y-%m-%d-%H%M%S)
mkdir -p bench/results
csv=bench/results/$stamp.csv
png=bench/results/$stamp.png
dir=$(mktemp -d "${TMPDIR:-/tmp}/kv-compare.XXXXXX")
pids=() # everything started here that may still run: killed by pid at exit
cleanup() {
  for p in "${pids[@]:-}"; do [ -n "$p" ] && kill -KILL "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ -n "$keep" ]; then
    mkdir -p "$keep" && cp "$dir"/*.log "$dir"/writer-* "$keep"/ 2>/dev/null || true
    echo "# logs kept in $keep" >&2
  fi
  rm -rf "$dir"
}
trap cleanup EXIT

declare -A row # "SYSTEM WORKLOAD CLIENTS" -> the kvbench-style line
echo "system,workload,clients,depth,requests,ops_per_s,p50_us,p99_us,p999_us,errors,failover_ms,round,hwm_n1_kib,hwm_n2_kib,hwm_n3_kib" >"$csv"

# field LINE NAME: the value of NAME= in a key=value line (empty if absent)
field() { sed -n "s/.*\<$2=\([^ ]*\).*/\1/p" <<<"$1"; }

# record SYSTEM LINE [HWM1 HWM2 HWM3]: a result line of kvbench (or etcdextra) into row and the CSV
record() {
  local sys=$1 line=$2 op clients depth
  op=$(field "$line" op) clients=$(field "$line" clients) depth=$(field "$line" depth)
  depth+=$(field "$line" shared | sed 's/^./s&/') # threads sharing a client: "1s64"
  row["$sys $op $clients $depth"]=$line
  echo "$sys,$op,$clients,$depth,$(field "$line" requests),$(field "$line" ops_per_s),$(field "$line" p50_us),$(field "$line" p99_us),$(field "$line" p999_us),$(field "$line" errors),,,${3:-},${4:-},${5:-}" >>"$csv"
}

# record_anchor LINE: the anchor's "op= clients= ops= secs= qps= p50=Xms p99=Yms" as a kvbench line
record_anchor() {
  local l=$1 ms50 ms99
  ms50=$(field "$l" p50) ms99=$(field "$l" p99)
  record etcd "op=$(field "$l" op) clients=$(field "$l" clients) depth=1 requests=$(field "$l" ops) size=256 secs=$(field "$l" secs) ops_per_s=$(field "$l" qps) p50_us=$(awk -v m="${ms50%ms}" 'BEGIN{printf "%.0f", m*1000}') p99_us=$(awk -v m="${ms99%ms}" 'BEGIN{printf "%.0f", m*1000}') p999_us= errors=0"
}

# ---- the log alone, the Raft core (--wal) -----------------------------------------
if [ $wal = 1 ]; then
  echo "# kv write-ahead log (kvbench wal)" >&2
  "$bin/kvbench" wal --data-dir "$dir/w64" --records 30000 --size 256 --writers 64 | sed 's/^/# wal writers=64 /' >&2
  rm -rf "$dir/w64"
  "$bin/kvbench" wal --data-dir "$dir/w64" --records 30000 --size 256 --writers 64 --coalesce --threads 1 |
    sed 's/^/# wal writers=64 coalesce threads=1 /' >&2
  "$bin/kvbench" wal --data-dir "$dir/w1" --records 3000 --size 256 --writers 1 | sed 's/^/# wal writers=1 /' >&2
  rm -rf "$dir/w64" "$dir/w1"
  if [ -x "$bin/raft-sim" ]; then
    echo "# kv Raft core, in memory (raft-sim --bench)" >&2
    "$bin/raft-sim" --bench | tail -n 1 | sed 's/^/# /' >&2
  fi
fi

# ---- failover -----------------------------------------------------------------
# failover_round SYSTEM ROUND WRITER_CMD...: the caller has killed nothing yet;
# starts the writer, kills the leader (kill_leader SYSTEM), measures, restarts.
declare -A fo # "SYSTEM ROUND" -> milliseconds
failover_round() {
  local sys=$1 r=$2; shift 2
  local out=$dir/writer-$sys-$r.txt t0 ms="" wpid
  "$@" >"$out" 2>"$out.err" &
  wpid=$!
  pids+=("$wpid")
  for _ in $(seq 200); do [ "$(grep -c '^[0-9]* [0-9]*$' "$out")" -ge 100 ] && break; sleep 0.05; done
  find_leader "$sys"
  kill_leader "$sys" # sets t0
  for _ in $(seq 600); do
    ms=$(awk -v t0="$t0" 'NF == 2 && $1 >= t0 { printf "%.1f", ($2 - t0) / 1e6; exit }' "$out")
    [ -n "$ms" ] && break
    sleep 0.05
  done
  kill -TERM "$wpid" 2>/dev/null || true
  wait "$wpid" 2>/dev/null || true
  fo["$sys $r"]=${ms:-timeout}
  [ -z "$keep" ] || { mkdir -p "$keep" && echo "$sys $r $t0 ${ms:-timeout} $killed" >>"$keep/rounds.txt"; }
  echo "$sys,failover,1,1,1,,,,,,${ms:-},$r,,," >>"$csv"
  echo "# $sys failover round $r: ${ms:-no put acknowledged within 30 s} ms ($(grep -c ' [A-Za-z]' "$out" || true) failed attempts)" >&2
  restart_killed "$sys"
  local after
  after=$(leader_state "$sys")
  if [ -n "$after" ] && [ "${after#* }" -le "$term_killed" ]; then
    echo "# $sys round $r: the term did not move ($term_killed -> ${after#* }): the member killed was not the leader" >&2
  fi
}

# ---- kv -----------------------------------------------------------------------
kv_base=${KV_BENCH_PORT:-27100}
kv_eps="" kv_spec=""
for i in 1 2 3; do
  kv_eps+="${kv_eps:+,}127.0.0.1:$((kv_base + i))"
  kv_spec+="${kv_spec:+,}n$i=127.0.0.1:$((kv_base + i))"
done
declare -A kv_pid
kv_start() { # kv_start I: start node nI on its data dir
  # shellcheck disable=SC2086 # KV_BENCH_KVD_FLAGS: extra kvd flags, split on spaces
  "$bin/kvd" --name "n$1" --data-dir "$dir/kv-n$1" --cluster "$kv_spec" ${KV_BENCH_KVD_FLAGS:-} \
    >>"$dir/kv-n$1.log" 2>&1 &
  kv_pid[$1]=$!
  pids+=($!)
}
kv_wait_healthy() {
  for _ in $(seq 300); do
    "$bin/kvcli" --cluster "$kv_eps" --timeout 1 status >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  echo "compare.sh: the kv cluster is not healthy after 30 s:" >&2
  "$bin/kvcli" --cluster "$kv_eps" --timeout 1 status >&2 || true
  exit 1
}
# leader_state SYSTEM: "MEMBER TERM" when all three members answer, exactly
# one says it leads and all are in the same term; empty otherwise
leader_state() {
  if [ "$1" = kv ]; then
    "$bin/kvcli" --cluster "$kv_eps" --timeout 1 --json status 2>/dev/null |
      sed -n 's/.*"name":"n\([0-9]\)".*"role":"\([a-z]*\)","term":\([0-9]*\).*/\1 \2 \3/p'
  else # etcdctl: endpoint, id, version, size, is leader, is learner, term, ...
    ETCDCTL_API=3 etcdctl --endpoints "$etcd_eps" --command-timeout 1s endpoint status 2>/dev/null |
      awk -F', ' -v base="$etcd_base" '{ split($1, a, ":"); print (a[2] - base) / 10, ($5 == "true" ? "leader" : "follower"), $7 }'
  fi | awk '{ n++; if ($2 == "leader") { l++; who = $1 } t[$3] = 1 }
            END { k = 0; for (x in t) { k++; term = x } if (n == 3 && l == 1 && k == 1) print who, term }'
}
killed="" term_killed="" # the leader found by find_leader, and its term
# find_leader SYSTEM: the leader, once two looks 0.3 s apart agree (a member
# restarted by the last round may still be moving the leadership)
find_leader() {
  local a b
  for _ in $(seq 100); do
    a=$(leader_state "$1")
    sleep 0.3
    b=$(leader_state "$1")
    [ -n "$a" ] && [ "$a" = "$b" ] && break
  done
  [ -n "$a" ] && [ "$a" = "$b" ] || { echo "compare.sh: $1 has no stable leader" >&2; exit 1; }
  read -r killed term_killed <<<"$a"
}
# kill_leader SYSTEM: kill -9 of the leader; t0 := the time right after the
# kill returned (taken before it, a script descheduled between the two lets
# the live leader acknowledge puts "after" t0: rounds of 2 ms were seen on
# this busy 2-core machine). The leader is dead once kill(2) returns with
# SIGKILL queued, so every put sent after t0 needs the next leader.
t0=""
kill_leader() {
  local pid
  if [ "$1" = kv ]; then pid=${kv_pid[$killed]}; else pid=${etcd_pid[$killed]}; fi
  kill -KILL "$pid"
  t0=${EPOCHREALTIME/./}000 # microseconds, as nanoseconds; no fork since the kill
  wait "$pid" 2>/dev/null || true
}
restart_killed() {
  if [ "$1" = kv ]; then kv_start "$killed"; kv_wait_healthy; else etcd_start "$killed"; etcd_wait_healthy; fi
}
# kv_fresh: a new 3-node cluster (the one before, if any, stopped and wiped)
kv_fresh() {
  for i in 1 2 3; do
    if [ -n "${kv_pid[$i]:-}" ]; then
      kill -TERM "${kv_pid[$i]}" 2>/dev/null || true
      wait "${kv_pid[$i]}" 2>/dev/null || true
    fi
    rm -rf "$dir/kv-n$i"
    "$bin/kvd" init --name "n$i" --data-dir "$dir/kv-n$i" --cluster "$kv_spec" --cluster-token "bench-$$" >>"$dir/kv-n$i.log"
    kv_start "$i"
  done
  kv_wait_healthy
}
kv_hwm() { sed -n 's/^VmHWM:[[:space:]]*\([0-9]*\) kB/\1/p' "/proc/${kv_pid[$1]}/status"; }

# kv_row ARGS: kvbench ARGS against the cluster; its line is printed and
# recorded (a row whose requests failed keeps its line and error count)
kv_line=""
kv_row() {
  kv_line=$("$bin/kvbench" "$@" --cluster "$kv_eps" --size 256 2>"$dir/kvbench.err" | tail -n 1) || true
  sed 's/^/# kvbench: /' "$dir/kvbench.err" | grep -v '^# kvbench: usage' | head -n 3 >&2 || true
  [ -n "$kv_line" ] || { echo "# kvbench $*: no result" >&2; return 0; }
  echo "# kv $kv_line" >&2
}

echo "# kv: 3 kvd on loopback, ports $((kv_base + 1))-$((kv_base + 3)), $([ $quick = 1 ] && echo quick || echo full) run" >&2
kv_fresh
if [ $fo_only = 0 ]; then
for args in "put --clients 1 --requests $n_put1" "put --clients 16 --requests $n_put16" \
  "put --clients 64 --requests $n_put" "put --clients 256 --requests $n_put" \
  "put --clients 8 --async 64 --requests $n_async" "get --clients 64 --requests $n_read" \
  "put --clients 1 --async 64 --requests $n_async" "get --clients 1 --async 64 --requests $((4 * n_async))" \
  "put --clients 64 --shared 64 --requests $n_put" "get --clients 64 --shared 64 --requests $n_read" \
  "mixed --clients 64 --requests $n_read --read-ratio 0.9 --keys 1000" \
  "txn --clients 64 --requests $n_txn --keys 1000" "watch --clients 16 --requests $n_watch"; do
  # shellcheck disable=SC2086 # the words of one row
  kv_row $args
  [ -z "$kv_line" ] || record kv "$kv_line"
done
# peak_row ARGS: kv_row ARGS, recorded with each kvd's peak memory over it
peak_row() {
  for i in 1 2 3; do echo 5 >"/proc/${kv_pid[$i]}/clear_refs"; done # VmHWM := VmRSS
  kv_row "$@"
  hwm=("$(kv_hwm 1)" "$(kv_hwm 2)" "$(kv_hwm 3)")
  echo "# kv VmHWM n1..n3 during kvbench $*: ${hwm[*]} kB" >&2
  [ -z "$kv_line" ] || record kv "$kv_line" "${hwm[@]}"
}
peak_row put --clients 1 --async 1024 --requests $n_async
hwm_async=("${hwm[@]}")
peak_row put --clients 1024 --requests $n_put1024
kv_wait_healthy
fi
for r in $(seq "$rounds"); do
  failover_round kv "$r" "$bin/kvbench" writer --cluster "$kv_eps" --size 256 --seconds 60
done
if [ $fo_only = 0 ]; then
  kv_fresh
  kv_row put --clients 8 --async 64 --requests $n_sustained
  [ -z "$kv_line" ] || record kv "${kv_line/depth=64/depth=64sus}"
fi
for i in 1 2 3; do kill -TERM "${kv_pid[$i]}" 2>/dev/null || true; wait "${kv_pid[$i]}" 2>/dev/null || true; done

# ---- etcd ---------------------------------------------------------------------
declare -A etcd_pid
etcd_base=${ETCD_EXTRA_PORT:-24100}
etcd_eps="" etcd_cluster=""
for i in 1 2 3; do
  etcd_eps+="${etcd_eps:+,}127.0.0.1:$((etcd_base + 10 * i))"
  etcd_cluster+="${etcd_cluster:+,}n$i=http://127.0.0.1:$((etcd_base + 10 * i + 1))"
done
etcd_start() { # the anchor's flags (run.sh); a restart finds its data dir
  local peer=$((etcd_base + 10 * $1 + 1)) client=$((etcd_base + 10 * $1))
  etcd --name "n$1" --data-dir "$dir/etcd-n$1" \
    --listen-peer-urls "http://127.0.0.1:$peer" --initial-advertise-peer-urls "http://127.0.0.1:$peer" \
    --listen-client-urls "http://127.0.0.1:$client" --advertise-client-urls "http://127.0.0.1:$client" \
    --initial-cluster "$etcd_cluster" --initial-cluster-state new --log-level error >>"$dir/etcd-n$1.log" 2>&1 &
  etcd_pid[$1]=$!
  pids+=($!)
}
etcd_wait_healthy() {
  for _ in $(seq 150); do
    ETCDCTL_API=3 etcdctl --endpoints "$etcd_eps" --command-timeout 1s endpoint health >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "compare.sh: the etcd cluster is not healthy after 30 s" >&2
  exit 1
}

if [ $etcd = 1 ] && { [ -x "$anchor" ] || [ $fo_only = 1 ]; }; then
  if [ $fo_only = 0 ]; then
  echo "# etcd: the anchor ($anchor)" >&2
  alines=$(GOMAXPROCS=2 "$anchor" "put 1 $n_put1 256" "put 16 $n_put16 256" "put 64 $n_put 256" \
    "put 256 $n_put 256" "get 64 $n_read 256" "put 1024 $n_put1024 256" 2>"$dir/anchor.err") ||
    echo "# etcd anchor failed: $(tail -n 3 "$dir/anchor.err" | tr '\n' ' ')" >&2
  while read -r l; do
    [[ $l == op=* ]] || continue
    echo "# etcd $l" >&2
    record_anchor "$l"
  done <<<"$alines"
  fi
  echo "# etcd: mixed, txn, watch and failover on our own 3 members, ports $((etcd_base + 10))-$((etcd_base + 31))" >&2
  mkdir -p build/etcdextra/src/etcdextra
  cp bench/etcd/etcdextra.go build/etcdextra/src/etcdextra/main.go
  GO111MODULE=off GOPATH="$root/build/etcdextra:/usr/share/gocode" GOCACHE="$root/build/etcdextra/cache" \
    go build -p 2 -o build/etcdextra/etcdextra etcdextra
  for i in 1 2 3; do etcd_start "$i"; done
  etcd_wait_healthy
  if [ $fo_only = 0 ]; then
    for args in "-op mixed -clients 64 -total $n_read -keys 1000 -read-ratio 0.9" \
      "-op txn -clients 64 -total $n_txn -keys 1000" "-op watch -clients 16 -total $n_watch"; do
      # shellcheck disable=SC2086 # the words of one row
      line=$(build/etcdextra/etcdextra $args -endpoints "$etcd_eps" -val 256 2>>"$dir/etcdextra.err") || true
      [ -n "$line" ] && { echo "# etcd $line" >&2; record etcd "$line"; }
    done
  fi
  for r in $(seq "$rounds"); do
    # -timeout 100ms: clientv3 leaves a put sent to the dead member waiting
    # for its whole deadline and keeps the dead endpoint in its rotation (at
    # 5 s every round took 5 s; at 500 ms every round was 3 attempts, 1.53 s:
    # the client's quantum, not etcd's). 100 ms is a tenth of etcd's 1 s
    # election timeout and 25 times an idle put.
    failover_round etcd "$r" build/etcdextra/etcdextra -op writer -endpoints "$etcd_eps" -val 256 \
      -seconds 60 -timeout 100ms
  done
  for i in 1 2 3; do kill -TERM "${etcd_pid[$i]}" 2>/dev/null || true; wait "${etcd_pid[$i]}" 2>/dev/null || true; done
elif [ $etcd = 1 ]; then
  echo "# etcd anchor not found at $anchor: etcd skipped" >&2
fi

# ---- the table ----------------------------------------------------------------
ms() { awk -v u="$1" 'BEGIN { if (u == "") print "-"; else if (u < 1000) printf "%.2f ms", u / 1000; else printf "%.1f ms", u / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2fx", a / b }'; }
num() { awk -v n="$1" 'BEGIN { if (n == "") print "-"; else { s = sprintf("%.0f", n); while (s ~ /[0-9][0-9][0-9][0-9]/) sub(/[0-9][0-9][0-9]$/, ",&", s); print s } }'; }
figure() { # figure TITLE OP CLIENTS DEPTH [ETCD_DEPTH [ETCD_CLIENTS]]
  local k=${row["kv $2 $3 $4"]:-} e=${row["etcd $2 ${6:-$3} ${5:-$4}"]:-} kerr
  kerr=$(field "$k" errors)
  printf '| %s | %s | %s / %s / %s | %s | %s | %s / %s | %s | %s |\n' "$1" \
    "$(num "$(field "$k" ops_per_s)")" "$(ms "$(field "$k" p50_us)")" "$(ms "$(field "$k" p99_us)")" \
    "$(ms "$(field "$k" p999_us)")" "${kerr:--}" "$(num "$(field "$e" ops_per_s)")" \
    "$(ms "$(field "$e" p50_us)")" "$(ms "$(field "$e" p99_us)")" \
    "$(ratio "$(field "$k" ops_per_s)" "$(field "$e" ops_per_s)")" \
    "$(ratio "$(field "$e" p99_us)" "$(field "$k" p99_us)")"
}
fo_stats() { # fo_stats SYSTEM: "median max" of the rounds in ms, "- -" without any
  local s=$1
  for r in $(seq "$rounds"); do echo "${fo["$s $r"]:-}"; done | grep -E '^[0-9.]+$' | sort -n |
    awk '{ v[NR] = $1 } END { if (NR == 0) { print "- -"; exit } m = NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.0f %.0f\n", m, v[NR] }'
}
echo
echo "| figure | kv ops/s | kv p50 / p99 / p999 | kv errors | etcd ops/s | etcd p50 / p99 | kv / etcd ops/s | etcd p99 / kv p99 |"
echo "|---|---|---|---|---|---|---|---|"
for c in 1 16 64 256 1024; do figure "put, $c client$([ $c = 1 ] || echo s)" put $c 1; done
figure "put, 8 connections x 64 in flight" put 8 64
figure "put, 8 connections x 64 in flight, $(num $n_sustained) requests on a fresh cluster (sustained)" put 8 64sus
figure "get (linearizable), 64 clients" get 64 1
figure "put, 64 threads sharing one kv_client (etcd: its 64-client row)" put 64 1s64 1
figure "get, 64 threads sharing one kv_client (etcd: its 64-client row)" get 64 1s64 1
figure "put, one kv_client with 64 in flight (etcd: its 64-client row, 64 goroutines on one client)" put 1 64 1 64
figure "get, one kv_client with 64 in flight (etcd: its 64-client row, 64 goroutines on one client)" get 1 64 1 64
figure "put, one kv_client with 1,024 in flight (etcd: its 1,024-client row)" put 1 1024 1 1024
figure "mixed 90% get / 10% put, 64 clients" mixed 64 1
figure "txn: compare-and-swap of a random key of 1,000, 64 clients" txn 64 1
figure "watch: events/s to one prefix watcher, 16 writers (latency: put sent to event; errors: events missed)" watch 16 1
read -r kmed kmax <<<"$(fo_stats kv)"
read -r emed emax <<<"$(fo_stats etcd)"
nk=$(for r in $(seq "$rounds"); do echo "${fo["kv $r"]:-}"; done | grep -cE '^[0-9.]+$' || true)
ne=$(for r in $(seq "$rounds"); do echo "${fo["etcd $r"]:-}"; done | grep -cE '^[0-9.]+$' || true)
printf '| failover, kill -9 of the leader to the next acknowledged put (median / max of %s) | %s / %s ms (%s rounds) | | | %s / %s ms (%s rounds) | | | etcd median / kv median: %s |\n' \
  "$rounds" "$kmed" "$kmax" "$nk" "$emed" "$emax" "$ne" "$(ratio "${emed/-/}" "${kmed/-/}")"
echo
echo "kv rounds (ms): $(for r in $(seq "$rounds"); do printf '%s ' "${fo["kv $r"]:--}"; done)"
[ $etcd = 1 ] && echo "etcd rounds (ms): $(for r in $(seq "$rounds"); do printf '%s ' "${fo["etcd $r"]:--}"; done)"
mib() { echo "n1 $((${1:-0} / 1024)) MiB, n2 $((${2:-0} / 1024)) MiB, n3 $((${3:-0} / 1024)) MiB"; }
[ -n "${hwm[*]:-}" ] && echo "kv peak memory (VmHWM) during the 1,024-client put row: $(mib "${hwm[@]}"); with 1,024 in flight on one kv_client: $(mib "${hwm_async[@]:-}")"
echo "figures: $csv"

# ---- the plot -----------------------------------------------------------------
if [ $plot = 1 ]; then
  if ! command -v gnuplot >/dev/null; then scripts/install-deps --bench >&2 || true; fi
  if command -v gnuplot >/dev/null; then
    for s in kv etcd; do
      awk -F, -v s=$s '$1 == s && $2 == "put" && $4 == 1 && $6 != "" { print $3, $6, $8 / 1000 }' "$csv" | sort -n >"$dir/$s.dat"
    done
    gnuplot <<EOF
set terminal pngcairo size 1200,500 font ",10"
set output "$png"
set multiplot layout 1,2 title "kv and etcd, 3 nodes on loopback, puts of 256 bytes ($stamp)"
set logscale x 2
set xlabel "clients (one request in flight each)"
set key top left
set grid
set ylabel "puts/s"
plot "$dir/kv.dat" using 1:2 with linespoints title "kv", "$dir/etcd.dat" using 1:2 with linespoints title "etcd"
set logscale y
set ylabel "p99 latency (ms)"
plot "$dir/kv.dat" using 1:3 with linespoints title "kv", "$dir/etcd.dat" using 1:3 with linespoints title "etcd"
unset multiplot
EOF
    echo "plot: $png"
  else
    echo "# gnuplot missing and not installable: no plot" >&2
  fi
fi
