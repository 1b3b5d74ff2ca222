/*
 * src/node: one kv node's Ready loop, without I/O of its own.
 *
 * A node is the Raft core (src/raft) plus what every write and every read
 * depends on: the queue of writes proposed here and waiting for their
 * entries to apply, the queue of linearizable reads waiting for their read
 * index, the order of the Ready steps, and the answers. It does no I/O,
 * takes no locks, starts no threads and reads no clock: it reaches the world
 * through one vtable, node_io. kvd's half of node_io (src/server/server_io.c)
 * is the log, RocksDB and src/net; the simulator's (tests/raft/sim) and the
 * scenario harness's are in-memory disks and networks, so the loop that runs
 * in production is the loop the fault schedules run.
 *
 * THE LOOP (node_run), per raft Ready, in this order:
 *   1. hard state: when term or vote changed, io.hs_save makes it durable
 *      before anything else of this Ready happens;
 *   2. a snapshot to install: io.snap_install, durable on return;
 *   3. a snapshot chunk received: io.snap_chunk;
 *   4. messages: io.send;
 *   5. new log entries: io.log_append (asynchronous: the owner reports
 *      durability later with node_log_durable);
 *   6. committed entries: io.apply, then the writes waiting for them are
 *      answered (io.write_done), in index order;
 *   7. a change of role: io.role_changed; leadership lost fails every write
 *      and read still waiting (outcome unknown);
 *   8. read states: confirmed reads are served (io.read_done) once the
 *      applied index covers their read index;
 *   9. raft_advance.
 *
 * DURABILITY RULES, asserted as the loop runs (a violation is a bug in kv,
 * never an input, so it aborts):
 *   - no message leaves with a term above the durable term, and no vote
 *     reply before the vote is durable (step 1 before step 4);
 *   - no write is answered for an index above the applied index; an answer
 *     says "done" only when the entry at its index has the term it was
 *     proposed in (else: outcome unknown);
 *   - no read is answered before the applied index reaches its read index;
 *   - raft learns that entries are durable only from node_log_durable, which
 *     may be called at any time (also from inside io.log_append): inside a
 *     Ready it is held until raft_advance.
 *
 * Every write or read accepted by node_propose / node_read is answered
 * exactly once: by write_done / read_done, by leadership loss, or by
 * node_fail_all (shutdown). A callback returning non-zero stops node_run,
 * which returns that code: the node must stop (fail-stop; kvd exits).
 */
#ifndef KV_NODE_NODE_H
#define KV_NODE_NODE_H

#include "raft/raft.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* What the owner attaches to a write or read, handed back in its answer
 * (kvd: the connection, the request and its id; the simulator: a client). */
typedef struct node_tag {
    void *owner;
    void *data;
    uint64_t id;
    uint32_t kind;
    uint64_t t0_ns; /* io.now_ns() when it was accepted */
} node_tag;

/* A write waiting for its entry to apply. */
typedef struct node_write {
    uint64_t index, term;
    uint64_t bytes;
    node_tag tag;
} node_write;

typedef struct node_io {
    void *ctx;
    /* Step 1: term and vote durable on return. */
    int (*hs_save)(void *ctx, const raft_hard_state *hs);
    /* Step 2: the state machine becomes the snapshot's (from the chunks
     * stored), durably, and the log is emptied after it (raft.h step 2). */
    int (*snap_install)(void *ctx, const raft_snapshot_meta *meta);
    /* Step 3: store a chunk of the snapshot being received. */
    int (*snap_chunk)(void *ctx, const raft_snapshot_chunk *ch);
    /* Step 4: messages (copy what is kept: raft_msg_copy). */
    int (*send)(void *ctx, const raft_msg *msgs, size_t n);
    /* Step 5: start writing entries (copy the data); when they are durable
     * call node_log_durable(). A replaced suffix (e[0].index <= the last
     * index written) is the log's to override (wal.h). */
    int (*log_append)(void *ctx, const raft_entry *e, size_t n);
    /* Step 6: apply committed entries in order. membership is the
     * membership after the last CONF entry in e, or NULL when there is none.
     * The results stay with the owner until apply_end. */
    int (*apply)(void *ctx, const raft_entry *e, size_t n, const raft_membership *membership);
    /* The write w is answered. code 0: its entry, e[pos] of the last apply,
     * was applied (the owner's result for it is the answer); otherwise the
     * outcome is unknown (code: KV_ENOTLEADER after a leadership change,
     * or the code given to node_fail_all). */
    void (*write_done)(void *ctx, const node_write *w, size_t pos, int code);
    /* Every write of the last apply was answered (may be NULL). */
    void (*apply_end)(void *ctx);
    /* A read is answered. code 0: serve it now from the state machine;
     * otherwise tell the client (KV_ENOTLEADER: retry at the leader). */
    void (*read_done)(void *ctx, const node_tag *t, uint64_t read_index, int code);
    /* Step 7: raft's soft state changed (may be NULL). */
    void (*role_changed)(void *ctx, const raft_soft_state *ss);
    /* Called first in each Ready, before step 1, to trace it or check it
     * (the simulator's invariants); may be NULL. Only raft's const
     * accessors may be called on node_raft() from here. */
    void (*ready_begin)(void *ctx, const struct raft_ready *rd);
    /* The clock, for node_tag.t0_ns only (may be NULL: 0). */
    uint64_t (*now_ns)(void *ctx);
} node_io;

typedef struct node node;

/* Limits of the two queues (past them: KV_EBUSY). */
typedef struct node_limits {
    uint64_t pending_bytes_max; /* writes proposed here, not yet answered */
    uint64_t reads_max;         /* reads accepted, not yet answered */
} node_limits;

/* Starts raft from cfg (raft_new: cfg is copied) with io. 0, KV_ENOMEM or
 * raft_new's error. */
int node_new(const raft_config *cfg, const node_io *io, const node_limits *lim, node **out);
/* Frees the node; every write and read still waiting must have been
 * answered (node_fail_all). */
void node_free(node *n);

/* The core, for what the node does not wrap (membership, transfer,
 * compaction, status). Never call raft_ready/raft_advance/raft_persisted on
 * it: node_run and node_log_durable do. */
raft *node_raft(node *n);

/* Proposes data (copied by raft) as a write answered through io.write_done
 * when its entry applies. KV_ENOTLEADER, KV_EBUSY (the pending bytes limit,
 * or raft's), KV_ETOOBIG, KV_ENOMEM; *index_out (may be NULL) on success. */
int node_propose(node *n, const void *data, size_t len, const node_tag *tag, uint64_t *index_out);
/* Answers tag through io.write_done when the entry at index (proposed on
 * node_raft() in the current term, e.g. a CONF entry) applies. index must be
 * above every index waited for already. 0 or KV_ENOMEM. */
int node_wait_index(node *n, uint64_t index, uint64_t bytes, const node_tag *tag);
/* A linearizable read: answered through io.read_done once confirmed by a
 * quorum and covered by the applied index. KV_ENOTLEADER, KV_EBUSY. */
int node_read(node *n, const node_tag *tag);

int node_step(node *n, const raft_msg *m); /* raft_step */
void node_tick(node *n);                   /* raft_tick */

/* The log holds (index, term) and everything before it durably. Any time,
 * any thread that owns the node (held inside a Ready until its advance). */
void node_log_durable(node *n, uint64_t index, uint64_t term);

/* Runs Readys until raft has nothing to do. 0, or the first non-zero code
 * of a callback (the node must stop). */
int node_run(node *n);

/* Answers every waiting write and read with code (outcome unknown). */
void node_fail_all(node *n, int code);

bool node_is_leader(const node *n);
uint64_t node_leader(const node *n); /* 0: none known */
uint64_t node_applied(const node *n);
uint64_t node_pending_bytes(const node *n);
size_t node_writes_waiting(const node *n);
size_t node_reads_waiting(const node *n);

#endif /* KV_NODE_NODE_H */
