/* Fuzz target: a snapshot stream as a follower receives it in Raft
 * SNAPSHOT chunks and installs it (src/server/server_snap.c
 * server_stream_install): snapstream_walk over the bytes, the manifest to
 * snap_recv_begin, each chunk record to snap_recv_chunk, then
 * snap_recv_finish, on an in-memory file system (fs_fake.h).
 * Input: a flags byte, then the stream (snapfile.h: u32 manifest length,
 * the manifest with its framing, then u32 k | u32 len | u64 xxh3 | data
 * records). Flag bit 0 rewrites the checksums (the manifest framing's
 * length and xxh3, each chunk record's xxh3) so the fuzzer reaches what
 * they guard. */
#include "fuzz.h"

#include "common/checksum.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "kv/limits.h"
#include "snapfile/snapfile.h"
#include "storage/fs_fake.h"
#include "storage/snapshot.h"

#include <string.h>

static void fix_manifest(uint8_t *m, size_t len) {
    if (len < SNAP_HEADER_BYTES)
        return;
    kv_put_u32(m + 8, (uint32_t)(len - SNAP_HEADER_BYTES));
    kv_xxh3_state h;
    if (kv_xxh3_init(&h) != 0)
        return;
    kv_xxh3_update(&h, m, 16);
    kv_xxh3_update(&h, m + SNAP_HEADER_BYTES, len - SNAP_HEADER_BYTES);
    kv_put_u64(m + 16, kv_xxh3_digest(&h));
    kv_xxh3_free(&h);
}

static void fix_checksums(uint8_t *s, size_t len) {
    if (len < 4)
        return;
    uint64_t mlen = kv_get_u32(s);
    if (mlen > len - 4)
        return;
    fix_manifest(s + 4, (size_t)mlen);
    size_t off = 4 + (size_t)mlen;
    while (len - off >= SNAPSTREAM_CHUNK_HEADER_BYTES) {
        uint32_t clen = kv_get_u32(s + off + 4);
        if (clen > len - off - SNAPSTREAM_CHUNK_HEADER_BYTES)
            break;
        kv_put_u64(s + off + 8, kv_xxh3(s + off + SNAPSTREAM_CHUNK_HEADER_BYTES, clen));
        off += SNAPSTREAM_CHUNK_HEADER_BYTES + clen;
    }
}

typedef struct walk {
    kv_fs *fs;
    snap_recv *r;
} walk;

static int on_manifest(void *arg, const uint8_t *m, size_t len) {
    walk *w = arg;
    FUZZ_CHECK(w->r == NULL);
    return snap_recv_begin(w->fs, "/snap", m, len, &w->r);
}

static int on_chunk(void *arg, uint32_t k, const uint8_t *data, uint32_t len, uint64_t xxh3) {
    walk *w = arg;
    FUZZ_CHECK(w->r != NULL && len <= KV_SNAPSHOT_CHUNK_BYTES);
    int rc = snap_recv_chunk(w->r, k, data, len, xxh3);
    return rc == KV_ECORRUPT || rc == KV_EINVAL ? 0 : rc; /* the leader resends */
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int quiet;
    if (!quiet++)
        kv_log_set_level((enum kv_log_level)(KV_LOG_ERROR + 1));
    if (size < 1)
        return 0;
    uint8_t *s = malloc(size);
    FUZZ_CHECK(s != NULL);
    memcpy(s, data + 1, size - 1);
    if (data[0] & 1)
        fix_checksums(s, size - 1);
    FILE *f = fmemopen(s, size - 1 > 0 ? size - 1 : 1, "rb");
    fsf *ff = fsf_new(1);
    FUZZ_CHECK(f != NULL && ff != NULL);
    walk w = {.fs = fsf_fs(ff)};
    uint64_t bad = 0;
    int rc = snapstream_walk(f, size - 1, on_manifest, on_chunk, &w, &bad);
    FUZZ_CHECK(rc <= 0);
    FUZZ_DEBUG("snapchunk: walk %d (bad offset %llu)\n", rc, (unsigned long long)bad);
    if (rc == 0 && w.r != NULL) {
        snap_meta meta;
        rc = snap_recv_finish(w.r, &meta);
        FUZZ_DEBUG("snapchunk: finish %d\n", rc);
        if (rc != 0)
            snap_recv_abort(w.r);
    } else {
        FUZZ_CHECK(rc != 0 || w.r == NULL);
        snap_recv_abort(w.r);
    }
    fclose(f);
    fsf_free(ff);
    free(s);
    return 0;
}
