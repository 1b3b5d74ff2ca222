/* The benchmarks' histogram (hist.h): a percentile is never below the true
 * one and at most 1/128 above it; buckets tile the values without gaps. */
#include "hist.h"

#include <check.h>
#include <stdlib.h>

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

START_TEST(test_buckets_tile_the_values) {
    /* every bucket's upper bound + 1 opens the next bucket */
    for (uint32_t b = 0; b + 1 < HIST_BUCKETS; b++) {
        uint64_t up = hist_bucket_upper(b);
        ck_assert_uint_eq(hist_bucket(up), b);
        ck_assert_uint_eq(hist_bucket(up + 1), b + 1);
    }
    ck_assert_uint_eq(hist_bucket(HIST_VALUE_MAX), HIST_BUCKETS - 1);
    ck_assert_uint_eq(hist_bucket(UINT64_MAX), HIST_BUCKETS - 1); /* clamped */
    ck_assert_uint_eq(hist_bucket_upper(HIST_BUCKETS - 1), HIST_VALUE_MAX);
}
END_TEST

/* Fixed-seed values spread over six decades against the exact order. */
START_TEST(test_percentiles_within_bound) {
    enum { N = 100000 };
    static uint64_t v[N];
    hist *h = calloc(1, sizeof *h);
    ck_assert_ptr_nonnull(h);
    uint64_t s = 88172645463325252ull;
    for (int i = 0; i < N; i++) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        v[i] = (s % 1000) << (s >> 60) % 12; /* 0 .. ~2 M */
        hist_add(h, v[i]);
    }
    qsort(v, N, sizeof *v, cmp_u64);
    ck_assert_uint_eq(h->count, N);
    const double qs[] = {0.001, 0.5, 0.9, 0.99, 0.999, 1.0};
    for (size_t i = 0; i < sizeof qs / sizeof qs[0]; i++) {
        uint64_t rank = (uint64_t)(qs[i] * N + 0.999999);
        uint64_t exact = v[rank - 1], got = hist_percentile(h, qs[i]);
        ck_assert_uint_ge(got, exact);
        ck_assert_uint_le(got, exact + exact / HIST_SUB_COUNT);
    }
    ck_assert_uint_eq(hist_percentile(h, 1.0), v[N - 1]); /* the max itself */
    free(h);
}
END_TEST

START_TEST(test_empty_and_small) {
    hist *h = calloc(1, sizeof *h);
    ck_assert_ptr_nonnull(h);
    ck_assert_uint_eq(hist_percentile(h, 0.5), 0);
    hist_add(h, 7);
    hist_add(h, 300);
    ck_assert_uint_eq(hist_percentile(h, 0.5), 7); /* exact below 256 */
    ck_assert_uint_eq(hist_percentile(h, 0.999), 300);
    free(h);
}
END_TEST

int main(void) {
    Suite *s = suite_create("hist");
    TCase *tc = tcase_create("hist");
    tcase_add_test(tc, test_buckets_tile_the_values);
    tcase_add_test(tc, test_percentiles_within_bound);
    tcase_add_test(tc, test_empty_and_small);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
