/*
 * Unit tests of the linearizability checker (tests/raft/linz.h).
 *
 * Hand-written histories: linearizable ones (sequential, overlapping,
 * unknown outcomes) must pass, the classic anomalies must fail. Random
 * histories: a sequential execution against a real register, stretched into
 * overlapping intervals around each op's linearization point, must pass;
 * one read mutated into a provably stale read must fail.
 *
 * Random tests print their seed; LINZ_SEED=<n> replays one.
 */
#include <check.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "kv/errors.h"
#include "linz.h"

#define ABSENT linz_absent()
#define V(x) linz_val(x)

static linz_history H;

static void setup(void) {
    linz_history_init(&H);
}

static void teardown(void) {
    linz_history_free(&H);
}

/* One-line recorders: complete == LINZ_TIME_INF means unknown outcome. */
static size_t rd(uint32_t c, const char *k, uint64_t inv, uint64_t cmp, linz_value seen) {
    linz_op op = {.client = c, .kind = LINZ_READ, .invoke = inv, .complete = cmp};
    op.observed = seen;
    strcpy(op.key, k);
    size_t idx;
    ck_assert_int_eq(linz_history_add(&H, &op, &idx), 0);
    return idx;
}

static size_t wr(uint32_t c, const char *k, uint64_t inv, uint64_t cmp, int64_t v) {
    linz_op op = {.client = c, .kind = LINZ_WRITE, .invoke = inv, .complete = cmp, .value = v};
    op.ok = true;
    strcpy(op.key, k);
    size_t idx;
    ck_assert_int_eq(linz_history_add(&H, &op, &idx), 0);
    return idx;
}

static size_t cas(uint32_t c, const char *k, uint64_t inv, uint64_t cmp, linz_value exp, int64_t v,
                  bool ok) {
    linz_op op = {.client = c, .kind = LINZ_CAS, .invoke = inv, .complete = cmp, .value = v};
    op.expect = exp;
    op.ok = ok;
    strcpy(op.key, k);
    size_t idx;
    ck_assert_int_eq(linz_history_add(&H, &op, &idx), 0);
    return idx;
}

static linz_verdict check(linz_result *r) {
    linz_verdict v = linz_check(&H, r);
    if (v != LINZ_OK) {
        linz_result_print(&H, r, stderr);
    }
    return v;
}

static bool window_has(const linz_result *r, size_t idx) {
    for (size_t i = 0; i < r->window_count; i++) {
        if (r->window[i] == idx) {
            return true;
        }
    }
    return false;
}

#define INF LINZ_TIME_INF

/* ---- linearizable ---------------------------------------------------------- */

START_TEST(test_empty_history_ok) {
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_OK);
    ck_assert_uint_eq(r.keys_count, 0);
}
END_TEST

START_TEST(test_sequential_ok) {
    rd(1, "k", 0, 1, ABSENT);
    wr(1, "k", 2, 3, 5);
    rd(2, "k", 4, 5, V(5));
    cas(2, "k", 6, 7, V(5), 6, true);
    cas(1, "k", 8, 9, V(5), 7, false);
    cas(1, "k", 10, 11, ABSENT, 7, false);
    rd(1, "k", 12, 13, V(6));
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_OK);
    ck_assert_uint_eq(r.keys_count, 1);
}
END_TEST

START_TEST(test_concurrent_overlap_ok) {
    /* A write overlapping two reads: one sees the old value, one the new,
     * in the "wrong" invocation order, which overlap makes legal. */
    wr(1, "k", 0, 1, 1);
    wr(1, "k", 10, 30, 2);
    rd(2, "k", 11, 25, V(2));
    rd(3, "k", 12, 29, V(1)); /* invoked after c2's read, ordered before it */
    rd(4, "k", 31, 32, V(2));
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_OK);
}
END_TEST

START_TEST(test_touching_intervals_are_concurrent) {
    wr(1, "k", 0, 5, 1);
    rd(2, "k", 5, 6, ABSENT); /* invoked at the instant the write completed */
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_OK);
}
END_TEST

START_TEST(test_unknown_write_may_or_may_not_apply) {
    wr(1, "k", 0, 1, 1);
    wr(2, "k", 2, INF, 2); /* timed out */
    rd(3, "k", 3, 4, V(1));
    rd(3, "k", 5, 6, V(2)); /* took effect late */
    rd(3, "k", 7, 8, V(2));
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_OK);
    linz_history_free(&H);
    wr(1, "k", 0, 1, 1);
    wr(2, "k", 2, INF, 2); /* never took effect */
    rd(3, "k", 100, 101, V(1));
    ck_assert_int_eq(check(&r), LINZ_OK);
}
END_TEST

START_TEST(test_unknown_cas_and_unknown_read) {
    wr(1, "k", 0, 1, 1);
    cas(2, "k", 2, INF, V(1), 3, false); /* result unknown: the flag is ignored */
    rd(4, "k", 2, INF, V(99));           /* unknown read: constrains nothing */
    rd(3, "k", 10, 11, V(3));
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_OK);
}
END_TEST

START_TEST(test_unknown_cas_takes_effect_later) {
    /* The CAS cannot match when invoked, but may take effect once 2 is
     * written: an optimizer must not settle it as a no-op early. */
    wr(1, "k", 0, 1, 1);
    cas(2, "k", 2, INF, V(2), 3, false);
    wr(3, "k", 4, 5, 2);
    rd(4, "k", 6, 7, V(3));
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_OK);
}
END_TEST

START_TEST(test_invoke_complete_api) {
    size_t w, c, x, rr;
    ck_assert_int_eq(linz_invoke_write(&H, 1, "k", 7, 0, &w), 0);
    ck_assert_int_eq(linz_invoke_cas(&H, 2, "k", V(7), 8, 1, &c), 0);
    ck_assert_int_eq(linz_invoke_cas(&H, 3, "k", ABSENT, 9, 1, &x), 0);
    linz_complete_write(&H, w, 2);
    linz_complete_cas(&H, c, 3, true);
    linz_complete_cas(&H, x, 3, false);
    ck_assert_int_eq(linz_invoke_read(&H, 1, "k", 4, &rr), 0);
    linz_complete_read(&H, rr, 5, V(8));
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_OK);
    ck_assert_int_eq(linz_invoke_read(&H, 1, "a-key-that-is-far-too-long-for-linz", 4, &rr),
                     KV_EINVAL);
    linz_op bad = {.kind = LINZ_READ, .invoke = 5, .complete = 4};
    strcpy(bad.key, "k");
    ck_assert_int_eq(linz_history_add(&H, &bad, NULL), KV_EINVAL);
}
END_TEST

/* ---- not linearizable -------------------------------------------------------- */

START_TEST(test_stale_read_after_write_fails) {
    wr(1, "k", 0, 1, 1);
    size_t w2 = wr(1, "k", 2, 3, 2);
    size_t r1 = rd(2, "k", 4, 5, V(1)); /* write of 2 completed before */
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_FAIL);
    ck_assert_str_eq(r.key, "k");
    ck_assert_uint_eq(r.stuck_op, r1);
    ck_assert(window_has(&r, r1) && window_has(&r, w2));
}
END_TEST

START_TEST(test_read_of_value_never_written_fails) {
    wr(1, "k", 0, 10, 1);
    size_t r1 = rd(2, "k", 2, 5, V(42));
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_FAIL);
    ck_assert(window_has(&r, r1));
}
END_TEST

START_TEST(test_read_absent_after_write_fails) {
    wr(1, "k", 0, 1, 1);
    rd(2, "k", 2, 3, ABSENT);
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_FAIL);
}
END_TEST

START_TEST(test_two_cas_from_same_value_fail) {
    wr(1, "k", 0, 1, 1);
    cas(2, "k", 2, 10, V(1), 2, true);
    cas(3, "k", 3, 11, V(1), 3, true); /* both concurrent, both "won" */
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_FAIL);
    ck_assert_str_eq(r.key, "k");
}
END_TEST

START_TEST(test_lost_write_fails) {
    wr(1, "k", 0, 1, 1);
    wr(2, "k", 2, 3, 2);
    rd(3, "k", 4, 5, V(2));
    rd(3, "k", 6, 7, V(1)); /* the write of 2 was lost */
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_FAIL);
}
END_TEST

START_TEST(test_failed_cas_that_should_succeed_fails) {
    wr(1, "k", 0, 1, 1);
    cas(2, "k", 2, 3, V(1), 2, false);
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_FAIL);
}
END_TEST

START_TEST(test_keys_independent_failure_names_key) {
    /* On one register these would be fine, but the value was written to a. */
    wr(1, "a", 0, 1, 1);
    rd(2, "a", 2, 3, V(1));
    rd(2, "b", 4, 5, V(1));
    wr(3, "c", 0, 9, 3);
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_FAIL);
    ck_assert_str_eq(r.key, "b");
}
END_TEST

/* ---- budget -------------------------------------------------------------------- */

START_TEST(test_budget_exceeded_is_unknown) {
    /* 20 concurrent writes and a read of a value never written: the search
     * must explore many orders before it can say FAIL. */
    for (int i = 0; i < 20; i++) {
        wr((uint32_t)i, "k", 0, 100, i);
    }
    rd(99, "k", 0, 100, V(1000));
    linz_options o = {.steps_max = 50, .memo_bytes_max = LINZ_MEMO_BYTES_MAX_DEFAULT};
    linz_result r;
    ck_assert_int_eq(linz_check_opts(&H, &o, &r), LINZ_UNKNOWN);
    ck_assert(strstr(r.reason, "budget") != NULL);
    o.memo_bytes_max = 4096;
    o.steps_max = LINZ_STEPS_MAX_DEFAULT;
    ck_assert_int_eq(linz_check_opts(&H, &o, &r), LINZ_UNKNOWN);
    ck_assert(strstr(r.reason, "memo") != NULL);
}
END_TEST

START_TEST(test_too_many_ops_per_key_is_unknown) {
    for (uint64_t i = 0; i <= LINZ_KEY_OPS_MAX; i++) {
        wr(1, "k", 2 * i, 2 * i + 1, (int64_t)i);
    }
    linz_result r;
    ck_assert_int_eq(check(&r), LINZ_UNKNOWN);
    linz_history_free(&H);
    for (uint64_t i = 0; i < LINZ_KEY_OPS_MAX; i++) {
        wr(1, "k", 2 * i, 2 * i + 1, (int64_t)i);
    }
    ck_assert_int_eq(check(&r), LINZ_OK); /* at the limit: still checked */
}
END_TEST

/* ---- random histories ---------------------------------------------------------- */

static uint64_t rng_next(uint64_t *s) { /* splitmix64 */
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static uint64_t seed_base(void) {
    const char *env = getenv("LINZ_SEED");
    uint64_t seed = env != NULL ? strtoull(env, NULL, 0) : (uint64_t)time(NULL);
    fprintf(stderr, "test_linz: random tests seed=%" PRIu64 " (replay: LINZ_SEED=%" PRIu64 ")\n",
            seed, seed);
    return seed;
}

/* Shape of a random history: ops are 10 time units apart; each interval
 * reaches up to `spread` either side of its linearization point. */
typedef struct gen_shape {
    int ops;
    int keys; /* <= GEN_KEYS_MAX */
    uint64_t spread;
    uint64_t unknown_pct;
} gen_shape;

#define GEN_KEYS_MAX 8
static const gen_shape GEN_DEFAULT = {300, 3, 40, 3};  /* ~8 overlapping ops */
static const gen_shape GEN_CROWDED = {600, 1, 100, 5}; /* ~20 overlapping, one key */
/* Proving FAIL explores every order, and each op of unknown outcome stays
 * pending to the end (doubling the space), so the crowded shape used for
 * mutations has none: it always finishes within the default budget. */
static const gen_shape GEN_CROWDED_KNOWN = {400, 1, 100, 0};

/* Runs random ops against a real register, each at linearization point
 * p = 10 * (i + 1) + spread, recorded with an interval around p. Every
 * written value is unique. A few writes/CASes get an unknown outcome; half of
 * those never take effect. Linearizable by construction. */
static void gen_history(uint64_t seed, gen_shape g) {
    uint64_t s = seed;
    linz_value reg[GEN_KEYS_MAX];
    for (int k = 0; k < GEN_KEYS_MAX; k++) {
        reg[k] = ABSENT;
    }
    int64_t next_value = 1;
    for (int i = 0; i < g.ops; i++) {
        uint64_t p = 10 * (uint64_t)(i + 1) + g.spread;
        uint64_t inv = p - rng_next(&s) % g.spread, cmp = p + rng_next(&s) % g.spread;
        char key[8];
        int k = (int)(rng_next(&s) % (uint64_t)g.keys);
        snprintf(key, sizeof(key), "k%d", k);
        uint32_t c = (uint32_t)(i % 7);
        uint64_t dice = rng_next(&s) % 100;
        bool unknown = rng_next(&s) % 100 < g.unknown_pct,
             applied = !unknown || rng_next(&s) % 2 == 0;
        if (dice < 40) {
            rd(c, key, inv, cmp, reg[k]);
        } else if (dice < 75) {
            int64_t v = next_value++;
            wr(c, key, inv, unknown ? INF : cmp, v);
            reg[k] = applied ? V(v) : reg[k];
        } else {
            int64_t v = next_value++;
            linz_value exp =
                rng_next(&s) % 100 < 60 ? reg[k] : V(v - 1 - (int64_t)(rng_next(&s) % 4));
            bool ok = exp.present == reg[k].present && exp.value == reg[k].value;
            cas(c, key, inv, unknown ? INF : cmp, exp, v, ok);
            reg[k] = applied && ok ? V(v) : reg[k];
        }
    }
}

/* A known-complete op that certainly changed its register. */
static bool effective_write(const linz_op *op) {
    return op->complete != INF && (op->kind == LINZ_WRITE || (op->kind == LINZ_CAS && op->ok));
}

/* Finds a read r and writes w < w2 < r in real time on r's key (so every
 * linearization puts w2 between w and r), and makes r return w's value:
 * values are unique, so that read is impossible. Returns r's index or -1. */
static long mutate_stale_read(uint64_t seed) {
    uint64_t s = seed ^ 0x5eed;
    for (int tries = 0; tries < 200; tries++) {
        size_t r = rng_next(&s) % H.ops_count;
        linz_op *rop = &H.ops[r];
        if (rop->kind != LINZ_READ || rop->complete == INF) {
            continue;
        }
        for (size_t w2 = 0; w2 < H.ops_count; w2++) {
            const linz_op *b = &H.ops[w2];
            if (!effective_write(b) || strcmp(b->key, rop->key) != 0 ||
                b->complete >= rop->invoke) {
                continue;
            }
            for (size_t w = 0; w < H.ops_count; w++) {
                const linz_op *a = &H.ops[w];
                if (effective_write(a) && strcmp(a->key, rop->key) == 0 &&
                    a->complete < b->invoke) {
                    rop->observed = V(a->value);
                    return (long)r;
                }
            }
        }
    }
    return -1;
}

START_TEST(test_random_linearizable_pass) {
    uint64_t base = seed_base();
    for (uint64_t i = 0; i < 100; i++) {
        linz_history_free(&H);
        gen_history(base + i, i % 2 == 0 ? GEN_DEFAULT : GEN_CROWDED);
        linz_result r;
        linz_verdict v = check(&r);
        ck_assert_msg(v == LINZ_OK, "seed %" PRIu64 ": %s", base + i, linz_verdict_name(v));
    }
}
END_TEST

START_TEST(test_random_stale_read_mutation_fails) {
    uint64_t base = seed_base();
    int mutated = 0;
    for (uint64_t i = 0; i < 100; i++) {
        linz_history_free(&H);
        gen_history(base + i, i % 2 == 0 ? GEN_DEFAULT : GEN_CROWDED_KNOWN);
        long r = mutate_stale_read(base + i);
        if (r < 0) {
            continue;
        }
        mutated++;
        linz_result res;
        linz_verdict v = linz_check(&H, &res);
        ck_assert_msg(v == LINZ_FAIL, "seed %" PRIu64 ": read #%ld: %s", base + i, r,
                      linz_verdict_name(v));
        ck_assert_str_eq(res.key, H.ops[r].key);
    }
    ck_assert_int_ge(mutated, 90); /* the test must actually test */
}
END_TEST

START_TEST(test_random_never_written_mutation_fails) {
    uint64_t base = seed_base();
    for (uint64_t i = 0; i < 50; i++) {
        linz_history_free(&H);
        gen_shape g = GEN_DEFAULT;
        g.ops = 200;
        gen_history(base + i, g);
        size_t r = 0;
        while (H.ops[r].kind != LINZ_READ) {
            r++; /* 200 ops with 40% reads: one exists */
        }
        H.ops[r].observed = V(-1); /* values written are all positive */
        linz_result res;
        ck_assert_msg(linz_check(&H, &res) == LINZ_FAIL, "seed %" PRIu64, base + i);
    }
}
END_TEST

static Suite *linz_suite(void) {
    Suite *s = suite_create("linz");
    TCase *tc = tcase_create("core");
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_add_test(tc, test_empty_history_ok);
    tcase_add_test(tc, test_sequential_ok);
    tcase_add_test(tc, test_concurrent_overlap_ok);
    tcase_add_test(tc, test_touching_intervals_are_concurrent);
    tcase_add_test(tc, test_unknown_write_may_or_may_not_apply);
    tcase_add_test(tc, test_unknown_cas_and_unknown_read);
    tcase_add_test(tc, test_unknown_cas_takes_effect_later);
    tcase_add_test(tc, test_invoke_complete_api);
    tcase_add_test(tc, test_stale_read_after_write_fails);
    tcase_add_test(tc, test_read_of_value_never_written_fails);
    tcase_add_test(tc, test_read_absent_after_write_fails);
    tcase_add_test(tc, test_two_cas_from_same_value_fail);
    tcase_add_test(tc, test_lost_write_fails);
    tcase_add_test(tc, test_failed_cas_that_should_succeed_fails);
    tcase_add_test(tc, test_keys_independent_failure_names_key);
    tcase_add_test(tc, test_budget_exceeded_is_unknown);
    tcase_add_test(tc, test_too_many_ops_per_key_is_unknown);
    tcase_add_test(tc, test_random_linearizable_pass);
    tcase_add_test(tc, test_random_stale_read_mutation_fails);
    tcase_add_test(tc, test_random_never_written_mutation_fails);
    suite_add_tcase(s, tc);
    return s;
}

int main(void) {
    SRunner *sr = srunner_create(linz_suite());
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
