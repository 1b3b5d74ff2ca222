/*
 * The scenario harness: an in-memory cluster of kv nodes (src/node/node.h,
 * the Ready loop kvd runs, on top of src/raft/raft.h) driven one step at a
 * time by a script (script.c).
 *
 * Each scenario node owns a `node *` (node_new at start and at restart) and
 * is the fake half of its node_io:
 *   - hs_save: term and vote go to the in-memory disk, durable on return;
 *   - log_append: entries are written to the in-memory log; they become
 *     durable at once (node_log_durable from inside log_append, which the
 *     node holds until raft_advance) or, in manual-sync mode, only at an
 *     explicit sc_persist(), which then calls node_log_durable();
 *   - send: messages are copied into per-link FIFO queues (from -> to) until
 *     the script delivers or drops them. A cut link (partition) drops what
 *     is queued on it and what is sent on it while cut;
 *   - apply: an in-memory state machine, the applied NORMAL entries' data
 *     joined by ',' (volatile: rebuilt from snapshot + log on restart);
 *   - snap_chunk / snap_install: the snapshot being received, then installed;
 *   - write_done / read_done: the answers to the writes proposed with
 *     sc_propose() (node_propose, named by the script) and the reads asked
 *     with sc_read_ask() (node_read, named by a ctx number), recorded for the
 *     script's expectations;
 *   - ready_begin: tracing and the one-leader-per-term check.
 * So the order of a Ready's steps is node.c's, not the harness's. What the
 * script does on the core directly (membership, transfer, snapshot,
 * compaction) goes through node_raft(), followed by node_run().
 *
 * After every step the harness checks safety invariants: at most one leader
 * per term; every node commits the same term at each index; an entry is
 * applied only after it is locally durable; applied indexes are contiguous;
 * a write answered "done" was applied at its index with its term; a read
 * answered "ok" is covered by the applied index; every answer is given once.
 * The first violation is kept in sc_cluster.violation.
 */
#ifndef KV_TESTS_RAFT_SCENARIO_HARNESS_H
#define KV_TESTS_RAFT_SCENARIO_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node/node.h"
#include "raft.h"

/* Node ids are 1..SC_NODES_MAX. */
#define SC_NODES_MAX KV_NODES_MAX

/* Messages queued on one link. A script that lets more pile up has a bug
 * (or raft does: it should not send unboundedly without acks). */
#define SC_QUEUE_MSGS_MAX 4096u

/* Read requests remembered per node (answered or not); also the node's
 * limit of reads waiting (node_limits.reads_max), so a script that asks
 * more fails instead of losing an answer. */
#define SC_READS_MAX 64u

/* Writes remembered per cluster (sc_propose), and the length of a write's
 * name (the script's word for it). */
#define SC_WRITES_MAX 1024u
#define SC_WRITE_NAME_BYTES 32u

/* node_limits.pending_bytes_max of every node: far above what a script
 * proposes (the scripts test raft's max-uncommitted-bytes, not this). */
#define SC_PENDING_BYTES_MAX (64u * 1024u * 1024u)

/* Terms whose leader is remembered for the one-leader-per-term check. */
#define SC_TERMS_MAX 4096u

/* Delivery rounds in one sc_deliver_all() before it gives up (a livelock). */
#define SC_DELIVER_ROUNDS_MAX 10000u

typedef struct sc_entry {
    uint64_t index;
    uint64_t term;
    uint32_t type;
    char *data; /* owned, NUL-terminated copy */
    size_t len;
} sc_entry;

typedef struct sc_queue {
    raft_msg *msgs; /* owned copies (raft_msg_copy) */
    size_t count;
    size_t cap;
} sc_queue;

/* A read asked with sc_read_ask(): its answer (read_done) once answered. */
typedef struct sc_read {
    uint64_t ctx;
    uint64_t index; /* the read index it was served at (status 0) */
    uint64_t floor; /* the highest index applied anywhere when it was asked */
    int status;     /* 0: served; else the code word the client saw */
    bool answered;
} sc_read;

/* A write proposed with sc_propose(): its answer (write_done). */
typedef struct sc_write {
    char name[SC_WRITE_NAME_BYTES];
    uint64_t node;
    uint64_t index, term; /* where it was proposed */
    int code;             /* 0: done; else outcome unknown (NOTLEADER, CLOSED) */
    bool answered;
} sc_write;

struct sc_cluster;

typedef struct sc_node {
    uint64_t id;
    bool exists;
    bool up;
    bool founder;               /* bootstrapped with the cluster */
    bool manual_sync;           /* entries become durable only at sc_persist() */
    struct sc_cluster *cluster; /* the io callbacks' way back */
    node *node;                 /* while up; owned (node_new/node_free) */
    /* disk */
    raft_hard_state hs_durable; /* as hs_save last made it durable */
    sc_entry *log;              /* log[i].index == log_first + i */
    size_t log_count;
    size_t log_cap;
    uint64_t log_first;
    uint64_t durable_index; /* entries <= this are durable */
    bool has_snap;
    raft_snapshot_meta snap;
    char *snap_data; /* the snapshot's bytes: state "\0" padding */
    size_t snap_len;
    uint32_t snaps_installed; /* received from a leader */
    /* snapshot being received (volatile) */
    char *recv_data;
    size_t recv_len;
    uint64_t recv_index;
    uint64_t recv_term;
    uint64_t recv_total;
    uint32_t chunks_stored;
    /* state machine (volatile; rebuilt from snapshot + log on restart) */
    char *sm;
    size_t sm_len;
    size_t sm_cap;
    uint64_t applied;
    raft_membership membership; /* applied */
    sc_read reads[SC_READS_MAX];
    size_t reads_count;
} sc_node;

typedef struct sc_cluster {
    sc_node nodes[SC_NODES_MAX + 1]; /* by id; [0] unused */
    raft_config base;                /* options for every node (id and seed set per node) */
    raft_membership bootstrap;
    sc_queue links[SC_NODES_MAX + 1][SC_NODES_MAX + 1];
    bool cut[SC_NODES_MAX + 1][SC_NODES_MAX + 1];
    bool trace;
    uint64_t term_leader[SC_TERMS_MAX]; /* term -> leader id seen, 0 none */
    uint64_t *committed_terms;          /* index -> term committed anywhere */
    size_t committed_cap;
    uint64_t msgs_dropped;
    uint64_t applied_max;           /* the highest index applied on any node */
    sc_write writes[SC_WRITES_MAX]; /* in proposal order */
    size_t writes_count;
    char violation[256]; /* first safety violation, "" if none */
} sc_cluster;

/* Zeroes c and sets the base config to raft_config_init() defaults. */
void sc_init(sc_cluster *c);

/* Frees every node, queue and buffer. */
void sc_free(sc_cluster *c);

/* Creates founding voters 1..n with the base config. Returns 0 or a code. */
int sc_bootstrap(sc_cluster *c, uint32_t n);

/* Creates a brand-new empty node id (no bootstrap): it learns the membership
 * from a leader. Returns 0, KV_EEXIST or a code from raft_new(). */
int sc_add_node(sc_cluster *c, uint64_t id);

/* Node id's Raft core (node_raft), for what scripts do on it directly and
 * for its accessors. id must be up. */
raft *sc_raft(const sc_cluster *c, uint64_t id);

/* Runs node id's Ready loop (node_run) until it has nothing ready. */
int sc_process(sc_cluster *c, uint64_t id);

/* Proposes data as a write named name (node_propose), then processes the
 * Ready. node_propose's code (KV_ENOTLEADER, KV_EBUSY, ...), KV_ENOSPACE when
 * SC_WRITES_MAX writes were proposed already, or node_run's. */
int sc_propose(sc_cluster *c, uint64_t id, const char *name, const void *data, size_t len);

/* The last write proposed with name, or NULL. */
const sc_write *sc_write_find(const sc_cluster *c, const char *name);

/* A linearizable read named ctx (node_read), then processes the Ready.
 * node_read's code, KV_EEXIST when ctx was asked of id already, KV_ENOSPACE
 * past SC_READS_MAX, or node_run's. */
int sc_read_ask(sc_cluster *c, uint64_t id, uint64_t ctx);

/* Node id's read ctx, or NULL when never asked. */
const sc_read *sc_read_find(const sc_cluster *c, uint64_t id, uint64_t ctx);

/* Ticks node id once and processes its Ready. */
int sc_tick(sc_cluster *c, uint64_t id);

/* Delivers up to max queued messages (SIZE_MAX: all queued now) on from->to,
 * processing the receiver's Ready after each. *delivered gets the count. */
int sc_deliver(sc_cluster *c, uint64_t from, uint64_t to, size_t max, size_t *delivered);

/* Delivers on every link until all queues are empty (or rounds run out:
 * KV_EBUSY). */
int sc_deliver_all(sc_cluster *c);

/* Discards up to max queued messages on from->to; returns how many. */
size_t sc_drop(sc_cluster *c, uint64_t from, uint64_t to, size_t max);

/* Cuts or heals the link from->to (one direction); cutting drops its queue. */
void sc_cut(sc_cluster *c, uint64_t from, uint64_t to, bool cut);

/* Makes everything node id has written durable and tells the node
 * (node_log_durable); the caller then runs sc_process. */
int sc_persist(sc_cluster *c, uint64_t id);

/* Stops node id: volatile state, unsynced writes and its inbound queues are
 * lost; the writes and reads it was still waiting on are answered CLOSED
 * (the client's connection closed: outcome unknown). */
void sc_crash(sc_cluster *c, uint64_t id);

/* Crashes node id and loses its whole disk, hard state included: the
 * disaster raft cannot survive when it happens to a voter (a lost vote can
 * elect two leaders in one term). For scenarios that show why. */
void sc_wipe(sc_cluster *c, uint64_t id);

/* Starts a crashed node from its disk. Returns 0 or a code from raft_new(). */
int sc_restart(sc_cluster *c, uint64_t id);

/* Node id snapshots its state machine at its applied index, padding the
 * snapshot to pad_bytes total (to make it span several chunks). */
int sc_snapshot(sc_cluster *c, uint64_t id, size_t pad_bytes);

/* Drops node id's log entries <= index (raft_compact and the disk copy). */
int sc_compact(sc_cluster *c, uint64_t id, uint64_t index);

/* The up leader with the highest term, or 0. */
uint64_t sc_leader(const sc_cluster *c);

/* Valid node: 1 <= id <= SC_NODES_MAX and exists. */
bool sc_node_valid(const sc_cluster *c, uint64_t id);

/* Prints one message / a node's log / a one-line status to stdout. */
void sc_print_msg(const raft_msg *m);
void sc_print_log(const sc_cluster *c, uint64_t id);
void sc_print_status(const sc_cluster *c, uint64_t id);

const char *sc_msg_type_name(uint32_t type);
const char *sc_role_name(raft_role role);

#endif /* KV_TESTS_RAFT_SCENARIO_HARNESS_H */
