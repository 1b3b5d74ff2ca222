/* Leases in the state machine (sm.h "leases", sm_internal.h "leases").
 *
 * RocksDB holds one record per lease ('l' + be64(id) -> kv.Lease {id, ttl})
 * and, kept by sm__key_put / sm__key_delete, an index of the keys attached
 * to each ('k' + be64(lease) + key -> empty). This file keeps the leases in
 * memory as well (id, ttl, keys attached), so that a put with a lease and
 * the leader's LEASE_LIST never read RocksDB: an array sorted by id. Ids
 * are the indexes of the LEASE_GRANT entries, so a grant always appends;
 * a revoke removes from the middle (a memmove of at most KV_LEASES_MAX
 * entries of 24 bytes).
 *
 * Invariants:
 *   1. The table is a function of the 'l' records and the 'k' index alone:
 *      rebuilt at sm_open (so after a snapshot restore, which reopens) and
 *      after a failed apply (sm__apply_undo), it equals what applying kept.
 *   2. v[] is sorted by id, strictly; n <= KV_LEASES_MAX.
 *   3. keys of a lease = the 'k' entries under it, at most
 *      KV_LEASE_KEYS_MAX: every attach goes through sm__lease_attach_check
 *      first, and every change of a key's lease through
 *      sm__lease_keys_moved (called by sm__key_put and sm__key_delete).
 *
 * Everything here is a function of the entries and the state before them
 * (no clock: expiry is the leader's, src/server/server_lease.c), so every
 * node applies the same grants and revokes alike.
 */
#include "storage/sm_internal.h"

#include "common/idsearch.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

#define SM__LEASES_CAP_MIN 16u

/* ---- the table ---------------------------------------------------------- */

/* The slot of id in t, or where it would go (the first with a greater id). */
_Static_assert(offsetof(sm_lease_info, id) == 0, "kv_id_lower_bound finds leases by id");

static size_t sm__lease_pos(const sm__leases *t, uint64_t id) {
    return kv_id_lower_bound(t->v, t->n, sizeof *t->v, id);
}

static sm_lease_info *sm__lease_find(sm__leases *t, uint64_t id) {
    size_t i = sm__lease_pos(t, id);
    return i < t->n && t->v[i].id == id ? &t->v[i] : NULL;
}

/* Appends a lease with an id above every other; 0 or KV_ENOMEM. */
static int sm__lease_append(sm__leases *t, uint64_t id, int64_t ttl) {
    assert(t->n == 0 || t->v[t->n - 1].id < id);
    assert(t->n < KV_LEASES_MAX);
    if (t->n == t->cap) {
        size_t cap = t->cap ? 2 * t->cap : SM__LEASES_CAP_MIN;
        sm_lease_info *nv = realloc(t->v, cap * sizeof *nv);
        if (nv == NULL)
            return KV_ENOMEM;
        t->v = nv;
        t->cap = cap;
    }
    t->v[t->n++] = (sm_lease_info){.id = id, .ttl = ttl, .keys = 0};
    t->gen++;
    return 0;
}

static void sm__lease_remove(sm__leases *t, sm_lease_info *x) {
    size_t i = (size_t)(x - t->v);
    assert(i < t->n);
    memmove(&t->v[i], &t->v[i + 1], (t->n - i - 1) * sizeof *t->v);
    t->n--;
    t->gen++;
}

void sm__leases_free(sm__leases *t) {
    free(t->v);
    memset(t, 0, sizeof *t);
}

void sm__lease_keys_moved(sm *s, uint64_t from, uint64_t to) {
    if (from == to)
        return;
    sm_lease_info *x = from != 0 ? sm__lease_find(&s->leases, from) : NULL;
    sm_lease_info *y = to != 0 ? sm__lease_find(&s->leases, to) : NULL;
    s->leases.gen++;
    if (x != NULL) {
        assert(x->keys > 0);
        x->keys--;
    }
    if (y != NULL) {
        y->keys++;
        assert(y->keys <= KV_LEASE_KEYS_MAX);
    } else if (to != 0) {
        /* A writer that skipped sm__lease_attach_check: a bug, but one that
         * every node makes alike, so it is logged and the node goes on (the
         * index entry is an orphan, ignored at load, never revoked). */
        KV_LOGE("INVALID", "state machine %s: a key attached to lease %llu, which does not exist",
                s->dir, (unsigned long long)to);
    }
}

/* ---- the public view ------------------------------------------------------ */

int sm_leases_each(sm *s, sm_lease_fn fn, void *arg) {
    assert(s != NULL && fn != NULL);
    for (size_t i = 0; i < s->leases.n; i++) {
        int rv = fn(arg, &s->leases.v[i]);
        if (rv != 0)
            return rv;
    }
    return 0;
}

int sm_lease_get(sm *s, uint64_t id, sm_lease_info *out) {
    assert(s != NULL && out != NULL);
    const sm_lease_info *x = sm__lease_find(&s->leases, id);
    if (x == NULL)
        return KV_ENOTFOUND;
    *out = *x;
    return 0;
}

size_t sm_leases_count(sm *s) {
    assert(s != NULL);
    return s->leases.n;
}

uint64_t sm_leases_generation(sm *s) {
    assert(s != NULL);
    return s->leases.gen;
}

/* ---- loading from RocksDB ------------------------------------------------- */

static void sm__lease_record_key(uint8_t k[9], uint64_t id) {
    sm__key9(k, SM_PREFIX_LEASE, id);
}

/* One 'l' record into t (in key order: ids ascending). */
static int sm__lease_load_one(sm *s, sm__leases *t, const char *k, size_t klen, const char *v,
                              size_t vlen) {
    uint64_t id = sm__key9_value(k, klen, SM_PREFIX_LEASE);
    Kv__Lease *pb = klen == 9 ? kv__lease__unpack(NULL, vlen, (const uint8_t *)v) : NULL;
    /* a lease is granted at its id, never after what was applied */
    bool ok = pb != NULL && pb->id == id && id != 0 && id <= s->applied_index && pb->ttl >= 1 &&
              pb->ttl <= KV_LEASE_TTL_MAX && t->n < KV_LEASES_MAX;
    int64_t ttl = ok ? pb->ttl : 0;
    if (pb != NULL)
        kv__lease__free_unpacked(pb, NULL);
    if (!ok) {
        KV_LOGE("CORRUPT",
                "state machine %s: lease record %llu (key of %zu bytes) does not decode or is "
                "out of range",
                s->dir, (unsigned long long)id, klen);
        return KV_ECORRUPT;
    }
    return sm__lease_append(t, id, ttl);
}

/* One 'k' index entry counted to its lease. An entry of a lease without a
 * record is left alone (counted nowhere) and logged: applying never makes
 * one, and refusing to start over it would help nobody. */
static int sm__lease_count_one(sm *s, sm__leases *t, const char *k, size_t klen,
                               uint64_t *orphans) {
    uint64_t id = klen > 9 ? sm__get_be64((const uint8_t *)k + 1) : 0;
    sm_lease_info *x = id != 0 ? sm__lease_find(t, id) : NULL;
    if (x == NULL) {
        if ((*orphans)++ == 0)
            KV_LOGW("CORRUPT",
                    "state machine %s: key index entry of lease %llu, which has no "
                    "record (ignored)",
                    s->dir, (unsigned long long)id);
        return 0;
    }
    x->keys++;
    return 0;
}

typedef struct sm__lease_scan_arg {
    sm *s;
    sm__leases *t;
    char prefix;
    uint64_t *orphans;
} sm__lease_scan_arg;

static int sm__lease_scan_one(void *arg, const char *k, size_t klen, const char *v, size_t vlen) {
    sm__lease_scan_arg *a = arg;
    return a->prefix == SM_PREFIX_LEASE ? sm__lease_load_one(a->s, a->t, k, klen, v, vlen)
                                        : sm__lease_count_one(a->s, a->t, k, klen, a->orphans);
}

/* Calls one of the two loaders for every key under prefix. */
static int sm__lease_scan(sm *s, char prefix, sm__leases *t, uint64_t *orphans) {
    sm__lease_scan_arg a = {.s = s, .t = t, .prefix = prefix, .orphans = orphans};
    return sm__prefix_each(s, &prefix, 1, sm__lease_scan_one, &a, "reading leases");
}

int sm__leases_load(sm *s) {
    assert(s != NULL && s->db != NULL);
    sm__leases t = {0};
    uint64_t orphans = 0;
    int rv = sm__lease_scan(s, SM_PREFIX_LEASE, &t, &orphans);
    if (rv == 0)
        rv = sm__lease_scan(s, SM_PREFIX_LEASE_KEYS, &t, &orphans);
    if (rv != 0) {
        sm__leases_free(&t);
        return rv;
    }
    for (size_t i = 0; i < t.n; i++)
        assert(i == 0 || t.v[i - 1].id < t.v[i].id);
    t.gen = s->leases.gen + 1;
    sm__leases_free(&s->leases);
    s->leases = t;
    return 0;
}

/* ---- applying ------------------------------------------------------------- */

int sm__lease_grant(sm__batch *b, const Kv__Command *c, sm_reply *r) {
    uint64_t index = b->rev;
    sm__leases *t = &b->s->leases;
    assert(index != 0 && sm__lease_find(t, index) == NULL);
    if (c->ttl < 1 || c->ttl > KV_LEASE_TTL_MAX) {
        r->code = KV_EINVAL;
        r->detail = "lease ttl out of range (1 to KV_LEASE_TTL_MAX seconds)";
        return 0;
    }
    if (t->n >= KV_LEASES_MAX) {
        /* TOOBIG, not BUSY: a client retries BUSY on its own until its
         * timeout, and a full table frees only as leases expire */
        r->code = KV_ETOOBIG;
        r->detail = "too many leases (KV_LEASES_MAX): revoke some or let them expire";
        return 0;
    }
    Kv__Lease pb = KV__LEASE__INIT;
    pb.id = index;
    pb.ttl = c->ttl;
    uint8_t buf[64];
    size_t len = kv__lease__get_packed_size(&pb);
    assert(len <= sizeof buf);
    kv__lease__pack(&pb, buf);
    int rv = sm__lease_append(t, index, c->ttl);
    if (rv != 0)
        return rv;
    uint8_t k[9];
    sm__lease_record_key(k, index);
    sm__bput(b, k, sizeof k, buf, len);
    r->lease = index;
    return 0;
}

int sm__lease_attach_check(sm__batch *b, uint64_t lease, const void *key, size_t klen,
                           sm_reply *r) {
    if (lease == 0)
        return 0;
    const sm_lease_info *x = sm__lease_find(&b->s->leases, lease);
    if (x == NULL) {
        r->code = KV_ENOTFOUND;
        r->detail = "lease not found";
        return 0;
    }
    if (x->keys < KV_LEASE_KEYS_MAX)
        return 0;
    /* full: only a key already attached to it may be written again */
    sm__rec rec;
    char *raw = NULL;
    int rv = sm__key_read(b, key, klen, &rec, &raw);
    if (rv != 0 && rv != KV_ENOTFOUND)
        return rv;
    bool attached = rv == 0 && rec.lease == lease;
    rocksdb_free(raw);
    if (!attached) {
        r->code = KV_ETOOBIG;
        r->detail = "the lease has KV_LEASE_KEYS_MAX keys attached";
    }
    return 0;
}

int sm__lease_txn_check(sm__batch *b, Kv__TxnOp *const *ops, size_t n, sm_reply *r) {
    assert(n <= KV_TXN_OPS_MAX);
    for (size_t i = 0; i < n; i++) {
        if (ops[i]->type != KV__TXN_OP__TYPE__PUT || ops[i]->lease == 0)
            continue;
        uint64_t lease = ops[i]->lease, puts = 0;
        for (size_t j = 0; j < n; j++)
            puts += ops[j]->type == KV__TXN_OP__TYPE__PUT && ops[j]->lease == lease;
        const sm_lease_info *x = sm__lease_find(&b->s->leases, lease);
        if (x == NULL) {
            r->code = KV_ENOTFOUND;
            r->detail = "lease not found";
            return 0;
        }
        if (x->keys + puts > KV_LEASE_KEYS_MAX) {
            r->code = KV_ETOOBIG;
            r->detail = "the txn would attach more than KV_LEASE_KEYS_MAX keys to a lease";
            return 0;
        }
    }
    return 0;
}

/* The keys attached to lease, read through the batch: *keys malloc'd, each
 * a malloc'd copy of the user key (lens[i] bytes). At most
 * KV_LEASE_KEYS_MAX (invariant 3). */
typedef struct sm__keylist {
    char **k;
    size_t *len;
    size_t n;
} sm__keylist;

static void sm__keylist_free(sm__keylist *l) {
    for (size_t i = 0; i < l->n; i++)
        free(l->k[i]);
    free(l->k);
    free(l->len);
    memset(l, 0, sizeof *l);
}

static int sm__keylist_add(sm__keylist *l, const char *k, size_t len) {
    if (l->n >= KV_LEASE_KEYS_MAX)
        return KV_ECORRUPT; /* more than invariant 3 allows */
    if (l->k == NULL) {
        l->k = malloc(KV_LEASE_KEYS_MAX * sizeof *l->k);
        l->len = malloc(KV_LEASE_KEYS_MAX * sizeof *l->len);
        if (l->k == NULL || l->len == NULL)
            return KV_ENOMEM;
    }
    char *copy = malloc(len ? len : 1);
    if (copy == NULL)
        return KV_ENOMEM;
    memcpy(copy, k, len);
    l->k[l->n] = copy;
    l->len[l->n++] = len;
    return 0;
}

static int sm__lease_keys(sm__batch *b, uint64_t lease, sm__keylist *l) {
    uint8_t p[9];
    p[0] = SM_PREFIX_LEASE_KEYS;
    sm__put_be64(p + 1, lease);
    rocksdb_iterator_t *it = NULL;
    int rv = sm__biter(b, &it);
    if (rv != 0)
        return rv;
    for (rocksdb_iter_seek(it, (const char *)p, sizeof p); rv == 0 && rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t klen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        if (klen <= sizeof p || memcmp(k, p, sizeof p) != 0)
            break;
        rv = sm__keylist_add(l, k + sizeof p, klen - sizeof p);
    }
    char *err = NULL;
    rocksdb_iter_get_error(it, &err);
    if (err != NULL) {
        rv = sm__fail(b->s, err);
        KV_LOGE(kv_errword(rv), "state machine %s: reading lease %llu's keys: %s", b->s->dir,
                (unsigned long long)lease, err);
        rocksdb_free(err);
    }
    rocksdb_iter_destroy(it);
    return rv;
}

/* Deletes key (attached to lease by the index) through sm__key_delete, so
 * watchers see a DELETE. An index entry whose key is absent or on another
 * lease is a bug: KV_ECORRUPT (the node fail-stops, as it would on every
 * node, which apply the same entries to the same state). */
static int sm__lease_delete_key(sm__batch *b, uint64_t lease, const char *key, size_t klen) {
    sm__rec rec;
    char *raw = NULL;
    int rv = sm__key_read(b, key, klen, &rec, &raw);
    if (rv == 0 && rec.lease != lease)
        rv = KV_ECORRUPT;
    if (rv == KV_ENOTFOUND)
        rv = KV_ECORRUPT;
    if (rv == 0)
        rv = sm__key_delete(b, key, klen, &rec);
    rocksdb_free(raw);
    if (rv == KV_ECORRUPT)
        KV_LOGE("CORRUPT", "state machine %s: lease %llu's key index names a key not on it",
                b->s->dir, (unsigned long long)lease);
    return rv;
}

int sm__lease_revoke(sm__batch *b, const Kv__Command *c, sm_reply *r) {
    sm_lease_info *x = sm__lease_find(&b->s->leases, c->lease);
    if (x == NULL) {
        r->code = KV_ENOTFOUND;
        r->detail = "lease not found";
        return 0;
    }
    uint64_t id = x->id, keys = x->keys;
    sm__keylist l = {0};
    int rv = sm__lease_keys(b, id, &l);
    if (rv == 0 && l.n != keys) {
        KV_LOGE("CORRUPT", "state machine %s: lease %llu counts %llu keys, its index %zu",
                b->s->dir, (unsigned long long)id, (unsigned long long)keys, l.n);
        rv = KV_ECORRUPT;
    }
    for (size_t i = 0; rv == 0 && i < l.n; i++)
        rv = sm__lease_delete_key(b, id, l.k[i], l.len[i]);
    sm__keylist_free(&l);
    if (rv != 0)
        return rv;
    x = sm__lease_find(&b->s->leases, id); /* still there: key deletes only count down */
    assert(x != NULL && x->keys == 0);
    sm__lease_remove(&b->s->leases, x);
    uint8_t k[9];
    sm__lease_record_key(k, id);
    sm__bdelete(b, k, sizeof k);
    r->deleted = keys;
    return 0;
}
