/*
 * kvcli's one escaping rule (src/kvcli/output.c, split.c): what
 * kvcli_escape prints, kvcli_split reads back to the same bytes, for every
 * byte value and for seeded random strings (seed printed; KV_SEED replays);
 * valid UTF-8 prints as itself; --json's bytes are UTF-8 text or base64.
 */
#include "kvcli/kvcli.h"

#include <check.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* output.c's usage errors list the commands: none here. */
const kvcli_cmd kvcli_commands[] = {{NULL, NULL, NULL, NULL}};
void kvcli_usage(FILE *f) {
    (void)f;
}

/* kvcli_escape's text of p[0..n) (malloc'd, NUL-ended). */
static char *escaped(const void *p, size_t n) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    ck_assert_ptr_nonnull(f);
    kvcli_escape(f, p, n);
    ck_assert_int_eq(fclose(f), 0);
    return buf;
}

/* Escaped text typed as one word in double quotes (a '"' in it typed \"),
 * split back: must give p[0..n) exactly. */
static void round_trip(const unsigned char *p, size_t n) {
    char *e = escaped(p, n);
    for (const char *c = e; *c; c++) /* one line, no tab: a row stays a row */
        ck_assert_msg(*c != '\n' && *c != '\t' && *c != '\r', "escaped text holds a control");
    char *line = malloc(2 * strlen(e) + 3), *d = line;
    ck_assert_ptr_nonnull(line);
    *d++ = '"';
    for (const char *c = e; *c; c++) {
        if (*c == '"')
            *d++ = '\\';
        *d++ = *c;
    }
    *d++ = '"';
    *d = '\0';
    char *argv[2];
    size_t lens[2];
    const char *why = NULL;
    ck_assert_int_eq(kvcli_split(line, argv, lens, 2, &why), 1);
    ck_assert_uint_eq(lens[0], n);
    ck_assert_msg(memcmp(argv[0], p, n) == 0, "'%s' did not read back", e);
    free(line);
    free(e);
}

START_TEST(test_every_byte) {
    for (unsigned b = 0; b < 256; b++) {
        unsigned char s[3] = {(unsigned char)b, 'x', (unsigned char)b};
        round_trip(s, sizeof s);
    }
    char *e = escaped("\x00\xff\\x41 \xc3\xa9", 9);
    ck_assert_str_eq(e, "\\x00\\xff\\\\x41 \xc3\xa9"); /* UTF-8 as itself */
    free(e);
    e = escaped("\xc2\x85\xed\xa0\x80", 5); /* a C1 control, a surrogate */
    ck_assert_str_eq(e, "\\xc2\\x85\\xed\\xa0\\x80");
    free(e);
}
END_TEST

START_TEST(test_random) {
    const char *env = getenv("KV_SEED");
    unsigned seed = env != NULL ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    printf("test_random: seed %u (replay: KV_SEED=%u)\n", seed, seed);
    srand(seed);
    /* Bytes that matter most, often: backslash, x, hex digits, quotes,
     * UTF-8 lead and continuation bytes, NUL. */
    static const unsigned char hot[] = {'\\', 'x', '4', 'f', '"', '\'', ' ', 0xc3, 0xa9, 0x80,
                                        0xe2, 0x82, 0xac, 0x00, 0xff, 0xf0, 0x9f};
    unsigned char s[64];
    for (int round = 0; round < 5000; round++) {
        size_t n = (size_t)rand() % sizeof s;
        for (size_t i = 0; i < n; i++)
            s[i] = rand() % 2 ? hot[(size_t)rand() % sizeof hot] : (unsigned char)rand();
        round_trip(s, n);
    }
}
END_TEST

START_TEST(test_json_bytes) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    kvcli_json_bytes(f, "value", "\xff", 1);
    fputc(' ', f);
    kvcli_json_bytes(f, "value", "\xc3\xbf", 2);
    fputc(' ', f);
    kvcli_json_bytes(f, "key", "abcd\x80", 5);
    fclose(f);
    ck_assert_str_eq(buf, "\"value\":\"/w==\",\"value_encoding\":\"base64\" \"value\":\"\xc3\xbf\" "
                          "\"key\":\"YWJjZIA=\",\"key_encoding\":\"base64\"");
    free(buf);
}
END_TEST

int main(void) {
    Suite *s = suite_create("kvcli_escape");
    TCase *tc = tcase_create("kvcli_escape");
    tcase_set_timeout(tc, 60);
    tcase_add_test(tc, test_every_byte);
    tcase_add_test(tc, test_random);
    tcase_add_test(tc, test_json_bytes);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
