/* Raft unit test: seeded random and mutated messages, for many seeds, into
 * a node that is a follower, a (pre-)candidate or a leader (hostile.h). No
 * assert may fire and the node's invariants must hold after every input.
 * Each run prints its seeds; a failure prints the seed, and
 * KV_HOSTILE_SEED=<seed> replays that one alone. KV_HOSTILE_SEEDS sets how
 * many seeds (default 1500), KV_HOSTILE_FIRST the first (default 1). */
#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "hostile.h"

#define STEPS_PER_SEED 400

static uint64_t env_u64(const char *name, uint64_t dflt) {
    const char *e = getenv(name);
    return e != NULL && e[0] != '\0' ? strtoull(e, NULL, 10) : dflt;
}

static void run_seed(uint64_t seed, uint64_t *refused, uint64_t *accepted) {
    hn h;
    hn_start(&h, (hn_role)(seed % HN_ROLES), seed);
    uint64_t rng = seed * 0x9E3779B97F4A7C15ull + 1;
    static hn_msg msg;
    for (int i = 0; i < STEPS_PER_SEED; i++) {
        uint64_t k = hn_rand(&rng) % 8;
        if (k == 0) {
            hn_local(&h, &rng);
            continue;
        }
        if (k < 4 && hn_reply_msg(&h, &rng, &msg)) {
            int rc = hn_step(&h, &msg.m);
            *accepted += rc == 0;
            continue;
        }
        hn_random_msg(&h, &rng, &msg);
        *accepted += hn_step(&h, &msg.m) == 0;
    }
    *refused += h.refused;
    hn_free(&h);
}

START_TEST(test_random_messages_never_crash) {
    uint64_t one = env_u64("KV_HOSTILE_SEED", 0);
    uint64_t first = one != 0 ? one : env_u64("KV_HOSTILE_FIRST", 1);
    uint64_t count = one != 0 ? 1 : env_u64("KV_HOSTILE_SEEDS", 1500);
    fprintf(stderr, "hostile: seeds %" PRIu64 "..%" PRIu64 " x %d steps\n", first,
            first + count - 1, STEPS_PER_SEED);
    uint64_t refused = 0, accepted = 0;
    for (uint64_t s = first; s < first + count; s++) {
        run_seed(s, &refused, &accepted);
    }
    fprintf(stderr, "hostile: %" PRIu64 " messages accepted, %" PRIu64 " refused\n", accepted,
            refused);
    /* the generator must exercise both sides */
    ck_assert_uint_gt(refused, count);
    ck_assert_uint_gt(accepted, count);
}
END_TEST

int main(void) {
    Suite *s = suite_create("raft_hostile_random");
    TCase *t = tcase_create("core");
    tcase_set_timeout(t, 600);
    tcase_add_test(t, test_random_messages_never_crash);
    suite_add_tcase(s, t);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
