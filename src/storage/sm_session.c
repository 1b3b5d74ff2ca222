/* The client session table in memory (sm_internal.h "sessions").
 *
 * RocksDB holds one record per session ('s' + be64(id): a kv.Session with
 * its last_seq, last_index and the reply to last_seq), and the records made
 * since they were last folded into those in the session log ('u' keys,
 * sm_internal.h "the session log"). This file keeps the
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
 *   3. The table is a function of the stored records alone: at open (and
 *      so after a snapshot restore, which reopens) the last record of each
 *      session ('s', then the logs in order) is taken, and the list is
 *      rebuilt by sorting them by (last_index, id). Every node, restarted
 *      or not, therefore evicts the same session next.
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

/* ---- the session log (sm_internal.h) -------------------------------------- */

int sm__session_log_add(sm__batch *b, const Kv__Session *ss) {
    assert(ss->client_id != 0);
    size_t len = kv__session__get_packed_size(ss);
    if (sm__reserve(&b->slog, &b->slog_cap, b->slog_len + SM_FIELD1_HEADER_BYTES + len) != 0)
        return KV_ENOMEM;
    uint8_t *p = sm__field1_header(b->slog + b->slog_len, len); /* SessionLog.sessions */
    p += kv__session__pack(ss, p);
    b->slog_len = (size_t)(p - b->slog);
    b->slog_records++;
    return 0;
}

static bool sm__varint_get(const uint8_t **p, const uint8_t *end, uint64_t *v) {
    *v = 0;
    for (int shift = 0; shift < 64 && *p < end; shift += 7) {
        uint8_t c = *(*p)++;
        *v |= (uint64_t)(c & 0x7f) << shift;
        if (c < 0x80)
            return true;
    }
    return false;
}

/* The next record of a log (*p up to end) in *rec, *len. false at the end,
 * and with *bad when the bytes are not a run of field 1 records. */
static bool sm__slog_next(const uint8_t **p, const uint8_t *end, const uint8_t **rec, size_t *len,
                          bool *bad) {
    uint64_t n = 0;
    if (*p == end)
        return false;
    if (*(*p)++ != ((1u << 3) | 2u) || !sm__varint_get(p, end, &n) || n > (uint64_t)(end - *p)) {
        *bad = true;
        return false;
    }
    *rec = *p;
    *len = (size_t)n;
    *p += n;
    return true;
}

/* client_id and last_index of a packed kv.Session, without unpacking it
 * (a fold reads every record of the logs). false when it does not parse. */
static bool sm__session_peek(const uint8_t *p, size_t len, uint64_t *id, uint64_t *last_index) {
    const uint8_t *end = p + len;
    *id = *last_index = 0;
    while (p < end) {
        uint64_t key = 0, v = 0;
        if (!sm__varint_get(&p, end, &key))
            return false;
        switch (key & 7) {
        case 0:
            if (!sm__varint_get(&p, end, &v))
                return false;
            if (key >> 3 == 1)
                *id = v;
            else if (key >> 3 == 3)
                *last_index = v;
            break;
        case 2:
            if (!sm__varint_get(&p, end, &v) || v > (uint64_t)(end - p))
                return false;
            p += v;
            break;
        default: /* kv.Session has no other wire types */
            return false;
        }
    }
    return *id != 0;
}

/* Called for each record of a log in order: its bytes, client_id and
 * last_index. 0 goes on; anything else stops the walk and is returned. */
typedef int (*sm__slog_fn)(void *arg, const uint8_t *rec, size_t len, uint64_t id, uint64_t last);

/* Walks the log of the write whose last entry is index: 0 at its end,
 * KV_ECORRUPT when it does not parse, or what fn stopped with. */
static int sm__slog_each(sm *s, uint64_t index, const uint8_t *log, size_t len, sm__slog_fn fn,
                         void *arg) {
    const uint8_t *p = log, *rec = NULL;
    size_t rlen = 0;
    bool bad = false;
    int rv = 0;
    while (rv == 0 && sm__slog_next(&p, log + len, &rec, &rlen, &bad)) {
        uint64_t id = 0, last = 0;
        rv = sm__session_peek(rec, rlen, &id, &last) ? fn(arg, rec, rlen, id, last) : KV_ECORRUPT;
    }
    if (rv == KV_ECORRUPT || bad) {
        KV_LOGE("CORRUPT", "state machine %s: the session log of entry %llu does not decode",
                s->dir, (unsigned long long)index);
        return KV_ECORRUPT;
    }
    return rv;
}

/* A live session whose last record this is gets it as its 's' record. */
static int sm__slog_fold_one(void *arg, const uint8_t *rec, size_t len, uint64_t id,
                             uint64_t last) {
    sm__batch *b = arg;
    const sm__session *x = sm__sessions_find(&b->s->sessions, id);
    if (x == NULL || last == 0 || x->last_index != last)
        return 0; /* evicted, or not its last record */
    uint8_t k[9];
    sm__key9(k, SM_PREFIX_SESSION, id);
    rocksdb_writebatch_put(b->wb, (const char *)k, sizeof k, (const char *)rec, len);
    return 0;
}

/* A log of the db folded (sm__slog_fold_one), then deleted. */
static int sm__slog_fold_log(void *arg, const char *k, size_t klen, const char *v, size_t vlen) {
    sm__batch *b = arg;
    uint64_t index = sm__key9_value(k, klen, SM_PREFIX_SESSION_LOG);
    rocksdb_writebatch_delete(b->wb, k, klen);
    return sm__slog_each(b->s, index, (const uint8_t *)v, vlen, sm__slog_fold_one, b);
}

int sm__session_log_write(sm__batch *b, bool *folded) {
    sm *s = b->s;
    assert(b->slog_len > 0 && b->done_index > s->applied_index);
    *folded = s->slog_records + b->slog_records >= s->opt.session_log_records ||
              s->slog_bytes + b->slog_len >= SM_SESSION_LOG_BYTES;
    uint8_t k[9];
    if (!*folded) {
        sm__key9(k, SM_PREFIX_SESSION_LOG, b->done_index);
        rocksdb_writebatch_put(b->wb, (const char *)k, sizeof k, (const char *)b->slog,
                               b->slog_len);
        return 0;
    }
    /* the db's logs, oldest first, then b's own: the last record of each
     * session is the one made at its last_index */
    char first = SM_PREFIX_SESSION_LOG;
    int rv = sm__prefix_each(s, &first, 1, sm__slog_fold_log, b, "folding the session log");
    return rv != 0 ? rv
                   : sm__slog_each(s, b->done_index, b->slog, b->slog_len, sm__slog_fold_one, b);
}

typedef struct sm__slog_want {
    uint64_t id, index;
    Kv__Session *found;
} sm__slog_want;

static int sm__slog_find_one(void *arg, const uint8_t *rec, size_t len, uint64_t id,
                             uint64_t last) {
    sm__slog_want *w = arg;
    if (id != w->id || last != w->index)
        return 0;
    w->found = kv__session__unpack(NULL, len, rec);
    return w->found != NULL ? 1 : KV_ECORRUPT;
}

/* The record of session id made at index in the log of log_index, unpacked
 * into *out; KV_ENOTFOUND when that log has none. */
static int sm__slog_find(sm *s, uint64_t log_index, const uint8_t *log, size_t len, uint64_t id,
                         uint64_t index, Kv__Session **out) {
    sm__slog_want w = {.id = id, .index = index};
    int rv = sm__slog_each(s, log_index, log, len, sm__slog_find_one, &w);
    *out = w.found;
    return rv == 1 ? 0 : rv == 0 ? KV_ENOTFOUND : rv;
}

int sm__session_record(sm__batch *b, uint64_t id, uint64_t index, Kv__Session **out) {
    sm *s = b->s;
    *out = NULL;
    if (index > s->applied_index) /* made by this call, not written yet */
        return sm__slog_find(s, b->done_index, b->slog, b->slog_len, id, index, out);
    /* the log of the write that held entry index: the first at or after it,
     * unless a fold has put its records into the 's' records since */
    uint8_t k[9];
    sm__key9(k, SM_PREFIX_SESSION_LOG, index);
    rocksdb_iterator_t *it = rocksdb_create_iterator(s->db, s->ro);
    rocksdb_iter_seek(it, (const char *)k, sizeof k);
    int rv = KV_ENOTFOUND;
    size_t klen = 0, vlen = 0;
    const char *key = rocksdb_iter_valid(it) ? rocksdb_iter_key(it, &klen) : NULL;
    if (key != NULL && klen == 9 && key[0] == SM_PREFIX_SESSION_LOG) {
        const char *v = rocksdb_iter_value(it, &vlen);
        rv = sm__slog_find(s, sm__get_be64((const uint8_t *)key + 1), (const uint8_t *)v, vlen, id,
                           index, out);
    }
    int it_rv = sm__iter_done(s, it, "reading the session log");
    if (it_rv != 0 && *out != NULL) {
        kv__session__free_unpacked(*out, NULL);
        *out = NULL;
    }
    if (it_rv != 0 || rv != KV_ENOTFOUND)
        return it_rv != 0 ? it_rv : rv;
    sm__key9(k, SM_PREFIX_SESSION, id);
    char *v = NULL;
    size_t len = 0;
    rv = sm__bget(b, k, sizeof k, &v, &len);
    if (rv == 0 && (*out = kv__session__unpack(NULL, len, (const uint8_t *)v)) == NULL)
        rv = KV_ECORRUPT; /* the caller says what */
    rocksdb_free(v);
    return rv;
}

/* ---- loading from RocksDB ------------------------------------------------ */

/* One record as read at open, in the order read (seq). */
typedef struct sm__loaded_rec {
    sm__session x; /* id, last_index and the reply fields; list links unset */
    uint64_t seq;
    bool evicted; /* a log's record of an eviction */
} sm__loaded_rec;

typedef struct sm__loaded {
    sm__loaded_rec *v;
    size_t n, cap;
    uint64_t log_records, log_bytes;
    sm *s;
    uint64_t log_index; /* the log being read */
} sm__loaded;

static int sm__by_last_use(const void *a, const void *b) {
    const sm__session *x = &((const sm__loaded_rec *)a)->x, *y = &((const sm__loaded_rec *)b)->x;
    if (x->last_index != y->last_index)
        return x->last_index < y->last_index ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int sm__by_id_then_seq(const void *a, const void *b) {
    const sm__loaded_rec *x = a, *y = b;
    if (x->x.id != y->x.id)
        return x->x.id < y->x.id ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* One record into l. key_id: the id an 's' key names (0 when the key is not
 * one), or 0 for a log's record, which may be an eviction; at_most: the
 * highest last_index it may have. KV_ECORRUPT when it is not a session of
 * ours. */
static int sm__load_one(sm *s, sm__loaded *l, bool in_log, uint64_t key_id, uint64_t at_most,
                        const uint8_t *v, size_t vlen) {
    Kv__Session *pb = kv__session__unpack(NULL, vlen, v);
    uint64_t id = pb != NULL ? pb->client_id : 0;
    bool evicted = pb != NULL && in_log && pb->last_index == 0;
    /* id <= last_index <= applied: a session is registered at its id and
     * used at or after it, never after what was applied (or, in a log,
     * after the log's write) */
    if (pb == NULL || id == 0 || (!in_log && id != key_id) ||
        (!evicted && (pb->last_index < id || pb->last_index > at_most))) {
        KV_LOGE("CORRUPT",
                "state machine %s: session record %llu (%s) does not decode or is out of range",
                s->dir, (unsigned long long)(in_log ? id : key_id),
                in_log ? "in the session log" : "'s' key");
        if (pb != NULL)
            kv__session__free_unpacked(pb, NULL);
        return KV_ECORRUPT;
    }
    if (l->n == l->cap) {
        size_t cap = l->cap ? 2 * l->cap : SM__LOAD_CAP_MIN;
        sm__loaded_rec *nv = realloc(l->v, cap * sizeof *nv);
        if (nv == NULL) {
            kv__session__free_unpacked(pb, NULL);
            return KV_ENOMEM;
        }
        l->v = nv;
        l->cap = cap;
    }
    sm__loaded_rec *r = &l->v[l->n];
    *r = (sm__loaded_rec){
        .x = {.id = id, .last_index = pb->last_index}, .seq = l->n, .evicted = evicted};
    l->n++;
    if (!evicted)
        sm__session_from_pb(&r->x, pb);
    kv__session__free_unpacked(pb, NULL);
    return 0;
}

static int sm__load_log_one(void *arg, const uint8_t *rec, size_t len, uint64_t id, uint64_t last) {
    sm__loaded *l = arg;
    (void)id, (void)last; /* checked on the unpacked record */
    l->log_records++;
    return sm__load_one(l->s, l, true, 0, l->log_index, rec, len);
}

/* The records of one log ('u' key k) into l. */
static int sm__load_log(void *arg, const char *k, size_t klen, const char *v, size_t vlen) {
    sm__loaded *l = arg;
    sm *s = l->s;
    uint64_t index = sm__key9_value(k, klen, SM_PREFIX_SESSION_LOG);
    if (index == 0 || index > s->applied_index) {
        KV_LOGE("CORRUPT",
                "state machine %s: a session log key of %zu bytes (entry %llu) past "
                "the applied entry %llu",
                s->dir, klen, (unsigned long long)index, (unsigned long long)s->applied_index);
        return KV_ECORRUPT;
    }
    l->log_bytes += vlen;
    l->log_index = index;
    return sm__slog_each(s, index, (const uint8_t *)v, vlen, sm__load_log_one, l);
}

/* One 's' record into l. */
static int sm__load_record(void *arg, const char *k, size_t klen, const char *v, size_t vlen) {
    sm__loaded *l = arg;
    return sm__load_one(l->s, l, false, sm__key9_value(k, klen, SM_PREFIX_SESSION),
                        l->s->applied_index, (const uint8_t *)v, vlen);
}

/* Reads every 's' record, then every log, of s->db into l (in that order,
 * which is the order they were made in: a fold deletes the logs it folds). */
static int sm__load_records(sm *s, sm__loaded *l) {
    char record = SM_PREFIX_SESSION, log = SM_PREFIX_SESSION_LOG;
    int rv = sm__prefix_each(s, &record, 1, sm__load_record, l, "reading sessions");
    return rv != 0 ? rv : sm__prefix_each(s, &log, 1, sm__load_log, l, "reading sessions");
}

/* Keeps the last record of each session, and of those only the sessions
 * that were not evicted. */
static void sm__loaded_last(sm__loaded *l) {
    if (l->n > 0) /* qsort wants an array, even of none */
        qsort(l->v, l->n, sizeof *l->v, sm__by_id_then_seq);
    size_t live = 0;
    for (size_t i = 0; i < l->n; i++)
        if ((i + 1 == l->n || l->v[i + 1].x.id != l->v[i].x.id) && !l->v[i].evicted)
            l->v[live++] = l->v[i];
    l->n = live;
}

int sm__sessions_load(sm *s) {
    assert(s != NULL && s->db != NULL);
    sm__loaded l = {.s = s};
    int rv = sm__load_records(s, &l);
    if (rv != 0) {
        free(l.v);
        return rv;
    }
    sm__loaded_last(&l);
    /* The eviction order: by last use, ties (none today: one entry touches
     * one session) by id, so it is the same on every node. */
    if (l.n > 0)
        qsort(l.v, l.n, sizeof *l.v, sm__by_last_use);
    /* More records than sessions_max (a node restarted with a smaller
     * option): all are kept; the next REGISTER evicts down to the limit, as
     * format 1 did. */
    uint32_t cap = l.n > s->opt.sessions_max ? (uint32_t)l.n : s->opt.sessions_max;
    sm__sessions t;
    rv = sm__sessions_init(&t, cap);
    for (size_t i = 0; rv == 0 && i < l.n; i++) {
        sm__session *x = sm__sessions_insert(&t, l.v[i].x.id, l.v[i].x.last_index);
        uint32_t hnext = x->hnext, prev = x->prev, next = x->next;
        *x = l.v[i].x;
        x->hnext = hnext, x->prev = prev, x->next = next;
    }
    free(l.v);
    if (rv != 0)
        return rv;
    assert(t.count == l.n);
    sm__sessions_free(&s->sessions);
    s->sessions = t;
    s->slog_records = l.log_records;
    s->slog_bytes = l.log_bytes;
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
