# shellcheck shell=bash
# tests/cluster/lib.sh: run a real three-node kv cluster from a test script.
#
#   . "$(dirname "$0")/lib.sh"
#   kv_setup NAME K BIN_DIR     # ports KV_TEST_PORT_BASE(23000) + 10*K + 1..3
#   kv_start_all; kv_wait_leader
#   kv_cli put k v ...          # kvcli against the whole cluster
#   kv_pass
#
# Every kvd started here is killed when the script exits, however it exits
# (no stray processes). On a failure the nodes' logs are printed. Random
# choices come from KV_SEED (printed; set it to replay a run). KV_KEEP=1
# keeps the temporary directory.

set -euo pipefail
set -E # the ERR trap fires inside functions too

KV_LEADER_WAIT_S=${KV_LEADER_WAIT_S:-20} # a leader must be elected within this
KV_STOP_WAIT_S=20                        # SIGTERM to exit
KV_PIDS=()                               # kvd pids by node number (1..3)
KV_BG=()                                 # other background pids (writers)
KV_EXTRA_FLAGS=()                        # extra kvd flags for every start
KV_STARTS=0                              # starts so far (marks in the logs)

kv_log() { echo "[$(date +%H:%M:%S)] ${KV_NAME:-cluster}: $*"; }

# Fails the test: says what a user would notice, then the trap cleans up.
kv_fail() {
  echo "FAIL: ${KV_NAME:-cluster}: $*" >&2
  exit 1
}

kv__on_err() { # LINE CMD RC: an unexpected command failure under set -e
  echo "FAIL: ${KV_NAME:-cluster}: line $1: '$2' exited $3 unexpectedly" >&2
}

kv_dump_logs() {
  local f
  for f in "$KV_DIR"/n*.log; do
    [ -e "$f" ] || continue
    echo "===== $f (last 150 lines) =====" >&2
    tail -n 150 "$f" >&2 || true
  done
}

# The threads' stacks of every running node (when gdb is there): what a
# hung node was doing.
kv_stacks() {
  command -v gdb >/dev/null || return 0
  local i
  for i in 1 2 3; do
    [ -n "${KV_PIDS[$i]}" ] && kv__alive "${KV_PIDS[$i]}" || continue
    echo "===== n$i (pid ${KV_PIDS[$i]}) threads =====" >&2
    timeout 20 gdb -p "${KV_PIDS[$i]}" -batch -ex "thread apply all bt" 2>/dev/null |
      grep -E '^(#|Thread)' | head -n 80 >&2 || true
  done
}

kv__alive() { # PID: running (not exited, not a zombie)
  local st
  [ -r "/proc/$1/stat" ] || return 1
  st=$(sed 's/^.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ]
}

kv__exit() {
  local rc=$?
  trap - ERR
  set +e
  local p
  for p in "${KV_BG[@]}" "${KV_PIDS[@]}"; do
    [ -n "$p" ] && kill -9 "$p" 2>/dev/null
  done
  for p in "${KV_BG[@]}" "${KV_PIDS[@]}"; do
    [ -n "$p" ] && wait "$p" 2>/dev/null
  done
  if [ "$rc" -ne 0 ]; then
    [ -n "${KV_DIR:-}" ] && kv_dump_logs
    echo "FAILED: ${KV_NAME:-cluster} (exit $rc; replay with KV_SEED=${KV_SEED:-?})" >&2
  fi
  if [ -n "${KV_DIR:-}" ] && [ -d "$KV_DIR" ]; then
    if [ -n "${KV_KEEP:-}" ]; then
      echo "kept $KV_DIR" >&2
    else
      rm -rf "$KV_DIR"
    fi
  fi
  exit "$rc"
}

# kv_setup NAME K BIN_DIR: the test's name, its port slot and the binaries.
kv_setup() {
  KV_NAME=$1
  local k=$2
  KV_BIN=$3
  trap 'kv__on_err $LINENO "$BASH_COMMAND" $?' ERR
  trap kv__exit EXIT
  trap 'exit 130' INT TERM
  [ -x "$KV_BIN/kvd" ] || kv_fail "no kvd binary in $KV_BIN (build first)"
  [ -x "$KV_BIN/kvcli" ] || kv_fail "no kvcli binary in $KV_BIN (build first)"
  KV_SEED=${KV_SEED:-$(od -An -N4 -tu4 /dev/urandom | tr -d ' ')}
  RANDOM=$KV_SEED
  kv_log "seed $KV_SEED (replay: KV_SEED=$KV_SEED)"
  local base=$((${KV_TEST_PORT_BASE:-23000} + 10 * k)) i
  KV_PORT=("" $((base + 1)) $((base + 2)) $((base + 3)))
  KV_SPARE_PORT=$((base + 5))
  KV_PEERS="n1=127.0.0.1:${KV_PORT[1]},n2=127.0.0.1:${KV_PORT[2]},n3=127.0.0.1:${KV_PORT[3]}"
  KV_ENDPOINTS="127.0.0.1:${KV_PORT[1]},127.0.0.1:${KV_PORT[2]},127.0.0.1:${KV_PORT[3]}"
  KV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/kv-cluster-$KV_NAME.XXXXXX")
  KV_TOKEN="$KV_NAME-${KV_DIR##*.}" # each run a cluster of its own
  KV_PIDS=("" "" "" "")
  local p
  for p in "${KV_PORT[1]}" "${KV_PORT[2]}" "${KV_PORT[3]}" "$KV_SPARE_PORT"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
      kv_fail "port $p is already in use (another run of this test? set KV_TEST_PORT_BASE)"
    fi
  done
  kv__guard &
  KV_BG+=($!)
}

# The guardian: if this script is killed outright (no trap runs), it kills
# the nodes it started and removes the directory; past the test's deadline
# it stops the script the ordinary way (SIGTERM: the trap cleans up).
kv__guard() {
  trap - ERR EXIT INT TERM
  set +e
  local main=$$ deadline=$((SECONDS + ${KV_TEST_DEADLINE_S:-280})) p
  while kill -0 "$main" 2>/dev/null; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      echo "FAIL: ${KV_NAME}: still running after ${KV_TEST_DEADLINE_S:-280}s; stopping it" >&2
      kill -TERM "$main"
      for p in $(cat "$KV_DIR/pids" 2>/dev/null); do # unblocks a waiting kvcli
        kill -9 "$p" 2>/dev/null
      done
      deadline=$((SECONDS + 3600))
    fi
    sleep 1
  done
  for p in $(cat "$KV_DIR/pids" 2>/dev/null); do
    kill -9 "$p" 2>/dev/null
  done
  [ -n "${KV_KEEP:-}" ] || rm -rf "$KV_DIR"
}

# The guardian's copy of the running nodes' pids.
kv__save_pids() { echo "${KV_PIDS[*]}" >"$KV_DIR/pids"; }

kv_addr() { echo "127.0.0.1:${KV_PORT[$1]}"; }

# kv_init I: kvd init of node nI, a founder of this test's new cluster (run
# by kv_start when nI has no data dir yet; an existing empty one is left
# alone, as a replaced disk would be).
kv_init() {
  local i=$1
  [ -e "$KV_DIR/n$i" ] && return 0
  "$KV_BIN/kvd" init --name "n$i" --data-dir "$KV_DIR/n$i" --listen "$(kv_addr "$i")" \
    --cluster "$KV_PEERS" --cluster-token "$KV_TOKEN" >>"$KV_DIR/n$i.log" 2>&1 ||
    kv_fail "kvd init of n$i failed (see $KV_DIR/n$i.log)"
}

# kv_start I [FLAGS...]: starts node nI in the background (log: DIR/nI.log).
kv_start() {
  local i=$1
  shift
  [ -z "${KV_PIDS[$i]}" ] || kv_fail "internal: n$i is already running"
  kv_init "$i"
  KV_STARTS=$((KV_STARTS + 1))
  echo "=== test: start $KV_STARTS of n$i at $(date +%T.%N) flags: ${KV_EXTRA_FLAGS[*]} $*" \
    >>"$KV_DIR/n$i.log"
  "$KV_BIN/kvd" --name "n$i" --data-dir "$KV_DIR/n$i" --listen "$(kv_addr "$i")" \
    --cluster "$KV_PEERS" "${KV_EXTRA_FLAGS[@]}" "$@" >>"$KV_DIR/n$i.log" 2>&1 &
  KV_PIDS[$i]=$!
  kv__save_pids
}

kv_start_all() {
  kv_start 1 "$@"
  kv_start 2 "$@"
  kv_start 3 "$@"
}

# Fails unless node I is still running.
kv_check_alive() {
  local i=$1
  [ -n "${KV_PIDS[$i]}" ] || kv_fail "internal: n$i was not started"
  kv__alive "${KV_PIDS[$i]}" && return 0
  local rc=0
  wait "${KV_PIDS[$i]}" || rc=$?
  KV_PIDS[$i]=""
  kv__save_pids
  kv_fail "n$i died (exit $rc); it should still be running"
}

# kv_stop I: SIGTERM, then it must exit 0 within KV_STOP_WAIT_S.
kv_stop() {
  local i=$1 pid=${KV_PIDS[$1]} rc=0 t
  [ -n "$pid" ] || kv_fail "internal: n$i is not running"
  kill -TERM "$pid" 2>/dev/null || true
  for ((t = 0; t < KV_STOP_WAIT_S * 10; t++)); do
    kv__alive "$pid" || break
    sleep 0.1
  done
  if kv__alive "$pid"; then
    kill -9 "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    KV_PIDS[$i]=""
    kv_fail "n$i did not exit within ${KV_STOP_WAIT_S}s of SIGTERM (killed it)"
  fi
  wait "$pid" || rc=$?
  KV_PIDS[$i]=""
  kv__save_pids
  [ "$rc" -eq 0 ] || kv_fail "n$i exited $rc after SIGTERM; a clean shutdown exits 0"
  kv_log "stopped n$i (SIGTERM, exit 0)"
}

kv_stop_all() {
  kv_stop 1
  kv_stop 2
  kv_stop 3
}

# kv_kill I: SIGKILL, as a crash.
kv_kill() {
  local i=$1 pid=${KV_PIDS[$1]}
  [ -n "$pid" ] || kv_fail "internal: n$i is not running"
  kill -9 "$pid"
  wait "$pid" 2>/dev/null || true
  KV_PIDS[$i]=""
  kv__save_pids
  echo "=== test: killed n$i with SIGKILL at $(date +%T.%N)" >>"$KV_DIR/n$i.log"
  kv_log "killed n$i (SIGKILL)"
}

# kvcli against the whole cluster, or against node I only.
kv_cli() { "$KV_BIN/kvcli" --cluster "$KV_ENDPOINTS" "$@"; }
kv_cli_node() {
  local i=$1
  shift
  "$KV_BIN/kvcli" --cluster "$(kv_addr "$i")" "$@"
}

# The name of the leader a reachable node claims to be (highest term), or
# nothing. Columns of `kvcli status`: NAME ADDRESS ROLE TERM ...
kv_leader() {
  { kv_cli --timeout 2 status 2>/dev/null || true; } |
    awk 'NR > 1 && $3 == "leader" { print $4, $1 }' | sort -n | tail -n 1 | cut -d' ' -f2
}

# kv_wait_leader [NOT]: waits until a running node is leader (and is not
# named NOT); prints nothing, sets KV_LEADER (n1..n3) and KV_LEADER_I.
kv_wait_leader() {
  local not=${1:-} deadline=$((SECONDS + KV_LEADER_WAIT_S)) l=""
  while [ "$SECONDS" -lt "$deadline" ]; do
    l=$(kv_leader)
    if [ -n "$l" ] && [ "$l" != "$not" ]; then
      KV_LEADER=$l
      KV_LEADER_I=${l#n}
      kv_log "leader is $KV_LEADER"
      return 0
    fi
    sleep 0.2
  done
  kv_cli --timeout 2 status >&2 || true
  kv_stacks
  kv_fail "no leader${not:+ other than $not} elected within ${KV_LEADER_WAIT_S}s (status above)"
}

# kv_until SECONDS WHAT CMD...: retries CMD until it succeeds; on failure
# shows what its last try printed.
kv_until() {
  local secs=$1 what=$2
  shift 2
  local deadline=$((SECONDS + secs))
  while [ "$SECONDS" -lt "$deadline" ]; do
    "$@" >"$KV_DIR/until.out" 2>&1 && return 0
    sleep 0.2
  done
  echo "--- the last try printed:" >&2
  head -c 3000 "$KV_DIR/until.out" >&2 || true
  kv_fail "$what: not within ${secs}s"
}

# kv_expect CODE CMD...: runs CMD; its exit code must be CODE. Its stdout
# and stderr are left in $KV_OUT and $KV_ERR.
KV_OUT=/dev/null
KV_ERR=/dev/null
kv_expect() {
  local want=$1 rc=0
  shift
  KV_OUT=$KV_DIR/last.out
  KV_ERR=$KV_DIR/last.err
  "$@" >"$KV_OUT" 2>"$KV_ERR" || rc=$?
  if [ "$rc" -ne "$want" ]; then
    echo "--- stdout:" >&2
    head -c 2000 "$KV_OUT" >&2 || true
    echo "--- stderr:" >&2
    head -c 2000 "$KV_ERR" >&2 || true
    kv_fail "'$(echo "$*" | cut -c1-200)' exited $rc, want $want"
  fi
}

# kv_expect_out TEXT: the last kv_expect printed exactly TEXT (plus newline).
kv_expect_out() {
  local got
  got=$(cat "$KV_OUT")
  [ "$got" = "$1" ] || kv_fail "printed '$(echo "$got" | head -c 300)', want '$1'"
}

# kv_strip_revs: drops the revisions (create_rev, mod_rev, version, lease)
# from the --json rows of the last kv_expect's stdout, for checks of the rest.
kv_strip_revs() {
  sed -i -E 's/,"create_rev":[0-9]+,"mod_rev":[0-9]+,"version":[0-9]+,"lease":[0-9]+//' "$KV_OUT"
}

# kv_expect_err REGEX: the last kv_expect's stderr matches (grep -E).
kv_expect_err() {
  grep -Eq -- "$1" "$KV_ERR" ||
    kv_fail "stderr '$(head -c 300 "$KV_ERR")' does not say /$1/"
}

# kv_random_bytes N FILE [TAG]: N bytes from the seed (and TAG) into FILE.
kv_random_bytes() {
  python3 -c '
import random, sys
n, path, seed = int(sys.argv[1]), sys.argv[2], sys.argv[3]
r = random.Random(seed)
open(path, "wb").write(r.getrandbits(8 * n).to_bytes(n, "little") if n else b"")
' "$1" "$2" "$KV_SEED-${3:-}"
}

kv_pass() {
  kv_log "PASS"
}

# A writer in the background, as an application would write: one kvcli put
# KPn VPn per write (n = 1, 2, ...) until $KV_DIR/stop exists or after MAX
# writes. Each n goes to $KV_DIR/acked (exit 0), unknown (exit 3: outcome
# unknown) or other (anything else, with its exit code). Sets KV_WRITER_PID.
#   kv_writer_start KP VP MAX
kv_writer_start() {
  local kp=$1 vp=$2 max=$3
  : >"$KV_DIR/acked"
  : >"$KV_DIR/unknown"
  (
    trap - ERR EXIT INT TERM
    set +e
    n=0
    while [ ! -e "$KV_DIR/stop" ] && [ $n -lt "$max" ]; do
      n=$((n + 1))
      kv_cli --timeout 5 put "$kp$n" "$vp$n" >/dev/null 2>>"$KV_DIR/writer.err"
      rc=$?
      case $rc in
      0) echo "$n" >>"$KV_DIR/acked" ;;
      3) echo "$n" >>"$KV_DIR/unknown" ;;
      *) echo "$n exit $rc" >>"$KV_DIR/other" ;;
      esac
    done
  ) &
  KV_WRITER_PID=$!
  KV_BG+=("$KV_WRITER_PID")
}
kv_acked() { wc -l <"$KV_DIR/acked"; }
kv_acked_at_least() { [ "$(kv_acked)" -ge "$1" ]; }
