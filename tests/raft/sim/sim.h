/*
 * The deterministic simulator of src/raft: the shared inside of raft-sim.
 *
 * One run (one seed) is a world: up to SIM_SLOTS_MAX nodes of the real raft
 * core, a fake network, a fake disk per node, simulated clients, a fault
 * injector (the nemesis) and the invariant checker, all driven by one event
 * queue in virtual time and one PRNG. No threads, no clock: the same seed
 * gives the same trace byte for byte.
 *
 * Each node is src/node (node.h) driving the core: kvd's own Ready loop, with
 * the write and read queues and their durability asserts. The simulator is
 * the world behind its node_io vtable.
 *
 * Files: sim_run.c (world, event loop, heal and liveness), sim_node.c (node
 * life: start, crash, restart, stop; running src/node; own snapshots),
 * sim_io.c (the fake half of node_io: hard state, log writes and their
 * fsyncs, messages, snapshot chunks and installs, apply, answers),
 * sim_disk.c (volatile/durable storage), sim_net.c (messages and
 * partitions), sim_client.c (clients and history), sim_nemesis.c (faults,
 * membership, transfers), sim_check.c (invariants), sim_bench.c (--bench:
 * the bare core, without src/node), sim_main.c (CLI).
 */
#ifndef KV_SIM_H
#define KV_SIM_H

#include "node/node.h"
#include "raft/raft.h"
#include "sim_hist.h"
#include "sim_queue.h"
#include "sim_rand.h"
#include "sim_sm.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- options and results ------------------------------------------------ */

enum sim_control {
    SIM_CTRL_NONE = 0,
    SIM_CTRL_UNSAFE_DISK, /* log writes reported durable at once, hard state left volatile:
                             both lost at a crash */
    SIM_CTRL_STALE_READS, /* a leader answers reads from its state, no ReadIndex */
};

#define SIM_STEPS_DEFAULT 20000u
#define SIM_STEPS_MAX 100000000u

typedef struct sim_opts {
    uint32_t nodes; /* founding voters: 3 or 5 */
    uint64_t steps; /* events processed in the fault phase */
    bool trace;
    bool lease_read; /* --lease-read: the nodes serve reads on a leader lease */
    enum sim_control control;
} sim_opts;

typedef struct sim_stats {
    uint64_t elections;          /* distinct (term, leader) seen */
    uint64_t commits;            /* log indexes committed */
    uint64_t snapshots;          /* snapshots taken plus snapshots installed */
    uint64_t membership_changes; /* CONF entries committed */
} sim_stats;

const char *sim_control_name(enum sim_control c);

/* Runs one seed. Returns 0 when every invariant held, -1 otherwise with
 * "invariant=<name> <detail>" in why. */
int sim_run(const sim_opts *o, uint64_t seed, sim_stats *st, char *why, size_t why_len);

/* --bench: returns 0, or -1 when the cluster failed to commit. */
int sim_bench(uint64_t entries);

/* ---- sizes and timing (virtual time units) ----------------------------- */

#define SIM_SLOTS_MAX 7u                        /* founding voters plus two for joining nodes */
#define SIM_CLIENTS 4u                          /* clients issuing register operations */
#define SIM_PROBE_CLIENT (SIM_CLIENTS_MAX - 1u) /* the liveness probe's id */
#define SIM_ENT_BYTES_MAX 128u                  /* a sim command or a CONF entry */
#define SIM_SNAPS_KEEP 3u                       /* snapshots a node keeps readable */
#define SIM_ELECTION_TICKS 10u
#define SIM_HEARTBEAT_TICKS 2u
#define SIM_TICK_BASE 100u /* nominal tick period; skew spreads it */

_Static_assert(SIM_CLIENTS < SIM_PROBE_CLIENT, "the probe has its own session");
_Static_assert(SIM_SLOTS_MAX <= KV_NODES_MAX, "slots are members");

/* Shipped snapshots are the serialized state followed by snap_pad filler
 * bytes (never stored, checked on receipt): with a pad over
 * KV_SNAPSHOT_CHUNK_BYTES a transfer takes several chunks, some of them lost. */
#define SIM_PAD_BYTES_MAX (3u * KV_SNAPSHOT_CHUNK_BYTES)
/* Filler byte at offset o of snapshot s: table[o] ^ (uint8_t)s. */
const uint8_t *sim_pad_table(void); /* SIM_SM_BYTES + SIM_PAD_BYTES_MAX bytes */

/* ---- disk ---------------------------------------------------------------- */

typedef struct sim_ent {
    uint64_t index;
    uint64_t term;
    uint32_t type;
    uint32_t len;
    uint64_t hash;  /* of (term, type, data) */
    uint64_t chain; /* hash of this entry and every one before it */
    uint8_t data[SIM_ENT_BYTES_MAX];
} sim_ent;

/* Entries [first, first + count). */
typedef struct sim_log {
    sim_ent *e;
    size_t count;
    size_t cap;
    uint64_t first;
} sim_log;

typedef struct sim_snap {
    raft_snapshot_meta meta;
    uint8_t data[SIM_SM_BYTES];
} sim_snap;

/* What one copy of the disk holds: the durable one or the volatile one
 * (everything written, synced or not). */
typedef struct sim_store {
    raft_hard_state hs;
    bool has_snap;
    sim_snap snap;
    sim_log log;
} sim_store;

/* SIM_DOP_HS only under --control unsafe-disk: the hard state is otherwise
 * durable on return (sim_disk_save_hs). */
enum sim_op_kind { SIM_DOP_HS = 1, SIM_DOP_ENTRIES };

/* One write not yet synced. */
typedef struct sim_dop {
    uint64_t id;
    enum sim_op_kind kind;
    raft_hard_state hs;
    sim_ent *ents; /* ENTRIES: owned copies */
    size_t count;
} sim_dop;

typedef struct sim_disk {
    sim_store dur;
    sim_store vol;
    sim_dop *ops; /* pending writes, in order */
    size_t ops_count, ops_cap;
    uint64_t write_id_next; /* ids of writes: 1, 2, ... */
    uint64_t durable_id;    /* writes <= this are durable */
    uint64_t fsync_time_last;
    /* Snapshot being received (volatile; a restart starts the transfer over). */
    uint64_t in_index, in_term, in_total;
    uint8_t in_data[SIM_SM_BYTES];
    uint64_t in_got;
} sim_disk;

/* ---- network --------------------------------------------------------------- */

typedef struct sim_packet {
    uint32_t from_slot;
    uint64_t to_id;
    raft_msg m; /* owned copy */
} sim_packet;

typedef struct sim_net {
    bool cut[SIM_SLOTS_MAX][SIM_SLOTS_MAX]; /* cut[a][b]: a's messages to b are lost */
    uint32_t drop_per_mille;
    uint32_t dup_per_mille;
    uint64_t delay_min, delay_max;
    uint32_t slow_per_mille; /* a message takes up to 10 x delay_max */
} sim_net;

/* ---- nodes ------------------------------------------------------------------ */

/* What io.apply did with one committed entry, kept until apply_end for the
 * answers (io.write_done names the entry by its position). */
typedef struct sim_applied {
    uint64_t index, term;
    bool cmd; /* a client command (c, r valid) */
    sim_cmd c;
    sim_reply r;
} sim_applied;

typedef struct sim_world sim_world;

typedef struct sim_node {
    sim_world *w; /* node_io's ctx is the sim_node: the way back */
    bool used;    /* the slot holds a node (up or down) */
    bool up;
    bool founding;
    uint32_t slot;
    uint64_t id;
    uint32_t incarnation; /* bumped at each crash: stale events are ignored */
    node *nd;             /* src/node and the core in it (node_raft); NULL while down */
    uint64_t tick_period;
    uint64_t created_time;
    sim_disk disk;
    sim_sm sm;
    uint64_t applied, applied_term;
    raft_membership applied_conf;
    sim_snap snaps[SIM_SNAPS_KEEP]; /* readable snapshots, oldest first */
    uint32_t snaps_count;
    uint64_t snap_threshold;
    uint64_t fsync_max; /* this disk's fsync latency bound */
    uint64_t snap_pad;  /* filler bytes after the state in shipped snapshots */
    uint64_t persisted_reported, persisted_term; /* last node_log_durable */
    sim_applied *applied_batch;                  /* the last io.apply's entries */
    size_t applied_batch_count, applied_batch_cap;
    uint32_t readys;           /* in this sim_node_ready: bounded */
    bool commit_after_install; /* ready_begin left the commit check to snap_install */
    uint64_t commit_to_check;
    bool member_seen; /* was in a committed membership: gone from it = removed */
    raft_role role;
    uint64_t term;
} sim_node;

/* ---- clients ----------------------------------------------------------------- */

enum sim_cstate {
    SIM_C_IDLE = 0,   /* next op at its event */
    SIM_C_SUBMIT,     /* looking for a leader to take the op */
    SIM_C_WAIT_APPLY, /* node_propose on node slot; waits for write_done */
    SIM_C_WAIT_READ,  /* node_read on node slot; waits for read_done */
};

typedef struct sim_client {
    uint32_t id;
    enum sim_cstate state;
    sim_cmd cmd;
    bool recorded; /* in the history (proposed or asked at least once) */
    size_t hist_idx;
    uint32_t slot; /* the node it waits on */
    uint64_t deadline;
    uint32_t tries;   /* proposals or reads asked of a leader */
    uint32_t submits; /* refusals in a row */
    uint64_t seq_next;
    uint64_t epoch; /* bumped on every state change: stale events are ignored */
    uint32_t guess; /* slot it tries next */
} sim_client;

/* ---- the invariant checker's global record -------------------------------- */

typedef struct sim_chain_slot {
    uint64_t index, term, chain;
} sim_chain_slot;

typedef struct sim_idx_rec {
    uint64_t term;
    uint64_t hash;    /* entry hash */
    uint64_t chain;   /* 0: not known */
    uint64_t sm_hash; /* state machine after applying it; 0: not known */
    bool committed;
    bool applied;
    bool acked; /* a client was told it committed */
} sim_idx_rec;

typedef struct sim_checker {
    sim_chain_slot *chains; /* open addressing by (index, term) */
    size_t chains_cap, chains_count;
    sim_idx_rec *idx; /* by log index */
    size_t idx_cap;
    uint64_t commit_max;   /* highest index known committed */
    uint64_t acked_max;    /* highest index acknowledged to a client */
    uint64_t *term_leader; /* by term: the leader's id, 0 none */
    size_t term_cap;
    uint64_t *commit_by_term; /* by term: highest index a node learned committed in it */
    size_t commit_by_term_cap;
} sim_checker;

/* ---- the world --------------------------------------------------------------- */

struct sim_world {
    sim_opts o;
    uint64_t seed;
    sim_rand rnd;
    sim_queue q;
    uint64_t now;
    uint64_t steps_done;
    bool healing; /* faults stopped: liveness phase */
    bool failed;
    char *why;
    size_t why_len;
    sim_stats st;
    sim_node nodes[SIM_SLOTS_MAX];
    uint32_t slots; /* slots in use for this run: nodes + 2 */
    uint64_t id_next;
    sim_net net;
    sim_client clients[SIM_CLIENTS + 1]; /* the last is the liveness probe */
    sim_hist hist;
    sim_checker ck;
    uint64_t fsync_max;  /* bound of the disks' fsync latency bounds */
    uint64_t snap_pad;   /* a quarter of the runs ship multi-chunk snapshots */
    uint64_t conf_index; /* the newest CONF entry applied anywhere, and its membership */
    raft_membership conf;
    bool probe_done;
    uint32_t probe_slot; /* the node that applied the probe's write */
    uint64_t probe_seq;
    uint64_t value_next; /* unique register values */
};

/* Trace line (only with --trace): "t=<now> <text>". */
void sim_trace(sim_world *w, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
#define SIM_TRACE(w, ...)                                                                          \
    do {                                                                                           \
        if ((w)->o.trace)                                                                          \
            sim_trace((w), __VA_ARGS__);                                                           \
    } while (0)

/* Records the first failure: "invariant=<name> <detail>". */
void sim_fail(sim_world *w, const char *invariant, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* sim_node.c */
void sim_node_start(sim_world *w, uint32_t slot, uint64_t id, bool founding);
void sim_node_crash(sim_world *w, uint32_t slot);
void sim_node_restart(sim_world *w, uint32_t slot);
void sim_node_stop(sim_world *w, uint32_t slot); /* removed: frees the slot */
void sim_node_tick(sim_world *w, uint32_t slot);
void sim_node_step(sim_world *w, uint32_t slot, const raft_msg *m);
void sim_node_fsync_done(sim_world *w, uint32_t slot, uint64_t write_id);
void sim_node_ready(sim_world *w, uint32_t slot);      /* node_run, then maybe a snapshot */
int sim_node_slot_of(const sim_world *w, uint64_t id); /* -1: none */
uint32_t sim_node_ev_a(const sim_node *n);             /* slot + incarnation for events */
sim_node *sim_node_ev(sim_world *w, uint32_t a);       /* NULL when stale */

void sim_node_keep_snap(sim_node *n, const sim_snap *s);
/* The core inside the node (a const accessor's argument, or what src/node
 * does not wrap: conf changes, transfers, snapshots, compaction). */
static inline raft *sim_raft(const sim_node *n) {
    return node_raft(n->nd);
}

/* sim_io.c */
void sim_io_init(sim_node *n, node_io *io);
/* The disk's log holds what the fsync up to write_id made durable: tell
 * the node (not under --control unsafe-disk, which told it at the write). */
void sim_io_fsync_done(sim_node *n, uint64_t write_id);

/* sim_run.c */
bool sim_is_member(const raft_membership *m, uint64_t id);

/* sim_disk.c */
void sim_disk_init(sim_disk *d);
void sim_disk_free(sim_disk *d);
/* Term and vote durable on return (kvd's hard-state file, fsynced apart from
 * the log's pending writes). */
void sim_disk_save_hs(sim_disk *d, const raft_hard_state *hs);
/* --control unsafe-disk: volatile until the fsync of the returned write id. */
uint64_t sim_disk_write_hs(sim_disk *d, const raft_hard_state *hs);
/* Appends (after truncating from ents[0].index); fills hash and chain of the
 * volatile copies. Returns the write id, 0 when nothing was written. */
uint64_t sim_disk_write_entries(sim_world *w, sim_node *n, const raft_entry *ents, size_t count);
/* Makes writes <= id durable. */
void sim_disk_sync_to(sim_disk *d, uint64_t id);
void sim_disk_crash(sim_disk *d);
/* Installs a snapshot durably (syncs everything first); empties the log. */
void sim_disk_install(sim_disk *d, const sim_snap *s);
/* Own snapshot, durable at once; drops log entries <= its index. */
void sim_disk_snapshot(sim_disk *d, const sim_snap *s);
const sim_ent *sim_log_get(const sim_log *l, uint64_t index); /* NULL: not there */
uint64_t sim_log_last(const sim_log *l);                      /* first - 1 when empty */
uint64_t sim_ent_hash(uint64_t term, uint32_t type, const void *data, size_t len);

/* sim_net.c */
void sim_net_init(sim_world *w);
void sim_net_send(sim_world *w, uint32_t from_slot, const raft_msg *m);
void sim_net_deliver(sim_world *w, sim_packet *p);
void sim_net_packet_free(sim_packet *p);
void sim_net_heal(sim_world *w);
const char *sim_msg_name(uint32_t type);

/* sim_client.c */
void sim_clients_init(sim_world *w);
void sim_client_event(sim_world *w, uint32_t c, uint64_t epoch);
/* src/node's answers (io.write_done, io.read_done) to the client in t.
 * A write's r: its entry's result (code 0), NULL otherwise (outcome
 * unknown). A read with code 0 is served from node slot's state machine
 * now. leader_hint: where to retry (0: anywhere). */
void sim_client_write_done(sim_world *w, uint32_t slot, const node_tag *t, const sim_reply *r,
                           int code, uint64_t leader_hint);
void sim_client_read_done(sim_world *w, uint32_t slot, const node_tag *t, int code,
                          uint64_t leader_hint);
void sim_clients_finish(sim_world *w); /* end of run: open ops become unknown */
void sim_probe_start(sim_world *w);    /* one write that must commit */

/* sim_nemesis.c */
/* a = 0: the next fault; a = slot + 1: restart that slot if still incarnation b. */
void sim_nemesis_event(sim_world *w, uint32_t a, uint64_t b);
int sim_leader_slot(const sim_world *w); /* a live leader with the highest term, -1: none */

/* sim_check.c */
void sim_check_init(sim_checker *ck);
void sim_check_free(sim_checker *ck);
void sim_check_entry_written(sim_world *w, sim_node *n, const sim_ent *e);
uint64_t sim_check_chain_of(sim_world *w, uint64_t index, uint64_t term); /* 0: unknown */
void sim_check_truncate(sim_world *w, sim_node *n, uint64_t from, const char *how);
void sim_check_commit(sim_world *w, sim_node *n, uint64_t commit);
void sim_check_apply(sim_world *w, sim_node *n, const raft_entry *e, uint64_t sm_hash);
void sim_check_ack(sim_world *w, uint64_t index, uint64_t term);
void sim_check_snapshot(sim_world *w, sim_node *n, const sim_snap *s, const char *what);
void sim_check_roles(sim_world *w); /* after each step: leaders per term, completeness */
void sim_check_final(sim_world *w);

#endif
