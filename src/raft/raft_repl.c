/*
 * raft_repl.c: log replication (paper §5.3), flow control (etcd-io/raft
 * Progress: probe / replicate with an inflight window), commitment (paper
 * §5.4.2), proposals and the durability reports that drive commits.
 */
#include <stdlib.h>
#include <string.h>

#include "raft_int.h"

/* ---- inflight window: last index of each APPEND not yet acknowledged ---- */

static bool infl_full(const raft_inflights *in) {
    return in->count >= in->cap;
}

static void infl_add(raft_inflights *in, uint64_t last) {
    assert(!infl_full(in));
    assert(in->cap <= KV_RAFT_INFLIGHT_MSGS_MAX);
    in->last[(in->start + in->count) % in->cap] = last;
    in->count++;
}

/* Frees every message whose last index <= index (acknowledged). */
static void infl_free_to(raft_inflights *in, uint64_t index) {
    while (in->count > 0 && in->last[in->start] <= index) {
        in->start = (in->start + 1) % in->cap;
        in->count--;
    }
}

static void infl_reset(raft_inflights *in, uint32_t cap) {
    assert(cap > 0 && cap <= KV_RAFT_INFLIGHT_MSGS_MAX);
    in->start = 0;
    in->count = 0;
    in->cap = cap;
}

/* ---- peers ---- */

raft_peer *raft_peer_get(raft *r, uint64_t id) {
    for (uint32_t i = 0; i < r->peers_count; i++) {
        if (r->peers[i].id == id) {
            return &r->peers[i];
        }
    }
    return NULL;
}

const raft_peer *raft_peer_cget(const raft *r, uint64_t id) {
    return raft_peer_get((raft *)r, id);
}

static void peer_probe(raft *r, raft_peer *p, uint64_t next) {
    assert(next >= 1 && next <= raft_log_last(&r->log) + 1);
    p->state = RAFT_PROGRESS_PROBE;
    p->next = next > p->match + 1 ? next : p->match + 1;
    p->probe_sent = false;
    infl_reset(&p->infl, r->cfg.max_inflight_msgs);
}

/* A new leader's view: nothing known to match, next after its last entry
 * (paper §5.3, nextIndex initialization). */
void raft_peers_reset(raft *r) {
    for (uint32_t i = 0; i < r->peers_count; i++) {
        raft_peer *p = &r->peers[i];
        p->match = p->id == r->id ? r->log.stable : 0;
        p->commit_sent = 0;
        p->read_acked = 0;
        p->recent_active = p->id == r->id;
        p->quiet_windows = p->id == r->id ? 0 : RAFT_FLOOR_QUIET_WINDOWS; /* until heard */
        p->want_send = false;
        p->want_empty = false;
        peer_probe(r, p, raft_log_last(&r->log) + 1);
    }
}

void raft_send_want_all(raft *r) {
    for (uint32_t i = 0; i < r->peers_count; i++) {
        r->peers[i].want_send = r->peers[i].id != r->id;
    }
}

static bool peer_paused(const raft_peer *p) {
    if (p->state == RAFT_PROGRESS_PROBE) {
        return p->probe_sent;
    }
    return p->state == RAFT_PROGRESS_SNAPSHOT || infl_full(&p->infl);
}

/* Sends one APPEND from p->next (entries of at most max_msg_bytes, each
 * counted with its wire overhead, and at least one entry: every APPEND
 * fits in a frame, kv/limits.h). Its entries are attached at raft_ready().
 * Returns true when another one may follow at once (pipelining in
 * REPLICATE). */
static bool send_append(raft *r, raft_peer *p, bool send_if_empty) {
    assert(r->role == RAFT_LEADER && p->id != r->id);
    if (p->state == RAFT_PROGRESS_SNAPSHOT) {
        raft_snap_send(r, p);
        return false;
    }
    if (peer_paused(p)) {
        return false;
    }
    uint64_t prev = p->next - 1, last = raft_log_last(&r->log);
    assert(prev <= last);
    if (prev < r->log.snap_index) {
        raft_snap_start(r, p); /* the entries it needs are compacted */
        return false;
    }
    size_t n = 0;
    uint64_t bytes = 0;
    while (prev + n < last) {
        uint64_t len = raft_log_at(&r->log, prev + n + 1)->len + KV_RAFT_ENTRY_WIRE_OVERHEAD_BYTES;
        if (n > 0 && bytes + len > r->cfg.max_msg_bytes) {
            break;
        }
        bytes += len;
        n++;
    }
    if (n == 0 && !send_if_empty) {
        return false;
    }
    raft_msg *m = raft_out_push(r, RAFT_MSG_APPEND, p->id);
    m->index = prev;
    m->log_term = raft_log_term_at(&r->log, prev);
    m->entries_count = n;
    m->hint_term = raft_log_term_at(&r->log, prev + n); /* checked, then cleared, at raft_ready */
    m->commit = r->commit;
    p->commit_sent = r->commit;
    if (p->state == RAFT_PROGRESS_REPLICATE && n > 0) {
        p->next = prev + n + 1; /* optimistic: pipelining */
        infl_add(&p->infl, prev + n);
        return true;
    }
    p->probe_sent = p->state == RAFT_PROGRESS_PROBE;
    return false;
}

/* At raft_ready: sends what each peer wants, batching every entry proposed
 * since the last Ready into as few messages as the limits allow. */
void raft_flush_sends(raft *r) {
    if (r->role != RAFT_LEADER) {
        r->bcast_commit = false;
        return;
    }
    for (uint32_t i = 0; i < r->peers_count; i++) {
        raft_peer *p = &r->peers[i];
        if (p->id == r->id || (!p->want_send && !r->bcast_commit)) {
            p->want_send = false;
            continue;
        }
        size_t before = r->out_count;
        for (uint32_t k = 0; k < r->cfg.max_inflight_msgs && send_append(r, p, false); k++) {
        }
        if (r->out_count == before &&
            (p->want_empty || (r->bcast_commit && p->commit_sent < r->commit))) {
            send_append(r, p, true);
        }
        p->want_send = false;
        p->want_empty = false;
    }
    r->bcast_commit = false;
}

void raft_send_heartbeats(raft *r, uint64_t ctx) {
    assert(r->role == RAFT_LEADER);
    for (uint32_t i = 0; i < r->peers_count; i++) {
        const raft_peer *p = &r->peers[i];
        if (p->id == r->id) {
            continue;
        }
        raft_msg *m = raft_out_push(r, RAFT_MSG_HEARTBEAT, p->id);
        /* only what it is known to have: its log may still differ beyond */
        m->commit = p->match < r->commit ? p->match : r->commit;
        m->context = ctx;
    }
}

/* The target's campaign ignores the followers' leases, so this leader's
 * lease ends here for the rest of its term (raft_read.c). */
void raft_send_timeout_now(raft *r, uint64_t to) {
    assert(r->role == RAFT_LEADER);
    r->lease_revoked = true;
    raft_out_push(r, RAFT_MSG_TIMEOUT_NOW, to);
}

/* ---- commitment ---- */

static void commit_to(raft *r, uint64_t index) {
    assert(index > r->commit && index <= raft_log_last(&r->log));
    assert(r->role == RAFT_LEADER && raft_log_term_at(&r->log, index) == r->term);
    for (uint64_t i = r->commit + 1; i <= index; i++) {
        const raft_entry *e = raft_log_at(&r->log, i);
        if (e->term == r->term && e->type == RAFT_ENTRY_NORMAL) {
            r->uncommitted_bytes -= e->len < r->uncommitted_bytes ? e->len : r->uncommitted_bytes;
        }
    }
    r->commit = index;
    r->bcast_commit = true;
    raft_reads_release(r);
    raft_maybe_step_down_removed(r);
}

static int cmp_desc(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? 1 : (x > y ? -1 : 0);
}

/* Paper §5.3/§5.4.2: the largest index durable on a quorum of voters is
 * committed, but only if its entry is of the current term (earlier terms'
 * entries commit indirectly). The leader counts itself only up to its own
 * durable index (docs/rules.md). */
void raft_maybe_commit(raft *r) {
    if (r->role != RAFT_LEADER) {
        return;
    }
    uint64_t m[KV_NODES_MAX];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->peers_count; i++) {
        const raft_peer *p = &r->peers[i];
        if (p->voter) {
            m[n++] = p->id == r->id ? r->log.stable : p->match;
        }
    }
    if (n == 0) {
        return;
    }
    assert(n <= KV_NODES_MAX);
    qsort(m, n, sizeof(m[0]), cmp_desc);
    uint64_t mci = m[raft_quorum(r) - 1];
    if (mci > r->commit && raft_log_term_at(&r->log, mci) == r->term) {
        commit_to(r, mci);
    }
}

/* ---- leader: responses ---- */

/* The largest index <= index whose term is <= term (etcd findConflictByTerm):
 * where to probe next, skipping a whole term per round trip. */
static uint64_t conflict_by_term(const raft_log *l, uint64_t index, uint64_t term) {
    if (index > raft_log_last(l)) {
        index = raft_log_last(l);
    }
    while (index > l->snap_index && raft_log_term_at(l, index) > term) {
        index--;
    }
    return index;
}

static void handle_reject(raft *r, raft_peer *p, const raft_msg *m) {
    assert(m->reject && r->role == RAFT_LEADER);
    if (p->state == RAFT_PROGRESS_REPLICATE) {
        if (m->index <= p->match) {
            return; /* stale */
        }
        peer_probe(r, p, p->match + 1);
    } else if (p->state == RAFT_PROGRESS_PROBE) {
        if (p->next - 1 != m->index) {
            return; /* stale: not the probe in flight */
        }
        uint64_t hint = m->reject_hint;
        if (m->hint_term > 0) {
            hint = conflict_by_term(&r->log, hint, m->hint_term);
        }
        uint64_t next = m->index < hint + 1 ? m->index : hint + 1;
        peer_probe(r, p, next);
    } else {
        return;
    }
    p->want_send = true;
}

/* Returns 0, or KV_EPROTO for an acknowledgement of entries this leader
 * never had (its log only grows during its term). */
int raft_handle_append_resp(raft *r, raft_peer *p, const raft_msg *m) {
    if (m->reject) {
        handle_reject(r, p, m); /* fields checked by raft.c check_msg */
        return 0;
    }
    if (m->index > raft_log_last(&r->log)) {
        return KV_EPROTO;
    }
    bool updated = m->index > p->match;
    if (updated) {
        p->match = m->index;
    }
    if (p->next <= m->index) {
        p->next = m->index + 1;
    }
    if (p->state == RAFT_PROGRESS_PROBE) {
        if (updated || p->match + 1 == p->next) {
            p->state = RAFT_PROGRESS_REPLICATE;
            p->next = p->match + 1;
            infl_reset(&p->infl, r->cfg.max_inflight_msgs);
        }
        p->probe_sent = false;
    } else if (p->state == RAFT_PROGRESS_REPLICATE) {
        infl_free_to(&p->infl, m->index);
    } else if (p->match >= p->snap_index) {
        peer_probe(r, p, p->match + 1);
    }
    p->want_send = true;
    if (updated) {
        raft_maybe_commit(r);
    }
    if (r->role == RAFT_LEADER && r->transferee == p->id && p->match == raft_log_last(&r->log)) {
        raft_send_timeout_now(r, p->id); /* thesis §3.10: target caught up */
    }
    return 0;
}

/* Returns 0, or KV_EPROTO for a round this leader never started (read_seq
 * only grows during its term). */
int raft_handle_heartbeat_resp(raft *r, raft_peer *p, const raft_msg *m) {
    if (m->context > r->read_seq) {
        return KV_EPROTO;
    }
    if (m->context > p->read_acked) {
        p->read_acked = m->context;
        raft_reads_release(r);
    }
    if (p->state == RAFT_PROGRESS_PROBE) {
        p->probe_sent = false; /* a lost probe is retried once per heartbeat */
    } else if (p->state == RAFT_PROGRESS_REPLICATE && infl_full(&p->infl)) {
        /* lost appends: free one slot so the next send detects the gap */
        p->infl.start = (p->infl.start + 1) % p->infl.cap;
        p->infl.count--;
    }
    if (p->match < raft_log_last(&r->log)) {
        /* behind: an empty append at least, so a gap left by lost appends
         * shows as a rejection (etcd-io/raft does the same) */
        p->want_send = true;
        p->want_empty = true;
    }
    return 0;
}

/* ---- follower ---- */

/* Acknowledges to the leader what is durable and known to match its log;
 * never more (paper §5.3: a follower acknowledges only durable entries). */
void raft_follower_ack(raft *r) {
    if (r->role != RAFT_FOLLOWER || r->leader == 0) {
        return;
    }
    uint64_t a = r->log.stable < r->leader_match ? r->log.stable : r->leader_match;
    assert(a <= raft_log_last(&r->log));
    if (a > r->acked) {
        r->acked = a;
        raft_msg *m = raft_out_push(r, RAFT_MSG_APPEND_RESP, r->leader);
        m->index = a;
    }
}

static void reject_append(raft *r, const raft_msg *m) {
    uint64_t hint = conflict_by_term(&r->log, m->index, m->log_term);
    raft_msg *resp = raft_out_push(r, RAFT_MSG_APPEND_RESP, m->from);
    resp->reject = true;
    resp->index = m->index;
    resp->reject_hint = hint;
    resp->hint_term = raft_log_term_at(&r->log, hint);
}

/* Paper §5.3 (AppendEntries receiver): accept when the log holds (index,
 * log_term); drop a conflicting suffix; append what is new. Entries <= commit
 * match any leader's (Leader Completeness, §5.4) and are skipped. Returns 0,
 * KV_ENOMEM, or KV_EPROTO (nothing changed) for entries no real leader sends:
 * terms going down, or a change to a committed or already matched entry. */
int raft_handle_append(raft *r, const raft_msg *m) {
    const raft_entry *ents = m->entries;
    size_t n = m->entries_count;
    uint64_t prev = m->index;
    if (prev < r->commit) {
        size_t skip = (size_t)(r->commit - prev);
        skip = skip < n ? skip : n;
        if (skip > 0) {
            ents += skip; /* not NULL + 0 (UB) for an empty APPEND */
            n -= skip;
        }
        prev = r->commit;
    } else if (prev > raft_log_last(&r->log) || raft_log_term_at(&r->log, prev) != m->log_term) {
        reject_append(r, m);
        return 0;
    }
    uint64_t last = raft_log_last(&r->log);
    size_t i = 0;
    while (i < n && ents[i].index <= last &&
           raft_log_term_at(&r->log, ents[i].index) == ents[i].term) {
        i++;
    }
    if (i < n) {
        if (ents[i].term < raft_log_term_at(&r->log, ents[i].index - 1)) {
            return KV_EPROTO; /* terms going down: not a real leader's log */
        }
        if (ents[i].index <= last) {
            /* a committed entry never changes (§5.4), nor one that matched
             * this term's leader: its log only grows during its term */
            if (ents[i].index <= r->commit || ents[i].index <= r->leader_match) {
                return KV_EPROTO;
            }
            raft_log_truncate(r, ents[i].index);
        }
        int rc = raft_log_copy_in(r, ents + i, n - i);
        if (rc != 0) {
            return rc;
        }
    }
    uint64_t lastnew = m->index + m->entries_count;
    assert(lastnew <= raft_log_last(&r->log));
    if (lastnew > r->leader_match) {
        r->leader_match = lastnew;
    }
    uint64_t c = m->commit < lastnew ? m->commit : lastnew;
    if (c > r->commit) {
        r->commit = c;
    }
    if (lastnew <= r->log.stable) {
        /* nothing to wait for: answer now, also as a probe's answer */
        raft_msg *resp = raft_out_push(r, RAFT_MSG_APPEND_RESP, m->from);
        resp->index = r->log.stable < r->leader_match ? r->log.stable : r->leader_match;
        if (resp->index > r->acked) {
            r->acked = resp->index;
        }
    }
    return 0;
}

void raft_handle_heartbeat(raft *r, const raft_msg *m) {
    uint64_t last = raft_log_last(&r->log);
    uint64_t c = m->commit < last ? m->commit : last;
    if (c > r->commit) {
        r->commit = c;
    }
    raft_msg *resp = raft_out_push(r, RAFT_MSG_HEARTBEAT_RESP, m->from);
    resp->context = m->context;
}

/* ---- inputs ---- */

void raft_persisted(raft *r, uint64_t index, uint64_t term) {
    assert(r != NULL && !r->in_ready);
    if (index <= r->log.stable || index > r->log.handed ||
        raft_log_term_at(&r->log, index) != term) {
        return; /* old, superseded by a truncation, or never handed out */
    }
    r->log.stable = index;
    assert(r->log.stable <= r->log.handed);
    if (r->role == RAFT_LEADER) {
        raft_peer *self = raft_peer_get(r, r->id);
        if (self != NULL) {
            self->match = index;
        }
        raft_maybe_commit(r);
    } else {
        raft_follower_ack(r);
    }
    raft_invariants(r);
}

int raft_propose_batch(raft *r, const raft_buf *bufs, size_t count, uint64_t *first_index_out) {
    assert(r != NULL && !r->in_ready);
    if (count == 0 || bufs == NULL) {
        return KV_EINVAL;
    }
    if (r->role != RAFT_LEADER) {
        return KV_ENOTLEADER;
    }
    if (r->transferee != 0) {
        return KV_EBUSY; /* thesis §3.10: no new entries while transferring */
    }
    uint64_t bytes = 0;
    for (size_t i = 0; i < count; i++) {
        if (bufs[i].len > r->cfg.max_entry_bytes) {
            return KV_ETOOBIG;
        }
        bytes += bufs[i].len;
    }
    if (r->uncommitted_bytes > 0 && r->uncommitted_bytes + bytes > r->cfg.max_uncommitted_bytes) {
        return KV_EBUSY;
    }
    if (raft_log_reserve(&r->log, count) != 0) {
        return KV_ENOMEM;
    }
    raft_blk *b = bytes > 0 ? raft_blk_new(bytes) : NULL;
    if (bytes > 0 && b == NULL) {
        return KV_ENOMEM;
    }
    uint64_t first = raft_log_last(&r->log) + 1;
    size_t off = 0;
    for (size_t i = 0; i < count; i++) {
        raft_entry e = {.index = first + i, .term = r->term, .type = RAFT_ENTRY_NORMAL};
        if (bufs[i].len > 0) {
            e.data = (char *)raft_blk_data(b) + off;
            e.len = bufs[i].len;
            e.blk_ = b;
            memcpy(e.data, bufs[i].data, e.len);
            off += e.len;
        }
        raft_log_push(r, &e);
    }
    assert(raft_log_last(&r->log) == first + count - 1);
    r->uncommitted_bytes += bytes;
    raft_send_want_all(r);
    if (first_index_out != NULL) {
        *first_index_out = first;
    }
    raft_invariants(r);
    return 0;
}

int raft_propose(raft *r, const void *data, size_t len, uint64_t *index_out) {
    raft_buf b = {.data = data, .len = len};
    return raft_propose_batch(r, &b, 1, index_out);
}

int raft_transfer_leader(raft *r, uint64_t id) {
    assert(r != NULL && !r->in_ready);
    if (r->role != RAFT_LEADER) {
        return KV_ENOTLEADER;
    }
    if (id == r->id) {
        return 0;
    }
    const raft_peer *p = raft_peer_get(r, id);
    if (p == NULL || !p->voter) {
        return KV_EINVAL;
    }
    r->transferee = id;
    r->transfer_elapsed = 0;
    if (p->match == raft_log_last(&r->log)) {
        raft_send_timeout_now(r, id);
    } else {
        /* catch it up now; an empty append shows a gap left by lost ones */
        raft_peer *w = raft_peer_get(r, id);
        w->want_send = true;
        w->want_empty = true;
    }
    return 0;
}

int raft_progress(const raft *r, uint64_t id, raft_progress_info *out) {
    if (r->role != RAFT_LEADER) {
        return KV_ENOTLEADER;
    }
    const raft_peer *p = raft_peer_cget(r, id);
    if (p == NULL) {
        return KV_ENOTFOUND;
    }
    memset(out, 0, sizeof(*out));
    out->id = p->id;
    out->learner = !p->voter;
    out->state = (raft_progress_state)p->state;
    out->match = p->id == r->id ? r->log.stable : p->match;
    out->next = p->next;
    out->inflight = p->infl.count;
    out->recent_active = p->recent_active || p->id == r->id;
    out->snap_index = p->state == RAFT_PROGRESS_SNAPSHOT ? p->snap_index : 0;
    out->snap_offset = p->state == RAFT_PROGRESS_SNAPSHOT ? p->snap_acked : 0;
    return 0;
}
