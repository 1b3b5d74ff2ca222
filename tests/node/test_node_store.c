/*
 * src/node's Ready loop over the real storage, under a seeded fault
 * schedule: three nodes in one process, each a node (node.h) over a half of
 * node_io built on
 *   - the real write-ahead log (wal.h) and hard state (hardstate.h), on one
 *     fake file layer (fs_fake.h) per node: a crash keeps what was synced
 *     and a random subset of the pages written since (FSF_CRASH_PAGES), or
 *     a prefix of them (FSF_CRASH_TORN);
 *   - the real RocksDB state machine (sm.h) in a temporary directory, fed
 *     the entries as kvd feeds it (src/server/server_io.c): client commands
 *     (kv.Command: REGISTER, then PUTs in the session with their sequence
 *     numbers), no-ops, and the membership for CONF entries;
 *   - an in-memory network: messages delivered in a seeded random order,
 *     some dropped, some delivered twice.
 * A restart is kvd's start-up: store_open (src/server/store.c: the log,
 * the state machine, their agreement, the entries to replay), then hs_load
 * checked against the log's last term, then node_new.
 *
 * THE LOG'S THREADS, made deterministic. The log writes and syncs on its own
 * threads; its completions are recorded under a mutex (as server_io.c's
 * on_wal_done) and handed to node_log_durable by the test's thread only at a
 * "sync" step of the schedule. Each node's fake disk has a sync gate (the
 * fsf sync hook): the log's storage thread blocks at the start of every file
 * sync until the schedule opens the gate, so after each append the test
 * waits until that thread is parked at the gate (its batch written, not
 * synced) and the state of the disk at a crash is a function of the seed.
 * A sync step opens the gate until every append so far has completed.
 *
 * A CRASH of a node: its waiting writes are answered CLOSED (the clients'
 * connections drop); the fake disk dies (fsf_die_at) so the parked sync and
 * everything queued fail, the log is closed, and fsf_crash loses what was
 * not synced. RocksDB runs with its own WAL off, so after a crash it holds
 * the state of its last flush: the test takes checkpoints (snap_create, a
 * flush) at random steps, and a crash puts the newest one back
 * (snap_restore) or, without one, an empty db -- or, one time in three,
 * keeps the state machine whole (a crash right after a flush). A power loss
 * crashes every node at once. A disk fault arms one of a node's next few
 * writes or syncs to fail (fsf_fail_write, fsf_fail_sync): the log refuses
 * every later append, or hs_save fails inside a Ready, and the node
 * fail-stops as kvd does (its I/O exit): the test crashes it and restarts it
 * later from what its disk holds.
 *
 * THE CHECKS. As it runs: node_run fails only where a disk fault was armed;
 * an entry is applied only once the log holds it durably (wal_last_index
 * reads durable entries only); the state machine's reply to a client's
 * current attempt is OK (a lost session shows here); start-up succeeds on
 * whatever a crash left (store_open refuses a state machine past its log);
 * a linearizable read (node_read, then sm_get as kvd serves it) sees exactly
 * the last write its client had acknowledged to that key. After the run the
 * cluster heals (every node up, nothing dropped) until every client has had
 * every write acknowledged (an unknown outcome is retried with the same
 * session and sequence, as libkvclient does) and the three state machines
 * reach the leader's commit index; then every key holds the value of the
 * last write acknowledged for it on every node (half the keys are written
 * once, so a lost acknowledged write shows), and the three sm_hash agree.
 *
 * RUNNING. The unit test runs NS_UNIT_SEEDS seeds of NS_UNIT_STEPS steps.
 *   KV_NODE_STORE_SEED=S       replay seed S alone (printed by every run)
 *   KV_NODE_STORE_SEEDS=N      N seeds from S (or 1): the longer run
 *   KV_NODE_STORE_STEPS=K      steps per seed
 *   KV_NODE_STORE_TRACE=1      a line of each node's term, commit, last and
 *                              applied index every 100 steps
 *   KV_NODE_STORE_EARLY_ACK=1  the control: appends reported durable at once
 *                              (node_log_durable inside log_append, before
 *                              the fdatasync), the local "applied only once
 *                              durable" check off: the checks above must
 *                              catch the writes lost at crashes (most seeds
 *                              fail; of the unit seeds, 2 and 3).
 */
#include <check.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "common/logging.h"
#include "kv/errors.h"
#include "node/node.h"
#include "proto/kv.pb-c.h"
#include "server/store.h"
#include "storage/datadir.h"
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

static uint64_t ns_rand(ns_world *w) { /* splitmix64 */
    uint64_t z = (w->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t ns_below(ns_world *w, uint64_t n) {
    return ns_rand(w) % n;
}

/* ---- the sync gate and the log's completions -------------------------------- */

/* The fsf sync hook: the log's threads wait at the gate; the test's own
 * syncs (hs_save, wal_open) pass. */
static void ns_hook(void *arg) {
    ns_node *n = arg;
    if (pthread_equal(pthread_self(), n->w->main_thread))
        return;
    pthread_mutex_lock(&n->mu);
    n->parked = true;
    pthread_cond_broadcast(&n->cv);
    while (!n->gate_open)
        pthread_cond_wait(&n->cv, &n->mu);
    n->parked = false;
    pthread_mutex_unlock(&n->mu);
}

typedef struct ns_done_arg {
    ns_node *n;
    uint64_t index, term;
} ns_done_arg;

/* On one of the log's threads: recorded for the test's thread (as
 * server_io.c's on_wal_done; callbacks come in queue order, the latest wins). */
static void ns_wal_done(void *arg, int status) {
    ns_done_arg *a = arg;
    ns_node *n = a->n;
    pthread_mutex_lock(&n->mu);
    if (status != 0 && n->wal_err == 0)
        n->wal_err = status;
    if (status == 0) {
        n->dur_index = a->index;
        n->dur_term = a->term;
    }
    n->done++;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    free(a);
}

/* The log is quiet: its storage thread is parked at the gate with its batch
 * written, or every append completed. */
static void ns_wait_quiet(ns_node *n) {
    pthread_mutex_lock(&n->mu);
    while (!n->parked && n->done < n->issued)
        pthread_cond_wait(&n->cv, &n->mu);
    pthread_mutex_unlock(&n->mu);
}

static void ns_crash(ns_node *n);

/* A disk error (an armed fault fired): the node stops, as kvd exits with
 * its I/O code, and its machine goes down with what it had not synced. */
static void ns_fail_stop(ns_node *n, int rc) {
    ck_assert_msg(n->disk_fault, "seed %" PRIu64 " step %" PRIu64 ": node %" PRIu64 ": %s",
                  n->w->seed, n->w->step, n->id, kv_strerror(rc));
    ck_assert_int_eq(rc, KV_EIO);
    n->w->st.fail_stops++;
    ns_crash(n);
}

/* node_run; a callback's error or a failed log stops the node. */
static void ns_run(ns_node *n) {
    if (n->nd == NULL)
        return;
    int rc = node_run(n->nd);
    pthread_mutex_lock(&n->mu);
    int err = n->wal_err;
    pthread_mutex_unlock(&n->mu);
    if (rc != 0 || err != 0)
        ns_fail_stop(n, rc != 0 ? rc : err);
}

/* The sync step: the gate opens until every append so far completed; their
 * durability then reaches the node. */
static void ns_sync(ns_node *n) {
    pthread_mutex_lock(&n->mu);
    n->gate_open = true;
    pthread_cond_broadcast(&n->cv);
    while (n->done < n->issued)
        pthread_cond_wait(&n->cv, &n->mu);
    n->gate_open = false;
    int err = n->wal_err;
    uint64_t done = n->done, di = n->dur_index, dt = n->dur_term;
    pthread_mutex_unlock(&n->mu);
    n->w->st.syncs++;
    if (err != 0 && n->nd != NULL) {
        ns_fail_stop(n, err);
        return;
    }
    if (done > n->delivered && n->nd != NULL) {
        n->delivered = done;
        node_log_durable(n->nd, di, dt);
        ns_run(n);
    }
}

/* ---- the node_io half ------------------------------------------------------- */

static int ns_hs_save(void *ctx, const raft_hard_state *rhs) {
    ns_node *n = ctx;
    hs_state st = {.term = rhs->term, .vote = rhs->vote, .commit = rhs->commit};
    return hs_save(n->h, &st); /* an error stops the node (ns_run) */
}

static int ns_snap_install(void *ctx, const raft_snapshot_meta *meta) {
    (void)ctx;
    (void)meta;
    ck_abort_msg("no snapshot is ever sent: the logs are never compacted");
    return KV_EINVAL;
}

static int ns_snap_chunk(void *ctx, const raft_snapshot_chunk *ch) {
    (void)ctx;
    (void)ch;
    ck_abort_msg("no snapshot is ever sent: the logs are never compacted");
    return KV_EINVAL;
}

static int ns_send(void *ctx, const raft_msg *msgs, size_t count) {
    ns_node *n = ctx;
    ns_world *w = n->w;
    for (size_t i = 0; i < count; i++) {
        ck_assert_uint_lt(w->net_count, NS_NET_MAX);
        ck_assert_int_eq(raft_msg_copy(&w->net[w->net_count++], &msgs[i]), 0);
    }
    return 0;
}

static int ns_log_append(void *ctx, const raft_entry *e, size_t count) {
    ns_node *n = ctx;
    wal_entry *we = calloc(count, sizeof(*we));
    ns_done_arg *a = malloc(sizeof(*a));
    ck_assert(we != NULL && a != NULL);
    for (size_t i = 0; i < count; i++)
        we[i] = (wal_entry){.index = e[i].index,
                            .term = e[i].term,
                            .type = (uint8_t)e[i].type,
                            .len = (uint32_t)e[i].len,
                            .data = e[i].data};
    *a = (ns_done_arg){.n = n, .index = e[count - 1].index, .term = e[count - 1].term};
    pthread_mutex_lock(&n->mu);
    n->issued++;
    pthread_mutex_unlock(&n->mu);
    int rc = wal_append(n->wl, we, count, ns_wal_done, a);
    free(we);
    if (rc != 0) { /* the log failed earlier: the node stops (ns_run) */
        ck_assert_msg(rc == KV_EIO, "seed %" PRIu64 ": node %" PRIu64 " wal_append: %s", n->w->seed,
                      n->id, kv_strerror(rc));
        pthread_mutex_lock(&n->mu);
        n->issued--;
        pthread_mutex_unlock(&n->mu);
        free(a);
        return rc;
    }
    ns_wait_quiet(n);
    if (n->w->early_ack) /* the control: durable before the log said so */
        node_log_durable(n->nd, e[count - 1].index, e[count - 1].term);
    return 0;
}

static void ns_apply_reserve(ns_node *n, size_t count) {
    if (count <= n->acap)
        return;
    free(n->ae);
    free(n->ar);
    free(n->abuf);
    n->ae = calloc(count, sizeof(*n->ae));
    n->ar = calloc(count, sizeof(*n->ar));
    n->abuf = calloc(count, sizeof(*n->abuf));
    ck_assert(n->ae != NULL && n->ar != NULL && n->abuf != NULL);
    n->acap = count;
}

/* A CONF entry as kvd stores it: the members after it, as a kv.Membership. */
static void ns_membership(const raft_entry *e, uint8_t **buf, size_t *len) {
    raft_conf_op op;
    uint64_t node_id;
    raft_membership rm;
    ck_assert_int_eq(raft_conf_decode(e->data, e->len, &op, &node_id, &rm), 0);
    Kv__Member mem[2 * KV_NODES_MAX], *ptrs[2 * KV_NODES_MAX];
    char names[2 * KV_NODES_MAX][24];
    size_t k = 0;
    for (uint32_t i = 0; i < rm.voters_count + rm.learners_count; i++, k++) {
        bool learner = i >= rm.voters_count;
        kv__member__init(&mem[k]);
        mem[k].id = learner ? rm.learners[i - rm.voters_count] : rm.voters[i];
        snprintf(names[k], sizeof names[k], "n%" PRIu64, mem[k].id);
        mem[k].name = names[k];
        mem[k].address = (char *)"";
        mem[k].learner = learner;
        ptrs[k] = &mem[k];
    }
    Kv__Membership m = KV__MEMBERSHIP__INIT;
    m.members = ptrs;
    m.n_members = k;
    m.index = e->index;
    *len = kv__membership__get_packed_size(&m);
    *buf = malloc(*len ? *len : 1);
    ck_assert_ptr_nonnull(*buf);
    kv__membership__pack(&m, *buf);
}

static int ns_apply(void *ctx, const raft_entry *e, size_t count, const raft_membership *m) {
    ns_node *n = ctx;
    (void)m;
    ck_assert(!n->applying && count > 0);
    uint64_t durable = wal_last_index(n->wl);
    if (e[count - 1].index > durable) {
        n->w->st.early_applies++;
        ck_assert_msg(n->w->early_ack,
                      "seed %" PRIu64 ": node %" PRIu64 " applies %" PRIu64
                      " but its log holds %" PRIu64 " durably",
                      n->w->seed, n->id, e[count - 1].index, durable);
    }
    ns_apply_reserve(n, count);
    for (size_t i = 0; i < count; i++) {
        sm_entry *x = &n->ae[i];
        *x = (sm_entry){.index = e[i].index,
                        .term = e[i].term,
                        .type = SM_ENTRY_COMMAND,
                        .payload = e[i].data,
                        .len = e[i].len};
        n->abuf[i] = NULL;
        if (e[i].type == RAFT_ENTRY_NOOP) {
            x->type = SM_ENTRY_NOOP;
        } else if (e[i].type == RAFT_ENTRY_CONF) {
            ns_membership(&e[i], &n->abuf[i], &x->len);
            x->type = SM_ENTRY_MEMBERSHIP;
            x->payload = n->abuf[i];
        }
    }
    memset(n->ar, 0, count * sizeof(*n->ar));
    int rc = sm_apply(n->s, n->ae, count, n->ar);
    ck_assert_msg(rc == 0,
                  "seed %" PRIu64 ": node %" PRIu64 " sm_apply %" PRIu64 "..%" PRIu64 ": %s",
                  n->w->seed, n->id, e[0].index, e[count - 1].index, kv_strerror(rc));
    ck_assert_uint_eq(sm_applied_index(n->s), e[count - 1].index);
    n->applying = true;
    n->an = count;
    return 0;
}

static void ns_apply_end(void *ctx) {
    ns_node *n = ctx;
    ck_assert(n->applying);
    sm_replies_free(n->ar, n->an);
    for (size_t i = 0; i < n->an; i++) {
        free(n->abuf[i]);
        n->abuf[i] = NULL;
    }
    n->applying = false;
    n->an = 0;
}

static void ns_write_done(void *ctx, const node_write *wr, size_t pos, int code) {
    ns_node *n = ctx;
    ns_world *w = n->w;
    ck_assert_uint_lt(wr->tag.id, w->attempts_count);
    ns_attempt *a = &w->attempts[wr->tag.id];
    ck_assert_msg(!a->read && !a->answered, "attempt %" PRIu64 " answered twice", wr->tag.id);
    ck_assert_uint_eq(a->node, n->id);
    a->answered = true;
    const sm_reply *r = NULL;
    if (code == 0) {
        ck_assert(n->applying && pos < n->an);
        ck_assert_uint_eq(n->ae[pos].index, wr->index);
        ck_assert_uint_eq(n->ae[pos].term, wr->term);
        r = &n->ar[pos];
    } else {
        ck_assert_msg(code == KV_ENOTLEADER || code == KV_ECLOSED, "write answered %s",
                      kv_errword(code));
    }
    ns_client *c = &w->clients[a->client];
    if (c->attempt != wr->tag.id)
        return; /* the client gave up on it and retried */
    c->attempt = SIZE_MAX;
    if (r == NULL) {
        w->st.unknown++; /* outcome unknown: retried with the same seq */
        return;
    }
    ck_assert_msg(r->code == 0, "seed %" PRIu64 ": client %u %s: the state machine says %s (%s)",
                  w->seed, a->client, a->put == SIZE_MAX ? "REGISTER" : w->puts[a->put].key,
                  kv_errword(r->code), r->detail ? r->detail : "");
    if (a->put == SIZE_MAX) {
        ck_assert_uint_ne(r->client_id, 0);
        c->session = r->client_id;
    } else {
        ns_put *p = &w->puts[a->put];
        p->acked = true;
        p->index = r->index;
        w->st.acked++;
    }
    c->busy = false;
}

/* A read is served from RocksDB now, as kvd's server_serve_read: the client
 * waiting for it has no write in flight, so its key holds exactly the value
 * of its last write to it (acknowledged before the read began). */
static void ns_read_done(void *ctx, const node_tag *t, uint64_t read_index, int code) {
    ns_node *n = ctx;
    ns_world *w = n->w;
    ck_assert_uint_lt(t->id, w->attempts_count);
    ns_attempt *a = &w->attempts[t->id];
    ck_assert_msg(a->read && !a->answered, "read attempt %" PRIu64 " answered twice", t->id);
    ck_assert_uint_eq(a->node, n->id);
    a->answered = true;
    ns_client *c = &w->clients[a->client];
    bool current = c->attempt == t->id;
    if (current)
        c->attempt = SIZE_MAX;
    if (code != 0) {
        ck_assert_msg(code == KV_ENOTLEADER || code == KV_ECLOSED, "read answered %s",
                      kv_errword(code));
        return; /* retried */
    }
    ck_assert_uint_ge(sm_applied_index(n->s), read_index);
    if (!current)
        return; /* the client gave up on it and went on */
    const ns_put *p = &w->puts[a->put];
    void *v = NULL;
    size_t vlen = 0;
    int rc = sm_get(n->s, p->key, strlen(p->key), &v, &vlen);
    ck_assert_msg(rc == 0 && vlen == strlen(p->val) && memcmp(v, p->val, vlen) == 0,
                  "seed %" PRIu64 " step %" PRIu64 ": node %" PRIu64 " read %s at %" PRIu64
                  " (applied %" PRIu64 "): %s%.*s, but %s was acknowledged at %" PRIu64,
                  w->seed, w->step, n->id, p->key, read_index, sm_applied_index(n->s),
                  rc == 0 ? "" : kv_errword(rc), rc == 0 ? (int)vlen : 0,
                  rc == 0 ? (const char *)v : "", p->val, p->index);
    free(v);
    w->st.reads++;
    c->busy = false;
    c->reading = false;
}

static const node_io ns_io_vtable = {
    .hs_save = ns_hs_save,
    .snap_install = ns_snap_install,
    .snap_chunk = ns_snap_chunk,
    .send = ns_send,
    .log_append = ns_log_append,
    .apply = ns_apply,
    .write_done = ns_write_done,
    .apply_end = ns_apply_end,
    .read_done = ns_read_done,
};

/* ---- start, crash, restart --------------------------------------------------- */

/* kvd's start-up on what the disk holds: store_open, hs_load against the
 * log's last term, raft from both (bootstrapped only from an empty log). */
static void ns_start(ns_node *n) {
    ns_world *w = n->w;
    ck_assert_ptr_null(n->nd);
    wal_options wo;
    wal_options_default(&wo);
    wo.segment_bytes = 4096; /* segments roll every few dozen entries */
    store_start ss;
    int rc = store_open(n->fs, w->rfs, n->dir, &wo, &n->wl, &n->s, &ss);
    ck_assert_msg(rc == 0, "seed %" PRIu64 " step %" PRIu64 ": node %" PRIu64 " store_open: %s",
                  w->seed, w->step, n->id, kv_strerror(rc));
    uint64_t log_term = 0;
    ck_assert_int_eq(wal_term_at(n->wl, wal_last_index(n->wl), &log_term), 0);
    hs_state hst;
    rc = hs_load(n->fs, n->dir, log_term, NULL, NULL, &n->h, &hst);
    ck_assert_msg(rc == 0, "seed %" PRIu64 ": node %" PRIu64 " hs_load: %s", w->seed, n->id,
                  kv_strerror(rc));
    raft_config cfg;
    raft_config_init(&cfg, n->id);
    cfg.seed = w->seed * 7919 + n->id * 1000 + n->restarts;
    cfg.hs = (raft_hard_state){.term = hst.term, .vote = hst.vote, .commit = hst.commit};
    cfg.applied = ss.applied;
    raft_entry *re = ss.entries_count ? calloc(ss.entries_count, sizeof(*re)) : NULL;
    for (size_t i = 0; i < ss.entries_count; i++)
        re[i] = (raft_entry){.index = ss.entries[i].index,
                             .term = ss.entries[i].term,
                             .type = ss.entries[i].type,
                             .data = ss.entries[i].data,
                             .len = ss.entries[i].len};
    cfg.entries = re;
    cfg.entries_count = ss.entries_count;
    if (ss.last == 0) /* a data dir kvd init made: the founders */
        for (uint32_t id = 1; id <= NS_NODES; id++)
            cfg.bootstrap.voters[cfg.bootstrap.voters_count++] = id;
    node_io io = ns_io_vtable;
    io.ctx = n;
    node_limits lim = {.pending_bytes_max = 1u << 20, .reads_max = 64};
    rc = node_new(&cfg, &io, &lim, &n->nd);
    ck_assert_msg(rc == 0, "seed %" PRIu64 ": node %" PRIu64 " node_new: %s", w->seed, n->id,
                  kv_strerror(rc));
    free(re);
    store_start_free(&ss);
    n->issued = n->done = n->delivered = 0;
    n->wal_err = 0;
    n->dur_index = n->dur_term = 0;
    ns_run(n);
}

/* The machine dies: unsynced pages go (the fake disk), the state machine
 * goes back to its last flush, messages to it are lost. */
static void ns_crash(ns_node *n) {
    ns_world *w = n->w;
    ck_assert_ptr_nonnull(n->nd);
    node_fail_all(n->nd, KV_ECLOSED); /* the clients' connections drop */
    node_free(n->nd);
    n->nd = NULL;
    fsf_die_at(n->f, 1); /* the parked sync and everything after it fail */
    pthread_mutex_lock(&n->mu);
    n->gate_open = true;
    pthread_cond_broadcast(&n->cv);
    pthread_mutex_unlock(&n->mu);
    wal_close(n->wl);
    n->wl = NULL;
    pthread_mutex_lock(&n->mu);
    n->gate_open = false;
    pthread_mutex_unlock(&n->mu);
    hs_close(n->h);
    n->h = NULL;
    fsf_crash(n->f, ns_below(w, 4) == 0 ? FSF_CRASH_TORN : FSF_CRASH_PAGES); /* disarms */
    n->disk_fault = false;
    uint64_t how = ns_below(w, 3);
    if (how == 0) {
        w->st.kept++; /* a crash right after a flush: all of it is there */
        sm_close(n->s);
    } else if (n->has_ckpt) {
        w->st.restores++;
        int rc = snap_restore(&n->s, n->db_dir, n->ckpt.path);
        ck_assert_msg(rc == 0, "snap_restore: %s", kv_strerror(rc));
        sm_close(n->s);
    } else {
        w->st.wiped++; /* never flushed: RocksDB holds nothing */
        sm_close(n->s);
        ck_assert_int_eq(kv_fs_rmtree(w->rfs, n->db_dir), 0);
    }
    n->s = NULL;
    size_t kept = 0;
    for (size_t i = 0; i < w->net_count; i++) {
        if (w->net[i].to == n->id)
            raft_msg_free(&w->net[i]);
        else
            w->net[kept++] = w->net[i];
    }
    w->net_count = kept;
    w->st.crashes++;
}

static void ns_restart(ns_node *n) {
    n->restarts++;
    n->w->st.restarts++;
    ns_start(n);
}

/* RocksDB's flush point: a checkpoint (it flushes first), the newest kept. */
static void ns_checkpoint(ns_node *n) {
    ns_world *w = n->w;
    if (sm_applied_index(n->s) == 0)
        return; /* nothing applied: nothing to flush */
    snap_meta m;
    int rc = snap_create(n->s, w->rfs, n->ckpt_dir, &m);
    ck_assert_msg(rc == 0, "snap_create: %s", kv_strerror(rc));
    ck_assert_int_eq(snap_gc(w->rfs, n->ckpt_dir, 1), 0);
    n->ckpt = m;
    n->has_ckpt = true;
    w->st.checkpoints++;
}

/* mkdir -p on the fake disk, each name synced into its parent. */
static void ns_fake_mkdirs(kv_fs *fs, const char *path) {
    char buf[NS_PATH + 32], parent[NS_PATH + 32];
    snprintf(buf, sizeof buf, "%s", path);
    for (char *p = buf + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        ck_assert_int_eq(fs->ops->mkdir(fs, buf), 0);
        kv_fs_dirname(buf, parent, sizeof parent);
        ck_assert_int_eq(fs->ops->sync_dir(fs, parent), 0);
        *p = c;
        if (c == '\0')
            break;
    }
}

static ns_world *ns_new(uint64_t seed, bool early_ack, uint64_t puts_budget) {
    ns_world *w = calloc(1, sizeof(*w));
    ck_assert_ptr_nonnull(w);
    w->seed = seed;
    w->rng = seed;
    w->early_ack = early_ack;
    w->main_thread = pthread_self();
    w->rfs = kv_fs_posix();
    w->net = calloc(NS_NET_MAX, sizeof(*w->net));
    w->puts = calloc(NS_PUTS_MAX, sizeof(*w->puts));
    w->attempts = calloc(NS_ATTEMPTS_MAX, sizeof(*w->attempts));
    ck_assert(w->net != NULL && w->puts != NULL && w->attempts != NULL);
    w->puts_budget = puts_budget < NS_PUTS_MAX ? puts_budget : NS_PUTS_MAX;
    /* RocksDB's files: $TMPDIR, else memory (/dev/shm) where there is one */
    const char *tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0')
        tmp = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(w->root, sizeof w->root, "%s/kv-node-store.XXXXXX", tmp);
    ck_assert_ptr_nonnull(mkdtemp(w->root));
    for (uint32_t c = 0; c < NS_CLIENTS; c++)
        w->clients[c] = (ns_client){.put = SIZE_MAX, .attempt = SIZE_MAX};
    for (uint32_t id = 1; id <= NS_NODES; id++) {
        ns_node *n = &w->n[id];
        n->id = id;
        n->w = w;
        pthread_mutex_init(&n->mu, NULL);
        pthread_cond_init(&n->cv, NULL);
        char root[sizeof w->root]; /* a copy: GCC's -Wrestrict sees one object w */
        memcpy(root, w->root, sizeof root);
        snprintf(n->dir, sizeof n->dir, "%s/n%u", root, id);
        snprintf(n->db_dir, sizeof n->db_dir, "%s/n%u/db", root, id);
        snprintf(n->ckpt_dir, sizeof n->ckpt_dir, "%s/n%u.flushed", root, id);
        ck_assert_int_eq(mkdir(n->dir, 0700), 0);
        n->f = fsf_new(seed * 31 + id);
        ck_assert_ptr_nonnull(n->f);
        fsf_set_page_bytes(n->f, 512);
        fsf_set_sync_hook(n->f, ns_hook, n);
        n->fs = fsf_fs(n->f);
        ns_fake_mkdirs(n->fs, w->root);
        ck_assert_int_eq(dd_init(n->fs, n->dir), 0);
        ns_start(n);
    }
    return w;
}

static void ns_free(ns_world *w) {
    for (uint32_t id = 1; id <= NS_NODES; id++) {
        ns_node *n = &w->n[id];
        if (n->nd != NULL) {
            node_fail_all(n->nd, KV_ECLOSED);
            node_free(n->nd);
            n->nd = NULL;
            pthread_mutex_lock(&n->mu);
            n->gate_open = true;
            pthread_cond_broadcast(&n->cv);
            pthread_mutex_unlock(&n->mu);
            wal_close(n->wl);
            hs_close(n->h);
            sm_close(n->s);
        }
        fsf_free(n->f);
        free(n->ae);
        free(n->ar);
        free(n->abuf);
        pthread_mutex_destroy(&n->mu);
        pthread_cond_destroy(&n->cv);
    }
    for (size_t i = 0; i < w->net_count; i++)
        raft_msg_free(&w->net[i]);
    ck_assert_int_eq(kv_fs_rmtree(w->rfs, w->root), 0);
    free(w->net);
    free(w->puts);
    free(w->attempts);
    free(w);
}

/* ---- the network and the clients ---------------------------------------------- */

/* Delivers message i (drop: lost; dup: delivered and kept in flight). */
static void ns_deliver(ns_world *w, size_t i, bool drop, bool dup) {
    raft_msg m = w->net[i];
    if (dup) {
        ck_assert_int_eq(raft_msg_copy(&w->net[i], &m), 0);
        w->st.duplicated++;
    } else {
        w->net[i] = w->net[--w->net_count];
    }
    ns_node *to = &w->n[m.to];
    if (drop || to->nd == NULL) {
        w->st.dropped++;
    } else {
        node_step(to->nd, &m); /* a refused message is raft's to count */
        ns_run(to);
        w->st.delivered++;
    }
    raft_msg_free(&m); /* a duplicate's copy stays in flight */
}

static size_t ns_up_count(const ns_world *w) {
    size_t k = 0;
    for (uint32_t id = 1; id <= NS_NODES; id++)
        k += w->n[id].nd != NULL;
    return k;
}

/* A random node that is up (down: want_up false), or NULL. */
static ns_node *ns_pick(ns_world *w, bool want_up) {
    uint64_t start = ns_below(w, NS_NODES);
    for (uint32_t k = 0; k < NS_NODES; k++) {
        ns_node *n = &w->n[1 + (start + k) % NS_NODES];
        if ((n->nd != NULL) == want_up)
            return n;
    }
    return NULL;
}

/* Where a client sends: the leader some up node names, else any up node. */
static ns_node *ns_target(ns_world *w) {
    ns_node *n = ns_pick(w, true);
    if (n == NULL)
        return NULL;
    uint64_t leader = node_leader(n->nd);
    if (leader >= 1 && leader <= NS_NODES && w->n[leader].nd != NULL)
        return &w->n[leader];
    return n;
}

/* The client's operation as a kv.Command, as server_req.c packs a request. */
static size_t ns_command(const ns_world *w, const ns_client *c, uint8_t *buf, size_t cap) {
    Kv__Command cmd = KV__COMMAND__INIT;
    if (c->put == SIZE_MAX) {
        cmd.op = KV__COMMAND__OP__REGISTER;
    } else {
        const ns_put *p = &w->puts[c->put];
        cmd.op = KV__COMMAND__OP__PUT;
        cmd.client_id = c->session;
        cmd.seq = p->seq;
        cmd.key.data = (uint8_t *)p->key;
        cmd.key.len = strlen(p->key);
        cmd.value.data = (uint8_t *)p->val;
        cmd.value.len = strlen(p->val);
    }
    size_t len = kv__command__get_packed_size(&cmd);
    ck_assert_uint_le(len, cap);
    return kv__command__pack(&cmd, buf);
}

/* Client ci acts: starts its next operation (when new ones are allowed),
 * or (re)sends the one whose outcome it does not know. */
static void ns_client_act(ns_world *w, uint32_t ci, bool may_start) {
    ns_client *c = &w->clients[ci];
    if (!c->busy) {
        if (!may_start || (c->session != 0 && w->puts_count >= w->puts_budget))
            return;
        c->busy = true;
        c->attempt = SIZE_MAX;
        c->put = SIZE_MAX;
        c->reading = c->seq > 0 && ns_below(w, 4) == 0;
        if (c->reading) { /* the last write to one of its keys */
            uint64_t seq = 1 + ns_below(w, c->seq);
            for (size_t i = 0; i < w->puts_count; i++)
                if (w->puts[i].client == ci && w->puts[i].seq == seq)
                    c->put = i;
            for (size_t i = c->put + 1; i < w->puts_count; i++)
                if (strcmp(w->puts[i].key, w->puts[c->put].key) == 0)
                    c->put = i;
            ck_assert(c->put != SIZE_MAX && w->puts[c->put].acked);
        } else if (c->session != 0) {
            ns_put *p = &w->puts[w->puts_count];
            c->put = w->puts_count++;
            p->client = ci;
            p->seq = ++c->seq;
            if (p->seq % 2 == 0) /* written once: a lost acknowledged write shows */
                snprintf(p->key, sizeof p->key, "c%u-u%" PRIu64, ci, p->seq);
            else
                snprintf(p->key, sizeof p->key, "c%u-k%" PRIu64, ci, p->seq % NS_OVERWRITE_KEYS);
            snprintf(p->val, sizeof p->val, "c%u-s%" PRIu64 "-%08" PRIx64, ci, p->seq,
                     ns_rand(w) & 0xffffffffu);
        }
    } else if (c->attempt != SIZE_MAX && w->step - c->attempt_t < NS_RETRY_STEPS) {
        return; /* still waiting for its answer */
    }
    ns_node *n = ns_target(w);
    if (n == NULL)
        return;
    ck_assert_uint_lt(w->attempts_count, NS_ATTEMPTS_MAX);
    size_t aid = w->attempts_count;
    node_tag tag = {.id = aid};
    int rc;
    if (c->reading) {
        rc = node_read(n->nd, &tag);
    } else {
        uint8_t buf[256];
        size_t len = ns_command(w, c, buf, sizeof buf);
        rc = node_propose(n->nd, buf, len, &tag, NULL);
    }
    if (rc != 0) {
        ck_assert_msg(rc == KV_ENOTLEADER || rc == KV_EBUSY, "%s: %s",
                      c->reading ? "node_read" : "node_propose", kv_errword(rc));
        return;
    }
    w->attempts[aid] = (ns_attempt){.client = ci, .read = c->reading, .put = c->put, .node = n->id};
    w->attempts_count++;
    c->attempt = aid;
    c->attempt_t = w->step;
    w->st.attempts++;
    ns_run(n);
}

/* ---- the schedule ---------------------------------------------------------------- */

static void ns_tick_all(ns_world *w) {
    for (uint32_t id = 1; id <= NS_NODES; id++) {
        if (w->n[id].nd != NULL) {
            node_tick(w->n[id].nd);
            ns_run(&w->n[id]);
        }
    }
    w->st.ticks++;
}

/* One step of the schedule, chosen by the seed (per mille). */
static void ns_step(ns_world *w) {
    w->step++;
    w->st.steps++;
    uint64_t r = ns_below(w, 1000);
    ns_node *n;
    if (r < 350) {
        for (uint64_t k = 1 + ns_below(w, 6); k > 0 && w->net_count > 0; k--) {
            uint64_t d = ns_below(w, 100);
            ns_deliver(w, ns_below(w, w->net_count), d < 5, d >= 97);
        }
    } else if (r < 450) {
        ns_tick_all(w);
    } else if (r < 500) {
        if ((n = ns_pick(w, true)) != NULL) {
            node_tick(n->nd);
            ns_run(n);
            w->st.ticks++;
        }
    } else if (r < 650) {
        if ((n = ns_pick(w, true)) != NULL)
            ns_sync(n);
    } else if (r < 850) {
        ns_client_act(w, (uint32_t)ns_below(w, NS_CLIENTS), true);
    } else if (r < 860) {
        if ((n = ns_pick(w, true)) != NULL)
            ns_checkpoint(n);
    } else if (r < 863) {
        if ((n = ns_pick(w, true)) != NULL)
            ns_crash(n);
    } else if (r < 864) {
        if (ns_up_count(w) > 0)
            w->st.power_losses++;
        for (uint32_t id = 1; id <= NS_NODES; id++)
            if (w->n[id].nd != NULL)
                ns_crash(&w->n[id]);
    } else if (r < 866) {
        if ((n = ns_pick(w, true)) != NULL && !n->disk_fault) {
            /* the disk fails one of the next few writes or syncs */
            if (ns_below(w, 2) == 0)
                fsf_fail_sync(n->f, 1 + ns_below(w, 4));
            else
                fsf_fail_write(n->f, 1 + ns_below(w, 4));
            n->disk_fault = true;
            w->st.disk_faults++;
        }
    } else if (r < 914) {
        if ((n = ns_pick(w, false)) != NULL)
            ns_restart(n);
    } else {
        for (uint32_t id = 1; id <= NS_NODES; id++)
            if (w->n[id].nd != NULL)
                ns_sync(&w->n[id]);
    }
}

static bool ns_clients_idle(const ns_world *w) {
    for (uint32_t c = 0; c < NS_CLIENTS; c++)
        if (w->clients[c].busy)
            return false;
    return true;
}

/* Every node up, nothing dropped: runs until every client operation is
 * acknowledged and every state machine is at the leader's commit index. */
static void ns_heal(ns_world *w) {
    for (uint32_t id = 1; id <= NS_NODES; id++) {
        fsf_fail_sync(w->n[id].f, 0); /* a fault that fired already still stops its node */
        fsf_fail_write(w->n[id].f, 0);
    }
    for (uint32_t round = 0; round < NS_HEAL_ROUNDS; round++) {
        w->st.heal_rounds++;
        w->step++;
        for (uint32_t id = 1; id <= NS_NODES; id++)
            if (w->n[id].nd == NULL)
                ns_restart(&w->n[id]);
        for (uint32_t id = 1; id <= NS_NODES; id++)
            ns_sync(&w->n[id]);
        for (size_t k = w->net_count; k > 0 && w->net_count > 0; k--)
            ns_deliver(w, ns_below(w, w->net_count), false, false);
        for (uint32_t c = 0; c < NS_CLIENTS; c++)
            ns_client_act(w, c, false);
        uint64_t leader = 0;
        for (uint32_t id = 1; id <= NS_NODES; id++)
            if (w->n[id].nd != NULL && node_is_leader(w->n[id].nd))
                leader = id;
        if (leader != 0 && ns_up_count(w) == NS_NODES && ns_clients_idle(w) && w->net_count == 0) {
            uint64_t commit = raft_commit_index(node_raft(w->n[leader].nd));
            bool all = commit == raft_last_index(node_raft(w->n[leader].nd));
            for (uint32_t id = 1; id <= NS_NODES; id++)
                all = all && sm_applied_index(w->n[id].s) == commit;
            if (all)
                return;
        }
        if (round % 4 == 0) {
            ns_tick_all(w);
        }
    }
    char what[512];
    size_t at = 0;
    for (uint32_t id = 1; id <= NS_NODES && w->n[id].nd != NULL; id++) {
        raft *r = node_raft(w->n[id].nd);
        at += (size_t)snprintf(
            what + at, sizeof what - at,
            " n%u: %s term %" PRIu64 " commit %" PRIu64 " last %" PRIu64 " applied %" PRIu64 ";",
            id, node_is_leader(w->n[id].nd) ? "leader" : "follower", raft_term(r),
            raft_commit_index(r), raft_last_index(r), sm_applied_index(w->n[id].s));
    }
    ck_abort_msg("seed %" PRIu64 ": the cluster did not heal in %u rounds (clients idle: %d,"
                 " messages in flight %zu):%s",
                 w->seed, NS_HEAL_ROUNDS, ns_clients_idle(w), w->net_count, what);
}

/* Every key holds the last value acknowledged for it, on every node; the
 * three state machines hash alike at one applied index. */
static void ns_check(ns_world *w) {
    uint64_t hash[NS_NODES + 1];
    for (uint32_t id = 1; id <= NS_NODES; id++) {
        ck_assert_int_eq(sm_hash(w->n[id].s, &hash[id]), 0);
        ck_assert_uint_eq(sm_applied_index(w->n[id].s), sm_applied_index(w->n[1].s));
    }
    for (size_t i = 0; i < w->puts_count; i++) {
        const ns_put *p = &w->puts[i];
        ck_assert_msg(p->acked, "seed %" PRIu64 ": write %s=%s never acknowledged", w->seed, p->key,
                      p->val);
        bool last = true; /* the last write of its key */
        for (size_t j = i + 1; j < w->puts_count && last; j++)
            last = strcmp(w->puts[j].key, p->key) != 0;
        if (!last)
            continue;
        for (uint32_t id = 1; id <= NS_NODES; id++) {
            void *v = NULL;
            size_t vlen = 0;
            int rc = sm_get(w->n[id].s, p->key, strlen(p->key), &v, &vlen);
            ck_assert_msg(rc == 0 && vlen == strlen(p->val) && memcmp(v, p->val, vlen) == 0,
                          "seed %" PRIu64
                          ": node %u lost acknowledged write %s=%s (applied at %" PRIu64
                          "): it holds %s%.*s",
                          w->seed, id, p->key, p->val, p->index, rc == 0 ? "" : kv_errword(rc),
                          rc == 0 ? (int)vlen : 0, rc == 0 ? (const char *)v : "");
            free(v);
        }
    }
    for (uint32_t id = 2; id <= NS_NODES; id++)
        ck_assert_msg(hash[id] == hash[1],
                      "seed %" PRIu64 ": node %u's state machine hash %016" PRIx64
                      " differs from node 1's %016" PRIx64 " at applied index %" PRIu64,
                      w->seed, id, hash[id], hash[1], sm_applied_index(w->n[1].s));
}

/* One line of the cluster's state (KV_NODE_STORE_TRACE). */
static void ns_trace(const ns_world *w) {
    printf("step %" PRIu64 ": in flight %zu, writes %zu, acknowledged %" PRIu64 " |", w->step,
           w->net_count, w->puts_count, w->st.acked);
    for (uint32_t id = 1; id <= NS_NODES; id++) {
        node *nd = w->n[id].nd;
        if (nd == NULL) {
            printf(" n%u down", id);
            continue;
        }
        raft *r = node_raft(nd);
        printf(" n%u %s t%" PRIu64 " c%" PRIu64 " l%" PRIu64 " a%" PRIu64, id,
               node_is_leader(nd) ? "L" : "F", raft_term(r), raft_commit_index(r),
               raft_last_index(r), node_applied(nd));
    }
    printf("\n");
}

static uint64_t ns_env(const char *name, uint64_t dflt) {
    const char *v = getenv(name);
    return v != NULL && *v != '\0' ? strtoull(v, NULL, 0) : dflt;
}

static void ns_run_seed(uint64_t seed, uint64_t steps) {
    bool early = ns_env("KV_NODE_STORE_EARLY_ACK", 0) != 0;
    printf("test_node_store: seed %" PRIu64 " (replay: KV_NODE_STORE_SEED=%" PRIu64
           " KV_NODE_STORE_STEPS=%" PRIu64 "%s ./test_node_store)\n",
           seed, seed, steps, early ? " KV_NODE_STORE_EARLY_ACK=1" : "");
    fflush(stdout);
    ns_world *w = ns_new(seed, early, steps / 8);
    printf("test_node_store: seed %" PRIu64 ": files in %s (kept when it fails)\n", seed, w->root);
    bool trace = getenv("KV_NODE_STORE_TRACE") != NULL;
    for (uint64_t s = 0; s < steps; s++) {
        ns_step(w);
        if (trace && s % 100 == 0)
            ns_trace(w);
    }
    ns_heal(w);
    ns_check(w);
    const ns_stats *t = &w->st;
    printf("test_node_store: seed %" PRIu64 " ok: %zu writes acknowledged (%" PRIu64
           " attempts, %" PRIu64 " unknown outcomes), %" PRIu64 " reads, applied %" PRIu64 "\n",
           seed, w->puts_count, t->attempts, t->unknown, t->reads, sm_applied_index(w->n[1].s));
    printf("  %" PRIu64 " crashes (%" PRIu64 " power losses, %" PRIu64 " fail-stops of %" PRIu64
           " disk faults armed; state machine kept %" PRIu64 ", back to a flush %" PRIu64
           ", empty %" PRIu64 "), %" PRIu64 " flush points, %" PRIu64 " syncs\n",
           t->crashes, t->power_losses, t->fail_stops, t->disk_faults, t->kept, t->restores,
           t->wiped, t->checkpoints, t->syncs);
    printf("  %" PRIu64 " messages delivered, %" PRIu64 " dropped, %" PRIu64 " duplicated; %" PRIu64
           " heal rounds\n",
           t->delivered, t->dropped, t->duplicated, t->heal_rounds);
    if (early)
        printf("test_node_store: control: %" PRIu64 " applies ran ahead of the log's durability\n",
               t->early_applies);
    fflush(stdout);
    ns_free(w);
}

START_TEST(test_ready_loop_real_storage_faults) {
    kv_log_set_level(getenv("KV_LOG") ? KV_LOG_DEBUG : KV_LOG_ERROR);
    uint64_t first = ns_env("KV_NODE_STORE_SEED", 1);
    uint64_t count =
        ns_env("KV_NODE_STORE_SEEDS", getenv("KV_NODE_STORE_SEED") ? 1 : NS_UNIT_SEEDS);
    uint64_t steps = ns_env("KV_NODE_STORE_STEPS", NS_UNIT_STEPS);
    for (uint64_t s = first; s < first + count; s++)
        ns_run_seed(s, steps);
}
END_TEST

static Suite *node_store_suite(void) {
    Suite *s = suite_create("node_store");
    TCase *t = tcase_create("faults");
    tcase_set_timeout(t, 0);
    tcase_add_test(t, test_ready_loop_real_storage_faults);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(node_store_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
