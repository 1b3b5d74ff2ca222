/*
 * Unit tests of src/node (node.h): the Ready loop's order and answers, with a
 * fake half of node_io.
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
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

/* ---- the fake half of node_io ------------------------------------------------ */

static fk_node *fk_io(void *ctx) {
    fk_node *n = ctx;
    ck_assert_ptr_nonnull(n->nd);
    ck_assert_msg(!n->faulted, "node %lu: a callback after a failed one in the same Ready",
                  (unsigned long)n->id);
    return n;
}

/* The injected fault: 0, or FK_EFAULT at the armed call. */
static int fk_fault(fk_node *n, fk_call call) {
    if (n->fail_call != call || ++n->calls != n->fail_nth)
        return 0;
    n->faulted = true;
    n->c->faults_fired++;
    return FK_EFAULT;
}

static int fk_hs_save(void *ctx, const raft_hard_state *hs) {
    fk_node *n = fk_io(ctx);
    if (fk_fault(n, FK_HS_SAVE))
        return FK_EFAULT;
    ck_assert_uint_ge(hs->term, n->hs.term);
    n->hs = *hs;
    n->hs_saves++;
    return 0;
}

/* The snapshot is the applied entries 1..index, so installing it makes
 * both the log and the state machine those entries; durable on return. */
static int fk_snap_install(void *ctx, const raft_snapshot_meta *meta) {
    fk_node *n = fk_io(ctx);
    if (fk_fault(n, FK_SNAP_INSTALL))
        return FK_EFAULT;
    ck_assert_uint_eq(n->recv_index, meta->index);
    ck_assert_uint_eq(n->recv_len, meta->index * sizeof(fk_entry));
    ck_assert_uint_lt(meta->index, FK_LOG_MAX);
    memcpy(n->log, n->recv, n->recv_len);
    memcpy(n->sm, n->recv, n->recv_len);
    n->last = n->durable = n->applied = meta->index;
    n->membership = meta->membership;
    free(n->snap_data);
    n->snap_data = n->recv;
    n->snap_len = n->recv_len;
    n->snap = *meta;
    n->has_snap = true;
    n->recv = NULL;
    n->recv_len = 0;
    return 0;
}

static int fk_snap_chunk(void *ctx, const raft_snapshot_chunk *ch) {
    fk_node *n = fk_io(ctx);
    if (fk_fault(n, FK_SNAP_CHUNK))
        return FK_EFAULT;
    if (ch->offset == 0 || ch->index != n->recv_index || ch->term != n->recv_term) {
        n->recv_len = 0;
        n->recv_index = ch->index;
        n->recv_term = ch->term;
    }
    ck_assert_uint_eq(ch->offset, n->recv_len);
    n->recv = realloc(n->recv, n->recv_len + ch->len + 1);
    ck_assert_ptr_nonnull(n->recv);
    memcpy(n->recv + n->recv_len, ch->data, ch->len);
    n->recv_len += ch->len;
    return 0;
}

static int fk_snapshot_read(void *ctx, uint64_t index, uint64_t term, uint64_t offset, void *buf,
                            size_t len, size_t *got, uint64_t *total_size) {
    const fk_node *n = ctx;
    if (!n->has_snap || n->snap.index != index || n->snap.term != term)
        return KV_ESTALE;
    ck_assert_uint_le(offset, n->snap_len);
    size_t avail = n->snap_len - (size_t)offset;
    *got = avail < len ? avail : len;
    memcpy(buf, n->snap_data + offset, *got);
    *total_size = n->snap_len;
    return 0;
}

/* A message may carry only a term and a vote the disk holds (PreVote's are
 * the campaign's next term, never stored). */
static void fk_check_sendable(const fk_node *n, const raft_msg *m) {
    ck_assert_uint_eq(m->from, n->id);
    if (m->type == RAFT_MSG_PREVOTE || m->type == RAFT_MSG_PREVOTE_RESP)
        return;
    ck_assert_msg(m->term <= n->hs.term, "node %lu sends term %lu, durable term %lu",
                  (unsigned long)n->id, (unsigned long)m->term, (unsigned long)n->hs.term);
    if (m->type == RAFT_MSG_VOTE_RESP && !m->reject)
        ck_assert_msg(n->hs.term == m->term && n->hs.vote == m->to,
                      "node %lu grants a vote the disk does not hold", (unsigned long)n->id);
    if (m->type == RAFT_MSG_VOTE)
        ck_assert_msg(n->hs.term == m->term && n->hs.vote == n->id,
                      "node %lu asks for votes before its own is durable", (unsigned long)n->id);
}

static int fk_send(void *ctx, const raft_msg *msgs, size_t count) {
    fk_node *n = fk_io(ctx);
    if (fk_fault(n, FK_SEND))
        return FK_EFAULT;
    fk_cluster *c = n->c;
    for (size_t i = 0; i < count; i++) {
        fk_check_sendable(n, &msgs[i]);
        ck_assert_uint_lt(c->net_count, FK_NET_MAX);
        ck_assert_int_eq(raft_msg_copy(&c->net[c->net_count++], &msgs[i]), 0);
        n->msgs_sent++;
    }
    return 0;
}

/* Durable now unless manual-sync; the node must hold a node_log_durable made
 * from in here until raft_advance (raft's persisted index does not move). */
static int fk_log_append(void *ctx, const raft_entry *e, size_t count) {
    fk_node *n = fk_io(ctx);
    if (fk_fault(n, FK_LOG_APPEND))
        return FK_EFAULT;
    ck_assert(e[0].index >= 1 && e[0].index <= n->last + 1);
    n->last = e[0].index - 1; /* a replaced suffix goes */
    if (n->durable > n->last)
        n->durable = n->last;
    for (size_t i = 0; i < count; i++) {
        ck_assert_uint_eq(e[i].index, n->last + 1);
        ck_assert_uint_lt(e[i].index, FK_LOG_MAX);
        ck_assert_uint_le(e[i].len, FK_DATA_BYTES);
        fk_entry *d = &n->log[n->last++];
        *d = (fk_entry){.index = e[i].index, .term = e[i].term, .type = e[i].type, .len = e[i].len};
        if (e[i].len > 0)
            memcpy(d->data, e[i].data, e[i].len);
    }
    if (!n->manual_sync) {
        uint64_t before = raft_persisted_index(node_raft(n->nd));
        n->durable = n->last;
        node_log_durable(n->nd, n->last, n->log[n->last - 1].term);
        ck_assert_uint_eq(raft_persisted_index(node_raft(n->nd)), before);
        n->held_checks++;
    }
    return 0;
}

static int fk_apply(void *ctx, const raft_entry *e, size_t count, const raft_membership *m) {
    fk_node *n = fk_io(ctx);
    if (fk_fault(n, FK_APPLY))
        return FK_EFAULT;
    if (m != NULL)
        n->membership = *m;
    for (size_t i = 0; i < count; i++) {
        ck_assert_uint_eq(e[i].index, n->applied + 1);
        ck_assert_msg(e[i].index <= n->durable, "node %lu applies %lu, durable %lu",
                      (unsigned long)n->id, (unsigned long)e[i].index, (unsigned long)n->durable);
        ck_assert_uint_eq(n->log[e[i].index - 1].term, e[i].term);
        n->sm[n->applied++] = n->log[e[i].index - 1];
    }
    return 0;
}

/* "done" only for the write's own entry, applied here; in index order, once. */
static void fk_write_done(void *ctx, const node_write *w, size_t pos, int code) {
    fk_node *n = fk_io(ctx);
    fk_cluster *c = n->c;
    (void)pos;
    ck_assert_uint_lt(w->tag.id, c->writes_count);
    fk_write *rec = &c->writes[w->tag.id];
    ck_assert_msg(!rec->answered, "write %s answered twice", rec->data);
    ck_assert_uint_eq(rec->node, n->id);
    ck_assert_uint_gt(w->index, n->answered_index); /* index order */
    n->answered_index = w->index;
    rec->answered = true;
    rec->code = code;
    if (code != 0) {
        ck_assert(code == KV_ENOTLEADER || code == KV_ECLOSED);
        return;
    }
    ck_assert_msg(w->index <= n->applied, "write %s (index %lu) done, applied %lu", rec->data,
                  (unsigned long)w->index, (unsigned long)n->applied);
    const fk_entry *e = &n->sm[w->index - 1];
    ck_assert_msg(e->term == rec->term && e->len == strlen(rec->data) &&
                      memcmp(e->data, rec->data, e->len) == 0,
                  "write %s done, but index %lu holds another entry", rec->data,
                  (unsigned long)w->index);
    if (w->index > c->acked_max)
        c->acked_max = w->index;
}

static void fk_read_done(void *ctx, const node_tag *t, uint64_t read_index, int code) {
    fk_node *n = fk_io(ctx);
    fk_cluster *c = n->c;
    ck_assert_uint_lt(t->id, c->reads_count);
    fk_read *rec = &c->reads[t->id];
    ck_assert_msg(!rec->answered, "read %lu answered twice", (unsigned long)t->id);
    rec->answered = true;
    rec->code = code;
    rec->index = read_index;
    if (code != 0) {
        ck_assert(code == KV_ENOTLEADER || code == KV_ECLOSED);
        return;
    }
    ck_assert_msg(read_index <= n->applied, "read served at %lu, applied %lu",
                  (unsigned long)read_index, (unsigned long)n->applied);
    ck_assert_msg(read_index >= rec->floor, "read served at %lu misses a write acked at %lu",
                  (unsigned long)read_index, (unsigned long)rec->floor);
    ck_assert_msg(raft_term(node_raft(n->nd)) == rec->term, "read of term %lu served in term %lu",
                  (unsigned long)rec->term, (unsigned long)raft_term(node_raft(n->nd)));
}

static void fk_ready_begin(void *ctx, const struct raft_ready *rd) {
    fk_node *n = fk_io(ctx);
    (void)rd;
    n->applied_at_begin = node_applied(n->nd);
    n->raft_applied_at_begin = raft_applied_index(node_raft(n->nd));
    n->persisted_at_begin = raft_persisted_index(node_raft(n->nd));
}

static const node_io fk_io_vtable = {
    .hs_save = fk_hs_save,
    .snap_install = fk_snap_install,
    .snap_chunk = fk_snap_chunk,
    .send = fk_send,
    .log_append = fk_log_append,
    .apply = fk_apply,
    .write_done = fk_write_done,
    .read_done = fk_read_done,
    .ready_begin = fk_ready_begin,
};

/* ---- the cluster: start, crash, restart, run ---------------------------------- */

static void fk_start(fk_cluster *c, fk_node *n) {
    raft_config cfg;
    raft_config_init(&cfg, n->id);
    cfg.seed = n->id * 1000 + n->restarts;
    cfg.pre_vote = c->pre_vote;
    cfg.check_quorum = c->check_quorum;
    cfg.snapshot_read = fk_snapshot_read;
    cfg.snapshot_ctx = n;
    cfg.hs = n->hs;
    if (cfg.hs.commit > n->durable)
        cfg.hs.commit = n->durable;
    uint64_t after = n->has_snap ? n->snap.index : 0;
    raft_entry *ents = calloc(n->durable + 1, sizeof(*ents));
    ck_assert_ptr_nonnull(ents);
    for (uint64_t i = after; i < n->durable; i++)
        ents[i - after] = (raft_entry){.index = n->log[i].index,
                                       .term = n->log[i].term,
                                       .type = n->log[i].type,
                                       .data = n->log[i].data,
                                       .len = n->log[i].len};
    cfg.entries = ents;
    cfg.entries_count = n->durable - after;
    for (uint32_t i = 1; i <= c->count; i++)
        cfg.bootstrap.voters[cfg.bootstrap.voters_count++] = i;
    cfg.has_snapshot = n->has_snap;
    cfg.snapshot = n->snap;
    /* the state machine is volatile: the snapshot, then the log applied again */
    cfg.applied = after;
    memcpy(n->sm, n->log, after * sizeof(fk_entry));
    n->membership = n->has_snap ? n->snap.membership : cfg.bootstrap;
    node_io io = fk_io_vtable;
    io.ctx = n;
    n->applied = after;
    n->answered_index = 0;
    n->faulted = false;
    ck_assert_int_eq(node_new(&cfg, &io, &c->lim, &n->nd), 0);
    free(ents);
}

static fk_cluster *fk_new(uint32_t count, bool pre_vote, bool check_quorum) {
    fk_cluster *c = calloc(1, sizeof(*c));
    ck_assert_ptr_nonnull(c);
    c->count = count;
    c->pre_vote = pre_vote;
    c->check_quorum = check_quorum;
    c->lim = (node_limits){.pending_bytes_max = 1u << 20, .reads_max = FK_READS_MAX};
    for (uint32_t id = 1; id <= count; id++) {
        c->n[id].id = id;
        c->n[id].c = c;
        fk_start(c, &c->n[id]);
    }
    return c;
}

/* The process dies: what waits is answered CLOSED (the clients' connections
 * close), and what was not durable is gone. */
static void fk_crash(fk_cluster *c, uint64_t id) {
    fk_node *n = &c->n[id];
    ck_assert_ptr_nonnull(n->nd);
    n->faulted = false;
    node_fail_all(n->nd, KV_ECLOSED);
    ck_assert_uint_eq(node_writes_waiting(n->nd) + node_reads_waiting(n->nd), 0);
    node_free(n->nd);
    n->nd = NULL;
    n->last = n->durable;
    n->applied = 0;
    free(n->recv);
    n->recv = NULL;
    n->recv_len = 0;
    size_t kept = 0;
    for (size_t i = 0; i < c->net_count; i++) {
        if (c->net[i].to == id)
            raft_msg_free(&c->net[i]);
        else
            c->net[kept++] = c->net[i];
    }
    c->net_count = kept;
}

static void fk_restart(fk_cluster *c, uint64_t id) {
    ck_assert_ptr_null(c->n[id].nd);
    c->n[id].restarts++;
    fk_start(c, &c->n[id]);
}

static void fk_free(fk_cluster *c) {
    for (uint32_t id = 1; id <= c->count; id++)
        if (c->n[id].nd != NULL)
            fk_crash(c, id);
    for (size_t i = 0; i < c->net_count; i++)
        raft_msg_free(&c->net[i]);
    for (uint32_t id = 1; id <= c->count; id++)
        free(c->n[id].snap_data);
    free(c);
}

/* node_run; an injected fault must come back as its code, with nothing of
 * the failed Ready advanced, and the node is crashed (fail-stop). */
static int fk_run(fk_cluster *c, uint64_t id) {
    fk_node *n = &c->n[id];
    if (n->nd == NULL)
        return 0;
    int rc = node_run(n->nd);
    if (rc == 0) {
        ck_assert(!n->faulted);
        return 0;
    }
    ck_assert_int_eq(rc, FK_EFAULT);
    ck_assert(n->faulted);
    ck_assert_uint_eq(node_applied(n->nd), n->applied_at_begin);
    ck_assert_uint_eq(raft_applied_index(node_raft(n->nd)), n->raft_applied_at_begin);
    ck_assert_uint_eq(raft_persisted_index(node_raft(n->nd)), n->persisted_at_begin);
    fk_crash(c, id);
    return rc;
}

/* Makes node id's written entries durable (manual-sync mode), then runs it. */
static void fk_sync(fk_cluster *c, uint64_t id) {
    fk_node *n = &c->n[id];
    if (n->last > n->durable) {
        n->durable = n->last;
        node_log_durable(n->nd, n->last, n->log[n->last - 1].term);
    }
    fk_run(c, id);
}

static void fk_isolate(fk_cluster *c, uint64_t id, bool cut) {
    for (uint32_t o = 1; o <= c->count; o++)
        c->cut[id][o] = c->cut[o][id] = cut && o != id;
}

/* Delivers what is in flight, in send order, until the network is quiet. */
static void fk_deliver_all(fk_cluster *c) {
    for (uint32_t round = 0; c->net_count > 0; round++) {
        ck_assert_uint_lt(round, FK_ROUNDS_MAX * FK_NET_MAX);
        raft_msg m = c->net[0];
        memmove(c->net, c->net + 1, (c->net_count - 1) * sizeof(c->net[0]));
        c->net_count--;
        fk_node *to = &c->n[m.to];
        if (to->nd != NULL && !c->cut[m.from][m.to]) {
            node_step(to->nd, &m); /* a refused message is raft's to count */
            fk_run(c, m.to);
        }
        raft_msg_free(&m);
    }
}

static void fk_tick_all(fk_cluster *c, uint32_t ticks) {
    for (uint32_t t = 0; t < ticks; t++) {
        for (uint32_t id = 1; id <= c->count; id++) {
            if (c->n[id].nd != NULL) {
                node_tick(c->n[id].nd);
                fk_run(c, id);
            }
        }
        fk_deliver_all(c);
    }
}

static void fk_restart_down(fk_cluster *c) {
    for (uint32_t id = 1; id <= c->count; id++)
        if (c->n[id].nd == NULL)
            fk_restart(c, id);
    for (uint32_t id = 1; id <= c->count; id++)
        fk_run(c, id);
}

/* The up leader of the highest term, or 0. */
static uint64_t fk_leader(const fk_cluster *c) {
    uint64_t best = 0, best_term = 0;
    for (uint32_t id = 1; id <= c->count; id++) {
        node *nd = c->n[id].nd;
        if (nd != NULL && node_is_leader(nd) && raft_term(node_raft(nd)) >= best_term) {
            best = id;
            best_term = raft_term(node_raft(nd));
        }
    }
    return best;
}

/* Node id campaigns now and everything is delivered. */
static void fk_elect(fk_cluster *c, uint64_t id) {
    ck_assert_int_eq(raft_campaign(node_raft(c->n[id].nd)), 0);
    fk_run(c, id);
    fk_deliver_all(c);
    fk_tick_all(c, 2); /* the commit index reaches the followers */
    ck_assert_uint_eq(fk_leader(c), id);
}

static int fk_propose(fk_cluster *c, uint64_t id, const char *data) {
    ck_assert_uint_lt(c->writes_count, FK_WRITES_MAX);
    fk_write *w = &c->writes[c->writes_count];
    *w = (fk_write){.node = id};
    snprintf(w->data, sizeof(w->data), "%s", data);
    node_tag tag = {.id = c->writes_count};
    int rc = node_propose(c->n[id].nd, data, strlen(data), &tag, &w->index);
    if (rc != 0)
        return rc;
    w->term = raft_term(node_raft(c->n[id].nd));
    c->writes_count++;
    fk_run(c, id);
    return 0;
}

/* A read at id; *slot gets its record's index. */
static int fk_ask_read(fk_cluster *c, uint64_t id, size_t *slot) {
    ck_assert_uint_lt(c->reads_count, FK_READS_MAX);
    fk_read *r = &c->reads[c->reads_count];
    *r = (fk_read){.node = id, .floor = c->acked_max};
    node_tag tag = {.id = c->reads_count};
    int rc = node_read(c->n[id].nd, &tag);
    if (rc != 0)
        return rc;
    r->term = raft_term(node_raft(c->n[id].nd));
    *slot = c->reads_count++;
    fk_run(c, id);
    return 0;
}

/* Every write answered done is in every up node's state machine that got
 * that far, at its index. */
static void fk_check_acked(const fk_cluster *c) {
    for (size_t i = 0; i < c->writes_count; i++) {
        const fk_write *w = &c->writes[i];
        if (!w->answered || w->code != 0)
            continue;
        for (uint32_t id = 1; id <= c->count; id++) {
            const fk_node *n = &c->n[id];
            if (n->nd == NULL || n->applied < w->index)
                continue;
            const fk_entry *e = &n->sm[w->index - 1];
            ck_assert_msg(e->term == w->term && memcmp(e->data, w->data, e->len) == 0,
                          "node %u lost acknowledged write %s", id, w->data);
        }
    }
}

/* Node id snapshots its state machine at its applied index and compacts its
 * log up to it: a follower that lacks those entries gets the snapshot. */
static void fk_snapshot(fk_cluster *c, uint64_t id) {
    fk_node *n = &c->n[id];
    raft *r = node_raft(n->nd);
    uint64_t term;
    ck_assert_int_eq(raft_log_term(r, n->applied, &term), 0);
    ck_assert_int_eq(raft_snapshot_done(r, n->applied, term), 0);
    free(n->snap_data);
    n->snap_len = n->applied * sizeof(fk_entry);
    n->snap_data = malloc(n->snap_len);
    ck_assert_ptr_nonnull(n->snap_data);
    memcpy(n->snap_data, n->sm, n->snap_len);
    n->snap = (raft_snapshot_meta){.index = n->applied, .term = term, .membership = n->membership};
    n->has_snap = true;
    ck_assert_int_eq(raft_compact(r, n->applied), 0);
    ck_assert_uint_eq(raft_first_index(r), n->applied + 1);
    fk_run(c, id);
}

/* ---- the tests ------------------------------------------------------------------- */

/* Term and vote are on disk before any message that carries them leaves:
 * the candidate's VOTE requests and the voters' grants (the fake's send
 * checks each message against the fake disk). */
START_TEST(test_hard_state_durable_before_send) {
    fk_cluster *c = fk_new(3, false, true);
    ck_assert_int_eq(raft_campaign(node_raft(c->n[1].nd)), 0);
    fk_run(c, 1);
    ck_assert_uint_eq(c->n[1].hs.term, 2);
    ck_assert_uint_eq(c->n[1].hs.vote, 1);
    ck_assert_uint_eq(c->net_count, 2); /* a VOTE to each peer, checked at send */
    ck_assert_int_eq(c->net[0].type, RAFT_MSG_VOTE);
    fk_deliver_all(c);
    ck_assert_uint_eq(fk_leader(c), 1);
    for (uint32_t id = 2; id <= 3; id++) {
        ck_assert_uint_eq(c->n[id].hs.term, 2);
        ck_assert_uint_eq(c->n[id].hs.vote, 1); /* the grant was sent after this */
        ck_assert_uint_ge(c->n[id].hs_saves, 1);
        ck_assert_uint_ge(c->n[id].msgs_sent, 1);
    }
    /* with PreVote too: a new term's messages only after its hard state */
    fk_cluster *p = fk_new(3, true, true);
    fk_elect(p, 2);
    ck_assert_uint_eq(p->n[2].hs.vote, 2);
    fk_free(p);
    fk_free(c);
}
END_TEST

/* A write is answered only once its entry is applied, in index order,
 * exactly once (the fake checks each answer against its state machine). */
START_TEST(test_write_answered_after_apply) {
    fk_cluster *c = fk_new(1, true, true);
    fk_elect(c, 1);
    c->n[1].manual_sync = true;
    ck_assert_int_eq(fk_propose(c, 1, "a"), 0);
    ck_assert_int_eq(fk_propose(c, 1, "b"), 0);
    ck_assert_int_eq(fk_propose(c, 1, "c"), 0);
    ck_assert(!c->writes[0].answered && !c->writes[1].answered && !c->writes[2].answered);
    ck_assert_uint_lt(c->n[1].applied, c->writes[0].index);
    ck_assert_uint_eq(node_writes_waiting(c->n[1].nd), 3);
    fk_sync(c, 1); /* durable: commits, applies, answers */
    for (size_t i = 0; i < 3; i++) {
        ck_assert(c->writes[i].answered);
        ck_assert_int_eq(c->writes[i].code, 0);
    }
    ck_assert_uint_eq(c->n[1].applied, c->writes[2].index);
    ck_assert_uint_eq(node_writes_waiting(c->n[1].nd), 0);
    ck_assert_uint_eq(node_pending_bytes(c->n[1].nd), 0);
    fk_free(c);

    /* three nodes: not before a quorum has it and the leader applied it */
    c = fk_new(3, true, true);
    fk_elect(c, 1);
    ck_assert_int_eq(fk_propose(c, 1, "x"), 0);
    ck_assert(!c->writes[0].answered);
    fk_deliver_all(c);
    ck_assert(c->writes[0].answered);
    ck_assert_int_eq(c->writes[0].code, 0);
    fk_free(c);
}
END_TEST

/* The isolated leader's write is replaced by the next leader's entries: its
 * client hears "outcome unknown" (NOTLEADER), never "done". */
START_TEST(test_replaced_write_outcome_unknown) {
    fk_cluster *c = fk_new(3, false, false);
    fk_elect(c, 1);
    fk_isolate(c, 1, true);
    ck_assert_int_eq(fk_propose(c, 1, "x"), 0);
    uint64_t x_index = c->writes[0].index;
    fk_deliver_all(c); /* lost */
    fk_elect(c, 2);
    ck_assert_int_eq(fk_propose(c, 2, "y"), 0);
    fk_deliver_all(c);
    ck_assert(c->writes[1].answered && c->writes[1].code == 0);
    ck_assert(node_is_leader(c->n[1].nd)); /* 1 has heard nothing yet */
    ck_assert(!c->writes[0].answered);
    fk_isolate(c, 1, false);
    fk_tick_all(c, 3);
    ck_assert(c->writes[0].answered);
    ck_assert_int_eq(c->writes[0].code, KV_ENOTLEADER);
    ck_assert_uint_ge(c->n[1].applied, x_index);
    ck_assert_uint_ne(c->n[1].sm[x_index - 1].term, c->writes[0].term); /* replaced */
    fk_check_acked(c);
    fk_free(c);
}
END_TEST

/* A leader that steps down answers every write and read it was waiting on
 * NOTLEADER, and accepts no more. */
START_TEST(test_step_down_fails_pending) {
    fk_cluster *c = fk_new(3, true, true);
    fk_elect(c, 1);
    fk_isolate(c, 1, true);
    ck_assert_int_eq(fk_propose(c, 1, "p1"), 0);
    ck_assert_int_eq(fk_propose(c, 1, "p2"), 0);
    size_t r1, r2;
    ck_assert_int_eq(fk_ask_read(c, 1, &r1), 0);
    ck_assert_int_eq(fk_ask_read(c, 1, &r2), 0);
    fk_deliver_all(c);
    ck_assert_uint_eq(node_writes_waiting(c->n[1].nd), 2);
    ck_assert_uint_eq(node_reads_waiting(c->n[1].nd), 2);
    for (uint32_t t = 0; t < 40 && node_is_leader(c->n[1].nd); t++) {
        node_tick(c->n[1].nd); /* CheckQuorum: no majority heard */
        fk_run(c, 1);
        fk_deliver_all(c);
    }
    ck_assert(!node_is_leader(c->n[1].nd));
    ck_assert(c->writes[0].answered && c->writes[0].code == KV_ENOTLEADER);
    ck_assert(c->writes[1].answered && c->writes[1].code == KV_ENOTLEADER);
    ck_assert(c->reads[r1].answered && c->reads[r1].code == KV_ENOTLEADER);
    ck_assert(c->reads[r2].answered && c->reads[r2].code == KV_ENOTLEADER);
    ck_assert_uint_eq(node_writes_waiting(c->n[1].nd), 0);
    ck_assert_uint_eq(node_reads_waiting(c->n[1].nd), 0);
    ck_assert_uint_eq(node_pending_bytes(c->n[1].nd), 0);
    ck_assert_int_eq(fk_propose(c, 1, "p3"), KV_ENOTLEADER);
    ck_assert_int_eq(fk_ask_read(c, 1, &r1), KV_ENOTLEADER);
    fk_free(c);
}
END_TEST

/* Leader 1's disk is slow: a quorum of followers commits its write, so the
 * read's index covers it, but the leader has not applied it. The read is
 * confirmed and must wait for the apply. Returns the read's slot. */
static size_t fk_read_behind_apply(fk_cluster *c, const char *data) {
    c->n[1].manual_sync = true;
    ck_assert_int_eq(fk_propose(c, 1, data), 0);
    const fk_write *w = &c->writes[c->writes_count - 1];
    fk_deliver_all(c);
    ck_assert_uint_ge(raft_commit_index(node_raft(c->n[1].nd)), w->index);
    ck_assert_uint_lt(c->n[1].applied, w->index);
    size_t slot;
    ck_assert_int_eq(fk_ask_read(c, 1, &slot), 0);
    fk_deliver_all(c); /* the heartbeat round confirms it */
    ck_assert_uint_eq(raft_read_pending(node_raft(c->n[1].nd)), 0);
    ck_assert(!c->reads[slot].answered);
    ck_assert_uint_eq(node_reads_waiting(c->n[1].nd), 1);
    return slot;
}

/* Reads: served only once the applied index covers the read index; a read
 * confirmed in a term the node then leaves is answered NOTLEADER, never
 * served; the next leader's reads cover everything acknowledged before. */
START_TEST(test_reads_apply_and_term_change) {
    fk_cluster *c = fk_new(3, false, true);
    fk_elect(c, 1);
    ck_assert_int_eq(fk_propose(c, 1, "a"), 0);
    fk_tick_all(c, 2);
    size_t r1 = fk_read_behind_apply(c, "b");
    fk_sync(c, 1);
    ck_assert(c->reads[r1].answered && c->reads[r1].code == 0);
    ck_assert_uint_ge(c->reads[r1].index, c->writes[1].index);
    ck_assert(c->writes[1].answered && c->writes[1].code == 0);

    /* the same, then a new term before the apply */
    size_t r2 = fk_read_behind_apply(c, "c");
    uint64_t term = raft_term(node_raft(c->n[1].nd));
    fk_isolate(c, 1, true); /* 2 and 3 elect a leader of a later term */
    for (uint32_t t = 0; t < 100 && fk_leader(c) == 1; t++) {
        for (uint64_t id = 2; id <= 3; id++) {
            node_tick(c->n[id].nd);
            fk_run(c, id);
        }
        fk_deliver_all(c);
    }
    ck_assert_uint_ne(fk_leader(c), 1);
    ck_assert(node_is_leader(c->n[1].nd)); /* 1 has heard nothing yet */
    ck_assert(!c->reads[r2].answered);
    fk_isolate(c, 1, false);
    fk_tick_all(c, 2);
    ck_assert_uint_gt(raft_term(node_raft(c->n[1].nd)), term);
    ck_assert(c->reads[r2].answered);
    ck_assert_int_eq(c->reads[r2].code, KV_ENOTLEADER);
    fk_sync(c, 1);
    fk_tick_all(c, 3);
    ck_assert_int_eq(c->reads[r2].code, KV_ENOTLEADER); /* still: answered once */

    /* the new leader: a read right after its election covers every write
     * acknowledged before it (the fake checks the floor) */
    uint64_t leader = fk_leader(c);
    ck_assert_uint_ne(leader, 0);
    ck_assert_uint_ne(leader, 1);
    size_t r3;
    ck_assert_int_eq(fk_ask_read(c, leader, &r3), 0);
    fk_tick_all(c, 3);
    ck_assert(c->reads[r3].answered && c->reads[r3].code == 0);
    ck_assert_uint_ge(c->reads[r3].index, c->writes[1].index);
    fk_check_acked(c);
    fk_free(c);
}
END_TEST

/* At the pending-bytes and reads limits: accepted; one past: KV_EBUSY; free
 * again once answered. */
START_TEST(test_limits_busy) {
    fk_cluster *c = fk_new(3, true, true);
    c->lim = (node_limits){.pending_bytes_max = 8, .reads_max = 2};
    for (uint32_t id = 1; id <= 3; id++) {
        fk_crash(c, id);
        fk_restart(c, id);
    }
    fk_elect(c, 1);
    ck_assert_int_eq(fk_propose(c, 1, "aaaa"), 0);
    ck_assert_int_eq(fk_propose(c, 1, "bbbb"), 0); /* at the limit: 8 bytes */
    ck_assert_uint_eq(node_pending_bytes(c->n[1].nd), 8);
    ck_assert_int_eq(fk_propose(c, 1, "c"), KV_EBUSY);
    size_t slot;
    ck_assert_int_eq(fk_ask_read(c, 1, &slot), 0);
    ck_assert_int_eq(fk_ask_read(c, 1, &slot), 0);
    ck_assert_int_eq(fk_ask_read(c, 1, &slot), KV_EBUSY);
    fk_deliver_all(c);
    ck_assert_uint_eq(node_pending_bytes(c->n[1].nd), 0);
    ck_assert_uint_eq(node_reads_waiting(c->n[1].nd), 0);
    ck_assert_int_eq(fk_propose(c, 1, "c"), 0);
    ck_assert_int_eq(fk_ask_read(c, 1, &slot), 0);
    fk_free(c);
}
END_TEST

/* One run of the crash workload: writes through whoever leads, the victim
 * failing its nth call of one callback, crashed and restarted from its disk.
 * Returns whether the fault fired. */
static const char *fk_call_name(fk_call call) {
    static const char *names[] = {"none", "hs_save",    "snap_install", "snap_chunk",
                                  "send", "log_append", "apply"};
    return names[call];
}

static bool fk_crash_run(fk_call call, uint64_t victim, uint32_t nth) {
    fk_cluster *c = fk_new(3, true, true);
    c->n[victim].fail_call = call;
    c->n[victim].fail_nth = nth;
    ck_assert_int_eq(raft_campaign(node_raft(c->n[1].nd)), 0); /* 1 leads, unless it fails */
    fk_run(c, 1);
    for (uint32_t k = 0; k < 6; k++) {
        uint64_t leader = 0;
        for (uint32_t t = 0; t < 200 && (leader = fk_leader(c)) == 0; t++) {
            fk_restart_down(c);
            fk_tick_all(c, 1);
        }
        ck_assert_uint_ne(leader, 0);
        char data[16];
        snprintf(data, sizeof(data), "w%u", k);
        (void)fk_propose(c, leader, data); /* may find it gone: NOTLEADER */
        fk_tick_all(c, 2);
        fk_restart_down(c);
        fk_check_acked(c);
    }
    bool fired = c->faults_fired > 0;
    ck_assert_uint_le(c->faults_fired, 1);
    /* the cluster goes on: a last write is acknowledged and reaches all */
    c->n[victim].fail_call = FK_NONE;
    bool done = false;
    for (uint32_t t = 0; t < 200 && !done; t++) {
        fk_restart_down(c);
        fk_tick_all(c, 1);
        uint64_t leader = fk_leader(c);
        const fk_write *last = c->writes_count ? &c->writes[c->writes_count - 1] : NULL;
        if (last == NULL || strcmp(last->data, "final") != 0 || last->answered) {
            done = last != NULL && strcmp(last->data, "final") == 0 && last->code == 0;
            if (!done && leader != 0)
                (void)fk_propose(c, leader, "final");
        }
    }
    ck_assert_msg(done, "%s call %u of node %lu: the cluster did not commit again",
                  fk_call_name(call), nth, (unsigned long)victim);
    fk_tick_all(c, 3);
    for (uint32_t id = 1; id <= 3; id++)
        ck_assert_uint_ge(c->n[id].applied, c->acked_max);
    fk_check_acked(c);
    fk_free(c);
    return fired;
}

/* A snapshot sent to follower 3 (cut off while the leader compacted), with
 * node 3 failing its nth call of snap_chunk or snap_install. */
static bool fk_snap_crash_run(fk_call call, uint32_t nth) {
    fk_cluster *c = fk_new(3, true, true);
    fk_elect(c, 1);
    fk_isolate(c, 3, true);
    for (uint32_t k = 0; k < 4; k++) {
        char data[16];
        snprintf(data, sizeof(data), "s%u", k);
        ck_assert_int_eq(fk_propose(c, 1, data), 0);
        fk_tick_all(c, 1);
    }
    fk_snapshot(c, 1);
    uint64_t snap_index = c->n[1].snap.index;
    c->n[3].fail_call = call;
    c->n[3].fail_nth = nth;
    fk_isolate(c, 3, false);
    for (uint32_t t = 0; t < 300 && (c->n[3].nd == NULL || c->n[3].applied < snap_index); t++) {
        fk_restart_down(c);
        fk_tick_all(c, 1);
    }
    ck_assert_ptr_nonnull(c->n[3].nd);
    ck_assert_uint_ge(c->n[3].applied, snap_index);
    ck_assert(c->n[3].has_snap);
    bool fired = c->faults_fired > 0;
    ck_assert_int_eq(fk_propose(c, fk_leader(c), "final"), 0);
    fk_tick_all(c, 3);
    const fk_write *last = &c->writes[c->writes_count - 1];
    ck_assert(last->answered && last->code == 0);
    for (uint32_t id = 1; id <= 3; id++)
        ck_assert_uint_ge(c->n[id].applied, c->acked_max);
    fk_check_acked(c);
    fk_free(c);
    return fired;
}

/* A crash at every point of a Ready: each callback in turn fails at its
 * 1st, 2nd, ... call, until the workload no longer reaches that call:
 * hs_save, send, log_append, apply on the first leader (1) and on a
 * follower (2); snap_chunk, snap_install on a follower catching up. */
START_TEST(test_crash_at_every_point) {
    const fk_call calls[] = {FK_HS_SAVE, FK_SEND, FK_LOG_APPEND, FK_APPLY};
    uint32_t runs = 0;
    for (size_t i = 0; i < sizeof(calls) / sizeof(calls[0]); i++) {
        for (uint64_t victim = 1; victim <= 2; victim++) {
            uint32_t nth = 1;
            while (fk_crash_run(calls[i], victim, nth)) {
                nth++;
                runs++;
                ck_assert_uint_lt(nth, FK_FAULT_NTH_MAX);
            }
            ck_assert_uint_gt(nth, 1); /* the point was reached at least once */
            printf("test_crash_at_every_point: %s of node %lu failed at calls 1..%u\n",
                   fk_call_name(calls[i]), (unsigned long)victim, nth - 1);
        }
    }
    const fk_call snap_calls[] = {FK_SNAP_CHUNK, FK_SNAP_INSTALL};
    for (size_t i = 0; i < 2; i++) {
        uint32_t nth = 1;
        while (fk_snap_crash_run(snap_calls[i], nth)) {
            nth++;
            runs++;
            ck_assert_uint_lt(nth, FK_FAULT_NTH_MAX);
        }
        ck_assert_uint_gt(nth, 1);
        printf("test_crash_at_every_point: %s of node 3 failed at calls 1..%u\n",
               fk_call_name(snap_calls[i]), nth - 1);
    }
    ck_assert_uint_gt(runs, 0);
}
END_TEST

/* node_log_durable from inside log_append reaches raft only after
 * raft_advance (the fake checks raft's persisted index does not move inside
 * the Ready), and is not lost: the write commits in the same node_run. */
START_TEST(test_log_durable_held_until_advance) {
    fk_cluster *c = fk_new(1, true, true);
    fk_elect(c, 1);
    uint64_t checks = c->n[1].held_checks;
    ck_assert_int_eq(fk_propose(c, 1, "a"), 0);
    ck_assert_uint_gt(c->n[1].held_checks, checks);
    ck_assert_uint_eq(raft_persisted_index(node_raft(c->n[1].nd)), c->writes[0].index);
    ck_assert(c->writes[0].answered && c->writes[0].code == 0);
    ck_assert_uint_eq(node_applied(c->n[1].nd), c->writes[0].index);
    fk_free(c);
}
END_TEST

static Suite *node_suite(void) {
    Suite *s = suite_create("node");
    TCase *t = tcase_create("core");
    tcase_add_test(t, test_hard_state_durable_before_send);
    tcase_add_test(t, test_write_answered_after_apply);
    tcase_add_test(t, test_replaced_write_outcome_unknown);
    tcase_add_test(t, test_step_down_fails_pending);
    tcase_add_test(t, test_reads_apply_and_term_change);
    tcase_add_test(t, test_limits_busy);
    tcase_add_test(t, test_crash_at_every_point);
    tcase_add_test(t, test_log_durable_held_until_advance);
    suite_add_tcase(s, t);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(node_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
