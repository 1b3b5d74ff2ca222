/*
 * The WAL's on-disk format and the scan shared by wal_open and wal_check:
 * torn tail versus corruption (pitfalls.md: a bad record with no valid
 * record after it is a torn tail; with valid records after it, corruption,
 * never truncated).
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

/* True when a record with a valid checksum at a plausible index (>= exp)
 * starts anywhere in buf after off. */
static bool wal__valid_after(const uint8_t *buf, size_t size, size_t off, uint64_t exp) {
    assert(buf != NULL && off < size);
    uint64_t span = (size - off) / WAL_REC_HDR + 1;
    for (size_t p = off + 1; p + WAL_REC_HDR <= size; p++) {
        const uint8_t *r = buf + p;
        if (r[13] | r[14] | r[15])
            continue;
        uint32_t len = kv_get_u32(r + 8);
        uint64_t index = kv_get_u64(r + 24);
        if (len > KV_ENTRY_BYTES_MAX || len > size - p - WAL_REC_HDR)
            continue;
        if (index < exp || index - exp > span)
            continue;
        if (kv_get_u64(r) == kv_xxh3(r + 8, WAL_REC_HDR - 8 + len))
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

/* Scans the records of segment i. */
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
    const uint8_t *buf = data;
    size_t off = WAL_SEGMENT_HEADER_BYTES;
    while (rv == 0 && off < size) {
        uint64_t exp = s->first + s->ents_n;
        if (wal__all_zero(buf + off, size - off))
            break; /* preallocated space: the end of the records */
        wal_rec r;
        const char *why = NULL;
        int bad = wal__rec_decode(buf + off, size - off, &r, &why);
        if (bad == 0 && r.index != exp) {
            bad = KV_ECORRUPT;
            why = "record carries an unexpected index";
        }
        if (bad == 0) {
            wal_ent e = {.term = r.term, .off = off, .seg = sg, .len = r.len, .type = r.type};
            rv = wal__ents_push(s, &e);
            off += WAL_REC_HDR + r.len;
            continue;
        }
        if (!last || wal__valid_after(buf, size, off, exp)) {
            wal__report(fn, arg, "CORRUPT", sg->path, off, exp, why);
            rv = KV_ECORRUPT;
            break;
        }
        wal__report(fn, arg, "TORN", sg->path, off, exp, why);
        s->torn = true;
        s->torn_off = off;
        break;
    }
    free(data);
    assert(off <= size || rv != 0);
    sg->size = off;
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

int wal_check(kv_fs *fs, const char *dir, kv_check_fn fn, void *arg) {
    wal_scan s;
    int rv = wal__scan(fs, dir, fn, arg, &s);
    wal__scan_free(&s);
    return rv;
}
