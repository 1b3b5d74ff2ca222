/* The client session table in memory (sm_internal.h "sessions").
 *
 * RocksDB holds one record per session ('s' + be64(id): a kv.Session with
 * its last_seq, last_index and the reply to last_seq). This file keeps the
 * same sessions in memory so that sm_apply never reads RocksDB to find one:
 * a hash table by client id over a pool of sessions_max slots, and a list in
 * eviction order (least recently used first, by log index).
 *
 * Invariants (checked by sm__sessions_check in debug paths and by asserts):
 *   1. count <= cap; every used slot is in exactly one hash chain and on the
 *      list; free slots are on the free list only.
 *   2. The list is sorted by (last_index, id), strictly increasing. An apply
 *      only ever moves a session to the tail with the entry's index, which
 *      is above every last_index, so the order is kept without a sort.
 *   3. The table is a function of the 's' records alone: at open (and so
 *      after a snapshot restore, which reopens) the list is rebuilt by
 *      sorting the records by (last_index, id). Every node, restarted or
 *      not, therefore evicts the same session next.
 *
 * Not kept in memory: the current value of a COMPARE reply (up to
 * KV_VALUE_BYTES_MAX per session: 64 GiB at KV_SESSIONS_MAX). A duplicate
 * of such a command reads its record from RocksDB (rare: a retry).
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

_Static_assert(sizeof(sm__session) <= 64, "KV_SESSIONS_MAX's comment counts 64 bytes a session");

#define SM__NIL UINT32_MAX
#define SM__LOAD_CAP_MIN 64u

static uint32_t sm__bucket(const sm__sessions *t, uint64_t id) {
    return (uint32_t)((id * 0x9e3779b97f4a7c15ull) >> (64 - t->bucket_bits));
}

sm__session *sm__sessions_find(sm__sessions *t, uint64_t id) {
    assert(t->pool != NULL);
    for (uint32_t i = t->buckets[sm__bucket(t, id)]; i != SM__NIL; i = t->pool[i].hnext)
        if (t->pool[i].id == id)
            return &t->pool[i];
    return NULL;
}

static void sm__list_unlink(sm__sessions *t, uint32_t i) {
    sm__session *x = &t->pool[i];
    if (x->prev != SM__NIL)
        t->pool[x->prev].next = x->next;
    else
        t->head = x->next;
    if (x->next != SM__NIL)
        t->pool[x->next].prev = x->prev;
    else
        t->tail = x->prev;
    x->prev = x->next = SM__NIL;
}

static void sm__list_append(sm__sessions *t, uint32_t i) {
    sm__session *x = &t->pool[i];
    assert(t->tail == SM__NIL || t->pool[t->tail].last_index < x->last_index ||
           (t->pool[t->tail].last_index == x->last_index && t->pool[t->tail].id < x->id));
    x->prev = t->tail;
    x->next = SM__NIL;
    if (t->tail != SM__NIL)
        t->pool[t->tail].next = i;
    else
        t->head = i;
    t->tail = i;
}

/* A new session, last in the eviction order; the table must have room. */
sm__session *sm__sessions_insert(sm__sessions *t, uint64_t id, uint64_t last_index) {
    assert(t->count < t->cap && t->free != SM__NIL && id != 0);
    assert(sm__sessions_find(t, id) == NULL);
    uint32_t i = t->free;
    t->free = t->pool[i].next;
    sm__session *x = &t->pool[i];
    *x = (sm__session){.id = id, .last_index = last_index};
    uint32_t b = sm__bucket(t, id);
    x->hnext = t->buckets[b];
    t->buckets[b] = i;
    sm__list_append(t, i);
    t->count++;
    return x;
}

void sm__sessions_touch(sm__sessions *t, sm__session *x, uint64_t index) {
    assert(x >= t->pool && x < t->pool + t->cap && index >= x->last_index);
    uint32_t i = (uint32_t)(x - t->pool);
    sm__list_unlink(t, i);
    x->last_index = index;
    sm__list_append(t, i);
    assert(t->tail == i);
}

uint64_t sm__sessions_evict(sm__sessions *t) {
    assert(t->count > 0 && t->head != SM__NIL);
    uint32_t i = t->head;
    uint64_t id = t->pool[i].id;
    sm__list_unlink(t, i);
    uint32_t *p = &t->buckets[sm__bucket(t, id)];
    while (*p != i) {
        assert(*p != SM__NIL);
        p = &t->pool[*p].hnext;
    }
    *p = t->pool[i].hnext;
    t->pool[i] = (sm__session){.id = 0, .next = t->free, .prev = SM__NIL, .hnext = SM__NIL};
    t->free = i;
    t->count--;
    return id;
}

void sm__sessions_free(sm__sessions *t) {
    free(t->pool);
    free(t->buckets);
    memset(t, 0, sizeof *t);
}

/* An empty table of cap slots; 0 or KV_ENOMEM. */
static int sm__sessions_init(sm__sessions *t, uint32_t cap) {
    assert(cap >= 1);
    memset(t, 0, sizeof *t);
    uint32_t bits = 4;
    while ((1ull << bits) < cap)
        bits++;
    t->bucket_bits = bits;
    t->pool = malloc((size_t)cap * sizeof *t->pool);
    t->buckets = malloc(((size_t)1 << bits) * sizeof *t->buckets);
    if (t->pool == NULL || t->buckets == NULL) {
        sm__sessions_free(t);
        return KV_ENOMEM;
    }
    memset(t->buckets, 0xff, ((size_t)1 << bits) * sizeof *t->buckets); /* SM__NIL */
    for (uint32_t i = 0; i < cap; i++)
        t->pool[i] =
            (sm__session){.next = i + 1 < cap ? i + 1 : SM__NIL, .prev = SM__NIL, .hnext = SM__NIL};
    t->cap = cap;
    t->free = 0;
    t->head = t->tail = SM__NIL;
    return 0;
}

void sm__session_from_pb(sm__session *x, const Kv__Session *pb) {
    assert(x->id == pb->client_id);
    x->last_seq = pb->last_seq;
    x->has_reply = pb->reply != NULL;
    x->reply_code = pb->reply != NULL ? pb->reply->code : 0;
    x->reply_index = pb->reply != NULL ? pb->reply->index : 0;
    x->reply_client_id = pb->reply != NULL ? pb->reply->client_id : 0;
    x->reply_full = pb->reply != NULL && sm__reply_full(pb->reply);
}

bool sm__reply_full(const Kv__Reply *pb) {
    return pb->current_present || pb->succeeded || pb->n_results > 0 || pb->deleted > 0 || pb->more;
}

/* ---- loading from RocksDB ------------------------------------------------ */

typedef struct sm__loaded {
    sm__session *v; /* id, last_index and the reply fields; list links unset */
    size_t n, cap;
} sm__loaded;

static int sm__loaded_cmp(const void *a, const void *b) {
    const sm__session *x = a, *y = b;
    if (x->last_index != y->last_index)
        return x->last_index < y->last_index ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* One 's' record into l; KV_ECORRUPT when it is not a session of ours. */
static int sm__load_one(sm *s, sm__loaded *l, const char *k, size_t klen, const char *v,
                        size_t vlen) {
    uint64_t id = klen == 9 ? sm__get_be64((const uint8_t *)k + 1) : 0;
    Kv__Session *pb = klen == 9 ? kv__session__unpack(NULL, vlen, (const uint8_t *)v) : NULL;
    /* id <= last_index <= applied: a session is registered at its id and
     * used at or after it, never after what was applied. */
    if (pb == NULL || pb->client_id != id || id == 0 || pb->last_index < id ||
        pb->last_index > s->applied_index) {
        KV_LOGE("CORRUPT",
                "state machine %s: session record %llu (key of %zu bytes) does not "
                "decode or is out of range",
                s->dir, (unsigned long long)id, klen);
        if (pb != NULL)
            kv__session__free_unpacked(pb, NULL);
        return KV_ECORRUPT;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : SM__LOAD_CAP_MIN;
        sm__session *nv = realloc(l->v, cap * sizeof *nv);
        if (nv == NULL) {
            kv__session__free_unpacked(pb, NULL);
            return KV_ENOMEM;
        }
        l->v = nv;
        l->cap = cap;
    }
    sm__session *x = &l->v[l->n++];
    *x = (sm__session){.id = id, .last_index = pb->last_index};
    sm__session_from_pb(x, pb);
    kv__session__free_unpacked(pb, NULL);
    return 0;
}

/* Reads every 's' record of s->db into l (unsorted). */
static int sm__load_records(sm *s, sm__loaded *l) {
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->ro);
    char first = SM_PREFIX_SESSION;
    int rv = 0;
    for (rocksdb_iter_seek(it, &first, 1); rv == 0 && rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen = 0, vlen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen < 1 || k[0] != SM_PREFIX_SESSION)
            break;
        const char *v = rocksdb_iter_value(it, &vlen);
        rv = sm__load_one(s, l, k, klen, v, vlen);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err != NULL) {
        rv = sm__fail(s, err);
        KV_LOGE(kv_errword(rv), "state machine %s: reading sessions: %s", s->dir, err);
        rocksdb_free(err);
    }
    rocksdb_iter_destroy(it);
    return rv;
}

int sm__sessions_load(sm *s) {
    assert(s != NULL && s->db != NULL);
    sm__loaded l = {0};
    int rv = sm__load_records(s, &l);
    if (rv != 0) {
        free(l.v);
        return rv;
    }
    /* The eviction order: by last use, ties (none today: one entry touches
     * one session) by id, so it is the same on every node. */
    if (l.n > 0) /* qsort wants an array, even of none */
        qsort(l.v, l.n, sizeof *l.v, sm__loaded_cmp);
    /* More records than sessions_max (a node restarted with a smaller
     * option): all are kept; the next REGISTER evicts down to the limit, as
     * format 1 did. */
    uint32_t cap = l.n > s->opt.sessions_max ? (uint32_t)l.n : s->opt.sessions_max;
    sm__sessions t;
    rv = sm__sessions_init(&t, cap);
    for (size_t i = 0; rv == 0 && i < l.n; i++) {
        sm__session *x = sm__sessions_insert(&t, l.v[i].id, l.v[i].last_index);
        uint32_t hnext = x->hnext, prev = x->prev, next = x->next;
        *x = l.v[i];
        x->hnext = hnext, x->prev = prev, x->next = next;
    }
    free(l.v);
    if (rv != 0)
        return rv;
    assert(t.count == l.n);
    sm__sessions_free(&s->sessions);
    s->sessions = t;
    return 0;
}

uint64_t sm__sessions_digest(sm *s) {
    const sm__sessions *t = &s->sessions;
    uint64_t h = t->count;
    for (uint32_t i = t->head; i != SM__NIL; i = t->pool[i].next) {
        const sm__session *x = &t->pool[i];
        uint8_t buf[8 * 7];
        uint64_t f[7] = {h,
                         x->id,
                         x->last_seq,
                         x->last_index,
                         x->reply_index,
                         x->reply_client_id,
                         (uint64_t)(uint32_t)x->reply_code | (uint64_t)x->has_reply << 32 |
                             (uint64_t)x->reply_full << 33};
        for (int j = 0; j < 7; j++)
            kv_put_u64(buf + 8 * j, f[j]);
        h = kv_xxh3(buf, sizeof buf);
    }
    return h;
}
