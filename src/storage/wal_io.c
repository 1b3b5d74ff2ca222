/*
 * The WAL's storage thread: takes batches off the queue, writes them, does
 * one fdatasync per batch (group commit), then runs the callbacks. Every
 * change to the files happens here, so the on-disk order is queue order.
 * A write or sync error is final (docs/rules.md, "fsync errors are final (fsyncgate)"): the log
 * fails every pending and later append with KV_EIO and never retries.
 */
#include "storage/wal_internal.h"

#include "common/checksum.h"
#include "common/clock.h"
#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

const uint64_t wal_sync_bucket_us[WAL_SYNC_BUCKETS] = {
    100, 250, 500, 1000, 2500, 5000, 10000, 25000, 50000, 100000, 250000, 1000000};

static wal_seg *wal__active(wal *w) {
    assert(w->log.segs_n > 0);
    return w->log.segs[w->log.segs_n - 1];
}

static int wal__sync(wal *w, wal_seg *sg) {
    assert(sg != NULL && sg->file != NULL);
    assert(sg->size <= sg->alloc);
    uint64_t t0 = kv_now_ns();
    int rv = w->fs->ops->sync(sg->file);
    uint64_t ns = kv_now_ns() - t0;
    pthread_mutex_lock(&w->qmu);
    w->sync_ns_last = ns;
    pthread_mutex_unlock(&w->qmu);
    if (rv == 0) {
        pthread_mutex_lock(&w->mu);
        w->stats.syncs++;
        w->stats.sync_ns_total += ns;
        w->stats.sync_ns_max = ns > w->stats.sync_ns_max ? ns : w->stats.sync_ns_max;
        size_t b = 0;
        while (b < WAL_SYNC_BUCKETS && ns > wal_sync_bucket_us[b] * 1000u)
            b++;
        w->stats.sync_hist[b]++;
        bool slow = w->opt.slow_sync_ns != 0 && ns > w->opt.slow_sync_ns;
        w->stats.slow_syncs += slow;
        pthread_mutex_unlock(&w->mu);
        /* docs/rules.md "slow disk turns into an outage": seen and counted */
        if (slow)
            KV_LOGW("SLOWDISK", "WAL %s: fdatasync took %.1f ms (threshold %.1f ms)", sg->path,
                    (double)ns / 1e6, (double)w->opt.slow_sync_ns / 1e6);
    } else {
        KV_LOGE(kv_errword(rv), "WAL %s: fdatasync: %s", sg->path, kv_strerror(rv));
    }
    return rv;
}

static int wal__segs_push(wal *w, wal_seg *sg) {
    pthread_mutex_lock(&w->mu);
    wal_seg **v = realloc(w->log.segs, (w->log.segs_n + 1) * sizeof *v);
    if (v != NULL) {
        w->log.segs = v;
        v[w->log.segs_n++] = sg;
    }
    pthread_mutex_unlock(&w->mu);
    return v ? 0 : KV_ENOMEM;
}

/* A new segment: written as .tmp, synced, renamed, directory synced, so a
 * segment under its final name always has a whole header (docs/rules.md,
 * etcd#14098) and records in it are acknowledged only after both syncs. */
int wal__seg_create(wal *w, uint64_t seq, uint64_t first, uint64_t base_term, uint32_t flags) {
    kv_fs *fs = w->fs;
    char tmp[WAL_PATH_BYTES_MAX], path[WAL_PATH_BYTES_MAX];
    uint8_t h[WAL_SEGMENT_HEADER_BYTES];
    wal_seg *sg = calloc(1, sizeof *sg);
    int rv = sg ? wal__seg_path(tmp, sizeof tmp, w->waldir, seq, true) : KV_ENOMEM;
    if (rv == 0)
        rv = wal__seg_path(path, sizeof path, w->waldir, seq, false);
    if (rv == 0 && (sg->path = strdup(path)) == NULL)
        rv = KV_ENOMEM;
    if (rv != 0) {
        free(sg);
        return rv;
    }
    *sg = (wal_seg){.seq = seq,
                    .first_index = first,
                    .base_term = base_term,
                    .flags = flags,
                    .size = WAL_SEGMENT_HEADER_BYTES,
                    .alloc = WAL_SEGMENT_HEADER_BYTES,
                    .path = sg->path};
    wal__put_header(h, sg);
    (void)fs->ops->unlink(fs, tmp); /* a leftover of a crash */
    rv = fs->ops->open(fs, tmp, KV_FS_CREATE | KV_FS_EXCL, &sg->file);
    if (rv == 0)
        rv = fs->ops->pwrite(sg->file, h, sizeof h, 0);
    if (rv == 0)
        rv = wal__sync(w, sg);
    if (rv == 0)
        rv = fs->ops->rename(fs, tmp, path);
    if (rv == 0)
        rv = fs->ops->sync_dir(fs, w->waldir);
    if (rv == 0)
        rv = wal__segs_push(w, sg);
    if (rv != 0) {
        KV_LOGE(kv_errword(rv), "cannot create WAL segment %s: %s", path, kv_strerror(rv));
        if (sg->file != NULL)
            fs->ops->close(sg->file);
        free(sg->path);
        free(sg);
    }
    return rv;
}

/* Zero-fills sg up to at least need (see WAL_PREALLOC_BYTES); the batch's
 * fdatasync covers the zeros with the records. */
static int wal__extend(wal *w, wal_seg *sg, uint64_t need) {
    static const uint8_t zeros[64 * 1024];
    uint64_t target = sg->alloc + WAL_PREALLOC_BYTES;
    target = target > w->opt.segment_bytes ? w->opt.segment_bytes : target;
    target = target < need ? need : target;
    assert(target >= need && target > sg->alloc);
    while (sg->alloc < target) {
        uint64_t len = target - sg->alloc;
        len = len > sizeof zeros ? sizeof zeros : len;
        int rv = w->fs->ops->pwrite(sg->file, zeros, (size_t)len, sg->alloc);
        if (rv != 0) {
            KV_LOGE(kv_errword(rv), "WAL %s offset %llu: zero-fill: %s", sg->path,
                    (unsigned long long)sg->alloc, kv_strerror(rv));
            return rv;
        }
        sg->alloc += len;
    }
    return 0;
}

/* Writes the batch gathered in wbuf at the end of the active segment with
 * one pwrite (wal.h rule 1): seals its header first. A pending override
 * with no records yet goes as a marker (rule 6). */
static int wal__flush(wal *w) {
    assert(w->wbuf_count > 0 || w->wbuf_len == 0);
    if (w->wbuf_count == 0 && !w->override_pending)
        return 0;
    if (w->wbuf_count == 0) {
        w->wbuf_len = WAL_BATCH_HDR; /* wal__add_record reserved the room */
        w->wbuf_first = w->tail_last + 1;
    }
    wal_seg *sg = wal__active(w);
    assert(w->wbuf_cap >= WAL_BATCH_HDR);
    assert(w->wbuf_len >= WAL_BATCH_HDR + (size_t)w->wbuf_count * WAL_REC_HDR);
    wal_batch b = {.flags = w->override_pending ? WAL_BATCH_FLAG_OVERRIDE : 0,
                   .seq = sg->seq,
                   .first = w->wbuf_first,
                   .count = w->wbuf_count,
                   .payload_bytes = (uint32_t)(w->wbuf_len - WAL_BATCH_HDR),
                   .payload_xxh3 = kv_xxh3(w->wbuf + WAL_BATCH_HDR, w->wbuf_len - WAL_BATCH_HDR)};
    wal__batch_encode(w->wbuf, &b);
    wal_batch check;
    const char *why = NULL;
    int rv = wal__batch_decode(w->wbuf, w->wbuf_len, &check, &why); /* the reader's check */
    assert(rv == 0 && check.payload_bytes == b.payload_bytes && check.first == b.first);
    if (sg->size + w->wbuf_len > sg->alloc)
        rv = wal__extend(w, sg, sg->size + w->wbuf_len);
    if (rv == 0 && (rv = w->fs->ops->pwrite(sg->file, w->wbuf, w->wbuf_len, sg->size)) != 0)
        KV_LOGE(kv_errword(rv), "WAL %s offset %llu: write: %s", sg->path,
                (unsigned long long)sg->size, kv_strerror(rv));
    if (rv == 0)
        sg->size += w->wbuf_len;
    w->wbuf_len = 0;
    w->wbuf_count = 0;
    w->override_pending = false;
    assert(rv != 0 || sg->size <= sg->alloc);
    return rv;
}

static uint64_t wal__tail_term(wal *w) {
    return w->log.ents_n ? w->log.ents[w->log.ents_n - 1].term : w->log.base_term;
}

static int wal__wbuf_reserve(wal *w, size_t len) {
    if (w->wbuf_len + len <= w->wbuf_cap)
        return 0;
    size_t cap = w->wbuf_cap ? w->wbuf_cap : 64 * 1024;
    while (cap < w->wbuf_len + len)
        cap *= 2;
    uint8_t *b = realloc(w->wbuf, cap);
    if (b == NULL)
        return KV_ENOMEM;
    w->wbuf = b;
    w->wbuf_cap = cap;
    assert(w->wbuf_cap >= w->wbuf_len + len);
    return 0;
}

/* Syncs the active segment and starts the next one (its records go in a
 * new batch): a torn batch is only ever in the last segment (rule 2). */
static int wal__roll(wal *w) {
    wal_seg *sg = wal__active(w);
    int rv = wal__flush(w);
    if (rv == 0)
        rv = wal__sync(w, sg);
    if (rv == 0)
        rv = wal__seg_create(w, sg->seq + 1, w->tail_last + 1, wal__tail_term(w), 0);
    assert(rv != 0 || (wal__active(w) != sg && w->wbuf_len == 0));
    return rv;
}

/* Adds one encoded record to the batch in wbuf; starts a new segment when
 * it would not fit (a pending override is written first, in the segment
 * it overrides, as a marker). */
static int wal__add_record(wal *w, const uint8_t *rec, size_t len) {
    wal_seg *sg = wal__active(w);
    size_t need = len + (w->wbuf_count == 0 ? WAL_BATCH_HDR : 0);
    uint64_t used = sg->size + w->wbuf_len;
    int rv = wal__wbuf_reserve(w, len + WAL_BATCH_HDR);
    if (rv != 0)
        return rv;
    if (used > WAL_SEGMENT_HEADER_BYTES && used + need > w->opt.segment_bytes) {
        if ((rv = wal__roll(w)) != 0)
            return rv;
        sg = wal__active(w);
    }
    if (w->wbuf_count == 0) {
        w->wbuf_len = WAL_BATCH_HDR; /* sealed by wal__flush */
        w->wbuf_first = w->tail_last + 1;
    }
    /* The record was encoded and checksummed by wal_append. */
    uint64_t index = kv_get_u64(rec + 24), term = kv_get_u64(rec + 16);
    assert(index == w->tail_last + 1 && term >= wal__tail_term(w));
    assert(len == WAL_REC_HDR + kv_get_u32(rec + 8));
    wal_ent e = {.term = term,
                 .off = sg->size + w->wbuf_len,
                 .seg = sg,
                 .len = kv_get_u32(rec + 8),
                 .type = rec[12]};
    memcpy(w->wbuf + w->wbuf_len, rec, len);
    w->wbuf_len += len;
    w->wbuf_count++;
    pthread_mutex_lock(&w->mu);
    rv = wal__ents_push(&w->log, &e);
    pthread_mutex_unlock(&w->mu);
    if (rv == 0)
        w->tail_last++;
    return rv;
}

static void wal__seg_free(wal *w, wal_seg *sg) {
    assert(sg != NULL && sg->file != NULL);
    w->fs->ops->close(sg->file);
    free(sg->path);
    free(sg);
}

/* Unlinks the segments v[0..n) in that order, each followed by a directory
 * sync (rule 7), and frees them all; stops unlinking at the first error. */
static int wal__segs_unlink(wal *w, wal_seg **v, size_t n) {
    int rv = 0;
    for (size_t i = 0; i < n; i++) {
        if (rv == 0) {
            rv = w->fs->ops->unlink(w->fs, v[i]->path);
            if (rv == 0)
                rv = w->fs->ops->sync_dir(w->fs, w->waldir);
            if (rv != 0)
                KV_LOGE(kv_errword(rv), "WAL %s: cannot remove it durably: %s", v[i]->path,
                        kv_strerror(rv));
        }
        wal__seg_free(w, v[i]);
    }
    return rv;
}

/* Drops every entry >= index (Raft: a conflicting suffix; wal.h rule 6).
 * Entries still in wbuf are cut there. Otherwise wbuf goes, the segments
 * after the one holding index are unlinked newest first, and the next
 * batch, in that segment, carries OVERRIDE. Nothing is cut in place. */
static int wal__truncate_suffix(wal *w, uint64_t index) {
    wal_scan *s = &w->log;
    wal_seg *act = wal__active(w);
    assert(index <= w->tail_last && index >= s->first);
    uint64_t dropped = w->tail_last - index + 1;
    wal_seg **gone = malloc(s->segs_n * sizeof *gone); /* never touched by readers */
    if (gone == NULL)
        return KV_ENOMEM;
    pthread_mutex_lock(&w->mu);
    assert(index - s->first < s->ents_n);
    wal_ent m = s->ents[index - s->first];
    s->ents_n = index - s->first;
    if (w->last_durable >= index)
        w->last_durable = index - 1;
    size_t keep = s->segs_n, later = 0;
    while (s->segs[keep - 1] != m.seg)
        keep--;
    later = s->segs_n - keep;
    for (size_t i = 0; i < later; i++)
        gone[i] = s->segs[s->segs_n - 1 - i]; /* newest first */
    s->segs_n = keep;
    pthread_mutex_unlock(&w->mu);
    w->tail_last = index - 1;
    if (m.seg == act && m.off >= act->size) { /* only in the batch not yet written */
        assert(dropped < w->wbuf_count + 1);
        w->wbuf_count -= (uint32_t)dropped;
        w->wbuf_len = w->wbuf_count ? (size_t)(m.off - act->size) : 0;
        free(gone);
        return 0;
    }
    w->wbuf_len = 0; /* every record in it follows index */
    w->wbuf_count = 0;
    w->override_pending = true;
    assert(wal__active(w) == m.seg);
    int rv = wal__segs_unlink(w, gone, later);
    free(gone);
    return rv;
}

static int wal__do_append(wal *w, wal_item *it) {
    assert(it->kind == WAL_ITEM_APPEND && it->n >= 1);
    /* Below a prefix dropped meanwhile, or past the end after an earlier
     * append failed: impossible. */
    if (it->index < w->log.first || it->index > w->tail_last + 1) {
        it->status = KV_EINVAL;
        return 0;
    }
    uint64_t before = it->index == w->log.first ? w->log.base_term
                                                : w->log.ents[it->index - 1 - w->log.first].term;
    if (it->term < before) {
        it->status = KV_EINVAL; /* terms never decrease (rule 5) */
        return 0;
    }
    int rv = it->index <= w->tail_last ? wal__truncate_suffix(w, it->index) : 0;
    assert(rv != 0 || it->index == w->tail_last + 1);
    for (size_t off = 0; rv == 0 && off < it->bytes;) {
        const uint8_t *rec = it->buf + off;
        size_t rlen = WAL_REC_HDR + (size_t)kv_get_u32(rec + 8);
        assert(off + rlen <= it->bytes);
        rv = wal__add_record(w, rec, rlen);
        off += rlen;
    }
    return rv;
}

static int wal__do_batch(wal *w, wal_item *b, size_t n) {
    assert(b != NULL && n >= 1);
    int rv = 0;
    uint64_t records = 0;
    uint64_t bytes = 0;
    for (size_t i = 0; rv == 0 && i < n; i++, b = b->next) {
        rv = wal__do_append(w, b);
        records += b->n;
        bytes += b->bytes;
    }
    if (rv == 0)
        rv = wal__flush(w);
    if (rv == 0)
        rv = wal__sync(w, wal__active(w));
    if (rv == 0) {
        pthread_mutex_lock(&w->mu);
        w->last_durable = w->tail_last;
        assert(w->last_durable + 1 == w->log.first + w->log.ents_n);
        w->stats.batches++;
        w->stats.records += records;
        w->stats.bytes += bytes;
        pthread_mutex_unlock(&w->mu);
    }
    return rv;
}

/* Deletes the whole segments all of whose entries are <= index, never the
 * active one: oldest first, a directory sync after each (rule 7). */
static int wal__do_drop(wal *w, uint64_t index) {
    wal_scan *s = &w->log;
    wal_seg **gone = malloc(s->segs_n * sizeof *gone); /* never touched by readers */
    if (gone == NULL)
        return KV_ENOMEM;
    pthread_mutex_lock(&w->mu);
    size_t k = 0;
    while (k + 1 < s->segs_n && s->segs[k + 1]->first_index - 1 <= index)
        k++;
    if (k > 0) {
        memcpy(gone, s->segs, k * sizeof *gone);
        wal_seg *keep = s->segs[k];
        size_t dropped = (size_t)(keep->first_index - s->first);
        assert(dropped <= s->ents_n);
        memmove(s->ents, s->ents + dropped, (s->ents_n - dropped) * sizeof *s->ents);
        s->ents_n -= dropped;
        memmove(s->segs, s->segs + k, (s->segs_n - k) * sizeof *s->segs);
        s->segs_n -= k;
        s->first = keep->first_index;
        s->base_term = keep->base_term;
    }
    pthread_mutex_unlock(&w->mu);
    assert(s->segs_n >= 1);
    int rv = wal__segs_unlink(w, gone, k);
    free(gone);
    return rv;
}

/* An empty log after a snapshot (index, term): the RESET segment goes in
 * durably first, then the old segments go. */
static int wal__do_reset(wal *w, uint64_t index, uint64_t term) {
    wal_scan *s = &w->log;
    assert(w->wbuf_len == 0);
    int rv = wal__seg_create(w, wal__active(w)->seq + 1, index + 1, term, WAL_FLAG_RESET);
    if (rv != 0)
        return rv;
    w->override_pending = false;
    pthread_mutex_lock(&w->mu);
    for (size_t i = 0; i + 1 < s->segs_n; i++) {
        int r = w->fs->ops->unlink(w->fs, s->segs[i]->path); /* any subset: rule 7 */
        rv = rv != 0 ? rv : r;
        wal__seg_free(w, s->segs[i]);
    }
    s->segs[0] = s->segs[s->segs_n - 1];
    s->segs_n = 1;
    s->ents_n = 0;
    s->first = index + 1;
    s->base_term = term;
    w->last_durable = index;
    pthread_mutex_unlock(&w->mu);
    w->tail_last = index;
    if (rv == 0)
        rv = w->fs->ops->sync_dir(w->fs, w->waldir);
    assert(s->first == w->tail_last + 1);
    return rv;
}

/* Takes the next batch off the queue: appends up to batch_bytes_max (at
 * least one), or one drop/reset alone; the batch is cut off the queue as a
 * NULL-terminated list. Caller holds qmu. */
static wal_item *wal__take(wal *w, size_t *n) {
    wal_item *b = w->head, *it = b, *last = b;
    uint64_t bytes = 0;
    *n = 0;
    if (b->kind != WAL_ITEM_APPEND) {
        *n = 1;
        it = b->next;
    } else {
        while (it != NULL && it->kind == WAL_ITEM_APPEND &&
               (*n == 0 || bytes + it->bytes <= w->opt.batch_bytes_max)) {
            bytes += it->bytes;
            (*n)++;
            last = it;
            it = it->next;
        }
    }
    last->next = NULL;
    w->head = it;
    if (it == NULL)
        w->tail = NULL;
    assert(*n >= 1);
    return b;
}

static int wal__process(wal *w, wal_item *b, size_t n) {
    if (b->kind == WAL_ITEM_DROP)
        return wal__do_drop(w, b->index);
    if (b->kind == WAL_ITEM_RESET)
        return wal__do_reset(w, b->index, b->term);
    return wal__do_batch(w, b, n);
}

/* Runs the callbacks of a finished list in order and frees it. The queue
 * bytes are released first, so an append made from (or right after) a
 * callback finds the room its predecessor held. Caller does not hold qmu. */
static void wal__run_callbacks(wal *w, wal_item *b) {
    assert(b != NULL);
    uint64_t bytes = 0;
    for (wal_item *it = b; it != NULL; it = it->next) {
        bytes += it->bytes;
        free(it->buf);
        it->buf = NULL;
    }
    pthread_mutex_lock(&w->qmu);
    assert(w->q_bytes >= bytes);
    w->q_bytes -= bytes;
    pthread_mutex_unlock(&w->qmu);
    while (b != NULL) {
        wal_item *next = b->next;
        b->cb(b->arg, b->status);
        free(b);
        b = next;
    }
}

/* Hands a finished batch to the completion thread. Caller holds qmu. */
static void wal__complete(wal *w, wal_item *b, int rv) {
    assert(b != NULL);
    wal_item *last = b;
    for (wal_item *it = b; it != NULL; it = it->next) {
        it->status = rv != 0 ? rv : it->status;
        last = it;
    }
    if (w->done_tail != NULL)
        w->done_tail->next = b;
    else
        w->done_head = b;
    w->done_tail = last;
    pthread_cond_signal(&w->done_cond);
}

/* Writes and syncs batch b of n items (unless the log failed before:
 * failed); a failure is final (fail-stop, docs/rules.md "fsync errors are
 * final (fsyncgate)"). Takes qmu back and returns the batch's status, also
 * kept in w->failed when it failed. Caller holds io_busy, not qmu. */
static int wal__io(wal *w, wal_item *b, size_t n, int failed) {
    int rv = failed ? failed : wal__process(w, b, n);
    if (rv != 0 && failed == 0) {
        KV_LOGE("IO", "WAL %s: %s; the log refuses every further append", w->waldir,
                kv_strerror(rv));
        rv = KV_EIO; /* never retried */
    }
    pthread_mutex_lock(&w->qmu);
    if (rv != 0)
        w->failed = rv;
    return rv;
}

/* Runs b's callbacks with status rv on this thread, then gives io_busy up.
 * Caller holds qmu (released meanwhile) and io_busy. */
static void wal__call_back_here(wal *w, wal_item *b, int rv) {
    for (wal_item *it = b; it != NULL; it = it->next)
        it->status = rv != 0 ? rv : it->status;
    pthread_mutex_unlock(&w->qmu);
    wal__run_callbacks(w, b);
    pthread_mutex_lock(&w->qmu);
    w->io_busy = false;
}

void wal__append_here(wal *w, wal_item *it) {
    int rv = wal__io(w, it, 1, 0);
    wal__call_back_here(w, it, rv);
    if (w->head != NULL)
        pthread_cond_signal(&w->qcond); /* queued meanwhile (a drop, a reset) */
    pthread_mutex_unlock(&w->qmu);
}

/* The storage thread: one batch at a time, written and synced in queue
 * order, never while wal_append_now's caller writes one. */
void *wal__thread(void *arg) {
    wal *w = arg;
    pthread_mutex_lock(&w->qmu);
    for (;;) {
        while ((w->head == NULL || w->io_busy) && !w->closing)
            pthread_cond_wait(&w->qcond, &w->qmu);
        if (w->head == NULL)
            break;
        assert(!w->io_busy); /* closing comes from the thread that appends now */
        size_t n = 0;
        wal_item *b = wal__take(w, &n);
        int failed = w->failed;
        w->io_busy = true;
        pthread_mutex_unlock(&w->qmu);
        int rv = wal__io(w, b, n, failed);
        if (w->head != NULL || w->done_head != NULL || w->done_busy) {
            wal__complete(w, b, rv); /* overlap the callbacks with the next sync */
            w->io_busy = false;
            continue;
        }
        /* Nothing to overlap with and every earlier callback has run: run
         * these here, saving a thread hop of latency. */
        wal__call_back_here(w, b, rv);
    }
    w->done_stop = true;
    pthread_cond_signal(&w->done_cond);
    pthread_mutex_unlock(&w->qmu);
    return NULL;
}

/* The completion thread: runs the callbacks of finished batches in queue
 * order, while the storage thread already writes and syncs the next batch
 * (waking many writers costs about as much as an fdatasync). */
void *wal__done_thread(void *arg) {
    wal *w = arg;
    pthread_mutex_lock(&w->qmu);
    for (;;) {
        while (w->done_head == NULL && !w->done_stop)
            pthread_cond_wait(&w->done_cond, &w->qmu);
        wal_item *b = w->done_head;
        if (b == NULL)
            break;
        w->done_head = w->done_tail = NULL;
        w->done_busy = true;
        pthread_mutex_unlock(&w->qmu);
        wal__run_callbacks(w, b);
        pthread_mutex_lock(&w->qmu);
        w->done_busy = false;
    }
    pthread_mutex_unlock(&w->qmu);
    return NULL;
}
