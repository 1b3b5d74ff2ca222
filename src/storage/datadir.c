/* The data directory layout and its FORMAT file: see datadir.h. */
#include "storage/datadir.h"

#include "common/logging.h"
#include "kv/errors.h"

#include <assert.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DD_FORMAT_LINE "kv-data-dir 1\n"
#define DD_FORMAT_BYTES_MAX 256u

static void dd__report(kv_check_fn fn, void *arg, const char *word, const char *file,
                       const char *detail) {
    if (fn == NULL)
        return;
    kv_check_problem p = {
        .word = word, .file = file, .offset = KV_CHECK_NO_OFFSET, .index = 0, .detail = detail};
    fn(arg, &p);
}

int dd_check_format(kv_fs *fs, const char *dir, kv_check_fn fn, void *arg) {
    assert(fs != NULL && dir != NULL);
    char path[DD_PATH_BYTES_MAX];
    if (kv_fs_join(path, sizeof path, dir, DD_FORMAT_FILE) != 0)
        return KV_EINVAL;
    void *buf = NULL;
    size_t len = 0;
    int rv = kv_fs_read_all(fs, path, DD_FORMAT_BYTES_MAX, &buf, &len);
    if (rv == KV_EMISSING) {
        dd__report(fn, arg, "MISSING", path, "no FORMAT file: not a kv data directory");
        return KV_EMISSING;
    }
    if (rv == KV_ETOOBIG) {
        dd__report(fn, arg, "VERSION", path, "FORMAT file too long: not a kv FORMAT line");
        return KV_EVERSION;
    }
    if (rv != 0)
        return rv;
    assert(len <= DD_FORMAT_BYTES_MAX);
    if (len == strlen(DD_FORMAT_LINE) && memcmp(buf, DD_FORMAT_LINE, len) == 0) {
        free(buf);
        return 0;
    }
    char found[DD_FORMAT_BYTES_MAX + 1], detail[DD_FORMAT_BYTES_MAX + 128];
    size_t k = strcspn(buf, "\n");
    k = k < len ? k : len;
    memcpy(found, buf, k);
    found[k] = '\0';
    free(buf);
    for (size_t i = 0; i < k; i++)
        if (found[i] < 0x20 || found[i] > 0x7e)
            found[i] = '?';
    snprintf(detail, sizeof detail, "found \"%s\", this build reads \"kv-data-dir %u\"", found,
             DD_FORMAT_VERSION);
    dd__report(fn, arg, "VERSION", path, detail);
    return KV_EVERSION;
}

static int dd__fail(int rv, const char *what, const char *path) {
    KV_LOGE(kv_errword(rv), "%s %s: %s", what, path, kv_strerror(rv));
    return rv;
}

int dd_init(kv_fs *fs, const char *dir) {
    assert(fs != NULL && dir != NULL);
    char path[DD_PATH_BYTES_MAX];
    if (kv_fs_join(path, sizeof path, dir, DD_WAL_DIR) != 0)
        return dd__fail(KV_EINVAL, "data dir path too long:", dir);
    int rv = fs->ops->mkdir(fs, dir);
    if (rv != 0)
        return dd__fail(rv, "cannot create data dir", dir);
    rv = dd_check_format(fs, dir, NULL, NULL);
    if (rv == KV_EVERSION)
        return dd__fail(rv, "data dir of another format version:", dir);
    if (rv == KV_EMISSING) {
        char format[DD_PATH_BYTES_MAX];
        (void)kv_fs_join(format, sizeof format, dir, DD_FORMAT_FILE);
        rv = kv_fs_write_atomic(fs, format, DD_FORMAT_LINE, strlen(DD_FORMAT_LINE));
        if (rv != 0)
            return dd__fail(rv, "cannot write", format);
    } else if (rv != 0) {
        return dd__fail(rv, "cannot read FORMAT in", dir);
    }
    if ((rv = fs->ops->mkdir(fs, path)) != 0)
        return dd__fail(rv, "cannot create", path);
    if ((rv = fs->ops->sync_dir(fs, dir)) != 0)
        return dd__fail(rv, "cannot sync", dir);
    /* Always, not only when this call created dir: a run that died between
     * its mkdir and this sync leaves dir visible (page cache) but not
     * durable, and this run would find it "existing" (etcd#14098). */
    if ((rv = kv_fs_sync_parent(fs, dir)) != 0)
        return dd__fail(rv, "cannot sync the parent of", dir);
    assert(fs->ops->exists(fs, path) == 0);
    return 0;
}
