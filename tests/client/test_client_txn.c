/* kv_txn, the transaction builder of libkvclient (client.h, "revisions and
 * transactions"): what it refuses before anything is sent, with the words
 * kv_errstr gives. The round trip through a cluster is tests/cluster/
 * test_txn.sh and the jepsen-lite bank workload. */
#include "kv/client.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

START_TEST(test_txn_limits) {
    kv_txn *t = kv_txn_new();
    ck_assert_ptr_nonnull(t);
    for (unsigned i = 0; i < KV_TXN_OPS_MAX; i++) {
        int rc = i % 2 ? kv_txn_compare(t, KV_CMP_MOD, KV_CMP_LESS, "k", 1, NULL, 0, i)
                       : kv_txn_put(t, i % 4 == 0, "k", 1, "v", 1, 0);
        ck_assert_int_eq(rc, 0);
    }
    /* one past the limit, in any list */
    ck_assert_int_eq(kv_txn_get(t, true, "k", 1), KV_ETOOBIG);
    ck_assert_ptr_nonnull(strstr(kv_errstr(), "KV_TXN_OPS_MAX"));
    ck_assert_int_eq(kv_txn_del(t, false, "k", 1), KV_ETOOBIG);
    kv_txn_free(t);
}
END_TEST

START_TEST(test_txn_bad_args) {
    kv_txn *t = kv_txn_new();
    ck_assert_int_eq(kv_txn_put(t, true, "", 0, "v", 1, 0), KV_EINVAL);
    ck_assert_ptr_nonnull(strstr(kv_errstr(), "empty key"));
    ck_assert_int_eq(kv_txn_get(t, true, NULL, 1), KV_EINVAL);
    char *big = calloc(1, KV_KEY_BYTES_MAX + 1);
    ck_assert_int_eq(kv_txn_del(t, true, big, KV_KEY_BYTES_MAX + 1), KV_ETOOBIG);
    ck_assert_int_eq(kv_txn_compare(t, (enum kv_cmp_target)9, KV_CMP_EQUAL, "k", 1, NULL, 0, 0),
                     KV_EINVAL);
    ck_assert_int_eq(kv_txn_put(NULL, true, "k", 1, "v", 1, 0), KV_EINVAL);
    free(big);
    /* a value compare keeps its value; a number compare ignores one */
    ck_assert_int_eq(kv_txn_compare(t, KV_CMP_VERSION, KV_CMP_EQUAL, "k", 1, NULL, 5, 0), 0);
    bool ok = true;
    ck_assert_int_eq(kv_txn_commit(NULL, t, &ok, NULL, NULL), KV_EINVAL);
    ck_assert(!ok);
    ck_assert_int_eq(kv_txn_commit(NULL, NULL, NULL, NULL, NULL), KV_EINVAL);
    kv_txn_free(t);
    kv_txn_free(NULL);
}
END_TEST

/* Ops within their limits that together are over one command: TOOBIG at
 * the commit, before any connection is needed. */
START_TEST(test_txn_command_bytes) {
    kv_txn *t = kv_txn_new();
    char *v = calloc(1, KV_VALUE_BYTES_MAX);
    ck_assert_ptr_nonnull(v);
    for (int i = 0; i < 3; i++)
        ck_assert_int_eq(kv_txn_put(t, true, "k", 1, v, KV_VALUE_BYTES_MAX, 0), 0);
    ck_assert_int_eq(kv_txn_commit(NULL, t, NULL, NULL, NULL), KV_ETOOBIG);
    ck_assert_ptr_nonnull(strstr(kv_errstr(), "KV_COMMAND_BYTES_MAX"));
    free(v);
    kv_txn_free(t);
    uint64_t n = 7;
    ck_assert_int_eq(kv_del_prefix(NULL, NULL, 1, &n), KV_EINVAL);
    ck_assert_uint_eq(n, 0);
}
END_TEST

int main(void) {
    Suite *s = suite_create("client_txn");
    TCase *t = tcase_create("txn");
    tcase_add_test(t, test_txn_limits);
    tcase_add_test(t, test_txn_bad_args);
    tcase_add_test(t, test_txn_command_bytes);
    suite_add_tcase(s, t);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
