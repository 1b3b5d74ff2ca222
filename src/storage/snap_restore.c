/* snap_restore (snapshot.h): the state machine replaced by a snapshot's. */
#include "storage/snap_internal.h"
#include "storage/sm_internal.h"

#include "common/crashpoint.h"
#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define SNAP_COPY_BYTES (1024u * 1024u)

/* Copies from to a new file to, synced. */
static int snap__copy(kv_fs *fs, const char *from, const char *to) {
    kv_file *in = NULL, *out = NULL;
    int rv = fs->ops->open(fs, from, KV_FS_READ, &in);
    if (rv == 0)
        rv = fs->ops->open(fs, to, KV_FS_CREATE | KV_FS_EXCL, &out);
    uint8_t *buf = rv == 0 ? malloc(SNAP_COPY_BYTES) : NULL;
    if (rv == 0 && buf == NULL)
        rv = KV_ENOMEM;
    uint64_t off = 0;
    size_t got = 0;
    while (rv == 0) {
        rv = fs->ops->pread(in, buf, SNAP_COPY_BYTES, off, &got);
        if (rv != 0 || got == 0)
            break;
        rv = fs->ops->pwrite(out, buf, got, off);
        off += got;
    }
    if (rv == 0)
        rv = fs->ops->sync(out);
    free(buf);
    if (in != NULL)
        fs->ops->close(in);
    if (out != NULL)
        fs->ops->close(out);
    return rv;
}

/* Puts the snapshot's files into the new directory stage: SSTs are
 * immutable and hard-linked; the rest (MANIFEST-*, CURRENT, OPTIONS-*, WAL)
 * RocksDB may rewrite, so they are copied. */
static int snap__stage(kv_fs *fs, const char *snap_path, const snap_manifest *sm,
                       const char *stage) {
    int rv = kv_fs_rmtree(fs, stage);
    if (rv == 0)
        rv = fs->ops->mkdir(fs, stage);
    char from[SNAP_PATH_BYTES_MAX], to[SNAP_PATH_BYTES_MAX];
    for (size_t i = 0; i < sm->m->n_files && rv == 0; i++) {
        const char *name = sm->m->files[i]->name;
        rv = kv_fs_join(from, SNAP_PATH_BYTES_MAX, snap_path, name);
        if (rv == 0)
            rv = kv_fs_join(to, SNAP_PATH_BYTES_MAX, stage, name);
        if (rv != 0)
            break;
        size_t n = strlen(name);
        bool sst = n > 4 && strcmp(name + n - 4, ".sst") == 0;
        if (sst && link(from, to) == 0)
            continue; /* durable already; the link itself by the dir sync */
        rv = snap__copy(fs, from, to);
    }
    if (rv == 0)
        rv = fs->ops->sync_dir(fs, stage);
    if (rv == 0)
        rv = kv_fs_sync_parent(fs, stage);
    return rv;
}

/* Swaps stage and db_dir atomically where the file system can; afterwards
 * db_dir holds the new state and stage the old one (or nothing). */
static int snap__swap(kv_fs *fs, const char *stage, const char *db_dir) {
    int rv = 0;
    if (fs->ops->exists(fs, db_dir) != 0) {
        rv = fs->ops->rename(fs, stage, db_dir);
    } else if (renameat2(AT_FDCWD, stage, AT_FDCWD, db_dir, RENAME_EXCHANGE) != 0) {
        if (errno != EINVAL && errno != ENOSYS && errno != EOPNOTSUPP)
            return KV_EIO;
        /* no exchange here: two renames; a crash between them leaves no
         * db_dir, and the start-up restores from the snapshot again */
        char old[SNAP_PATH_BYTES_MAX];
        if (snprintf(old, sizeof old, "%s.old", stage) >= (int)sizeof old)
            return KV_EINVAL;
        rv = kv_fs_rmtree(fs, old);
        if (rv == 0)
            rv = fs->ops->rename(fs, db_dir, old);
        if (rv == 0)
            rv = fs->ops->rename(fs, stage, db_dir);
        if (rv == 0)
            rv = fs->ops->rename(fs, old, stage);
    }
    if (rv == 0)
        rv = kv_fs_sync_parent(fs, db_dir);
    return rv;
}

int snap_restore(sm **s, const char *db_dir, const char *snap_path) {
    assert(s != NULL && *s != NULL && db_dir != NULL && snap_path != NULL);
    kv_fs *fs = kv_fs_posix();
    int rv = snap_verify(fs, snap_path, NULL, NULL);
    if (rv != 0) {
        KV_LOGE(kv_errword(rv), "restore: snapshot %s does not verify", snap_path);
        return rv;
    }
    snap_manifest sm;
    const char *why = NULL;
    rv = snap__manifest_read(fs, snap_path, &sm, &why);
    if (rv != 0)
        return rv;
    char stage[SNAP_PATH_BYTES_MAX];
    if (snprintf(stage, sizeof stage, "%s.restore", db_dir) >= (int)sizeof stage - 8)
        rv = KV_EINVAL;
    if (rv == 0)
        rv = snap__stage(fs, snap_path, &sm, stage);
    uint64_t index = sm.m->index;
    snap_manifest_free(&sm);
    if (rv == 0 && kv_crashpoint("restore.staged"))
        return KV_EIO; /* died: the stage is left as it is */
    if (rv != 0) {
        (void)kv_fs_rmtree(fs, stage);
        return rv; /* *s untouched */
    }
    sm_options opt = (*s)->opt;
    sm_close(*s);
    *s = NULL;
    rv = snap__swap(fs, stage, db_dir);
    if (rv == 0 && kv_crashpoint("restore.swapped"))
        return KV_EIO;
    if (rv == 0)
        rv = kv_fs_rmtree(fs, stage); /* the old db */
    if (rv == 0)
        rv = sm_open(db_dir, &opt, s);
    if (rv != 0) {
        KV_LOGE(kv_errword(rv), "restore: %s from %s failed", db_dir, snap_path);
        return rv;
    }
    if (sm_applied_index(*s) != index) {
        KV_LOGE("CORRUPT", "restore: %s holds index %llu, its manifest says %llu", snap_path,
                (unsigned long long)sm_applied_index(*s), (unsigned long long)index);
        return KV_ECORRUPT;
    }
    assert(sm_durable_index(*s) == index);
    KV_LOGI("RESTORE", "state machine %s restored from %s", db_dir, snap_path);
    return 0;
}
