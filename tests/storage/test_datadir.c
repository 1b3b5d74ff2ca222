/* Data dir tests: layout, FORMAT version, unwritable directories. */
#include "test_wal_util.h"

#include "common/logging.h"
#include "kv/errors.h"
#include "storage/datadir.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

START_TEST(test_init_layout_durable) {
    fsf *f = fsf_new(tu_seed());
    kv_fs *fs = fsf_fs(f);
    ck_assert_int_eq(dd_init(fs, "/srv/kv"), KV_EMISSING); /* no parent */
    ck_assert_int_eq(fs->ops->mkdir(fs, "/srv"), 0);
    ck_assert_int_eq(fs->ops->sync_dir(fs, "/"), 0);
    ck_assert_int_eq(dd_init(fs, "/srv/kv"), 0);
    fsf_crash(f, FSF_CRASH_DROP); /* everything dd_init made is durable */
    ck_assert_int_eq(fs->ops->exists(fs, "/srv/kv/wal"), 0);
    ck_assert_int_eq(dd_check_format(fs, "/srv/kv", NULL, NULL), 0);
    void *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(kv_fs_read_all(fs, "/srv/kv/FORMAT", 100, &buf, &len), 0);
    ck_assert_uint_eq(len, 14);
    ck_assert(memcmp(buf, "kv-data-dir 1\n", 14) == 0);
    free(buf);
    ck_assert_int_eq(dd_init(fs, "/srv/kv"), 0); /* again: left as it is */
    char p[64];
    ck_assert_int_eq(kv_fs_join(p, sizeof p, "/srv/kv", "wal"), 0);
    ck_assert_str_eq(p, "/srv/kv/wal");
    ck_assert_int_eq(kv_fs_join(p, 8, "/srv/kv", "wal"), KV_EINVAL);
    /* the parent whose sync makes a new entry durable */
    static const char *cases[][2] = {{"a/b", "a"}, {"a/b/", "a"}, {"/x", "/"},       {"x", "."},
                                     {"/", "/"},   {"a//b", "a"}, {"/a/b/c", "/a/b"}};
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        kv_fs_dirname(cases[i][0], p, sizeof p);
        ck_assert_str_eq(p, cases[i][1]);
    }
    fsf_free(f);
}
END_TEST

/* A run that died after creating the data dir but before syncing its
 * parent: the next dd_init finds the dir in the page cache and must still
 * make its name durable. */
START_TEST(test_init_after_died_mkdir_durable) {
    fsf *f = fsf_new(tu_seed());
    kv_fs *fs = fsf_fs(f);
    ck_assert_int_eq(fs->ops->mkdir(fs, "/srv"), 0);
    ck_assert_int_eq(fs->ops->sync_dir(fs, "/"), 0);
    ck_assert_int_eq(fs->ops->mkdir(fs, "/srv/kv"), 0); /* then the process died */
    ck_assert_int_eq(dd_init(fs, "/srv/kv"), 0);
    fsf_crash(f, FSF_CRASH_DROP);
    ck_assert_int_eq(dd_check_format(fs, "/srv/kv", NULL, NULL), 0);
    ck_assert_int_eq(fs->ops->exists(fs, "/srv/kv/wal"), 0);
    fsf_free(f);
}
END_TEST

START_TEST(test_not_a_data_dir) {
    fsf *f = fsf_new(tu_seed());
    kv_fs *fs = fsf_fs(f);
    ck_assert_int_eq(fs->ops->mkdir(fs, "/empty"), 0);
    tu_reports r = {0};
    ck_assert_int_eq(dd_check_format(fs, "/empty", tu_collect, &r), KV_EMISSING);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "MISSING");
    ck_assert_str_eq(r.file[0], "/empty/FORMAT");
    fsf_free(f);
}
END_TEST

START_TEST(test_other_version) {
    fsf *f = tu_fake_datadir(tu_seed());
    kv_fs *fs = fsf_fs(f);
    const char *v2 = "kv-data-dir 2\n";
    ck_assert_int_eq(kv_fs_write_atomic(fs, TU_DIR "/FORMAT", v2, strlen(v2)), 0);
    tu_reports r = {0};
    ck_assert_int_eq(dd_check_format(fs, TU_DIR, tu_collect, &r), KV_EVERSION);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "VERSION");
    ck_assert_str_eq(r.file[0], TU_DIR "/FORMAT");
    ck_assert_ptr_nonnull(strstr(r.detail[0], "kv-data-dir 2"));
    ck_assert_int_eq(dd_init(fs, TU_DIR), KV_EVERSION);
    const char *junk = "hello\n";
    ck_assert_int_eq(kv_fs_write_atomic(fs, TU_DIR "/FORMAT", junk, strlen(junk)), 0);
    ck_assert_int_eq(dd_check_format(fs, TU_DIR, NULL, NULL), KV_EVERSION);
    fsf_free(f);
}
END_TEST

START_TEST(test_readonly_fake) {
    fsf *f = fsf_new(tu_seed());
    kv_fs *fs = fsf_fs(f);
    ck_assert_int_eq(fs->ops->mkdir(fs, "/ro"), 0);
    ck_assert_int_eq(fsf_set_readonly(f, "/ro", true), 0);
    ck_assert_int_eq(dd_init(fs, "/ro/kv"), KV_EPERM); /* cannot create DIR */
    ck_assert_int_eq(fs->ops->mkdir(fs, "/d"), 0);
    ck_assert_int_eq(fsf_set_readonly(f, "/d", true), 0);
    ck_assert_int_eq(dd_init(fs, "/d"), KV_EPERM); /* cannot write FORMAT */
    fsf_free(f);
}
END_TEST

/* The real file layer: a directory without write permission. Root
 * ignores permissions, so this part is skipped as root. */
START_TEST(test_readonly_posix) {
    if (geteuid() == 0) {
        fprintf(stderr, "test_readonly_posix: skipped as root\n");
        return;
    }
    char dir[] = "/tmp/kv-test-dd-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    ck_assert_int_eq(chmod(dir, 0555), 0);
    ck_assert_int_eq(dd_init(kv_fs_posix(), dir), KV_EPERM);
    char sub[64];
    snprintf(sub, sizeof sub, "%s/kv", dir);
    ck_assert_int_eq(dd_init(kv_fs_posix(), sub), KV_EPERM);
    ck_assert_int_eq(chmod(dir, 0755), 0);
    ck_assert_int_eq(rmdir(dir), 0);
}
END_TEST

int main(void) {
    tu_seed();
    kv_log_set_level(KV_LOG_ERROR);
    Suite *s = suite_create("datadir");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_init_layout_durable);
    tcase_add_test(tc, test_init_after_died_mkdir_durable);
    tcase_add_test(tc, test_not_a_data_dir);
    tcase_add_test(tc, test_other_version);
    tcase_add_test(tc, test_readonly_fake);
    tcase_add_test(tc, test_readonly_posix);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
