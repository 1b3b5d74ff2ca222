/*
 * tests/node's fake half of node_io and its cluster helpers, for test_node.c.
 *
 * THE FAKE. Each of 1..3 nodes has
 *   - a disk: hard state (durable when hs_save returns) and a log written by
 *     log_append with a durable point; by default an append is durable at
 *     once (node_log_durable from inside log_append, which the node must
 *     hold until raft_advance); in manual-sync mode only fk_sync() makes it
 *     durable;
 *   - a snapshot (durable): the applied entries 1..index, taken by
 *     fk_snapshot, read by raft for a lagging follower, which stores its
 *     chunks (volatile) and installs it as both log and state machine;
 *   - a volatile state machine: the entries applied, in order;
 *   - an outbox: every message sent goes into one network queue (copied),
 *     delivered by hand (fk_deliver_all) or dropped on a cut link;
 *   - a countdown fault: the Nth call of one callback (hs_save,
 *     snap_install, snap_chunk, send, log_append, apply) returns FK_EFAULT; node_run must return it
 * and the node is then crashed (fail-stop, as kvd exits);
 *   - a crash that loses what was not durable (the log after the durable
 *     point, the state machine, the messages on their way to it) and a
 *     restart from what is left (node_new from the disk).
 *
 * THE CHECKS, made by the fake as the node calls it (so every test makes
 * them): no message carries a term or a vote the fake disk does not hold
 * durably; no callback of a Ready after one that failed; entries applied in
 * order, only once locally durable; node_log_durable from inside log_append
 * does not reach raft before raft_advance; a write answered "done" only
 * after its own entry (index, term, data) is applied, in index order,
 * exactly once; a read served only at an applied index, not below any write
 * acknowledged before it was asked, and in the term it was asked in.
 */
#ifndef KV_TESTS_NODE_NODE_FAKE_H
#define KV_TESTS_NODE_NODE_FAKE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kv/errors.h"
#include "node/node.h"

#define FK_NODES_MAX 3u
#define FK_LOG_MAX 1024u                          /* entries per node in one test */
#define FK_NET_MAX 4096u                          /* messages in flight */
#define FK_WRITES_MAX 256u                        /* writes per test */
#define FK_READS_MAX 64u                          /* reads per test */
#define FK_DATA_BYTES (RAFT_CONF_BYTES_MAX + 32u) /* a conf entry or a test write */
#define FK_ROUNDS_MAX 2000u                       /* delivery rounds before a livelock */
#define FK_EFAULT KV_EIO                          /* what an injected fault returns */
#define FK_FAULT_NTH_MAX 400u                     /* calls of one callback in one run */

typedef enum fk_call {
    FK_NONE,
    FK_HS_SAVE,
    FK_SNAP_INSTALL,
    FK_SNAP_CHUNK,
    FK_SEND,
    FK_LOG_APPEND,
    FK_APPLY
} fk_call;

typedef struct fk_entry {
    uint64_t index, term;
    uint32_t type;
    uint8_t data[FK_DATA_BYTES];
    size_t len;
} fk_entry;

typedef struct fk_write {
    char data[16];
    uint64_t node, index, term;
    bool answered;
    int code;
} fk_write;

typedef struct fk_read {
    uint64_t node, term, floor; /* floor: highest acknowledged write when asked */
    bool answered;
    int code;
    uint64_t index;
} fk_read;

struct fk_cluster;

typedef struct fk_node {
    uint64_t id;
    struct fk_cluster *c;
    node *nd; /* NULL: down */
    uint32_t restarts;
    /* disk */
    raft_hard_state hs;
    fk_entry log[FK_LOG_MAX]; /* log[i].index == i + 1 */
    uint64_t last, durable;
    bool manual_sync;
    bool has_snap; /* the snapshot: the entries 1..snap.index, as applied */
    raft_snapshot_meta snap;
    uint8_t *snap_data;
    size_t snap_len;
    /* the snapshot being received (volatile) */
    uint8_t *recv;
    size_t recv_len;
    uint64_t recv_index, recv_term;
    /* state machine (volatile) */
    fk_entry sm[FK_LOG_MAX]; /* sm[i]: the entry applied at index i + 1 */
    uint64_t applied;
    raft_membership membership;
    uint64_t answered_index; /* last write answered by this incarnation */
    /* one fault: the fail_nth-th call of fail_call fails */
    fk_call fail_call;
    uint32_t fail_nth, calls;
    bool faulted; /* a callback failed in the current Ready */
    /* observations */
    uint64_t applied_at_begin, raft_applied_at_begin, persisted_at_begin;
    uint64_t msgs_sent, hs_saves, held_checks;
} fk_node;

typedef struct fk_cluster {
    uint32_t count;
    fk_node n[FK_NODES_MAX + 1];
    raft_msg net[FK_NET_MAX];
    size_t net_count;
    bool cut[FK_NODES_MAX + 1][FK_NODES_MAX + 1];
    fk_write writes[FK_WRITES_MAX];
    size_t writes_count;
    fk_read reads[FK_READS_MAX];
    size_t reads_count;
    uint64_t acked_max; /* highest index of a write answered done */
    bool pre_vote, check_quorum;
    node_limits lim;
    uint32_t faults_fired;
} fk_cluster;

/* ---- the cluster: start, crash, restart, run (node_fake.c) ---------------------- */

fk_cluster *fk_new(uint32_t count, bool pre_vote, bool check_quorum);
void fk_crash(fk_cluster *c, uint64_t id);
void fk_restart(fk_cluster *c, uint64_t id);
void fk_free(fk_cluster *c);
int fk_run(fk_cluster *c, uint64_t id);
void fk_sync(fk_cluster *c, uint64_t id);
void fk_isolate(fk_cluster *c, uint64_t id, bool cut);
void fk_deliver_all(fk_cluster *c);
void fk_tick_all(fk_cluster *c, uint32_t ticks);
void fk_restart_down(fk_cluster *c);
uint64_t fk_leader(const fk_cluster *c);
void fk_elect(fk_cluster *c, uint64_t id);
int fk_propose(fk_cluster *c, uint64_t id, const char *data);
int fk_ask_read(fk_cluster *c, uint64_t id, size_t *slot);
void fk_check_acked(const fk_cluster *c);
void fk_snapshot(fk_cluster *c, uint64_t id);

#endif
