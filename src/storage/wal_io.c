/*
 * The WAL's storage thread: takes batches off the queue, writes them, does
 * one fdatasync per batch (group commit), then runs the callbacks. Every
 * change to the files happens here, so the on-disk order is queue order.
 * A write or sync error is final (pitfalls.md, "fsyncgate"): the log fails
 * every pending and later append with KV_EIO and never retries.
 */
#include "storage/wal_internal.h"

#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static wal_seg *wal__active(wal *w) {
    assert(w->log.segs_n > 0);
    return w->log.segs[w->log.segs_n - 1];
}

static int wal__sync(wal *w, wal_seg *sg) {
    int rv = w->fs->ops->sync(sg->file);
    if (rv == 0) {
        pthread_mutex_lock(&w->mu);
        w->stats.syncs++;
        pthread_mutex_unlock(&w->mu);
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
 * segment under its final name always has a whole header (pitfalls.md,
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
    *sg = (wal_seg){.seq = seq, .first_index = first, .base_term = base_term, .flags = flags,
                    .size = WAL_SEGMENT_HEADER_BYTES, .path = sg->path};
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

/* Writes the records gathered in wbuf at the end of the active segment. */
static int wal__flush(wal *w) {
    if (w->wbuf_len == 0)
        return 0;
    wal_seg *sg = wal__active(w);
    int rv = w->fs->ops->pwrite(sg->file, w->wbuf, w->wbuf_len, sg->size);
    if (rv == 0)
        sg->size += w->wbuf_len;
    w->wbuf_len = 0;
    return rv;
}

static uint64_t wal__tail_term(wal *w) {
    return w->log.ents_n ? w->log.ents[w->log.ents_n - 1].term : w->log.base_term;
}

/* Adds one encoded record; starts a new segment when it would not fit. */
static int wal__add_record(wal *w, const uint8_t *rec, size_t len) {
    wal_seg *sg = wal__active(w);
    uint64_t used = sg->size + w->wbuf_len;
    int rv = 0;
    if (used > WAL_SEGMENT_HEADER_BYTES && used + len > w->opt.segment_bytes) {
        rv = wal__flush(w);
        if (rv == 0)
            rv = wal__sync(w, sg); /* a torn tail is only ever in the last segment */
        if (rv == 0)
            rv = wal__seg_create(w, sg->seq + 1, w->tail_last + 1, wal__tail_term(w), 0);
        if (rv != 0)
            return rv;
        sg = wal__active(w);
        used = sg->size;
    }
    if (w->wbuf_len + len > w->wbuf_cap) {
        size_t cap = w->wbuf_cap ? w->wbuf_cap : 64 * 1024;
        while (cap < w->wbuf_len + len)
            cap *= 2;
        uint8_t *b = realloc(w->wbuf, cap);
        if (b == NULL)
            return KV_ENOMEM;
        w->wbuf = b;
        w->wbuf_cap = cap;
    }
    memcpy(w->wbuf + w->wbuf_len, rec, len);
    w->wbuf_len += len;
    wal_rec r;
    const char *why = NULL;
    rv = wal__rec_decode(rec, len, &r, &why); /* the same check as the reader's */
    assert(rv == 0 && r.index == w->tail_last + 1);
    wal_ent e = {.term = r.term, .off = used, .seg = sg, .len = r.len, .type = r.type};
    pthread_mutex_lock(&w->mu);
    rv = wal__ents_push(&w->log, &e);
    pthread_mutex_unlock(&w->mu);
    if (rv == 0)
        w->tail_last++;
    return rv;
}

static void wal__seg_drop(wal *w, wal_seg *sg, int *rv) {
    w->fs->ops->close(sg->file);
    int r = w->fs->ops->unlink(w->fs, sg->path);
    if (r != 0 && *rv == 0)
        *rv = r;
    free(sg->path);
    free(sg);
}

/* Drops every entry >= index (Raft: a conflicting suffix): later segments
 * are unlinked and the directory synced before the segment holding index
 * is truncated, so a crash never leaves a gap. */
static int wal__truncate_suffix(wal *w, uint64_t index) {
    assert(index <= w->tail_last);
    int rv = wal__flush(w);
    if (rv != 0)
        return rv;
    wal_scan *s = &w->log;
    pthread_mutex_lock(&w->mu);
    assert(index >= s->first && index - s->first < s->ents_n);
    wal_ent m = s->ents[index - s->first];
    size_t unlinked = 0;
    while (wal__active(w) != m.seg) {
        wal__seg_drop(w, s->segs[--s->segs_n], &rv);
        unlinked++;
    }
    s->ents_n = index - s->first;
    if (w->last_durable >= index)
        w->last_durable = index - 1;
    pthread_mutex_unlock(&w->mu);
    if (rv == 0 && unlinked > 0)
        rv = w->fs->ops->sync_dir(w->fs, w->waldir);
    if (rv == 0)
        rv = w->fs->ops->truncate(m.seg->file, m.off);
    m.seg->size = m.off;
    w->tail_last = index - 1;
    return rv;
}

static int wal__do_append(wal *w, wal_item *it) {
    int rv = 0;
    if (it->index <= w->tail_last) {
        if (it->index < w->log.first) {
            it->status = KV_EINVAL; /* below a prefix dropped meanwhile */
            return 0;
        }
        rv = wal__truncate_suffix(w, it->index);
    }
    if (rv == 0 && it->index != w->tail_last + 1) {
        it->status = KV_EINVAL;
        return 0;
    }
    for (size_t off = 0; rv == 0 && off < it->bytes;) {
        uint32_t len = (uint32_t)(WAL_REC_HDR + (it->buf[8] | it->buf[9] << 8 |
                                                 it->buf[10] << 16 | (uint32_t)it->buf[11] << 24));
        (void)len;
        const uint8_t *rec = it->buf + off;
        size_t rlen = WAL_REC_HDR + ((size_t)rec[8] | (size_t)rec[9] << 8 |
                                     (size_t)rec[10] << 16 | (size_t)rec[11] << 24);
        assert(off + rlen <= it->bytes);
        rv = wal__add_record(w, rec, rlen);
        off += rlen;
    }
    return rv;
}

static int wal__do_batch(wal *w, wal_item *b, size_t n) {
    int rv = 0;
    uint64_t records = 0;
    for (size_t i = 0; rv == 0 && i < n; i++, b = b->next) {
        rv = wal__do_append(w, b);
        records += b->n;
    }
    if (rv == 0)
        rv = wal__flush(w);
    if (rv == 0)
        rv = wal__sync(w, wal__active(w));
    if (rv == 0) {
        pthread_mutex_lock(&w->mu);
        w->last_durable = w->tail_last;
        w->stats.batches++;
        w->stats.records += records;
        pthread_mutex_unlock(&w->mu);
    }
    return rv;
}
