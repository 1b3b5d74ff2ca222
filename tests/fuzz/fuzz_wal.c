/* Fuzz target: the log's reader, as a node restarting on a damaged disk
 * runs it: wal_check over DIR/wal holding the input as one or two segment
 * files, on an in-memory file system (fs_fake.h). Only the public headers
 * are used (wal.h, fs_fake.h), so the target outlives format changes.
 * Input: a flags byte, then the segment bytes. Flag bit 0: two segments
 * (sequences 1 and 2), split at the middle; bit 1: also wal_open and
 * wal_close the log when the check passed (the index rebuild, torn-tail
 * truncation). */
#include "fuzz_fs.h"

#include "common/logging.h"
#include "kv/errors.h"
#include "storage/datadir.h"
#include "storage/fs_fake.h"
#include "storage/wal.h"

#include <string.h>

static void problems(void *arg, const kv_check_problem *p) {
    (void)p;
    (*(int *)arg)++;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int quiet;
    if (!quiet++)
        kv_log_set_level((enum kv_log_level)(KV_LOG_ERROR + 1));
    if (size < 1)
        return 0;
    uint8_t flags = data[0];
    data++;
    size--;
    fsf *ff = fsf_new(1);
    FUZZ_CHECK(ff != NULL);
    kv_fs *fs = fsf_fs(ff);
    FUZZ_CHECK(dd_init(fs, "/d") == 0); /* DIR/FORMAT and DIR/wal/ */
    size_t first = (flags & 1) ? size / 2 : size;
    fuzz_put_file(fs, "/d/wal/0000000000000001.wal", data, first);
    if (flags & 1)
        fuzz_put_file(fs, "/d/wal/0000000000000002.wal", data + first, size - first);
    FUZZ_CHECK(fs->ops->sync_dir(fs, "/d/wal") == 0);
    int count = 0;
    uint64_t last_term = 0;
    int rc = wal_check(fs, "/d", problems, &count, &last_term);
    FUZZ_CHECK(rc == 0 || rc == KV_ECORRUPT || rc == KV_EVERSION || rc == KV_EMISSING ||
               rc == KV_ENOMEM || rc == KV_EIO);
    FUZZ_CHECK(rc == 0 || count > 0 || rc == KV_ENOMEM || rc == KV_EIO);
    FUZZ_DEBUG("wal: check %d, %d problems\n", rc, count);
    if (rc == 0 && (flags & 2)) {
        wal_options o;
        wal_options_default(&o);
        wal *w = NULL;
        rc = wal_open(fs, "/d", &o, NULL, NULL, &w);
        FUZZ_DEBUG("wal: open %d\n", rc);
        if (rc == 0) {
            FUZZ_CHECK(wal_first_index(w) <= wal_last_index(w) + 1);
            wal_close(w);
        }
    }
    fsf_free(ff);
    return 0;
}
