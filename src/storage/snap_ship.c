/* Shipping snapshots by chunks (snapshot.h): the sender's reader and the
 * receiver. A chunk is checked against the manifest on both sides; the
 * receiver installs a snapshot only when every chunk is in and the whole
 * manifest checks (docs/rules.md "a snapshot in flight pins the log"). */
#include "storage/snap_internal.h"

#include "common/checksum.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "kv/limits.h"

#include <assert.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- sender ------------------------------------------------------------- */

struct snap_reader {
    kv_fs *fs;
    char path[SNAP_PATH_BYTES_MAX];
    snap_manifest sm;
};

int snap_reader_open(kv_fs *fs, const char *path, snap_reader **out) {
    assert(fs != NULL && path != NULL && out != NULL);
    snap_reader *r = calloc(1, sizeof *r);
    if (r == NULL)
        return KV_ENOMEM;
    r->fs = fs;
    snprintf(r->path, sizeof r->path, "%s", path);
    const char *why = NULL;
    int rv = snap__manifest_read(fs, path, &r->sm, &why);
    if (rv != 0) {
        KV_LOGE(kv_errword(rv), "snapshot %s: %s", path, why ? why : "manifest unreadable");
        free(r);
        return rv;
    }
    assert(r->sm.raw != NULL);
    *out = r;
    return 0;
}

void snap_reader_close(snap_reader *r) {
    if (r == NULL)
        return;
    snap_manifest_free(&r->sm);
    free(r);
}

void snap_reader_manifest(const snap_reader *r, const uint8_t **buf, size_t *len) {
    assert(r != NULL && buf != NULL && len != NULL);
    *buf = r->sm.raw;
    *len = r->sm.raw_len;
}

uint64_t snap_reader_chunks_count(const snap_reader *r) {
    assert(r != NULL);
    return snap_manifest_chunks_count(&r->sm);
}

const char *snap_reader_file_name(const snap_reader *r, uint32_t file) {
    assert(r != NULL && r->sm.m != NULL);
    return file < r->sm.m->n_files ? r->sm.m->files[file]->name : "?";
}

int snap_reader_chunk(const snap_reader *r, uint64_t k, snap_chunk *out) {
    assert(r != NULL && out != NULL);
    if (k >= snap_manifest_chunks_count(&r->sm))
        return KV_EINVAL;
    snap_manifest_chunk_locate(&r->sm, k, out);
    return 0;
}

int snap_reader_read(snap_reader *r, uint64_t k, void *buf, size_t cap, size_t *len,
                     uint64_t *xxh3) {
    snap_chunk c;
    int rv = snap_reader_chunk(r, k, &c);
    if (rv != 0)
        return rv;
    if (cap < c.len)
        return KV_EINVAL;
    char path[SNAP_PATH_BYTES_MAX];
    rv = kv_fs_join(path, SNAP_PATH_BYTES_MAX, r->path, r->sm.m->files[c.file]->name);
    kv_file *f = NULL;
    if (rv == 0)
        rv = r->fs->ops->open(r->fs, path, KV_FS_READ, &f);
    size_t got = 0;
    if (rv == 0) {
        rv = r->fs->ops->pread(f, buf, c.len, c.offset, &got);
        r->fs->ops->close(f);
    }
    if (rv != 0)
        return rv;
    if (got != c.len || kv_xxh3(buf, got) != c.xxh3) {
        KV_LOGE("CORRUPT",
                "snapshot file %s offset %" PRIu64 ": chunk %" PRIu64
                " no longer matches the manifest",
                path, c.offset, k);
        return KV_ECORRUPT;
    }
    *len = got;
    *xxh3 = c.xxh3;
    return 0;
}

/* ---- receiver ----------------------------------------------------------- */

struct snap_recv {
    kv_fs *fs;
    char snap_dir[SNAP_PATH_BYTES_MAX];
    char tmp[SNAP_PATH_BYTES_MAX];
    snap_manifest sm;
    uint8_t *have; /* one byte per chunk: received */
    uint64_t missing_count;
    int failed; /* sticky: a write or sync failed, never retried (fsyncgate) */
};

/* Creates every file of the manifest, empty, in r->tmp. */
static int snap__recv_files(snap_recv *r) {
    int rv = kv_fs_rmtree(r->fs, r->tmp);
    if (rv == 0)
        rv = r->fs->ops->mkdir(r->fs, r->tmp);
    char path[SNAP_PATH_BYTES_MAX];
    for (size_t i = 0; i < r->sm.m->n_files && rv == 0; i++) {
        rv = kv_fs_join(path, SNAP_PATH_BYTES_MAX, r->tmp, r->sm.m->files[i]->name);
        kv_file *f = NULL;
        if (rv == 0)
            rv = r->fs->ops->open(r->fs, path, KV_FS_CREATE | KV_FS_EXCL, &f);
        if (rv == 0)
            r->fs->ops->close(f);
    }
    return rv;
}

int snap_recv_begin(kv_fs *fs, const char *snap_dir, const uint8_t *manifest, size_t len,
                    snap_recv **out) {
    assert(fs != NULL && snap_dir != NULL && out != NULL);
    snap_recv *r = calloc(1, sizeof *r);
    if (r == NULL)
        return KV_ENOMEM;
    r->fs = fs;
    const char *why = NULL;
    int rv = snap_manifest_decode(manifest, len, &r->sm, &why);
    if (rv != 0) {
        KV_LOGE(kv_errword(rv), "snapshot receive: manifest refused: %s", why ? why : "");
        free(r);
        return rv;
    }
    uint64_t chunks = snap_manifest_chunks_count(&r->sm);
    r->have = calloc(chunks ? chunks : 1, 1);
    r->missing_count = chunks;
    int n = snprintf(r->tmp, sizeof r->tmp, "%s/tmp-recv-%016" PRIx64 "-%016" PRIx64, snap_dir,
                     r->sm.m->index, r->sm.m->term);
    snprintf(r->snap_dir, sizeof r->snap_dir, "%s", snap_dir);
    rv = r->have == NULL ? KV_ENOMEM : n + 1 >= (int)sizeof r->tmp ? KV_EINVAL : 0;
    /* snap_dir's own name must be durable before a snapshot is installed
     * in it: a follower's first snapshot creates it (etcd#14098). */
    if (rv == 0 && (rv = fs->ops->mkdir(fs, snap_dir)) == 0)
        rv = kv_fs_sync_parent(fs, snap_dir);
    if (rv == 0)
        rv = snap__recv_files(r);
    if (rv != 0) {
        snap_recv_abort(r);
        return rv;
    }
    assert(r->missing_count == chunks);
    *out = r;
    return 0;
}

int snap_recv_chunk(snap_recv *r, uint64_t k, const void *data, size_t len, uint64_t xxh3) {
    assert(r != NULL && (data != NULL || len == 0));
    if (k >= snap_manifest_chunks_count(&r->sm))
        return KV_EINVAL;
    snap_chunk c;
    snap_manifest_chunk_locate(&r->sm, k, &c);
    if (len != c.len || xxh3 != c.xxh3 || kv_xxh3(data, len) != c.xxh3) {
        KV_LOGW("CORRUPT", "snapshot receive %s: chunk %" PRIu64 " refused: checksum or length",
                r->tmp, k);
        return KV_ECORRUPT; /* nothing written: send it again */
    }
    if (r->failed != 0)
        return r->failed;
    if (r->have[k])
        return 0; /* a duplicate */
    char path[SNAP_PATH_BYTES_MAX];
    int rv = kv_fs_join(path, SNAP_PATH_BYTES_MAX, r->tmp, r->sm.m->files[c.file]->name);
    kv_file *f = NULL;
    if (rv == 0)
        rv = r->fs->ops->open(r->fs, path, KV_FS_WRITE, &f);
    if (rv == 0) {
        rv = r->fs->ops->pwrite(f, data, len, c.offset);
        r->fs->ops->close(f);
    }
    if (rv != 0) {
        KV_LOGE(kv_errword(rv), "snapshot receive: %s offset %" PRIu64 ": %s", path, c.offset,
                kv_strerror(rv));
        r->failed = rv == KV_EPERM || rv == KV_ENOSPACE ? rv : KV_EIO;
        return r->failed;
    }
    r->have[k] = 1;
    r->missing_count--;
    assert(r->missing_count < snap_manifest_chunks_count(&r->sm));
    return 0;
}

void snap_recv_missing(const snap_recv *r, uint64_t *chunks, size_t cap, uint64_t *missing_count) {
    assert(r != NULL && missing_count != NULL && (chunks != NULL || cap == 0));
    uint64_t total = snap_manifest_chunks_count(&r->sm);
    size_t n = 0;
    for (uint64_t k = 0; k < total && n < cap; k++)
        if (!r->have[k])
            chunks[n++] = k;
    *missing_count = r->missing_count;
    assert(n <= r->missing_count);
}

/* Syncs every received file and writes the manifest (which syncs tmp). */
static int snap__recv_sync(snap_recv *r) {
    char path[SNAP_PATH_BYTES_MAX];
    int rv = 0;
    for (size_t i = 0; i < r->sm.m->n_files && rv == 0; i++) {
        rv = kv_fs_join(path, SNAP_PATH_BYTES_MAX, r->tmp, r->sm.m->files[i]->name);
        kv_file *f = NULL;
        if (rv == 0)
            rv = r->fs->ops->open(r->fs, path, KV_FS_WRITE, &f);
        if (rv == 0) {
            rv = r->fs->ops->sync(f);
            r->fs->ops->close(f);
        }
        if (rv != 0)
            KV_LOGE(kv_errword(rv), "snapshot receive: sync %s: %s", path, kv_strerror(rv));
    }
    if (rv == 0)
        rv = kv_fs_join(path, SNAP_PATH_BYTES_MAX, r->tmp, SNAP_MANIFEST_NAME);
    if (rv == 0)
        rv = kv_fs_write_atomic(r->fs, path, r->sm.raw, r->sm.raw_len);
    return rv;
}

static void snap__recv_problem(void *arg, const kv_check_problem *p) {
    (void)arg;
    KV_LOGE(p->word, "snapshot receive: %s: %s", p->file, p->detail);
}

int snap_recv_finish(snap_recv *r, snap_meta *out) {
    assert(r != NULL && out != NULL);
    if (r->missing_count > 0) {
        KV_LOGW("MISSING", "snapshot receive %s: %" PRIu64 " chunk(s) missing", r->tmp,
                r->missing_count);
        return KV_EMISSING;
    }
    if (r->failed != 0)
        return r->failed;
    int rv = snap__recv_sync(r);
    if (rv != 0) {
        /* Never synced again: after a failed fsync the pages may be gone
         * from the disk while the page cache (and so a verify) looks fine
         * (docs/rules.md, "fsync errors are final (fsyncgate)"). The caller aborts and starts over.
         */
        r->failed = rv == KV_EPERM || rv == KV_ENOSPACE ? rv : KV_EIO;
        return r->failed;
    }
    rv = snap_verify(r->fs, r->tmp, snap__recv_problem, NULL);
    if (rv != 0)
        return rv == KV_EMISSING ? KV_ECORRUPT : rv;
    out->index = r->sm.m->index;
    out->term = r->sm.m->term;
    if (snprintf(out->path, sizeof out->path, "%s/%016" PRIx64 "-%016" PRIx64, r->snap_dir,
                 out->index, out->term) >= (int)sizeof out->path)
        return KV_EINVAL;
    if (r->fs->ops->exists(r->fs, out->path) == 0) {
        rv = kv_fs_rmtree(r->fs, r->tmp); /* we had it already */
    } else {
        rv = r->fs->ops->rename(r->fs, r->tmp, out->path);
        if (rv == 0)
            rv = r->fs->ops->sync_dir(r->fs, r->snap_dir);
    }
    if (rv != 0) {
        KV_LOGE(kv_errword(rv), "snapshot receive: install %s: %s", out->path, kv_strerror(rv));
        r->failed = rv == KV_EPERM || rv == KV_ENOSPACE ? rv : KV_EIO;
        return r->failed;
    }
    KV_LOGI("SNAPSHOT", "snapshot %s received and installed", out->path);
    snap_manifest_free(&r->sm);
    free(r->have);
    free(r);
    return 0;
}

void snap_recv_abort(snap_recv *r) {
    if (r == NULL)
        return;
    if (r->tmp[0] != '\0')
        (void)kv_fs_rmtree(r->fs, r->tmp);
    snap_manifest_free(&r->sm);
    free(r->have);
    free(r);
}
