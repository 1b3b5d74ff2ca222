/* test_node_store's world, shared by its two files: the three nodes over
 * the real storage (node_store_world.c: the fake half of node_io, start,
 * crash, restart, the network) and the schedule that drives them
 * (test_node_store.c: the clients, heal, the checks, the seeds). See
 * test_node_store.c's opening comment for the whole design. */
#ifndef KV_TEST_NODE_STORE_H
#define KV_TEST_NODE_STORE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "node/node.h"
#include "storage/fs_fake.h"
#include "storage/hardstate.h"
#include "storage/sm.h"
#include "storage/snapshot.h"
#include "storage/wal.h"

#define NS_NODES 3u
#define NS_CLIENTS 6u
#define NS_NET_MAX 8192u
#define NS_PUTS_MAX 2048u
#define NS_ATTEMPTS_MAX 16384u
#define NS_PATH 512u
#define NS_UNIT_SEEDS 3u
#define NS_UNIT_STEPS 4000u
#define NS_RETRY_STEPS 150u /* a client waits this long for an answer, then retries */
#define NS_HEAL_ROUNDS 3000u
#define NS_OVERWRITE_KEYS 3u /* per client; odd sequence numbers write one of these */

/* ---- the world ------------------------------------------------------------ */

typedef struct ns_put {
    uint32_t client;
    uint64_t seq;
    char key[32];
    char val[48];
    bool acked;
    uint64_t index; /* where it was applied, by the acknowledged attempt */
} ns_put;

typedef struct ns_client {
    uint64_t session;   /* 0: not registered */
    uint64_t seq;       /* last sequence number used */
    bool busy;          /* an operation whose outcome is not known yet */
    bool reading;       /* the operation is a read of puts[put]'s key */
    size_t put;         /* the operation: puts[put], or SIZE_MAX for REGISTER */
    size_t attempt;     /* the attempt waited for, SIZE_MAX: none in flight */
    uint64_t attempt_t; /* step it was made at */
} ns_client;

typedef struct ns_attempt {
    uint32_t client;
    bool read;  /* a read of puts[put]'s key */
    size_t put; /* SIZE_MAX: REGISTER */
    uint64_t node;
    bool answered;
} ns_attempt;

struct ns_world;

typedef struct ns_node {
    uint64_t id;
    struct ns_world *w;
    char dir[NS_PATH + 16], db_dir[NS_PATH + 32], ckpt_dir[NS_PATH + 32];
    fsf *f;
    kv_fs *fs;
    wal *wl;
    hs *h;
    sm *s;
    node *nd; /* NULL: down */
    uint32_t restarts;
    bool disk_fault; /* a write or sync of its fake disk is armed to fail */
    bool has_ckpt;
    snap_meta ckpt;
    /* the sync gate and the log's completions (shared with its threads) */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool gate_open, parked;
    uint64_t issued, done, delivered;
    int wal_err;
    uint64_t dur_index, dur_term;
    /* the last apply's entries and replies, until apply_end */
    sm_entry *ae;
    sm_reply *ar;
    uint8_t **abuf;
    size_t acap, an;
    bool applying;
} ns_node;

typedef struct ns_stats {
    uint64_t steps, delivered, dropped, duplicated, ticks, syncs, crashes, power_losses, restores,
        kept, wiped, checkpoints, restarts, attempts, acked, unknown, reads, disk_faults,
        fail_stops, heal_rounds, early_applies;
} ns_stats;

typedef struct ns_world {
    uint64_t seed, rng, step;
    bool early_ack;
    pthread_t main_thread;
    char root[NS_PATH];
    kv_fs *rfs;
    ns_node n[NS_NODES + 1];
    raft_msg *net;
    size_t net_count;
    ns_client clients[NS_CLIENTS];
    ns_put *puts;
    size_t puts_count, puts_budget;
    ns_attempt *attempts;
    size_t attempts_count;
    ns_stats st;
} ns_world;

/* ---- node_store_world.c ------------------------------------------------------ */

uint64_t ns_rand(ns_world *w);
uint64_t ns_below(ns_world *w, uint64_t n);
/* node_run; a callback's error or a failed log stops the node. */
void ns_run(ns_node *n);
/* The sync step: every append so far completes and reaches the node. */
void ns_sync(ns_node *n);
void ns_crash(ns_node *n);
void ns_restart(ns_node *n);
void ns_checkpoint(ns_node *n);
ns_world *ns_new(uint64_t seed, bool early_ack, uint64_t puts_budget);
void ns_free(ns_world *w);
/* Delivers message i (drop: lost; dup: delivered and kept in flight). */
void ns_deliver(ns_world *w, size_t i, bool drop, bool dup);

#endif
