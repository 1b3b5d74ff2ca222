/*
 * The invariants, checked as the run goes (every write, commit, apply and
 * after every event), over a global record that outlives node crashes:
 *
 *  election-safety      at most one leader per term (term -> leader id).
 *  log-matching         every entry ever written anywhere carries a chain
 *                       hash of itself and all entries before it; one
 *                       (index, term) must always have one chain, so two
 *                       logs that agree on an entry agree on the whole prefix.
 *  leader-completeness  a node that becomes leader of term L has every entry
 *                       known committed in a term < L (its chain matches).
 *  committed-truncated  no node overwrites an entry known to be committed.
 *  state-machine-safety no two nodes apply different entries at one index,
 *                       nor reach different states after it; a committed
 *                       index never changes its entry.
 *  acked-write-lost     an entry a client was told committed stays the
 *                       entry at its index on every node that applies it,
 *                       and the final leader has applied past all of them.
 *  snapshot-consistency a snapshot at index i equals the state every node
 *                       reached by applying entries 1..i.
 *  apply-order          entries are applied once each, in index order.
 */
#include "sim.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

void sim_check_init(sim_checker *ck) {
    memset(ck, 0, sizeof(*ck));
}

void sim_check_free(sim_checker *ck) {
    free(ck->chains);
    free(ck->idx);
    free(ck->term_leader);
    free(ck->commit_by_term);
    memset(ck, 0, sizeof(*ck));
}

/* ---- (index, term) -> chain --------------------------------------------- */

static size_t chain_pos(const sim_checker *ck, uint64_t index, uint64_t term) {
    uint64_t h = (index * 0x9e3779b97f4a7c15ull) ^ (term * 0xc2b2ae3d27d4eb4full);
    size_t mask = ck->chains_cap - 1, i = (size_t)(h ^ (h >> 29)) & mask;
    while (ck->chains[i].index != 0 && (ck->chains[i].index != index || ck->chains[i].term != term))
        i = (i + 1) & mask;
    return i;
}

static void chain_grow(sim_checker *ck) {
    sim_chain_slot *old = ck->chains;
    size_t old_cap = ck->chains_cap;
    ck->chains_cap = old_cap ? 2 * old_cap : 4096;
    ck->chains = calloc(ck->chains_cap, sizeof(sim_chain_slot));
    assert(ck->chains != NULL);
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].index != 0)
            ck->chains[chain_pos(ck, old[i].index, old[i].term)] = old[i];
    free(old);
}

uint64_t sim_check_chain_of(sim_world *w, uint64_t index, uint64_t term) {
    sim_checker *ck = &w->ck;
    if (ck->chains_cap == 0 || index == 0)
        return 0;
    sim_chain_slot *s = &ck->chains[chain_pos(ck, index, term)];
    return s->index ? s->chain : 0;
}

void sim_check_entry_written(sim_world *w, sim_node *n, const sim_ent *e) {
    sim_checker *ck = &w->ck;
    if (e->chain == 0)
        return;
    if (2 * (ck->chains_count + 1) > ck->chains_cap)
        chain_grow(ck);
    sim_chain_slot *s = &ck->chains[chain_pos(ck, e->index, e->term)];
    if (s->index == 0) {
        *s = (sim_chain_slot){e->index, e->term, e->chain};
        ck->chains_count++;
    } else if (s->chain != e->chain) {
        sim_fail(w, "log-matching",
                 "n%" PRIu64 " wrote entry (%" PRIu64 ",%" PRIu64
                 ") whose log prefix differs from another log with that entry",
                 n->id, e->index, e->term);
    }
}

/* ---- per index ------------------------------------------------------------ */

static sim_idx_rec *rec_at(sim_checker *ck, uint64_t index) {
    assert(index > 0 && index < (1ull << 32));
    if (index >= ck->idx_cap) {
        size_t cap = ck->idx_cap ? ck->idx_cap : 1024;
        while (cap <= index)
            cap *= 2;
        sim_idx_rec *r = realloc(ck->idx, cap * sizeof(*r));
        assert(r != NULL);
        memset(r + ck->idx_cap, 0, (cap - ck->idx_cap) * sizeof(*r));
        ck->idx = r;
        ck->idx_cap = cap;
    }
    return &ck->idx[index];
}

static void note_commit_term(sim_checker *ck, uint64_t term, uint64_t index) {
    if (term >= ck->commit_by_term_cap) {
        size_t cap = ck->commit_by_term_cap ? ck->commit_by_term_cap : 256;
        while (cap <= term)
            cap *= 2;
        uint64_t *a = realloc(ck->commit_by_term, cap * sizeof(*a));
        assert(a != NULL);
        memset(a + ck->commit_by_term_cap, 0, (cap - ck->commit_by_term_cap) * sizeof(*a));
        ck->commit_by_term = a;
        ck->commit_by_term_cap = cap;
    }
    if (index > ck->commit_by_term[term])
        ck->commit_by_term[term] = index;
}

void sim_check_truncate(sim_world *w, sim_node *n, uint64_t from, const char *how) {
    const sim_log *l = &n->disk.vol.log;
    if (from < l->first)
        from = l->first;
    uint64_t last = sim_log_last(l);
    if (last > w->ck.commit_max)
        last = w->ck.commit_max;
    for (uint64_t i = from; i <= last; i++) {
        const sim_ent *e = sim_log_get(l, i);
        const sim_idx_rec *r = rec_at(&w->ck, i);
        if (e != NULL && r->committed && r->chain == e->chain && e->chain != 0) {
            sim_fail(w, "committed-truncated",
                     "n%" PRIu64 " %s committed entry (%" PRIu64 ",%" PRIu64 ")", n->id, how, i,
                     e->term);
            return;
        }
    }
}

/* Marks entry e (from n's log) committed, as learned in term `term`.
 * Returns false when the index was already known committed. */
static bool commit_one(sim_world *w, sim_node *n, const sim_ent *e, uint64_t term) {
    sim_idx_rec *r = rec_at(&w->ck, e->index);
    if (r->committed) {
        if (r->term != e->term || r->hash != e->hash ||
            (r->chain && e->chain && r->chain != e->chain))
            sim_fail(w, "state-machine-safety",
                     "n%" PRIu64 " commits (%" PRIu64 ",%" PRIu64 ") but (%" PRIu64 ",%" PRIu64
                     ") was committed at that index",
                     n->id, e->index, e->term, e->index, r->term);
        return false;
    }
    if (r->applied && (r->term != e->term || r->hash != e->hash))
        sim_fail(w, "state-machine-safety",
                 "n%" PRIu64 " commits (%" PRIu64 ",%" PRIu64 ") but (%" PRIu64 ",%" PRIu64
                 ") was applied at that index",
                 n->id, e->index, e->term, e->index, r->term);
    r->committed = true;
    r->term = e->term;
    r->hash = e->hash;
    r->chain = e->chain;
    note_commit_term(&w->ck, term, e->index);
    w->st.commits++;
    if (e->type == RAFT_ENTRY_CONF)
        w->st.membership_changes++;
    if (e->index > w->ck.commit_max)
        w->ck.commit_max = e->index;
    return true;
}

void sim_check_commit(sim_world *w, sim_node *n, uint64_t commit) {
    const sim_log *l = &n->disk.vol.log;
    const sim_store *v = &n->disk.vol;
    uint64_t floor = v->has_snap ? v->snap.meta.index : 0;
    if (commit <= floor)
        return;
    if (commit > sim_log_last(l)) {
        sim_fail(w, "commit-beyond-log",
                 "n%" PRIu64 " commit %" PRIu64 " beyond its last entry %" PRIu64, n->id, commit,
                 sim_log_last(l));
        return;
    }
    uint64_t term = raft_term(sim_raft(n));
    for (uint64_t i = commit; i > floor; i--) {
        const sim_ent *e = sim_log_get(l, i);
        assert(e != NULL);
        if (!commit_one(w, n, e, term))
            break; /* known committed: so is everything before it */
    }
}

void sim_check_apply(sim_world *w, sim_node *n, const raft_entry *e, uint64_t sm_hash) {
    if (e->index != n->applied + 1) {
        sim_fail(w, "apply-order", "n%" PRIu64 " applies %" PRIu64 " after %" PRIu64, n->id,
                 e->index, n->applied);
        return;
    }
    sim_idx_rec *r = rec_at(&w->ck, e->index);
    uint64_t h = sim_ent_hash(e->term, e->type, e->data, e->len);
    bool known = r->applied || r->committed;
    if (known && (r->term != e->term || r->hash != h)) {
        sim_fail(w, r->acked ? "acked-write-lost" : "state-machine-safety",
                 "n%" PRIu64 " applies (%" PRIu64 ",%" PRIu64 ") but (%" PRIu64 ",%" PRIu64
                 ") was %s at that index",
                 n->id, e->index, e->term, e->index, r->term,
                 r->acked ? "acknowledged to a client" : (r->applied ? "applied" : "committed"));
        return;
    }
    if (r->sm_hash != 0 && r->sm_hash != sm_hash) {
        sim_fail(w, "state-machine-safety",
                 "n%" PRIu64 " state after applying %" PRIu64 " differs from another node's", n->id,
                 e->index);
        return;
    }
    r->applied = true;
    r->term = e->term;
    r->hash = h;
    r->sm_hash = sm_hash;
}

void sim_check_ack(sim_world *w, uint64_t index, uint64_t term) {
    sim_idx_rec *r = rec_at(&w->ck, index);
    assert(r->applied && r->term == term);
    r->acked = true;
    if (index > w->ck.acked_max)
        w->ck.acked_max = index;
}

void sim_check_snapshot(sim_world *w, sim_node *n, const sim_snap *s, const char *what) {
    uint64_t h = sim_sm_digest(s->data);
    sim_idx_rec *r = rec_at(&w->ck, s->meta.index);
    if (r->sm_hash != 0 && r->sm_hash != h) {
        sim_fail(w, "snapshot-consistency",
                 "n%" PRIu64 " %s snapshot (%" PRIu64 ",%" PRIu64
                 ") differs from the state applied at that index",
                 n->id, what, s->meta.index, s->meta.term);
        return;
    }
    if ((r->applied || r->committed) && r->term != s->meta.term) {
        sim_fail(w, "snapshot-consistency",
                 "n%" PRIu64 " %s snapshot (%" PRIu64 ",%" PRIu64 ") but entry (%" PRIu64
                 ",%" PRIu64 ") was applied",
                 n->id, what, s->meta.index, s->meta.term, s->meta.index, r->term);
        return;
    }
    r->sm_hash = h;
}

/* ---- roles ------------------------------------------------------------------ */

static uint64_t *term_slot(sim_checker *ck, uint64_t term) {
    assert(term < (1ull << 32));
    if (term >= ck->term_cap) {
        size_t cap = ck->term_cap ? ck->term_cap : 256;
        while (cap <= term)
            cap *= 2;
        uint64_t *a = realloc(ck->term_leader, cap * sizeof(*a));
        assert(a != NULL);
        memset(a + ck->term_cap, 0, (cap - ck->term_cap) * sizeof(*a));
        ck->term_leader = a;
        ck->term_cap = cap;
    }
    return &ck->term_leader[term];
}

/* n just became leader of `term`: it must hold every entry known committed
 * in an earlier term (a node of a later term may have committed more
 * already: n's election can finish late, and n then commits nothing). */
static void check_completeness(sim_world *w, sim_node *n, uint64_t term) {
    sim_checker *ck = &w->ck;
    uint64_t need = 0;
    for (uint64_t t = 0; t < term && t < ck->commit_by_term_cap; t++)
        if (ck->commit_by_term[t] > need)
            need = ck->commit_by_term[t];
    const sim_store *v = &n->disk.vol;
    if (need == 0 || (v->has_snap && need <= v->snap.meta.index))
        return; /* the snapshot holds it: snapshot-consistency checked it */
    const sim_ent *e = sim_log_get(&v->log, need);
    const sim_idx_rec *r = rec_at(ck, need);
    if (e == NULL || e->term != r->term || e->hash != r->hash ||
        (e->chain && r->chain && e->chain != r->chain))
        sim_fail(w, "leader-completeness",
                 "n%" PRIu64 " leads term %" PRIu64 " without committed entry (%" PRIu64 ",%" PRIu64
                 ")",
                 n->id, term, need, r->term);
}

void sim_check_roles(sim_world *w) {
    for (uint32_t s = 0; s < w->slots; s++) {
        sim_node *n = &w->nodes[s];
        if (!n->used || !n->up)
            continue;
        raft_role role = raft_state_role(sim_raft(n));
        uint64_t term = raft_term(sim_raft(n));
        bool new_leader = role == RAFT_LEADER && (n->role != RAFT_LEADER || n->term != term);
        n->role = role;
        n->term = term;
        if (!new_leader)
            continue;
        uint64_t *l = term_slot(&w->ck, term);
        if (*l != 0 && *l != n->id) {
            sim_fail(w, "election-safety", "n%" PRIu64 " and n%" PRIu64 " both lead term %" PRIu64,
                     *l, n->id, term);
            return;
        }
        if (*l == 0) {
            w->st.elections++;
            SIM_TRACE(w, "elect n%" PRIu64 " term=%" PRIu64 " last=%" PRIu64, n->id, term,
                      raft_last_index(sim_raft(n)));
        }
        *l = n->id;
        check_completeness(w, n, term);
    }
}

void sim_check_final(sim_world *w) {
    /* The probe was proposed by a leader after every acknowledged write
     * committed, so its log held them all below the probe's index. */
    const sim_node *p = &w->nodes[w->probe_slot];
    if (w->probe_done && p->used && p->applied < w->ck.acked_max)
        sim_fail(w, "acked-write-lost",
                 "n%" PRIu64 " applied the probe at %" PRIu64 " < acknowledged index %" PRIu64,
                 p->id, p->applied, w->ck.acked_max);
    for (uint32_t s = 0; s < w->slots; s++) {
        sim_node *n = &w->nodes[s];
        if (!n->used || !n->up || n->applied == 0)
            continue;
        uint8_t buf[SIM_SM_BYTES];
        sim_sm_encode(&n->sm, buf);
        const sim_idx_rec *r = rec_at(&w->ck, n->applied);
        if (r->sm_hash != 0 && r->sm_hash != sim_sm_digest(buf))
            sim_fail(w, "state-machine-safety",
                     "n%" PRIu64 " final state at %" PRIu64 " differs from the applied one", n->id,
                     n->applied);
    }
    if (w->failed)
        return;
    char why[400];
    int rc = sim_hist_check(&w->hist, why, sizeof(why));
    if (rc == 0)
        sim_fail(w, "linearizability", "%s", why);
    else if (rc < 0) /* an unchecked history proves nothing: keep runs small enough */
        sim_fail(w, "linearizability-unknown", "%s", why);
}
