/* Snapshot manifests: framing, decoding and the chunk map (snapfile.h). */
#include "snapfile/snapfile.h"

#include "common/checksum.h"
#include "kv/errors.h"
#include "kv/limits.h"

#include <assert.h>
#include <stdlib.h>
#include <string.h>

static const char *snapfile__check_files(const Kv__SnapshotManifest *m) {
    if (m->chunk_bytes < 1 || m->chunk_bytes > KV_SNAPSHOT_CHUNK_BYTES)
        return "chunk size out of range";
    if (m->n_files > KV_SNAPSHOT_FILES_MAX)
        return "too many files";
    for (size_t i = 0; i < m->n_files; i++) {
        const Kv__SnapshotManifest__File *f = m->files[i];
        const char *n = f->name;
        if (n == NULL || n[0] == '\0' || strchr(n, '/') != NULL || strcmp(n, ".") == 0 ||
            strcmp(n, "..") == 0 || strcmp(n, SNAP_MANIFEST_NAME) == 0)
            return "bad file name";
        if (i > 0 && strcmp(m->files[i - 1]->name, n) >= 0)
            return "file names not sorted or repeated";
        /* Not (size + chunk_bytes - 1) / chunk_bytes: size comes off the
         * disk or the wire and that sum wraps near UINT64_MAX. */
        uint64_t chunks = f->size / m->chunk_bytes + (f->size % m->chunk_bytes != 0);
        if (f->n_chunk_xxh3 != chunks)
            return "chunk hashes do not match the file size";
    }
    return NULL;
}

int snap_manifest_decode(const uint8_t *buf, size_t len, snap_manifest *out, const char **why) {
    assert(buf != NULL || len == 0);
    memset(out, 0, sizeof *out);
    *why = NULL;
    if (len > SNAP_HEADER_BYTES + KV_SNAPSHOT_MANIFEST_BYTES_MAX)
        *why = "manifest over its size limit";
    else if (len < SNAP_HEADER_BYTES || kv_get_u32(buf) != SNAP_MAGIC)
        *why = "manifest too short or bad magic";
    else if (kv_get_u32(buf + 8) != len - SNAP_HEADER_BYTES || kv_get_u32(buf + 12) != 0)
        *why = "manifest length differs from its header";
    if (*why != NULL)
        return KV_ECORRUPT;
    kv_xxh3_state h;
    if (kv_xxh3_init(&h) != 0)
        return KV_ENOMEM;
    kv_xxh3_update(&h, buf, 16);
    kv_xxh3_update(&h, buf + SNAP_HEADER_BYTES, len - SNAP_HEADER_BYTES);
    uint64_t sum = kv_xxh3_digest(&h);
    kv_xxh3_free(&h);
    if (sum != kv_get_u64(buf + 16)) {
        *why = "manifest checksum mismatch";
        return KV_ECORRUPT;
    }
    if (kv_get_u32(buf + 4) != SNAP_VERSION) {
        *why = "unknown manifest version";
        return KV_EVERSION;
    }
    out->m = kv__snapshot_manifest__unpack(NULL, len - SNAP_HEADER_BYTES, buf + SNAP_HEADER_BYTES);
    if (out->m == NULL)
        *why = "manifest does not decode";
    else if (out->m->format != SNAP_FORMAT)
        *why = "unknown manifest format";
    else
        *why = snapfile__check_files(out->m);
    out->raw = malloc(len);
    out->first_chunk = out->m ? calloc(out->m->n_files + 1, sizeof(uint64_t)) : NULL;
    if (*why == NULL && (out->raw == NULL || out->first_chunk == NULL))
        *why = "out of memory";
    if (*why != NULL) {
        int rv = KV_ECORRUPT;
        if (out->m != NULL && out->m->format != SNAP_FORMAT)
            rv = KV_EVERSION;
        if (strcmp(*why, "out of memory") == 0)
            rv = KV_ENOMEM;
        snap_manifest_free(out);
        return rv;
    }
    memcpy(out->raw, buf, len);
    out->raw_len = len;
    for (size_t i = 0; i < out->m->n_files; i++)
        out->first_chunk[i + 1] = out->first_chunk[i] + out->m->files[i]->n_chunk_xxh3;
    assert(out->first_chunk[out->m->n_files] == snap_manifest_chunks_count(out));
    return 0;
}

void snap_manifest_free(snap_manifest *sm) {
    if (sm->m != NULL)
        kv__snapshot_manifest__free_unpacked(sm->m, NULL);
    free(sm->raw);
    free(sm->first_chunk);
    sm->m = NULL;
    sm->raw = NULL;
    sm->first_chunk = NULL;
}

int snap_manifest_encode(const Kv__SnapshotManifest *m, uint8_t **out, size_t *len) {
    assert(m != NULL && out != NULL);
    size_t body = kv__snapshot_manifest__get_packed_size(m);
    if (body > KV_SNAPSHOT_MANIFEST_BYTES_MAX)
        return KV_ETOOBIG;
    uint8_t *buf = malloc(SNAP_HEADER_BYTES + body);
    if (buf == NULL)
        return KV_ENOMEM;
    size_t packed = kv__snapshot_manifest__pack(m, buf + SNAP_HEADER_BYTES);
    assert(packed == body);
    kv_put_u32(buf, SNAP_MAGIC);
    kv_put_u32(buf + 4, SNAP_VERSION);
    kv_put_u32(buf + 8, (uint32_t)body);
    kv_put_u32(buf + 12, 0);
    kv_xxh3_state h;
    if (kv_xxh3_init(&h) != 0) {
        free(buf);
        return KV_ENOMEM;
    }
    kv_xxh3_update(&h, buf, 16);
    kv_xxh3_update(&h, buf + SNAP_HEADER_BYTES, body);
    kv_put_u64(buf + 16, kv_xxh3_digest(&h));
    kv_xxh3_free(&h);
    *out = buf;
    *len = SNAP_HEADER_BYTES + body;
    return 0;
}

uint64_t snap_manifest_chunks_count(const snap_manifest *sm) {
    assert(sm->m != NULL && sm->first_chunk != NULL);
    return sm->first_chunk[sm->m->n_files];
}

void snap_manifest_chunk_locate(const snap_manifest *sm, uint64_t k, snap_chunk *out) {
    assert(k < snap_manifest_chunks_count(sm));
    size_t lo = 0, hi = sm->m->n_files; /* first_chunk[lo] <= k < first_chunk[hi] */
    while (hi - lo > 1) {
        size_t mid = lo + (hi - lo) / 2;
        if (sm->first_chunk[mid] <= k)
            lo = mid;
        else
            hi = mid;
    }
    const Kv__SnapshotManifest__File *f = sm->m->files[lo];
    uint64_t i = k - sm->first_chunk[lo];
    assert(i < f->n_chunk_xxh3);
    out->file = (uint32_t)lo;
    out->offset = i * sm->m->chunk_bytes;
    uint64_t left = f->size - out->offset;
    out->len = (uint32_t)(left < sm->m->chunk_bytes ? left : sm->m->chunk_bytes);
    out->xxh3 = f->chunk_xxh3[i];
}
