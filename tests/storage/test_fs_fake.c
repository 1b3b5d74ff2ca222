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
    tcase_add_test(tc, test_countdowns);
    tcase_add_test(tc, test_readonly_and_flip);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
