/*
 * The WAL's on-disk format and the scan shared by wal_open and wal_check:
 * torn batch versus corruption, by the definitions and rules at the top of
 * wal.h (docs/rules.md "torn tail or corruption" and
 * "power loss keeps some unsynced pages and not others" pages").
 */
#include "storage/wal_internal.h"

#include "common/checksum.h"
#include "kv/errors.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char wal__magic[8] = {'K', 'V', 'W', 'A', 'L', 'S', 'E', 'G'};

void wal__report(kv_check_fn fn, void *arg, const char *word, const char *file, uint64_t off,
                 uint64_t index, const char *detail) {
    if (fn == NULL)
        return;
    kv_check_problem p = {
        .word = word, .file = file, .offset = off, .index = index, .detail = detail};
    fn(arg, &p);
}

void wal__put_header(uint8_t *buf, const wal_seg *s) {
    assert(buf != NULL && s != NULL);
    memcpy(buf, wal__magic, 8);
    kv_put_u32(buf + 8, WAL_FORMAT_VERSION);
    kv_put_u32(buf + 12, s->flags);
    kv_put_u64(buf + 16, s->seq);
    kv_put_u64(buf + 24, s->first_index);
    kv_put_u64(buf + 32, s->base_term);
    kv_put_u64(buf + 40, kv_xxh3(buf, 40));
    assert(WAL_SEGMENT_HEADER_BYTES == 48);
}

void wal__batch_encode(uint8_t *dst, const wal_batch *b) {
    assert(dst != NULL && b != NULL);
    assert(b->count >= 1 || (b->flags & WAL_BATCH_FLAG_OVERRIDE));
    assert(b->payload_bytes >= b->count * WAL_REC_HDR);
    kv_put_u32(dst + 8, WAL_BATCH_MAGIC);
    kv_put_u32(dst + 12, b->flags);
    kv_put_u64(dst + 16, b->seq);
    kv_put_u64(dst + 24, b->first);
    kv_put_u32(dst + 32, b->count);
    kv_put_u32(dst + 36, b->payload_bytes);
    kv_put_u64(dst + 40, b->payload_xxh3);
    kv_put_u64(dst, kv_xxh3(dst + 8, WAL_BATCH_HDR - 8));
}

int wal__batch_decode(const uint8_t *buf, size_t avail, wal_batch *b, const char **why) {
    assert(buf != NULL && b != NULL && why != NULL);
    if (avail < WAL_BATCH_HDR) {
        *why = "batch header cut short";
        return KV_ECORRUPT;
    }
    if (kv_get_u32(buf + 8) != WAL_BATCH_MAGIC) {
        *why = "no batch header (bad magic)";
        return KV_ECORRUPT;
    }
    if (kv_get_u64(buf) != kv_xxh3(buf + 8, WAL_BATCH_HDR - 8)) {
        *why = "batch header checksum mismatch";
        return KV_ECORRUPT;
    }
    *b = (wal_batch){.flags = kv_get_u32(buf + 12),
                     .seq = kv_get_u64(buf + 16),
                     .first = kv_get_u64(buf + 24),
                     .count = kv_get_u32(buf + 32),
                     .payload_bytes = kv_get_u32(buf + 36),
                     .payload_xxh3 = kv_get_u64(buf + 40)};
    if (b->payload_bytes > avail - WAL_BATCH_HDR) {
        *why = "batch runs past the end of the file";
        return KV_ECORRUPT;
    }
    return 0;
}

void wal__rec_encode(uint8_t *dst, const wal_entry *e) {
    assert(e->len <= KV_ENTRY_BYTES_MAX);
    assert(e->index > 0);
    kv_put_u32(dst + 8, e->len);
    dst[12] = e->type;
    dst[13] = dst[14] = dst[15] = 0;
    kv_put_u64(dst + 16, e->term);
    kv_put_u64(dst + 24, e->index);
    if (e->len > 0)
        memcpy(dst + WAL_REC_HDR, e->data, e->len);
    kv_put_u64(dst, kv_xxh3(dst + 8, WAL_REC_HDR - 8 + e->len));
}

int wal__rec_decode(const uint8_t *buf, size_t avail, wal_rec *r, const char **why) {
    assert(buf != NULL && r != NULL);
    if (avail < WAL_REC_HDR) {
        *why = "record header cut short";
        return KV_ECORRUPT;
    }
    r->len = kv_get_u32(buf + 8);
    r->type = buf[12];
    r->term = kv_get_u64(buf + 16);
    r->index = kv_get_u64(buf + 24);
    /* The decoder's limit is the append path's limit (etcd#14025). */
    if (r->len > KV_ENTRY_BYTES_MAX) {
        *why = "record length over KV_ENTRY_BYTES_MAX";
        return KV_ECORRUPT;
    }
    if (r->len > avail - WAL_REC_HDR) {
        *why = "record runs past the end of the file";
        return KV_ECORRUPT;
    }
    if (buf[13] != 0 || buf[14] != 0 || buf[15] != 0) {
        *why = "record header padding not zero";
        return KV_ECORRUPT;
    }
    if (kv_get_u64(buf) != kv_xxh3(buf + 8, WAL_REC_HDR - 8 + r->len)) {
        *why = "record checksum mismatch";
        return KV_ECORRUPT;
    }
    return 0;
}

int wal__seg_path(char *buf, size_t cap, const char *waldir, uint64_t seq, bool tmp) {
    assert(buf != NULL && waldir != NULL);
    int n = snprintf(buf, cap, "%s/%016" PRIx64 ".%s", waldir, seq, tmp ? "tmp" : "wal");
    return (n < 0 || (size_t)n >= cap) ? KV_EINVAL : 0;
}

int wal__ents_push(wal_scan *s, const wal_ent *e) {
    if (s->ents_n == s->ents_cap) {
        size_t cap = s->ents_cap ? 2 * s->ents_cap : 1024;
        wal_ent *v = realloc(s->ents, cap * sizeof *v);
        if (v == NULL)
            return KV_ENOMEM;
        s->ents = v;
        s->ents_cap = cap;
    }
    s->ents[s->ents_n++] = *e;
    assert(s->ents_n <= s->ents_cap);
    return 0;
}

void wal__scan_free(wal_scan *s) {
    for (size_t i = 0; i < s->segs_n; i++) {
        assert(s->segs[i]->file == NULL); /* closed by the owner first */
        free(s->segs[i]->path);
        free(s->segs[i]);
    }
    free(s->segs);
    free(s->ents);
    kv_fs_free_list(s->obsolete, s->obsolete_n);
    memset(s, 0, sizeof *s);
}

/* "%016x.wal" or "%016x.tmp": true with *seq and *tmp. */
static bool wal__parse_name(const char *name, uint64_t *seq, bool *tmp) {
    if (strlen(name) != 20 || name[16] != '.')
        return false;
    if (strcmp(name + 17, "wal") != 0 && strcmp(name + 17, "tmp") != 0)
        return false;
    uint64_t v = 0;
    for (int i = 0; i < 16; i++) {
        char c = name[i];
        int d = (c >= '0' && c <= '9') ? c - '0' : (c >= 'a' && c <= 'f') ? c - 'a' + 10 : -1;
        if (d < 0)
            return false;
        v = (v << 4) | (uint64_t)d;
    }
    *seq = v;
    *tmp = name[17] == 't';
    return true;
}

static int wal__push_str(char ***v, size_t *n, const char *s) {
    char **nv = realloc(*v, (*n + 1) * sizeof *nv);
    if (nv == NULL)
        return KV_ENOMEM;
    *v = nv;
    if ((nv[*n] = strdup(s)) == NULL)
        return KV_ENOMEM;
    (*n)++;
    return 0;
}

static int wal__list(kv_fs *fs, const char *waldir, kv_check_fn fn, void *arg, wal_scan *s) {
    char **names = NULL, path[WAL_PATH_BYTES_MAX];
    size_t count = 0;
    int rv = fs->ops->list(fs, waldir, &names, &count);
    if (rv == KV_EMISSING)
        wal__report(fn, arg, "MISSING", waldir, KV_CHECK_NO_OFFSET, 0, "no wal directory");
    if (rv != 0)
        return rv;
    if ((s->segs = calloc(count + 1, sizeof *s->segs)) == NULL)
        rv = KV_ENOMEM;
    for (size_t i = 0; rv == 0 && i < count; i++) {
        uint64_t seq = 0;
        bool tmp = false;
        if (!wal__parse_name(names[i], &seq, &tmp))
            continue; /* not ours */
        if ((rv = wal__seg_path(path, sizeof path, waldir, seq, tmp)) != 0)
            break;
        if (tmp) {
            rv = wal__push_str(&s->obsolete, &s->obsolete_n, path);
            continue;
        }
        wal_seg *sg = calloc(1, sizeof *sg);
        if (sg == NULL || (sg->path = strdup(path)) == NULL) {
            free(sg);
            rv = KV_ENOMEM;
            break;
        }
        sg->seq = seq;
        s->segs[s->segs_n++] = sg;
    }
    kv_fs_free_list(names, count);
    assert(rv != 0 || s->segs_n <= count);
    return rv;
}

/* Reads and checks one segment header into sg. */
static int wal__read_header(kv_fs *fs, wal_seg *sg, kv_check_fn fn, void *arg) {
    uint8_t h[WAL_SEGMENT_HEADER_BYTES];
    kv_file *f = NULL;
    size_t got = 0;
    int rv = fs->ops->open(fs, sg->path, KV_FS_READ, &f);
    if (rv == 0)
        rv = fs->ops->size(f, &sg->size);
    if (rv == 0)
        rv = fs->ops->pread(f, h, sizeof h, 0, &got);
    if (f != NULL)
        fs->ops->close(f);
    if (rv != 0)
        return rv;
    const char *why = NULL;
    char detail[128];
    if (sg->size == 0)
        why = "empty segment file";
    else if (got < sizeof h)
        why = "segment header cut short";
    else if (memcmp(h, wal__magic, 8) != 0)
        why = "not a kv WAL segment (bad magic)";
    else if (kv_get_u32(h + 8) != WAL_FORMAT_VERSION) {
        snprintf(detail, sizeof detail, "segment format version %" PRIu32 ", this build reads %u",
                 kv_get_u32(h + 8), WAL_FORMAT_VERSION);
        wal__report(fn, arg, "VERSION", sg->path, 8, 0, detail);
        return KV_EVERSION;
    } else if (kv_get_u64(h + 40) != kv_xxh3(h, 40))
        why = "segment header checksum mismatch";
    else if (kv_get_u64(h + 16) != sg->seq)
        why = "segment header sequence does not match the file name";
    else if (sg->size > WAL_SEGMENT_FILE_BYTES_MAX)
        why = "segment file larger than any segment";
    if (why != NULL) {
        wal__report(fn, arg, "CORRUPT", sg->path, 0, 0, why);
        return KV_ECORRUPT;
    }
    sg->alloc = sg->size;
    sg->flags = kv_get_u32(h + 12);
    sg->first_index = kv_get_u64(h + 24);
    sg->base_term = kv_get_u64(h + 32);
    return 0;
}

/* Checks every header; segments before the newest RESET become obsolete;
 * the rest must have consecutive sequence numbers. */
static int wal__headers(kv_fs *fs, const char *waldir, kv_check_fn fn, void *arg, wal_scan *s) {
    size_t start = 0;
    for (size_t i = 0; i < s->segs_n; i++) {
        int rv = wal__read_header(fs, s->segs[i], fn, arg);
        if (rv != 0)
            return rv;
        if (s->segs[i]->flags & WAL_FLAG_RESET)
            start = i;
    }
    for (size_t i = 0; i < start; i++) {
        int rv = wal__push_str(&s->obsolete, &s->obsolete_n, s->segs[i]->path);
        free(s->segs[i]->path);
        free(s->segs[i]);
        if (rv != 0)
            return rv;
    }
    memmove(s->segs, s->segs + start, (s->segs_n - start) * sizeof *s->segs);
    s->segs_n -= start;
    for (size_t i = 1; i < s->segs_n; i++) {
        if (s->segs[i]->seq == s->segs[i - 1]->seq + 1)
            continue;
        char path[WAL_PATH_BYTES_MAX];
        (void)wal__seg_path(path, sizeof path, waldir, s->segs[i - 1]->seq + 1, false);
        wal__report(fn, arg, "MISSING", path, KV_CHECK_NO_OFFSET, s->segs[i]->first_index,
                    "segment missing: gap in the segment sequence");
        return KV_ECORRUPT;
    }
    return 0;
}

/* True when a valid batch header of segment seq starts anywhere in buf
 * after off: something was written after the batch at off, so that batch
 * was synced (wal.h rule 3). The header checksum is 64 bits; a payload that
 * happens to hold a copy of such a header errs toward CORRUPT, never toward
 * cutting off synced data. */
static bool wal__batch_after(const uint8_t *buf, size_t size, size_t off, uint64_t seq) {
    assert(buf != NULL && off < size);
    uint8_t magic[4];
    kv_put_u32(magic, WAL_BATCH_MAGIC);
    for (size_t p = off + 1; p + WAL_BATCH_HDR <= size; p++) {
        if (memcmp(buf + p + 8, magic, 4) != 0)
            continue;
        const uint8_t *h = buf + p; /* its payload may be cut short: it was written */
        if (kv_get_u64(h) == kv_xxh3(h + 8, WAL_BATCH_HDR - 8) && kv_get_u64(h + 16) == seq)
            return true;
    }
    return false;
}

static bool wal__all_zero(const uint8_t *p, size_t len) {
    for (size_t i = 0; i < len; i++)
        if (p[i] != 0)
            return false;
    return true;
}

/* The index and term bookkeeping between segments. */
static int wal__seg_start(wal_scan *s, size_t i, kv_check_fn fn, void *arg) {
    wal_seg *sg = s->segs[i];
    if (i == 0) {
        s->first = sg->first_index;
        s->base_term = sg->base_term;
        if (sg->first_index > 0)
            return 0;
        wal__report(fn, arg, "CORRUPT", sg->path, 24, 0, "segment header first index is 0");
        return KV_ECORRUPT;
    }
    uint64_t exp = s->first + s->ents_n;
    char detail[128];
    if (sg->first_index != exp) {
        snprintf(detail, sizeof detail,
                 "index gap: segment starts at %" PRIu64 ", expected %" PRIu64, sg->first_index,
                 exp);
        wal__report(fn, arg, "MISSING", sg->path, 0, exp, detail);
        return KV_ECORRUPT;
    }
    uint64_t prev = s->ents_n ? s->ents[s->ents_n - 1].term : s->base_term;
    if (sg->base_term != prev) {
        wal__report(fn, arg, "CORRUPT", sg->path, 32, exp,
                    "segment header term of the previous entry disagrees with the log");
        return KV_ECORRUPT;
    }
    return 0;
}

/* Where the scan of one segment is, and what it found wrong. */
typedef struct wal_cursor {
    wal_scan *s;
    wal_seg *sg;
    const uint8_t *buf; /* the whole segment file */
    size_t size, off;   /* off: the batch being checked */
    const char *why;    /* a problem: why, where, the index expected there */
    uint64_t bad_off, bad_index;
} wal_cursor;

static int wal__bad(wal_cursor *c, uint64_t off, uint64_t index, const char *why) {
    c->why = why;
    c->bad_off = off;
    c->bad_index = index;
    return KV_ECORRUPT;
}

/* Term of entry index (the base term just before the first one). */
static uint64_t wal__term_before(const wal_scan *s, uint64_t first) {
    assert(first >= s->first && first - s->first <= s->ents_n);
    return first == s->first ? s->base_term : s->ents[first - 1 - s->first].term;
}

/* Checks the records of a whole batch (its checksums hold): consecutive
 * indexes from b->first, terms never decreasing, exactly its payload. */
static int wal__batch_records(wal_cursor *c, const wal_batch *b) {
    const uint8_t *buf = c->buf;
    size_t p = c->off + WAL_BATCH_HDR, end = p + b->payload_bytes;
    uint64_t term = wal__term_before(c->s, b->first);
    for (uint32_t i = 0; i < b->count; i++) {
        wal_rec r;
        const char *why = NULL;
        if (wal__rec_decode(buf + p, end - p, &r, &why) != 0)
            return wal__bad(c, p, b->first + i, why);
        if (r.index != b->first + i)
            return wal__bad(c, p, b->first + i, "record carries an unexpected index");
        if (r.term < term)
            return wal__bad(c, p, r.index, "record term below the term before it");
        term = r.term;
        p += WAL_REC_HDR + r.len;
    }
    if (p != end)
        return wal__bad(c, p, b->first + b->count, "batch payload longer than its records");
    return 0;
}

/* Checks the batch at c->off and adds its entries. KV_ECORRUPT with
 * c->why when it is wrong; *damaged tells a checksum failure (possibly a
 * torn write) from a whole batch that is wrong (never torn). */
static int wal__scan_batch(wal_cursor *c, bool *damaged, size_t *next) {
    wal_scan *s = c->s;
    wal_seg *sg = c->sg;
    uint64_t exp = s->first + s->ents_n;
    wal_batch b;
    const char *why = NULL;
    *damaged = true;
    if (wal__batch_decode(c->buf + c->off, c->size - c->off, &b, &why) != 0)
        return wal__bad(c, c->off, exp, why);
    const uint8_t *payload = c->buf + c->off + WAL_BATCH_HDR;
    if (kv_xxh3(payload, b.payload_bytes) != b.payload_xxh3)
        return wal__bad(c, c->off, exp, "batch payload checksum mismatch");
    *damaged = false;
    bool override = (b.flags & WAL_BATCH_FLAG_OVERRIDE) != 0;
    if (b.seq != sg->seq)
        return wal__bad(c, c->off, exp, "batch of another segment");
    if ((b.count == 0 && !override) || (b.flags & ~WAL_BATCH_FLAG_OVERRIDE) != 0)
        return wal__bad(c, c->off, exp, "batch header with no records or unknown flags");
    if (override ? (b.first < sg->first_index || b.first > exp) : b.first != exp)
        return wal__bad(c, c->off, exp, "batch starts at an unexpected index");
    int rv = wal__batch_records(c, &b);
    if (rv != 0)
        return rv;
    s->ents_n = (size_t)(b.first - s->first); /* an override drops the rest */
    size_t p = c->off + WAL_BATCH_HDR;
    for (uint32_t i = 0; rv == 0 && i < b.count; i++) {
        uint32_t len = kv_get_u32(c->buf + p + 8);
        wal_ent e = {.term = kv_get_u64(c->buf + p + 16),
                     .off = p,
                     .seg = sg,
                     .len = len,
                     .type = c->buf[p + 12]};
        rv = wal__ents_push(s, &e);
        p += WAL_REC_HDR + len;
    }
    *next = p;
    assert(rv != 0 || s->first + s->ents_n == b.first + b.count);
    return rv;
}

/* Scans the batches of segment i. */
static int wal__scan_seg(kv_fs *fs, wal_scan *s, size_t i, kv_check_fn fn, void *arg) {
    assert(i < s->segs_n);
    wal_seg *sg = s->segs[i];
    bool last = i + 1 == s->segs_n;
    int rv = wal__seg_start(s, i, fn, arg);
    void *data = NULL;
    size_t size = 0;
    if (rv == 0)
        rv = kv_fs_read_all(fs, sg->path, WAL_SEGMENT_FILE_BYTES_MAX, &data, &size);
    if (rv != 0)
        return rv;
    wal_cursor c = {.s = s, .sg = sg, .buf = data, .size = size, .off = WAL_SEGMENT_HEADER_BYTES};
    while (c.off < size && !wal__all_zero(c.buf + c.off, size - c.off)) {
        bool damaged = false;
        size_t next = 0;
        rv = wal__scan_batch(&c, &damaged, &next);
        if (rv == KV_ENOMEM)
            break;
        if (rv == 0) {
            c.off = next;
            continue;
        }
        if (!damaged || !last || wal__batch_after(c.buf, size, c.off, sg->seq)) {
            wal__report(fn, arg, "CORRUPT", sg->path, c.bad_off, c.bad_index, c.why);
            break;
        }
        wal__report(fn, arg, "TORN", sg->path, c.bad_off, c.bad_index, c.why);
        s->torn = true;
        s->torn_off = c.off;
        rv = 0;
        break;
    }
    free(data);
    assert(c.off <= size || rv != 0);
    sg->size = c.off;
    return rv;
}

int wal__scan(kv_fs *fs, const char *dir, kv_check_fn fn, void *arg, wal_scan *s) {
    assert(fs != NULL && dir != NULL);
    memset(s, 0, sizeof *s);
    char waldir[WAL_PATH_BYTES_MAX];
    int n = snprintf(waldir, sizeof waldir, "%s/wal", dir);
    if (n < 0 || (size_t)n >= sizeof waldir)
        return KV_EINVAL;
    int rv = wal__list(fs, waldir, fn, arg, s);
    if (rv == 0 && s->segs_n > WAL_SEGMENTS_MAX)
        rv = KV_ETOOBIG;
    if (rv == 0)
        rv = wal__headers(fs, waldir, fn, arg, s);
    for (size_t i = 0; rv == 0 && i < s->segs_n; i++)
        rv = wal__scan_seg(fs, s, i, fn, arg);
    assert(rv != 0 || !s->torn || s->segs_n > 0);
    return rv;
}

int wal_check(kv_fs *fs, const char *dir, kv_check_fn fn, void *arg, uint64_t *last_term) {
    wal_scan s;
    int rv = wal__scan(fs, dir, fn, arg, &s);
    if (rv == 0 && last_term != NULL)
        *last_term = s.ents_n ? s.ents[s.ents_n - 1].term : s.base_term;
    wal__scan_free(&s);
    return rv;
}
