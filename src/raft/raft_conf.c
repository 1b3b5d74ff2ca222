/*
 * raft_conf.c: membership. Single-server changes that take effect when
 * appended (thesis §4.1), one at a time, each only after the leader
 * committed an entry of its own term. Format of a CONF entry: raft.h.
 */
#include <string.h>

#include "raft_int.h"

#define CONF_VERSION 1u
#define CONF_HEADER_BYTES 12u

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) {
        p[i] = (uint8_t)(v >> (8 * i));
    }
}

static uint64_t get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) {
        v |= (uint64_t)p[i] << (8 * i);
    }
    return v;
}

/* Node ids nonzero, no duplicates, within KV_NODES_MAX. */
bool raft_conf_valid(const raft_membership *c) {
    uint32_t n = c->voters_count + c->learners_count;
    if (c->voters_count > KV_NODES_MAX || c->learners_count > KV_NODES_MAX || n > KV_NODES_MAX) {
        return false;
    }
    uint64_t ids[KV_NODES_MAX];
    for (uint32_t i = 0; i < n; i++) {
        ids[i] = i < c->voters_count ? c->voters[i] : c->learners[i - c->voters_count];
        if (ids[i] == 0) {
            return false;
        }
        for (uint32_t j = 0; j < i; j++) {
            if (ids[j] == ids[i]) {
                return false;
            }
        }
    }
    return true;
}

/* Encodes into buf (RAFT_CONF_BYTES_MAX bytes); returns the length. */
size_t raft_conf_encode(raft_conf_op op, uint64_t node, const raft_membership *c, uint8_t *buf) {
    assert(raft_conf_valid(c));
    assert(op <= RAFT_CONF_REMOVE);
    buf[0] = CONF_VERSION;
    buf[1] = (uint8_t)op;
    put_u64(buf + 2, node);
    buf[10] = (uint8_t)c->voters_count;
    buf[11] = (uint8_t)c->learners_count;
    size_t off = CONF_HEADER_BYTES;
    for (uint32_t i = 0; i < c->voters_count; i++, off += 8) {
        put_u64(buf + off, c->voters[i]);
    }
    for (uint32_t i = 0; i < c->learners_count; i++, off += 8) {
        put_u64(buf + off, c->learners[i]);
    }
    assert(off <= RAFT_CONF_BYTES_MAX);
    return off;
}

int raft_conf_decode(const void *data, size_t len, raft_conf_op *op, uint64_t *node,
                     raft_membership *out) {
    const uint8_t *p = data;
    if (len < CONF_HEADER_BYTES || p == NULL) {
        return KV_ECORRUPT;
    }
    if (p[0] != CONF_VERSION) {
        return KV_EVERSION;
    }
    uint32_t v = p[10], l = p[11];
    if (p[1] > RAFT_CONF_REMOVE || v > KV_NODES_MAX || l > KV_NODES_MAX ||
        len != CONF_HEADER_BYTES + 8u * (v + l)) {
        return KV_ECORRUPT;
    }
    raft_membership c;
    memset(&c, 0, sizeof(c));
    c.voters_count = v;
    c.learners_count = l;
    for (uint32_t i = 0; i < v; i++) {
        c.voters[i] = get_u64(p + CONF_HEADER_BYTES + 8u * i);
    }
    for (uint32_t i = 0; i < l; i++) {
        c.learners[i] = get_u64(p + CONF_HEADER_BYTES + 8u * (v + i));
    }
    if (!raft_conf_valid(&c)) {
        return KV_ECORRUPT;
    }
    *op = (raft_conf_op)p[1];
    *node = get_u64(p + 2);
    *out = c;
    return 0;
}

static void peer_init(raft *r, raft_peer *p, uint64_t id) {
    assert(id != 0);
    memset(p, 0, sizeof(*p));
    p->id = id;
    p->state = RAFT_PROGRESS_PROBE;
    p->next = raft_log_last(&r->log) + 1;
    p->match = id == r->id ? r->log.stable : 0;
    p->quiet_windows = id == r->id ? 0 : RAFT_FLOOR_QUIET_WINDOWS; /* until heard */
    p->infl.cap = r->cfg.max_inflight_msgs;
    p->want_send = r->role == RAFT_LEADER && id != r->id;
}

/* The membership in effect changed: peers follow it, keeping the progress
 * of members that stay. A leader may commit more (the quorum changed). */
void raft_conf_changed(raft *r) {
    raft_peer old[KV_NODES_MAX];
    uint32_t old_count = r->peers_count;
    memcpy(old, r->peers, sizeof(old[0]) * old_count);
    uint32_t n = 0;
    uint32_t total = r->conf.voters_count + r->conf.learners_count;
    assert(total <= KV_NODES_MAX);
    for (uint32_t i = 0; i < total; i++) {
        bool voter = i < r->conf.voters_count;
        uint64_t id = voter ? r->conf.voters[i] : r->conf.learners[i - r->conf.voters_count];
        raft_peer *p = &r->peers[n++];
        uint32_t k = 0;
        while (k < old_count && old[k].id != id) {
            k++;
        }
        if (k < old_count) {
            *p = old[k];
        } else {
            peer_init(r, p, id);
        }
        p->voter = voter;
    }
    r->peers_count = n;
    assert(n == total);
    if (r->transferee != 0 && !raft_is_voter(&r->conf, r->transferee)) {
        r->transferee = 0;
    }
    if (r->role == RAFT_LEADER) {
        raft_maybe_commit(r);
        raft_reads_release(r);
    }
}

/* Thesis §4.2.2: a leader removed from the membership leads until the change
 * commits (not counting itself), then steps down. It first tells the others
 * the new commit index. */
void raft_maybe_step_down_removed(raft *r) {
    if (r->role != RAFT_LEADER || raft_is_voter(&r->conf, r->id) || r->commit < r->conf_index) {
        return;
    }
    raft_send_heartbeats(r, r->read_seq);
    raft_become_follower(r, r->term, 0);
}

bool raft_learner_caught_up(const raft *r, uint64_t id) {
    if (r->role != RAFT_LEADER) {
        return false;
    }
    const raft_peer *p = raft_peer_cget(r, id);
    return p != NULL && !p->voter && p->match >= r->commit && p->recent_active &&
           p->state == RAFT_PROGRESS_REPLICATE;
}

static int conf_apply_op(const raft *r, raft_conf_op op, uint64_t node, raft_membership *c) {
    assert(r->role == RAFT_LEADER && node != 0);
    *c = r->conf;
    bool voter = raft_is_voter(c, node), member = raft_is_member(c, node);
    if (op == RAFT_CONF_ADD_LEARNER) {
        if (member) {
            return KV_EINVAL;
        }
        if (c->voters_count + c->learners_count >= KV_NODES_MAX) {
            return KV_ETOOBIG;
        }
        c->learners[c->learners_count++] = node;
        return 0;
    }
    if ((op == RAFT_CONF_PROMOTE && (!member || voter)) || (op == RAFT_CONF_REMOVE && !member)) {
        return KV_EINVAL;
    }
    if (op == RAFT_CONF_REMOVE && voter && c->voters_count == 1) {
        return KV_EINVAL; /* the last voter */
    }
    if (op == RAFT_CONF_PROMOTE && !raft_learner_caught_up(r, node)) {
        return KV_EBUSY;
    }
    for (uint32_t i = 0; i < c->learners_count; i++) {
        if (c->learners[i] == node) {
            c->learners[i] = c->learners[--c->learners_count];
        }
    }
    for (uint32_t i = 0; i < c->voters_count; i++) {
        if (c->voters[i] == node) {
            c->voters[i] = c->voters[--c->voters_count];
        }
    }
    if (op == RAFT_CONF_PROMOTE) {
        c->voters[c->voters_count++] = node;
    }
    return 0;
}

int raft_propose_conf(raft *r, raft_conf_op op, uint64_t node, uint64_t *index_out) {
    assert(r != NULL && !r->in_ready);
    if (r->role != RAFT_LEADER) {
        return KV_ENOTLEADER;
    }
    if (node == 0 || op < RAFT_CONF_ADD_LEARNER || op > RAFT_CONF_REMOVE) {
        return KV_EINVAL;
    }
    if (r->transferee != 0 || r->commit < r->conf_index ||
        raft_log_term_at(&r->log, r->commit) != r->term) {
        return KV_EBUSY; /* one change at a time; own-term entry first */
    }
    raft_membership c;
    int rc = conf_apply_op(r, op, node, &c);
    if (rc != 0) {
        return rc;
    }
    uint8_t buf[RAFT_CONF_BYTES_MAX];
    size_t len = raft_conf_encode(op, node, &c, buf);
    if (raft_log_reserve(&r->log, 1) != 0) {
        return KV_ENOMEM;
    }
    raft_blk *b = raft_blk_new(len);
    if (b == NULL) {
        return KV_ENOMEM;
    }
    memcpy(raft_blk_data(b), buf, len);
    raft_entry e = {.index = raft_log_last(&r->log) + 1,
                    .term = r->term,
                    .type = RAFT_ENTRY_CONF,
                    .data = raft_blk_data(b),
                    .len = len,
                    .blk_ = b};
    raft_log_push(r, &e); /* takes effect now (thesis §4.1) */
    assert(r->conf_index == e.index && raft_conf_valid(&r->conf));
    raft_send_want_all(r);
    if (index_out != NULL) {
        *index_out = e.index;
    }
    return 0;
}
