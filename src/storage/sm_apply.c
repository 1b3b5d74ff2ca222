/* sm_apply: committed entries into one RocksDB write batch (sm.h).
 *
 * Every entry of a call, the new applied index/term and every session change
 * go into one batch, written with the RocksDB WAL off (docs/rules.md
 * "applied index saved apart from the data"). Reads during the apply go
 * through the batch first (sm_batch.c), so an entry sees the effects of the
 * earlier entries of the same call (PUT then CAS on one key).
 *
 * Sessions are found in memory (sm_session.c), changed there as the entries
 * are applied, and each change is a record in the batch's session log (an
 * eviction also deletes the session's 's' record), written as one key with
 * the batch. When the call fails the tables are rebuilt from RocksDB
 * (sm__apply_undo).
 *
 * Everything here is a function of the entries and the state before them,
 * never of clocks or node-local settings other than sessions_max, so every
 * node computes the same replies and the same state.
 */
#include "storage/sm_internal.h"

#include "common/checksum.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* ---- replies ------------------------------------------------------------ */

static int sm__reply_current(sm_reply *r, const void *v, size_t len) {
    assert(r->current == NULL && len <= KV_VALUE_BYTES_MAX);
    r->current = malloc(len ? len : 1);
    if (r->current == NULL)
        return KV_ENOMEM;
    if (len > 0)
        memcpy(r->current, v, len);
    r->current_len = len;
    r->current_present = true;
    return 0;
}

/* ---- sessions ----------------------------------------------------------- */

/* Sessions live in memory (sm_session.c); each change appends the
 * session's record to the batch's session log, and nothing is read back but
 * a duplicate's full reply (sm__session_read). */

/* The record of a session, into the batch's session log. */
static int sm__session_write(sm__batch *b, const Kv__Session *ss) {
    assert(ss->client_id != 0 && ss->last_index != 0);
    return sm__session_log_add(b, ss);
}

/* The record of x as kv.Session, its reply in *pb (borrowing what r holds
 * beyond memory's fields when r is not NULL). */
static void sm__session_to_pb(const sm__session *x, const sm_reply *r, Kv__Session *ss,
                              Kv__Reply *pb) {
    kv__session__init(ss);
    ss->client_id = x->id;
    ss->last_seq = x->last_seq;
    ss->last_index = x->last_index;
    ss->reply = NULL;
    if (!x->has_reply)
        return;
    kv__reply__init(pb);
    pb->code = x->reply_code;
    pb->index = x->reply_index;
    pb->client_id = x->reply_client_id;
    if (r != NULL) {
        pb->current_present = r->current_present;
        pb->current.data = r->current;
        pb->current.len = r->current_len;
        pb->succeeded = r->succeeded;
        pb->results = r->results;
        pb->n_results = r->n_results;
        pb->deleted = r->deleted;
        pb->more = r->more;
    }
    ss->reply = pb;
}

/* x's reply becomes r (memory's fields; the record gets the rest). */
static void sm__session_keep(sm__session *x, const sm_reply *r) {
    x->has_reply = true;
    x->reply_code = r->code;
    x->reply_index = r->index;
    x->reply_client_id = r->client_id;
}

/* The stored record of id made at its use at index: only for a duplicate
 * whose reply holds more than memory does (sm__reply_full). *out unpacked
 * (kv__session__free_unpacked). KV_ECORRUPT when it is missing or does not
 * decode: memory says it is there. */
static int sm__session_read(sm__batch *b, uint64_t id, uint64_t index, Kv__Session **out) {
    int rv = sm__session_record(b, id, index, out);
    if (rv != 0 && rv != KV_ENOTFOUND && rv != KV_ECORRUPT)
        return rv;
    if (*out == NULL || (*out)->client_id != id || (*out)->last_index != index ||
        (*out)->reply == NULL || !sm__reply_full((*out)->reply)) {
        KV_LOGE("CORRUPT", "state machine %s: session %llu is missing or does not decode",
                b->s->dir, (unsigned long long)id);
        if (*out != NULL)
            kv__session__free_unpacked(*out, NULL);
        *out = NULL;
        return KV_ECORRUPT;
    }
    return 0;
}

/* What a stored reply holds beyond memory's fields, copied into r. */
static int sm__reply_from_pb(sm_reply *r, const Kv__Reply *pb) {
    assert(r->current == NULL && r->results == NULL);
    if (pb->current_present) {
        int rv = sm__reply_current(r, pb->current.data, pb->current.len);
        if (rv != 0)
            return rv;
    }
    r->succeeded = pb->succeeded;
    r->deleted = pb->deleted;
    r->more = pb->more;
    if (pb->n_results == 0)
        return 0;
    if ((r->results = calloc(pb->n_results, sizeof *r->results)) == NULL)
        return KV_ENOMEM;
    for (size_t i = 0; i < pb->n_results; i++) {
        if ((r->results[i] = sm__txn_result_dup(pb->results[i])) == NULL)
            return KV_ENOMEM; /* sm_apply frees what was made */
        r->n_results = i + 1;
    }
    return 0;
}

/* Evicts the session used least recently (by log index, ties by id): its
 * 's' record goes, and the log says it is gone (a record of last_index 0). */
static int sm__session_evict(sm__batch *b) {
    uint64_t id = sm__sessions_evict(&b->s->sessions);
    uint8_t k[9];
    sm__key9(k, SM_PREFIX_SESSION, id);
    sm__bdelete(b, k, sizeof k);
    Kv__Session gone;
    kv__session__init(&gone);
    gone.client_id = id;
    return sm__session_log_add(b, &gone);
}

/* REGISTER: a new session whose id is the entry's index. */
static int sm__register(sm__batch *b, const sm_entry *e, sm_reply *r) {
    sm__sessions *t = &b->s->sessions;
    assert(e->index != 0 && sm__sessions_find(t, e->index) == NULL);
    int rv = 0;
    while (rv == 0 && t->count >= b->s->opt.sessions_max)
        rv = sm__session_evict(b);
    if (rv != 0)
        return rv;
    r->code = 0;
    r->client_id = e->index;
    sm__session *x = sm__sessions_insert(t, e->index, e->index);
    sm__session_keep(x, r);
    x->reply_full = false;
    Kv__Session ss;
    Kv__Reply pb;
    sm__session_to_pb(x, NULL, &ss, &pb);
    assert(t->count <= b->s->opt.sessions_max);
    return sm__session_write(b, &ss);
}

/* ---- operations --------------------------------------------------------- */

/* Every write reads the key's record first: its revisions and lease carry
 * on, and CAS and CAS_ABSENT look at its value (their failure answers it).
 * PUT and DELETE need no value: the key cache answers them when it can. */
static int sm__op_write(sm__batch *b, const Kv__Command *c, sm_reply *r) {
    sm__rec cur;
    char *raw = NULL;
    bool head = c->op == KV__COMMAND__OP__PUT || c->op == KV__COMMAND__OP__DELETE;
    int rv = head ? sm__key_head(b, c->key.data, c->key.len, &cur)
                  : sm__key_read(b, c->key.data, c->key.len, &cur, &raw);
    if (rv != 0 && rv != KV_ENOTFOUND)
        return rv;
    const sm__rec *prev = rv == 0 ? &cur : NULL;
    bool write = true;
    if (c->op == KV__COMMAND__OP__DELETE) {
        write = false;
        if (prev != NULL)
            rv = sm__key_delete(b, c->key.data, c->key.len, prev);
        else
            r->code = KV_ENOTFOUND;
    } else if (c->op == KV__COMMAND__OP__CAS) {
        write = prev != NULL && prev->len == c->expected.len &&
                (prev->len == 0 || memcmp(prev->value, c->expected.data, prev->len) == 0);
    } else if (c->op == KV__COMMAND__OP__CAS_ABSENT) {
        write = prev == NULL;
    }
    if (rv == KV_ENOTFOUND)
        rv = 0;
    if (rv == 0 && write)
        rv = sm__key_put(b, c->key.data, c->key.len, c->value.data, c->value.len, c->lease, prev);
    else if (rv == 0 && c->op != KV__COMMAND__OP__DELETE) {
        r->code = KV_ECOMPARE;
        if (prev != NULL)
            rv = sm__reply_current(r, prev->value, prev->len);
    }
    rocksdb_free(raw);
    return rv;
}

/* One command's effect on user data; its reply in r (code 0 preset). */
static int sm__op(sm__batch *b, const Kv__Command *c, sm_reply *r) {
    switch (c->op) {
    case KV__COMMAND__OP__NOOP:
        return 0;
    case KV__COMMAND__OP__PUT:
    case KV__COMMAND__OP__DELETE:
    case KV__COMMAND__OP__CAS:
    case KV__COMMAND__OP__CAS_ABSENT:
        break;
    case KV__COMMAND__OP__TXN:
        return sm__txn(b, c, r); /* sm_txn.c: its own checks */
    case KV__COMMAND__OP__DELETE_PREFIX:
        return sm__delete_prefix(b, c, r);
    case KV__COMMAND__OP__LEASE_GRANT:
        return sm__lease_grant(b, c, r);
    case KV__COMMAND__OP__LEASE_REVOKE:
        return sm__lease_revoke(b, c, r);
    default:
        r->code = KV_EPROTO;
        r->detail = "unknown operation";
        return 0;
    }
    if (c->key.len > KV_KEY_BYTES_MAX || c->value.len > KV_VALUE_BYTES_MAX ||
        c->expected.len > KV_VALUE_BYTES_MAX) {
        r->code = KV_ETOOBIG; /* defence in depth: the server checks first */
        r->detail = "key or value over its limit";
        return 0;
    }
    if (c->key.len == 0) {
        r->code = KV_EINVAL;
        r->detail = "empty key";
        return 0;
    }
    if (c->op != KV__COMMAND__OP__DELETE) { /* a write that attaches: the lease must take it */
        int rv = sm__lease_attach_check(b, c->lease, c->key.data, c->key.len, r);
        if (rv != 0 || r->code != 0)
            return rv;
    }
    return sm__op_write(b, c, r);
}

/* A duplicate of the last command: its stored reply, read from RocksDB when
 * it holds more than memory (a COMPARE's current value, a TXN's results, a
 * DELETE_PREFIX's count). The record is written again with the new
 * last_index. */
static int sm__session_dup(sm__batch *b, const sm_entry *e, sm__session *x, sm_reply *r) {
    r->code = x->reply_code;
    r->index = x->reply_index;
    r->client_id = x->reply_client_id;
    r->detail = "duplicate";
    uint64_t made = x->last_index; /* its record was made at its last use */
    sm__sessions_touch(&b->s->sessions, x, e->index);
    Kv__Session ss, *old = NULL;
    Kv__Reply pb;
    int rv = 0;
    if (x->reply_full) {
        rv = sm__session_read(b, x->id, made, &old);
        if (rv == 0)
            rv = sm__reply_from_pb(r, old->reply);
    }
    if (rv == 0) {
        sm__session_to_pb(x, x->reply_full ? r : NULL, &ss, &pb);
        rv = sm__session_write(b, &ss);
    }
    if (old != NULL)
        kv__session__free_unpacked(old, NULL);
    return rv;
}

/* A command in a session: exactly once by (client id, seq). */
static int sm__session_op(sm__batch *b, const sm_entry *e, const Kv__Command *c, sm_reply *r) {
    sm__session *x = sm__sessions_find(&b->s->sessions, c->client_id);
    if (x == NULL) {
        r->code = KV_ESTALE;
        r->detail = "session expired";
        return 0;
    }
    if (c->seq == 0 || c->seq < x->last_seq) {
        r->code = c->seq == 0 ? KV_EINVAL : KV_ESTALE;
        r->detail = c->seq == 0 ? "seq 0 in a session" : "seq superseded by a newer one";
        return 0;
    }
    if (c->seq == x->last_seq && x->has_reply)
        return sm__session_dup(b, e, x, r);
    int rv = sm__op(b, c, r);
    if (rv != 0)
        return rv;
    /* used now: last in the eviction order, with this reply */
    sm__sessions_touch(&b->s->sessions, x, e->index);
    x->last_seq = c->seq;
    sm__session_keep(x, r);
    Kv__Session ss;
    Kv__Reply pb;
    sm__session_to_pb(x, r, &ss, &pb);
    x->reply_full = sm__reply_full(&pb);
    return sm__session_write(b, &ss);
}

/* protobuf-c's unpack returns NULL both for bad input and for a failed
 * malloc. A node that ran out of memory must not reply "does not decode"
 * where the other replicas apply the command (they would diverge): it
 * returns KV_ENOMEM and the caller fail-stops. This allocator tells the two
 * apart. */
typedef struct sm__pb_alloc {
    ProtobufCAllocator a;
    bool oom;
} sm__pb_alloc;

static void *sm__pb_malloc(void *data, size_t size) {
    sm__pb_alloc *x = data;
    void *p = malloc(size);
    x->oom |= p == NULL;
    return p;
}

static void sm__pb_free(void *data, void *p) {
    (void)data;
    free(p);
}

static void sm__pb_alloc_init(sm__pb_alloc *x) {
    *x = (sm__pb_alloc){.a = {.alloc = sm__pb_malloc, .free = sm__pb_free}};
    x->a.allocator_data = x;
}

/* A payload that does not decode gets the same KV_EPROTO reply on every
 * node; running out of memory while decoding is KV_ENOMEM (fail-stop). */
static int sm__undecodable(const sm__pb_alloc *x, sm_reply *r, const char *detail) {
    if (x->oom)
        return KV_ENOMEM;
    r->code = KV_EPROTO;
    r->detail = detail;
    return 0;
}

static int sm__apply_command(sm__batch *b, const sm_entry *e, sm_reply *r) {
    sm__pb_alloc pa;
    sm__pb_alloc_init(&pa);
    Kv__Command *c = kv__command__unpack(&pa.a, e->len, e->payload);
    if (c == NULL)
        return sm__undecodable(&pa, r, "command does not decode");
    int rv;
    if (c->op == KV__COMMAND__OP__REGISTER)
        rv = sm__register(b, e, r);
    else if (c->client_id == 0)
        rv = sm__op(b, c, r);
    else
        rv = sm__session_op(b, e, c, r);
    kv__command__free_unpacked(c, &pa.a);
    return rv;
}

static int sm__apply_membership(sm__batch *b, const sm_entry *e, sm_reply *r) {
    sm__pb_alloc pa;
    sm__pb_alloc_init(&pa);
    Kv__Membership *m = kv__membership__unpack(&pa.a, e->len, e->payload);
    if (m == NULL)
        return sm__undecodable(&pa, r, "membership does not decode");
    kv__membership__free_unpacked(m, &pa.a);
    sm__bput(b, SM_META_MEMBERSHIP, strlen(SM_META_MEMBERSHIP), e->payload, e->len);
    return 0;
}

static int sm__apply_check(sm *s, const sm_entry *e, size_t n) {
    uint64_t term = s->applied_term;
    for (size_t i = 0; i < n; i++) {
        bool bad = (i == 0 && e[i].index <= s->applied_index) ||
                   (i > 0 && e[i].index != e[i - 1].index + 1) || e[i].term < term ||
                   (e[i].len > 0 && e[i].payload == NULL) || e[i].len > KV_ENTRY_BYTES_MAX;
        if (bad) {
            KV_LOGE("INVALID", "state machine %s: entry %llu/%llu after applied %llu/%llu", s->dir,
                    (unsigned long long)e[i].index, (unsigned long long)e[i].term,
                    (unsigned long long)s->applied_index, (unsigned long long)s->applied_term);
            return KV_EINVAL;
        }
        term = e[i].term;
    }
    return 0;
}

static int sm__apply_type(sm__batch *b, const sm_entry *e, sm_reply *r) {
    switch (e->type) {
    case SM_ENTRY_NOOP:
        return 0;
    case SM_ENTRY_COMMAND:
        return sm__apply_command(b, e, r);
    case SM_ENTRY_MEMBERSHIP:
        return sm__apply_membership(b, e, r);
    }
    r->code = KV_EPROTO;
    r->detail = "unknown entry type";
    return 0;
}

/* One entry at revision e->index, and its watch history. */
static int sm__apply_one(sm__batch *b, const sm_entry *e, sm_reply *r) {
    sm__entry_start(b, e);
    int rv = sm__apply_type(b, e, r);
    if (rv == 0)
        sm__entry_end(b, e);
    return rv;
}

/* A failed call leaves RocksDB with the entries written before the failure
 * (sm_batch.c), but the session and lease tables in memory may hold later
 * changes: they are rebuilt from RocksDB, and the key cache is emptied.
 * When even that fails, every later apply fails with the same code (the
 * caller fail-stops on the first anyway). */
static void sm__apply_undo(sm *s, int why) {
    sm__kcache_clear(&s->kcache); /* it may name writes that were not made */
    int rv = sm__sessions_load(s);
    if (rv == 0)
        rv = sm__leases_load(s); /* the lease table too (sm_lease.c) */
    if (rv != 0) {
        KV_LOGE(kv_errword(rv),
                "state machine %s: sessions or leases not rebuilt after a failed apply (%s)",
                s->dir, kv_errword(why));
        s->broken = rv;
    }
}

int sm_apply(sm *s, const sm_entry *e, size_t n, sm_reply *replies) {
    assert(s != NULL && (n == 0 || (e != NULL && replies != NULL)));
    if (n == 0)
        return 0;
    if (s->broken != 0)
        return s->broken;
    int rv = sm__apply_check(s, e, n);
    if (rv != 0)
        return rv;
    sm__batch *b = sm__batch_begin(s, n);
    rv = b != NULL ? 0 : KV_ENOMEM;
    memset(replies, 0, n * sizeof *replies);
    uint64_t before = s->applied_index;
    for (size_t i = 0; i < n && rv == 0; i++) {
        replies[i].index = e[i].index;
        rv = sm__apply_one(b, &e[i], &replies[i]);
    }
    if (rv == 0)
        rv = sm__batch_write(b);
    if (b != NULL)
        sm__batch_end(b);
    if (rv != 0) {
        sm__apply_undo(s, rv);
        sm_replies_free(replies, n);
        return rv;
    }
    sm__history_trim(s, before, s->applied_index);
    assert(s->sessions.count <= s->sessions.cap);
    return 0;
}
