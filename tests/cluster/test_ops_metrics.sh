#!/usr/bin/env bash
# Metrics and health, as a monitoring system sees them: every node serves
# GET /metrics in the Prometheus text format (every sample line is
# `kv_NAME{labels} value`) with the Raft, apply, proposal and WAL fsync
# figures; 100 writes move the leader's counters; GET /health is 200 with
# JSON on every node of a healthy cluster, stays 200 on both nodes of a
# majority, and turns 503 on a node left alone. `promtool check metrics`
# (Debian's prometheus package) passes on the real text; no family repeats
# another; kv_build_info carries the version. /health names the leader (a
# follower does not say "leader": true), answers HEAD, and ignores a query
# string. An idle connection to the metrics port is closed.
# Usage: test_ops_metrics.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup ops_metrics 271 "${1:?usage: test_ops_metrics.sh BIN_DIR}"

WRITES=100
HEALTH_DOWN_S=10 # a node alone must say 503 within this (election timeout: 0.5 s)
MPORT=("" $((KV_PORT[1] + 5)) $((KV_PORT[1] + 6)) $((KV_PORT[1] + 7))) # base+6..8
for p in "${MPORT[1]}" "${MPORT[2]}" "${MPORT[3]}"; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    kv_fail "metrics port $p is already in use (set KV_TEST_PORT_BASE)"
  fi
done

# ops_http I PATH [METHOD]: prints the HTTP status on the first line, then
# the body.
ops_http() {
  python3 - "http://127.0.0.1:${MPORT[$1]}$2" "${3:-GET}" <<'EOF'
import sys, urllib.request, urllib.error
try:
    req = urllib.request.Request(sys.argv[1], method=sys.argv[2])
    with urllib.request.urlopen(req, timeout=3) as r:
        code, ctype, body = r.status, r.headers.get("Content-Type", ""), r.read()
except urllib.error.HTTPError as e:
    code, ctype, body = e.code, e.headers.get("Content-Type", ""), e.read()
sys.stdout.write("%d %s\n" % (code, ctype))
sys.stdout.buffer.write(body)
EOF
}

# ops_applied_past I N: node I's kv_applied_index is at least N.
ops_applied_past() {
  ops_metrics "$1" && [ "$(ops_metric "$1" kv_applied_index)" -ge "$2" ]
}

# ops_metrics I: node I's metrics as `name value` lines (labels kept in the
# name); fails unless every line of the text is a comment or a kv_ sample.
ops_metrics() {
  ops_http "$1" /metrics >"$KV_DIR/m$1.raw" || kv_fail "GET /metrics on n$1 failed"
  python3 - "$KV_DIR/m$1.raw" "n$1" >"$KV_DIR/m$1" <<'EOF' || kv_fail "n$1's /metrics is not valid Prometheus text (above)"
import re, sys
raw = open(sys.argv[1], encoding="utf-8").read().split("\n")
status = raw[0].split()
if status[0] != "200" or not status[1:] or not status[1].startswith("text/plain"):
    sys.exit("%s: GET /metrics answered '%s', want 200 text/plain" % (sys.argv[2], raw[0]))
sample = re.compile(r'^(kv_[a-zA-Z0-9_]*)(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? '
                    r'([-+]?[0-9]+(\.[0-9]+)?([eE][-+]?[0-9]+)?|NaN|[-+]Inf)$')
n = 0
for line in raw[1:]:
    if line == "" or line.startswith("#"):
        continue
    m = sample.match(line)
    if not m:
        sys.exit("%s: /metrics line %r is not 'kv_name{labels} value'" % (sys.argv[2], line))
    print("%s%s %s" % (m.group(1), m.group(2) or "", m.group(4)))
    n += 1
if n == 0:
    sys.exit("%s: /metrics has no samples" % sys.argv[2])
EOF
}

# ops_metric I NAME: the value of NAME in the last ops_metrics I.
ops_metric() {
  awk -v n="$2" '$1 == n { print $2; found = 1 } END { exit !found }' "$KV_DIR/m$1" ||
    kv_fail "n$1's /metrics has no $2"
}

# ops_health_is I CODE: GET /health on node I answers CODE with a JSON
# object whose "health" is "ok" exactly when CODE is 200.
ops_health_is() {
  ops_http "$1" /health >"$KV_DIR/h$1" 2>&1 || return 1
  python3 - "$KV_DIR/h$1" "$2" <<'EOF'
import json, sys
raw = open(sys.argv[1], encoding="utf-8").read()
head, _, body = raw.partition("\n")
code, want = head.split()[0], sys.argv[2]
if code != want:
    sys.exit("answered %s, want %s: %s" % (code, want, raw))
if "application/json" not in head:
    sys.exit("Content-Type is not JSON: %s" % head)
j = json.loads(body)
if (j.get("health") == "ok") != (want == "200"):
    sys.exit("status %s but health %r: %s" % (code, j.get("health"), body))
EOF
}

for i in 1 2 3; do
  kv_start "$i" --metrics "127.0.0.1:${MPORT[$i]}"
done
kv_wait_leader
L=$KV_LEADER_I

# Every node: the text parses and holds what an operator graphs and alerts
# on (docs/deploy.md "Metrics").
for i in 1 2 3; do
  kv_until 10 "n$i serving /metrics" ops_http "$i" /metrics
  ops_metrics "$i"
  for name in kv_term kv_role kv_has_leader kv_commit_index kv_applied_index \
    kv_proposals_total kv_wal_fsync_seconds_count 'kv_build_info{version="0.1.0"}' \
    kv_wal_fsync_seconds_sum 'kv_wal_fsync_seconds_bucket{le="+Inf"}' \
    kv_disk_used_bytes kv_disk_quota_bytes kv_nospace_alarm kv_loop_turn_seconds_max \
    kv_loop_turn_seconds_count 'kv_loop_turn_seconds_bucket{le="+Inf"}' \
    kv_key_cache_hits_total kv_key_cache_misses_total; do
    ops_metric "$i" "$name" >/dev/null
  done
done
[ "$(ops_metric "$L" kv_role)" = 3 ] ||
  kv_fail "the leader n$L has kv_role $(ops_metric "$L" kv_role), want 3 (leader)"
for i in 1 2 3; do
  [ "$i" = "$L" ] && continue
  [ "$(ops_metric "$i" kv_role)" != 3 ] || kv_fail "follower n$i also says kv_role 3 (leader)"
done

applied0=$(ops_metric "$L" kv_applied_index)
misses0=$(ops_metric "$L" kv_key_cache_misses_total)
proposals0=$(ops_metric "$L" kv_proposals_total)
fsyncs0=$(ops_metric "$L" kv_wal_fsync_seconds_count)
for ((n = 0; n < WRITES; n++)); do
  printf 'put m%03d %d\n' "$n" "$RANDOM"
done >"$KV_DIR/puts"
kv_expect 0 kv_cli --timeout 10 <"$KV_DIR/puts"
[ "$(grep -c '^OK$' "$KV_OUT")" -eq "$WRITES" ] ||
  kv_fail "$WRITES writes: only $(grep -c '^OK$' "$KV_OUT") OK"
[ "$(kv_leader)" = "n$L" ] || kv_fail "the leader changed during the writes; counters compared on n$L"

ops_metrics "$L"
applied1=$(ops_metric "$L" kv_applied_index)
proposals1=$(ops_metric "$L" kv_proposals_total)
fsyncs1=$(ops_metric "$L" kv_wal_fsync_seconds_count)
inf1=$(ops_metric "$L" 'kv_wal_fsync_seconds_bucket{le="+Inf"}')
commit1=$(ops_metric "$L" kv_commit_index)
kv_log "leader n$L: applied $applied0 -> $applied1, proposals $proposals0 -> $proposals1, wal fsyncs $fsyncs0 -> $fsyncs1"
[ "$applied1" -ge $((applied0 + WRITES)) ] ||
  kv_fail "kv_applied_index on the leader went $applied0 -> $applied1 over $WRITES writes"
[ "$proposals1" -ge $((proposals0 + WRITES)) ] ||
  kv_fail "kv_proposals_total on the leader went $proposals0 -> $proposals1 over $WRITES writes"
[ "$fsyncs1" -gt "$fsyncs0" ] && [ "$inf1" = "$fsyncs1" ] ||
  kv_fail "kv_wal_fsync_seconds: count $fsyncs0 -> $fsyncs1 over $WRITES writes, +Inf bucket $inf1 (want it to grow, and +Inf = count)"
# Request latency by type: the puts were answered by the leader.
puts1=$(ops_metric "$L" 'kv_request_duration_seconds_count{type="put"}')
pinf1=$(ops_metric "$L" 'kv_request_duration_seconds_bucket{type="put",le="+Inf"}')
[ "$puts1" -ge "$WRITES" ] && [ "$pinf1" = "$puts1" ] ||
  kv_fail "kv_request_duration_seconds{type=put}: count $puts1 after $WRITES puts, +Inf bucket $pinf1"
# The key cache: the first put of each key read RocksDB (a miss), the same
# puts again find the keys' revisions in the cache (hits), on every node.
misses1=$(ops_metric "$L" kv_key_cache_misses_total)
hits1=$(ops_metric "$L" kv_key_cache_hits_total)
[ "$misses1" -ge $((misses0 + WRITES)) ] ||
  kv_fail "kv_key_cache_misses_total on n$L went $misses0 -> $misses1 over $WRITES puts of new keys"
kv_expect 0 kv_cli --timeout 10 <"$KV_DIR/puts"
for i in 1 2 3; do
  kv_until 10 "n$i applying the puts again" ops_applied_past "$i" $((applied1 + WRITES))
  ops_metrics "$i"
  hits=$(ops_metric "$i" kv_key_cache_hits_total)
  [ "$hits" -ge $((i == L ? hits1 + WRITES : WRITES)) ] ||
    kv_fail "kv_key_cache_hits_total on n$i is $hits after $WRITES puts over written keys (n$L had $hits1 before)"
done
kv_expect 0 kv_cli_node "$L" get m000
ops_metrics "$L"
[ "$(ops_metric "$L" 'kv_request_duration_seconds_count{type="get"}')" -ge 1 ] ||
  kv_fail "a get on the leader n$L is not in kv_request_duration_seconds{type=get}"
[ "$commit1" -ge "$applied1" ] ||
  kv_fail "kv_commit_index $commit1 is behind kv_applied_index $applied1 on the leader"

# The followers applied the writes too.
follower_applied() {
  ops_metrics "$1"
  [ "$(ops_metric "$1" kv_applied_index)" -ge $((applied0 + WRITES)) ]
}
for i in 1 2 3; do
  [ "$i" = "$L" ] && continue
  kv_until 10 "follower n$i's kv_applied_index reaching $((applied0 + WRITES))" follower_applied "$i"
done

# promtool's lint on the real text (after the writes: every family has
# samples), and no family that repeats another.
command -v promtool >/dev/null ||
  kv_fail "no promtool (Debian's prometheus package; scripts/install-deps installs it)"
tail -n +2 "$KV_DIR/m$L.raw" >"$KV_DIR/metrics.txt"
promtool check metrics <"$KV_DIR/metrics.txt" >"$KV_DIR/promtool.out" 2>&1 ||
  kv_fail "promtool check metrics on n$L's /metrics: $(cat "$KV_DIR/promtool.out")"
for dup in kv_busy_total kv_toobig_total kv_wal_syncs_total kv_wal_sync_seconds_total; do
  ! grep -q "^$dup" "$KV_DIR/metrics.txt" || kv_fail "/metrics repeats a figure as $dup"
done
[ -z "$(grep '^# TYPE ' "$KV_DIR/metrics.txt" | sort | uniq -d)" ] ||
  kv_fail "/metrics declares a family twice: $(grep '^# TYPE ' "$KV_DIR/metrics.txt" | sort | uniq -d)"

# /health: the leader's name on every node, its own role; HEAD and a query
# string answer as GET does.
for i in 1 2 3; do
  kv_until 10 "n$i's /health answering 200 with JSON" ops_health_is "$i" 200
  python3 - "$KV_DIR/h$i" "n$i" "n$L" <<'EOF' || kv_fail "n$i's /health: $(cat "$KV_DIR/h$i")"
import json, sys
j = json.loads(open(sys.argv[1]).read().partition("\n")[2])
me, leader = sys.argv[2], sys.argv[3]
want_role = "leader" if me == leader else "follower"
if j.get("leader") != leader or j.get("role") != want_role:
    sys.exit("want leader %r role %r, got %r" % (leader, want_role, j))
EOF
done
f=$((L % 3 + 1))
ops_http "$f" "/health?verbose=1" >"$KV_DIR/hq" || kv_fail "GET /health?verbose=1 failed"
head -n 1 "$KV_DIR/hq" | grep -q "^200 application/json" || kv_fail "/health?verbose=1: $(cat "$KV_DIR/hq")"
ops_http "$f" "/metrics?name=kv_term" >"$KV_DIR/mq" || kv_fail "GET /metrics?name=kv_term failed"
head -n 1 "$KV_DIR/mq" | grep -q "^200 text/plain" || kv_fail "/metrics?name=kv_term: $(head -n 3 "$KV_DIR/mq")"
ops_http "$f" /health HEAD >"$KV_DIR/hh" || kv_fail "HEAD /health failed"
[ "$(head -n 1 "$KV_DIR/hh")" = "200 application/json" ] && [ "$(wc -c <"$KV_DIR/hh")" -eq 21 ] ||
  kv_fail "HEAD /health: want 200 and no body, got: $(cat "$KV_DIR/hh")"

# A monitoring connection that says nothing is closed (within 2 s: 4 with
# slack), so idle connections cannot pile up on the metrics port.
python3 "$(dirname "$0")/probe.py" 127.0.0.1 "${MPORT[$f]}" idle 0 4 >"$KV_DIR/idle" 2>&1 ||
  kv_fail "an idle connection to n$f's metrics port: $(cat "$KV_DIR/idle") (want it closed)"
kv_log "idle metrics connection: $(cat "$KV_DIR/idle")"

# Health: 200 everywhere; with one follower down the other two still have
# a majority and stay 200; the leader alone says 503.
for i in 1 2 3; do
  kv_until 10 "n$i's /health answering 200 with JSON" ops_health_is "$i" 200
done
f1=$((L % 3 + 1))
f2=$((f1 % 3 + 1))
kv_stop "$f1"
sleep 2 # four election timeouts: time enough to go wrong
for i in "$L" "$f2"; do
  ops_health_is "$i" 200 || kv_fail "n$i's /health with two of three nodes up: $(cat "$KV_DIR/h$i")"
done
kv_stop "$f2"
kv_until "$HEALTH_DOWN_S" "n$L (alone) answering /health with 503" ops_health_is "$L" 503
kv_log "n$L alone: $(tail -n +2 "$KV_DIR/h$L")"
kv_check_alive "$L"
kv_stop "$L"
kv_pass
