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

/* ---- the reference: brute force over every order ---------------------------- */

/* The definition itself, with no shortcut: some order of the ops of one key
 * that (1) contains every op of known outcome and any subset of those of
 * unknown outcome, (2) puts A before B whenever A completed before B was
 * invoked (A.complete < B.invoke; touching intervals are concurrent), and
 * (3) replays on a register from absent with every known result as observed.
 * A read of unknown outcome constrains nothing and is skipped. Exponential:
 * for histories of at most REF_OPS_MAX ops. */
#define REF_OPS_MAX 9

static bool ref_eq(linz_value a, linz_value b) {
    return a.present == b.present && (!a.present || a.value == b.value);
}

/* Applies op to st; false when its known result is impossible there. */
static bool ref_step(const linz_op *op, linz_value st, linz_value *next) {
    bool unknown = op->complete == INF;
    *next = st;
    if (op->kind == LINZ_READ) {
        return ref_eq(st, op->observed);
    }
    if (op->kind == LINZ_WRITE) {
        *next = V(op->value);
        return true;
    }
    bool match = ref_eq(st, op->expect);
    if (match && (unknown || op->ok)) {
        *next = V(op->value);
    }
    return unknown || op->ok == match;
}

static bool ref_search(const linz_op *ops, size_t n, uint32_t placed, linz_value st) {
    bool done = true;
    for (size_t i = 0; i < n; i++) {
        done = done && (ops[i].complete == INF || (placed & (1u << i)) != 0);
    }
    if (done) {
        return true;
    }
    for (size_t i = 0; i < n; i++) {
        if ((placed & (1u << i)) != 0) {
            continue;
        }
        bool minimal = true; /* no unplaced op had to come before it */
        for (size_t j = 0; j < n && minimal; j++) {
            minimal = (placed & (1u << j)) != 0 || j == i || ops[j].complete >= ops[i].invoke;
        }
        linz_value next;
        if (minimal && ref_step(&ops[i], st, &next) &&
            ref_search(ops, n, placed | (1u << i), next)) {
            return true;
        }
    }
    return false;
}

/* The reference verdict of H, all on one key. */
static linz_verdict ref_check(void) {
    linz_op ops[REF_OPS_MAX];
    size_t n = 0;
    for (size_t i = 0; i < H.ops_count; i++) {
        ck_assert_str_eq(H.ops[i].key, H.ops[0].key);
        if (!(H.ops[i].kind == LINZ_READ && H.ops[i].complete == INF)) {
            ck_assert_uint_lt(n, REF_OPS_MAX);
            ops[n++] = H.ops[i];
        }
    }
    return ref_search(ops, n, 0, ABSENT) ? LINZ_OK : LINZ_FAIL;
}

/* A small random history on one key with values from {1, 2, 3}, so writes of
 * the current value and repeated values are common. Half are stretched from
 * a real sequential execution (mostly linearizable), half have random
 * results (mostly not); both have unknown outcomes. */
static void gen_small(uint64_t seed) {
    uint64_t s = seed;
    int n = 1 + (int)(rng_next(&s) % 8);
    bool real = rng_next(&s) % 2 == 0;
    linz_value reg = ABSENT;
    for (int i = 0; i < n; i++) {
        uint64_t p = 10 * (uint64_t)(i + 1) + 30;
        uint64_t inv = p - rng_next(&s) % 30, cmp = p + rng_next(&s) % 30;
        if (!real) {
            inv = rng_next(&s) % 60;
            cmp = inv + rng_next(&s) % 30;
        }
        bool unknown = rng_next(&s) % 100 < 20;
        uint64_t end = unknown ? INF : cmp;
        int64_t v = 1 + (int64_t)(rng_next(&s) % 3);
        linz_value any = rng_next(&s) % 4 == 0 ? ABSENT : V(1 + (int64_t)(rng_next(&s) % 3));
        uint64_t dice = rng_next(&s) % 100;
        if (dice < 35) {
            rd((uint32_t)i, "k", inv, end, real ? reg : any);
        } else if (dice < 70) {
            wr((uint32_t)i, "k", inv, end, v);
            reg = unknown && rng_next(&s) % 2 == 0 ? reg : V(v);
        } else {
            linz_value exp = real && rng_next(&s) % 2 == 0 ? reg : any;
            bool ok = real ? ref_eq(exp, reg) : rng_next(&s) % 2 == 0;
            cas((uint32_t)i, "k", inv, end, exp, v, ok);
            reg = ok && !(unknown && rng_next(&s) % 2 == 0) ? V(v) : reg;
        }
    }
}

/* A valid history the "leaves the state unchanged" shortcut called FAIL when
 * it applied to writes: W1 by c0, R->1, W2, R->2, W1 by c1, R->1, the three
 * writes spanning all the reads. The only orders put c1's write of 1 after
 * W2; linearizing it early "because it leaves the state at 1" lost that. */
START_TEST(test_write_of_current_value_may_come_later) {
    wr(0, "k", 0, 100, 1);
    wr(1, "k", 0, 100, 1);
    wr(2, "k", 0, 100, 2);
    rd(3, "k", 10, 20, V(1));
    rd(3, "k", 30, 40, V(2));
    rd(3, "k", 50, 60, V(1));
    linz_result r;
    ck_assert_int_eq(ref_check(), LINZ_OK);
    ck_assert_int_eq(check(&r), LINZ_OK);
}
END_TEST

/* The same with a CAS that swaps to the value it expects (1 -> 1). */
START_TEST(test_cas_to_same_value_may_come_later) {
    wr(0, "k", 0, 100, 1);
    cas(1, "k", 0, 100, V(1), 1, true);
    wr(2, "k", 0, 100, 2);
    cas(4, "k", 0, 100, V(2), 1, true);
    rd(3, "k", 10, 20, V(1));
    rd(3, "k", 30, 40, V(2));
    rd(3, "k", 50, 60, V(1));
    linz_result r;
    ck_assert_int_eq(ref_check(), LINZ_OK);
    ck_assert_int_eq(check(&r), LINZ_OK);
}
END_TEST

START_TEST(test_random_small_agrees_with_reference) {
    uint64_t base = seed_base();
    int verdicts[2] = {0, 0};
    for (uint64_t i = 0; i < 10000; i++) {
        linz_history_free(&H);
        gen_small(base + i);
        linz_result r;
        linz_verdict want = ref_check();
        linz_verdict got = linz_check(&H, &r);
        if (got != want) {
            for (size_t j = 0; j < H.ops_count; j++) {
                char buf[160];
                fprintf(stderr, "  #%zu %s\n", j, linz_op_format(&H.ops[j], buf, sizeof(buf)));
            }
        }
        ck_assert_msg(got == want, "seed %" PRIu64 ": kvlinz %s, reference %s", base + i,
                      linz_verdict_name(got), linz_verdict_name(want));
        verdicts[want == LINZ_OK ? 0 : 1]++;
    }
    /* Both verdicts must be common, or the comparison proves little. */
    ck_assert_int_ge(verdicts[0], 2000);
    ck_assert_int_ge(verdicts[1], 2000);
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
    tcase_add_test(tc, test_write_of_current_value_may_come_later);
    tcase_add_test(tc, test_cas_to_same_value_may_come_later);
    tcase_add_test(tc, test_random_small_agrees_with_reference);
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
