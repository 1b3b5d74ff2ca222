/*
 * raft_snap.c: snapshots (thesis §5): the app's snapshot point, log
 * compaction, and shipping a snapshot in chunks (InstallSnapshot, paper §7,
 * with offsets) so a transfer resumes where the follower says it is.
 *
 * Leader, per follower in SNAPSHOT state: snap_acked is the next offset the
 * follower expects, snap_sent the next one to send; at most
 * RAFT_SNAPSHOT_CHUNKS_INFLIGHT chunks lie between them. No progress for
 * election_ticks ticks: resend from snap_acked. The follower answers every
 * chunk with the offset it expects next, so a lost chunk, a reconnect or a
 * new leader all resume from there.
 */
#include <stdlib.h>
#include <string.h>

#include "raft_int.h"

#define WINDOW_BYTES ((uint64_t)RAFT_SNAPSHOT_CHUNKS_INFLIGHT * KV_SNAPSHOT_CHUNK_BYTES)
#define TOTAL_UNKNOWN UINT64_MAX

static void snap_abort(raft *r, raft_peer *p) {
    assert(p->id != r->id);
    p->state = RAFT_PROGRESS_PROBE;
    p->next = p->match + 1;
    p->probe_sent = true; /* retried after the next heartbeat response */
    p->infl.count = 0;
    p->infl.start = 0;
    assert(p->next >= 1);
}

void raft_snap_start(raft *r, raft_peer *p) {
    assert(r->role == RAFT_LEADER && p->id != r->id);
    if (!r->has_snap || r->cfg.snapshot_read == NULL) {
        p->probe_sent = true; /* nothing to send yet: wait */
        return;
    }
    p->state = RAFT_PROGRESS_SNAPSHOT;
    p->snap_index = r->snap.index;
    p->snap_term = r->snap.term;
    p->snap_conf = r->snap.membership;
    p->snap_total = TOTAL_UNKNOWN;
    p->snap_acked = 0;
    p->snap_sent = 0;
    p->snap_idle = 0;
    raft_snap_send(r, p);
}

/* Sends chunks from snap_sent while the window has room. */
void raft_snap_send(raft *r, raft_peer *p) {
    assert(p->state == RAFT_PROGRESS_SNAPSHOT);
    while (p->snap_sent - p->snap_acked < WINDOW_BYTES &&
           (p->snap_total == TOTAL_UNKNOWN || p->snap_sent < p->snap_total)) {
        void *buf = malloc(KV_SNAPSHOT_CHUNK_BYTES);
        if (buf == NULL) {
            return; /* retried on the next tick */
        }
        size_t got = 0;
        uint64_t total = 0;
        int rc = r->cfg.snapshot_read(r->cfg.snapshot_ctx, p->snap_index, p->snap_term,
                                      p->snap_sent, buf, KV_SNAPSHOT_CHUNK_BYTES, &got, &total);
        if (rc != 0 || got > KV_SNAPSHOT_CHUNK_BYTES || p->snap_sent + got > total ||
            (got == 0 && p->snap_sent < total)) {
            free(buf);
            snap_abort(r, p); /* e.g. KV_ESTALE: the next try takes the newest */
            return;
        }
        p->snap_total = total;
        raft_msg *m = raft_out_push(r, RAFT_MSG_SNAPSHOT, p->id);
        if (m == &r->out_sink) {
            free(buf);
            return;
        }
        m->snap.index = p->snap_index;
        m->snap.term = p->snap_term;
        m->snap.membership = p->snap_conf;
        m->snap_offset = p->snap_sent;
        m->snap_total = total;
        m->snap_data = got > 0 ? buf : NULL;
        m->snap_len = got;
        m->snap_last = p->snap_sent + got == total;
        m->commit = r->commit;
        if (got == 0) {
            free(buf);
            break; /* an empty snapshot: one message */
        }
        p->snap_sent += got;
    }
}

void raft_snap_tick(raft *r, raft_peer *p) {
    assert(p->state == RAFT_PROGRESS_SNAPSHOT && p->snap_acked <= p->snap_sent);
    if (++p->snap_idle >= r->cfg.election_ticks) {
        p->snap_idle = 0;
        p->snap_sent = p->snap_acked;  /* a chunk or its ack was lost */
        p->snap_total = TOTAL_UNKNOWN; /* so at least one chunk goes again */
        raft_snap_send(r, p);
    }
}

/* Returns 0, or KV_EPROTO for an offset past the snapshot's end (the
 * follower expects at most its size). */
int raft_handle_snapshot_resp(raft *r, raft_peer *p, const raft_msg *m) {
    if (p->state != RAFT_PROGRESS_SNAPSHOT || m->snap.index != p->snap_index ||
        m->snap.term != p->snap_term) {
        return 0; /* about another transfer */
    }
    if (!m->reject && !m->snap_last && p->snap_total != TOTAL_UNKNOWN &&
        m->snap_offset > p->snap_total) {
        return KV_EPROTO;
    }
    if (m->reject) {
        /* it does not need it: its log holds index (durable and committed,
         * so matching). Probe from there; if that still needs a snapshot,
         * wait for a heartbeat answer rather than resend at once. */
        if (m->index > p->match && m->index <= raft_log_last(&r->log)) {
            p->match = m->index;
        }
        snap_abort(r, p);
        p->probe_sent = p->next - 1 < r->log.snap_index;
        p->want_send = true;
        return 0;
    }
    if (m->snap_last) {
        /* installed: replicate from after it (thesis §5.3) */
        if (p->snap_index > p->match) {
            p->match = p->snap_index;
        }
        snap_abort(r, p);
        p->probe_sent = false;
        p->want_send = true;
        raft_maybe_commit(r);
        return 0;
    }
    uint64_t off = m->snap_offset;
    if (off > p->snap_acked) {
        p->snap_acked = off;
        p->snap_idle = 0;
        if (off > p->snap_sent) {
            p->snap_sent = off; /* it had more already (an earlier leader's) */
        }
    } else if (off < p->snap_acked) {
        p->snap_acked = off; /* it lost what it had: start there */
        p->snap_sent = off;
    }
    raft_snap_send(r, p);
    return 0;
}

/* ---- follower ---- */

void raft_rcv_free(raft *r) {
    for (uint32_t i = 0; i < r->rcv_q_count; i++) {
        free(r->rcv_q[i].data);
    }
    r->rcv_q_count = 0;
}

static void snap_reply(raft *r, uint64_t to, bool reject, bool last) {
    raft_msg *m = raft_out_push(r, RAFT_MSG_SNAPSHOT_RESP, to);
    m->snap.index = r->rcv.index;
    m->snap.term = r->rcv.term;
    m->snap_offset = r->rcv_offset;
    m->reject = reject;
    m->snap_last = last;
}

/* Queues a chunk that continues what is stored and queued; answers any
 * other with the offset expected. */
/* A snapshot is not wanted when its last entry is committed here, or is in
 * the log (paper §7: keep the entries after it; etcd-io/raft restore): then
 * everything up to it is committed and the log after it, perhaps already
 * acknowledged to a leader, must not be dropped by an install. The commit
 * index moves up to it and the sender (to; 0: none) is told to replicate
 * entries instead. */
bool raft_snap_unwanted(raft *r, uint64_t index, uint64_t term, uint64_t to) {
    bool in_log = index > r->commit && raft_log_term_at(&r->log, index) == term;
    if (index > r->commit && !in_log) {
        return false;
    }
    if (in_log) {
        r->commit = index; /* Log Matching: our prefix is the snapshot's */
    }
    assert(r->commit <= raft_log_last(&r->log));
    if (to != 0) {
        raft_msg *resp = raft_out_push(r, RAFT_MSG_SNAPSHOT_RESP, to);
        resp->snap.index = index;
        resp->snap.term = term;
        resp->reject = true;
        resp->index = r->commit < r->log.stable ? r->commit : r->log.stable;
    }
    return true;
}

void raft_handle_snapshot(raft *r, const raft_msg *m) {
    assert(r->role == RAFT_FOLLOWER && m->type == RAFT_MSG_SNAPSHOT);
    if (raft_snap_unwanted(r, m->snap.index, m->snap.term, m->from)) {
        return;
    }
    if (r->install_pending) {
        return;
    }
    /* A transfer continues only from the node that started it: two nodes'
     * snapshots of the same (index, term) hold the same state in different
     * bytes (each makes its own files), so a new sender starts over. */
    if (!r->rcv_active || r->rcv.index != m->snap.index || r->rcv.term != m->snap.term ||
        r->rcv_from != m->from) {
        if (m->snap_offset != 0) {
            raft_msg *resp = raft_out_push(r, RAFT_MSG_SNAPSHOT_RESP, m->from);
            resp->snap.index = m->snap.index;
            resp->snap.term = m->snap.term;
            return; /* offset 0: start from the beginning */
        }
        raft_rcv_free(r);
        r->rcv_active = true;
        r->rcv = m->snap;
        r->rcv_total = m->snap_total;
        r->rcv_offset = 0;
        r->rcv_from = m->from;
    }
    uint64_t expected = r->rcv_offset;
    for (uint32_t i = 0; i < r->rcv_q_count; i++) {
        expected += r->rcv_q[i].len;
    }
    /* an empty chunk is only the whole of an empty snapshot */
    bool empty_ok = m->snap_total == 0 && expected == 0 && r->rcv_q_count == 0;
    if (m->snap_offset != expected || m->snap_total != r->rcv_total ||
        r->rcv_q_count == RAFT_SNAPSHOT_CHUNKS_INFLIGHT || (m->snap_len == 0 && !empty_ok)) {
        snap_reply(r, m->from, false, false);
        return;
    }
    void *data = NULL;
    if (m->snap_len > 0) {
        data = malloc(m->snap_len);
        if (data == NULL) {
            return; /* the leader resends */
        }
        memcpy(data, m->snap_data, m->snap_len);
    }
    r->rcv_q[r->rcv_q_count++] =
        (raft_chunk_q){.from = m->from, .offset = m->snap_offset, .data = data, .len = m->snap_len};
}

/* raft_advance of a Ready with a chunk: the app stored it. */
void raft_snap_chunk_stored(raft *r, const raft_snapshot_chunk *c) {
    assert(r->rcv_q_count > 0 && r->rcv_active);
    raft_chunk_q q = r->rcv_q[0];
    assert(q.offset == c->offset && q.len == c->len && q.offset == r->rcv_offset);
    memmove(r->rcv_q, r->rcv_q + 1, sizeof(r->rcv_q[0]) * (r->rcv_q_count - 1));
    r->rcv_q_count--;
    free(q.data);
    r->rcv_offset += q.len;
    if (r->rcv_offset == r->rcv_total) {
        raft_rcv_free(r);
        r->install_pending = true; /* the next Ready installs it */
    } else {
        snap_reply(r, q.from, false, false);
    }
}

/* raft_advance of a Ready with has_snapshot: the app installed it; the log
 * now starts after it (thesis §5.3). */
void raft_snap_installed(raft *r) {
    assert(r->install_pending && r->rcv_active);
    raft_log_reset(r, r->rcv.index, r->rcv.term);
    r->commit = r->commit > r->rcv.index ? r->commit : r->rcv.index;
    r->applied = r->rcv.index;
    r->base_conf = r->rcv.membership;
    r->conf = r->rcv.membership;
    r->has_snap = true;
    r->snap = r->rcv;
    if (r->leader_match < r->rcv.index) {
        r->leader_match = r->rcv.index;
    }
    r->acked = r->acked > r->rcv.index ? r->acked : r->rcv.index;
    raft_conf_changed(r);
    r->install_pending = false;
    r->rcv_active = false;
    assert(raft_log_last(&r->log) == r->snap.index && r->applied == r->snap.index);
    if (r->leader != 0) {
        snap_reply(r, r->leader, false, true);
    }
}

/* ---- the app's snapshots ---- */

int raft_snapshot_done(raft *r, uint64_t index, uint64_t term) {
    assert(r != NULL && !r->in_ready);
    if (index > r->applied || index < r->log.snap_index) {
        return KV_EINVAL;
    }
    if (r->has_snap && index <= r->snap.index) {
        return KV_ESTALE;
    }
    if (raft_log_term_at(&r->log, index) != term) {
        return KV_EINVAL;
    }
    raft_membership c;
    int rc = raft_log_conf_at(r, index, &c);
    if (rc != 0) {
        return rc;
    }
    r->has_snap = true;
    r->snap = (raft_snapshot_meta){.index = index, .term = term, .membership = c};
    if (r->role == RAFT_LEADER) {
        for (uint32_t i = 0; i < r->peers_count; i++) {
            raft_peer *p = &r->peers[i];
            if (p->id != r->id && p->state == RAFT_PROGRESS_PROBE && p->next <= r->log.snap_index) {
                p->probe_sent = false; /* waited for a snapshot */
                p->want_send = true;
            }
        }
    }
    return 0;
}

int raft_compact(raft *r, uint64_t index) {
    assert(r != NULL && !r->in_ready);
    if (!r->has_snap) {
        return KV_EINVAL;
    }
    if (index > r->snap.index) {
        index = r->snap.index;
    }
    if (index > raft_log_last(&r->log)) {
        index = raft_log_last(&r->log);
    }
    raft_log_compact(r, index);
    assert(r->log.snap_index <= r->snap.index || r->snap.index < index);
    return 0;
}

uint64_t raft_compact_floor(const raft *r) {
    if (r->role != RAFT_LEADER) {
        return r->applied;
    }
    uint64_t floor = r->applied;
    for (uint32_t i = 0; i < r->peers_count; i++) {
        const raft_peer *p = &r->peers[i];
        /* one receiving a snapshot goes on from its index, and may go quiet
         * while it installs it: compacted past it, it is sent snapshot after
         * snapshot under load */
        bool snap = p->state == RAFT_PROGRESS_SNAPSHOT;
        uint64_t need = snap ? p->snap_index : p->match;
        bool heard = p->recent_active || (snap && p->quiet_windows < RAFT_FLOOR_QUIET_WINDOWS);
        if (p->id != r->id && heard && need < floor) {
            floor = need;
        }
    }
    uint64_t first = raft_log_first(&r->log), bytes = 0;
    for (uint64_t i = r->applied; i >= floor && i >= first && i > 0; i--) {
        bytes += raft_log_at(&r->log, i)->len;
        if (bytes > r->cfg.max_kept_bytes) {
            return i + 1;
        }
    }
    return floor;
}

uint64_t raft_snapshot_sending(const raft *r) {
    uint64_t oldest = 0;
    if (r->role != RAFT_LEADER) {
        return 0;
    }
    for (uint32_t i = 0; i < r->peers_count; i++) {
        const raft_peer *p = &r->peers[i];
        if (p->state == RAFT_PROGRESS_SNAPSHOT && (oldest == 0 || p->snap_index < oldest)) {
            oldest = p->snap_index;
        }
    }
    return oldest;
}
