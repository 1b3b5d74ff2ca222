/* sm_batch: the writes of one sm_apply call, the reads that must see them,
 * and their commit (sm_internal.h).
 *
 * The writes go into a plain RocksDB batch and, by key, into an overlay (an
 * open-addressing table over one arena) that reads consult before the db.
 * RocksDB's WriteBatchWithIndex, used before, answers the same reads but
 * pays a skiplist search with comparisons that decode the batch on every
 * write: a quarter of the apply cost of a put, measured with callgrind on
 * `kvbench sm` (docs/benchmarks.md). A hash and a copy cost far less.
 *
 * Ranges are not read through the overlay: the two ops that scan (a prefix
 * delete, a lease revoke) do so before they write anything, and the call's
 * earlier entries are written to the db first (sm__biter), so the db alone
 * is right. RocksDB therefore always holds whole entries and the applied
 * index of the last of them, whatever a flush or a crash cuts.
 */
#include "storage/sm_internal.h"

#include "common/checksum.h"
#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

typedef struct sm__ov_slot {
    uint64_t hash;
    uint32_t gen;     /* the slot is used when it is the overlay's gen */
    size_t koff;      /* the key in mem */
    size_t voff;      /* the value in mem (the key's last write) */
    uint32_t klen, vlen;
    bool present;     /* false: deleted */
} sm__ov_slot;

#define SM_OV_CAP_MIN 256u

static uint64_t sm__ov_hash(const void *k, size_t klen) {
    return kv_xxh3(k, klen);
}

/* The slot of k, or the free slot where it goes. */
static sm__ov_slot *sm__ov_find(sm__overlay *o, const void *k, size_t klen, uint64_t h) {
    size_t mask = o->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        sm__ov_slot *x = &o->slot[i];
        if (x->gen != o->gen ||
            (x->hash == h && x->klen == klen && memcmp(o->mem + x->koff, k, klen) == 0))
            return x;
    }
}

/* Appends len bytes to the arena: their offset, or SIZE_MAX when out of
 * memory. */
static size_t sm__ov_append(sm__overlay *o, const void *p, size_t len) {
    if (sm__reserve(&o->mem, &o->mem_cap, o->len + len) != 0)
        return SIZE_MAX;
    size_t off = o->len;
    if (len > 0)
        memcpy(o->mem + off, p, len);
    o->len += len;
    return off;
}

static int sm__ov_grow(sm__overlay *o) {
    size_t cap = o->cap ? o->cap * 2 : SM_OV_CAP_MIN;
    sm__ov_slot *old = o->slot, *slot = calloc(cap, sizeof *slot);
    if (slot == NULL)
        return KV_ENOMEM;
    size_t old_cap = o->cap;
    o->slot = slot;
    o->cap = cap;
    for (size_t i = 0; i < old_cap; i++)
        if (old[i].gen == o->gen)
            *sm__ov_find(o, o->mem + old[i].koff, old[i].klen, old[i].hash) = old[i];
    free(old);
    return 0;
}

/* k's last write: v1 and v2 in a row, or a delete (present false). */
static int sm__ov_set(sm__overlay *o, const void *k, size_t klen, const void *v1, size_t len1,
                      const void *v2, size_t len2, bool present) {
    if ((o->count + 1) * 2 > o->cap && sm__ov_grow(o) != 0)
        return KV_ENOMEM;
    uint64_t h = sm__ov_hash(k, klen);
    sm__ov_slot *x = sm__ov_find(o, k, klen, h);
    size_t voff = sm__ov_append(o, v1, len1);
    if (voff == SIZE_MAX || sm__ov_append(o, v2, len2) == SIZE_MAX)
        return KV_ENOMEM;
    if (x->gen != o->gen) {
        size_t koff = sm__ov_append(o, k, klen);
        if (koff == SIZE_MAX)
            return KV_ENOMEM;
        *x = (sm__ov_slot){.hash = h, .gen = o->gen, .koff = koff, .klen = (uint32_t)klen};
        o->count++;
    }
    x->voff = voff;
    x->vlen = (uint32_t)(len1 + len2);
    x->present = present;
    return 0;
}

/* Empties o in O(1): the slots of the old gen read as free. */
static void sm__ov_clear(sm__overlay *o) {
    if (o->count > 0 && ++o->gen == 0) { /* wrapped: every slot free again */
        memset(o->slot, 0, o->cap * sizeof *o->slot);
        o->gen = 1;
    }
    o->count = 0;
    o->len = 0;
}

int sm__reserve(uint8_t **buf, size_t *cap, size_t need) {
    if (need <= *cap)
        return 0;
    size_t c = *cap ? *cap : 256;
    while (c < need)
        c *= 2;
    uint8_t *p = realloc(*buf, c);
    if (p == NULL)
        return KV_ENOMEM;
    *buf = p;
    *cap = c;
    return 0;
}

sm__batch *sm__batch_begin(sm *s, size_t n) {
    sm__batch *b = s->batch;
    if (b == NULL) {
        if ((b = calloc(1, sizeof *b)) == NULL || (b->wb = rocksdb_writebatch_create()) == NULL) {
            free(b);
            return NULL;
        }
        b->s = s;
        b->ov.gen = 1; /* calloc'd slots (gen 0) are free */
        s->batch = b;
    }
    if (n > b->hist_cap) {
        sm__hist *h = realloc(b->hist, n * sizeof *h);
        if (h == NULL)
            return NULL;
        b->hist = h;
        b->hist_cap = n;
    }
    assert(rocksdb_writebatch_count(b->wb) == 0 && b->ov.count == 0);
    b->err = 0;
    b->done_index = s->applied_index;
    b->done_term = s->applied_term;
    b->events_len = b->entry_from = 0;
    b->hist_count = 0;
    b->entry_writes = 0;
    b->slog_len = b->slog_from = 0;
    b->slog_records = 0;
    return b;
}

/* Frees buffer p (cap items) when it holds more than SM_BATCH_KEEP_BYTES. */
#define SM__GIVE_BACK(p, cap, bytes)                                                               \
    do {                                                                                           \
        if ((bytes) > SM_BATCH_KEEP_BYTES) {                                                       \
            free(p);                                                                               \
            (p) = NULL;                                                                            \
            (cap) = 0;                                                                             \
        }                                                                                          \
    } while (0)

void sm__batch_end(sm__batch *b) {
    rocksdb_writebatch_clear(b->wb);
    sm__ov_clear(&b->ov);
    if (b->ov.mem_cap > SM_BATCH_KEEP_BYTES || b->ov.cap * sizeof *b->ov.slot > SM_BATCH_KEEP_BYTES) {
        free(b->ov.mem);
        free(b->ov.slot);
        b->ov = (sm__overlay){.gen = 1};
    }
    SM__GIVE_BACK(b->events, b->events_cap, b->events_cap);
    SM__GIVE_BACK(b->slog, b->slog_cap, b->slog_cap);
    SM__GIVE_BACK(b->hist, b->hist_cap, b->hist_cap * sizeof *b->hist);
}

void sm__batch_free(sm__batch *b) {
    if (b == NULL)
        return;
    rocksdb_writebatch_destroy(b->wb);
    free(b->ov.slot);
    free(b->ov.mem);
    free(b->events);
    free(b->hist);
    free(b->slog);
    free(b);
}

void sm__entry_start(sm__batch *b, const sm_entry *e) {
    b->rev = e->index;
    b->entry_from = b->events_len;
    b->entry_writes = rocksdb_writebatch_count(b->wb);
    b->slog_from = b->slog_len;
}

void sm__entry_end(sm__batch *b, const sm_entry *e) {
    assert(e->index == b->rev);
    if (b->events_len > b->entry_from)
        b->hist[b->hist_count++] = (sm__hist){b->rev, b->entry_from, b->events_len};
    b->done_index = e->index;
    b->done_term = e->term;
}

/* A write that did not reach the overlay (out of memory) would let a later
 * read of the call miss it: the error sticks, and every later read and the
 * write of the batch fail with it (the caller fail-stops). */
static void sm__ov_must(sm__batch *b, int rv) {
    if (rv != 0 && b->err == 0)
        b->err = rv;
}

void sm__bput(sm__batch *b, const void *k, size_t klen, const void *v, size_t vlen) {
    rocksdb_writebatch_put(b->wb, k, klen, v, vlen);
    sm__ov_must(b, sm__ov_set(&b->ov, k, klen, v, vlen, NULL, 0, true));
}

void sm__bput2(sm__batch *b, const void *k, size_t klen, const void *v1, size_t len1,
               const void *v2, size_t len2) {
    const char *kp[1] = {k}, *vp[2] = {v1, v2};
    size_t kl[1] = {klen}, vl[2] = {len1, len2};
    rocksdb_writebatch_putv(b->wb, 1, kp, kl, 2, vp, vl);
    sm__ov_must(b, sm__ov_set(&b->ov, k, klen, v1, len1, v2, len2, true));
}

void sm__bdelete(sm__batch *b, const void *k, size_t klen) {
    rocksdb_writebatch_delete(b->wb, k, klen);
    sm__ov_must(b, sm__ov_set(&b->ov, k, klen, NULL, 0, NULL, 0, false));
}

int sm__bget(sm__batch *b, const void *k, size_t klen, char **v, size_t *vlen) {
    assert(klen > 0);
    *v = NULL;
    *vlen = 0;
    if (b->err != 0)
        return b->err;
    if (b->ov.count > 0) {
        const sm__ov_slot *x = sm__ov_find(&b->ov, k, klen, sm__ov_hash(k, klen));
        if (x->gen == b->ov.gen && !x->present)
            return KV_ENOTFOUND;
        if (x->gen == b->ov.gen) {
            if ((*v = malloc(x->vlen ? x->vlen : 1)) == NULL)
                return KV_ENOMEM;
            memcpy(*v, b->ov.mem + x->voff, x->vlen);
            *vlen = x->vlen;
            return 0;
        }
    }
    char *err = NULL;
    *v = rocksdb_get(b->s->db, b->s->ro, k, klen, vlen, &err);
    if (err != NULL)
        return sm__failed(b->s, err, false, "read during apply");
    return *v == NULL ? KV_ENOTFOUND : 0;
}

int sm__biter(sm__batch *b, rocksdb_iterator_t **it) {
    /* it wrote nothing yet */
    assert(rocksdb_writebatch_count(b->wb) == b->entry_writes && b->slog_len == b->slog_from);
    *it = NULL;
    int rv = sm__batch_write(b);
    if (rv == 0)
        *it = rocksdb_create_iterator(b->s->db, b->s->ro);
    return rv;
}

static void sm__bput_u64(sm__batch *b, const char *name, uint64_t v) {
    uint8_t buf[8];
    kv_put_u64(buf, v);
    assert(name[0] == SM_PREFIX_META);
    rocksdb_writebatch_put(b->wb, name, strlen(name), (const char *)buf, sizeof buf);
}

int sm__batch_write(sm__batch *b) {
    sm *s = b->s;
    assert(b->done_index >= s->applied_index);
    if (b->err != 0)
        return b->err;
    if (b->done_index == s->applied_index) {
        assert(rocksdb_writebatch_count(b->wb) == b->entry_writes && b->slog_len == 0);
        return 0; /* no entry applied whole since the last write */
    }
    bool folded = false;
    int rv = b->slog_len > 0 ? sm__session_log_write(b, &folded) : 0;
    if (rv != 0)
        return rv;
    for (size_t i = 0; i < b->hist_count; i++) {
        const sm__hist *h = &b->hist[i];
        assert(i == 0 || h->rev > b->hist[i - 1].rev);
        sm__history_put(s, b->wb, h->rev, b->events + h->from, h->to - h->from);
    }
    if (b->hist_count == 0 || b->hist[b->hist_count - 1].rev != b->done_index)
        sm__history_put(s, b->wb, b->done_index, "", 0); /* how far it is written */
    /* The format is written at open (sm_open); the session count and
     * order are not stored (format 2): the records are enough. */
    sm__bput_u64(b, SM_META_APPLIED_INDEX, b->done_index);
    if (b->done_term != s->applied_term)
        sm__bput_u64(b, SM_META_APPLIED_TERM, b->done_term);
    char *err = NULL;
    rocksdb_write(s->db, s->wo, b->wb, &err);
    if (err != NULL)
        return sm__failed(s, err, true, "write batch");
    s->slog_records = folded ? 0 : s->slog_records + b->slog_records;
    s->slog_bytes = folded ? 0 : s->slog_bytes + b->slog_len;
    b->slog_len = b->slog_from = 0;
    b->slog_records = 0;
    rocksdb_writebatch_clear(b->wb);
    sm__ov_clear(&b->ov);
    b->events_len = b->entry_from = 0;
    b->hist_count = 0;
    b->entry_writes = 0;
    s->applied_term = b->done_term;
    s->applied_index = b->done_index; /* readers on other threads see it now */
    return 0;
}
