/* tc: the hand-driven cluster of the raft unit tests (tc.h). */
#include "tc.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

#include "kv/errors.h"

static int snap_read(void *ctx, uint64_t index, uint64_t term, uint64_t offset, void *buf,
                     size_t len, size_t *got, uint64_t *total) {
    tc_node *n = ctx;
    n->snap_reads++;
    if (n->snap == NULL && n->snap_len > 0) {
        return KV_ESTALE;
    }
    if (index != n->snap_index || term != n->snap_term || offset > n->snap_len) {
        return KV_ESTALE;
    }
    size_t k = n->snap_len - offset < len ? (size_t)(n->snap_len - offset) : len;
    if (k > 0) {
        memcpy(buf, n->snap + offset, k);
    }
    *got = k;
    *total = n->snap_len;
    return 0;
}

void tc_start(tc *c, int voters, int total, tc_tweak_fn tweak, void *arg) {
    memset(c, 0, sizeof(*c));
    ck_assert(total <= TC_MAX && voters <= total);
    c->count = total;
    for (int i = 1; i <= total; i++) {
        tc_node *n = &c->n[i];
        n->id = (uint64_t)i;
        raft_config cfg;
        raft_config_init(&cfg, n->id);
        cfg.seed = 1000 + (uint64_t)i;
        cfg.snapshot_read = snap_read;
        cfg.snapshot_ctx = n;
        if (i <= voters) {
            cfg.bootstrap.voters_count = (uint32_t)voters;
            for (int v = 0; v < voters; v++) {
                cfg.bootstrap.voters[v] = (uint64_t)v + 1;
            }
        }
        if (tweak != NULL) {
            tweak(&cfg, arg);
        }
        ck_assert_int_eq(raft_new(&cfg, &n->r), 0);
        if (cfg.entries_count > 0) {
            n->written_index = raft_last_index(n->r);
            ck_assert_int_eq(raft_log_term(n->r, n->written_index, &n->written_term), 0);
            n->applied = raft_applied_index(n->r);
            n->hs = cfg.hs;
        }
    }
}

void tc_free(tc *c) {
    for (size_t i = 0; i < c->q_count; i++) {
        raft_msg_free(&c->q[i]);
    }
    free(c->q);
    for (int i = 1; i <= c->count; i++) {
        raft_free(c->n[i].r);
        free(c->n[i].snap);
        free(c->n[i].rcv);
    }
    memset(c, 0, sizeof(*c));
}

static void enqueue(tc *c, const raft_msg *m) {
    ck_assert(m->type <= RAFT_MSG_TIMEOUT_NOW && m->to >= 1 && m->to <= (uint64_t)c->count);
    c->sent[m->type]++;
    if (c->cut[m->from][m->to] || (c->drop != NULL && c->drop(c, m, c->drop_arg))) {
        return;
    }
    if (c->q_count == c->q_cap) {
        c->q_cap = c->q_cap ? c->q_cap * 2 : 64;
        c->q = realloc(c->q, c->q_cap * sizeof(*c->q));
        ck_assert(c->q != NULL);
    }
    ck_assert_int_eq(raft_msg_copy(&c->q[c->q_count++], m), 0);
}

/* The contract of raft.h step 1: what leaves is covered by durable state. */
static void check_msgs(const tc_node *n, const struct raft_ready *rd) {
    for (size_t i = 0; i < rd->msgs_count; i++) {
        const raft_msg *m = &rd->msgs[i];
        ck_assert_uint_eq(m->from, n->id);
        if (m->type != RAFT_MSG_PREVOTE && m->type != RAFT_MSG_PREVOTE_RESP) {
            ck_assert_uint_le(m->term, n->hs.term);
        }
        if (m->type == RAFT_MSG_VOTE_RESP && !m->reject) {
            ck_assert_uint_eq(n->hs.vote, m->to);
            ck_assert_uint_eq(n->hs.term, m->term);
        }
        if (m->type == RAFT_MSG_VOTE) {
            ck_assert_uint_eq(n->hs.vote, n->id);
        }
    }
}

static void apply(tc_node *n, const struct raft_ready *rd) {
    for (size_t i = 0; i < rd->committed_count; i++) {
        const raft_entry *e = &rd->committed[i];
        ck_assert_uint_eq(e->index, n->applied + 1);
        ck_assert_uint_le(e->index, n->written_index);
        n->applied = e->index;
        if (e->type == RAFT_ENTRY_NORMAL) {
            n->applied_normal++;
            n->applied_bytes += e->len;
        }
    }
    if (rd->membership_changed) {
        n->has_membership = true;
        n->membership = rd->membership;
    }
}

static void snapshot_parts(tc_node *n, const struct raft_ready *rd) {
    if (rd->has_chunk) {
        const raft_snapshot_chunk *k = &rd->chunk;
        if (n->rcv_len != k->total_size) {
            free(n->rcv);
            n->rcv = calloc(1, k->total_size + 1);
            n->rcv_len = k->total_size;
        }
        ck_assert_uint_le(k->offset + k->len, n->rcv_len);
        if (k->len > 0) {
            memcpy(n->rcv + k->offset, k->data, k->len);
        }
        n->chunks_stored++;
    }
    if (rd->has_snapshot) {
        ck_assert_uint_eq(rd->entries_count, 0);
        ck_assert_uint_eq(rd->committed_count, 0);
        n->installed_index = rd->snapshot.index;
        n->applied = rd->snapshot.index;
        n->written_index = rd->snapshot.index;
        n->written_term = rd->snapshot.term;
        n->has_membership = true;
        n->membership = rd->snapshot.membership;
    }
}

void tc_ready(tc *c, uint64_t id) {
    tc_node *n = &c->n[id];
    for (int guard = 0; raft_has_ready(n->r); guard++) {
        ck_assert_int_lt(guard, 1000);
        struct raft_ready rd;
        ck_assert_int_eq(raft_ready(n->r, &rd), 0);
        if (rd.hs_changed) {
            n->hs = rd.hs; /* durable at once: a synchronous write */
        }
        /* raft.h step 1: hs.commit covers only entries durable already */
        ck_assert_uint_le(rd.hs.commit, raft_persisted_index(n->r));
        snapshot_parts(n, &rd);
        check_msgs(n, &rd);
        for (size_t i = 0; i < rd.msgs_count; i++) {
            enqueue(c, &rd.msgs[i]);
        }
        if (rd.entries_count > 0) {
            ck_assert_uint_le(rd.entries[0].index, n->written_index + 1);
            n->written_index = rd.entries[rd.entries_count - 1].index;
            n->written_term = rd.entries[rd.entries_count - 1].term;
        }
        apply(n, &rd);
        for (size_t i = 0; i < rd.reads_count && n->reads_count < TC_READS_MAX; i++) {
            n->reads[n->reads_count++] = rd.reads[i];
        }
        raft_advance(n->r, &rd);
        if (!n->hold_persist) {
            raft_persisted(n->r, n->written_index, n->written_term);
        }
    }
}

void tc_persist(tc *c, uint64_t id) {
    tc_node *n = &c->n[id];
    raft_persisted(n->r, n->written_index, n->written_term);
}

void tc_flush(tc *c) {
    for (int i = 1; i <= c->count; i++) {
        tc_ready(c, (uint64_t)i);
    }
}

size_t tc_deliver(tc *c) {
    size_t n = c->q_count;
    raft_msg *batch = c->q;
    c->q = NULL;
    c->q_count = c->q_cap = 0;
    for (size_t i = 0; i < n; i++) {
        int rc = raft_step(c->n[batch[i].to].r, &batch[i]);
        ck_assert_int_eq(rc, 0);
        raft_msg_free(&batch[i]);
    }
    free(batch);
    return n;
}

void tc_settle(tc *c) {
    for (int round = 0; round < 10000; round++) {
        tc_flush(c);
        if (tc_deliver(c) == 0) {
            return;
        }
    }
    ck_abort_msg("cluster does not settle");
}

void tc_tick(tc *c, uint64_t id, int ticks) {
    for (int i = 0; i < ticks; i++) {
        raft_tick(c->n[id].r);
    }
}

void tc_tick_all(tc *c, int k) {
    for (int j = 0; j < k; j++) {
        for (int i = 1; i <= c->count; i++) {
            raft_tick(c->n[i].r);
        }
        tc_settle(c);
    }
}

void tc_elect(tc *c, uint64_t id) {
    for (int i = 0; i < 100 && raft_state_role(c->n[id].r) != RAFT_LEADER; i++) {
        raft_tick(c->n[id].r);
        tc_settle(c);
    }
    ck_assert_int_eq(raft_state_role(c->n[id].r), RAFT_LEADER);
    tc_settle(c);
}

void tc_isolate(tc *c, uint64_t id, bool cut) {
    for (int i = 1; i <= TC_MAX; i++) {
        c->cut[id][i] = cut;
        c->cut[i][id] = cut;
    }
}

void tc_snapshot(tc *c, uint64_t id, uint64_t bytes) {
    tc_node *n = &c->n[id];
    free(n->snap);
    n->snap = malloc(bytes + 1);
    for (uint64_t i = 0; i < bytes; i++) {
        n->snap[i] = (unsigned char)(i * 131 + n->applied);
    }
    n->snap_len = bytes;
    n->snap_index = raft_applied_index(n->r);
    ck_assert_int_eq(raft_log_term(n->r, n->snap_index, &n->snap_term), 0);
    ck_assert_int_eq(raft_snapshot_done(n->r, n->snap_index, n->snap_term), 0);
}

void tc_propose(tc *c, uint64_t id, int count, size_t len) {
    unsigned char buf[4096];
    ck_assert(len <= sizeof(buf));
    for (int i = 0; i < count; i++) {
        memset(buf, 'a' + i % 26, len);
        ck_assert_int_eq(raft_propose(c->n[id].r, buf, len, NULL), 0);
    }
}

static bool match(const raft_msg *m, uint32_t type, uint64_t from, uint64_t to) {
    return m->type == type && (from == 0 || m->from == from) && (to == 0 || m->to == to);
}

size_t tc_queued(const tc *c, uint32_t type, uint64_t from, uint64_t to) {
    size_t k = 0;
    for (size_t i = 0; i < c->q_count; i++) {
        k += match(&c->q[i], type, from, to);
    }
    return k;
}

void tc_drop_queued(tc *c, uint32_t type, uint64_t from, uint64_t to) {
    size_t j = 0;
    for (size_t i = 0; i < c->q_count; i++) {
        if (match(&c->q[i], type, from, to)) {
            raft_msg_free(&c->q[i]);
        } else {
            c->q[j++] = c->q[i];
        }
    }
    c->q_count = j;
}

uint64_t tc_leader(const tc *c) {
    uint64_t leader = 0, term = 0;
    for (int i = 1; i <= c->count; i++) {
        const raft *r = c->n[i].r;
        if (raft_state_role(r) == RAFT_LEADER && raft_term(r) >= term) {
            ck_assert_msg(raft_term(r) != term || leader == 0, "two leaders in one term");
            leader = (uint64_t)i;
            term = raft_term(r);
        }
    }
    return leader;
}
