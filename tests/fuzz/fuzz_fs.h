/* For the fuzz targets that read files (wal, hardstate): puts an input's
 * bytes into a file of the in-memory file system, synced. */
#ifndef KV_TESTS_FUZZ_FS_H
#define KV_TESTS_FUZZ_FS_H

#include "fuzz.h"

#include "storage/fs.h"

static inline void fuzz_put_file(kv_fs *fs, const char *path, const uint8_t *p, size_t len) {
    kv_file *f;
    FUZZ_CHECK(fs->ops->open(fs, path, KV_FS_CREATE | KV_FS_WRITE, &f) == 0);
    FUZZ_CHECK(len == 0 || fs->ops->pwrite(f, p, len, 0) == 0);
    FUZZ_CHECK(fs->ops->sync(f) == 0);
    fs->ops->close(f);
}

#endif
