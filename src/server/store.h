/*
 * The node's storage at start-up and at a snapshot install: the log (wal.h),
 * the state machine (sm.h) and the snapshots (snapshot.h) brought to agree
 * with each other. No libuv, no sockets: tests/server runs it on a data dir
 * whose log lives in the fake file layer (fs_fake.h) and loops a crash over
 * every step of an install.
 *
 * Definitions. S is the newest snapshot that verifies (snap_latest). "The
 * log holds S" when wal_term_at(S.index) is S.term: the entry S ends with is
 * in the log, or is the one the log starts after (compacted or reset).
 *
 * Invariants after store_open and after store_install (numbered for the
 * asserts and tests that check them):
 *  1. sm_applied_index >= S.index: the state machine is at S or past it.
 *  2. The log holds S, so it starts at or before S.index + 1 and every entry
 *     after S.index continues S's history (Raft §5.3 Log Matching).
 *  3. No entry after S.index has a term below S.term.
 *  4. sm_applied_index <= wal_last_index: what was applied is in the log.
 *
 * The order of an install (and of its completion at start-up), so that a
 * crash between any two steps leaves a data dir store_open repairs:
 *  a. the stream is checked chunk by chunk into snap/tmp-recv-*: a crash
 *     leaves a tmp dir that snap_latest ignores (the old state stands; the
 *     leader sends again);
 *  b. snap_recv_finish: S is durable under its final name; from here on
 *     start-up finishes the install;
 *  c. snap_restore: the state machine becomes S's (atomic swap);
 *  d. wal_reset(S.index, S.term): the old log is gone.
 * Start-up does c when the state machine is behind S and d when the log
 * does not hold S (Raft §7: "if an existing log entry has the same index
 * and term as the snapshot's last included entry, retain the log entries
 * following it; otherwise discard the entire log").
 *
 * Threads: the node's loop thread (the apply thread).
 */
#ifndef KV_SERVER_STORE_H
#define KV_SERVER_STORE_H

#include "storage/fs.h"
#include "storage/sm.h"
#include "storage/snapshot.h"
#include "storage/wal.h"

#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>

struct Kv__Membership;

/* What store_open found, after it reconciled the pieces. */
typedef struct store_start {
    bool has_snap;
    snap_meta snap; /* S, when has_snap */
    /* S's membership (its manifest): the one at S.index, which Raft restarts
     * from. NULL when S holds none. Owned: store_start_free(). */
    struct Kv__Membership *snap_members;
    uint64_t first, last; /* the log after reconciliation */
    uint64_t applied;     /* the state machine's applied index */
    /* The durable entries after S (or the whole log without S), for
     * raft_new. Owned: store_start_free() (or taken and set to NULL). */
    wal_entry *entries;
    size_t entries_count;
} store_start;

/* Opens the log of data_dir on fs (wo may be NULL for the defaults), the
 * state machine in data_dir/db and finds S in data_dir/snap (both on rfs,
 * real files); restores and resets as described above, so that the
 * invariants hold, and reads the entries Raft restarts with. *w and *s are
 * set as soon as each is open, also when a later step fails: the caller
 * closes them (wal_close, sm_close). KV_ECORRUPT when the pieces cannot be
 * made to agree (a log that starts after S, an applied index past the log),
 * each logged naming the index; an error of wal_open, sm_open, snap_restore
 * or wal_reset as such. *out is filled on success; on failure it owns
 * nothing. */
int store_open(kv_fs *fs, kv_fs *rfs, const char *data_dir, const wal_options *wo, wal **w, sm **s,
               store_start *out);

void store_start_free(store_start *st);

/* Brings the state machine *s (open on db_dir) and the log w to snapshot sn
 * (steps c and d above). At start-up (install false) only what is missing
 * is done; for an install (install true: Raft asked for it, and empties its
 * own log at raft_advance) both steps are always done. On return 0 the
 * invariants hold for sn. KV_ECORRUPT when the state machine is past sn but
 * the log does not hold sn (nothing is changed then); errors of
 * snap_restore (then *s may be NULL) and wal_reset. */
int store_reconcile(wal *w, sm **s, const char *db_dir, const snap_meta *sn, bool install);

/* Steps a and b: the snapshot stream of len bytes at f's position, checked
 * into snap_dir (on rfs). *out names the new snapshot. KV_ECORRUPT when
 * the stream or a chunk does not check. */
int store_receive(kv_fs *rfs, const char *snap_dir, FILE *f, uint64_t len, snap_meta *out);

/* A whole install (steps a to d) of the stream of snapshot (index, term):
 * store_receive, then store_reconcile(install). *out names the snapshot.
 * KV_ECORRUPT when the stream describes another snapshot. Each failure is
 * logged naming its step. Crash points (common/crashpoint.h), in order:
 * install.receiving (half the stream in), install.received, restore.staged,
 * restore.swapped, install.restored, install.reset. */
int store_install(kv_fs *rfs, const char *snap_dir, wal *w, sm **s, const char *db_dir, FILE *f,
                  uint64_t len, uint64_t index, uint64_t term, snap_meta *out);

#endif /* KV_SERVER_STORE_H */
