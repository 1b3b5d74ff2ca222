/*
 * mkdatadir DIR [ENTRIES]: writes a complete node data dir through the
 * storage modules, as a node leaves it: FORMAT, hard state, a log of
 * ENTRIES put commands, the RocksDB state machine with them applied and
 * flushed, and one snapshot. The kvd check test damages copies of it.
 */
#include "kv/errors.h"
#include "proto/kv.pb-c.h"
#include "storage/datadir.h"
#include "storage/fs.h"
#include "storage/hardstate.h"
#include "storage/sm.h"
#include "storage/snapshot.h"
#include "storage/wal.h"

#include <assert.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MK_ENTRIES_MAX 100000u

static int die(const char *what, int rv) {
    fprintf(stderr, "mkdatadir: %s: %s\n", what, kv_strerror(rv));
    return 1;
}

/* Entry i (1-based): PUT key-i = value-i, encoded as kv.Command. */
static size_t encode_put(uint64_t i, uint8_t *buf, size_t cap) {
    char key[32], val[64];
    int kl = snprintf(key, sizeof key, "key-%06llu", (unsigned long long)i);
    int vl = snprintf(val, sizeof val, "value-%llu-%s", (unsigned long long)i, "xxxxxxxxxxxxxxxx");
    Kv__Command c = KV__COMMAND__INIT;
    c.op = KV__COMMAND__OP__PUT;
    c.key = (ProtobufCBinaryData){.len = (size_t)kl, .data = (uint8_t *)key};
    c.value = (ProtobufCBinaryData){.len = (size_t)vl, .data = (uint8_t *)val};
    size_t n = kv__command__get_packed_size(&c);
    assert(n <= cap);
    return kv__command__pack(&c, buf);
}

int main(int argc, char **argv) {
    if (argc < 2 || argc > 3) {
        fprintf(stderr, "usage: mkdatadir DIR [ENTRIES]\n");
        return 2;
    }
    const char *dir = argv[1];
    uint64_t n = argc == 3 ? strtoull(argv[2], NULL, 10) : 2000;
    if (n < 1 || n > MK_ENTRIES_MAX)
        return die("ENTRIES", KV_EINVAL);
    kv_fs *fs = kv_fs_posix();
    char path[DD_PATH_BYTES_MAX];
    int rv = dd_init(fs, dir);
    if (rv != 0)
        return die(dir, rv);
    hs *h = NULL;
    hs_state st = {0};
    if ((rv = hs_load(fs, dir, 0, NULL, NULL, &h, &st)) != 0)
        return die("hs_load", rv);
    for (uint64_t t = 1; t <= 3 && rv == 0; t++) /* both slots get written */
        rv = hs_save(h, &(hs_state){.term = t, .vote = 1, .commit = n});
    hs_close(h);
    if (rv != 0)
        return die("hs_save", rv);

    wal *w = NULL;
    sm *s = NULL;
    if ((rv = wal_open(fs, dir, NULL, NULL, NULL, &w)) != 0)
        return die("wal_open", rv);
    kv_fs_join(path, sizeof path, dir, "db");
    if ((rv = sm_open(path, NULL, &s)) != 0)
        return die("sm_open", rv);
    uint8_t buf[256];
    for (uint64_t i = 1; i <= n && rv == 0; i++) {
        size_t len = encode_put(i, buf, sizeof buf);
        wal_entry we = {
            .index = i, .term = 3, .type = SM_ENTRY_COMMAND, .len = (uint32_t)len, .data = buf};
        sm_entry se = {.index = i, .term = 3, .type = SM_ENTRY_COMMAND, .payload = buf, .len = len};
        sm_reply rep;
        rv = wal_append_wait(w, &we, 1);
        if (rv == 0 && (rv = sm_apply(s, &se, 1, &rep)) == 0)
            sm_replies_free(&rep, 1);
    }
    wal_close(w);
    if (rv != 0)
        return die("append/apply", rv);
    snap_meta meta;
    kv_fs_join(path, sizeof path, dir, "snap");
    if ((rv = sm_flush(s)) == 0)
        rv = snap_create(s, fs, path, &meta);
    sm_close(s);
    if (rv != 0)
        return die("snapshot", rv);
    printf("%s\n", meta.path);
    return 0;
}
