/* Fuzz target: the hard-state reader, as a node restarting on a damaged
 * disk runs it: hs_check and hs_load over DIR/hardstate.0 and .1 holding
 * the input, on an in-memory file system (fs_fake.h); public headers only
 * (hardstate.h), so the target outlives format changes. When hs_load
 * succeeds, a save and a reload must give back what was saved.
 * Input: a flags byte (bit 0: slot 0 exists; bit 1: slot 1 exists; bits
 * 2-7: the log's highest term, hardstate.h's rules), a length byte L, then slot 0's L bytes and slot 1's bytes (the rest). */
#include "fuzz_fs.h"

#include "common/logging.h"
#include "kv/errors.h"
#include "storage/fs_fake.h"
#include "storage/hardstate.h"

#include <string.h>

static void save_and_reload(kv_fs *fs, hs *h, const hs_state *st) {
    hs_state next = {.term = st->term + 1, .vote = 7, .commit = st->commit};
    FUZZ_CHECK(hs_save(h, &next) == 0);
    hs_close(h);
    hs_state back;
    FUZZ_CHECK(hs_load(fs, "/d", 0, NULL, NULL, &h, &back) == 0);
    FUZZ_CHECK(back.term == next.term && back.vote == next.vote && back.commit == next.commit);
    hs_close(h);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static int quiet;
    if (!quiet++)
        kv_log_set_level((enum kv_log_level)(KV_LOG_ERROR + 1));
    if (size < 2)
        return 0;
    uint8_t flags = data[0];
    size_t l0 = data[1] <= size - 2 ? data[1] : size - 2;
    fsf *ff = fsf_new(1);
    FUZZ_CHECK(ff != NULL);
    kv_fs *fs = fsf_fs(ff);
    FUZZ_CHECK(fs->ops->mkdir(fs, "/d") == 0);
    if (flags & 1)
        fuzz_put_file(fs, "/d/hardstate.0", data + 2, l0);
    if (flags & 2)
        fuzz_put_file(fs, "/d/hardstate.1", data + 2 + l0, size - 2 - l0);
    FUZZ_CHECK(fs->ops->sync_dir(fs, "/d") == 0);
    uint64_t log_term = flags >> 2;
    int crc = hs_check(fs, "/d", log_term, NULL, NULL);
    FUZZ_CHECK(crc == 0 || crc == KV_ECORRUPT || crc == KV_EVERSION);
    hs *h = NULL;
    hs_state st;
    int rc = hs_load(fs, "/d", log_term, NULL, NULL, &h, &st);
    FUZZ_CHECK(rc == 0 || rc == KV_ECORRUPT || rc == KV_EVERSION || rc == KV_ENOMEM);
    FUZZ_CHECK((rc == 0) == (crc == 0) || rc == KV_ENOMEM);
    FUZZ_DEBUG("hardstate: check %d load %d\n", crc, rc);
    if (rc == 0 && st.term < UINT64_MAX)
        save_and_reload(fs, h, &st);
    else if (rc == 0)
        hs_close(h);
    fsf_free(ff);
    return 0;
}
