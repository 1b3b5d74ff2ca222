/* Snapshot manifests on disk: reading MANIFEST.kv, file hashing and
 * directory helpers (snap_internal.h). The format itself (framing,
 * decoding, the chunk map) is src/snapfile/manifest.c. */
#include "storage/snap_internal.h"

#include "common/checksum.h"
#include "kv/errors.h"
#include "kv/limits.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

bool snap__parse_name(const char *name, uint64_t *index, uint64_t *term) {
    assert(name != NULL && index != NULL && term != NULL);
    if (strlen(name) != 33 || name[16] != '-')
        return false;
    for (int i = 0; i < 33; i++) {
        char c = name[i];
        bool hex = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
        if (i != 16 && !hex)
            return false;
    }
    *index = strtoull(name, NULL, 16);
    *term = strtoull(name + 17, NULL, 16);
    return true;
}

int snap__list_dir(kv_fs *fs, const char *dir, char ***names, size_t *count) {
    assert(names != NULL && count != NULL);
    *names = NULL;
    *count = 0;
    int rv = fs->ops->list(fs, dir, names, count);
    return rv == KV_EMISSING ? 0 : rv;
}

int snap__manifest_read(kv_fs *fs, const char *dir, snap_manifest *out, const char **why) {
    char path[SNAP_PATH_BYTES_MAX];
    int rv = kv_fs_join(path, SNAP_PATH_BYTES_MAX, dir, SNAP_MANIFEST_NAME);
    if (rv != 0)
        return rv;
    void *buf = NULL;
    size_t len = 0;
    rv = kv_fs_read_all(fs, path, SNAP_HEADER_BYTES + KV_SNAPSHOT_MANIFEST_BYTES_MAX, &buf, &len);
    *why = rv == KV_EMISSING ? "manifest missing" : "manifest unreadable or too big";
    if (rv == KV_ETOOBIG)
        rv = KV_ECORRUPT;
    if (rv != 0)
        return rv;
    rv = snap_manifest_decode(buf, len, out, why);
    free(buf);
    return rv;
}

/* Grows *v to hold n + 1 hashes. */
static int snap__push(uint64_t **v, size_t n, uint64_t x) {
    if ((n & (n - 1)) == 0) { /* n is 0 or a power of two: double */
        uint64_t *nv = realloc(*v, (n ? 2 * n : 1) * sizeof **v);
        if (nv == NULL)
            return KV_ENOMEM;
        *v = nv;
    }
    (*v)[n] = x;
    return 0;
}

int snap__hash_file(kv_fs *fs, const char *path, uint32_t chunk_bytes, bool sync, uint64_t *size,
                    uint64_t *xxh3, uint64_t **chunks, size_t *chunks_count) {
    assert(chunk_bytes >= 1 && chunk_bytes <= KV_SNAPSHOT_CHUNK_BYTES);
    kv_file *f = NULL;
    int rv = fs->ops->open(fs, path, sync ? KV_FS_WRITE : KV_FS_READ, &f);
    if (rv != 0)
        return rv;
    uint8_t *buf = malloc(chunk_bytes);
    kv_xxh3_state h = {0};
    rv = buf == NULL ? KV_ENOMEM : kv_xxh3_init(&h);
    uint64_t off = 0, *v = NULL;
    size_t n = 0, got = 0;
    while (rv == 0) {
        rv = fs->ops->pread(f, buf, chunk_bytes, off, &got);
        if (rv != 0 || got == 0)
            break;
        kv_xxh3_update(&h, buf, got);
        rv = snap__push(&v, n, kv_xxh3(buf, got));
        n += rv == 0;
        off += got;
    }
    if (rv == 0 && sync)
        rv = fs->ops->sync(f);
    fs->ops->close(f);
    free(buf);
    if (rv == 0) {
        *size = off;
        *xxh3 = kv_xxh3_digest(&h);
        *chunks = v;
        *chunks_count = n;
        assert(n == (off + chunk_bytes - 1) / chunk_bytes);
    } else {
        free(v);
    }
    if (h.impl != NULL)
        kv_xxh3_free(&h);
    return rv;
}
