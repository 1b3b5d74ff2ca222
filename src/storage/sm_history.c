/* Watch history (sm.h): reading the 'h' + be64(revision) -> kv.HistoryRecord
 * records that applying writes (sm_apply.c). Reads come from one RocksDB
 * snapshot per call, so a call sees whole entries and the applied index of
 * the same moment, also while snap_create_live runs beside the apply
 * thread. */
#include "storage/sm_internal.h"

#include "common/checksum.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "proto/kv.pb-c.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

/* What one event counts against bytes_max besides its key and value: the
 * revisions and framing of a WatchEvent on the wire. */
#define SM_HISTORY_EVENT_OVERHEAD_BYTES 48u

/* One consistent view of the history and the applied index. */
typedef struct sm__hview {
    rocksdb_t *db;
    const rocksdb_snapshot_t *snap;
    rocksdb_readoptions_t *ro;
    rocksdb_iterator_t *it;
    uint64_t applied;
    uint64_t dropped; /* sm_history_drop's oldest revision, 0: none */
} sm__hview;

static int sm__hview_open(sm *s, sm__hview *v, uint64_t from_rev) {
    v->db = s->db;
    v->snap = rocksdb_create_snapshot(s->db);
    v->ro = rocksdb_readoptions_create();
    assert(v->snap != NULL && v->ro != NULL);
    rocksdb_readoptions_set_verify_checksums(v->ro, 1);
    rocksdb_readoptions_set_snapshot(v->ro, v->snap);
    v->it = NULL;
    int rv = sm__meta_u64(s, s->db, v->ro, SM_META_APPLIED_INDEX, &v->applied);
    if (rv == 0)
        rv = sm__meta_u64(s, s->db, v->ro, SM_META_HISTORY_DROPPED, &v->dropped);
    if (rv != 0)
        return rv;
    v->it = rocksdb_create_iterator_cf(s->db, v->ro, s->cf_history);
    uint8_t k[9];
    sm__history_key(k, from_rev);
    rocksdb_iter_seek(v->it, (const char *)k, sizeof k);
    return 0;
}

/* Closes v; returns the iterator's error as a KV_E* code (0: none). */
static int sm__hview_close(sm *s, sm__hview *v) {
    int rv = 0;
    if (v->it != NULL) {
        char *err = NULL;
        rocksdb_iter_get_error(v->it, &err);
        if (err != NULL) {
            rv = sm__fail(s, err);
            KV_LOGE(kv_errword(rv), "state machine %s: history iterator: %s", s->dir, err);
            rocksdb_free(err);
        }
        rocksdb_iter_destroy(v->it);
    }
    rocksdb_readoptions_destroy(v->ro);
    rocksdb_release_snapshot(v->db, v->snap);
    return rv;
}

/* The revision of the record under the iterator, 0 when past the history
 * or past the applied index (a record above it is one a crash left after
 * the history was flushed ahead of the keys, SM_CF_HISTORY: written again
 * when its entry is applied again). */
static uint64_t sm__hview_rev(sm__hview *v) {
    if (!rocksdb_iter_valid(v->it))
        return 0;
    size_t klen = 0;
    const char *k = rocksdb_iter_key(v->it, &klen);
    uint64_t rev = sm__history_rev(k, klen);
    return rev <= v->applied ? rev : 0;
}

/* ev as an sm_event of revision rev. */
static void sm__event_of(const Kv__WatchEvent *ev, uint64_t rev, sm_event *out) {
    static const uint8_t empty[1];
    const Kv__KeyValue *kv = ev->kv;
    memset(out, 0, sizeof(*out));
    out->type = ev->type == KV__WATCH_EVENT__TYPE__DELETE ? SM_EVENT_DELETE : SM_EVENT_PUT;
    out->rev = rev;
    out->key = empty;
    out->value = empty;
    if (kv == NULL)
        return;
    out->key = kv->key.len > 0 ? kv->key.data : empty;
    out->klen = kv->key.len;
    out->value = kv->value.len > 0 ? kv->value.data : empty;
    out->vlen = kv->value.len;
    out->create_rev = kv->create_rev;
    out->mod_rev = kv->mod_rev;
    out->version = kv->version;
    out->lease = kv->lease;
}

/* Gives the events of rec (revision rev) from pos->event on whose key
 * starts with prefix, while *bytes stays within bytes_max (the first event
 * of the call always goes: *given). pos->event moves past what was given;
 * 1 when the record was given whole, 0 when it stopped inside, or fn's
 * non-zero return. */
static int sm__record_give(const Kv__HistoryRecord *rec, uint64_t rev, sm_history_pos *pos,
                           const void *prefix, size_t plen, uint64_t bytes_max, uint64_t *bytes,
                           bool *given, bool *whole, sm_history_fn fn, void *arg) {
    *whole = false;
    for (size_t i = pos->event; i < rec->n_events; i++) {
        sm_event e;
        sm__event_of(rec->events[i], rev, &e);
        if (e.klen < plen || (plen > 0 && memcmp(e.key, prefix, plen) != 0)) {
            pos->event = (uint32_t)i + 1;
            continue;
        }
        uint64_t cost = e.klen + e.vlen + SM_HISTORY_EVENT_OVERHEAD_BYTES;
        if (*given && *bytes + cost > bytes_max)
            return 0; /* the rest at the next call */
        int rv = fn(arg, &e);
        if (rv != 0)
            return rv;
        *bytes += cost;
        *given = true;
        pos->event = (uint32_t)i + 1;
    }
    *whole = true;
    return 0;
}

int sm_history_read(sm *s, sm_history_pos *pos, const void *prefix, size_t plen, uint64_t bytes_max,
                    sm_history_fn fn, void *arg) {
    assert(s != NULL && pos != NULL && fn != NULL);
    if (plen > KV_KEY_BYTES_MAX || bytes_max < 1 || pos->rev < 1)
        return KV_EINVAL;
    sm__hview v;
    int rv = sm__hview_open(s, &v, pos->rev);
    uint64_t oldest = sm__history_oldest_at(s, v.applied, v.dropped);
    /* Files the trim deleted between the snapshot and the iterator are
     * gone from the iterator: what the oldest now is counts too. */
    uint64_t now = sm_history_oldest(s);
    oldest = now > oldest ? now : oldest;
    if (rv == 0 && pos->rev < oldest && pos->rev <= v.applied)
        rv = KV_ECOMPACTED;
    uint64_t bytes = 0;
    bool given = false;
    uint64_t rev;
    while (rv == 0 && (rev = sm__hview_rev(&v)) != 0) {
        assert(rev >= pos->rev && rev <= v.applied);
        if (rev > pos->rev) {
            pos->rev = rev;
            pos->event = 0;
        }
        size_t len = 0;
        const char *val = rocksdb_iter_value(v.it, &len);
        Kv__HistoryRecord *rec = kv__history_record__unpack(NULL, len, (const uint8_t *)val);
        if (rec == NULL) {
            KV_LOGE("CORRUPT", "state machine %s: history record %llu does not decode", s->dir,
                    (unsigned long long)rev);
            rv = KV_ECORRUPT;
            break;
        }
        bool done = false;
        rv =
            sm__record_give(rec, rev, pos, prefix, plen, bytes_max, &bytes, &given, &done, fn, arg);
        kv__history_record__free_unpacked(rec, NULL);
        if (rv != 0 || !done)
            break; /* stopped by fn, or inside the record: bytes_max */
        pos->rev = rev + 1;
        pos->event = 0;
        rocksdb_iter_next(v.it);
    }
    bool whole = rv == 0 && sm__hview_rev(&v) == 0;
    int crv = sm__hview_close(s, &v);
    if (whole && crv == 0 && pos->rev <= v.applied) {
        pos->rev = v.applied + 1; /* no record after: everything applied was read */
        pos->event = 0;
    }
    return crv != 0 ? crv : rv;
}
