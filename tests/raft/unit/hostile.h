/*
 * hostile: one raft node (id 1 of voters 1..3 and learner 4) fed messages a
 * peer could send, correct or not, with a Ready loop that plays the app and
 * checks, after every input, that no assert fired and that the node's
 * invariants hold:
 *   - term, commit and the durable vote never go back (one vote per term);
 *   - a committed entry never changes (its term at its index);
 *   - commit <= last index, applied <= commit, last entry's term <= term;
 *   - a leader names itself; every message leaves from node 1, never ahead
 *     of the durable term, a granted vote only after the vote is durable.
 * Used by test_raft_hostile_random (seeded random messages, many seeds) and
 * by the RaftBatch fuzz target (tests/fuzz). Plain C, no Check: a broken
 * invariant prints what broke, with the seed, and aborts.
 */
#ifndef KV_TESTS_RAFT_HOSTILE_H
#define KV_TESTS_RAFT_HOSTILE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

#define HN_TRACK 4096u    /* committed entries whose terms are remembered */
#define HN_ENTRIES_MAX 4u /* entries of one generated APPEND */
#define HN_DATA_BYTES 64u /* payload and chunk bytes of one generated message */
#define HN_SENT_KEPT 16u  /* sent messages kept to answer */

typedef enum hn_role {
    HN_FOLLOWER = 0,
    HN_PRE_CANDIDATE,
    HN_CANDIDATE,
    HN_LEADER,
    HN_LEADER_COMPACTED, /* a leader with a snapshot and a compacted log */
    HN_ROLES
} hn_role;

typedef struct hn {
    raft *r;
    uint64_t seed; /* printed on failure */
    uint64_t steps;
    uint64_t written_index, written_term;
    raft_hard_state hs; /* durable */
    uint64_t applied;
    uint64_t max_commit;
    uint64_t committed_terms[HN_TRACK + 1]; /* by index; 0: not seen committed */
    uint8_t snap[HN_DATA_BYTES];            /* the snapshot it serves as leader */
    uint64_t snap_index, snap_term;
    uint64_t refused;            /* raft_step answers other than 0 */
    raft_msg sent[HN_SENT_KEPT]; /* the last messages it sent (no pointers) */
    size_t sent_count;           /* ring position: sent_count % HN_SENT_KEPT */
} hn;

/* A message and the memory its pointers use. */
typedef struct hn_msg {
    raft_msg m;
    raft_entry ents[HN_ENTRIES_MAX];
    uint8_t data[HN_ENTRIES_MAX][HN_DATA_BYTES];
    uint8_t chunk[HN_DATA_BYTES];
} hn_msg;

/* Starts node 1 in role (restart state with a log of several terms). */
void hn_start(hn *h, hn_role role, uint64_t seed);
void hn_free(hn *h);
/* raft_step, then the Ready loop and the checks. Returns raft_step's code. */
int hn_step(hn *h, const raft_msg *m);
/* One tick, then the Ready loop and the checks. */
void hn_tick(hn *h);
/* One local input (tick, proposal, read, snapshot, compaction, transfer),
 * chosen by rng; then the Ready loop and the checks. */
void hn_local(hn *h, uint64_t *rng);
/* A random message for h's node: fields drawn near what it knows (its
 * term, indexes) and at the edges (0, UINT64_MAX), often plausible. */
void hn_random_msg(const hn *h, uint64_t *rng, hn_msg *out);
/* The answer a peer would give to one of the messages h's node sent
 * lately (an ack, a grant, an echoed round, the next chunk offset), with
 * one field then changed to a random value half of the time. False when
 * nothing was sent yet. */
bool hn_reply_msg(const hn *h, uint64_t *rng, hn_msg *out);
uint64_t hn_rand(uint64_t *rng);

#endif
