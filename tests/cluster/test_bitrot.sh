#!/usr/bin/env bash
# Bit rot, one round each on a fresh cluster.
# Under a follower while it is down: a byte flipped in an SST of db/, in an
# SST of its newest snapshot (which db/ may share through a hard link) and
# in that snapshot's MANIFEST.kv. Restarted, the node either agrees with the
# others at kvcli check or stops with exit 4 (CORRUPT) naming the file; it
# never stays up without an answer, never exits with the I/O code. The
# other two keep serving.
# Under the leader while it runs, in the snapshot it must send to a
# follower that fell behind (its MANIFEST.kv, or a file of it): the leader
# stops with exit 4 naming the file (it used to start the transfer over
# with the same bad bytes forever, and the follower never caught up); the
# follower catches up from the new leader and agrees with it.
# Usage: test_bitrot.sh BIN_DIR
. "$(dirname "$0")/lib.sh"
kv_setup bitrot 9 "${1:?usage: test_bitrot.sh BIN_DIR}"

KEYS=600
KV_EXTRA_FLAGS=(--snapshot-entries 200)

# flip_byte FILE OFFSET: XOR 0x55 into one byte, in place.
flip_byte() {
  local b
  b=$(od -An -tu1 -j "$2" -N1 "$1" | tr -d ' ')
  printf "$(printf '\\x%02x' $((b ^ 0x55)))" | dd of="$1" bs=1 seek="$2" conv=notrunc status=none
}

# rot_round MODE: db | snap | manifest
# expect_exit4 I FILE ROUND: node I has stopped (or is stopping): it must
# exit 4 (corruption) with a last log line naming FILE.
expect_exit4() {
  local i=$1 file=$2 round=$3 rc=0
  wait "${KV_PIDS[$i]}" || rc=$?
  KV_PIDS[$i]=""
  kv__save_pids
  [ "$rc" -eq 4 ] || kv_fail "round $round: n$i exited $rc after the flip; corruption is exit 4"
  awk '/^=== test: start /{buf=""} {buf=buf $0 "\n"} END{printf "%s", buf}' "$KV_DIR/n$i.log" |
    grep "stopping (exit 4)" | grep -q "$(basename "$file")" ||
    kv_fail "round $round: n$i exited 4 without naming $(basename "$file") in its last line"
  kv_log "round $round: n$i stopped with exit 4 naming $(basename "$file")"
}

rot_round() {
  local mode=$1 i f newest file size off rc t0
  kv_log "--- round $mode"
  for i in 1 2 3; do rm -rf "${KV_DIR:?}/n$i"; done
  kv_start_all
  kv_wait_leader
  local tag=$RANDOM
  for ((n = 0; n < KEYS; n++)); do
    printf 'put rot-%04d value-%d-%04d\n' "$n" "$tag" "$n"
  done >"$KV_DIR/puts"
  kv_expect 0 kv_cli --timeout 10 <"$KV_DIR/puts"
  kv_expect 0 kv_cli check

  f=$((KV_LEADER_I % 3 + 1)) # a follower
  kv_stop "$f"
  newest=$(find "$KV_DIR/n$f/snap" -mindepth 1 -maxdepth 1 -name '[0-9a-f]*-*' | sort | tail -n 1)
  case "$mode" in
    db) file=$(find "$KV_DIR/n$f/db" -name '*.sst' | sort | head -n 1) ;;
    snap) file=$(find "$newest" -name '*.sst' | sort | tail -n 1) ;;
    manifest) file="$newest/MANIFEST.kv" ;;
  esac
  [ -n "$file" ] && [ -f "$file" ] || kv_fail "round $mode: n$f has no file to flip"
  size=$(stat -c %s "$file")
  off=$((size / 4)) # a data block of an SST; the body of a manifest
  flip_byte "$file" "$off"
  kv_log "flipped byte $off of $file ($size bytes)"

  kv_start "$f"
  sleep 1
  t0=$SECONDS
  kv_cli --timeout 10 check >"$KV_DIR/check.out" 2>&1 || true
  kv_log "kvcli check ($((SECONDS - t0))s): $(tr '\n' '|' <"$KV_DIR/check.out")"
  sleep 2
  if kv__alive "${KV_PIDS[$f]}"; then
    grep -q "^OK: 3 members agree" "$KV_DIR/check.out" ||
      kv_fail "round $mode: n$f runs but kvcli check shows no agreement of 3"
    kv_log "round $mode: n$f runs and agrees"
  else
    expect_exit4 "$f" "$file" "$mode"
  fi
  # the others keep serving
  kv_expect 0 kv_cli put "after-$mode" yes
  kv_expect 0 kv_cli get "after-$mode"
  kv_expect_out "yes"
  for i in 1 2 3; do
    [ -z "${KV_PIDS[$i]}" ] || kv_stop "$i"
  done
}

# leader_round MODE: manifest | file
leader_round() {
  local mode=$1 i f L newest file size off rc tag
  kv_log "--- round leader-$mode"
  for i in 1 2 3; do rm -rf "${KV_DIR:?}/n$i"; done
  kv_start_all
  kv_wait_leader
  L=$KV_LEADER_I
  f=$((L % 3 + 1))
  kv_stop "$f"
  tag=$RANDOM
  for ((n = 0; n < 1000; n++)); do
    printf 'put lag-%04d value-%d-%04d\n' "$n" "$tag" "$n"
  done >"$KV_DIR/puts"
  kv_expect 0 kv_cli --timeout 10 <"$KV_DIR/puts"
  # kvd takes snapshots on a worker thread: the one the leader will send is
  # the newest it has finished, once no other is in progress (the last
  # "took snapshot" line names the newest directory, twice in a row)
  newest_dir() { find "$KV_DIR/n$L/snap" -mindepth 1 -maxdepth 1 -name '[0-9a-f]*-*' | sort | tail -n 1; }
  taken_is_newest() {
    local last dir
    last=$(sed -n 's/.*took snapshot \([0-9]*\) .*/\1/p' "$KV_DIR/n$L.log" | tail -n 1)
    dir=$(newest_dir)
    [ -n "$last" ] && [ -n "$dir" ] && [ "$((16#$(basename "$dir" | cut -d- -f1)))" -eq "$last" ]
  }
  settled() { taken_is_newest && sleep 0.5 && taken_is_newest; }
  kv_until 30 "the leader n$L done with its snapshots" settled
  newest=$(newest_dir)
  case "$mode" in
    manifest) file="$newest/MANIFEST.kv" ;;
    file) file=$(find "$newest" -name 'OPTIONS-*' | head -n 1) ;; # a copy, not a link
  esac
  [ -n "$file" ] && [ -f "$file" ] || kv_fail "round leader-$mode: n$L has no file to flip"
  size=$(stat -c %s "$file")
  off=$((size / 2))
  flip_byte "$file" "$off"
  kv_log "flipped byte $off of the leader's $file ($size bytes)"
  kv_start "$f"
  leader_gone() { ! kv__alive "${KV_PIDS[$L]}"; }
  kv_until 30 "the leader n$L stopping on its damaged snapshot" leader_gone
  expect_exit4 "$L" "$file" "leader-$mode"
  last_on_f() { [ "$(kv_cli_node "$f" --timeout 2 get --stale lag-0999)" = "value-$tag-0999" ]; }
  kv_until 60 "n$f catching up from the new leader" last_on_f
  kv_cli --timeout 10 check >"$KV_DIR/check.out" 2>&1 || true
  kv_log "kvcli check: $(tr '\n' '|' <"$KV_DIR/check.out")"
  [ "$(grep -c ' ok$' "$KV_DIR/check.out")" -eq 2 ] && grep -q "^n$f .* ok$" "$KV_DIR/check.out" ||
    kv_fail "round leader-$mode: n$f and the other survivor do not both answer ok"
  kv_expect 0 kv_cli put "after-leader-$mode" yes
  for i in 1 2 3; do
    [ -z "${KV_PIDS[$i]}" ] || kv_stop "$i"
  done
}

for mode in ${KV_BITROT_ROUNDS:-db snap manifest leader-manifest leader-file}; do
  case "$mode" in
    leader-*) leader_round "${mode#leader-}" ;;
    *) rot_round "$mode" ;;
  esac
done
kv_pass
