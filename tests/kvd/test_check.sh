#!/usr/bin/env bash
# kvd check against data dirs written by the real log (kvbench wal): clean,
# torn tail, mid-log corruption, wrong format version, not a data dir, bad flags.
# Usage: test_check.sh BIN_DIR
set -u
bin=${1:?usage: test_check.sh BIN_DIR}
work=$(mktemp -d /tmp/kv-check-test.XXXXXX)
trap '[ -n "${KEEP:-}" ] || rm -rf "$work"' EXIT
fails=0
fail() { echo "FAIL: $*"; fails=$((fails + 1)); }

expect_exit() { # expect_exit CODE OUTFILE CMD...
  local want=$1 outf=$2; shift 2
  "$@" >"$outf" 2>&1
  local got=$?
  [ "$got" -eq "$want" ] || { fail "'$*' exited $got, want $want"; cat "$outf"; }
}

d=$work/clean
"$bin/kvbench" wal --data-dir "$d" --records 500 --size 100 --writers 4 >"$work/bench.out" || fail "kvbench wal failed"
grep -Eq '^records=500 secs=[0-9.]+ records_per_s=[0-9.]+ fsyncs=[0-9]+ p50_us=[0-9.]+ p99_us=[0-9.]+ fsyncs_per_s_raw=[0-9.]+$' "$work/bench.out" \
  || { fail "kvbench output line malformed"; cat "$work/bench.out"; }
expect_exit 0 "$work/o1" "$bin/kvd" check --data-dir "$d"
grep -q 'clean' "$work/o1" || fail "clean dir not reported clean"

seg=$(ls "$d"/wal/* | head -1)
size=$(stat -c %s "$seg")
# Segments are zero-filled ahead of the records: find where the records end.
end=$(python3 -c 'import sys; b=open(sys.argv[1],"rb").read(); print(len(b.rstrip(b"\0")))' "$seg")
[ "$end" -gt 1000 ] || fail "segment holds no records"

# A torn tail: cut the last record in half. Reported TORN, exit 0.
t=$work/torn; cp -r "$d" "$t"
tseg=$t/wal/$(basename "$seg")
truncate -s $((end - 50)) "$tseg"
expect_exit 0 "$work/o2" "$bin/kvd" check --data-dir "$t"
grep -q "^TORN $tseg offset [0-9]" "$work/o2" || { fail "torn tail not reported as TORN with file and offset"; cat "$work/o2"; }

# Mid-log corruption: flip a byte in the middle of the segment. CORRUPT, exit 4.
c=$work/corrupt; cp -r "$d" "$c"
cseg=$c/wal/$(basename "$seg")
off=$((end / 2))
printf '\xff' | dd of="$cseg" bs=1 seek=$off conv=notrunc status=none
cmp -s "$cseg" "$seg" && printf '\x00' | dd of="$cseg" bs=1 seek=$off conv=notrunc status=none
expect_exit 4 "$work/o3" "$bin/kvd" check --data-dir "$c"
grep -q "^CORRUPT $cseg offset [0-9]" "$work/o3" || { fail "mid-log flip not reported as CORRUPT with file and offset"; cat "$work/o3"; }
cmp -s <(stat -c %s "$cseg") <(echo "$size") || fail "check changed the size of a corrupt segment"

# Another format version.
v=$work/version; cp -r "$d" "$v"
echo "kv-data-dir 99" >"$v/FORMAT"
expect_exit 4 "$work/o4" "$bin/kvd" check --data-dir "$v"
grep -q "^VERSION $v/FORMAT" "$work/o4" || { fail "other format version not named"; cat "$work/o4"; }

# Not a data dir at all.
mkdir "$work/empty"
expect_exit 4 "$work/o5" "$bin/kvd" check --data-dir "$work/empty"
grep -q "^MISSING $work/empty/FORMAT" "$work/o5" || { fail "empty dir not reported MISSING FORMAT"; cat "$work/o5"; }

# Usage errors.
expect_exit 2 "$work/o6" "$bin/kvd" check
grep -q -- '--data-dir' "$work/o6" || fail "missing --data-dir not explained"
expect_exit 2 "$work/o7" "$bin/kvd" check --data-dir "$d" --bogus
grep -q -- "--bogus" "$work/o7" || fail "unknown flag not named"
expect_exit 2 "$work/o8" "$bin/kvd" check --data-dir "$work/nope"
grep -q "no such directory" "$work/o8" || fail "missing dir not named"
expect_exit 2 "$work/o9" "$bin/kvd" frobnicate
grep -q "unknown command 'frobnicate'" "$work/o9" || fail "unknown command not named"

# A whole node data dir: log, hard state, state machine, snapshot.
flip() { # flip FILE OFFSET: invert one byte
  local b; b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\%03o' $((255 - b)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}
full=$work/full
snap=$("$bin/mkdatadir" "$full" 2000 2>/dev/null) || fail "mkdatadir failed"
expect_exit 0 "$work/f0" "$bin/kvd" check --data-dir "$full"
grep -q clean "$work/f0" || { fail "full data dir not clean"; cat "$work/f0"; }

f=$work/f-sst; cp -r "$full" "$f"
sst=$(ls "$f"/db/*.sst | head -1)
flip "$sst" $(( $(stat -c %s "$sst") / 3 ))
expect_exit 4 "$work/f1" "$bin/kvd" check --data-dir "$f"
grep -q "^CORRUPT $sst offset [0-9]" "$work/f1" || { fail "flipped SST not reported CORRUPT"; cat "$work/f1"; }

f=$work/f-snap; cp -r "$full" "$f"
ssst=$(ls "$f"/snap/*/*.sst | head -1)
flip "$ssst" 100
expect_exit 4 "$work/f2" "$bin/kvd" check --data-dir "$f"
grep -q "^CORRUPT $ssst offset 0" "$work/f2" || { fail "flipped snapshot file not named"; cat "$work/f2"; }

f=$work/f-snapmissing; cp -r "$full" "$f"
rm "$f/snap/$(basename "$snap")/CURRENT"
expect_exit 4 "$work/f3" "$bin/kvd" check --data-dir "$f"
grep -q "^MISSING $f/snap/$(basename "$snap")/CURRENT" "$work/f3" || { fail "missing snapshot file not named"; cat "$work/f3"; }

f=$work/f-manifest; cp -r "$full" "$f"
flip "$f/snap/$(basename "$snap")/MANIFEST.kv" 20
expect_exit 4 "$work/f4" "$bin/kvd" check --data-dir "$f"
grep -q "^CORRUPT $f/snap/$(basename "$snap")/MANIFEST.kv" "$work/f4" || { fail "flipped manifest not named"; cat "$work/f4"; }

# mkdatadir saves terms 1, 2, 3 (slot 0, 1, 0) and logs entries of term 3.
# The older slot bad (term 2, the newer one valid) is what a crash during a
# save leaves: TORN, exit 0. The newer slot bad: the log holds term 3, so
# that slot was synced before it, and falling back to slot 1's term 2 would
# reuse a stale vote: CORRUPT naming it, exit 4. Both bad: CORRUPT, exit 4.
f=$work/f-hs1; cp -r "$full" "$f"
flip "$f/hardstate.1" 30
expect_exit 0 "$work/f5" "$bin/kvd" check --data-dir "$f"
grep -q "^TORN $f/hardstate.1" "$work/f5" || { fail "one bad hard-state slot not reported"; cat "$work/f5"; }
f=$work/f-hs0; cp -r "$full" "$f"
flip "$f/hardstate.0" 30
expect_exit 4 "$work/f5b" "$bin/kvd" check --data-dir "$f"
grep -q "^CORRUPT $f/hardstate.0 offset 0: .*synced" "$work/f5b" ||
  { fail "a synced hard-state slot that rotted not CORRUPT"; cat "$work/f5b"; }
# kvd itself stops there too (it used to fall back and exit 2, "INVALID the
# persisted raft state does not restart", naming no file)
expect_exit 4 "$work/f5c" "$bin/kvd" --name n1 --data-dir "$f" --listen 127.0.0.1:9
grep -q "CORRUPT $f/hardstate.0 offset 0" "$work/f5c" ||
  { fail "kvd on a rotted hard-state slot did not name it"; cat "$work/f5c"; }
flip "$f/hardstate.1" 30
expect_exit 4 "$work/f6" "$bin/kvd" check --data-dir "$f"
grep -q "^CORRUPT $f/hardstate.1" "$work/f6" || { fail "two bad hard-state slots not CORRUPT"; cat "$work/f6"; }

expect_exit 2 "$work/o10" "$bin/kvbench" wal --data-dir "$work/b" --writers 0
grep -q -- "--writers" "$work/o10" || fail "kvbench bad --writers not named"
expect_exit 2 "$work/o11" "$bin/kvbench" wal --data-dir "$work/b" --bogus 1
grep -q -- "--bogus" "$work/o11" || fail "kvbench unknown flag not named"

[ $fails -eq 0 ] && echo "kvd check: all cases passed"
exit $((fails > 0))
