/* kvd's half of node_io (src/node/node.h): the hard state file, the log and
 * its completion thread, the RocksDB state machine, snapshots and src/net.
 *
 * Every callback is fail-stop as kvd always was: a failure ends the process
 * through server_fatal / server_fatal_sm with the same exit code and log
 * line, so none of them returns non-zero to node_run.
 *
 * Writes and reads carry a node_tag: owner is the net_conn (referenced by
 * server_req.c when the node accepted it, unreferenced here when it is
 * answered), id the request id, kind the latency kind (server_req_kind);
 * a read's data is its Kv__Request (freed here). */
#include "server/server_int.h"

#include "common/clock.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "server/server.h" /* the exit codes (kvd_exit) */

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void backlog_free_from(server *s, size_t from);
static bool backlog_submit(server *s);

/* ---- step 1: hard state ------------------------------------------------------ */

static int io_hs_save(void *ctx, const raft_hard_state *hs) {
    server *s = ctx;
    hs_state st = {.term = hs->term, .vote = hs->vote, .commit = hs->commit};
    int rc = hs_save(s->h, &st);
    if (rc != 0)
        server_fatal(s, KVD_EXIT_IO, kv_errword(rc), "saving term and vote: %s", kv_strerror(rc));
    return 0;
}

/* ---- steps 2-4: snapshots, messages ---------------------------------------- */

static int io_snap_install(void *ctx, const raft_snapshot_meta *meta) {
    /* the log is replaced by the snapshot: entries still waiting for room
     * in it were never durable nor acknowledged, and go with it */
    backlog_free_from(ctx, 0);
    server_snapshot_install(ctx, meta); /* durable on return, or the process stopped */
    return 0;
}

static int io_snap_chunk(void *ctx, const raft_snapshot_chunk *ch) {
    server_snapshot_chunk(ctx, ch);
    return 0;
}

static int io_send(void *ctx, const raft_msg *msgs, size_t n) {
    server *s = ctx;
    assert(n > 0);
    net_send_raft(s->net, msgs, n);
    return 0;
}

/* ---- step 5: the log; its threads -> the loop ----------------------------------- */

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
    if (status == 0 && pthread_equal(pthread_self(), s->loop_thread)) {
        /* wal_append_now wrote it here: raft hears of it in this Ready */
        node_log_durable(s->node, a->index, a->term);
        free(a);
        return;
    }
    free(a);
    uv_async_send(&s->wal_async);
}

void server_on_wal_async(uv_async_t *h) {
    server *s = h->data;
    pthread_mutex_lock(&s->mu);
    int err = s->wal_error;
    uint64_t idx = s->durable_index, term = s->durable_term;
    pthread_mutex_unlock(&s->mu);
    if (err != 0)
        server_fatal(s, KVD_EXIT_IO, kv_errword(err), "the log failed to write or sync: %s",
                     kv_strerror(err));
    if (idx > 0)
        node_log_durable(s->node, idx, term);
    if (s->backlog_n > 0)
        backlog_submit(s); /* the completions made room */
}

/* Hands e[0..n) to the log; its callback reports them durable. 0,
 * KV_EBUSY (the log's queue is full: nothing was taken) or a fatal error. */
static int log_submit(server *s, const wal_entry *we, size_t n) {
    wal_done_arg *a = malloc(sizeof(*a));
    if (a == NULL)
        server_fatal(s, KVD_EXIT_IO, "NOMEM", "out of memory appending %zu entries", n);
    a->s = s;
    a->index = we[n - 1].index;
    a->term = we[n - 1].term;
    /* A follower acknowledges entries once durable and has nothing to
     * overlap with the sync but what waits in its sockets: it writes on the
     * loop when the log is idle (two thread hand-offs fewer per round trip).
     * A leader's loop goes on serving while the log syncs. */
    int rc = node_is_leader(s->node) ? wal_append(s->w, we, n, on_wal_done, a)
                                     : wal_append_now(s->w, we, n, on_wal_done, a);
    if (rc != 0)
        free(a);
    if (rc != 0 && rc != KV_EBUSY)
        server_fatal(s, KVD_EXIT_IO, kv_errword(rc),
                     "appending entries %" PRIu64 "..%" PRIu64 " to the log failed: %s",
                     we[0].index, we[n - 1].index, kv_strerror(rc));
    return rc;
}

static void backlog_free_from(server *s, size_t from) {
    for (size_t i = from; i < s->backlog_n; i++) {
        s->backlog_bytes -= s->backlog[i].len;
        free(s->backlog[i].data);
    }
    s->backlog_n = from;
}

/* Copies e[0..n) behind the backlog; entries it replaces (a new leader's
 * suffix: e[0].index at or below the backlog's last) go first. */
static void backlog_add(server *s, const raft_entry *e, size_t n) {
    size_t keep = 0;
    while (keep < s->backlog_n && s->backlog[keep].index < e[0].index)
        keep++;
    backlog_free_from(s, keep);
    if (s->backlog_n + n > s->backlog_cap) {
        size_t cap = s->backlog_cap ? s->backlog_cap : 64;
        while (cap < s->backlog_n + n)
            cap *= 2;
        wal_entry *b = realloc(s->backlog, cap * sizeof(*b));
        if (b == NULL)
            server_fatal(s, KVD_EXIT_IO, "NOMEM", "out of memory holding %zu entries", n);
        s->backlog = b;
        s->backlog_cap = cap;
    }
    for (size_t i = 0; i < n; i++) {
        wal_entry *x = &s->backlog[s->backlog_n];
        x->index = e[i].index;
        x->term = e[i].term;
        x->type = (uint8_t)e[i].type;
        x->len = (uint32_t)e[i].len;
        x->data = NULL;
        if (e[i].len > 0 && (x->data = malloc(e[i].len)) == NULL)
            server_fatal(s, KVD_EXIT_IO, "NOMEM", "out of memory holding entry %" PRIu64,
                         e[i].index);
        if (e[i].len > 0)
            memcpy(x->data, e[i].data, e[i].len);
        s->backlog_bytes += e[i].len;
        s->backlog_n++;
    }
}

/* How many of we[0..n) go to the log in one append (at least one): at
 * most a batch, and never more than the log's queue holds, so an append
 * is never refused as too big for the queue (KV_ETOOBIG). */
static size_t chunk_len(const server *s, const wal_entry *we, size_t n) {
    uint64_t max = s->cfg.wal_queue_bytes != 0 ? s->cfg.wal_queue_bytes : KV_WAL_QUEUE_BYTES_MAX;
    max = max < KV_WAL_BATCH_BYTES_MAX ? max : KV_WAL_BATCH_BYTES_MAX;
    size_t k = 0;
    uint64_t bytes = 0;
    do {
        bytes += KV_WAL_RECORD_HEADER_BYTES + we[k].len;
        k++;
    } while (k < n && bytes + KV_WAL_RECORD_HEADER_BYTES + we[k].len <= max);
    return k;
}

/* Hands the backlog to the log, a chunk at a time, while its queue takes
 * them. True when nothing is left. */
static bool backlog_submit(server *s) {
    if (s->backlog_n == 0)
        return true;
    while (s->backlog_n > 0) {
        size_t k = chunk_len(s, s->backlog, s->backlog_n);
        if (log_submit(s, s->backlog, k) == KV_EBUSY)
            return false;
        for (size_t i = 0; i < k; i++) {
            s->backlog_bytes -= s->backlog[i].len;
            free(s->backlog[i].data);
        }
        memmove(s->backlog, s->backlog + k, (s->backlog_n - k) * sizeof(*s->backlog));
        s->backlog_n -= k;
    }
    KV_LOGI("BUSY", "the log's queue has room again; writes are accepted");
    return true;
}

bool server_log_backlogged(const server *s) {
    return s->backlog_n > 0;
}

void server_log_backlog_drain(server *s) {
    while (!backlog_submit(s))
        usleep(1000); /* only before a snapshot (server_int.h) */
}

void server_log_backlog_free(server *s) {
    backlog_free_from(s, 0);
    free(s->backlog);
    s->backlog = NULL;
    s->backlog_cap = 0;
}

/* Never blocks the loop: when the log's queue is full (a disk slower than
 * what arrives), the entries wait in the backlog, copied, and go to the log
 * in order as its completions make room (server_on_wal_async). Nothing
 * changes for durability: raft hears of them only from their callbacks.
 * Meanwhile the leader refuses new writes with BUSY (server_propose_cmd),
 * so only what a leader sends a follower can add to the backlog, as far as
 * its flow control lets it (KV_RAFT_INFLIGHT_MSGS_MAX messages). */
static int io_log_append(void *ctx, const raft_entry *e, size_t n) {
    server *s = ctx;
    assert(n > 0);
    if (s->backlog_n > 0 && e[0].index <= s->backlog[0].index)
        backlog_free_from(s, 0); /* all replaced: the log overrides its own */
    if (s->backlog_n > 0) {
        backlog_add(s, e, n);
        backlog_submit(s);
        return 0;
    }
    wal_entry stack[64];
    wal_entry *we = n <= 64 ? stack : malloc(n * sizeof(*we));
    if (we == NULL)
        server_fatal(s, KVD_EXIT_IO, "NOMEM", "out of memory appending %zu entries", n);
    for (size_t i = 0; i < n; i++) {
        we[i].index = e[i].index;
        we[i].term = e[i].term;
        we[i].type = (uint8_t)e[i].type;
        we[i].len = (uint32_t)e[i].len;
        we[i].data = e[i].data;
    }
    size_t done = 0;
    while (done < n) {
        size_t k = chunk_len(s, we + done, n - done);
        if (log_submit(s, we + done, k) == KV_EBUSY)
            break;
        done += k;
    }
    if (we != stack)
        free(we);
    if (done < n) {
        s->log_full_total++;
        KV_LOGW("BUSY",
                "the log's queue is full: entries %" PRIu64 "..%" PRIu64
                " wait for room and writes are refused BUSY meanwhile",
                e[done].index, e[n - 1].index);
        backlog_add(s, e + done, n - done);
    }
    return 0;
}

/* ---- step 6: apply ------------------------------------------------------------- */

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

static void apply_reserve(server *s, size_t n) {
    if (n <= s->apply_cap)
        return;
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

/* e as the state machine's entry x: the address book for CONF and MEMBER
 * entries (stored with it), a no-op for HASH. True when e is a HASH check
 * point (its hash is taken at exactly this entry). */
static bool apply_prepare(server *s, const raft_entry *e, sm_entry *x, uint8_t **buf) {
    x->index = e->index;
    x->term = e->term;
    x->type = SM_ENTRY_COMMAND;
    x->payload = e->data;
    x->len = e->len;
    *buf = NULL;
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
        store_book = true;
    } else {
        Kv__Command *c = node_command(e);
        if (c != NULL && c->op == KV__COMMAND__OP__MEMBER) {
            char name[KV_NODE_NAME_BYTES_MAX + 1] = "", addr[SERVER_ADDR_BYTES] = "";
            if (c->key.len < sizeof name && c->value.len < sizeof addr) {
                memcpy(name, c->key.data, c->key.len);
                memcpy(addr, c->value.data, c->value.len);
                server_members_joining(s, name, addr);
                store_book = true;
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
        if (server_members_encode(s, e->index, buf, &x->len) != 0)
            server_fatal(s, KVD_EXIT_IO, "NOMEM", "out of memory applying a membership");
        x->type = SM_ENTRY_MEMBERSHIP;
        x->payload = *buf;
        s->apply_book_changed = true;
    }
    return hash_here;
}

/* Applies e in one sm_apply batch (split only at a HASH check point). The
 * replies stay in s->apply_replies for io_write_done until io_apply_end. */
static int io_apply(void *ctx, const raft_entry *e, size_t n, const raft_membership *membership) {
    server *s = ctx;
    (void)membership; /* the book follows each CONF entry itself */
    assert(n > 0 && !s->applying);
    apply_reserve(s, n);
    uint64_t t0 = kv_now_ns();
    s->apply_book_changed = false;
    size_t seg = 0; /* applied up to here */
    for (size_t i = 0; i < n; i++) {
        s->bytes_since_snap += e[i].len;
        if (apply_prepare(s, &e[i], &s->apply_entries[i], &s->apply_bufs[i])) {
            /* the hash at exactly this entry: apply up to it first */
            apply_range(s, seg, i + 1);
            seg = i + 1;
            server_hash_checkpoint(s, e[i].index);
        }
    }
    apply_range(s, seg, n);
    assert(sm_applied_index(s->sm) == e[n - 1].index);
    s->apply_ns_total += kv_now_ns() - t0;
    s->apply_batches++;
    s->applied_entries += n;
    s->applying = true;
    s->apply_count = n;
    return 0;
}

static void io_apply_end(void *ctx) {
    server *s = ctx;
    assert(s->applying);
    size_t n = s->apply_count;
    sm_replies_free(s->apply_replies, n);
    for (size_t i = 0; i < n; i++) {
        free(s->apply_bufs[i]);
        s->apply_bufs[i] = NULL;
    }
    s->applying = false;
    s->apply_count = 0;
    if (s->apply_book_changed)
        server_peers_sync(s);
    server_hash_waiters_serve(s);
}

/* ---- answers ------------------------------------------------------------------ */

/* A proposed write whose outcome this node will not learn. */
static void reply_unknown(net_conn *c, uint64_t id, int code, const char *detail) {
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = id;
    r.code = code;
    r.detail = (char *)detail;
    r.outcome_unknown = true;
    net_reply(c, &r);
}

/* Why a write's outcome is unknown. Inside an apply its index was replaced
 * by another leader's entry; outside, leadership was lost (node.c fails
 * every write then) or the node is stopping (on_signal). */
static const char *unknown_detail(const server *s, int code) {
    assert(code == KV_ENOTLEADER || code == KV_EUNAVAILABLE);
    if (code == KV_EUNAVAILABLE)
        return "the node is shutting down";
    return s->applying ? "leadership changed; outcome unknown, retry"
                       : "leadership lost; outcome unknown, retry";
}

/* w's entry e was applied with reply r. */
static void write_applied(server *s, const node_write *w, const sm_entry *e, const sm_reply *r) {
    net_conn *c = w->tag.owner;
    /* a check point (a HASH entry, applied as a no-op) may wait for its
     * hash; writes never look */
    bool check_point = e->type == SM_ENTRY_NOOP;
    uint64_t h;
    if (check_point && server_hash_at(s, w->index, &h) == KV_EBUSY) {
        /* a check point whose hash is still being computed */
        server_hash_wait_add(s, c, w->tag.id, w->index);
        return;
    }
    Kv__Response resp = KV__RESPONSE__INIT;
    resp.id = w->tag.id;
    resp.code = r->code;
    resp.detail = (char *)(r->detail ? r->detail : "");
    resp.index = r->index;
    resp.client_id = r->client_id;
    resp.current_present = r->current_present;
    resp.current.data = r->current;
    resp.current.len = r->current_len;
    resp.succeeded = r->succeeded;
    resp.results = r->results;
    resp.n_results = r->n_results;
    resp.deleted = r->deleted;
    resp.more_deleted = r->more;
    resp.lease = r->lease; /* LEASE_GRANT */
    if (check_point)
        server_hash_at(s, w->index, &resp.hash);
    net_reply(c, &resp);
    server_req_done(s, (enum server_req_kind)w->tag.kind, w->tag.t0_ns);
}

static void io_write_done(void *ctx, const node_write *w, size_t pos, int code) {
    server *s = ctx;
    net_conn *c = w->tag.owner;
    assert(c != NULL);
    if (code == 0) {
        assert(s->applying && pos < s->apply_count);
        assert(s->apply_entries[pos].index == w->index);
        assert(s->apply_entries[pos].term == w->term);
        write_applied(s, w, &s->apply_entries[pos], &s->apply_replies[pos]);
    } else {
        reply_unknown(c, w->tag.id, code, unknown_detail(s, code));
    }
    net_conn_unref(c);
}

static void io_read_done(void *ctx, const node_tag *t, uint64_t read_index, int code) {
    server *s = ctx;
    net_conn *c = t->owner;
    Kv__Request *q = t->data;
    assert(c != NULL && q != NULL);
    if (code == 0) {
        assert(sm_applied_index(s->sm) >= read_index);
        server_serve_read(s, c, q);
        server_req_done(s, (enum server_req_kind)t->kind, t->t0_ns);
    } else {
        server_reply_code(c, q->id, code, "leadership lost before the read was confirmed; retry");
    }
    kv__request__free_unpacked(q, NULL);
    net_conn_unref(c);
}

/* ---- step 7: role ------------------------------------------------------------- */

static void io_role_changed(void *ctx, const raft_soft_state *ss) {
    server *s = ctx;
    if (ss->role == RAFT_PRE_CANDIDATE)
        KV_LOGI("LEADER", "PreVote for term %" PRIu64, raft_term(s->r) + 1);
    else if (ss->role == RAFT_CANDIDATE)
        KV_LOGI("LEADER", "campaigning in term %" PRIu64, raft_term(s->r));
    server_lease_role(s, ss->role == RAFT_LEADER);
    if (ss->leader == s->leader_id)
        return;
    const server_member *m = server_member_by_id(s, ss->leader);
    if (ss->leader != 0) {
        s->leader_changes++;
        KV_LOGI("LEADER", "leader is now %s (term %" PRIu64 ")", m ? m->name : "?",
                raft_term(s->r));
    }
    s->leader_id = ss->leader;
}

static uint64_t io_now_ns(void *ctx) {
    (void)ctx;
    return kv_now_ns();
}

void server_io_init(server *s, node_io *io, node_limits *lim) {
    memset(io, 0, sizeof(*io));
    io->ctx = s;
    io->hs_save = io_hs_save;
    io->snap_install = io_snap_install;
    io->snap_chunk = io_snap_chunk;
    io->send = io_send;
    io->log_append = io_log_append;
    io->apply = io_apply;
    io->write_done = io_write_done;
    io->apply_end = io_apply_end;
    io->read_done = io_read_done;
    io->role_changed = io_role_changed;
    io->now_ns = io_now_ns;
    lim->pending_bytes_max = KV_PENDING_PROPOSAL_BYTES_MAX;
    lim->reads_max = KV_READ_INDEX_PENDING_MAX;
}
