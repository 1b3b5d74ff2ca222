/*
 * raft_read.c: linearizable reads by ReadIndex (thesis §6.4), batched: every
 * read requested between two raft_ready() calls waits for the same heartbeat
 * round, numbered by read_seq and echoed in the heartbeats' context.
 *
 * A read (ctx) is released as (ctx, index) when
 *  1. an entry of the leader's term is committed (its no-op: the leader then
 *     knows the commit index, thesis §6.4 step 1; docs/rules.md "stale reads
 *     after an election"), index being the commit index when the read came
 *     (or when that no-op committed, if later), and
 *  2. a quorum of voters acknowledged a heartbeat round started after the
 *     read came (the leader was still leader then, step 2).
 * With lease_read, step 2 may rest on an EARLIER round (thesis §6.4.1): a
 * follower ignores campaigns for election_ticks of its ticks after it heard
 * from the leader (raft.c step_higher_term), so no other leader can exist
 * until that long after the SEND of a round that a quorum confirmed. The
 * leader notes its tick at each round's start (every heartbeat starts one
 * in lease mode) and serves a read at once only while the newest confirmed
 * round is younger than election_ticks - 1 ticks (one tick for the phase
 * between two nodes' clocks; clocks must not drift). Not CheckQuorum: it
 * steps a leader down up to two election timeouts after its last ack, so a
 * newer leader may already commit meanwhile (etcd-io/raft ReadOnlyLeaseBased
 * has that window). A leader that sent TIMEOUT_NOW has no lease for the
 * rest of its term: a transfer campaign ignores leases (etcd-io/raft#99,
 * etcd#12704). Otherwise a read takes a round, as without lease_read.
 */
#include <stdlib.h>
#include <string.h>

#include "raft_int.h"

static bool term_committed(const raft *r) {
    return raft_log_term_at(&r->log, r->commit) == r->term;
}

static int read_out_push(raft *r, uint64_t ctx, uint64_t index, int status) {
    if (r->read_out_count == r->read_out_cap) {
        size_t cap = r->read_out_cap ? r->read_out_cap * 2 : 16;
        raft_read_state *o = realloc(r->read_out, cap * sizeof(*o));
        if (o == NULL) {
            return KV_ENOMEM;
        }
        r->read_out = o;
        r->read_out_cap = cap;
    }
    assert(r->read_out_count < r->read_out_cap);
    r->read_out[r->read_out_count++] =
        (raft_read_state){.ctx = ctx, .index = index, .status = status};
    return 0;
}

static raft_read_req *reads_front(raft *r) {
    assert(r->reads_count > 0);
    return &r->reads[r->reads_head];
}

static void reads_pop(raft *r) {
    assert(r->reads_count > 0);
    r->reads_head = (r->reads_head + 1) % r->reads_cap;
    r->reads_count--;
}

static int reads_push(raft *r, raft_read_req q) {
    if (r->reads_count == r->reads_cap) {
        size_t cap = r->reads_cap ? r->reads_cap * 2 : 16;
        raft_read_req *a = malloc(cap * sizeof(*a));
        if (a == NULL) {
            return KV_ENOMEM;
        }
        for (size_t i = 0; i < r->reads_count; i++) {
            a[i] = r->reads[(r->reads_head + i) % r->reads_cap];
        }
        free(r->reads);
        r->reads = a;
        r->reads_cap = cap;
        r->reads_head = 0;
    }
    r->reads[(r->reads_head + r->reads_count) % r->reads_cap] = q;
    r->reads_count++;
    return 0;
}

/* The highest round a quorum of voters has acknowledged (the leader counts
 * every round it started). */
static uint64_t confirmed_round(const raft *r) {
    uint64_t acks[KV_NODES_MAX];
    uint32_t n = 0;
    for (uint32_t i = 0; i < r->peers_count; i++) {
        const raft_peer *p = &r->peers[i];
        if (p->voter) {
            acks[n++] = p->id == r->id ? r->read_seq : p->read_acked;
        }
    }
    int q = raft_quorum(r);
    if ((int)n < q) {
        return 0;
    }
    /* q-th largest, by selection: n <= KV_NODES_MAX */
    for (int k = 0; k < q; k++) {
        for (uint32_t j = k + 1; j < n; j++) {
            if (acks[j] > acks[k]) {
                uint64_t t = acks[k];
                acks[k] = acks[j];
                acks[j] = t;
            }
        }
    }
    return acks[q - 1];
}

void raft_reads_release(raft *r) {
    assert(r->reads_count <= r->reads_cap);
    if (r->role != RAFT_LEADER || r->reads_count == 0 || !term_committed(r)) {
        return;
    }
    uint64_t confirmed = confirmed_round(r);
    while (r->reads_count > 0 && reads_front(r)->seq <= confirmed) {
        raft_read_req *q = reads_front(r);
        uint64_t index = q->index > r->commit || q->index == 0 ? r->commit : q->index;
        if (read_out_push(r, q->ctx, index, 0) != 0) {
            return; /* retried at the next release */
        }
        reads_pop(r);
    }
}

/* Starts a heartbeat round: numbers it and notes when (for leases). */
uint64_t raft_reads_new_round(raft *r) {
    assert(r->role == RAFT_LEADER);
    r->read_seq++;
    r->round_tick[r->read_seq % RAFT_LEASE_ROUNDS] = r->lead_ticks;
    assert(r->read_seq > 0);
    return r->read_seq;
}

/* At raft_ready: one heartbeat round for every read that waits for one. */
void raft_reads_start_round(raft *r) {
    if (!r->read_round_wanted || r->role != RAFT_LEADER) {
        r->read_round_wanted = false;
        return;
    }
    r->read_round_wanted = false;
    raft_send_heartbeats(r, raft_reads_new_round(r));
    raft_reads_release(r); /* a single voter confirms alone */
}

/* lease_read: no newer leader can exist yet (see the top of this file). */
static bool lease_valid(const raft *r) {
    if (!r->cfg.lease_read || r->lease_revoked || !term_committed(r)) {
        return false;
    }
    uint64_t k = confirmed_round(r);
    if (k == 0 || k + RAFT_LEASE_ROUNDS <= r->read_seq) {
        return false; /* none, or too old to know when it started */
    }
    uint64_t age = r->lead_ticks - r->round_tick[k % RAFT_LEASE_ROUNDS];
    assert(age <= r->lead_ticks);
    return age + 2 <= r->cfg.election_ticks;
}

int raft_read_index(raft *r, uint64_t ctx) {
    assert(r != NULL && !r->in_ready);
    assert(r->reads_count + r->read_out_count <= r->cfg.max_read_pending);
    if (r->role != RAFT_LEADER) {
        return KV_ENOTLEADER;
    }
    /* answered reads count too until the app took them (raft_advance) */
    if (r->reads_count + r->read_out_count >= r->cfg.max_read_pending) {
        return KV_EBUSY;
    }
    if (lease_valid(r)) {
        return read_out_push(r, ctx, r->commit, 0);
    }
    raft_read_req q = {.ctx = ctx, .index = term_committed(r) ? r->commit : 0};
    q.seq = r->read_seq + 1; /* the next round, started at raft_ready */
    int rc = reads_push(r, q);
    if (rc != 0) {
        return rc;
    }
    r->read_round_wanted = true;
    return 0;
}

/* Leadership lost: every waiting read is answered KV_ENOTLEADER. */
void raft_reads_fail_all(raft *r) {
    while (r->reads_count > 0) {
        if (read_out_push(r, reads_front(r)->ctx, 0, KV_ENOTLEADER) != 0) {
            break; /* out of memory: the rest time out at the app */
        }
        reads_pop(r);
    }
    r->reads_count = 0;
    r->reads_head = 0;
    r->read_round_wanted = false;
}

void raft_reads_free(raft *r) {
    free(r->reads);
    free(r->read_out);
    r->reads = NULL;
    r->read_out = NULL;
    r->reads_count = r->reads_cap = r->read_out_count = r->read_out_cap = 0;
}

size_t raft_read_pending(const raft *r) {
    return r->reads_count;
}
