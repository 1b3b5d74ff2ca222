/* Leases on the node (docs/architecture.md "Leases"): the leader's clock.
 *
 * The state machine holds the leases (sm.h "leases": id, ttl, keys) and
 * knows no time. Expiry is the leader's alone: it keeps one deadline per
 * lease in memory (server_leases, on the loop thread), and when one passes
 * it proposes LEASE_REVOKE (client_id 0), which deletes the lease's keys on
 * every node through the log. Followers keep no deadlines.
 *
 * Never early: a deadline is only ever set to now + the full ttl, when the
 * leader first sees the lease (on becoming leader every lease is unseen, as
 * is a lease applied later) and at each keepalive. A new leader therefore
 * gives every lease at least its TTL again, measured from a moment after it
 * won; nothing of the old leader's clock is trusted. Keepalives and lists
 * go through a ReadIndex round (node_read), so they are answered only by a
 * leader that still leads and has applied everything committed before
 * (a lease granted just before an election is known by then).
 *
 * Bounded: the deadline table holds at most KV_LEASES_MAX leases (as many
 * as the state machine); at most KV_LEASE_REVOKES_PER_TURN revokes are
 * proposed per expiry turn (each tick, at most every SERVER_LEASE_TURN_MS), and a lease whose
 * revoke is in flight is not proposed again (nor kept alive).
 */
#include "server/server_int.h"

#include "common/clock.h"
#include "common/idsearch.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "kv/limits.h"

#include <assert.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#define NS_PER_S 1000000000ull
/* Expiry is looked at this often: the keys of an expired lease are gone
 * within TTL + this + a commit. */
#define SERVER_LEASE_TURN_MS 50u

/* LEASE_LIST answers every lease in one frame: 24 bytes each at most
 * (a repeated Lease of id, ttl, remaining, keys as varints). */
KV_STATIC_ASSERT((uint64_t)KV_LEASES_MAX * 24u + 64u * 1024u < KV_FRAME_BYTES_MAX,
                 "LEASE_LIST must fit in one frame");

/* ---- the deadline table ---------------------------------------------------- */

_Static_assert(offsetof(server_lease, id) == 0, "kv_id_lower_bound finds leases by id");

static size_t dl_pos(const server_leases *t, uint64_t id) {
    return kv_id_lower_bound(t->v, t->n, sizeof *t->v, id);
}

static server_lease *dl_find(server_leases *t, uint64_t id) {
    size_t i = dl_pos(t, id);
    return i < t->n && t->v[i].id == id ? &t->v[i] : NULL;
}

/* Building the table anew from the state machine's leases (in id order),
 * keeping what the old one knew of each. */
typedef struct dl_sync {
    server_leases *old;
    size_t cursor; /* in old: every id below was looked at */
    server_lease *v;
    size_t n;
    uint64_t now;
} dl_sync;

static int dl_sync_one(void *arg, const sm_lease_info *l) {
    dl_sync *y = arg;
    server_leases *o = y->old;
    while (y->cursor < o->n && o->v[y->cursor].id < l->id)
        y->cursor++;
    assert(y->n < KV_LEASES_MAX);
    server_lease *x = &y->v[y->n++];
    if (y->cursor < o->n && o->v[y->cursor].id == l->id) {
        *x = o->v[y->cursor];
    } else {
        /* first seen by this leader: the full TTL from now */
        *x = (server_lease){.id = l->id, .deadline_ns = y->now + (uint64_t)l->ttl * NS_PER_S};
    }
    x->ttl = l->ttl;
    x->keys = l->keys;
    return 0;
}

/* The table := the state machine's leases, each with its deadline (new
 * ones: now + ttl). Leases revoked since are dropped. */
static void dl_sync_all(server *s, uint64_t now) {
    server_leases *t = &s->leases;
    size_t n = sm_leases_count(s->sm);
    assert(n <= KV_LEASES_MAX);
    server_lease *v = n ? malloc(n * sizeof *v) : NULL;
    if (n && v == NULL)
        server_fatal(s, KVD_EXIT_IO, "NOMEM", "out of memory tracking %zu leases", n);
    dl_sync y = {.old = t, .v = v, .now = now};
    int rc = sm_leases_each(s->sm, dl_sync_one, &y);
    assert(rc == 0 && y.n == n);
    free(t->v);
    t->v = v;
    t->n = n;
    t->synced = true;
    t->synced_gen = sm_leases_generation(s->sm);
}

/* dl_sync_all when the state machine's table changed since the last sync:
 * a turn with nothing granted, revoked or attached costs a comparison. */
static void dl_refresh(server *s, uint64_t now) {
    if (!s->leases.synced || s->leases.synced_gen != sm_leases_generation(s->sm))
        dl_sync_all(s, now);
}

void server_lease_free(server *s) {
    free(s->leases.v);
    s->leases.v = NULL;
    s->leases.n = 0;
    s->leases.synced = false;
}

void server_lease_role(server *s, bool leader) {
    if (leader == s->leases.leader)
        return;
    /* Either way the deadlines go: a new leader starts every lease afresh
     * (never early), a follower keeps none. */
    server_lease_free(s);
    s->leases.leader = leader;
    if (leader)
        KV_LOGI("LEASE", "leader: every lease gets its full TTL from now (%zu leases)",
                sm_leases_count(s->sm));
}

/* ---- expiry ------------------------------------------------------------------ */

/* Proposes the revoke of x, which expired. False when the leader cannot
 * take it now (BUSY: tried again next turn). */
static bool expire(server *s, server_lease *x, uint64_t now) {
    Kv__Command cmd = KV__COMMAND__INIT;
    cmd.op = KV__COMMAND__OP__LEASE_REVOKE;
    cmd.lease = x->id;
    int rc = server_propose_cmd(s, NULL, 0, &cmd);
    if (rc != 0)
        return false;
    x->revoking = true;
    s->leases.expired_total++;
    KV_LOGI("LEASE_EXPIRED",
            "lease %" PRIu64 " (ttl %" PRId64 " s, %" PRIu64 " keys) expired %" PRIu64
            " ms ago: revoking",
            x->id, x->ttl, x->keys, (now - x->deadline_ns) / 1000000u);
    return true;
}

void server_lease_tick(server *s) {
    uint64_t now = kv_now_ns();
    if (!node_is_leader(s->node)) {
        server_lease_role(s, false);
        return;
    }
    server_lease_role(s, true);
    if (now - s->leases.turn_ns < SERVER_LEASE_TURN_MS * 1000000ull)
        return;
    s->leases.turn_ns = now;
    dl_refresh(s, now);
    uint32_t proposed = 0;
    for (size_t i = 0; i < s->leases.n && proposed < KV_LEASE_REVOKES_PER_TURN; i++) {
        server_lease *x = &s->leases.v[i];
        if (x->revoking || x->deadline_ns > now)
            continue;
        if (!expire(s, x, now))
            break;
        proposed++;
    }
}

uint64_t server_leases_expired_total(const server *s) {
    return s->leases.expired_total;
}

/* ---- keepalive and list ------------------------------------------------------- */

/* Seconds left, rounded up (a lease just kept alive shows its ttl). */
static int64_t remaining_s(const server_lease *x, uint64_t now) {
    if (x->deadline_ns <= now)
        return 0;
    return (int64_t)((x->deadline_ns - now + NS_PER_S - 1) / NS_PER_S);
}

static void lease_pb(Kv__Lease *pb, const server_lease *x, uint64_t now) {
    kv__lease__init(pb);
    pb->id = x->id;
    pb->ttl = x->ttl;
    pb->remaining = remaining_s(x, now);
    pb->keys = x->keys;
}

/* The lease id, its deadline restarted. NOTFOUND when it is not in the
 * applied state or its revoke is on the way (it expired). */
static void keepalive(server *s, net_conn *c, const Kv__Request *q, uint64_t now) {
    sm_lease_info info;
    server_lease *x = NULL;
    if (sm_lease_get(s->sm, q->lease, &info) == 0) {
        x = dl_find(&s->leases, q->lease);
        if (x == NULL) { /* applied since the last turn */
            dl_refresh(s, now);
            x = dl_find(&s->leases, q->lease);
        }
        assert(x != NULL);
    }
    if (x == NULL || x->revoking) {
        server_reply_code(c, q->id, KV_ENOTFOUND,
                          x == NULL ? "lease not found" : "lease expired (being revoked)");
        return;
    }
    x->deadline_ns = now + (uint64_t)x->ttl * NS_PER_S;
    Kv__Lease pb;
    lease_pb(&pb, x, now);
    Kv__Lease *ptr = &pb;
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = q->id;
    r.detail = "";
    r.index = sm_applied_index(s->sm);
    r.leases = &ptr;
    r.n_leases = 1;
    net_reply(c, &r);
}

static void list(server *s, net_conn *c, const Kv__Request *q, uint64_t now) {
    dl_refresh(s, now);
    size_t n = s->leases.n;
    Kv__Lease *pbs = n ? malloc(n * sizeof *pbs) : NULL;
    Kv__Lease **ptrs = n ? malloc(n * sizeof *ptrs) : NULL;
    if (n && (pbs == NULL || ptrs == NULL)) {
        free(pbs);
        free(ptrs);
        server_reply_code(c, q->id, KV_EBUSY, "out of memory listing leases");
        return;
    }
    for (size_t i = 0; i < n; i++) {
        lease_pb(&pbs[i], &s->leases.v[i], now);
        if (s->leases.v[i].revoking)
            pbs[i].remaining = 0;
        ptrs[i] = &pbs[i];
    }
    Kv__Response r = KV__RESPONSE__INIT;
    r.id = q->id;
    r.detail = "";
    r.index = sm_applied_index(s->sm);
    r.leases = ptrs;
    r.n_leases = n;
    net_reply(c, &r);
    free(pbs);
    free(ptrs);
}

void server_lease_serve(server *s, net_conn *c, const Kv__Request *q) {
    assert(q->type == KV__REQUEST__TYPE__LEASE_KEEPALIVE ||
           q->type == KV__REQUEST__TYPE__LEASE_LIST);
    /* confirmed by a quorum a moment ago; a leader that stepped down since
     * has no deadlines to give */
    if (!node_is_leader(s->node)) {
        server_reply_not_leader(s, c, q->id);
        return;
    }
    server_lease_role(s, true);
    uint64_t now = kv_now_ns();
    if (q->type == KV__REQUEST__TYPE__LEASE_KEEPALIVE)
        keepalive(s, c, q, now);
    else
        list(s, c, q, now);
}

void server_lease_request(server *s, net_conn *c, Kv__Request *q) {
    if (q->type == KV__REQUEST__TYPE__LEASE_KEEPALIVE && q->lease == 0) {
        server_reply_code(c, q->id, KV_EINVAL, "LEASE_KEEPALIVE needs a lease id");
        kv__request__free_unpacked(q, NULL);
        return;
    }
    /* a read round: answered by server_lease_serve from io_read_done */
    server_read_round(s, c, q, SERVER_REQ_NONE, 0);
}
