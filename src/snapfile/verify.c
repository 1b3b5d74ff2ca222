/* snap_file_verify: the offline check of a snapshot file (snapfile.h). */
#include "snapfile/snapfile.h"

#include "common/checksum.h"
#include "kv/errors.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

typedef struct verify_state {
    snap_manifest mf;
    bool have_manifest;
    uint8_t *seen; /* one byte per chunk */
    const char *why;
} verify_state;

static int on_manifest(void *arg, const uint8_t *m, size_t len) {
    verify_state *v = arg;
    int rc = snap_manifest_decode(m, len, &v->mf, &v->why);
    if (rc != 0)
        return rc;
    v->have_manifest = true;
    uint64_t n = snap_manifest_chunks_count(&v->mf);
    v->seen = calloc(n ? n : 1, 1);
    if (v->seen == NULL) {
        v->why = "out of memory";
        return KV_ENOMEM;
    }
    return 0;
}

static int on_chunk(void *arg, uint32_t k, const uint8_t *data, uint32_t len, uint64_t xxh3) {
    verify_state *v = arg;
    if (k >= snap_manifest_chunks_count(&v->mf)) {
        v->why = "chunk number past the manifest's last";
        return KV_ECORRUPT;
    }
    if (v->seen[k]) {
        v->why = "chunk appears twice";
        return KV_ECORRUPT;
    }
    snap_chunk ch;
    snap_manifest_chunk_locate(&v->mf, k, &ch);
    if (ch.len != len || ch.xxh3 != xxh3 || kv_xxh3(data, len) != xxh3) {
        v->why = "chunk does not match the manifest (checksum or length)";
        return KV_ECORRUPT;
    }
    v->seen[k] = 1;
    return 0;
}

static int fail(char *detail, size_t cap, int rc, const char *path, uint64_t off, const char *fmt,
                ...) {
    int n = snprintf(detail, cap, "CORRUPT %s offset %" PRIu64 ": ", path, off);
    va_list ap;
    va_start(ap, fmt);
    if (n >= 0 && (size_t)n < cap)
        vsnprintf(detail + n, cap - (size_t)n, fmt, ap);
    va_end(ap);
    return rc;
}

/* Hashes the stream_len bytes after the header and reads the trailer.
 * Returns 0 (*sum, *trailer set), KV_ENOMEM, or KV_ECORRUPT with *at the
 * offset where the file is short or has bytes after the trailer, and *why. */
static int stream_sum(FILE *f, const snapfile_info *info, uint64_t *sum, uint64_t *trailer,
                      uint64_t *at, const char **why) {
    kv_xxh3_state h;
    uint8_t *buf = malloc(1 << 16);
    if (buf == NULL || kv_xxh3_init(&h) != 0) {
        free(buf);
        return KV_ENOMEM;
    }
    uint64_t left = info->stream_len;
    while (left > 0) {
        size_t want = left < (1u << 16) ? (size_t)left : (1u << 16);
        size_t got = fread(buf, 1, want, f);
        if (got == 0)
            break;
        kv_xxh3_update(&h, buf, got);
        left -= got;
    }
    uint8_t tr[8];
    bool short_file = left > 0 || fread(tr, 1, 8, f) != 8;
    bool extra = !short_file && fgetc(f) != EOF;
    *sum = kv_xxh3_digest(&h);
    kv_xxh3_free(&h);
    free(buf);
    *at = SNAPFILE_HEADER_BYTES + info->stream_len - left;
    if (short_file || extra) {
        *why = short_file ? "file ends early (truncated)" : "bytes after the trailer";
        return KV_ECORRUPT;
    }
    *trailer = kv_get_u64(tr);
    return 0;
}

int snap_file_verify(const char *path, snapfile_info *info, char *detail, size_t cap) {
    snapfile_info dummy;
    if (info == NULL)
        info = &dummy;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        snprintf(detail, cap, "MISSING %s: cannot open", path);
        return KV_EMISSING;
    }
    uint8_t hdr[SNAPFILE_HEADER_BYTES];
    int rc = fread(hdr, 1, sizeof hdr, f) == sizeof hdr ? snapfile_header_decode(hdr, info)
                                                         : KV_ECORRUPT;
    if (rc != 0) {
        fclose(f);
        return fail(detail, cap, rc, path, 0,
                    rc == KV_EVERSION ? "another snapshot file version"
                                      : "not a kv snapshot file (header magic or checksum)");
    }
    /* the whole stream against the trailer first */
    uint64_t sum = 0, trailer = 0, at = 0;
    const char *why = "";
    rc = stream_sum(f, info, &sum, &trailer, &at, &why);
    if (rc == KV_ENOMEM) {
        fclose(f);
        snprintf(detail, cap, "NOMEM %s: out of memory verifying it", path);
        return rc;
    }
    if (rc != 0) {
        fclose(f);
        return fail(detail, cap, rc, path, at, "%s", why);
    }
    if (sum != trailer) {
        /* locate the damage: walk the records, which carry their own sums */
        verify_state v = {0};
        uint64_t bad = 0;
        fseeko(f, SNAPFILE_HEADER_BYTES, SEEK_SET);
        rc = snapstream_walk(f, info->stream_len, on_manifest, on_chunk, &v, &bad);
        if (v.have_manifest)
            snap_manifest_free(&v.mf);
        free(v.seen);
        fclose(f);
        return fail(detail, cap, KV_ECORRUPT, path, SNAPFILE_HEADER_BYTES + bad,
                    "checksum of the snapshot stream does not match%s%s",
                    rc != 0 ? ": " : "", rc != 0 ? (v.why ? v.why : "bad record") : "");
    }
    verify_state v = {0};
    uint64_t bad = 0;
    fseeko(f, SNAPFILE_HEADER_BYTES, SEEK_SET);
    rc = snapstream_walk(f, info->stream_len, on_manifest, on_chunk, &v, &bad);
    uint64_t missing = 0;
    if (rc == 0)
        for (uint64_t k = 0; k < snap_manifest_chunks_count(&v.mf); k++)
            missing += v.seen[k] == 0;
    if (rc == 0 && (v.mf.m->index != info->index || v.mf.m->term != info->term)) {
        rc = KV_ECORRUPT;
        v.why = "header and manifest disagree on index/term";
    }
    fclose(f);
    if (v.have_manifest)
        snap_manifest_free(&v.mf);
    free(v.seen);
    if (rc != 0)
        return fail(detail, cap, rc, path, SNAPFILE_HEADER_BYTES + bad, "%s",
                    v.why ? v.why : "malformed record");
    if (missing > 0)
        return fail(detail, cap, KV_ECORRUPT, path, SNAPFILE_HEADER_BYTES + info->stream_len,
                    "%" PRIu64 " chunks of the manifest are missing", missing);
    detail[0] = 0;
    return 0;
}
