/*
 * The fake half of node_io and the cluster helpers of test_node.c: see
 * node_fake.h.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "node_fake.h"

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

fk_cluster *fk_new(uint32_t count, bool pre_vote, bool check_quorum) {
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
void fk_crash(fk_cluster *c, uint64_t id) {
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

void fk_restart(fk_cluster *c, uint64_t id) {
    ck_assert_ptr_null(c->n[id].nd);
    c->n[id].restarts++;
    fk_start(c, &c->n[id]);
}

void fk_free(fk_cluster *c) {
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
int fk_run(fk_cluster *c, uint64_t id) {
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
void fk_sync(fk_cluster *c, uint64_t id) {
    fk_node *n = &c->n[id];
    if (n->last > n->durable) {
        n->durable = n->last;
        node_log_durable(n->nd, n->last, n->log[n->last - 1].term);
    }
    fk_run(c, id);
}

void fk_isolate(fk_cluster *c, uint64_t id, bool cut) {
    for (uint32_t o = 1; o <= c->count; o++)
        c->cut[id][o] = c->cut[o][id] = cut && o != id;
}

/* Delivers what is in flight, in send order, until the network is quiet. */
void fk_deliver_all(fk_cluster *c) {
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

void fk_tick_all(fk_cluster *c, uint32_t ticks) {
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

void fk_restart_down(fk_cluster *c) {
    for (uint32_t id = 1; id <= c->count; id++)
        if (c->n[id].nd == NULL)
            fk_restart(c, id);
    for (uint32_t id = 1; id <= c->count; id++)
        fk_run(c, id);
}

/* The up leader of the highest term, or 0. */
uint64_t fk_leader(const fk_cluster *c) {
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
void fk_elect(fk_cluster *c, uint64_t id) {
    ck_assert_int_eq(raft_campaign(node_raft(c->n[id].nd)), 0);
    fk_run(c, id);
    fk_deliver_all(c);
    fk_tick_all(c, 2); /* the commit index reaches the followers */
    ck_assert_uint_eq(fk_leader(c), id);
}

int fk_propose(fk_cluster *c, uint64_t id, const char *data) {
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
int fk_ask_read(fk_cluster *c, uint64_t id, size_t *slot) {
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
void fk_check_acked(const fk_cluster *c) {
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
void fk_snapshot(fk_cluster *c, uint64_t id) {
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
