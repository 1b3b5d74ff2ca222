/* One node's Ready loop (node.h): the order of the steps, the queues of
 * writes and reads waiting, and the rules asserted as it runs. */
#include "node/node.h"

#include "kv/errors.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- a deque of fixed-size items (a ring that doubles) -------------------- */

typedef struct ring {
    void *items;
    size_t item_size;
    size_t head, count, cap;
} ring;

static void ring_init(ring *q, size_t item_size) {
    memset(q, 0, sizeof(*q));
    q->item_size = item_size;
}

static void *ring_at(const ring *q, size_t i) {
    assert(i < q->count);
    return (char *)q->items + ((q->head + i) % q->cap) * q->item_size;
}

static void *ring_front(const ring *q) {
    return q->count == 0 ? NULL : ring_at(q, 0);
}

static void *ring_push(ring *q) {
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

static void ring_pop(ring *q) {
    assert(q->count > 0);
    q->head = (q->head + 1) % q->cap;
    q->count--;
}

/* ---- the node --------------------------------------------------------------- */

/* A read waiting for its confirmation (index 0), then for apply. */
typedef struct node_waiting_read {
    uint64_t ctx;
    uint64_t index;
    bool confirmed;
    bool answered; /* refused when confirmed: dropped from the front later */
    node_tag tag;
} node_waiting_read;

struct node {
    raft *r;
    node_io io;
    node_limits lim;
    ring writes; /* node_write, by index */
    ring reads;  /* node_waiting_read, by ctx */
    uint64_t pending_bytes;
    uint64_t next_read_ctx;
    bool is_leader;
    uint64_t leader;
    raft_hard_state durable_hs; /* as last saved (or restarted from) */
    uint64_t applied;           /* the state machine's: answers never pass it */
    bool in_ready;
    uint64_t durable_index, durable_term; /* node_log_durable held in a Ready */
    bool durable_held;
};

int node_new(const raft_config *cfg, const node_io *io, const node_limits *lim, node **out) {
    assert(io->hs_save && io->snap_install && io->snap_chunk && io->send && io->log_append &&
           io->apply && io->write_done && io->read_done);
    node *n = calloc(1, sizeof(*n));
    if (n == NULL)
        return KV_ENOMEM;
    int rc = raft_new(cfg, &n->r);
    if (rc != 0) {
        free(n);
        return rc;
    }
    n->io = *io;
    n->lim = *lim;
    n->durable_hs = cfg->hs;
    n->applied = cfg->applied;
    ring_init(&n->writes, sizeof(node_write));
    ring_init(&n->reads, sizeof(node_waiting_read));
    *out = n;
    return 0;
}

void node_free(node *n) {
    if (n == NULL)
        return;
    assert(n->writes.count == 0 && n->reads.count == 0);
    raft_free(n->r);
    free(n->writes.items);
    free(n->reads.items);
    free(n);
}

raft *node_raft(node *n) {
    return n->r;
}

bool node_is_leader(const node *n) {
    return n->is_leader;
}

uint64_t node_leader(const node *n) {
    return n->leader;
}

uint64_t node_applied(const node *n) {
    return n->applied;
}

uint64_t node_pending_bytes(const node *n) {
    return n->pending_bytes;
}

size_t node_writes_waiting(const node *n) {
    return n->writes.count;
}

size_t node_reads_waiting(const node *n) {
    return n->reads.count;
}

static uint64_t now_ns(const node *n) {
    return n->io.now_ns ? n->io.now_ns(n->io.ctx) : 0;
}

/* ---- writes -------------------------------------------------------------------- */

int node_wait_index(node *n, uint64_t index, uint64_t bytes, const node_tag *tag) {
    const node_write *last = n->writes.count ? ring_at(&n->writes, n->writes.count - 1) : NULL;
    assert(last == NULL || last->index < index);
    (void)last;
    node_write *w = ring_push(&n->writes);
    if (w == NULL)
        return KV_ENOMEM;
    w->index = index;
    w->term = raft_term(n->r);
    w->bytes = bytes;
    w->tag = *tag;
    w->tag.t0_ns = tag->t0_ns ? tag->t0_ns : now_ns(n);
    n->pending_bytes += bytes;
    return 0;
}

int node_propose(node *n, const void *data, size_t len, const node_tag *tag, uint64_t *index_out) {
    if (!n->is_leader)
        return KV_ENOTLEADER;
    if (n->pending_bytes + len > n->lim.pending_bytes_max)
        return KV_EBUSY;
    uint64_t index;
    int rc = raft_propose(n->r, data, len, &index);
    if (rc != 0)
        return rc;
    rc = node_wait_index(n, index, len, tag);
    if (rc != 0)
        return rc; /* proposed, nobody waits: the client times out and retries */
    if (index_out != NULL)
        *index_out = index;
    return 0;
}

static void write_answer(node *n, size_t pos, int code) {
    node_write w = *(node_write *)ring_front(&n->writes);
    ring_pop(&n->writes);
    assert(n->pending_bytes >= w.bytes);
    assert(code != 0 || w.index <= n->applied); /* never above the applied index */
    n->pending_bytes -= w.bytes;
    n->io.write_done(n->io.ctx, &w, pos, code);
}

/* Step 6's answers: e were just applied. */
static void writes_applied(node *n, const raft_entry *e, size_t count) {
    for (size_t i = 0; i < count; i++) {
        const node_write *w;
        while ((w = ring_front(&n->writes)) != NULL && w->index < e[i].index)
            write_answer(n, 0, KV_ENOTLEADER); /* replaced by another leader's entry */
        if (w == NULL || w->index != e[i].index)
            continue;
        write_answer(n, i, w->term == e[i].term ? 0 : KV_ENOTLEADER);
    }
}

/* ---- reads --------------------------------------------------------------------- */

int node_read(node *n, const node_tag *tag) {
    if (!n->is_leader)
        return KV_ENOTLEADER;
    if (n->reads.count >= n->lim.reads_max)
        return KV_EBUSY;
    uint64_t ctx = n->next_read_ctx + 1;
    int rc = raft_read_index(n->r, ctx);
    if (rc != 0)
        return rc;
    node_waiting_read *rd = ring_push(&n->reads);
    if (rd == NULL)
        return KV_ENOMEM; /* raft's round answers a ctx nobody waits for */
    n->next_read_ctx = ctx;
    rd->ctx = ctx;
    rd->index = 0;
    rd->confirmed = false;
    rd->answered = false;
    rd->tag = *tag;
    rd->tag.t0_ns = tag->t0_ns ? tag->t0_ns : now_ns(n);
    return 0;
}

/* The waiting read with ctx, or NULL (reads are queued by increasing ctx). */
static node_waiting_read *read_find(node *n, uint64_t ctx) {
    size_t lo = 0, hi = n->reads.count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        node_waiting_read *rd = ring_at(&n->reads, mid);
        if (rd->ctx == ctx)
            return rd;
        if (rd->ctx < ctx)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static void reads_confirmed(node *n, const raft_read_state *rs, size_t count) {
    for (size_t i = 0; i < count; i++) {
        node_waiting_read *rd = read_find(n, rs[i].ctx);
        if (rd == NULL || rd->confirmed)
            continue;
        rd->confirmed = true;
        rd->index = rs[i].status == 0 ? rs[i].index : 0;
        if (rs[i].status != 0) {
            rd->answered = true;
            n->io.read_done(n->io.ctx, &rd->tag, 0, rs[i].status);
        }
    }
}

static void reads_serve(node *n) {
    node_waiting_read *rd;
    while ((rd = ring_front(&n->reads)) != NULL && rd->confirmed && rd->index <= n->applied) {
        node_waiting_read x = *rd;
        ring_pop(&n->reads);
        if (!x.answered)
            n->io.read_done(n->io.ctx, &x.tag, x.index, 0);
    }
}

void node_fail_all(node *n, int code) {
    while (n->writes.count > 0)
        write_answer(n, 0, code);
    node_waiting_read *rd;
    while ((rd = ring_front(&n->reads)) != NULL) {
        node_waiting_read x = *rd;
        ring_pop(&n->reads);
        if (!x.answered)
            n->io.read_done(n->io.ctx, &x.tag, 0, code);
    }
}

/* ---- the Ready loop ---------------------------------------------------------------- */

int node_step(node *n, const raft_msg *m) {
    return raft_step(n->r, m);
}

void node_tick(node *n) {
    raft_tick(n->r);
}

void node_log_durable(node *n, uint64_t index, uint64_t term) {
    if (n->in_ready) {
        n->durable_index = index;
        n->durable_term = term;
        n->durable_held = true;
        return;
    }
    raft_persisted(n->r, index, term);
}

/* Rule: no message carries a term, or grants a vote, that is not durable.
 * PreVote messages carry a term never stored (the campaign's next one). */
static void assert_sendable(const node *n, const raft_msg *m, size_t count) {
    const raft_hard_state *hs = &n->durable_hs;
    for (size_t i = 0; i < count; i++) {
        if (m[i].type == RAFT_MSG_PREVOTE || m[i].type == RAFT_MSG_PREVOTE_RESP)
            continue;
        assert(m[i].term <= hs->term);
        assert(m[i].type != RAFT_MSG_VOTE_RESP || m[i].reject ||
               (hs->term == m[i].term && hs->vote == m[i].to));
        assert(m[i].type != RAFT_MSG_VOTE || (hs->term == m[i].term && hs->vote == m[i].from));
    }
}

static void role_changed(node *n, const raft_soft_state *ss) {
    bool leader = ss->role == RAFT_LEADER;
    n->leader = ss->leader;
    if (n->is_leader && !leader)
        node_fail_all(n, KV_ENOTLEADER);
    n->is_leader = leader;
    if (n->io.role_changed != NULL)
        n->io.role_changed(n->io.ctx, ss);
}

static int apply(node *n, const struct raft_ready *rd) {
    int rc = n->io.apply(n->io.ctx, rd->committed, rd->committed_count,
                         rd->membership_changed ? &rd->membership : NULL);
    if (rc != 0)
        return rc;
    n->applied = rd->committed[rd->committed_count - 1].index;
    writes_applied(n, rd->committed, rd->committed_count);
    if (n->io.apply_end != NULL)
        n->io.apply_end(n->io.ctx);
    return 0;
}

/* Steps 1-8 of one Ready (node.h). */
static int ready_steps(node *n, const struct raft_ready *rd) {
    int rc = 0;
    if (rd->hs_must_sync) {
        rc = n->io.hs_save(n->io.ctx, &rd->hs);
        if (rc != 0)
            return rc;
        n->durable_hs = rd->hs;
    }
    if (rd->has_snapshot) {
        if ((rc = n->io.snap_install(n->io.ctx, &rd->snapshot)) != 0)
            return rc;
        n->applied = rd->snapshot.index;
    }
    if (rd->has_chunk && (rc = n->io.snap_chunk(n->io.ctx, &rd->chunk)) != 0)
        return rc;
    if (rd->msgs_count > 0) {
        assert_sendable(n, rd->msgs, rd->msgs_count);
        if ((rc = n->io.send(n->io.ctx, rd->msgs, rd->msgs_count)) != 0)
            return rc;
    }
    if (rd->entries_count > 0 &&
        (rc = n->io.log_append(n->io.ctx, rd->entries, rd->entries_count)) != 0)
        return rc;
    if (rd->committed_count > 0 && (rc = apply(n, rd)) != 0)
        return rc;
    /* after apply: what this Ready committed is answered as applied, not as
     * "outcome unknown" (a leader removing itself steps down in the Ready
     * that commits its removal) */
    if (rd->ss_changed)
        role_changed(n, &rd->ss);
    reads_confirmed(n, rd->reads, rd->reads_count);
    return 0;
}

int node_run(node *n) {
    while (raft_has_ready(n->r)) {
        struct raft_ready rd;
        int rc = raft_ready(n->r, &rd);
        if (rc != 0)
            return rc;
        n->in_ready = true;
        if (n->io.ready_begin != NULL)
            n->io.ready_begin(n->io.ctx, &rd);
        rc = ready_steps(n, &rd);
        n->in_ready = false;
        if (rc != 0)
            return rc; /* fail-stop: no advance, the owner stops the node */
        raft_advance(n->r, &rd);
        if (n->durable_held) {
            n->durable_held = false;
            raft_persisted(n->r, n->durable_index, n->durable_term);
        }
        reads_serve(n);
    }
    return 0;
}
