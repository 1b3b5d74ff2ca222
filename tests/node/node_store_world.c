/* test_node_store's world (see test_node_store.c's opening comment): each
 * node's half of node_io over the real log, hard state and state machine on
 * its fake disk, the sync gate, start, crash and restart, and the network's
 * delivery. The schedule that drives it is test_node_store.c. */
#include <check.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

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

#include "node_store.h"

uint64_t ns_rand(ns_world *w) { /* splitmix64 */
    uint64_t z = (w->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t ns_below(ns_world *w, uint64_t n) {
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
void ns_run(ns_node *n) {
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
void ns_sync(ns_node *n) {
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
void ns_crash(ns_node *n) {
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

void ns_restart(ns_node *n) {
    n->restarts++;
    n->w->st.restarts++;
    ns_start(n);
}

/* RocksDB's flush point: a checkpoint (it flushes first), the newest kept. */
void ns_checkpoint(ns_node *n) {
    ns_world *w = n->w;
    if (sm_applied_index(n->s) == 0)
        return; /* nothing applied: nothing to flush */
    snap_meta m;
    int rc = snap_create(n->s, w->rfs, n->ckpt_dir, &m);
    ck_assert_msg(rc == 0, "snap_create: %s", kv_strerror(rc));
    ck_assert_int_eq(snap_gc(w->rfs, n->ckpt_dir, 1, &m), 0);
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

ns_world *ns_new(uint64_t seed, bool early_ack, uint64_t puts_budget) {
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

void ns_free(ns_world *w) {
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
void ns_deliver(ns_world *w, size_t i, bool drop, bool dup) {
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
