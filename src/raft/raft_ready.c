/*
 * raft_ready.c: the outbox and the Ready / advance protocol (raft.h, "THE
 * READY LOOP"), and message copies for transports.
 */
#include <stdlib.h>
#include <string.h>

#include "raft_int.h"

/* A zeroed message of this term from this node, appended to the outbox.
 * When the outbox cannot grow, a scratch message that is never sent is
 * returned instead (a dropped message: Raft tolerates those). */
raft_msg *raft_out_push(raft *r, uint32_t type, uint64_t to) {
    assert(!r->in_ready);
    assert(to != 0);
    raft_msg *m = &r->out_sink;
    if (r->out_count == r->out_cap) {
        size_t cap = r->out_cap ? r->out_cap * 2 : 32;
        raft_msg *out = realloc(r->out, cap * sizeof(*out));
        if (out != NULL) {
            r->out = out;
            r->out_cap = cap;
        }
    }
    if (r->out_count < r->out_cap) {
        m = &r->out[r->out_count++];
    }
    memset(m, 0, sizeof(*m));
    m->type = type;
    m->from = r->id;
    m->to = to;
    m->term = r->term;
    return m;
}

static void out_clear(raft *r) {
    for (size_t i = 0; i < r->out_count; i++) {
        free(r->out[i].snap_data);
    }
    r->out_count = 0;
}

void raft_out_free(raft *r) {
    out_clear(r);
    free(r->out);
    r->out = NULL;
    r->out_cap = 0;
}

/* Attaches an APPEND's entries from the log. False when they are gone or
 * replaced since it was queued (compacted, or truncated after stepping
 * down): the message is dropped, which Raft tolerates. */
static bool attach_entries(raft *r, raft_msg *m) {
    uint64_t prev = m->index, n = m->entries_count, last_term = m->hint_term;
    m->hint_term = 0;
    if (prev < r->log.snap_index || prev + n > raft_log_last(&r->log) ||
        raft_log_term_at(&r->log, prev) != m->log_term) {
        return false;
    }
    if (n == 0) {
        return true;
    }
    if (raft_log_term_at(&r->log, prev + n) != last_term) {
        return false;
    }
    m->entries = raft_log_at(&r->log, prev + 1);
    return true;
}

/* A vote granted, or asked for as a candidate, at a term this node has
 * left since (a newer term came before this Ready). The Ready's hard state
 * is the newer term, so no disk holds that vote, and raft.h step 1 lets
 * nothing leave that the disk does not cover: it is dropped, a lost message
 * (jepsen_lite_net, seed 539736921174: a node granted a vote and heard a
 * newer term in one loop turn, and kvd's check of step 1 aborted it). */
static bool stale_vote(const raft *r, const raft_msg *m) {
    return m->term < r->term &&
           ((m->type == RAFT_MSG_VOTE_RESP && !m->reject) || m->type == RAFT_MSG_VOTE);
}

static void out_materialize(raft *r) {
    size_t j = 0;
    for (size_t i = 0; i < r->out_count; i++) {
        raft_msg *m = &r->out[i];
        if (stale_vote(r, m) || (m->type == RAFT_MSG_APPEND && !attach_entries(r, m))) {
            assert(m->snap_data == NULL);
            continue;
        }
        if (i != j) {
            r->out[j] = *m;
        }
        j++;
    }
    r->out_count = j;
}

/* The commit index a Ready's hard state carries: never past the entries
 * already durable here. The app may write rd.hs before this Ready's entries
 * (raft.h step 1); were a crash to come between, a commit index covering
 * them would mark the log's OLD suffix at those indexes (that this Ready
 * truncates) committed on restart, and the state machine would apply
 * entries no quorum ever held. */
static uint64_t hs_commit(const raft *r) {
    uint64_t c = r->commit < r->log.stable ? r->commit : r->log.stable;
    assert(c <= r->commit && c <= raft_log_last(&r->log));
    return c;
}

bool raft_has_ready(const raft *r) {
    assert(r != NULL);
    if (r->out_count > 0 || r->read_out_count > 0 || r->install_pending || r->rcv_q_count > 0) {
        return true;
    }
    if (r->role == RAFT_LEADER) {
        if (r->bcast_commit || r->read_round_wanted) {
            return true;
        }
        for (uint32_t i = 0; i < r->peers_count; i++) {
            if (r->peers[i].want_send) {
                return true;
            }
        }
    }
    if (r->term != r->prev_hs.term || r->vote != r->prev_hs.vote ||
        hs_commit(r) != r->prev_hs.commit || r->leader != r->prev_ss.leader ||
        r->role != r->prev_ss.role) {
        return true;
    }
    uint64_t applicable = r->commit < r->log.stable ? r->commit : r->log.stable;
    return r->log.handed < raft_log_last(&r->log) || applicable > r->applied;
}

static void ready_log(raft *r, struct raft_ready *rd) {
    uint64_t last = raft_log_last(&r->log);
    if (last > r->log.handed) {
        rd->entries = raft_log_at(&r->log, r->log.handed + 1);
        rd->entries_count = (size_t)(last - r->log.handed);
    }
    uint64_t hi = r->commit < r->log.stable ? r->commit : r->log.stable;
    if (hi > r->applied) {
        assert(r->applied >= r->log.snap_index);
        rd->committed = raft_log_at(&r->log, r->applied + 1);
        rd->committed_count = (size_t)(hi - r->applied);
        for (size_t i = rd->committed_count; i-- > 0;) {
            const raft_entry *e = &rd->committed[i];
            if (e->type == RAFT_ENTRY_CONF) {
                raft_conf_op op;
                uint64_t node;
                int rc = raft_conf_decode(e->data, e->len, &op, &node, &rd->membership);
                assert(rc == 0);
                (void)rc;
                rd->membership_changed = true;
                break;
            }
        }
    }
}

/* Before installing: entries that arrived meanwhile may make the snapshot
 * unneeded, and then an install would drop acknowledged entries. */
static void snapshot_recheck(raft *r) {
    if (r->install_pending && raft_snap_unwanted(r, r->rcv.index, r->rcv.term, r->leader)) {
        r->install_pending = false;
        r->rcv_active = false;
    }
}

static void ready_snapshot(raft *r, struct raft_ready *rd) {
    if (r->install_pending) {
        rd->has_snapshot = true;
        rd->snapshot = r->rcv;
        return;
    }
    if (r->rcv_q_count > 0) {
        const raft_chunk_q *q = &r->rcv_q[0];
        rd->has_chunk = true;
        rd->chunk = (raft_snapshot_chunk){.index = r->rcv.index,
                                          .term = r->rcv.term,
                                          .offset = q->offset,
                                          .data = q->data,
                                          .len = q->len,
                                          .total_size = r->rcv_total,
                                          .last = q->offset + q->len == r->rcv_total};
    }
}

int raft_ready(raft *r, struct raft_ready *rd) {
    assert(r != NULL && rd != NULL);
    assert(!r->in_ready);
    memset(rd, 0, sizeof(*rd));
    raft_reads_start_round(r);
    raft_flush_sends(r);
    snapshot_recheck(r);
    out_materialize(r);
    rd->msgs = r->out;
    rd->msgs_count = r->out_count;
    rd->hs = (raft_hard_state){.term = r->term, .vote = r->vote, .commit = hs_commit(r)};
    rd->hs_must_sync = rd->hs.term != r->prev_hs.term || rd->hs.vote != r->prev_hs.vote;
    rd->hs_changed = rd->hs_must_sync || rd->hs.commit != r->prev_hs.commit;
    rd->ss = (raft_soft_state){.leader = r->leader, .role = r->role};
    rd->ss_changed = rd->ss.leader != r->prev_ss.leader || rd->ss.role != r->prev_ss.role;
    ready_snapshot(r, rd);
    if (!rd->has_snapshot) {
        ready_log(r, rd);
    }
    rd->reads = r->read_out;
    rd->reads_count = r->read_out_count;
    assert(rd->entries_count == 0 || rd->entries[0].index <= raft_log_last(&r->log));
    assert(rd->committed_count == 0 || rd->committed[0].index == r->applied + 1);
    r->in_ready = true;
    return 0;
}

void raft_advance(raft *r, const struct raft_ready *rd) {
    assert(r != NULL && rd != NULL);
    assert(r->in_ready && rd->msgs == r->out && rd->msgs_count == r->out_count);
    r->in_ready = false;
    r->prev_hs = rd->hs;
    r->prev_ss = rd->ss;
    if (rd->entries_count > 0) {
        r->log.handed = rd->entries[rd->entries_count - 1].index;
    }
    if (rd->committed_count > 0) {
        r->applied = rd->committed[rd->committed_count - 1].index;
    }
    out_clear(r);
    r->read_out_count = 0;
    if (rd->has_chunk) {
        raft_snap_chunk_stored(r, &rd->chunk);
    }
    if (rd->has_snapshot) {
        raft_snap_installed(r);
    }
    raft_invariants(r);
}

/* ---- message copies ---- */

int raft_msg_copy(raft_msg *dst, const raft_msg *src) {
    assert(dst != NULL && src != NULL);
    *dst = *src;
    dst->entries = NULL;
    dst->snap_data = NULL;
    if (src->entries_count > 0) {
        size_t bytes = 0, n = src->entries_count;
        for (size_t i = 0; i < n; i++) {
            bytes += src->entries[i].len;
        }
        raft_entry *e = malloc(n * sizeof(*e) + bytes);
        if (e == NULL) {
            memset(dst, 0, sizeof(*dst));
            return KV_ENOMEM;
        }
        char *data = (char *)(e + n);
        for (size_t i = 0; i < n; i++) {
            e[i] = src->entries[i];
            e[i].blk_ = NULL;
            e[i].data = e[i].len > 0 ? data : NULL;
            if (e[i].len > 0) {
                memcpy(data, src->entries[i].data, e[i].len);
            }
            data += e[i].len;
        }
        dst->entries = e;
    }
    if (src->snap_len > 0) {
        dst->snap_data = malloc(src->snap_len);
        if (dst->snap_data == NULL) {
            free(dst->entries);
            memset(dst, 0, sizeof(*dst));
            return KV_ENOMEM;
        }
        memcpy(dst->snap_data, src->snap_data, src->snap_len);
    }
    return 0;
}

void raft_msg_free(raft_msg *m) {
    if (m == NULL) {
        return;
    }
    free(m->entries);
    free(m->snap_data);
    memset(m, 0, sizeof(*m));
}
