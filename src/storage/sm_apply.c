/* sm_apply: committed entries into one RocksDB write batch (sm.h).
 *
 * Every entry of a call, the new applied index/term and every session change
 * go into ONE WriteBatchWithIndex, written with the RocksDB WAL off
 * (docs/rules.md, etcd#13967). Reads during the apply go through the batch
 * first, so an entry sees the effects of the earlier entries of the same
 * call (PUT then CAS on one key).
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

typedef struct sm__batch {
    sm *s;
    rocksdb_writebatch_wi_t *wb;
    uint64_t sessions_count;
} sm__batch;

/* Reads key through the batch and the db. 0 with *v malloc'd (rocksdb_free)
 * when present, KV_ENOTFOUND when absent, another code on a read error. */
static int sm__bget(sm__batch *b, const void *k, size_t klen, char **v, size_t *vlen) {
    assert(b != NULL && klen > 0);
    char *err = NULL;
    *v =
        rocksdb_writebatch_wi_get_from_batch_and_db(b->wb, b->s->db, b->s->ro, k, klen, vlen, &err);
    if (err != NULL) {
        int rv = sm__fail(b->s, err);
        KV_LOGE(kv_errword(rv), "state machine %s: read during apply: %s", b->s->dir, err);
        rocksdb_free(err);
        return rv;
    }
    return *v == NULL ? KV_ENOTFOUND : 0;
}

static void sm__bput_u64(sm__batch *b, const char *name, uint64_t v) {
    uint8_t buf[8];
    kv_put_u64(buf, v);
    assert(name[0] == SM_PREFIX_META);
    rocksdb_writebatch_wi_put(b->wb, name, strlen(name), (const char *)buf, sizeof buf);
}

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

/* pb borrows r's current value. */
static void sm__reply_to_pb(const sm_reply *r, Kv__Reply *pb) {
    kv__reply__init(pb);
    pb->code = r->code;
    pb->index = r->index;
    pb->client_id = r->client_id;
    pb->current_present = r->current_present;
    pb->current.data = r->current;
    pb->current.len = r->current_len;
}

/* ---- sessions ----------------------------------------------------------- */

static void sm__session_key(uint8_t k[9], uint64_t id) {
    k[0] = SM_PREFIX_SESSION;
    sm__put_be64(k + 1, id);
}

static void sm__lru_key(uint8_t k[17], uint64_t last_index, uint64_t id) {
    k[0] = SM_PREFIX_LRU;
    sm__put_be64(k + 1, last_index);
    sm__put_be64(k + 9, id);
}

/* The session of id: *out unpacked (kv__session__free_unpacked), NULL when
 * there is none. KV_ECORRUPT when the stored record does not decode. */
static int sm__session_get(sm__batch *b, uint64_t id, Kv__Session **out) {
    uint8_t k[9];
    sm__session_key(k, id);
    char *v = NULL;
    size_t len = 0;
    *out = NULL;
    int rv = sm__bget(b, k, sizeof k, &v, &len);
    if (rv == KV_ENOTFOUND)
        return 0;
    if (rv != 0)
        return rv;
    *out = kv__session__unpack(NULL, len, (const uint8_t *)v);
    rocksdb_free(v);
    if (*out == NULL) {
        KV_LOGE("CORRUPT", "state machine %s: session %llu does not decode", b->s->dir,
                (unsigned long long)id);
        return KV_ECORRUPT;
    }
    assert((*out)->client_id == id);
    return 0;
}

/* Stores a session (and its place in the LRU order, moved from old_index). */
static int sm__session_put(sm__batch *b, const Kv__Session *ss, uint64_t old_index) {
    assert(ss->client_id != 0 && ss->last_index >= old_index);
    size_t len = kv__session__get_packed_size(ss);
    uint8_t *buf = malloc(len ? len : 1);
    if (buf == NULL)
        return KV_ENOMEM;
    size_t packed = kv__session__pack(ss, buf);
    assert(packed == len);
    uint8_t k[17];
    sm__session_key(k, ss->client_id);
    rocksdb_writebatch_wi_put(b->wb, (char *)k, 9, (char *)buf, len);
    free(buf);
    if (old_index != 0) {
        sm__lru_key(k, old_index, ss->client_id);
        rocksdb_writebatch_wi_delete(b->wb, (char *)k, sizeof k);
    }
    sm__lru_key(k, ss->last_index, ss->client_id);
    rocksdb_writebatch_wi_put(b->wb, (char *)k, sizeof k, "", 0);
    return 0;
}

/* Evicts the session used least recently, by log index: the first 't' key. */
static int sm__session_evict(sm__batch *b) {
    assert(b->sessions_count > 0);
    rocksdb_iterator_t *base = rocksdb_create_iterator(b->s->db, b->s->ro);
    /* takes over base */
    rocksdb_iterator_t *it = rocksdb_writebatch_wi_create_iterator_with_base(b->wb, base);
    char first = SM_PREFIX_LRU;
    rocksdb_iter_seek(it, &first, 1);
    int rv = KV_ECORRUPT; /* the count says there is one */
    size_t klen = 0;
    const char *k = rocksdb_iter_valid(it) ? rocksdb_iter_key(it, &klen) : NULL;
    if (k != NULL && klen == 17 && k[0] == SM_PREFIX_LRU) {
        uint8_t lk[17]; /* k may point into the batch, which the deletes grow */
        memcpy(lk, k, sizeof lk);
        uint64_t id = sm__get_be64(lk + 9);
        uint8_t sk[9];
        sm__session_key(sk, id);
        rocksdb_writebatch_wi_delete(b->wb, (char *)sk, sizeof sk);
        rocksdb_writebatch_wi_delete(b->wb, (char *)lk, sizeof lk);
        b->sessions_count--;
        rv = 0;
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err != NULL) {
        rv = sm__rocks_err(err);
        rocksdb_free(err);
    }
    rocksdb_iter_destroy(it);
    if (rv == KV_ECORRUPT)
        KV_LOGE("CORRUPT", "state machine %s: session count and LRU order disagree", b->s->dir);
    return rv;
}

/* REGISTER: a new session whose id is the entry's index. */
static int sm__register(sm__batch *b, const sm_entry *e, sm_reply *r) {
    assert(e->index != 0);
    int rv = 0;
    while (rv == 0 && b->sessions_count >= b->s->opt.sessions_max)
        rv = sm__session_evict(b);
    if (rv != 0)
        return rv;
    r->code = 0;
    r->client_id = e->index;
    Kv__Reply pb;
    sm__reply_to_pb(r, &pb);
    Kv__Session ss;
    kv__session__init(&ss);
    ss.client_id = e->index;
    ss.last_seq = 0;
    ss.last_index = e->index;
    ss.reply = &pb;
    rv = sm__session_put(b, &ss, 0);
    if (rv == 0)
        b->sessions_count++;
    assert(b->sessions_count <= b->s->opt.sessions_max || rv != 0);
    return rv;
}

/* ---- operations --------------------------------------------------------- */

/* CAS, CAS_ABSENT and DELETE look at the current value (dk: 'd' + key). */
static int sm__op_read(sm__batch *b, const Kv__Command *c, const uint8_t *dk, size_t dklen,
                       sm_reply *r) {
    char *cur = NULL;
    size_t curlen = 0;
    int rv = sm__bget(b, dk, dklen, &cur, &curlen);
    if (rv != 0 && rv != KV_ENOTFOUND)
        return rv;
    bool present = rv == 0;
    rv = 0;
    if (c->op == KV__COMMAND__OP__DELETE) {
        if (present)
            rocksdb_writebatch_wi_delete(b->wb, (const char *)dk, dklen);
        else
            r->code = KV_ENOTFOUND;
    } else if (c->op == KV__COMMAND__OP__CAS) {
        bool same = present && curlen == c->expected.len &&
                    (curlen == 0 || memcmp(cur, c->expected.data, curlen) == 0);
        if (same)
            rocksdb_writebatch_wi_put(b->wb, (const char *)dk, dklen, (const char *)c->value.data,
                                      c->value.len);
        else
            r->code = KV_ECOMPARE;
        if (!same && present)
            rv = sm__reply_current(r, cur, curlen);
    } else {
        assert(c->op == KV__COMMAND__OP__CAS_ABSENT);
        if (!present)
            rocksdb_writebatch_wi_put(b->wb, (const char *)dk, dklen, (const char *)c->value.data,
                                      c->value.len);
        else
            r->code = KV_ECOMPARE;
        if (present)
            rv = sm__reply_current(r, cur, curlen);
    }
    rocksdb_free(cur);
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
    uint8_t dk[1 + KV_KEY_BYTES_MAX];
    dk[0] = SM_PREFIX_DATA;
    memcpy(dk + 1, c->key.data, c->key.len);
    size_t dklen = c->key.len + 1;
    if (c->op != KV__COMMAND__OP__PUT)
        return sm__op_read(b, c, dk, dklen, r);
    rocksdb_writebatch_wi_put(b->wb, (const char *)dk, dklen, (const char *)c->value.data,
                              c->value.len);
    return 0;
}

/* A command in a session: exactly once by (client id, seq). */
static int sm__session_op(sm__batch *b, const sm_entry *e, const Kv__Command *c, sm_reply *r) {
    Kv__Session *ss = NULL;
    int rv = sm__session_get(b, c->client_id, &ss);
    if (rv != 0)
        return rv;
    if (ss == NULL) {
        r->code = KV_ESTALE;
        r->detail = "session expired";
        return 0;
    }
    Kv__Session next = *ss;
    Kv__Reply pb;
    if (c->seq == 0 || c->seq < ss->last_seq) {
        r->code = c->seq == 0 ? KV_EINVAL : KV_ESTALE;
        r->detail = c->seq == 0 ? "seq 0 in a session" : "seq superseded by a newer one";
        kv__session__free_unpacked(ss, NULL);
        return 0;
    }
    if (c->seq == ss->last_seq && ss->reply != NULL) {
        const Kv__Reply *old = ss->reply; /* duplicate: the stored reply */
        r->code = old->code;
        r->index = old->index;
        r->client_id = old->client_id;
        r->detail = "duplicate";
        if (old->current_present)
            rv = sm__reply_current(r, old->current.data, old->current.len);
        next.reply = ss->reply;
    } else {
        rv = sm__op(b, c, r);
        sm__reply_to_pb(r, &pb);
        next.reply = &pb;
        next.last_seq = c->seq;
    }
    next.last_index = e->index; /* used now: last in the eviction order */
    if (rv == 0)
        rv = sm__session_put(b, &next, ss->last_index);
    kv__session__free_unpacked(ss, NULL);
    return rv;
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
    rocksdb_writebatch_wi_put(b->wb, SM_META_MEMBERSHIP, strlen(SM_META_MEMBERSHIP),
                              (const char *)e->payload, e->len);
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

static int sm__apply_one(sm__batch *b, const sm_entry *e, sm_reply *r) {
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

int sm_apply(sm *s, const sm_entry *e, size_t n, sm_reply *replies) {
    assert(s != NULL && (n == 0 || (e != NULL && replies != NULL)));
    if (n == 0)
        return 0;
    int rv = sm__apply_check(s, e, n);
    if (rv != 0)
        return rv;
    sm__batch b = {
        .s = s, .wb = rocksdb_writebatch_wi_create(0, 1), .sessions_count = s->sessions_count};
    memset(replies, 0, n * sizeof *replies);
    for (size_t i = 0; i < n && rv == 0; i++) {
        replies[i].index = e[i].index;
        rv = sm__apply_one(&b, &e[i], &replies[i]);
    }
    if (rv == 0) {
        sm__bput_u64(&b, SM_META_APPLIED_INDEX, e[n - 1].index);
        sm__bput_u64(&b, SM_META_APPLIED_TERM, e[n - 1].term);
        sm__bput_u64(&b, SM_META_SESSIONS, b.sessions_count);
        sm__bput_u64(&b, SM_META_FORMAT, SM_FORMAT);
        char *err = NULL;
        rocksdb_write_writebatch_wi(s->db, s->wo, b.wb, &err);
        if (err != NULL) {
            rv = sm__fail(s, err);
            rv = rv == KV_ENOSPACE || rv == KV_ECORRUPT ? rv : KV_EIO;
            KV_LOGE(kv_errword(rv), "state machine %s: write batch: %s", s->dir, err);
            rocksdb_free(err);
        }
    }
    rocksdb_writebatch_wi_destroy(b.wb);
    if (rv != 0) {
        sm_replies_free(replies, n);
        return rv;
    }
    s->sessions_count = b.sessions_count;
    s->applied_term = e[n - 1].term;
    s->applied_index = e[n - 1].index;
    assert(s->sessions_count <= s->opt.sessions_max);
    return 0;
}
