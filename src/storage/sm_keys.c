/* sm_keys: user keys as records with revisions, their lease index and their
 * watch history (sm_internal.h, sm.h).
 *
 * Every change of a user key goes through sm__key_put or sm__key_delete, so
 * the record, the lease index and the watch event can never disagree: a
 * transaction, a prefix delete or a lease revoke changes keys exactly as a
 * PUT or DELETE does, and a watcher sees all of them.
 *
 * History: the events of one entry are one 'h' + be64(index) record of
 * kv.HistoryRecord in the history column family (SM_CF_HISTORY), written
 * with the entry in the same batch (sm_batch.c). Every node serves the
 * revisions (applied - history_revs, applied], a function of the applied
 * index alone (sm_history_oldest); older records go lazily, whole files at
 * a time, every SM_HISTORY_TRIM_EVERY entries (sm__history_trim), so a
 * write costs one history put and no delete. Older records still in a
 * file with newer ones are never read.
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

int sm__rec_decode(const void *raw, size_t len, sm__rec *r) {
    const uint8_t *p = raw;
    if (len < SM_REC_HEADER_BYTES || p[0] != SM_REC_TAG)
        return KV_ECORRUPT;
    r->create_rev = kv_get_u64(p + 1);
    r->mod_rev = kv_get_u64(p + 9);
    r->version = kv_get_u64(p + 17);
    r->lease = kv_get_u64(p + 25);
    r->value = p + SM_REC_HEADER_BYTES;
    r->len = len - SM_REC_HEADER_BYTES;
    return 0;
}

static void sm__rec_header(uint8_t h[SM_REC_HEADER_BYTES], const sm__rec *r) {
    h[0] = SM_REC_TAG;
    kv_put_u64(h + 1, r->create_rev);
    kv_put_u64(h + 9, r->mod_rev);
    kv_put_u64(h + 17, r->version);
    kv_put_u64(h + 25, r->lease);
}

static size_t sm__data_key(uint8_t *dk, const void *key, size_t klen) {
    assert(klen >= 1 && klen <= KV_KEY_BYTES_MAX);
    dk[0] = SM_PREFIX_DATA;
    memcpy(dk + 1, key, klen);
    return klen + 1;
}

/* ---- the key cache (sm_internal.h) --------------------------------------- */

enum { SM__KSLOT_FREE, SM__KSLOT_PRESENT, SM__KSLOT_ABSENT };

_Static_assert(sizeof(sm__kslot) == SM_KEY_CACHE_SLOT_BYTES, "SM_KEY_CACHE_SLOT_BYTES (sm.h)");
_Static_assert(SM_KEY_CACHE_KEY_BYTES <= UINT8_MAX, "sm__kslot.klen");

void sm__kcache_clear(sm__kcache *c) {
    if (c->slot != NULL)
        memset(c->slot, 0, (c->mask + 1) * sizeof *c->slot);
}

int sm__kcache_init(sm__kcache *c, uint32_t slots) {
    assert((slots & (slots - 1)) == 0 && slots != 1);
    *c = (sm__kcache){0};
    if (slots == 0)
        return 0;
    /* written whole now, not calloc'd: the pages of a calloc'd table fault
     * in on first touch, two faults each (read, then write), and a put to a
     * new key touched a new page, which doubled the apply time of a lone
     * put (kv_apply_seconds_total at one client, 5,000 puts) */
    if ((c->slot = malloc(slots * sizeof *c->slot)) == NULL)
        return KV_ENOMEM;
    c->mask = slots - 1;
    sm__kcache_clear(c);
    return 0;
}

void sm__kcache_free(sm__kcache *c) {
    free(c->slot);
    *c = (sm__kcache){0};
}

void sm_key_cache_counts(sm *s, uint64_t *hits, uint64_t *misses) {
    assert(s != NULL);
    *hits = s->kcache.hits;
    *misses = s->kcache.misses;
}

/* The two slots (ways) of key's set, the one used last first; NULL when
 * the cache is off or the key too long for it. */
static sm__kslot *sm__kcache_set_of(sm__kcache *c, const void *key, size_t klen) {
    if (c->slot == NULL || klen > SM_KEY_CACHE_KEY_BYTES)
        return NULL;
    return &c->slot[kv_xxh3(key, klen) & c->mask & ~(size_t)1];
}

static bool sm__kslot_is(const sm__kslot *x, const void *key, size_t klen) {
    return x->state != SM__KSLOT_FREE && x->klen == klen && memcmp(x->key, key, klen) == 0;
}

/* key's state is r (NULL: absent): it goes first in its set, the other way
 * keeps the key that was first (the one used longest ago leaves, or key's
 * own older slot) */
static void sm__kcache_set(sm *s, const void *key, size_t klen, const sm__rec *r) {
    sm__kslot *x = sm__kcache_set_of(&s->kcache, key, klen);
    if (x == NULL)
        return;
    if (!sm__kslot_is(&x[0], key, klen))
        x[1] = x[0];
    x->state = r != NULL ? SM__KSLOT_PRESENT : SM__KSLOT_ABSENT;
    x->klen = (uint8_t)klen;
    memcpy(x->key, key, klen);
    if (r != NULL) {
        x->create_rev = r->create_rev;
        x->mod_rev = r->mod_rev;
        x->version = r->version;
        x->lease = r->lease;
    }
}

int sm__key_read(sm__batch *b, const void *key, size_t klen, sm__rec *rec, char **raw) {
    uint8_t dk[1 + KV_KEY_BYTES_MAX];
    size_t len = 0;
    int rv = sm__bget(b, dk, sm__data_key(dk, key, klen), raw, &len);
    if (rv == KV_ENOTFOUND)
        sm__kcache_set(b->s, key, klen, NULL);
    if (rv != 0)
        return rv;
    if (sm__rec_decode(*raw, len, rec) != 0) {
        KV_LOGE("CORRUPT", "state machine %s: the record of a key of %zu bytes does not decode",
                b->s->dir, klen);
        return KV_ECORRUPT;
    }
    sm__kcache_set(b->s, key, klen, rec);
    return 0;
}

int sm__key_head(sm__batch *b, const void *key, size_t klen, sm__rec *rec) {
    sm__kslot *x = sm__kcache_set_of(&b->s->kcache, key, klen);
    if (x != NULL && !sm__kslot_is(&x[0], key, klen) && sm__kslot_is(&x[1], key, klen)) {
        sm__kslot used = x[1]; /* first now */
        x[1] = x[0];
        x[0] = used;
    }
    if (x != NULL && sm__kslot_is(&x[0], key, klen)) {
        b->s->kcache.hits++;
        if (x->state == SM__KSLOT_ABSENT)
            return KV_ENOTFOUND;
        *rec = (sm__rec){.create_rev = x->create_rev,
                         .mod_rev = x->mod_rev,
                         .version = x->version,
                         .lease = x->lease};
        return 0;
    }
    b->s->kcache.misses++;
    char *raw = NULL;
    int rv = sm__key_read(b, key, klen, rec, &raw);
    rocksdb_free(raw);
    rec->value = NULL;
    rec->len = 0;
    return rv;
}

/* 'k' + be64(lease) + key, the lease index entry of key. */
static size_t sm__lease_key(uint8_t *lk, uint64_t lease, const void *key, size_t klen) {
    lk[0] = SM_PREFIX_LEASE_KEYS;
    sm__put_be64(lk + 1, lease);
    memcpy(lk + 9, key, klen);
    return klen + 9;
}

static void sm__lease_index(sm__batch *b, const void *key, size_t klen, uint64_t old,
                            uint64_t lease) {
    if (old == lease)
        return;
    sm__lease_keys_moved(b->s, old, lease); /* the counts in memory (sm_lease.c) */
    uint8_t lk[9 + KV_KEY_BYTES_MAX];
    if (old != 0)
        sm__bdelete(b, lk, sm__lease_key(lk, old, key, klen));
    if (lease != 0)
        sm__bput(b, lk, sm__lease_key(lk, lease, key, klen), "", 0);
}

/* Appends one WatchEvent to the entry's HistoryRecord (field 1, length
 * delimited: the encoding of a repeated message is its parts in a row). */
static int sm__event_add(sm__batch *b, Kv__WatchEvent__Type type, const void *key, size_t klen,
                         const void *val, size_t vlen, const sm__rec *r) {
    Kv__KeyValue kv;
    kv__key_value__init(&kv);
    kv.key.data = (uint8_t *)key;
    kv.key.len = klen;
    kv.value.data = (uint8_t *)val;
    kv.value.len = vlen;
    kv.create_rev = r->create_rev;
    kv.mod_rev = r->mod_rev;
    kv.version = r->version;
    kv.lease = r->lease;
    Kv__WatchEvent ev;
    kv__watch_event__init(&ev);
    ev.type = type;
    ev.kv = &kv;
    size_t len = kv__watch_event__get_packed_size(&ev);
    if (sm__reserve(&b->events, &b->events_cap, b->events_len + SM_FIELD1_HEADER_BYTES + len) != 0)
        return KV_ENOMEM;
    uint8_t *p = sm__field1_header(b->events + b->events_len, len); /* HistoryRecord.events */
    p += kv__watch_event__pack(&ev, p);
    b->events_len = (size_t)(p - b->events);
    return 0;
}

int sm__key_put(sm__batch *b, const void *key, size_t klen, const void *val, size_t vlen,
                uint64_t lease, const sm__rec *prev) {
    assert(vlen <= KV_VALUE_BYTES_MAX && b->rev != 0);
    sm__rec r = {.create_rev = prev ? prev->create_rev : b->rev,
                 .mod_rev = b->rev,
                 .version = prev ? prev->version + 1 : 1,
                 .lease = lease};
    uint8_t dk[1 + KV_KEY_BYTES_MAX];
    size_t dklen = sm__data_key(dk, key, klen);
    uint8_t h[SM_REC_HEADER_BYTES];
    sm__rec_header(h, &r);
    sm__bput2(b, dk, dklen, h, sizeof h, val, vlen);
    sm__kcache_set(b->s, key, klen, &r);
    sm__lease_index(b, key, klen, prev ? prev->lease : 0, lease);
    return sm__event_add(b, KV__WATCH_EVENT__TYPE__PUT, key, klen, val, vlen, &r);
}

int sm__key_delete(sm__batch *b, const void *key, size_t klen, const sm__rec *prev) {
    assert(prev != NULL && b->rev != 0);
    uint8_t dk[1 + KV_KEY_BYTES_MAX];
    sm__bdelete(b, dk, sm__data_key(dk, key, klen));
    sm__kcache_set(b->s, key, klen, NULL);
    sm__lease_index(b, key, klen, prev->lease, 0);
    sm__rec r = {.mod_rev = b->rev};
    return sm__event_add(b, KV__WATCH_EVENT__TYPE__DELETE, key, klen, NULL, 0, &r);
}

void sm__history_put(sm *s, rocksdb_writebatch_t *wb, uint64_t rev, const void *rec, size_t len) {
    uint8_t hk[9];
    sm__history_key(hk, rev);
    rocksdb_writebatch_put_cf(wb, s->cf_history, (char *)hk, sizeof hk, rec, len);
}

int sm__history_last(sm *s, uint64_t *rev) {
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(s->db, s->ro, s->cf_history);
    rocksdb_iter_seek_to_last(it);
    *rev = 0;
    if (rocksdb_iter_valid(it)) {
        size_t klen = 0;
        const char *k = rocksdb_iter_key(it, &klen);
        *rev = sm__history_rev(k, klen);
    }
    return sm__iter_done(s, it, "reading the last history record");
}

uint64_t sm__history_oldest_at(sm *s, uint64_t applied, uint64_t dropped) {
    uint64_t keep = s->opt.history_revs;
    uint64_t oldest = applied > keep ? applied - keep + 1 : 1;
    return dropped > oldest ? dropped : oldest;
}

uint64_t sm_history_oldest(sm *s) {
    return sm__history_oldest_at(s, atomic_load(&s->applied_index),
                                 atomic_load(&s->history_dropped));
}

/* The history files whose records are all below rev go (records below rev
 * left in other files are never read: sm_history_oldest). No range
 * tombstone: the history's files, written in revision order, never overlap,
 * so they reach the lower levels by moves and never by rewrites, which a
 * tombstone would force (it spans the older files). 0 or a KV_E* code. */
static int sm__history_delete_files(sm *s, uint64_t rev) {
    uint8_t from[1] = {SM_PREFIX_HISTORY}, to[9];
    sm__history_key(to, rev - 1); /* RocksDB's limit is inclusive */
    char *err = NULL;
    rocksdb_delete_file_in_range_cf(s->db, s->cf_history, (char *)from, sizeof from, (char *)to,
                                    sizeof to, &err);
    if (err == NULL)
        return 0;
    int rv = sm__fail(s, err);
    KV_LOGW(kv_errword(rv), "state machine %s: deleting watch history files below %llu: %s", s->dir,
            (unsigned long long)rev, err);
    rocksdb_free(err);
    return rv;
}

int sm_history_drop(sm *s) {
    uint64_t rev = atomic_load(&s->applied_index) + 1;
    if (rev <= sm_history_oldest(s))
        return 0;
    /* The new oldest and a range delete in one write: the space comes back
     * at the compaction that follows (sm_compact), also from files the
     * tombstone covers in part. */
    uint8_t from[1] = {SM_PREFIX_HISTORY}, to[9], val[8];
    sm__history_key(to, rev);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    rocksdb_writebatch_delete_range_cf(wb, s->cf_history, (char *)from, sizeof from, (char *)to,
                                       sizeof to);
    kv_put_u64(val, rev);
    rocksdb_writebatch_put(wb, SM_META_HISTORY_DROPPED, strlen(SM_META_HISTORY_DROPPED),
                           (char *)val, sizeof val);
    char *err = NULL;
    rocksdb_write(s->db, s->wo, wb, &err);
    rocksdb_writebatch_destroy(wb);
    if (err != NULL) {
        int rv = sm__fail(s, err);
        KV_LOGW(kv_errword(rv), "state machine %s: dropping watch history below %llu: %s", s->dir,
                (unsigned long long)rev, err);
        rocksdb_free(err);
        return rv;
    }
    atomic_store(&s->history_dropped, rev);
    KV_LOGW("HISTORY",
            "state machine %s: watch history before revision %llu dropped; a watch from earlier "
            "gets COMPACTED",
            s->dir, (unsigned long long)rev);
    return sm__history_delete_files(s, rev);
}

void sm__history_trim(sm *s, uint64_t before, uint64_t after) {
    /* a failure is logged; the next trim tries again, and a real fault
     * fails the next apply */
    if (before / SM_HISTORY_TRIM_EVERY == after / SM_HISTORY_TRIM_EVERY)
        return;
    uint64_t oldest = sm_history_oldest(s);
    if (oldest > 1)
        (void)sm__history_delete_files(s, oldest);
}

typedef struct sm__keys_migration {
    rocksdb_writebatch_t *wb;
    uint8_t h[SM_REC_HEADER_BYTES]; /* revisions 0, version 1 */
    uint64_t keys;
} sm__keys_migration;

static int sm__keys_migrate_one(void *arg, const char *k, size_t klen, const char *v, size_t vlen) {
    sm__keys_migration *m = arg;
    const char *parts[2] = {(const char *)m->h, v};
    size_t lens[2] = {sizeof m->h, vlen};
    rocksdb_writebatch_putv(m->wb, 1, &k, &klen, 2, parts, lens);
    m->keys++;
    return 0;
}

int sm__keys_migrate(sm *s, rocksdb_writebatch_t *wb, uint64_t *keys) {
    sm__keys_migration m = {.wb = wb};
    sm__rec_header(m.h, &(sm__rec){.version = 1});
    char first = SM_PREFIX_DATA;
    int rv = sm__prefix_each(s, &first, 1, sm__keys_migrate_one, &m, "migrating keys");
    *keys = m.keys;
    return rv;
}
