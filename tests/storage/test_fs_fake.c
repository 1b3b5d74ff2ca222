/* The fake file layer itself: what a crash keeps, countdowns, read-only
 * directories, bit flips. */
#include "test_wal_util.h"

#include "kv/errors.h"
#include "storage/fs_fake.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static kv_file *create(kv_fs *fs, const char *path) {
    kv_file *h = NULL;
    ck_assert_int_eq(fs->ops->open(fs, path, KV_FS_CREATE, &h), 0);
    return h;
}

static size_t read_all(kv_fs *fs, const char *path, uint8_t *buf, size_t cap) {
    kv_file *h = NULL;
    size_t got = 0;
    ck_assert_int_eq(fs->ops->open(fs, path, KV_FS_READ, &h), 0);
    ck_assert_int_eq(fs->ops->pread(h, buf, cap, 0, &got), 0);
    fs->ops->close(h);
    return got;
}

START_TEST(test_crash_drops_unsynced) {
    fsf *f = fsf_new(tu_seed());
    kv_fs *fs = fsf_fs(f);
    ck_assert_int_eq(fs->ops->mkdir(fs, "/d"), 0);
    kv_file *a = create(fs, "/d/a");
    ck_assert_int_eq(fs->ops->pwrite(a, "hello", 5, 0), 0);
    ck_assert_int_eq(fs->ops->sync(a), 0);
    ck_assert_int_eq(fs->ops->pwrite(a, " world", 6, 5), 0);
    kv_file *b = create(fs, "/d/b"); /* never dir-synced */
    ck_assert_int_eq(fs->ops->sync(b), 0);
    ck_assert_int_eq(fs->ops->sync_dir(fs, "/"), 0);
    fsf_crash(f, FSF_CRASH_DROP);
    /* /d was made durable by the sync of "/", its entries never were. */
    ck_assert_int_eq(fs->ops->exists(fs, "/d"), 0);
    ck_assert_int_eq(fs->ops->exists(fs, "/d/a"), KV_EMISSING);
    ck_assert_int_eq(fs->ops->exists(fs, "/d/b"), KV_EMISSING);
    ck_assert_int_eq(fs->ops->pwrite(a, "x", 1, 0), KV_EIO); /* old handles are dead */
    fs->ops->close(a);
    fs->ops->close(b);

    a = create(fs, "/d/a");
    ck_assert_int_eq(fs->ops->pwrite(a, "hello", 5, 0), 0);
    ck_assert_int_eq(fs->ops->sync(a), 0);
    ck_assert_int_eq(fs->ops->sync_dir(fs, "/d"), 0);
    ck_assert_int_eq(fs->ops->pwrite(a, " world", 6, 5), 0);
    ck_assert_int_eq(fs->ops->rename(fs, "/d/a", "/d/c"), 0);
    fs->ops->close(a);
    fsf_crash(f, FSF_CRASH_DROP);
    uint8_t buf[32];
    ck_assert_int_eq(fs->ops->exists(fs, "/d/c"), KV_EMISSING); /* rename reverted */
    ck_assert_uint_eq(read_all(fs, "/d/a", buf, sizeof buf), 5);
    ck_assert(memcmp(buf, "hello", 5) == 0);
    fsf_free(f);
}
END_TEST

/* A torn crash keeps a prefix of the unsynced writes, in order. */
START_TEST(test_crash_torn_prefix) {
    uint64_t seed = tu_seed();
    int shorter = 0;
    for (uint64_t k = 0; k < 200; k++) {
        fsf *f = fsf_new(seed + k);
        kv_fs *fs = fsf_fs(f);
        kv_file *a = create(fs, "/a");
        ck_assert_int_eq(fs->ops->sync(a), 0);
        ck_assert_int_eq(fs->ops->sync_dir(fs, "/"), 0);
        uint8_t data[300];
        for (int i = 0; i < 300; i++)
            data[i] = (uint8_t)(i + 1);
        for (int i = 0; i < 3; i++)
            ck_assert_int_eq(fs->ops->pwrite(a, data + 100 * i, 100, 100 * (uint64_t)i), 0);
        fs->ops->close(a);
        fsf_crash(f, FSF_CRASH_TORN);
        uint8_t buf[400];
        size_t got = read_all(fs, "/a", buf, sizeof buf);
        ck_assert_uint_le(got, 300);
        shorter += got < 300;
        /* Every byte but a garbage tail of the last write kept is right. */
        size_t good = 0;
        while (good < got && buf[good] == data[good])
            good++;
        ck_assert_uint_ge(good + 100, got);
        fsf_free(f);
    }
    ck_assert_int_gt(shorter, 0);
}
END_TEST

/* A file of durable_pages pages of 'a', then unsynced: ops(). After a
 * PAGES crash, classifies each page: 'a', 'b', '0' (zeros), 't' torn (a
 * prefix of one kind, the rest another) or '-' past the end. Returns the
 * size; kinds[i] per page. */
enum { PG = 512, PG_MAX = 8 };

static size_t pages_after(uint64_t seed, int durable_pages, void (*ops)(kv_fs *, kv_file *),
                          char kinds[PG_MAX]) {
    fsf *f = fsf_new(seed);
    fsf_set_page_bytes(f, PG);
    kv_fs *fs = fsf_fs(f);
    kv_file *a = create(fs, "/a");
    static uint8_t old[PG * PG_MAX];
    memset(old, 'a', sizeof old);
    ck_assert_int_eq(fs->ops->pwrite(a, old, (size_t)durable_pages * PG, 0), 0);
    ck_assert_int_eq(fs->ops->sync(a), 0);
    ck_assert_int_eq(fs->ops->sync_dir(fs, "/"), 0);
    ops(fs, a);
    fs->ops->close(a);
    fsf_crash(f, FSF_CRASH_PAGES);
    static uint8_t buf[PG * PG_MAX + 1];
    size_t got = read_all(fs, "/a", buf, sizeof buf);
    ck_assert_uint_le(got, PG * PG_MAX);
    for (size_t p = 0; p < PG_MAX; p++) {
        const uint8_t *b = buf + p * PG;
        size_t len = p * PG >= got ? 0 : got - p * PG < PG ? got - p * PG : PG, k = 0;
        while (k < len && b[k] == b[0])
            k++;
        size_t j = k;
        while (j < len && b[j] == b[k])
            j++;
        ck_assert_msg(j == len, "page %zu mixes more than two kinds", p);
        ck_assert(len == 0 || b[0] == 'a' || b[0] == 'b' || b[0] == 0);
        kinds[p] = len == 0 ? '-' : k < len ? 't' : b[0] ? (char)b[0] : '0';
    }
    fsf_free(f);
    return got;
}

static void overwrite_b(kv_fs *fs, kv_file *a) {
    static uint8_t b[PG * 6];
    memset(b, 'b', sizeof b);
    ck_assert_int_eq(fs->ops->pwrite(a, b, sizeof b, 0), 0);
    (void)fs;
}

/* Pages written since the last sync come back in any subset, not only a
 * prefix; at most one of them torn; synced bytes are never lost. */
START_TEST(test_crash_pages_subset) {
    uint64_t seed = tu_seed();
    int out_of_order = 0, torn = 0;
    for (uint64_t k = 0; k < 300; k++) {
        char kinds[PG_MAX];
        size_t got = pages_after(seed + k, 6, overwrite_b, kinds);
        ck_assert_uint_eq(got, 6 * PG); /* the size never changed */
        int t = 0;
        for (int p = 0; p < 6; p++) {
            ck_assert(kinds[p] == 'a' || kinds[p] == 'b' || kinds[p] == 't');
            t += kinds[p] == 't';
            if (p > 0 && kinds[p] == 'b' && kinds[p - 1] == 'a')
                out_of_order++;
        }
        ck_assert_int_le(t, 1);
        torn += t;
    }
    ck_assert_int_gt(out_of_order, 0);
    ck_assert_int_gt(torn, 0);
}
END_TEST

static void extend_b(kv_fs *fs, kv_file *a) {
    static uint8_t b[PG * 4];
    memset(b, 'b', sizeof b);
    ck_assert_int_eq(fs->ops->pwrite(a, b, sizeof b, 2 * PG), 0);
    (void)fs;
}

/* An extending write: the size is the old one, the new one or a page
 * boundary between; a page not kept reads as zeros. */
START_TEST(test_crash_pages_extend) {
    uint64_t seed = tu_seed();
    int hole = 0, sizes[3] = {0};
    for (uint64_t k = 0; k < 300; k++) {
        char kinds[PG_MAX];
        size_t got = pages_after(seed + k, 2, extend_b, kinds);
        ck_assert_uint_eq(got % PG, 0);
        ck_assert(got >= 2 * PG && got <= 6 * PG);
        sizes[got == 2 * PG ? 0 : got == 6 * PG ? 1 : 2]++;
        ck_assert(kinds[0] == 'a' && kinds[1] == 'a');
        for (size_t p = 2; p < got / PG; p++) {
            ck_assert(kinds[p] == 'b' || kinds[p] == '0' || kinds[p] == 't');
            if (p > 2 && kinds[p] == 'b' && kinds[p - 1] == '0')
                hole++;
        }
    }
    ck_assert_int_gt(hole, 0);
    ck_assert(sizes[0] > 0 && sizes[1] > 0 && sizes[2] > 0);
}
END_TEST

static void truncate_then_b(kv_fs *fs, kv_file *a) {
    static uint8_t b[PG];
    memset(b, 'b', sizeof b);
    ck_assert_int_eq(fs->ops->truncate(a, 0), 0);
    ck_assert_int_eq(fs->ops->pwrite(a, b, sizeof b, 0), 0);
    (void)fs;
}

/* A truncate that was not synced can be lost: old data comes back behind
 * the new. Synced, it cannot. */
START_TEST(test_crash_pages_truncate) {
    uint64_t seed = tu_seed();
    int came_back = 0;
    for (uint64_t k = 0; k < 300; k++) {
        char kinds[PG_MAX];
        size_t got = pages_after(seed + k, 3, truncate_then_b, kinds);
        ck_assert(got == PG || got == 2 * PG || got == 3 * PG);
        ck_assert(kinds[0] != '0');
        came_back += got > PG && kinds[1] == 'a';
    }
    ck_assert_int_gt(came_back, 0);
    fsf *f = fsf_new(seed);
    kv_fs *fs = fsf_fs(f);
    kv_file *a = create(fs, "/a");
    ck_assert_int_eq(fs->ops->pwrite(a, "old data", 8, 0), 0);
    ck_assert_int_eq(fs->ops->sync(a), 0);
    ck_assert_int_eq(fs->ops->sync_dir(fs, "/"), 0);
    ck_assert_int_eq(fs->ops->truncate(a, 3), 0);
    ck_assert_int_eq(fs->ops->sync(a), 0);
    ck_assert_int_eq(fs->ops->pwrite(a, "new", 3, 3), 0);
    fs->ops->close(a);
    fsf_crash(f, FSF_CRASH_PAGES);
    uint8_t buf[16];
    size_t got = read_all(fs, "/a", buf, sizeof buf);
    ck_assert(got == 3 || got == 6);
    ck_assert(memcmp(buf, "old", 3) == 0);
    static const uint8_t fresh[3] = {'n', 'e', 'w'};
    for (size_t i = 3; i < got; i++) /* new bytes or zeros, never " data" */
        ck_assert(buf[i] == 0 || buf[i] == fresh[i - 3]);
    fsf_free(f);
}
END_TEST

/* Names changed since the last sync_dir survive or not, each on its own;
 * synced names stay. */
START_TEST(test_crash_pages_names) {
    uint64_t seed = tu_seed();
    int seen[4] = {0};
    for (uint64_t k = 0; k < 200; k++) {
        fsf *f = fsf_new(seed + k);
        kv_fs *fs = fsf_fs(f);
        kv_file *h = create(fs, "/keep");
        fs->ops->close(h);
        h = create(fs, "/old");
        fs->ops->close(h);
        ck_assert_int_eq(fs->ops->sync_dir(fs, "/"), 0);
        h = create(fs, "/new");
        fs->ops->close(h);
        ck_assert_int_eq(fs->ops->unlink(fs, "/old"), 0);
        fsf_crash(f, FSF_CRASH_PAGES);
        ck_assert_int_eq(fs->ops->exists(fs, "/keep"), 0);
        bool has_new = fs->ops->exists(fs, "/new") == 0;
        bool has_old = fs->ops->exists(fs, "/old") == 0;
        seen[has_new * 2 + has_old]++;
        fsf_crash(f, FSF_CRASH_PAGES); /* what a crash kept is durable */
        ck_assert_int_eq(fs->ops->exists(fs, "/new") == 0, has_new);
        ck_assert_int_eq(fs->ops->exists(fs, "/old") == 0, has_old);
        fsf_free(f);
    }
    for (int i = 0; i < 4; i++)
        ck_assert_int_gt(seen[i], 0);
}
END_TEST

START_TEST(test_countdowns) {
    fsf *f = fsf_new(tu_seed());
    kv_fs *fs = fsf_fs(f);
    kv_file *a = create(fs, "/a");
    fsf_fail_write(f, 2);
    ck_assert_int_eq(fs->ops->pwrite(a, "1", 1, 0), 0);
    ck_assert_int_eq(fs->ops->pwrite(a, "2", 1, 1), KV_EIO);
    ck_assert_int_eq(fs->ops->pwrite(a, "3", 1, 2), 0);
    fsf_fail_sync(f, 1);
    ck_assert_int_eq(fs->ops->sync(a), KV_EIO);
    ck_assert_int_eq(fs->ops->sync(a), 0);
    ck_assert_uint_eq(fsf_syncs(f), 1);
    ck_assert_uint_eq(fsf_writes(f), 2);
    fsf_die_at(f, 2);
    ck_assert_int_eq(fs->ops->pwrite(a, "4", 1, 3), 0);
    ck_assert(!fsf_dead(f));
    ck_assert_int_eq(fs->ops->sync(a), KV_EIO);
    ck_assert(fsf_dead(f));
    ck_assert_int_eq(fs->ops->pwrite(a, "5", 1, 4), KV_EIO); /* dead */
    fs->ops->close(a);
    fsf_free(f);
}
END_TEST

START_TEST(test_readonly_and_flip) {
    fsf *f = fsf_new(tu_seed());
    kv_fs *fs = fsf_fs(f);
    ck_assert_int_eq(fs->ops->mkdir(fs, "/d"), 0);
    kv_file *a = create(fs, "/d/a");
    ck_assert_int_eq(fs->ops->pwrite(a, "abc", 3, 0), 0);
    fs->ops->close(a);
    ck_assert_int_eq(fsf_set_readonly(f, "/d", true), 0);
    ck_assert_int_eq(fs->ops->open(fs, "/d/b", KV_FS_CREATE, &a), KV_EPERM);
    ck_assert_int_eq(fs->ops->mkdir(fs, "/d/e"), KV_EPERM);
    ck_assert_int_eq(fs->ops->rename(fs, "/d/a", "/d/b"), KV_EPERM);
    ck_assert_int_eq(fs->ops->unlink(fs, "/d/a"), KV_EPERM);
    ck_assert_int_eq(fsf_flip(f, "/d/a", 1, 0x20), 0);
    uint8_t buf[8];
    ck_assert_uint_eq(read_all(fs, "/d/a", buf, sizeof buf), 3);
    ck_assert(memcmp(buf, "aBc", 3) == 0);
    ck_assert_int_eq(fsf_flip(f, "/d/a", 3, 1), KV_EINVAL);
    ck_assert_int_eq(fsf_flip(f, "/d/zz", 0, 1), KV_EMISSING);
    ck_assert_int_eq(fs->ops->rmdir(fs, "/d"), KV_EEXIST);   /* not empty */
    ck_assert_int_eq(fs->ops->rmdir(fs, "/d/a"), KV_EINVAL); /* a file */
    ck_assert_int_eq(fs->ops->mkdir(fs, "/e"), 0);
    ck_assert_int_eq(fs->ops->rmdir(fs, "/e"), 0);
    ck_assert_int_eq(fs->ops->exists(fs, "/e"), KV_EMISSING);
    ck_assert_int_eq(fs->ops->rmdir(fs, "/e"), KV_EMISSING);
    char **names = NULL;
    size_t n = 0;
    ck_assert_int_eq(fs->ops->list(fs, "/d", &names, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_str_eq(names[0], "a");
    kv_fs_free_list(names, n);
    fsf_free(f);
}
END_TEST

int main(void) {
    tu_seed();
    Suite *s = suite_create("fs_fake");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_crash_drops_unsynced);
    tcase_add_test(tc, test_crash_torn_prefix);
    tcase_add_test(tc, test_crash_pages_subset);
    tcase_add_test(tc, test_crash_pages_extend);
    tcase_add_test(tc, test_crash_pages_truncate);
    tcase_add_test(tc, test_crash_pages_names);
    tcase_add_test(tc, test_countdowns);
    tcase_add_test(tc, test_readonly_and_flip);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
