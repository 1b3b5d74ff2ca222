/*
 * libkvclient: the client's sessions (client_int.h, "sessions").
 *
 * A write is numbered in a session when it first goes on the wire: in one
 * with no other write in flight when there is one, so that a write resent
 * after a leader change finds its own reply stored (a session keeps only
 * its last reply: docs/rules.md "A retried write applied twice"). When every
 * session has a write in flight, the write shares the least busy one and a
 * new session is registered (through the log) for the next, up to
 * KVC_SESSIONS_MAX; past that, writes share sessions for good. The first
 * write of a client waits for its first session.
 */
#include "client/client_int.h"

#include <assert.h>

static kvc_session *find(kv_client *c, uint64_t id) {
    for (uint32_t i = 0; i < c->sessions_count; i++)
        if (c->sessions[i].id == id)
            return &c->sessions[i];
    return NULL;
}

kvc_session *kvc_session_pick(kv_client *c, bool *want_register) {
    kvc_session *best = NULL;
    uint32_t sharing = 0; /* writes in flight beyond one per session */
    for (uint32_t i = 0; i < c->sessions_count; i++) {
        kvc_session *x = &c->sessions[i];
        if (x->writes == 0) {
            *want_register = false;
            return x;
        }
        sharing += x->writes - 1;
        if (best == NULL || x->writes < best->writes)
            best = x;
    }
    /* None free: this write shares the least busy one (or, before the first
     * session, waits for it). One REGISTER in flight per write that shares,
     * so the sessions grow to the writes in flight, not past them. */
    bool room = c->sessions_count + c->registering < KVC_SESSIONS_MAX;
    *want_register = room && c->registering < (best == NULL ? 1u : sharing + 1u);
    return best;
}

void kvc_session_number(kv_client *c, kvc_session *x, kvc_slot *s) {
    assert(s->seq == 0 && kvc_is_write(s->type));
    s->session = x->id;
    s->seq = ++x->seq;
    s->order = ++c->order;
    x->writes++;
}

void kvc_session_release(kv_client *c, kvc_slot *s) {
    if (s->seq == 0 || !kvc_is_write(s->type))
        return;
    kvc_session *x = find(c, s->session);
    if (x != NULL) {
        assert(x->writes > 0);
        x->writes--;
    }
    s->seq = s->session = s->order = 0;
}

void kvc_session_add(kv_client *c, uint64_t id) {
    if (find(c, id) != NULL || c->sessions_count == KVC_SESSIONS_MAX)
        return;
    c->sessions[c->sessions_count++] = (kvc_session){.id = id}; /* numbers from 1 */
}

void kvc_session_drop(kv_client *c, uint64_t id) {
    kvc_session *x = find(c, id);
    if (x == NULL)
        return;
    *x = c->sessions[--c->sessions_count];
}
