/* Hard-state tests: two slots, crash loops, a corruption sweep, errors. */
#include "test_wal_util.h"

#include "common/checksum.h"
#include "common/logging.h"
#include "kv/errors.h"
#include "storage/hardstate.h"

#include <check.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define SLOT0 TU_DIR "/hardstate.0"
#define SLOT1 TU_DIR "/hardstate.1"

static hs *load_ok(fsf *f, hs_state *st, tu_reports *r) {
    hs *h = NULL;
    int rv = hs_load(fsf_fs(f), TU_DIR, 0, tu_collect, r, &h, st);
    ck_assert_msg(rv == 0, "hs_load: %s", kv_strerror(rv));
    return h;
}

static hs_state nth(uint64_t k) {
    return (hs_state){.term = k, .vote = k % 3, .commit = k * 10};
}

static bool same(hs_state a, hs_state b) {
    return a.term == b.term && a.vote == b.vote && a.commit == b.commit;
}

START_TEST(test_fresh_save_load) {
    fsf *f = tu_fake_datadir(tu_seed());
    hs_state st;
    tu_reports r = {0};
    hs *h = load_ok(f, &st, &r);
    ck_assert(same(st, (hs_state){0, 0, 0}));
    ck_assert_int_eq(r.n, 0);
    for (uint64_t k = 1; k <= 5; k++)
        ck_assert_int_eq(hs_save(h, &(hs_state){nth(k).term, nth(k).vote, nth(k).commit}), 0);
    hs_close(h);
    h = load_ok(f, &st, &r);
    ck_assert(same(st, nth(5)));
    ck_assert_int_eq(r.n, 0);
    ck_assert_int_eq(fsf_fs(f)->ops->exists(fsf_fs(f), SLOT0), 0);
    ck_assert_int_eq(fsf_fs(f)->ops->exists(fsf_fs(f), SLOT1), 0);
    hs_close(h);
    ck_assert_int_eq(hs_check(fsf_fs(f), TU_DIR, 0, NULL, NULL), 0);
    fsf_free(f);
}
END_TEST

/* Crash at the Nth write/sync of a run of saves: the state loaded is the
 * last acknowledged save or the one in flight, never older, never an error. */
static void hs_crash_loop(enum fsf_crash_mode mode) {
    uint64_t seed = tu_seed();
    bool completed = false;
    int n = 1;
    for (; n < 1000 && !completed; n++) {
        fsf *f = tu_fake_datadir(seed + (uint64_t)n);
        hs_state st;
        tu_reports r = {0};
        hs *h = load_ok(f, &st, &r);
        fsf_die_at(f, (uint64_t)n);
        uint64_t acked = 0;
        for (uint64_t k = 1; k <= 8; k++) {
            hs_state s = nth(k);
            if (hs_save(h, &s) != 0)
                break;
            acked = k;
        }
        completed = !fsf_dead(f);
        hs_close(h);
        fsf_crash(f, mode);
        h = load_ok(f, &st, &r);
        ck_assert_msg(same(st, nth(acked)) || same(st, nth(acked + 1)) ||
                          (acked == 0 && same(st, (hs_state){0, 0, 0})),
                      "N=%d seed=%" PRIu64 ": loaded term %" PRIu64 ", acked %" PRIu64, n, seed,
                      st.term, acked);
        for (int i = 0; i < r.n; i++)
            ck_assert_str_eq(r.word[i], "TORN");
        hs_close(h);
        fsf_free(f);
    }
    ck_assert(completed);
    ck_assert_int_gt(n, 10);
}

START_TEST(test_crash_loop_drop) {
    hs_crash_loop(FSF_CRASH_DROP);
}
END_TEST

/* Any subset of the unsynced pages and directory entries back after the
 * crash: the first save of a fresh data dir used to leave an empty
 * hardstate.0 under its name (the entry durable, its data not), which the
 * load called CORRUPT (KV_SEED=2, N=2) and kvd refused to start on. */
START_TEST(test_crash_loop_pages) {
    hs_crash_loop(FSF_CRASH_PAGES);
}
END_TEST

START_TEST(test_crash_loop_torn) {
    hs_crash_loop(FSF_CRASH_TORN);
}
END_TEST

static fsf *two_slots(uint64_t seed) {
    fsf *f = tu_fake_datadir(seed);
    hs_state st;
    tu_reports r = {0};
    hs *h = load_ok(f, &st, &r);
    hs_state a = nth(1), b = nth(2);
    ck_assert_int_eq(hs_save(h, &a), 0); /* slot 0 */
    ck_assert_int_eq(hs_save(h, &b), 0); /* slot 1, newest */
    hs_close(h);
    return f;
}

/* Every byte flipped in one slot is detected; with the other slot valid it
 * is reported TORN (see hardstate.h) and the other slot is used; both
 * slots bad is CORRUPT, naming both files. */
START_TEST(test_flip_sweep) {
    fsf *f = two_slots(tu_seed());
    for (int slot = 0; slot < 2; slot++) {
        const char *path = slot ? SLOT1 : SLOT0;
        for (uint64_t off = 0; off < HS_SLOT_BYTES; off++) {
            ck_assert_int_eq(fsf_flip(f, path, off, 0x01), 0);
            tu_reports r = {0};
            int rv = hs_check(fsf_fs(f), TU_DIR, 0, tu_collect, &r);
            ck_assert_int_eq(r.n, 1);
            ck_assert_str_eq(r.file[0], path);
            ck_assert_str_eq(r.word[0], "TORN");
            ck_assert_int_eq(rv, 0);
            hs_state st;
            hs *h = load_ok(f, &st, &r);
            ck_assert(same(st, slot ? nth(1) : nth(2)));
            hs_close(h);
            ck_assert_int_eq(fsf_flip(f, path, off, 0x01), 0);
        }
    }
    ck_assert_int_eq(fsf_flip(f, SLOT0, 20, 0x40), 0);
    ck_assert_int_eq(fsf_flip(f, SLOT1, 30, 0x40), 0);
    tu_reports r = {0};
    ck_assert_int_eq(hs_check(fsf_fs(f), TU_DIR, 0, tu_collect, &r), KV_ECORRUPT);
    ck_assert_int_eq(r.n, 2);
    ck_assert_str_eq(r.word[0], "CORRUPT");
    ck_assert_str_eq(r.file[0], SLOT0);
    ck_assert_str_eq(r.word[1], "CORRUPT");
    ck_assert_str_eq(r.file[1], SLOT1);
    hs *h = NULL;
    hs_state st;
    ck_assert_int_eq(hs_load(fsf_fs(f), TU_DIR, 0, NULL, NULL, &h, &st), KV_ECORRUPT);
    fsf_free(f);
}
END_TEST

/* The newer slot (term 2) was synced: the log holds entries of term 2,
 * appended only after it. A flip in it is corruption, never a fall back to
 * slot 0's older term and vote (issue 10.6: it was TORN, and the node could
 * vote a second time in term 2). A flip in the older slot, or with a log
 * that holds nothing newer than the surviving slot, stays TORN. */
START_TEST(test_flip_in_synced_slot_is_corrupt) {
    fsf *f = two_slots(tu_seed());
    for (uint64_t off = 0; off < HS_SLOT_BYTES; off += 7) {
        ck_assert_int_eq(fsf_flip(f, SLOT1, off, 0x10), 0);
        tu_reports r = {0};
        ck_assert_int_eq(hs_check(fsf_fs(f), TU_DIR, 2, tu_collect, &r), KV_ECORRUPT);
        ck_assert_int_eq(r.n, 1);
        ck_assert_str_eq(r.word[0], "CORRUPT");
        ck_assert_str_eq(r.file[0], SLOT1);
        ck_assert_msg(strstr(r.detail[0], "synced") != NULL, "detail: %s", r.detail[0]);
        hs *h = NULL;
        hs_state st;
        ck_assert_int_eq(hs_load(fsf_fs(f), TU_DIR, 2, NULL, NULL, &h, &st), KV_ECORRUPT);
        tu_reports r1 = {0};
        ck_assert_int_eq(hs_check(fsf_fs(f), TU_DIR, 1, tu_collect, &r1), 0); /* may be torn */
        ck_assert_str_eq(r1.word[0], "TORN");
        ck_assert_int_eq(fsf_flip(f, SLOT1, off, 0x10), 0);

        ck_assert_int_eq(fsf_flip(f, SLOT0, off, 0x10), 0);
        tu_reports r0 = {0};
        ck_assert_int_eq(hs_check(fsf_fs(f), TU_DIR, 2, tu_collect, &r0), 0);
        ck_assert_str_eq(r0.word[0], "TORN");
        h = load_ok(f, &st, &r0);
        ck_assert(same(st, nth(2)));
        hs_close(h);
        ck_assert_int_eq(fsf_flip(f, SLOT0, off, 0x10), 0);
    }
    fsf_free(f);
}
END_TEST

/* After a bad slot the next save overwrites it, keeping the good one. */
START_TEST(test_save_overwrites_bad_slot) {
    fsf *f = two_slots(tu_seed());
    ck_assert_int_eq(fsf_flip(f, SLOT0, 17, 0x01), 0);
    hs_state st, s3 = nth(3);
    tu_reports r = {0};
    hs *h = load_ok(f, &st, &r);
    ck_assert(same(st, nth(2)));
    ck_assert_int_eq(hs_save(h, &s3), 0);
    hs_close(h);
    tu_reports r2 = {0};
    ck_assert_int_eq(hs_check(fsf_fs(f), TU_DIR, 0, tu_collect, &r2), 0);
    ck_assert_int_eq(r2.n, 0);
    h = load_ok(f, &st, &r2);
    ck_assert(same(st, nth(3)));
    hs_close(h);
    fsf_free(f);
}
END_TEST

START_TEST(test_sync_error_fail_stop) {
    fsf *f = two_slots(tu_seed());
    hs_state st, s = nth(9);
    tu_reports r = {0};
    hs *h = load_ok(f, &st, &r);
    fsf_fail_sync(f, 1);
    ck_assert_int_eq(hs_save(h, &s), KV_EIO);
    ck_assert_int_eq(hs_save(h, &s), KV_EIO); /* never retried */
    hs_close(h);
    fsf_crash(f, FSF_CRASH_DROP);
    h = load_ok(f, &st, &r);
    ck_assert(same(st, nth(2)));
    hs_close(h);
    fsf_free(f);
}
END_TEST

/* A process that dies after a save's write but before its sync restarts on
 * the same page cache and loads the unsynced slot; the state it loaded (and
 * acts on) must survive a power loss afterwards. */
START_TEST(test_load_makes_found_state_durable) {
    fsf *f = two_slots(tu_seed());
    hs_state st, s = nth(9);
    tu_reports r = {0};
    hs *h = load_ok(f, &st, &r);
    fsf_fail_sync(f, 1);
    ck_assert_int_eq(hs_save(h, &s), KV_EIO);
    hs_close(h); /* the process dies; the machine does not */
    h = load_ok(f, &st, &r);
    ck_assert(same(st, nth(9))); /* the page cache held the new slot */
    hs_close(h);
    fsf_crash(f, FSF_CRASH_DROP);
    h = load_ok(f, &st, &r);
    ck_assert(same(st, nth(9))); /* what the last run acted on */
    hs_close(h);
    fsf_free(f);
}
END_TEST

START_TEST(test_other_version) {
    fsf *f = two_slots(tu_seed());
    kv_fs *fs = fsf_fs(f);
    /* A slot of version 2 with a valid checksum, as a newer build writes. */
    void *buf = NULL;
    size_t len = 0;
    ck_assert_int_eq(kv_fs_read_all(fs, SLOT1, 4096, &buf, &len), 0);
    uint8_t *b = buf;
    b[8] = 2;
    kv_put_u64(b + 48, kv_xxh3(b, 48));
    ck_assert_int_eq(kv_fs_write_atomic(fs, SLOT1, b, len), 0);
    free(buf);
    tu_reports r = {0};
    ck_assert_int_eq(hs_check(fs, TU_DIR, 0, tu_collect, &r), KV_EVERSION);
    ck_assert_int_eq(r.n, 1);
    ck_assert_str_eq(r.word[0], "VERSION");
    ck_assert_str_eq(r.file[0], SLOT1);
    fsf_free(f);
}
END_TEST

START_TEST(test_readonly_dir) {
    fsf *f = tu_fake_datadir(tu_seed());
    hs_state st, s = nth(1);
    tu_reports r = {0};
    hs *h = load_ok(f, &st, &r);
    ck_assert_int_eq(fsf_set_readonly(f, TU_DIR, true), 0);
    ck_assert_int_eq(hs_save(h, &s), KV_EPERM);
    hs_close(h);
    fsf_free(f);
}
END_TEST

int main(void) {
    tu_seed();
    kv_log_set_level(KV_LOG_ERROR);
    Suite *s = suite_create("hardstate");
    TCase *tc = tcase_create("core");
    tcase_add_test(tc, test_fresh_save_load);
    tcase_add_test(tc, test_crash_loop_drop);
    tcase_add_test(tc, test_crash_loop_torn);
    tcase_add_test(tc, test_crash_loop_pages);
    tcase_add_test(tc, test_flip_sweep);
    tcase_add_test(tc, test_flip_in_synced_slot_is_corrupt);
    tcase_add_test(tc, test_save_overwrites_bad_slot);
    tcase_add_test(tc, test_sync_error_fail_stop);
    tcase_add_test(tc, test_load_makes_found_state_durable);
    tcase_add_test(tc, test_other_version);
    tcase_add_test(tc, test_readonly_dir);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
