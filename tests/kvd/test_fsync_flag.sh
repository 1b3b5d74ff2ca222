#!/usr/bin/env bash
# Issue 10, item 5, end to end on real one-node clusters: a flag or a config
# line can never turn fsync off by accident, --config=FILE loads the file, a
# comment after a value is not part of it, and the command line wins over the
# file wherever --config stands. What is observed is what an operator sees:
# kvd's own log (the UNSAFE warning, "listening on ..."), its exit code, and
# whether the data dir exists. Needs no --print-config, so it runs against
# any kvd (it fails on the kvd before the flags table).
# Usage: test_fsync_flag.sh BIN_DIR
set -u
bin=${1:?usage: test_fsync_flag.sh BIN_DIR}
work=$(mktemp -d /tmp/kv-fsync-flag.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# run_node CASE [FLAGS...]: starts a one-node cluster with FLAGS on a fresh
# data dir $work/CASE (made by kvd init, except for the bad-* and conf-no
# cases, which must be refused before any data dir exists), waits (10 s at most) until it listens or exits, stops
# it; leaves its output in $work/CASE.log and its exit code in $rc (0 when
# it served and stopped cleanly on SIGTERM).
run_node() {
  local c=$1 port pid i
  shift
  port=$(free_port)
  case $c in
    bad-* | conf-no) ;;
    *) "$bin/kvd" init --name n1 --data-dir "$work/$c" --cluster "n1=127.0.0.1:$port" \
      --cluster-token "$c" >"$work/$c.log" 2>&1 || fail "$c: kvd init failed" ;;
  esac
  "$bin/kvd" --name n1 --data-dir "$work/$c" --cluster "n1=127.0.0.1:$port" "$@" \
    >>"$work/$c.log" 2>&1 &
  pid=$!
  for ((i = 0; i < 100; i++)); do
    grep -q 'listening on' "$work/$c.log" && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  kill -TERM "$pid" 2>/dev/null
  rc=0
  wait "$pid" || rc=$?
}
served() { # CASE: it started serving and stopped cleanly
  [ "$rc" -eq 0 ] && grep -q 'listening on' "$work/$1.log" ||
    { fail "$1: kvd did not serve (exit $rc): $(head -c 600 "$work/$1.log")"; return 1; }
}
unsafe() { grep -q 'UNSAFE' "$work/$1.log"; }

# --unsafe-no-fsync=false means fsync ON: no warning, a safe node.
run_node false --unsafe-no-fsync=false
served false && ! unsafe false ||
  fail "--unsafe-no-fsync=false ran without fsync: $(grep UNSAFE "$work/false.log" | head -2)"

# --unsafe-no-fsync alone and =true mean fsync OFF, and say so loudly.
run_node bare --unsafe-no-fsync
served bare && unsafe bare || fail "--unsafe-no-fsync did not log the UNSAFE warning"
run_node true --unsafe-no-fsync=true
served true && unsafe true || fail "--unsafe-no-fsync=true did not log the UNSAFE warning"

# Anything else is refused before the data dir is touched.
for v in no 0 yes off 1 ''; do
  run_node "bad-$v" "--unsafe-no-fsync=$v"
  [ "$rc" -eq 2 ] || fail "--unsafe-no-fsync='$v' exited $rc, want 2: $(head -c 300 "$work/bad-$v.log")"
  grep -q -- 'unsafe-no-fsync' "$work/bad-$v.log" || fail "--unsafe-no-fsync='$v': the message does not name the flag"
  [ ! -e "$work/bad-$v" ] || fail "--unsafe-no-fsync='$v' created the data dir"
done

# The config file: 'unsafe-no-fsync = no' is an error naming FILE:LINE.
printf '# a node\nunsafe-no-fsync = no\n' >"$work/no.conf"
run_node conf-no --config "$work/no.conf"
[ "$rc" -eq 2 ] || fail "'unsafe-no-fsync = no' in a config file exited $rc, want 2 (unsafe: $(unsafe conf-no && echo yes || echo no))"
grep -q "no.conf:2" "$work/conf-no.log" || fail "'unsafe-no-fsync = no': the message does not name the file and line: $(cat "$work/conf-no.log")"
[ ! -e "$work/conf-no" ] || fail "'unsafe-no-fsync = no' in a config file created the data dir"

# --config=FILE loads the file (it used to be ignored).
printf 'unsafe-no-fsync = true\n' >"$work/unsafe.conf"
run_node conf-eq "--config=$work/unsafe.conf"
served conf-eq && unsafe conf-eq || fail "--config=FILE was ignored ('unsafe-no-fsync = true' in it had no effect)"
run_node conf-sp --config "$work/unsafe.conf"
served conf-sp && unsafe conf-sp || fail "--config FILE: 'unsafe-no-fsync = true' had no effect"

# The command line wins over the file, before or after --config.
run_node cli-before --unsafe-no-fsync=false --config "$work/unsafe.conf"
served cli-before && ! unsafe cli-before || fail "--unsafe-no-fsync=false before --config lost to the file"
run_node cli-after "--config=$work/unsafe.conf" --unsafe-no-fsync=false
served cli-after && ! unsafe cli-after || fail "--unsafe-no-fsync=false after --config lost to the file"

# A comment after a value is not part of it.
printf 'tick-ms = 20 # faster\nelection-ticks = 10\t# the default\n' >"$work/comment.conf"
run_node comment --config "$work/comment.conf"
served comment || fail "'tick-ms = 20 # faster' in a config file was refused"

[ "$fails" -eq 0 ] && echo "PASS test_fsync_flag" || { echo "$fails failure(s)"; exit 1; }
