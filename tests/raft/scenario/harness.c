/*
 * The scenario harness: nodes, their in-memory disks, the fake half of
 * node_io they give src/node, and the per-link message queues. See
 * harness.h.
 */
#include "harness.h"

#include <assert.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"

/* ---- small helpers ---------------------------------------------------------- */

static void sc__violation(sc_cluster *c, const char *fmt, ...) {
    if (c->violation[0] != '\0') {
        return; /* keep the first */
    }
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->violation, sizeof(c->violation), fmt, ap);
    va_end(ap);
}

static void *sc__xrealloc(void *p, size_t bytes) {
    void *q = realloc(p, bytes);
    assert(q != NULL && "scenario harness: out of memory");
    return q;
}

bool sc_node_valid(const sc_cluster *c, uint64_t id) {
    return id >= 1 && id <= SC_NODES_MAX && c->nodes[id].exists;
}

static void sc__sm_append(sc_node *n, const char *data, size_t len) {
    size_t need = n->sm_len + len + 2;
    if (need > n->sm_cap) {
        n->sm_cap = need * 2;
        n->sm = sc__xrealloc(n->sm, n->sm_cap);
    }
    if (n->sm_len > 0) {
        n->sm[n->sm_len++] = ',';
    }
    memcpy(n->sm + n->sm_len, data, len);
    n->sm_len += len;
    n->sm[n->sm_len] = '\0';
}

static void sc__sm_reset(sc_node *n, const char *state) {
    n->sm_len = 0;
    if (n->sm != NULL) {
        n->sm[0] = '\0';
    }
    if (state != NULL && state[0] != '\0') {
        sc__sm_append(n, state, strlen(state));
    }
}

static void sc__log_truncate(sc_node *n, uint64_t last_kept) {
    while (n->log_count > 0 && n->log[n->log_count - 1].index > last_kept) {
        free(n->log[--n->log_count].data);
    }
}

static uint64_t sc__log_last(const sc_node *n) {
    return n->log_first + n->log_count - 1;
}

/* ---- lifecycle ---------------------------------------------------------------- */

void sc_init(sc_cluster *c) {
    memset(c, 0, sizeof(*c));
    raft_config_init(&c->base, 1);
}

static void sc__queue_clear(sc_queue *q) {
    for (size_t i = 0; i < q->count; i++) {
        raft_msg_free(&q->msgs[i]);
    }
    q->count = 0;
}

/* The node stops: what it was still waiting on is answered CLOSED (the
 * client's connection closes with it, outcome unknown), then it is freed. */
static void sc__node_volatile_free(sc_node *n) {
    if (n->node != NULL) {
        node_fail_all(n->node, KV_ECLOSED);
        assert(node_writes_waiting(n->node) == 0 && node_reads_waiting(n->node) == 0);
        node_free(n->node);
        n->node = NULL;
    }
    free(n->recv_data);
    n->recv_data = NULL;
    n->recv_len = 0;
    n->recv_total = 0;
    n->recv_index = 0;
    sc__sm_reset(n, NULL);
    n->applied = 0;
}

void sc_free(sc_cluster *c) {
    for (uint64_t id = 1; id <= SC_NODES_MAX; id++) {
        sc_node *n = &c->nodes[id];
        sc__node_volatile_free(n);
        sc__log_truncate(n, 0);
        free(n->log);
        free(n->snap_data);
        free(n->sm);
        for (uint64_t to = 1; to <= SC_NODES_MAX; to++) {
            sc__queue_clear(&c->links[id][to]);
            free(c->links[id][to].msgs);
        }
    }
    free(c->committed_terms);
    memset(c, 0, sizeof(*c));
}

static int sc__snapshot_read(void *ctx, uint64_t index, uint64_t term, uint64_t offset, void *buf,
                             size_t len, size_t *got, uint64_t *total_size) {
    const sc_node *n = ctx;
    if (!n->has_snap || n->snap.index != index || n->snap.term != term) {
        return KV_ESTALE;
    }
    assert(offset <= n->snap_len);
    size_t avail = n->snap_len - (size_t)offset;
    *got = avail < len ? avail : len;
    memcpy(buf, n->snap_data + offset, *got);
    *total_size = n->snap_len;
    return 0;
}

static const node_io sc__io;

/* Builds node id's node (and its raft) from its disk (empty for a new
 * node). */
static int sc__start(sc_cluster *c, sc_node *n) {
    assert(n->node == NULL && !n->up);
    n->cluster = c;
    raft_config cfg = c->base;
    cfg.id = n->id;
    cfg.seed = n->id;
    cfg.snapshot_read = sc__snapshot_read;
    cfg.snapshot_ctx = n;
    cfg.hs = n->hs_durable;
    if (cfg.hs.commit > n->durable_index) {
        cfg.hs.commit = n->durable_index; /* commit is a hint; never past the log */
    }
    cfg.has_snapshot = n->has_snap;
    cfg.snapshot = n->snap;
    uint64_t after = n->has_snap ? n->snap.index : 0;
    size_t count = 0;
    raft_entry *ents = calloc(n->log_count + 1, sizeof(*ents));
    assert(ents != NULL);
    for (size_t i = 0; i < n->log_count; i++) {
        const sc_entry *e = &n->log[i];
        if (e->index > after && e->index <= n->durable_index) {
            ents[count++] = (raft_entry){.index = e->index,
                                         .term = e->term,
                                         .type = e->type,
                                         .data = e->data,
                                         .len = e->len};
        }
    }
    cfg.entries = ents;
    cfg.entries_count = count;
    cfg.applied = after;
    if (n->founder) {
        cfg.bootstrap = c->bootstrap;
    }
    sc__sm_reset(n, n->has_snap ? n->snap_data : NULL);
    n->applied = after;
    n->membership = n->has_snap ? n->snap.membership : cfg.bootstrap;
    node_io io = sc__io;
    io.ctx = n;
    const node_limits lim = {.pending_bytes_max = SC_PENDING_BYTES_MAX, .reads_max = SC_READS_MAX};
    int rc = node_new(&cfg, &io, &lim, &n->node);
    free(ents);
    if (rc != 0) {
        n->node = NULL;
        return rc;
    }
    assert(n->node != NULL && node_applied(n->node) == n->applied);
    n->up = true;
    return 0;
}

int sc_bootstrap(sc_cluster *c, uint32_t count) {
    assert(count >= 1 && count <= SC_NODES_MAX);
    memset(&c->bootstrap, 0, sizeof(c->bootstrap));
    for (uint32_t i = 1; i <= count; i++) {
        c->bootstrap.voters[c->bootstrap.voters_count++] = i;
    }
    for (uint64_t id = 1; id <= count; id++) {
        sc_node *n = &c->nodes[id];
        assert(!n->exists);
        *n = (sc_node){.id = id, .exists = true, .founder = true, .log_first = 1};
        int rc = sc__start(c, n);
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

int sc_add_node(sc_cluster *c, uint64_t id) {
    if (id < 1 || id > SC_NODES_MAX) {
        return KV_EINVAL;
    }
    sc_node *n = &c->nodes[id];
    if (n->exists) {
        return KV_EEXIST;
    }
    *n = (sc_node){.id = id, .exists = true, .log_first = 1};
    return sc__start(c, n);
}

void sc_crash(sc_cluster *c, uint64_t id) {
    assert(sc_node_valid(c, id));
    sc_node *n = &c->nodes[id];
    sc__node_volatile_free(n);
    n->up = false;
    sc__log_truncate(n, n->durable_index);
    for (uint64_t from = 1; from <= SC_NODES_MAX; from++) {
        sc__queue_clear(&c->links[from][id]);
    }
}

void sc_wipe(sc_cluster *c, uint64_t id) {
    sc_crash(c, id);
    sc_node *n = &c->nodes[id];
    sc__log_truncate(n, 0);
    n->log_first = 1;
    n->durable_index = 0;
    memset(&n->hs_durable, 0, sizeof(n->hs_durable));
    free(n->snap_data);
    n->snap_data = NULL;
    n->snap_len = 0;
    n->has_snap = false;
}

int sc_restart(sc_cluster *c, uint64_t id) {
    assert(sc_node_valid(c, id));
    sc_node *n = &c->nodes[id];
    if (n->up) {
        return KV_EEXIST;
    }
    int rc = sc__start(c, n);
    return rc < 0 ? rc : sc_process(c, id);
}

/* ---- network ------------------------------------------------------------------ */

static void sc__enqueue(sc_cluster *c, const raft_msg *m) {
    if (m->from < 1 || m->from > SC_NODES_MAX || m->to < 1 || m->to > SC_NODES_MAX) {
        sc__violation(c, "message %s to unknown node %" PRIu64, sc_msg_type_name(m->type), m->to);
        return;
    }
    if (c->cut[m->from][m->to] || !c->nodes[m->to].up) { /* lost: cut or down */
        c->msgs_dropped++;
        return;
    }
    sc_queue *q = &c->links[m->from][m->to];
    if (q->count == SC_QUEUE_MSGS_MAX) {
        sc__violation(c, "queue %" PRIu64 "->%" PRIu64 " over %u messages", m->from, m->to,
                      SC_QUEUE_MSGS_MAX);
        return;
    }
    if (q->count == q->cap) {
        q->cap = q->cap == 0 ? 16 : q->cap * 2;
        q->msgs = sc__xrealloc(q->msgs, q->cap * sizeof(*q->msgs));
    }
    int rc = raft_msg_copy(&q->msgs[q->count], m);
    assert(rc == 0);
    q->count++;
}

void sc_cut(sc_cluster *c, uint64_t from, uint64_t to, bool cut) {
    assert(from >= 1 && from <= SC_NODES_MAX && to >= 1 && to <= SC_NODES_MAX);
    c->cut[from][to] = cut;
    if (cut) {
        c->msgs_dropped += c->links[from][to].count;
        sc__queue_clear(&c->links[from][to]);
    }
}

size_t sc_drop(sc_cluster *c, uint64_t from, uint64_t to, size_t max) {
    sc_queue *q = &c->links[from][to];
    size_t n = q->count < max ? q->count : max;
    for (size_t i = 0; i < n; i++) {
        if (c->trace) {
            printf("  drop ");
            sc_print_msg(&q->msgs[i]);
        }
        raft_msg_free(&q->msgs[i]);
    }
    memmove(q->msgs, q->msgs + n, (q->count - n) * sizeof(*q->msgs));
    q->count -= n;
    c->msgs_dropped += n;
    return n;
}

int sc_deliver(sc_cluster *c, uint64_t from, uint64_t to, size_t max, size_t *delivered) {
    sc_queue *q = &c->links[from][to];
    size_t n = q->count < max ? q->count : max;
    *delivered = 0;
    for (size_t i = 0; i < n && q->count > 0; i++) {
        raft_msg m = q->msgs[0];
        memmove(q->msgs, q->msgs + 1, (q->count - 1) * sizeof(*q->msgs));
        q->count--;
        sc_node *dst = &c->nodes[to];
        int rc = 0;
        if (dst->up) {
            if (c->trace) {
                printf("  recv ");
                sc_print_msg(&m);
            }
            rc = node_step(dst->node, &m);
            (*delivered)++;
        }
        raft_msg_free(&m);
        if (rc < 0) {
            return rc;
        }
        rc = dst->up ? sc_process(c, to) : 0;
        if (rc < 0) {
            return rc;
        }
    }
    return 0;
}

int sc_deliver_all(sc_cluster *c) {
    for (uint32_t round = 0; round < SC_DELIVER_ROUNDS_MAX; round++) {
        bool any = false;
        for (uint64_t from = 1; from <= SC_NODES_MAX; from++) {
            for (uint64_t to = 1; to <= SC_NODES_MAX; to++) {
                size_t got;
                if (c->links[from][to].count == 0) {
                    continue;
                }
                any = true;
                int rc = sc_deliver(c, from, to, c->links[from][to].count, &got);
                if (rc < 0) {
                    return rc;
                }
            }
        }
        if (!any) {
            return 0;
        }
    }
    return KV_EBUSY;
}

/* ---- the fake half of node_io: disk, state machine, answers --------------------- */

static void sc__check_leader(sc_cluster *c, const sc_node *n) {
    const raft *r = node_raft(n->node);
    if (raft_state_role(r) != RAFT_LEADER) {
        return;
    }
    uint64_t term = raft_term(r);
    if (term >= SC_TERMS_MAX) {
        return;
    }
    if (c->term_leader[term] != 0 && c->term_leader[term] != n->id) {
        sc__violation(c, "two leaders in term %" PRIu64 ": %" PRIu64 " and %" PRIu64, term,
                      c->term_leader[term], n->id);
    }
    c->term_leader[term] = n->id;
}

/* Step 2: install the snapshot assembled from the stored chunks. */
static void sc__install(sc_cluster *c, sc_node *n, const raft_snapshot_meta *meta) {
    if (n->recv_index != meta->index || n->recv_len != n->recv_total || n->recv_total == 0 ||
        memchr(n->recv_data, '\0', n->recv_len) == NULL) {
        sc__violation(c,
                      "node %" PRIu64 ": install of snapshot %" PRIu64 " with %zu/%" PRIu64
                      " bytes received",
                      n->id, meta->index, n->recv_len, n->recv_total);
        return;
    }
    free(n->snap_data);
    n->snap_data = n->recv_data;
    n->snap_len = n->recv_len;
    n->recv_data = NULL;
    n->recv_len = n->recv_total = n->recv_index = 0;
    n->has_snap = true;
    n->snap = *meta;
    n->snaps_installed++;
    sc__log_truncate(n, 0);
    n->log_first = meta->index + 1;
    n->durable_index = meta->index;
    sc__sm_reset(n, n->snap_data);
    n->applied = meta->index;
    n->membership = meta->membership;
    if (n->applied > c->applied_max) {
        c->applied_max = n->applied;
    }
}

/* Step 3: store one chunk of the snapshot being received. */
static void sc__store_chunk(sc_cluster *c, sc_node *n, const raft_snapshot_chunk *ch) {
    if (ch->offset == 0 || ch->index != n->recv_index || ch->term != n->recv_term) {
        n->recv_len = 0;
        n->recv_index = ch->index;
        n->recv_term = ch->term;
    }
    if (ch->offset != n->recv_len) {
        sc__violation(c, "node %" PRIu64 ": chunk at offset %" PRIu64 ", expected %zu", n->id,
                      ch->offset, n->recv_len);
        return;
    }
    n->recv_total = ch->total_size;
    n->recv_data = sc__xrealloc(n->recv_data, n->recv_len + ch->len + 1);
    memcpy(n->recv_data + n->recv_len, ch->data, ch->len);
    n->recv_len += ch->len;
    n->chunks_stored++;
}

/* Step 5: write entries (truncating a conflicting suffix). */
static void sc__append(sc_cluster *c, sc_node *n, const raft_entry *ents, size_t count) {
    if (count == 0) {
        return;
    }
    if (ents[0].index < n->log_first || ents[0].index > sc__log_last(n) + 1) {
        sc__violation(c, "node %" PRIu64 ": append at %" PRIu64 " to log [%" PRIu64 ",%" PRIu64 "]",
                      n->id, ents[0].index, n->log_first, sc__log_last(n));
        return;
    }
    sc__log_truncate(n, ents[0].index - 1);
    if (n->durable_index >= ents[0].index) {
        n->durable_index = ents[0].index - 1;
    }
    if (n->log_count + count > n->log_cap) {
        n->log_cap = (n->log_count + count) * 2;
        n->log = sc__xrealloc(n->log, n->log_cap * sizeof(*n->log));
    }
    for (size_t i = 0; i < count; i++) {
        sc_entry *e = &n->log[n->log_count++];
        *e = (sc_entry){
            .index = ents[i].index, .term = ents[i].term, .type = ents[i].type, .len = ents[i].len};
        e->data = sc__xrealloc(NULL, ents[i].len + 1);
        if (ents[i].len > 0) {
            memcpy(e->data, ents[i].data, ents[i].len);
        }
        e->data[ents[i].len] = '\0';
    }
}

static void sc__check_committed(sc_cluster *c, sc_node *n, const raft_entry *e) {
    if (e->index != n->applied + 1) {
        sc__violation(c, "node %" PRIu64 ": applies %" PRIu64 " after %" PRIu64, n->id, e->index,
                      n->applied);
    }
    if (e->index > n->durable_index) {
        sc__violation(c, "node %" PRIu64 ": applies %" PRIu64 " not durable (durable %" PRIu64 ")",
                      n->id, e->index, n->durable_index);
    }
    if (e->index >= c->committed_cap) {
        size_t cap = (size_t)e->index * 2 + 64;
        c->committed_terms = sc__xrealloc(c->committed_terms, cap * sizeof(uint64_t));
        memset(c->committed_terms + c->committed_cap, 0,
               (cap - c->committed_cap) * sizeof(uint64_t));
        c->committed_cap = cap;
    }
    uint64_t *t = &c->committed_terms[e->index];
    if (*t != 0 && *t != e->term) {
        sc__violation(c,
                      "index %" PRIu64 " committed with term %" PRIu64 " and %" PRIu64
                      " (node %" PRIu64 ")",
                      e->index, *t, e->term, n->id);
    }
    *t = e->term;
}

/* The node behind a callback's ctx: one that exists and is running. */
static sc_node *sc__io_node(void *ctx) {
    sc_node *n = ctx;
    assert(n != NULL && n->exists && n->node != NULL && n->cluster != NULL);
    assert(n->cluster->nodes[n->id].node == n->node);
    return n;
}

/* Step 1: term and vote, durable on return. */
static int sc__io_hs_save(void *ctx, const raft_hard_state *hs) {
    sc_node *n = sc__io_node(ctx);
    assert(hs->term >= n->hs_durable.term);
    n->hs_durable = *hs;
    assert(n->hs_durable.term == hs->term && n->hs_durable.vote == hs->vote);
    return 0;
}

/* Step 2: durable on return (the disk and the state machine change
 * together). */
static int sc__io_snap_install(void *ctx, const raft_snapshot_meta *meta) {
    sc_node *n = sc__io_node(ctx);
    sc__install(n->cluster, n, meta);
    assert(n->applied == meta->index || n->cluster->violation[0] != '\0');
    return 0;
}

static int sc__io_snap_chunk(void *ctx, const raft_snapshot_chunk *ch) {
    sc_node *n = sc__io_node(ctx);
    sc__store_chunk(n->cluster, n, ch);
    return 0;
}

/* Step 4: copies into the per-link queues. */
static int sc__io_send(void *ctx, const raft_msg *msgs, size_t count) {
    sc_node *n = sc__io_node(ctx);
    assert(count > 0);
    for (size_t i = 0; i < count; i++) {
        assert(msgs[i].from == n->id);
        if (n->cluster->trace) {
            printf("  send ");
            sc_print_msg(&msgs[i]);
        }
        sc__enqueue(n->cluster, &msgs[i]);
    }
    return 0;
}

/* Step 5: written now; durable now (node_log_durable from inside the Ready:
 * the node holds it until raft_advance) unless the node is in manual-sync
 * mode, where only sc_persist() makes it durable. */
static int sc__io_log_append(void *ctx, const raft_entry *e, size_t count) {
    sc_node *n = sc__io_node(ctx);
    assert(count > 0);
    sc__append(n->cluster, n, e, count);
    if (!n->manual_sync && n->log_count > 0) {
        const sc_entry *last = &n->log[n->log_count - 1];
        assert(last->index == e[count - 1].index && last->term == e[count - 1].term);
        n->durable_index = last->index;
        node_log_durable(n->node, last->index, last->term);
    }
    return 0;
}

/* Step 6: the state machine. */
static int sc__io_apply(void *ctx, const raft_entry *e, size_t count,
                        const raft_membership *membership) {
    sc_node *n = sc__io_node(ctx);
    sc_cluster *c = n->cluster;
    assert(count > 0);
    for (size_t i = 0; i < count; i++) {
        sc__check_committed(c, n, &e[i]);
        if (e[i].type == RAFT_ENTRY_NORMAL) {
            sc__sm_append(n, e[i].len > 0 ? e[i].data : "", e[i].len);
        }
        n->applied = e[i].index;
    }
    if (membership != NULL) {
        n->membership = *membership;
    }
    if (n->applied > c->applied_max) {
        c->applied_max = n->applied;
    }
    return 0;
}

/* A write's answer: "done" only for its own entry, applied here. */
static void sc__io_write_done(void *ctx, const node_write *w, size_t pos, int code) {
    sc_node *n = sc__io_node(ctx);
    sc_cluster *c = n->cluster;
    (void)pos;
    assert(w->tag.owner == n && w->tag.id < c->writes_count);
    sc_write *rec = &c->writes[w->tag.id];
    assert(rec->node == n->id && rec->index == w->index);
    if (rec->answered) {
        sc__violation(c, "write '%s' answered twice", rec->name);
        return;
    }
    bool applied_here = w->index <= n->applied && w->index < c->committed_cap &&
                        c->committed_terms[w->index] == w->term;
    if (code == 0 && !applied_here) {
        sc__violation(c,
                      "write '%s' (%" PRIu64 "/%" PRIu64 ") answered done, node %" PRIu64
                      " applied %" PRIu64,
                      rec->name, w->index, w->term, n->id, n->applied);
    }
    rec->answered = true;
    rec->code = code;
    if (c->trace) {
        printf("  answer %" PRIu64 ": write '%s' (%" PRIu64 "/%" PRIu64 ") %s\n", n->id, rec->name,
               w->index, w->term, code == 0 ? "done" : kv_errword(code));
    }
}

/* A read's answer: "ok" only once applied covers its read index, which
 * covers everything applied anywhere before the read was asked. */
static void sc__io_read_done(void *ctx, const node_tag *t, uint64_t read_index, int code) {
    sc_node *n = sc__io_node(ctx);
    sc_cluster *c = n->cluster;
    assert(t->owner == n && t->id < n->reads_count);
    sc_read *rd = &n->reads[t->id];
    if (rd->answered) {
        sc__violation(c, "node %" PRIu64 ": read %" PRIu64 " answered twice", n->id, rd->ctx);
        return;
    }
    if (code == 0 && (read_index > n->applied || read_index < rd->floor)) {
        sc__violation(c,
                      "node %" PRIu64 ": read %" PRIu64 " served at %" PRIu64 " (applied %" PRIu64
                      ", applied anywhere when asked %" PRIu64 ")",
                      n->id, rd->ctx, read_index, n->applied, rd->floor);
    }
    rd->answered = true;
    rd->status = code;
    rd->index = code == 0 ? read_index : 0;
    if (c->trace) {
        printf("  answer %" PRIu64 ": read %" PRIu64 " %s at %" PRIu64 "\n", n->id, rd->ctx,
               code == 0 ? "ok" : kv_errword(code), rd->index);
    }
}

static void sc__trace_ready(const sc_node *n, const struct raft_ready *rd) {
    printf("  ready %" PRIu64 ":", n->id);
    if (rd->hs_changed) {
        printf(" hs(term=%" PRIu64 " vote=%" PRIu64 " commit=%" PRIu64 "%s)", rd->hs.term,
               rd->hs.vote, rd->hs.commit, rd->hs_must_sync ? " sync" : "");
    }
    if (rd->ss_changed) {
        printf(" %s(leader=%" PRIu64 ")", sc_role_name(rd->ss.role), rd->ss.leader);
    }
    if (rd->has_snapshot) {
        printf(" install-snapshot(%" PRIu64 "/%" PRIu64 ")", rd->snapshot.index, rd->snapshot.term);
    }
    if (rd->has_chunk) {
        printf(" chunk(%" PRIu64 "@%" PRIu64 "+%zu%s)", rd->chunk.index, rd->chunk.offset,
               rd->chunk.len, rd->chunk.last ? " last" : "");
    }
    if (rd->entries_count > 0) {
        printf(" entries[%" PRIu64 "..%" PRIu64 "]", rd->entries[0].index,
               rd->entries[rd->entries_count - 1].index);
    }
    if (rd->committed_count > 0) {
        printf(" apply[%" PRIu64 "..%" PRIu64 "]", rd->committed[0].index,
               rd->committed[rd->committed_count - 1].index);
    }
    for (size_t i = 0; i < rd->reads_count; i++) {
        printf(" read(ctx=%" PRIu64 " index=%" PRIu64 " %s)", rd->reads[i].ctx, rd->reads[i].index,
               kv_errword(rd->reads[i].status));
    }
    printf(" msgs=%zu\n", rd->msgs_count);
}

/* Called first in each Ready: the trace, and the one-leader-per-term check
 * (raft's state is already the Ready's). */
static void sc__io_ready_begin(void *ctx, const struct raft_ready *rd) {
    sc_node *n = sc__io_node(ctx);
    if (n->cluster->trace) {
        sc__trace_ready(n, rd);
    }
    sc__check_leader(n->cluster, n);
}

static const node_io sc__io = {
    .hs_save = sc__io_hs_save,
    .snap_install = sc__io_snap_install,
    .snap_chunk = sc__io_snap_chunk,
    .send = sc__io_send,
    .log_append = sc__io_log_append,
    .apply = sc__io_apply,
    .write_done = sc__io_write_done,
    .read_done = sc__io_read_done,
    .ready_begin = sc__io_ready_begin,
};

/* ---- driving the nodes ---------------------------------------------------------------- */

raft *sc_raft(const sc_cluster *c, uint64_t id) {
    assert(sc_node_valid(c, id) && c->nodes[id].up);
    return node_raft(c->nodes[id].node);
}

int sc_process(sc_cluster *c, uint64_t id) {
    assert(sc_node_valid(c, id));
    sc_node *n = &c->nodes[id];
    if (!n->up) {
        return 0;
    }
    int rc = node_run(n->node);
    if (rc != 0) {
        return rc;
    }
    if (node_applied(n->node) != n->applied) {
        sc__violation(c, "node %" PRIu64 ": node applied %" PRIu64 ", state machine %" PRIu64, id,
                      node_applied(n->node), n->applied);
    }
    return 0;
}

int sc_persist(sc_cluster *c, uint64_t id) {
    assert(sc_node_valid(c, id));
    sc_node *n = &c->nodes[id];
    assert(n->up);
    if (n->log_count == 0 || sc__log_last(n) == n->durable_index) {
        return 0;
    }
    const sc_entry *last = &n->log[n->log_count - 1];
    assert(last->index > n->durable_index);
    n->durable_index = last->index;
    node_log_durable(n->node, last->index, last->term); /* outside a Ready: at once */
    return 0;
}

int sc_tick(sc_cluster *c, uint64_t id) {
    assert(sc_node_valid(c, id));
    if (!c->nodes[id].up) {
        return 0;
    }
    node_tick(c->nodes[id].node);
    return sc_process(c, id);
}

int sc_propose(sc_cluster *c, uint64_t id, const char *name, const void *data, size_t len) {
    assert(sc_node_valid(c, id) && c->nodes[id].up);
    if (c->writes_count == SC_WRITES_MAX) {
        return KV_ENOSPACE;
    }
    sc_node *n = &c->nodes[id];
    sc_write *w = &c->writes[c->writes_count];
    *w = (sc_write){.node = id};
    snprintf(w->name, sizeof(w->name), "%s", name);
    const node_tag tag = {.owner = n, .id = c->writes_count};
    int rc = node_propose(n->node, data, len, &tag, &w->index);
    if (rc != 0) {
        return rc;
    }
    w->term = raft_term(node_raft(n->node));
    c->writes_count++;
    return sc_process(c, id);
}

const sc_write *sc_write_find(const sc_cluster *c, const char *name) {
    for (size_t i = c->writes_count; i > 0; i--) {
        if (strcmp(c->writes[i - 1].name, name) == 0) {
            return &c->writes[i - 1];
        }
    }
    return NULL;
}

int sc_read_ask(sc_cluster *c, uint64_t id, uint64_t ctx) {
    assert(sc_node_valid(c, id) && c->nodes[id].up);
    sc_node *n = &c->nodes[id];
    if (sc_read_find(c, id, ctx) != NULL) {
        return KV_EEXIST;
    }
    if (n->reads_count == SC_READS_MAX) {
        return KV_ENOSPACE;
    }
    sc_read *rd = &n->reads[n->reads_count];
    *rd = (sc_read){.ctx = ctx, .floor = c->applied_max};
    const node_tag tag = {.owner = n, .id = n->reads_count};
    int rc = node_read(n->node, &tag);
    if (rc != 0) {
        return rc;
    }
    n->reads_count++;
    return sc_process(c, id);
}

const sc_read *sc_read_find(const sc_cluster *c, uint64_t id, uint64_t ctx) {
    assert(sc_node_valid(c, id));
    const sc_node *n = &c->nodes[id];
    for (size_t i = 0; i < n->reads_count; i++) {
        if (n->reads[i].ctx == ctx) {
            return &n->reads[i];
        }
    }
    return NULL;
}

int sc_snapshot(sc_cluster *c, uint64_t id, size_t pad_bytes) {
    assert(sc_node_valid(c, id));
    sc_node *n = &c->nodes[id];
    uint64_t term;
    raft *r = node_raft(n->node);
    int rc = raft_log_term(r, n->applied, &term);
    if (rc < 0) {
        return rc;
    }
    rc = raft_snapshot_done(r, n->applied, term);
    if (rc < 0) {
        return rc;
    }
    size_t len = n->sm_len + 1 > pad_bytes ? n->sm_len + 1 : pad_bytes;
    free(n->snap_data);
    n->snap_data = sc__xrealloc(NULL, len);
    for (size_t i = 0; i < len; i++) {
        n->snap_data[i] = (char)('a' + i % 26);
    }
    memcpy(n->snap_data, n->sm != NULL ? n->sm : "", n->sm_len);
    n->snap_data[n->sm_len] = '\0';
    n->snap_len = len;
    n->has_snap = true;
    n->snap = (raft_snapshot_meta){.index = n->applied, .term = term, .membership = n->membership};
    return sc_process(c, id);
}

int sc_compact(sc_cluster *c, uint64_t id, uint64_t index) {
    assert(sc_node_valid(c, id));
    sc_node *n = &c->nodes[id];
    int rc = raft_compact(node_raft(n->node), index);
    if (rc < 0) {
        return rc;
    }
    uint64_t upto = raft_first_index(node_raft(n->node)) - 1; /* what raft actually dropped */
    size_t drop = 0;
    while (drop < n->log_count && n->log[drop].index <= upto) {
        free(n->log[drop++].data);
    }
    memmove(n->log, n->log + drop, (n->log_count - drop) * sizeof(*n->log));
    n->log_count -= drop;
    n->log_first += drop;
    return sc_process(c, id);
}

uint64_t sc_leader(const sc_cluster *c) {
    uint64_t best = 0, best_term = 0;
    for (uint64_t id = 1; id <= SC_NODES_MAX; id++) {
        const sc_node *n = &c->nodes[id];
        if (n->exists && n->up && raft_state_role(node_raft(n->node)) == RAFT_LEADER &&
            raft_term(node_raft(n->node)) >= best_term) {
            best = id;
            best_term = raft_term(node_raft(n->node));
        }
    }
    return best;
}

/* ---- printing ------------------------------------------------------------------------ */

const char *sc_msg_type_name(uint32_t type) {
    static const char *names[] = {"?",
                                  "APPEND",
                                  "APPEND_RESP",
                                  "VOTE",
                                  "VOTE_RESP",
                                  "PREVOTE",
                                  "PREVOTE_RESP",
                                  "HEARTBEAT",
                                  "HEARTBEAT_RESP",
                                  "SNAPSHOT",
                                  "SNAPSHOT_RESP",
                                  "TIMEOUT_NOW"};
    return type < sizeof(names) / sizeof(names[0]) ? names[type] : "?";
}

const char *sc_role_name(raft_role role) {
    switch (role) {
    case RAFT_FOLLOWER:
        return "follower";
    case RAFT_PRE_CANDIDATE:
        return "pre-candidate";
    case RAFT_CANDIDATE:
        return "candidate";
    case RAFT_LEADER:
        return "leader";
    }
    return "?";
}

void sc_print_msg(const raft_msg *m) {
    printf("%" PRIu64 "->%" PRIu64 " %s term=%" PRIu64, m->from, m->to, sc_msg_type_name(m->type),
           m->term);
    if (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_VOTE || m->type == RAFT_MSG_PREVOTE) {
        printf(" index=%" PRIu64 " logterm=%" PRIu64, m->index, m->log_term);
    } else if (m->type == RAFT_MSG_APPEND_RESP) {
        printf(" index=%" PRIu64, m->index);
    }
    if (m->type == RAFT_MSG_APPEND || m->type == RAFT_MSG_HEARTBEAT) {
        printf(" commit=%" PRIu64, m->commit);
    }
    if (m->entries_count > 0) {
        printf(" entries=[");
        for (size_t i = 0; i < m->entries_count; i++) {
            printf("%s%" PRIu64 "/%" PRIu64, i > 0 ? " " : "", m->entries[i].index,
                   m->entries[i].term);
        }
        printf("]");
    }
    if (m->type == RAFT_MSG_SNAPSHOT || m->type == RAFT_MSG_SNAPSHOT_RESP) {
        printf(" snap=%" PRIu64 "/%" PRIu64 " offset=%" PRIu64 " len=%zu total=%" PRIu64 "%s",
               m->snap.index, m->snap.term, m->snap_offset, m->snap_len, m->snap_total,
               m->snap_last ? " last" : "");
    }
    if (m->context != 0) {
        printf(" ctx=%" PRIu64, m->context);
    }
    if (m->reject) {
        printf(" reject(hint=%" PRIu64 "/%" PRIu64 ")", m->reject_hint, m->hint_term);
    }
    printf("\n");
}

void sc_print_log(const sc_cluster *c, uint64_t id) {
    const sc_node *n = &c->nodes[id];
    printf("log %" PRIu64 ":", id);
    if (n->has_snap) {
        printf(" snapshot=%" PRIu64 "/%" PRIu64, n->snap.index, n->snap.term);
    }
    for (size_t i = 0; i < n->log_count; i++) {
        const sc_entry *e = &n->log[i];
        const char *what = e->type == RAFT_ENTRY_NOOP   ? "noop"
                           : e->type == RAFT_ENTRY_CONF ? "conf"
                                                        : e->data;
        printf(" %" PRIu64 "/%" PRIu64 ":%s%s", e->index, e->term, what,
               e->index > n->durable_index ? "(unsynced)" : "");
    }
    printf("\n");
}

void sc_print_status(const sc_cluster *c, uint64_t id) {
    const sc_node *n = &c->nodes[id];
    if (!n->up) {
        printf("node %" PRIu64 ": down\n", id);
        return;
    }
    printf("node %" PRIu64 ": %s term=%" PRIu64 " leader=%" PRIu64 " commit=%" PRIu64
           " applied=%" PRIu64 " last=%" PRIu64 " sm=[%s]\n",
           id, sc_role_name(raft_state_role(node_raft(n->node))), raft_term(node_raft(n->node)),
           raft_leader(node_raft(n->node)), raft_commit_index(node_raft(n->node)), n->applied,
           raft_last_index(node_raft(n->node)), n->sm != NULL ? n->sm : "");
}
