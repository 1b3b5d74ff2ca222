/* One kv node: start-up, the loop and the Raft Ready cycle. See server.h. */
#include "server/server_int.h"

#include "common/checksum.h"
#include "common/clock.h"
#include "common/logging.h"
#include "kv/client.h"
#include "kv/errors.h"
#include "server/http.h"
#include "server/notify.h"
#include "server/store.h"
#include "storage/clusterfile.h"
#include "storage/datadir.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void server_config_default(server_config *cfg) {
    memset(cfg, 0, sizeof(*cfg));
    cfg->snapshot_entries = SERVER_SNAPSHOT_ENTRIES_DEFAULT;
    cfg->snapshot_bytes = SERVER_SNAPSHOT_BYTES_DEFAULT;
    cfg->snapshots_keep = KV_SNAPSHOTS_KEEP_DEFAULT;
    cfg->tick_ms = SERVER_TICK_MS_DEFAULT;
    cfg->election_ticks = SERVER_ELECTION_TICKS_DEFAULT;
    cfg->quota_bytes = SERVER_QUOTA_BYTES_DEFAULT;
    cfg->slow_fsync_ms = 100;
}

uint64_t server_node_id(const char *name) {
    uint64_t id = kv_xxh3(name, strlen(name));
    return id == 0 ? 1 : id;
}

/* ---- ring ----------------------------------------------------------------- */

void ring_init(server_ring *q, size_t item_size) {
    memset(q, 0, sizeof(*q));
    q->item_size = item_size;
}

void ring_free(server_ring *q) {
    free(q->items);
    q->items = NULL;
    q->count = q->cap = q->head = 0;
}

void *ring_at(server_ring *q, size_t i) {
    assert(i < q->count);
    return (char *)q->items + ((q->head + i) % q->cap) * q->item_size;
}

void *ring_front(server_ring *q) {
    return q->count == 0 ? NULL : ring_at(q, 0);
}

void *ring_push(server_ring *q) {
    if (q->count == q->cap) {
        size_t ncap = q->cap ? q->cap * 2 : 64;
        char *n = malloc(ncap * q->item_size);
        if (n == NULL)
            return NULL;
        for (size_t i = 0; i < q->count; i++)
            memcpy(n + i * q->item_size, ring_at(q, i), q->item_size);
        free(q->items);
        q->items = n;
        q->head = 0;
        q->cap = ncap;
    }
    q->count++;
    return ring_at(q, q->count - 1);
}

void ring_pop(server_ring *q) {
    assert(q->count > 0);
    q->head = (q->head + 1) % q->cap;
    q->count--;
}

/* ---- faults ---------------------------------------------------------------- */

_Noreturn void server_fatal(server *s, int exit_code, const char *word, const char *fmt, ...) {
    (void)s;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    kv_log(KV_LOG_ERROR, word, "%s; stopping (exit %d)", msg, exit_code);
    /* Let it crash: no clean-up that could block or write more. */
    _exit(exit_code);
}

_Noreturn void server_fatal_sm(server *s, int rc, const char *fmt, ...) {
    assert(rc != 0);
    char msg[512], why[SM_ERROR_BYTES];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    sm_last_error(s->sm, why, sizeof why);
    bool corrupt = rc == KV_ECORRUPT || rc == KV_EMISSING || rc == KV_EVERSION;
    server_fatal(s, corrupt ? KVD_EXIT_CORRUPT : KVD_EXIT_IO, kv_errword(rc), "%s: %s%s%s%s", msg,
                 kv_strerror(rc), why[0] ? " (" : "", why, why[0] ? ")" : "");
}

int server_exit_code(int rc) {
    switch (rc) {
    case 0:
        return KVD_EXIT_OK;
    case KV_ECORRUPT:
    case KV_EMISSING:
    case KV_EVERSION:
        return KVD_EXIT_CORRUPT;
    case KV_ELOCKED:
        return KVD_EXIT_LOCKED;
    case KV_EINVAL:
    case KV_ECONFIG:
        return KVD_EXIT_USAGE;
    default:
        return KVD_EXIT_IO;
    }
}

/* ---- the log's threads -> the loop ------------------------------------------ */

typedef struct wal_done_arg {
    server *s;
    uint64_t index, term;
} wal_done_arg;

static void on_wal_done(void *arg, int status) {
    wal_done_arg *a = arg;
    server *s = a->s;
    pthread_mutex_lock(&s->mu);
    if (status != 0 && s->wal_error == 0)
        s->wal_error = status;
    if (status == 0) { /* callbacks run in queue order: the latest append wins,
                          even one that replaced a longer suffix */
        s->durable_index = a->index;
        s->durable_term = a->term;
    }
    pthread_mutex_unlock(&s->mu);
    free(a);
    uv_async_send(&s->wal_async);
}

static void on_wal_async(uv_async_t *h) {
    server *s = h->data;
    pthread_mutex_lock(&s->mu);
    int err = s->wal_error;
    uint64_t idx = s->durable_index, term = s->durable_term;
    pthread_mutex_unlock(&s->mu);
    if (err != 0)
        server_fatal(s, KVD_EXIT_IO, kv_errword(err), "the log failed to write or sync: %s",
                     kv_strerror(err));
    if (idx > 0)
        raft_persisted(s->r, idx, term);
}

static void log_append(server *s, const raft_entry *e, size_t n) {
    wal_entry stack[64];
    wal_entry *we = n <= 64 ? stack : malloc(n * sizeof(*we));
    wal_done_arg *a = malloc(sizeof(*a));
    if (we == NULL || a == NULL)
        server_fatal(s, KVD_EXIT_IO, "NOMEM", "out of memory appending %zu entries", n);
    for (size_t i = 0; i < n; i++) {
        we[i].index = e[i].index;
        we[i].term = e[i].term;
        we[i].type = (uint8_t)e[i].type;
        we[i].len = (uint32_t)e[i].len;
        we[i].data = e[i].data;
    }
    a->s = s;
    a->index = e[n - 1].index;
    a->term = e[n - 1].term;
    bool warned = false;
    int rc;
    /* The log's queue is bounded; when it is full the loop waits for it to
     * drain (raft bounds what it hands out, so the wait is short). */
    while ((rc = wal_append(s->w, we, n, on_wal_done, a)) == KV_EBUSY) {
        if (!warned)
            KV_LOGW("BUSY", "the log's queue is full; waiting for it to drain");
        warned = true;
        usleep(1000);
    }
    if (we != stack)
        free(we);
    if (rc != 0)
        server_fatal(s, KVD_EXIT_IO, kv_errword(rc), "appending entries %" PRIu64 "..%" PRIu64
                     " to the log failed: %s", e[0].index, e[n - 1].index, kv_strerror(rc));
}

/* ---- apply ------------------------------------------------------------------- */

/* A NORMAL entry written by a leader for the nodes themselves (MEMBER or
 * HASH; kv.proto): protobuf-c packs field 1 (op) first, so the first two
 * bytes tell, without unpacking every client command. */
static Kv__Command *node_command(const raft_entry *e) {
    const uint8_t *d = e->data;
    if (e->type != RAFT_ENTRY_NORMAL || e->len < 2 || d[0] != 0x08 ||
        (d[1] != KV__COMMAND__OP__MEMBER && d[1] != KV__COMMAND__OP__HASH))
        return NULL;
    return kv__command__unpack(NULL, e->len, d);
}

static void apply_range(server *s, size_t lo, size_t hi) {
    if (hi == lo)
        return;
    int rc = sm_apply(s->sm, s->apply_entries + lo, hi - lo, s->apply_replies + lo);
    if (rc != 0)
        server_fatal_sm(s, rc, "applying entries %" PRIu64 "..%" PRIu64 " to the state machine",
                        s->apply_entries[lo].index, s->apply_entries[hi - 1].index);
}

static void apply_committed(server *s, const struct raft_ready *rd) {
    size_t n = rd->committed_count;
    if (n > s->apply_cap) {
        free(s->apply_entries);
        free(s->apply_replies);
        free(s->apply_bufs);
        s->apply_entries = malloc(n * sizeof(sm_entry));
        s->apply_replies = calloc(n, sizeof(sm_reply));
        s->apply_bufs = calloc(n, sizeof(uint8_t *));
        if (s->apply_entries == NULL || s->apply_replies == NULL || s->apply_bufs == NULL)
            server_fatal(s, KVD_EXIT_IO, "NOMEM", "out of memory applying %zu entries", n);
        s->apply_cap = n;
    }
    uint64_t t0 = kv_now_ns();
    bool book_changed = false;
    size_t seg = 0; /* applied up to here */
    for (size_t i = 0; i < n; i++) {
        const raft_entry *e = &rd->committed[i];
        sm_entry *x = &s->apply_entries[i];
        x->index = e->index;
        x->term = e->term;
        x->type = SM_ENTRY_COMMAND;
        x->payload = e->data;
        x->len = e->len;
        s->apply_bufs[i] = NULL;
        s->bytes_since_snap += e->len;
        bool hash_here = false, store_book = false;
        if (e->type == RAFT_ENTRY_NOOP) {
            x->type = SM_ENTRY_NOOP;
        } else if (e->type == RAFT_ENTRY_CONF) {
            raft_conf_op op;
            uint64_t node;
            raft_membership rm;
            int rc = raft_conf_decode(e->data, e->len, &op, &node, &rm);
            if (rc != 0)
                server_fatal(s, KVD_EXIT_CORRUPT, kv_errword(rc),
                             "membership entry %" PRIu64 " does not decode", e->index);
            server_members_conf(s, &rm);
            book_changed = store_book = true;
        } else {
            Kv__Command *c = node_command(e);
            if (c != NULL && c->op == KV__COMMAND__OP__MEMBER) {
                char name[KV_NODE_NAME_BYTES_MAX + 1] = "", addr[SERVER_ADDR_BYTES] = "";
                if (c->key.len < sizeof name && c->value.len < sizeof addr) {
                    memcpy(name, c->key.data, c->key.len);
                    memcpy(addr, c->value.data, c->value.len);
                    server_members_joining(s, name, addr);
                    book_changed = store_book = true;
                }
                x->type = SM_ENTRY_NOOP;
            } else if (c != NULL && c->op == KV__COMMAND__OP__HASH) {
                x->type = SM_ENTRY_NOOP;
                hash_here = true;
            }
            kv__command__free_unpacked(c, NULL);
        }
        if (store_book) {
            /* the book after this entry, stored with it */
            if (server_members_encode(s, e->index, &s->apply_bufs[i], &x->len) != 0)
                server_fatal(s, KVD_EXIT_IO, "NOMEM", "out of memory applying a membership");
            x->type = SM_ENTRY_MEMBERSHIP;
            x->payload = s->apply_bufs[i];
        }
        if (hash_here) {
            /* the hash at exactly this entry: apply up to it first */
            apply_range(s, seg, i + 1);
            seg = i + 1;
            server_hash_checkpoint(s, e->index);
        }
    }
    apply_range(s, seg, n);
    s->apply_ns_total += kv_now_ns() - t0;
    s->apply_batches++;
    s->applied_entries += n;
    server_writes_applied(s, s->apply_entries, s->apply_replies, n);
    sm_replies_free(s->apply_replies, n);
    for (size_t i = 0; i < n; i++) {
        free(s->apply_bufs[i]);
        s->apply_bufs[i] = NULL;
    }
    if (book_changed)
        server_peers_sync(s);
    server_hash_waiters_serve(s);
}

/* ---- the Ready cycle ---------------------------------------------------------- */

static void role_changed(server *s, const raft_soft_state *ss) {
    bool leader = ss->role == RAFT_LEADER;
    if (ss->leader != s->leader_id) {
        const server_member *m = server_member_by_id(s, ss->leader);
        if (ss->leader != 0) {
            s->leader_changes++;
            KV_LOGI("LEADER", "leader is now %s (term %" PRIu64 ")", m ? m->name : "?",
                    raft_term(s->r));
        }
        s->leader_id = ss->leader;
    }
    if (s->is_leader && !leader)
        server_fail_pending(s, KV_ENOTLEADER, "leadership lost; outcome unknown, retry");
    s->is_leader = leader;
}

static void handle_ready(server *s) {
    struct raft_ready rd;
    while (raft_has_ready(s->r)) {
        int rc = raft_ready(s->r, &rd);
        if (rc != 0)
            server_fatal(s, KVD_EXIT_IO, kv_errword(rc), "raft_ready: %s", kv_strerror(rc));
        if (rd.hs_must_sync) {
            hs_state st = {.term = rd.hs.term, .vote = rd.hs.vote, .commit = rd.hs.commit};
            rc = hs_save(s->h, &st);
            if (rc != 0)
                server_fatal(s, KVD_EXIT_IO, kv_errword(rc), "saving term and vote: %s",
                             kv_strerror(rc));
        }
        if (rd.has_snapshot)
            server_snapshot_install(s, &rd.snapshot);
        if (rd.has_chunk)
            server_snapshot_chunk(s, &rd.chunk);
        if (rd.msgs_count > 0)
            net_send_raft(s->net, rd.msgs, rd.msgs_count);
        if (rd.entries_count > 0)
            log_append(s, rd.entries, rd.entries_count);
        if (rd.committed_count > 0)
            apply_committed(s, &rd);
        /* after apply: what this Ready committed is answered as applied, not
         * as "outcome unknown" (a leader removing itself steps down in the
         * Ready that commits its removal) */
        if (rd.ss_changed)
            role_changed(s, &rd.ss);
        if (rd.reads_count > 0)
            server_reads_confirmed(s, rd.reads, rd.reads_count);
        raft_advance(s->r, &rd);
        server_reads_serve(s);
    }
    server_snapshot_maybe_take(s);
}

static void on_prepare(uv_prepare_t *h) {
    handle_ready(h->data);
    server_hash_step(h->data);
}

static void on_tick(uv_timer_t *h) {
    server *s = h->data;
    raft_tick(s->r);
    if (++s->ticks % 5 == 0)
        server_ops_tick(s);
}

/* A refused message is counted by the core (kv_raft_msgs_refused_total);
 * it is logged at most once a second, so a misbehaving peer cannot flood
 * the log. */
static void on_raft(void *ctx, const char *from, const raft_msg *m) {
    server *s = ctx;
    int rc = raft_step(s->r, m);
    if (rc == 0 || rc == KV_EINVAL)
        return;
    uint64_t now = kv_now_ns();
    if (now - s->refused_logged_ns < 1000000000ull) {
        s->refused_quiet++;
        return;
    }
    KV_LOGW(kv_errword(rc), "message type %d from %s refused: %s (%llu more since the last line)",
            (int)m->type, from, kv_strerror(rc), (unsigned long long)s->refused_quiet);
    s->refused_logged_ns = now;
    s->refused_quiet = 0;
}

static void close_walk(uv_handle_t *h, void *arg) {
    (void)arg;
    if (!uv_is_closing(h))
        uv_close(h, NULL);
}

static void on_signal(uv_signal_t *h, int signum) {
    server *s = h->data;
    if (s->stopping)
        return;
    KV_LOGI("STOP", "signal %d: shutting down", signum);
    server_notify("STOPPING=1");
    s->stopping = true;
    server_fail_pending(s, KV_EUNAVAILABLE, "the node is shutting down");
    server_ops_close(s);
    net_stop_listening(s->net);
    uv_stop(&s->loop);
}

/* ---- start-up ----------------------------------------------------------------- */

/* What start-up hands the loop: the data dir locked; the log, the state
 * machine and the newest snapshot opened and made to agree (store.h); the
 * hard state checked against the log; Raft's configuration and the durable
 * entries it restarts from. The address book and the cluster id, which the
 * network needs as well, go into the server (s->members, s->cluster_id).
 * Filled by server_start_up, also partly when it fails: start_adopt moves
 * every handle into the server, which closes them. */
typedef struct server_start {
    int lock_fd; /* -1: not locked */
    wal *w;
    hs *h;
    sm *sm;
    raft_config raft;   /* without its entries: start_raft adds them */
    wal_entry *entries; /* owned (wal_entries_free) */
    size_t entries_count;
} server_start;

/* What a node whose data dir holds nothing must be told (pitfalls.md, "a
 * member whose disk was replaced comes back as itself"). */
static void refuse_empty(const server *s, const char *why) {
    fprintf(stderr,
            "kvd: %s holds no data %s.\n"
            "  A new cluster: run 'kvd init' once on each founder first (the same --cluster\n"
            "    and --cluster-token on every one), then start kvd.\n"
            "  A member whose disk was replaced or wiped: it lost the writes it acknowledged\n"
            "    and must not vote as itself. On a running member: kvcli member remove %s,\n"
            "    then kvcli member add %s HOST:PORT; then start this node with\n"
            "    --join HOST:PORT (any member). docs/deploy.md, \"A replaced disk\".\n",
            s->cfg.data_dir, why, s->cfg.name, s->cfg.name);
}

/* Asks the member at --join for its status line (*line) and its members
 * (*ms, *n). A cluster between leaders (an election, a partition healing)
 * is waited for, up to SERVER_JOIN_WAIT_MS, not a reason to exit. On 0 the
 * caller owns *line and *ms (kv_free); on failure nothing is owned, the
 * reason is on stderr, and the error is KV_ECONFIG (another cluster, a
 * wrong token) or KV_EIO. */
static int join_ask(const server *s, char **line, kv_member **ms, size_t *n) {
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.token = s->cfg.token;
    o.timeout_ms = 10000;
    kv_client *c = NULL;
    *line = NULL;
    *ms = NULL;
    *n = 0;
    int rc = KV_EUNAVAILABLE;
    for (uint64_t t0 = kv_now_ns(); rc == KV_EUNAVAILABLE || rc == KV_ETIMEOUT;) {
        if (c != NULL)
            kv_client_close(c);
        kv_free(*line);
        *line = NULL;
        c = NULL;
        rc = kv_client_open(&c, s->cfg.join, &o);
        if (rc == 0)
            rc = kv_node_status(c, NULL, line);
        if (rc == 0)
            rc = kv_member_list(c, ms, n);
        if ((rc != KV_EUNAVAILABLE && rc != KV_ETIMEOUT) ||
            kv_now_ns() - t0 > SERVER_JOIN_WAIT_MS * 1000000ull)
            break;
        KV_LOGW(kv_errword(rc), "--join %s: %s; trying again", s->cfg.join, kv_strerror(rc));
    }
    if (c != NULL)
        kv_client_close(c);
    if (rc != 0) {
        fprintf(stderr, "kvd: --join %s: cannot learn the cluster from it: %s (%s)\n",
                s->cfg.join, kv_strerror(rc), kv_errword(rc));
        kv_free(*line);
        *line = NULL;
        return rc == KV_EAUTH || rc == KV_ECONFIG || rc == KV_EVERSION ? KV_ECONFIG : KV_EIO;
    }
    assert(*line != NULL);
    return 0;
}

/* --join ADDR: the cluster id and the members (with this node announced
 * by member add, or not yet: then it waits for the leader) from a member. */
static int join_fetch(server *s, bool fresh, const char *stored_id) {
    char *line;
    kv_member *ms;
    size_t n;
    int rc = join_ask(s, &line, &ms, &n);
    if (rc != 0)
        return rc;
    const char *cl = strstr(line, "cluster=");
    if (cl != NULL) {
        cl += strlen("cluster=");
        size_t len = strcspn(cl, " \n");
        if (len < sizeof s->cluster_id) {
            memcpy(s->cluster_id, cl, len);
            s->cluster_id[len] = 0;
        }
    }
    /* known, not in the book: the book is built only from the log or a
     * snapshot, so it is the same on every node at the same index */
    s->members_count = 0;
    for (size_t i = 0; i < n; i++) {
        server_member m = {0};
        m.id = ms[i].id ? ms[i].id : server_node_id(ms[i].name);
        snprintf(m.name, sizeof m.name, "%s", ms[i].name);
        snprintf(m.addr, sizeof m.addr, "%s", ms[i].address);
        server_members_know(s, &m);
    }
    bool announced = server_member_by_id(s, s->id) != NULL;
    bool voter = false;
    for (size_t i = 0; i < n; i++)
        voter |= (ms[i].id ? ms[i].id : server_node_id(ms[i].name)) == s->id && !ms[i].learner &&
                 !ms[i].joining;
    kv_free(ms);
    kv_free(line);
    if (s->cluster_id[0] == 0)
        return KV_ECONFIG;
    if (stored_id[0] != 0 && strcmp(stored_id, s->cluster_id) != 0) {
        fprintf(stderr, "kvd: --join %s: that is cluster %s, this data dir belongs to %s\n",
                s->cfg.join, s->cluster_id, stored_id);
        return KV_ECONFIG;
    }
    if (fresh && voter) {
        /* an empty log must never vote as a member that had one */
        char why[160];
        snprintf(why, sizeof why, "but %s is a voting member of cluster %s", s->cfg.name,
                 s->cluster_id);
        refuse_empty(s, why);
        return KV_ECONFIG;
    }
    KV_LOGI("JOIN", "joining cluster %s through %s (%zu members known)%s", s->cluster_id,
            s->cfg.join, n,
            announced ? "" : "; not announced yet: run kvcli member add NAME HOST:PORT");
    return stored_id[0] == 0 ? startup_cluster_save(s->rfs, s->cfg.data_dir, s->cluster_id, NULL)
                             : 0;
}

/* The cluster this data dir belongs to (DIR/CLUSTER), and whether this
 * start bootstraps it: only a fresh data dir made by kvd init does. A
 * fresh one without CLUSTER joins (--join) or is refused; one that has
 * entries but no CLUSTER is damaged. *cf gets the file (zeroed when there
 * is none); *bootstrap is true when this start bootstraps from its
 * founders. */
static int cluster_identity(server *s, bool fresh, cf_info *cf, bool *bootstrap) {
    memset(cf, 0, sizeof *cf);
    *bootstrap = false;
    int rc = cf_read(s->rfs, s->cfg.data_dir, cf, NULL, NULL);
    if (rc == KV_ECORRUPT) {
        KV_LOGE("CORRUPT", "%s/" CF_FILE " is damaged (kvd check names the offset)",
                s->cfg.data_dir);
        return rc;
    }
    if (rc == 0) {
        snprintf(s->cluster_id, sizeof s->cluster_id, "%s", cf->id);
        *bootstrap = fresh && cf->founders[0] != '\0' && s->cfg.join == NULL;
        if (fresh && cf->founders[0] == '\0' && s->cfg.join == NULL) {
            refuse_empty(s, "yet (it joined a cluster and received nothing)");
            return KV_ECONFIG;
        }
        return 0;
    }
    if (rc != KV_EMISSING)
        return rc;
    if (!fresh) {
        KV_LOGE("MISSING", "%s/" CF_FILE " is missing but the data dir holds a log",
                s->cfg.data_dir);
        return KV_ECORRUPT;
    }
    if (s->cfg.join == NULL) {
        refuse_empty(s, "and was not made by kvd init");
        return KV_ECONFIG;
    }
    return 0; /* written once --join has learned the id */
}

/* The address book at start-up: the state machine's (the membership as
 * applied), else kvd init's founders, else the cluster joined (--join). */
static int book_load(server *s, sm *db, bool fresh, bool *bootstrap) {
    cf_info cf;
    int rc = cluster_identity(s, fresh, &cf, bootstrap);
    if (rc != 0)
        return rc;
    Kv__Membership *mpb = server_members_stored(db);
    if (mpb != NULL) {
        server_members_from_pb(s, mpb);
        kv__membership__free_unpacked(mpb, NULL);
    } else if (cf.founders[0] != '\0' && s->cfg.join == NULL) {
        if (server_members_parse(s, cf.founders) != 0)
            return KV_ECORRUPT; /* kvd init checked them */
        if (server_member_by_id(s, s->id) == NULL) {
            fprintf(stderr, "kvd: --name %s is not one of the founders kvd init was given (%s)\n",
                    s->cfg.name, cf.founders);
            return KV_ECONFIG;
        }
    } else if (s->cfg.join != NULL) {
        return join_fetch(s, fresh, cf.id);
    } else {
        refuse_empty(s, "of a membership");
        return KV_ECONFIG;
    }
    return 0;
}

/* Step 1: the data dir exists (made by kvd init, or now for --join) and is
 * this process's alone. */
static int start_lock(server *s, server_start *st) {
    const server_config *cfg = &s->cfg;
    if (cfg->join == NULL && dd_check_format(s->rfs, cfg->data_dir, NULL, NULL) == KV_EMISSING) {
        refuse_empty(s, "and was not made by kvd init"); /* and nothing is created */
        return KV_ECONFIG;
    }
    int rc = dd_init(s->rfs, cfg->data_dir);
    if (rc != 0)
        return rc;
    return startup_lock(cfg->data_dir, &st->lock_fd);
}

/* Step 2: the log, the state machine and the newest snapshot, made to
 * agree (store.h); then the hard state, checked against the log's highest
 * term. On 0 the caller owns *ss (store_start_free). */
static int start_store(server *s, server_start *st, store_start *ss, hs_state *hst) {
    const server_config *cfg = &s->cfg;
    wal_options wo;
    wal_options_default(&wo);
    if (cfg->wal_segment_bytes != 0)
        wo.segment_bytes = cfg->wal_segment_bytes;
    wo.slow_sync_ns = (uint64_t)cfg->slow_fsync_ms * 1000000u;
    int rc = store_open(s->fs, s->rfs, cfg->data_dir, &wo, &st->w, &st->sm, ss);
    if (rc != 0)
        return rc;
    if ((rc = startup_hs_load(s->fs, cfg->data_dir, st->w, &st->h, hst)) != 0)
        store_start_free(ss);
    return rc;
}

/* Step 4: Raft's configuration from the hard state, the snapshot and,
 * when this start bootstraps, the founders in the book. */
static void start_raft_config(server *s, const store_start *ss, const hs_state *hst,
                              bool bootstrap, raft_config *rcfg) {
    raft_config_init(rcfg, s->id);
    rcfg->election_ticks = s->cfg.election_ticks;
    rcfg->seed = s->id ^ (uint64_t)getpid() ^ kv_now_ns();
    rcfg->snapshot_read = server_snapshot_read;
    rcfg->snapshot_ctx = s;
    rcfg->hs.term = hst->term;
    rcfg->hs.vote = hst->vote;
    rcfg->hs.commit = hst->commit;
    rcfg->applied = ss->applied;
    if (ss->has_snap) {
        rcfg->has_snapshot = true;
        rcfg->snapshot.index = ss->snap.index;
        rcfg->snapshot.term = ss->snap.term;
        /* the membership at the snapshot's index, not the state machine's
         * (later) one: raft replays the log's changes after it */
        if (ss->snap_members != NULL)
            server_members_to_raft(ss->snap_members, &rcfg->snapshot.membership);
    }
    if (bootstrap) {
        for (size_t i = 0; i < s->members_count; i++)
            rcfg->bootstrap.voters[rcfg->bootstrap.voters_count++] = s->members[i].id;
    }
    assert(rcfg->bootstrap.voters_count <= KV_NODES_MAX);
}

/* Start-up as one step: lock the data dir, open the storage, learn the
 * cluster id and the members (the data dir's, kvd init's founders, or the
 * cluster joined), and configure Raft. Fills *st; on failure what was
 * opened is in *st too (start_adopt, then start_abandon, closes it). */
static int server_start_up(server *s, server_start *st) {
    memset(st, 0, sizeof *st);
    st->lock_fd = -1;
    int rc = start_lock(s, st);
    store_start ss;
    hs_state hst;
    if (rc != 0 || (rc = start_store(s, st, &ss, &hst)) != 0)
        return rc;
    /* Step 3: membership and addresses */
    bool fresh = ss.last == 0 && !ss.has_snap, bootstrap = false;
    if ((rc = book_load(s, st->sm, fresh, &bootstrap)) != 0) {
        store_start_free(&ss);
        return rc;
    }
    start_raft_config(s, &ss, &hst, bootstrap, &st->raft);
    st->entries = ss.entries; /* taken */
    st->entries_count = ss.entries_count;
    ss.entries = NULL;
    ss.entries_count = 0;
    KV_LOGI("START",
            "node %s (id %016" PRIx64 ") cluster %s: log %" PRIu64 "..%" PRIu64 ", applied %" PRIu64
            ", snapshot %" PRIu64 ", term %" PRIu64,
            s->cfg.name, s->id, s->cluster_id, ss.first, ss.last, ss.applied,
            ss.has_snap ? ss.snap.index : 0, hst.term);
    store_start_free(&ss);
    return 0;
}

/* The loop's owner takes what start-up opened (also after a failure, to
 * close it). */
static void start_adopt(server *s, server_start *st) {
    assert(s->w == NULL && s->sm == NULL && s->h == NULL && s->lock_fd < 0);
    s->lock_fd = st->lock_fd;
    s->w = st->w;
    s->h = st->h;
    s->sm = st->sm;
    if (st->raft.has_snapshot) {
        s->snap_index = st->raft.snapshot.index;
        s->snap_term = st->raft.snapshot.term;
    }
    st->lock_fd = -1;
    st->w = NULL;
    st->h = NULL;
    st->sm = NULL;
}

/* Raft from st's configuration and entries (freed here, also on failure). */
static int start_raft(server *s, server_start *st) {
    size_t n = st->entries_count;
    wal_entry *we = st->entries;
    st->entries = NULL;
    st->entries_count = 0;
    raft_entry *re = n ? calloc(n, sizeof(*re)) : NULL;
    if (n && re == NULL) {
        wal_entries_free(we, n);
        return KV_ENOMEM;
    }
    for (size_t i = 0; i < n; i++) {
        re[i].index = we[i].index;
        re[i].term = we[i].term;
        re[i].type = we[i].type;
        re[i].data = we[i].data;
        re[i].len = we[i].len;
    }
    st->raft.entries = re;
    st->raft.entries_count = n;
    int rc = raft_new(&st->raft, &s->r);
    free(re);
    st->raft.entries = NULL;
    wal_entries_free(we, n);
    if (rc != 0)
        KV_LOGE(kv_errword(rc), "the persisted raft state does not restart: %s", kv_strerror(rc));
    return rc;
}

static server *server_new(const server_config *cfg) {
    server *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return NULL;
    s->cfg = *cfg;
    s->id = server_node_id(cfg->name);
    s->lock_fd = -1;
    s->rfs = kv_fs_posix();
    s->fs = cfg->unsafe_no_fsync ? kv_fs_posix_unsafe_nosync() : s->rfs;
    kv_fs_join(s->db_dir, sizeof s->db_dir, cfg->data_dir, "db");
    kv_fs_join(s->snap_dir, sizeof s->snap_dir, cfg->data_dir, "snap");
    pthread_mutex_init(&s->mu, NULL);
    ring_init(&s->pending, sizeof(server_pending));
    ring_init(&s->reads, sizeof(server_read));
    s->snap_out.cached_chunk = UINT64_MAX;
    return s;
}

/* A start that failed: closes what it opened, so the sanitizer builds see
 * no leak on this path. */
static int start_abandon(server *s, int rc) {
    int code = server_exit_code(rc);
    if (s->w != NULL)
        wal_close(s->w);
    sm_close(s->sm);
    if (s->h != NULL)
        hs_close(s->h);
    raft_free(s->r);
    if (s->lock_fd >= 0)
        close(s->lock_fd);
    free(s);
    return code;
}

/* ---- serving ------------------------------------------------------------------ */

/* The network and /metrics. Returns a kvd_exit code. */
static int serve_open(server *s) {
    const server_config *cfg = &s->cfg;
    net_config nc;
    net_config_default(&nc);
    nc.loop = &s->loop;
    nc.listen_addr = cfg->listen;
    nc.node_name = cfg->name;
    nc.cluster_id = s->cluster_id;
    nc.token = cfg->token;
    nc.ctx = s;
    nc.on_request = server_on_request;
    nc.on_raft = on_raft;
    int rc = net_open(&nc, &s->net);
    if (rc != 0) {
        fprintf(stderr, "kvd: cannot listen on %s: %s\n", cfg->listen, kv_strerror(rc));
        return rc == KV_EINVAL ? KVD_EXIT_USAGE : KVD_EXIT_IO;
    }
    server_peers_sync(s);
    if (cfg->metrics != NULL &&
        (rc = http_open(&s->loop, cfg->metrics, server_http, s, &s->http)) != 0)
        return rc == KV_EINVAL ? KVD_EXIT_USAGE : KVD_EXIT_IO;
    return KVD_EXIT_OK;
}

/* The loop's handles, then the loop until SIGTERM or SIGINT stops it. */
static void serve(server *s) {
    const server_config *cfg = &s->cfg;
    uv_timer_init(&s->loop, &s->tick);
    uv_timer_start(&s->tick, on_tick, cfg->tick_ms, cfg->tick_ms);
    uv_prepare_init(&s->loop, &s->prepare);
    uv_prepare_start(&s->prepare, on_prepare);
    server_disk_start(s);
    uv_signal_init(&s->loop, &s->sigterm);
    uv_signal_start(&s->sigterm, on_signal, SIGTERM);
    uv_signal_init(&s->loop, &s->sigint);
    uv_signal_start(&s->sigint, on_signal, SIGINT);
    KV_LOGI("SERVE", "listening on %s%s", cfg->listen,
            cfg->unsafe_no_fsync ? " (UNSAFE: --unsafe-no-fsync)" : "");
    char ready[256];
    snprintf(ready, sizeof ready, "READY=1\nSTATUS=serving on %s", cfg->listen);
    server_notify(ready); /* Type=notify: systemd counts the node started */

    uv_run(&s->loop, UV_RUN_DEFAULT);
}

/* SIGTERM: the log first (everything queued is synced), then the rest.
 * Frees s; returns exit_code. */
static int server_stop(server *s, int exit_code) {
    http_close(s->http);
    if (s->net != NULL)
        net_close(s->net);
    wal_close(s->w);
    uv_walk(&s->loop, close_walk, NULL);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    uv_loop_close(&s->loop);
    server_snap_out_close(s);
    if (s->snap_in)
        fclose(s->snap_in);
    sm_close(s->sm);
    hs_close(s->h);
    raft_free(s->r);
    ring_free(&s->pending);
    ring_free(&s->reads);
    free(s->apply_entries);
    free(s->apply_replies);
    free(s->apply_bufs);
    free(s->scratch);
    close(s->lock_fd);
    free(s);
    if (exit_code == KVD_EXIT_OK)
        KV_LOGI("STOP", "clean shutdown");
    return exit_code;
}

int server_run(const server_config *cfg) {
    server *s = server_new(cfg);
    if (s == NULL)
        return KVD_EXIT_IO;
    kv_log_set_prefix(cfg->name);
    if (cfg->unsafe_no_fsync)
        KV_LOGW("UNSAFE", "--unsafe-no-fsync: nothing is synced; a crash loses acknowledged "
                          "writes. For tests only.");
    server_start st;
    int rc = server_start_up(s, &st);
    start_adopt(s, &st); /* also what a failed start opened, to close it */
    if (rc == 0)
        rc = start_raft(s, &st);
    if (rc != 0)
        return start_abandon(s, rc);

    uv_loop_init(&s->loop);
    int exit_code = serve_open(s);
    s->tick.data = s->prepare.data = s->wal_async.data = s->sigterm.data = s->sigint.data = s;
    uv_async_init(&s->loop, &s->wal_async, on_wal_async);
    if (exit_code == KVD_EXIT_OK)
        serve(s);
    return server_stop(s, exit_code);
}
