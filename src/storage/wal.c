/*
 * The write-ahead log: open, close, the append queue and the readers.
 * The storage thread and the on-disk changes live in wal_io.c, the format
 * and the scan in wal_scan.c.
 */
#include "storage/wal_internal.h"

#include "common/checksum.h"
#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void wal_options_default(wal_options *o) {
    assert(o != NULL);
    o->segment_bytes = KV_WAL_SEGMENT_BYTES_DEFAULT;
    o->queue_bytes_max = KV_WAL_QUEUE_BYTES_MAX;
    o->batch_bytes_max = KV_WAL_BATCH_BYTES_MAX;
    o->slow_sync_ns = 100u * 1000u * 1000u;
}

static int wal__options_ok(const wal_options *o) {
    assert(o != NULL);
    if (o->segment_bytes <= WAL_SEGMENT_HEADER_BYTES ||
        o->segment_bytes > KV_WAL_SEGMENT_BYTES_DEFAULT)
        return KV_EINVAL;
    if (o->queue_bytes_max == 0 || o->queue_bytes_max > KV_WAL_QUEUE_BYTES_MAX)
        return KV_EINVAL;
    if (o->batch_bytes_max == 0 || o->batch_bytes_max > KV_WAL_BATCH_BYTES_MAX)
        return KV_EINVAL;
    return 0;
}

/* Deletes .tmp leftovers and segments before a RESET, truncates a torn
 * tail, durably. Then syncs the last segment and the directory: a process
 * that died between a write and its fdatasync (or between a rename and the
 * directory sync) leaves records and names in the page cache that the scan
 * reads as the log; this run acknowledges them (Raft reports them as
 * persisted), so they must be durable before it relies on them
 * (docs/rules.md, etcd#14098). Only the last segment can hold unsynced
 * records: a segment is synced before the next one is created. */
static int wal__repair(wal *w) {
    wal_scan *s = &w->log;
    assert(!s->torn || s->segs_n > 0);
    kv_fs *fs = w->fs;
    int rv = 0;
    for (size_t i = 0; rv == 0 && i < s->obsolete_n; i++) {
        rv = fs->ops->unlink(fs, s->obsolete[i]);
        KV_LOGI("WAL", "removed obsolete %s", s->obsolete[i]);
    }
    if (rv == 0 && s->obsolete_n > 0)
        rv = fs->ops->sync_dir(fs, w->waldir);
    if (rv == 0 && s->torn) {
        wal_seg *last = s->segs[s->segs_n - 1];
        assert(last->size == s->torn_off);
        rv = fs->ops->truncate(last->file, s->torn_off);
        last->alloc = s->torn_off;
        if (rv == 0)
            rv = fs->ops->sync(last->file);
        KV_LOGW("TORN", "truncated %s at offset %llu", last->path, (unsigned long long)s->torn_off);
    }
    if (rv == 0 && s->segs_n > 0 && !s->torn)
        rv = fs->ops->sync(s->segs[s->segs_n - 1]->file);
    if (rv == 0 && s->segs_n > 0 && s->obsolete_n == 0)
        rv = fs->ops->sync_dir(fs, w->waldir);
    if (rv != 0)
        KV_LOGE(kv_errword(rv), "WAL %s: cannot make the log found at open durable: %s", w->waldir,
                kv_strerror(rv));
    return rv;
}

static int wal__open_files(wal *w) {
    for (size_t i = 0; i < w->log.segs_n; i++) {
        wal_seg *sg = w->log.segs[i];
        assert(sg->file == NULL);
        int rv = w->fs->ops->open(w->fs, sg->path, KV_FS_WRITE, &sg->file);
        if (rv != 0)
            return rv;
        assert(sg->file != NULL);
    }
    return 0;
}

static void wal__free(wal *w) {
    for (size_t i = 0; i < w->log.segs_n; i++) {
        wal_seg *sg = w->log.segs[i];
        if (sg->file != NULL)
            w->fs->ops->close(sg->file);
        sg->file = NULL;
    }
    wal__scan_free(&w->log);
    pthread_mutex_destroy(&w->mu);
    pthread_mutex_destroy(&w->qmu);
    pthread_cond_destroy(&w->qcond);
    pthread_cond_destroy(&w->done_cond);
    free(w->wbuf);
    free(w);
}

static int wal__start(wal *w) {
    wal_scan *s = &w->log;
    int rv = wal__open_files(w);
    if (rv == 0)
        rv = wal__repair(w);
    if (rv == 0 && s->segs_n == 0) {
        s->first = 1;
        s->base_term = 0;
        rv = wal__seg_create(w, 1, 1, 0, 0);
    }
    if (rv != 0)
        return rv;
    w->last_durable = s->first + s->ents_n - 1;
    w->tail_last = w->last_durable;
    w->q_first = s->first;
    w->q_last = w->last_durable;
    if (pthread_create(&w->done_thread, NULL, wal__done_thread, w) != 0)
        return KV_ENOMEM;
    if (pthread_create(&w->thread, NULL, wal__thread, w) != 0) {
        pthread_mutex_lock(&w->qmu);
        w->done_stop = true;
        pthread_cond_signal(&w->done_cond);
        pthread_mutex_unlock(&w->qmu);
        pthread_join(w->done_thread, NULL);
        return KV_ENOMEM;
    }
    assert(s->segs_n > 0);
    return 0;
}

int wal_open(kv_fs *fs, const char *dir, const wal_options *opt, kv_check_fn fn, void *arg,
             wal **out) {
    assert(fs != NULL && dir != NULL && out != NULL);
    wal *w = calloc(1, sizeof *w);
    if (w == NULL)
        return KV_ENOMEM;
    w->fs = fs;
    if (opt != NULL)
        w->opt = *opt;
    else
        wal_options_default(&w->opt);
    pthread_mutex_init(&w->mu, NULL);
    pthread_mutex_init(&w->qmu, NULL);
    pthread_cond_init(&w->qcond, NULL);
    pthread_cond_init(&w->done_cond, NULL);
    int n = snprintf(w->waldir, sizeof w->waldir, "%s/wal", dir);
    int rv = (n < 0 || (size_t)n >= sizeof w->waldir) ? KV_EINVAL : wal__options_ok(&w->opt);
    if (rv == 0)
        rv = wal__scan(fs, dir, fn, arg, &w->log);
    if (rv == 0)
        rv = wal__start(w);
    if (rv != 0) {
        wal__free(w);
        return rv;
    }
    *out = w;
    return 0;
}

void wal_close(wal *w) {
    if (w == NULL)
        return;
    pthread_mutex_lock(&w->qmu);
    assert(!w->closing);
    w->closing = true;
    pthread_cond_broadcast(&w->qcond);
    pthread_mutex_unlock(&w->qmu);
    pthread_join(w->thread, NULL); /* it stops the completion thread last */
    pthread_join(w->done_thread, NULL);
    assert(w->head == NULL && w->done_head == NULL && w->q_bytes == 0);
    wal__free(w);
}

/* Checks an append against the queue's bounds; caller holds qmu. */
static int wal__admit(wal *w, const wal_entry *e, size_t n, size_t bytes) {
    assert(n >= 1 && e[n - 1].index == e[0].index + n - 1);
    if (w->failed != 0)
        return w->failed;
    if (w->closing)
        return KV_ESHUTDOWN;
    if (e[0].index < w->q_first || e[0].index > w->q_last + 1)
        return KV_EINVAL;
    if (bytes > w->opt.queue_bytes_max)
        return KV_ETOOBIG;
    if (w->q_bytes + bytes > w->opt.queue_bytes_max)
        return KV_EBUSY;
    w->q_last = e[0].index + n - 1;
    w->q_bytes += bytes;
    assert(w->q_bytes <= w->opt.queue_bytes_max);
    return 0;
}

static void wal__enqueue(wal *w, wal_item *it) {
    assert(it != NULL && it->cb != NULL);
    assert(!w->closing);
    it->next = NULL;
    if (w->tail != NULL)
        w->tail->next = it;
    else
        w->head = it;
    w->tail = it;
    pthread_cond_signal(&w->qcond);
}

/* wal_append and wal_append_now; now: may write on the caller's thread. */
static int wal__append(wal *w, const wal_entry *e, size_t n, wal_done_fn cb, void *arg, bool now) {
    assert(w != NULL && cb != NULL);
    if (n == 0 || e == NULL || e[0].index == 0)
        return KV_EINVAL;
    size_t bytes = 0;
    for (size_t i = 0; i < n; i++) {
        if (e[i].len > KV_ENTRY_BYTES_MAX)
            return KV_ETOOBIG;
        if (e[i].index != e[0].index + i || (e[i].len > 0 && e[i].data == NULL))
            return KV_EINVAL;
        if (i > 0 && e[i].term < e[i - 1].term)
            return KV_EINVAL; /* terms never decrease (wal.h rule 5) */
        bytes += WAL_REC_HDR + e[i].len;
    }
    wal_item *it = calloc(1, sizeof *it);
    uint8_t *buf = malloc(bytes);
    if (it == NULL || buf == NULL) {
        free(it);
        free(buf);
        return KV_ENOMEM;
    }
    /* Encode and checksum on the caller's thread: writers hash in parallel. */
    for (size_t i = 0, off = 0; i < n; off += WAL_REC_HDR + e[i].len, i++)
        wal__rec_encode(buf + off, &e[i]);
    *it = (wal_item){.kind = WAL_ITEM_APPEND,
                     .buf = buf,
                     .bytes = bytes,
                     .n = n,
                     .index = e[0].index,
                     .term = e[0].term,
                     .cb = cb,
                     .arg = arg};
    pthread_mutex_lock(&w->qmu);
    int rv = wal__admit(w, e, n, bytes);
    /* idle: nothing ahead of it whose callback could still run after its own */
    now = now && rv == 0 && w->head == NULL && !w->io_busy && w->done_head == NULL &&
          !w->done_busy && w->failed == 0 && w->sync_ns_last < WAL_NOW_SYNC_NS_MAX;
    if (now)
        w->io_busy = true;
    else if (rv == 0)
        wal__enqueue(w, it);
    pthread_mutex_unlock(&w->qmu);
    if (rv != 0) {
        free(buf);
        free(it);
    }
    if (now)
        wal__append_here(w, it);
    return rv;
}

int wal_append(wal *w, const wal_entry *e, size_t n, wal_done_fn cb, void *arg) {
    return wal__append(w, e, n, cb, arg, false);
}

int wal_append_now(wal *w, const wal_entry *e, size_t n, wal_done_fn cb, void *arg) {
    return wal__append(w, e, n, cb, arg, true);
}

/* A blocking call's rendezvous with its callback. */
typedef struct wal_waiter {
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool done;
    int status;
} wal_waiter;

static void wal__waiter_init(wal_waiter *wt) {
    pthread_mutex_init(&wt->mu, NULL);
    pthread_cond_init(&wt->cond, NULL);
    wt->done = false;
    wt->status = 0;
}

static void wal__waiter_done(void *arg, int status) {
    wal_waiter *wt = arg;
    pthread_mutex_lock(&wt->mu);
    wt->status = status;
    wt->done = true;
    pthread_cond_signal(&wt->cond);
    pthread_mutex_unlock(&wt->mu);
}

static int wal__waiter_wait(wal_waiter *wt) {
    pthread_mutex_lock(&wt->mu);
    while (!wt->done)
        pthread_cond_wait(&wt->cond, &wt->mu);
    int status = wt->status;
    pthread_mutex_unlock(&wt->mu);
    pthread_mutex_destroy(&wt->mu);
    pthread_cond_destroy(&wt->cond);
    return status;
}

int wal_append_wait(wal *w, const wal_entry *e, size_t n) {
    wal_waiter wt;
    wal__waiter_init(&wt);
    int rv = wal_append(w, e, n, wal__waiter_done, &wt);
    if (rv != 0)
        wal__waiter_done(&wt, rv);
    return wal__waiter_wait(&wt);
}

/* Queues a drop or reset and waits for the storage thread to do it. */
static int wal__control(wal *w, enum wal_item_kind kind, uint64_t index, uint64_t term) {
    assert(kind != WAL_ITEM_APPEND);
    wal_waiter wt;
    wal__waiter_init(&wt);
    wal_item *it = calloc(1, sizeof *it);
    if (it == NULL)
        return KV_ENOMEM;
    *it =
        (wal_item){.kind = kind, .index = index, .term = term, .cb = wal__waiter_done, .arg = &wt};
    pthread_mutex_lock(&w->qmu);
    int rv = w->failed ? w->failed : w->closing ? KV_ESHUTDOWN : 0;
    if (rv == 0 && kind == WAL_ITEM_RESET) {
        w->q_first = index + 1;
        w->q_last = index;
    }
    if (rv == 0)
        wal__enqueue(w, it);
    pthread_mutex_unlock(&w->qmu);
    if (rv != 0) {
        free(it);
        wal__waiter_done(&wt, rv);
    }
    rv = wal__waiter_wait(&wt);
    if (rv == 0 && kind == WAL_ITEM_DROP) {
        uint64_t first = wal_first_index(w);
        pthread_mutex_lock(&w->qmu);
        w->q_first = first > w->q_first ? first : w->q_first;
        pthread_mutex_unlock(&w->qmu);
    }
    return rv;
}

int wal_drop_prefix(wal *w, uint64_t index) {
    assert(w != NULL);
    return wal__control(w, WAL_ITEM_DROP, index, 0);
}

int wal_reset(wal *w, uint64_t index, uint64_t term) {
    assert(w != NULL);
    return wal__control(w, WAL_ITEM_RESET, index, term);
}

uint64_t wal_first_index(wal *w) {
    pthread_mutex_lock(&w->mu);
    uint64_t v = w->log.first;
    pthread_mutex_unlock(&w->mu);
    assert(v > 0);
    return v;
}

uint64_t wal_last_index(wal *w) {
    pthread_mutex_lock(&w->mu);
    uint64_t v = w->last_durable;
    assert(v + 1 >= w->log.first);
    pthread_mutex_unlock(&w->mu);
    return v;
}

int wal_term_at(wal *w, uint64_t index, uint64_t *term) {
    assert(w != NULL && term != NULL);
    pthread_mutex_lock(&w->mu);
    int rv = 0;
    if (index + 1 < w->log.first)
        rv = KV_ECOMPACTED;
    else if (index > w->last_durable)
        rv = KV_ENOTFOUND;
    else if (index + 1 == w->log.first)
        *term = w->log.base_term;
    else
        *term = w->log.ents[index - w->log.first].term;
    pthread_mutex_unlock(&w->mu);
    return rv;
}

void wal_entries_free(wal_entry *e, size_t n) {
    assert(e != NULL || n == 0);
    (void)n;
    free(e); /* one block: the array, then the payloads */
}

/* Reads and verifies entry index into e, payload at dst. Caller holds mu. */
static int wal__read_one(wal *w, uint64_t index, wal_entry *e, uint8_t *dst, uint8_t *scratch) {
    assert(index >= w->log.first && index <= w->last_durable);
    const wal_ent *m = &w->log.ents[index - w->log.first];
    assert(m->seg != NULL && m->seg->file != NULL);
    size_t len = WAL_REC_HDR + m->len, got = 0;
    int rv = w->fs->ops->pread(m->seg->file, scratch, len, m->off, &got);
    if (rv != 0)
        return rv;
    wal_rec r;
    const char *why = NULL;
    if (wal__rec_decode(scratch, got, &r, &why) != 0 || r.index != index || r.len != m->len) {
        KV_LOGE("CORRUPT", "%s offset %llu index %llu: %s", m->seg->path,
                (unsigned long long)m->off, (unsigned long long)index, why ? why : "index moved");
        return KV_ECORRUPT;
    }
    memcpy(dst, scratch + WAL_REC_HDR, r.len);
    *e = (wal_entry){.index = index, .term = r.term, .type = r.type, .len = r.len, .data = dst};
    return 0;
}

int wal_read(wal *w, uint64_t lo, uint64_t hi, uint64_t bytes_max, wal_entry **out, size_t *n) {
    assert(w != NULL && out != NULL && n != NULL);
    pthread_mutex_lock(&w->mu);
    uint64_t first = w->log.first, last = w->last_durable;
    int rv = hi <= lo ? KV_EINVAL : lo < first ? KV_ECOMPACTED : lo > last ? KV_ENOTFOUND : 0;
    size_t count = 0, payload = 0, rec_max = 0;
    hi = hi > last + 1 ? last + 1 : hi;
    for (uint64_t i = lo; rv == 0 && i < hi; i++) {
        uint32_t len = w->log.ents[i - first].len;
        if (count > 0 && payload + len > bytes_max)
            break;
        count++;
        payload += len;
        rec_max = len > rec_max ? len : rec_max;
    }
    wal_entry *v = NULL;
    uint8_t *scratch = NULL;
    if (rv == 0) {
        v = malloc(count * sizeof *v + payload + 1);
        scratch = malloc(WAL_REC_HDR + rec_max);
        rv = (v == NULL || scratch == NULL) ? KV_ENOMEM : 0;
    }
    uint8_t *dst = v ? (uint8_t *)(v + count) : NULL;
    for (size_t i = 0; rv == 0 && i < count; i++) {
        rv = wal__read_one(w, lo + i, &v[i], dst, scratch);
        if (rv == 0)
            dst += v[i].len;
    }
    pthread_mutex_unlock(&w->mu);
    free(scratch);
    if (rv != 0) {
        free(v);
        return rv;
    }
    assert(count >= 1);
    *out = v;
    *n = count;
    return 0;
}

void wal_get_stats(wal *w, wal_stats *out) {
    assert(w != NULL && out != NULL);
    pthread_mutex_lock(&w->mu);
    *out = w->stats;
    pthread_mutex_unlock(&w->mu);
}
