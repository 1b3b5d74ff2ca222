/* The error list: every code has one number, one code word and a message,
 * and the word maps back to the code (the wire and the logs rely on it). */
#include "kv/errors.h"

#include <check.h>
#include <stdlib.h>
#include <string.h>

static const int codes[] = {
#define CODE(name, value, word, msg) name,
    KV_ERRORS(CODE)
#undef CODE
};
#define CODES_COUNT (sizeof codes / sizeof codes[0])

START_TEST(test_words_round_trip) {
    for (size_t i = 0; i < CODES_COUNT; i++) {
        int c = codes[i];
        ck_assert_int_lt(c, 0);
        const char *w = kv_errword(c);
        ck_assert_str_ne(w, "UNKNOWN");
        ck_assert_int_eq(kv_errcode(w), c);
        ck_assert_str_ne(kv_strerror(c), "unknown error");
    }
}
END_TEST

START_TEST(test_codes_and_words_unique) {
    for (size_t i = 0; i < CODES_COUNT; i++)
        for (size_t j = i + 1; j < CODES_COUNT; j++) {
            ck_assert_int_ne(codes[i], codes[j]);
            ck_assert_str_ne(kv_errword(codes[i]), kv_errword(codes[j]));
        }
}
END_TEST

START_TEST(test_ok_and_unknown) {
    ck_assert_str_eq(kv_errword(0), "OK");
    ck_assert_str_eq(kv_strerror(0), "ok");
    ck_assert_str_eq(kv_errword(-9999), "UNKNOWN");
    ck_assert_str_eq(kv_strerror(12345), "unknown error");
    ck_assert_int_eq(kv_errcode("NO-SUCH-WORD"), 0);
    ck_assert_str_eq(kv_errword(KV_ETIMEOUT), "TIMEOUT"); /* "outcome unknown": docs/rules.md */
    ck_assert_ptr_nonnull(strstr(kv_strerror(KV_ETIMEOUT), "unknown"));
}
END_TEST

int main(void) {
    Suite *s = suite_create("errors");
    TCase *tc = tcase_create("errors");
    tcase_add_test(tc, test_words_round_trip);
    tcase_add_test(tc, test_codes_and_words_unique);
    tcase_add_test(tc, test_ok_and_unknown);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
