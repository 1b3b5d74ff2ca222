/*
 * tc: a tiny hand-driven cluster for the raft unit tests. Nodes are raft
 * instances with ids 1..TC_MAX; their "disk" is a few fields; messages are
 * copied into one queue and delivered when a test says so. Every Ready is
 * checked against the durability contract of raft.h (no message of a term,
 * or vote reply, before that term/vote was stored).
 */
#ifndef KV_TESTS_RAFT_TC_H
#define KV_TESTS_RAFT_TC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "raft.h"

#define TC_MAX 6
#define TC_READS_MAX 64

typedef struct tc tc;
typedef void (*tc_tweak_fn)(raft_config *cfg, void *arg);
/* Returns true to drop m (it is still counted). */
typedef bool (*tc_drop_fn)(tc *c, const raft_msg *m, void *arg);

typedef struct tc_node {
    raft *r;
    uint64_t id;
    bool hold_persist;      /* do not report raft_persisted() by itself */
    uint64_t written_index; /* last entry handed to "disk" */
    uint64_t written_term;
    raft_hard_state hs; /* durable hard state */
    uint64_t applied;
    uint64_t applied_normal;
    uint64_t applied_bytes;
    bool has_membership;
    raft_membership membership;
    raft_read_state reads[TC_READS_MAX];
    size_t reads_count;
    /* the snapshot it serves as a leader */
    unsigned char *snap;
    uint64_t snap_len;
    uint64_t snap_index;
    uint64_t snap_term;
    /* a snapshot being received */
    unsigned char *rcv;
    uint64_t rcv_len;
    uint64_t installed_index;
    int chunks_stored;
    int snap_reads; /* calls of the read callback */
} tc_node;

struct tc {
    tc_node n[TC_MAX + 1]; /* by id; n[0] unused */
    int count;
    raft_msg *q;
    size_t q_count;
    size_t q_cap;
    bool cut[TC_MAX + 1][TC_MAX + 1]; /* drop from -> to */
    tc_drop_fn drop;
    void *drop_arg;
    uint64_t sent[RAFT_MSG_TIMEOUT_NOW + 1]; /* by type, dropped included */
};

/* Starts voters 1..voters (bootstrapped) plus learner-less extra nodes
 * voters+1..total that join later (empty state). tweak may be NULL. */
void tc_start(tc *c, int voters, int total, tc_tweak_fn tweak, void *arg);
void tc_free(tc *c);

/* Handles every Ready of node id (persist, queue messages, apply, advance). */
void tc_ready(tc *c, uint64_t id);
/* Readies of all nodes until none has one. */
void tc_flush(tc *c);
/* Delivers the queued messages (one pass; new ones wait). Returns how many. */
size_t tc_deliver(tc *c);
/* flush + deliver until nothing moves (bounded). */
void tc_settle(tc *c);
void tc_tick(tc *c, uint64_t id, int ticks);
/* Ticks every node once and settles, k times. */
void tc_tick_all(tc *c, int k);
/* Makes id leader by ticking it alone (others must not have a live
 * leader); asserts it won. */
void tc_elect(tc *c, uint64_t id);
/* Cuts (or heals) every link to and from id. */
void tc_isolate(tc *c, uint64_t id, bool cut);
/* Reports node id's written log as durable. */
void tc_persist(tc *c, uint64_t id);
/* Gives node id a snapshot at its applied index of bytes bytes, and says so. */
void tc_snapshot(tc *c, uint64_t id, uint64_t bytes);
/* Proposes count entries of len bytes at the leader; asserts success. */
void tc_propose(tc *c, uint64_t id, int count, size_t len);
/* Counts queued messages of a type from -> to (0: any). */
size_t tc_queued(const tc *c, uint32_t type, uint64_t from, uint64_t to);
/* Drops queued messages of a type from -> to (0: any). */
void tc_drop_queued(tc *c, uint32_t type, uint64_t from, uint64_t to);
/* The leader among the nodes, or 0 (asserts at most one per term). */
uint64_t tc_leader(const tc *c);

#endif
