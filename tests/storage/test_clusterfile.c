/* DIR/CLUSTER: checksummed, durable, and cluster ids that two clusters set
 * up separately never share (issue 10, items 1 and 6). */
#include "test_wal_util.h"

#include "common/logging.h"
#include "kv/errors.h"
#include "storage/clusterfile.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *founders = "n1=127.0.0.1:7001,n2=127.0.0.1:7002,n3=127.0.0.1:7003";

START_TEST(test_write_read_durable) {
    fsf *f = tu_fake_datadir(tu_seed());
    kv_fs *fs = fsf_fs(f);
    cf_info c = {0}, got;
    ck_assert_int_eq(cf_make_id("tok", founders, c.id), 0);
    snprintf(c.founders, sizeof c.founders, "%s", founders);
    ck_assert_int_eq(cf_write(fs, TU_DIR, &c), 0);
    fsf_crash(f, FSF_CRASH_DROP); /* written durably */
    ck_assert_int_eq(cf_read(fs, TU_DIR, &got, NULL, NULL), 0);
    ck_assert_str_eq(got.id, c.id);
    ck_assert_str_eq(got.founders, founders);
    c.founders[0] = '\0'; /* a joined node's: no founders */
    ck_assert_int_eq(cf_write(fs, TU_DIR, &c), 0);
    ck_assert_int_eq(cf_read(fs, TU_DIR, &got, NULL, NULL), 0);
    ck_assert_str_eq(got.founders, "");
    snprintf(c.id, sizeof c.id, "%s", "not-hex");
    ck_assert_int_eq(cf_write(fs, TU_DIR, &c), KV_EINVAL);
    fsf_free(f);
}
END_TEST

START_TEST(test_missing_reported) {
    fsf *f = tu_fake_datadir(tu_seed());
    tu_reports r = {0};
    cf_info got;
    ck_assert_int_eq(cf_read(fsf_fs(f), TU_DIR, &got, tu_collect, &r), KV_EMISSING);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "MISSING");
    fsf_free(f);
}
END_TEST

/* Every single byte flipped (every bit of it) is found: CORRUPT naming the
 * file, never another valid id (before, CLUSTER was bare hex text). */
START_TEST(test_every_flip_is_corrupt) {
    fsf *f = tu_fake_datadir(tu_seed());
    kv_fs *fs = fsf_fs(f);
    cf_info c = {0}, got;
    ck_assert_int_eq(cf_make_id(NULL, NULL, c.id), 0);
    snprintf(c.founders, sizeof c.founders, "%s", founders);
    ck_assert_int_eq(cf_write(fs, TU_DIR, &c), 0);
    void *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(kv_fs_read_all(fs, TU_DIR "/CLUSTER", 4096, &buf, &len), 0);
    uint8_t *orig = buf;
    for (size_t off = 0; off < len; off++) {
        for (int bit = 0; bit < 8; bit++) {
            uint8_t *copy = malloc(len);
            memcpy(copy, orig, len);
            copy[off] ^= (uint8_t)(1u << bit);
            ck_assert_int_eq(kv_fs_write_atomic(fs, TU_DIR "/CLUSTER", copy, len), 0);
            free(copy);
            tu_reports r = {0};
            int rv = cf_read(fs, TU_DIR, &got, tu_collect, &r);
            ck_assert_msg(rv == KV_ECORRUPT, "flip of bit %d at offset %zu read as %d", bit, off, rv);
            ck_assert_int_eq(r.n, 1);
            ck_assert_str_eq(r.word[0], "CORRUPT");
            ck_assert(strstr(r.file[0], "CLUSTER") != NULL);
        }
    }
    /* cut short */
    ck_assert_int_eq(kv_fs_write_atomic(fs, TU_DIR "/CLUSTER", orig, len - 3), 0);
    ck_assert_int_eq(cf_read(fs, TU_DIR, &got, NULL, NULL), KV_ECORRUPT);
    free(buf);
    fsf_free(f);
}
END_TEST

/* The same token and founders (in any order) give every founder the same
 * id; another token, or no token (random), another cluster. */
START_TEST(test_ids) {
    char a[CF_ID_HEX_BYTES + 1], b[CF_ID_HEX_BYTES + 1], c[CF_ID_HEX_BYTES + 1];
    ck_assert_int_eq(cf_make_id("tok", founders, a), 0);
    ck_assert_int_eq(
        cf_make_id("tok", "n3=127.0.0.1:7003,n1=127.0.0.1:7001,n2=127.0.0.1:7002", b), 0);
    ck_assert_str_eq(a, b);
    ck_assert_uint_eq(strlen(a), CF_ID_HEX_BYTES);
    ck_assert_int_eq(cf_make_id("tok2", founders, c), 0);
    ck_assert_str_ne(a, c);
    ck_assert_int_eq(cf_make_id(NULL, founders, b), 0);
    ck_assert_int_eq(cf_make_id(NULL, founders, c), 0);
    ck_assert_str_ne(b, c);
    ck_assert_str_ne(a, b);
}
END_TEST

int main(void) {
    tu_seed();
    kv_log_set_level(KV_LOG_ERROR);
    Suite *s = suite_create("clusterfile");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_write_read_durable);
    tcase_add_test(tc, test_missing_reported);
    tcase_add_test(tc, test_every_flip_is_corrupt);
    tcase_add_test(tc, test_ids);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
