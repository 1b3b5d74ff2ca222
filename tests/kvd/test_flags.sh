#!/usr/bin/env bash
# kvd's flags and config file, every flag of every mode with a good value and
# a bad one. A good value is observed in --print-config (the resolved
# settings; it never touches the data dir). A bad value is given to a real
# run (no --print-config): it must exit 2 with a message naming the flag, and
# the data dir must not exist afterwards.
# Usage: test_flags.sh BIN_DIR SOURCE_DIR
set -u
bin=${1:?usage: test_flags.sh BIN_DIR SOURCE_DIR}
src=${2:?usage: test_flags.sh BIN_DIR SOURCE_DIR}
kvd=$bin/kvd
work=$(mktemp -d /tmp/kv-flags-test.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
D=$work/data # never created by any run below
ADDR=127.0.0.1:$port
SERVE=(--name n1 --data-dir "$D" --cluster "n1=$ADDR")
INIT=(init --name n1 --data-dir "$D" --cluster "n1=$ADDR,n2=127.0.0.1:1")
RESTORE=(restore --from "$work/backup.snap" --name n1 --data-dir "$D" --cluster "n1=$ADDR")
RECOVER=(recover --name n1 --data-dir "$D")
OUT=$work/out

untouched() { [ ! -e "$D" ] || { fail "$1: the data dir was created"; rm -rf "$D"; }; }

# ok ARGS...: kvd ARGS --print-config exits 0; its output is in $OUT.
ok() {
  local rc=0
  "$kvd" "$@" --print-config >"$OUT" 2>&1 || rc=$?
  [ "$rc" -eq 0 ] || fail "'kvd $*' exited $rc, want 0: $(head -c 400 "$OUT")"
  untouched "kvd $* --print-config"
}
# has KEY VALUE [CASE]: the last ok printed 'KEY = VALUE'.
has() {
  grep -Eq "^$1 = $2( |\$)" "$OUT" ||
    fail "${3:-}: want '$1 = $2' in --print-config, got: $(grep -E "^#? ?$1 " "$OUT")"
}
# bad NAMED ARGS...: a real run of kvd ARGS exits 2 naming NAMED, and does
# not create the data dir.
bad() {
  local named=$1 rc=0
  shift
  timeout 10 "$kvd" "$@" >"$OUT" 2>&1 || rc=$?
  [ "$rc" -eq 2 ] || fail "'kvd $*' exited $rc, want 2: $(head -c 400 "$OUT")"
  grep -qF -- "$named" "$OUT" || fail "'kvd $*': the message does not name '$named': $(head -c 400 "$OUT")"
  [ "$(wc -l <"$OUT")" -le 3 ] || fail "'kvd $*': more than 3 lines: $(head -c 600 "$OUT")"
  untouched "kvd $*"
}

# ---- every number: both limits good, one past each bad, and not-numbers ----
number() { # FLAG MIN MAX
  local f=$1 lo=$2 hi=$3 v
  for v in "$lo" "$hi"; do
    ok "${SERVE[@]}" "--$f" "$v"
    has "$f" "$v" "--$f $v"
    ok "${SERVE[@]}" "--$f=$v"
    has "$f" "$v" "--$f=$v"
  done
  [ "$lo" -gt 0 ] && bad "--$f" "${SERVE[@]}" "--$f" "$((lo - 1))"
  bad "--$f" "${SERVE[@]}" "--$f=$(python3 -c "print($hi + 1)")"
  for v in -1 +5 ' 5' 5x 1e3 '' 0x10; do
    bad "--$f" "${SERVE[@]}" "--$f=$v"
  done
  bad "--$f needs a value" "${SERVE[@]}" "--$f"
}
wal_min=$("$kvd" --help | grep -A1 -- '--wal-segment-bytes' | sed -nE 's/.*; ([0-9]+) to.*/\1/p')
[ -n "$wal_min" ] || fail "kvd --help does not give the range of --wal-segment-bytes"
number snapshot-entries 10 4294967295
number snapshot-bytes 4096 1099511627776
number snapshots-keep 1 100
number tick-ms 1 10000
number election-ticks 3 1000
number quota-bytes 1 18446744073709551615
number slow-fsync-ms 1 600000
number wal-segment-bytes "${wal_min:-4208704}" 1099511627776
number wal-queue-bytes 2102304 67108864
ok "${SERVE[@]}" --wal-segment-bytes 4300000 # tests/cluster/test_ops_nospace.sh
has wal-segment-bytes 4300000

# The defaults, as --help states them.
ok "${SERVE[@]}"
for kv in "snapshot-entries 10000" "snapshot-bytes 67108864" "snapshots-keep 2" "tick-ms 50" \
  "election-ticks 10" "quota-bytes 8589934592" "slow-fsync-ms 100" \
  "wal-segment-bytes 67108864" "unsafe-no-fsync false"; do
  has $kv "the default"
done
grep -Eq '^tick-ms = 50  # default$' "$OUT" || fail "--print-config does not say a default is one"

# ---- the bool ------------------------------------------------------------------
ok "${SERVE[@]}" --unsafe-no-fsync
has unsafe-no-fsync true "--unsafe-no-fsync"
ok "${SERVE[@]}" --unsafe-no-fsync=true
has unsafe-no-fsync true "--unsafe-no-fsync=true"
ok "${SERVE[@]}" --unsafe-no-fsync=false
has unsafe-no-fsync false "--unsafe-no-fsync=false"
for v in no 0 1 yes off on TRUE False ''; do
  bad "--unsafe-no-fsync '$v': want true or false" "${SERVE[@]}" "--unsafe-no-fsync=$v"
done
bad "unexpected argument 'false'" "${SERVE[@]}" --unsafe-no-fsync false
bad "--print-config" "${SERVE[@]}" --print-config=yes
bad "--help" "${SERVE[@]}" --help=1

# ---- strings -------------------------------------------------------------------
ok --name n-1.a_B --data-dir "$D" --listen "$ADDR"
has name n-1.a_B "--name"
long=$(printf 'n%.0s' $(seq 63))
ok --name "$long" --data-dir "$D" --listen "$ADDR"
has name "$long" "--name of 63 bytes"
for v in "${long}x" 'a,b' 'a=b' 'a b' ''; do
  bad "--name" --name "$v" --data-dir "$D" --listen "$ADDR"
done
bad "--name needs a value" --name --data-dir "$D" --listen "$ADDR"

ok --name n1 --data-dir "$work/d #1" --listen "$ADDR"
grep -qF "data-dir = \"$work/d #1\"" "$OUT" || fail "a data dir with '#' is not printed quoted: $(cat "$OUT")"
bad "--data-dir" --name n1 --data-dir "" --listen "$ADDR"
bad "--data-dir" --name n1 --data-dir "$(printf 'a\tb')" --listen "$ADDR"
bad "--name and --data-dir are required" --name n1 --listen "$ADDR"

for v in 127.0.0.1:7002 '[::1]:7002' :7002 0.0.0.0:1 10.0.0.11:65535; do
  ok --name n1 --data-dir "$D" --listen "$v"
  has listen "$(printf %s "$v" | sed 's/[][]/\\&/g')" "--listen $v"
done
for v in 127.0.0.1 127.0.0.1: host:7001 127.0.0.1:0 127.0.0.1:65536 '::1:7001' '[::1]' 1.2.3:7001 '127.0.0.1:7x'; do
  bad "--listen '$v'" --name n1 --data-dir "$D" --listen "$v"
done
bad "--listen HOST:PORT is required" --name n1 --data-dir "$D"
bad "--listen HOST:PORT is required" --name n9 --data-dir "$D" --cluster "n1=$ADDR"

ok "${SERVE[@]}" --join 10.0.0.11:7001
has join 10.0.0.11:7001 "--join"
ok --name n4 --data-dir "$D" --listen "$ADDR" --join 127.0.0.1:1 # no --cluster (tests/cluster)
has join 127.0.0.1:1 "--join without --cluster"
bad "--join" "${SERVE[@]}" --join 10.0.0.11
bad "--join" "${SERVE[@]}" --join :7001

ok "${SERVE[@]}" --metrics 127.0.0.1:9101
has metrics 127.0.0.1:9101 "--metrics"
bad "--metrics" "${SERVE[@]}" --metrics :9101
bad "--metrics" "${SERVE[@]}" --metrics localhost:9101

members="n1=10.0.0.11:7001,n2=10.0.0.12:7001,n3=[fd00::3]:7001"
ok --name n2 --data-dir "$D" --cluster "$members"
has cluster "$(printf %s "$members" | sed 's/[][]/\\&/g')" "--cluster"
has listen 10.0.0.12:7001 "--listen from --cluster"
nine=$(for i in 1 2 3 4 5 6 7 8 9; do printf 'n%d=127.0.0.1:%d,' $i $((7000 + i)); done)
ok --name n9 --data-dir "$D" --cluster "${nine%,}"
for v in "${nine}n10=127.0.0.1:7010" "n1=$ADDR,n1=127.0.0.1:7002" n1 "n1=$ADDR," ",n1=$ADDR" \
  "n1=host:7001" "n1=$ADDR;n2=127.0.0.1:7002" "=$ADDR" "a b=$ADDR"; do
  bad "--cluster '$v'" --name n1 --data-dir "$D" --listen "$ADDR" --cluster "$v"
done

echo secret >"$work/token"
ok "${SERVE[@]}" --token-file "$work/token"
has token-file "$work/token" "--token-file"
grep -q secret "$OUT" && fail "--print-config prints the token itself"
bad "--token-file $work/none" "${SERVE[@]}" --token-file "$work/none"
: >"$work/empty-token"
bad "--token-file $work/empty-token" "${SERVE[@]}" --token-file "$work/empty-token"
bad "--token-file" "${SERVE[@]}" --token-file ''

# ---- kvd init: --cluster-token, --cluster-id ----------------------------------------
ok "${INIT[@]}"
grep -q '^# cluster-token (not set)' "$OUT" || fail "kvd init --print-config: cluster-token: $(cat "$OUT")"
has listen "$ADDR" "kvd init: --listen from --cluster"
ok "${INIT[@]}" --cluster-token prod-2026.a
has cluster-token prod-2026.a "--cluster-token"
ok "${INIT[@]}" --listen 127.0.0.1:1234
has listen 127.0.0.1:1234 "kvd init --listen"
for v in 'a b' '' "$(printf 't%.0s' $(seq 256))" "$(printf 'a\tb')"; do
  bad "--cluster-token" "${INIT[@]}" --cluster-token "$v"
done
id=0123456789abcdefABCDEF0123456789
ok "${INIT[@]}" --cluster-id "$id"
has cluster-id "$id" "--cluster-id"
for v in "${id%?}" "${id}0" "${id%?}g" '' "0x${id#??}"; do
  bad "--cluster-id '$v'" "${INIT[@]}" --cluster-id "$v"
done
bad "exclude each other" "${INIT[@]}" --cluster-token t --cluster-id "$id"
bad "--cluster N1=HOST:PORT,... is required" init --name n1 --data-dir "$D"
bad "--name n3 is not one of the --cluster members" init --name n3 --data-dir "$D" --cluster "n1=$ADDR"
bad "--cluster-token is not a flag of kvd; it belongs to kvd init" "${SERVE[@]}" --cluster-token t
bad "--cluster-id is not a flag of kvd restore" "${RESTORE[@]}" --cluster-id "$id"
bad "--unsafe-no-fsync is not a flag of kvd init" "${INIT[@]}" --unsafe-no-fsync
bad "--join is not a flag of kvd init" "${INIT[@]}" --join "$ADDR"

# ---- kvd restore: --from; kvd recover ---------------------------------------------
ok "${RESTORE[@]}"
has from "$work/backup.snap" "--from"
bad "--from" "${SERVE[@]}" --from "$work/backup.snap"
bad "--from FILE is required" restore --name n1 --data-dir "$D" --cluster "n1=$ADDR"
bad "--from" "${RESTORE[@]/#--from/--from=}"
bad "is required" restore --from x --name n1 --data-dir "$D"
bad "--name n2 is not one of the --cluster members" restore --from x --name n2 --data-dir "$D" --cluster "n1=$ADDR"
bad "--listen is not a flag of kvd restore" "${RESTORE[@]}" --listen "$ADDR"
ok "${RECOVER[@]}"
has name n1 "kvd recover"
grep -q '^tick-ms' "$OUT" && fail "kvd recover --print-config lists serve's settings"
bad "--cluster is not a flag of kvd recover" "${RECOVER[@]}" --cluster "n1=$ADDR"
bad "--tick-ms is not a flag of kvd recover" "${RECOVER[@]}" --tick-ms 20

# ---- the command line as such -------------------------------------------------------
bad "unknown flag '--tick'" "${SERVE[@]}" --tick 20
bad "unknown flag '--unsafe'" "${SERVE[@]}" --unsafe
bad "unknown flag '--bogus'" "${SERVE[@]}" --bogus 1
bad "--tick-ms is given twice" "${SERVE[@]}" --tick-ms 20 --tick-ms=30
bad "--metrics needs a value, not the flag '--tick-ms'" "${SERVE[@]}" --metrics --tick-ms 20
bad "unexpected argument 'extra'" "${SERVE[@]}" extra
bad "--metrics '--x'" "${SERVE[@]}" --metrics=--x # with '=' a value, but not an address
for m in "" init restore recover; do
  rc=0
  "$kvd" $m --help >"$OUT" 2>&1 || rc=$?
  [ "$rc" -eq 0 ] && grep -q "^usage: kvd $m" "$OUT" || fail "kvd $m --help: exit $rc: $(head -3 "$OUT")"
done
"$kvd" init --help | grep -q -- '--cluster-token TOKEN' || fail "kvd init --help does not list --cluster-token"
"$kvd" init --help | grep -q -- '--tick-ms' && fail "kvd init --help lists --tick-ms"
"$kvd" --help | grep -q 'a data dir kvd init did not make is never bootstrapped' ||
  fail "kvd --help does not describe kvd init"

# ---- the config file ------------------------------------------------------------
conf() { printf '%s\n' "$@" >"$work/c.conf"; }
conf '# n1' 'tick-ms = 20 # faster' '  election-ticks=12	# tabs' '' 'snapshots-keep = 3#x'
bad "c.conf:5: snapshots-keep: '#' inside a value" "${SERVE[@]}" --config "$work/c.conf"
conf '# n1' 'tick-ms = 20 # faster' '  election-ticks=12	# tabs' '' 'metrics = "127.0.0.1:9101" # quoted'
ok "${SERVE[@]}" --config "$work/c.conf"
has tick-ms 20 "'tick-ms = 20 # faster'"
has election-ticks 12 "'election-ticks=12<TAB># tabs'"
has metrics 127.0.0.1:9101 "a quoted value"
grep -qF "tick-ms = 20  # $work/c.conf:2" "$OUT" || fail "--print-config does not name the file and line"
ok "${SERVE[@]}" "--config=$work/c.conf"
has tick-ms 20 "--config=FILE"
ok --tick-ms 30 "${SERVE[@]}" --config "$work/c.conf"
has tick-ms 30 "a flag before --config"
has election-ticks 12 "the file under a flag before --config"
ok "${SERVE[@]}" "--config=$work/c.conf" --tick-ms=30
has tick-ms 30 "a flag after --config"
ok --config "$work/c.conf" --unsafe-no-fsync=false "${SERVE[@]}"
has unsafe-no-fsync false "--unsafe-no-fsync=false with a file"

echo 'x' >"$work/tok#1"
conf "token-file = \"$work/tok#1\""
ok "${SERVE[@]}" --config "$work/c.conf"
has token-file "\"$work/tok#1\"" "a quoted value with '#'"
conf 'unsafe-no-fsync = true'
ok "${SERVE[@]}" --config "$work/c.conf"
has unsafe-no-fsync true "'unsafe-no-fsync = true'"
conf 'unsafe-no-fsync = false'
ok "${SERVE[@]}" --config "$work/c.conf"
has unsafe-no-fsync false "'unsafe-no-fsync = false'"

# Bad files: exit 2, FILE:LINE, the data dir untouched.
badconf() { # NAMED LINE...
  local named=$1
  shift
  conf '# a node' "$@"
  bad "$work/c.conf:$named" "${SERVE[@]}" --config "$work/c.conf"
}
badconf "2: unsafe-no-fsync 'no': want true or false" 'unsafe-no-fsync = no'
badconf "2: unsafe-no-fsync '1'" 'unsafe-no-fsync = 1'
badconf "2: 'unsafe-no-fsync': want 'key = value'" 'unsafe-no-fsync'
badconf "2: unsafe-no-fsync: needs a value" 'unsafe-no-fsync ='
badconf "2: tick-ms '0'" 'tick-ms = 0 # too fast'
badconf "3: 'tick-ms' is given twice (first on line 2)" 'tick-ms = 20' 'tick-ms = 30'
badconf "2: unknown key 'tick'" 'tick = 20'
badconf "2: unknown key 'config'" "config = $work/c.conf"
badconf "2: unknown key 'print-config'" 'print-config = true'
badconf "2: unknown key '--tick-ms'" '--tick-ms = 20'
badconf "2: metrics: a quoted value has no closing" 'metrics = "127.0.0.1:9101'
badconf "2: metrics: only a '# comment' may follow" 'metrics = "127.0.0.1:9101" x'
badconf "2: name: needs a value before the comment" 'name = # n1'
badconf "2: cluster-token 'a b'" 'cluster-token = a b' # checked though kvd does not use it
badconf "3: listen '10.0.0.1'" 'name = n1' 'listen = 10.0.0.1'
python3 -c "print('# ' + 'x' * 9000)" >"$work/long.conf"
bad "long.conf:1: longer than" "${SERVE[@]}" --config "$work/long.conf"
bad "--config $work/none" "${SERVE[@]}" --config "$work/none"
bad "--config is given twice" "${SERVE[@]}" --config "$work/long.conf" --config "$work/long.conf"
bad "--config needs a value" "${SERVE[@]}" --config

# A key of another mode in the file is checked, then ignored: one file for all.
conf "from = $work/backup.snap" 'cluster-token = t1' 'tick-ms = 20'
ok "${SERVE[@]}" --config "$work/c.conf"
grep -Eq '^(# )?(from|cluster-token)' "$OUT" && fail "kvd --print-config shows keys of other modes"
ok "${RECOVER[@]}" --config "$work/c.conf"
ok "${INIT[@]}" --config "$work/c.conf"
has cluster-token t1 "cluster-token from the file"

# --print-config's output is a config file that resolves to the same settings.
ok "${SERVE[@]}" --tick-ms 7 --metrics 127.0.0.1:9 --config "$work/c.conf"
grep -v '^#' "$OUT" >"$work/printed.conf"
ok --config "$work/printed.conf"
diff <(sed 's/  #.*//' "$work/printed.conf") <(grep -v '^#' "$OUT" | sed 's/  #.*//') >/dev/null ||
  fail "--print-config's output does not read back to the same settings"

# deploy/kvd-n*.conf parse (their token file is /etc/kv/token: a flag wins).
for i in 1 2 3; do
  ok --config "$src/deploy/kvd-n$i.conf" --token-file "$work/token"
  has name "n$i" "deploy/kvd-n$i.conf"
  has data-dir "/var/lib/kv/n$i" "deploy/kvd-n$i.conf"
  has listen "10.0.0.1$i:7001" "deploy/kvd-n$i.conf"
  has metrics "10.0.0.1$i:9101" "deploy/kvd-n$i.conf"
  has quota-bytes 8589934592 "deploy/kvd-n$i.conf"
  ok restore --config "$src/deploy/kvd-n$i.conf" --from "$work/backup.snap"
  ok recover --config "$src/deploy/kvd-n$i.conf"
done

# The spellings tests/cluster, scripts/demo, bench and kv-jepsen use.
ok --name n1 --data-dir "$D" --listen "$ADDR" --cluster "n1=$ADDR,n2=127.0.0.1:2,n3=127.0.0.1:3" \
  --wal-segment-bytes 4300000 --snapshot-entries 20 --quota-bytes 123456789 --metrics 127.0.0.1:9 \
  --token-file "$work/token" --snapshot-bytes 65536 --snapshots-keep 3 --tick-ms 10 \
  --election-ticks 5 --slow-fsync-ms 50 --unsafe-no-fsync
has snapshot-entries 20 "tests/cluster flags"
has quota-bytes 123456789 "tests/cluster flags"
ok --name n2 --data-dir "$D" --cluster "n1=127.0.0.1:1,n2=$ADDR" # bench/compare.sh: no --listen
has listen "$ADDR" "bench/compare.sh"
ok restore --from "$work/b.snap" --data-dir "$D" --name r1 --cluster "r1=$ADDR"
ok recover --data-dir "$D" --name n1

[ "$fails" -eq 0 ] && echo "PASS test_flags" || { echo "$fails failure(s)"; exit 1; }
