/*
 * Raft hard state (term, vote, commit) in two slots, DIR/hardstate.0 and
 * DIR/hardstate.1, written alternately, so a torn write of one slot never
 * loses the other.
 *
 * Slot file (HS_SLOT_BYTES, little-endian): magic "KVHSTATE", version u32,
 * zero u32, counter u64, term u64, vote u64, commit u64, xxh3 of the
 * preceding 48 bytes u64. The valid slot with the highest counter wins.
 *
 * A slot that does not exist yet is created whole (temporary file, sync,
 * rename, directory sync), so the first saves never leave a torn slot
 * beside none. A slot failing its checks while the other slot is valid is
 * what a crash during hs_save leaves (the slot being written is torn) -- or
 * a flipped bit in a slot that was synced. The log tells the two apart (docs/rules.md,
 * "falling back to an older copy of the vote"): term and vote are synced
 * before any entry of their term is appended, so a log holding a term above
 * the valid slot's proves that a newer slot was synced, and the bad slot is
 * that one: falling back would reuse a stale vote (two votes in one term).
 * Rules, given log_term (the highest term in the log; 0 when it is empty):
 *   1. one slot bad, the other valid with term >= log_term: TORN, not
 *      corruption (hs_check returns 0, hs_load uses the valid slot, the
 *      next hs_save overwrites the bad one); a node restarts after a crash
 *      without an operator. Its cost: a flip in the newest slot, synced
 *      but with no entry of its term in the log yet, rolls term/vote/commit
 *      back by one save, and that save's vote may already have been sent:
 *      after such bit rot the node can vote a second time in that term.
 *      The log cannot prove that slot synced; nothing cheaper can either.
 *   2. one slot bad, the other valid with term < log_term: CORRUPT, the bad
 *      slot named (KV_ECORRUPT).
 *   3. both slots bad: CORRUPT, each named (KV_ECORRUPT).
 */
#ifndef KV_STORAGE_HARDSTATE_H
#define KV_STORAGE_HARDSTATE_H

#include "storage/check.h"
#include "storage/fs.h"

#include <stdint.h>

#define HS_FORMAT_VERSION 1u
#define HS_SLOT_BYTES 56u

typedef struct hs_state {
    uint64_t term;
    uint64_t vote; /* node id voted for in term, 0 for none */
    uint64_t commit;
} hs_state;

typedef struct hs hs;

/* Loads the hard state of data dir dir into *st: the valid slot with the
 * highest counter; zeros when neither slot exists. log_term is the highest
 * term in the log (0 for an empty log): see the rules above. Problems are
 * reported through fn (may be NULL) as in hs_check. KV_ECORRUPT when slots exist
 * and none is valid, KV_EVERSION for another format version. The slot
 * loaded and the directory are synced before it returns (a slot left in the
 * page cache by a process that died before its fdatasync is made durable
 * before anyone acts on it); KV_EIO when that fails.
 * Ownership: *out is the caller's; free it with hs_close(). */
int hs_load(kv_fs *fs, const char *dir, uint64_t log_term, kv_check_fn fn, void *arg, hs **out,
            hs_state *st);

/* Writes st to the slot not holding the newest valid copy, fdatasyncs it
 * (and the directory when the file is new), and returns only then. KV_EIO
 * on failure, never retried: every later hs_save also returns KV_EIO
 * (fail-stop, docs/rules.md "fsync errors are final (fsyncgate)"). */
int hs_save(hs *h, const hs_state *st);

/* The state last loaded or saved. */
void hs_get(hs *h, hs_state *st);

void hs_close(hs *h);

/* Read-only check of both slots by the rules above: CORRUPT (KV_ECORRUPT),
 * TORN (0), VERSION for another format version (KV_EVERSION). 0 when both
 * are absent. */
int hs_check(kv_fs *fs, const char *dir, uint64_t log_term, kv_check_fn fn, void *arg);

#endif /* KV_STORAGE_HARDSTATE_H */
