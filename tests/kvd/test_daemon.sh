#!/usr/bin/env bash
# kvd as a daemon (issue 14): run by hand, every log line starts with the
# time; under the journal ($JOURNAL_STREAM naming its stderr) with a syslog
# priority instead; with $NOTIFY_SOCKET it sends READY=1 once it listens and
# STOPPING=1 on SIGTERM (deploy/kvd@.service is Type=notify). A SIGTERM
# during start-up stops it with exit 0.
# Usage: test_daemon.sh BIN_DIR
set -uo pipefail
bin=${1:?usage: test_daemon.sh BIN_DIR}
work=$(mktemp -d "${TMPDIR:-/tmp}/kv-daemon.XXXXXX")
pid=""
trap '[ -n "$pid" ] && kill -9 "$pid" 2>/dev/null; rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*" >&2; fails=$((fails + 1)); }
port=$((26400 + RANDOM % 50))

"$bin/kvd" init --name n1 --data-dir "$work/d" --cluster "n1=127.0.0.1:$port" \
  --cluster-token daemon >/dev/null || { echo "FAIL: kvd init"; exit 1; }

# A listener for the notifications, in the abstract namespace like systemd's.
sock="@kv-daemon-test-$$"
python3 - "$sock" "$work/notes" <<'PY' &
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind("\0" + sys.argv[1][1:])
open(sys.argv[2] + ".bound", "w").close()
s.settimeout(30)
with open(sys.argv[2], "w") as out:
    try:
        while True:
            out.write(s.recv(4096).decode() + "\n--\n")
            out.flush()
    except socket.timeout:
        pass
PY
listener=$!
for ((i = 0; i < 100; i++)); do
  [ -e "$work/notes.bound" ] && break
  sleep 0.1
done

# stderr to a file whose dev:ino JOURNAL_STREAM names: the journal's form.
: >"$work/journal.log"
js=$(stat -c '%d:%i' "$work/journal.log")
NOTIFY_SOCKET=$sock JOURNAL_STREAM=$js "$bin/kvd" --name n1 --data-dir "$work/d" \
  --listen "127.0.0.1:$port" 2>>"$work/journal.log" &
pid=$!
for ((i = 0; i < 100; i++)); do
  grep -q "READY=1" "$work/notes" 2>/dev/null && break
  sleep 0.1
done
grep -q "listening on" "$work/journal.log" || fail "kvd did not start: $(head -5 "$work/journal.log")"
grep -q "^READY=1$" "$work/notes" 2>/dev/null || fail "no READY=1 on \$NOTIFY_SOCKET: $(cat "$work/notes" 2>&1) log: $(tail -3 "$work/journal.log")"
grep -q "^STATUS=serving on 127.0.0.1:$port$" "$work/notes" || fail "no STATUS line with the address"
kill -TERM "$pid"
wait "$pid" || fail "kvd exited $? after SIGTERM"
pid=""
sleep 0.2
grep -q "^STOPPING=1$" "$work/notes" || fail "no STOPPING=1 at SIGTERM"
grep -Eq '^<6>n1 info SERVE listening on' "$work/journal.log" ||
  fail "under the journal, lines do not start with a priority: $(head -3 "$work/journal.log")"
grep -Eq '^[0-9]{4}-' "$work/journal.log" && fail "under the journal, lines carry a time too"
kill "$listener" 2>/dev/null
wait "$listener" 2>/dev/null

# By hand: the time first, UTC to the millisecond; no notification socket.
"$bin/kvd" --name n1 --data-dir "$work/d" --listen "127.0.0.1:$port" 2>"$work/hand.log" &
pid=$!
for ((i = 0; i < 100; i++)); do
  grep -q "listening on" "$work/hand.log" && break
  sleep 0.1
done
kill -TERM "$pid"
wait "$pid" || fail "kvd (by hand) exited $? after SIGTERM"
pid=""
grep -Eq '^20[0-9]{2}-[01][0-9]-[0-3][0-9]T[0-2][0-9]:[0-5][0-9]:[0-5][0-9]\.[0-9]{3}Z n1 info SERVE listening on' \
  "$work/hand.log" || fail "by hand, lines do not start with the time: $(head -3 "$work/hand.log")"

# SIGTERM while kvd is still starting (here: waiting for the cluster named by
# --join, where nobody listens) stops it cleanly: exit 0, within one attempt
# (10 s), never death by the signal (it was: exit 143, a crash to systemd and
# to jepsen-lite).
"$bin/kvd" --name n2 --data-dir "$work/j" --listen "127.0.0.1:$((port + 1))" \
  --join "127.0.0.1:$((port + 2))" 2>"$work/join.log" &
pid=$!
for ((i = 0; i < 100; i++)); do
  [ -e "$work/j/LOCK" ] && break
  sleep 0.05
done
sleep 0.2 # inside the wait for --join
kill -TERM "$pid"
for ((i = 0; i < 150; i++)); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$pid" 2>/dev/null && fail "kvd still runs 15 s after a SIGTERM during start-up"
rc=0
wait "$pid" || rc=$?
pid=""
[ "$rc" -eq 0 ] || fail "SIGTERM during start-up: kvd exited $rc, want 0 (log: $(tail -2 "$work/join.log"))"
grep -q "STOP signal 15 during start-up" "$work/join.log" ||
  fail "SIGTERM during start-up: no STOP line: $(tail -2 "$work/join.log")"

[ "$fails" -eq 0 ] && echo "PASS test_daemon" || { echo "$fails failure(s)"; exit 1; }
