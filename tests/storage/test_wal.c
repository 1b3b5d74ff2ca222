/* WAL unit tests: append, read, truncate suffix, drop prefix, reset,
 * reopen, group commit, queue limits, entry size limit. Fake file layer. */
#include "test_wal_util.h"

#include "kv/errors.h"
#include "kv/limits.h"
#include "storage/datadir.h"
#include "storage/wal.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static wal_options tiny(uint64_t segment_bytes) {
    wal_options o;
    wal_options_default(&o);
    o.segment_bytes = segment_bytes;
    return o;
}

static wal *open_ok(fsf *f, const wal_options *o) {
    wal *w = NULL;
    tu_reports r = {0};
    int rv = wal_open(fsf_fs(f), TU_DIR, o, tu_collect, &r, &w);
    ck_assert_msg(rv == 0, "wal_open: %s (%s %s)", kv_strerror(rv), r.n ? r.word[0] : "",
                  r.n ? r.detail[0] : "");
    ck_assert_int_eq(r.n, 0);
    return w;
}

static void append_ok(wal *w, uint64_t index, size_t n, uint64_t term) {
    wal_entry e[64];
    uint8_t bufs[64][TU_LEN_MAX];
    tu_entries(e, bufs, index, n, term);
    ck_assert_int_eq(wal_append_wait(w, e, n), 0);
}

/* Reads [lo, hi] and checks each entry is the one made for (index, term). */
static void expect_range(wal *w, uint64_t lo, uint64_t hi, uint64_t term) {
    for (uint64_t i = lo; i <= hi;) {
        wal_entry *e = NULL;
        size_t n = 0;
        ck_assert_int_eq(wal_read(w, i, hi + 1, 512, &e, &n), 0);
        ck_assert_uint_ge(n, 1);
        for (size_t k = 0; k < n; k++, i++) {
            ck_assert_uint_eq(e[k].index, i);
            ck_assert_uint_eq(e[k].term, term);
            ck_assert(tu_entry_ok(&e[k]));
            uint64_t t = 0;
            ck_assert_int_eq(wal_term_at(w, i, &t), 0);
            ck_assert_uint_eq(t, term);
        }
        wal_entries_free(e, n);
    }
}

static size_t count_segments(fsf *f) {
    char **names = NULL;
    size_t n = 0;
    ck_assert_int_eq(fsf_fs(f)->ops->list(fsf_fs(f), TU_DIR "/wal", &names, &n), 0);
    kv_fs_free_list(names, n);
    return n;
}

START_TEST(test_append_read_reopen) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal_options o = tiny(400);
    wal *w = open_ok(f, &o);
    ck_assert_uint_eq(wal_first_index(w), 1);
    ck_assert_uint_eq(wal_last_index(w), 0);
    for (uint64_t i = 1; i <= 100; i += 5)
        append_ok(w, i, 5, 3);
    ck_assert_uint_eq(wal_last_index(w), 100);
    expect_range(w, 1, 100, 3);
    wal_entry *e = NULL;
    size_t n = 0;
    ck_assert_int_eq(wal_read(w, 1, 101, 0, &e, &n), 0);
    ck_assert_uint_eq(n, 1); /* at least one entry, even past bytes_max */
    wal_entries_free(e, n);
    ck_assert_int_eq(wal_read(w, 101, 102, 100, &e, &n), KV_ENOTFOUND);
    ck_assert_int_eq(wal_read(w, 5, 5, 100, &e, &n), KV_EINVAL);
    uint64_t t;
    ck_assert_int_eq(wal_term_at(w, 101, &t), KV_ENOTFOUND);
    ck_assert_int_eq(wal_term_at(w, 0, &t), 0);
    ck_assert_uint_eq(t, 0);
    wal_close(w);
    ck_assert_uint_gt(count_segments(f), 5);
    w = open_ok(f, &o); /* the index is rebuilt by the scan */
    ck_assert_uint_eq(wal_first_index(w), 1);
    ck_assert_uint_eq(wal_last_index(w), 100);
    expect_range(w, 1, 100, 3);
    append_ok(w, 101, 3, 4);
    expect_range(w, 101, 103, 4);
    wal_close(w);
    ck_assert_int_eq(wal_check(fsf_fs(f), TU_DIR, NULL, NULL, NULL), 0);
    fsf_free(f);
}
END_TEST

START_TEST(test_invalid_appends) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal *w = open_ok(f, NULL);
    wal_entry e[3];
    uint8_t bufs[3][TU_LEN_MAX];
    tu_entries(e, bufs, 1, 3, 1);
    ck_assert_int_eq(wal_append_wait(w, e, 0), KV_EINVAL);
    e[2].index = 5; /* not contiguous */
    ck_assert_int_eq(wal_append_wait(w, e, 3), KV_EINVAL);
    tu_entries(e, bufs, 2, 3, 1); /* past last + 1 */
    ck_assert_int_eq(wal_append_wait(w, e, 3), KV_EINVAL);
    ck_assert_uint_eq(wal_last_index(w), 0);
    append_ok(w, 1, 3, 1);
    ck_assert_uint_eq(wal_last_index(w), 3);
    wal_close(w);
    fsf_free(f);
}
END_TEST

/* Raft conflict: appending at an index <= last drops the suffix first,
 * here across several segments, and the result survives a reopen. */
START_TEST(test_truncate_suffix) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal_options o = tiny(300);
    wal *w = open_ok(f, &o);
    for (uint64_t i = 1; i <= 60; i += 4)
        append_ok(w, i, 4, 1);
    size_t segs_before = count_segments(f);
    append_ok(w, 20, 3, 2);
    ck_assert_uint_eq(wal_last_index(w), 22);
    ck_assert_uint_lt(count_segments(f), segs_before);
    expect_range(w, 1, 19, 1);
    expect_range(w, 20, 22, 2);
    append_ok(w, 23, 2, 2);
    append_ok(w, 22, 1, 3); /* within the last segment */
    wal_close(w);
    w = open_ok(f, &o);
    ck_assert_uint_eq(wal_last_index(w), 22);
    expect_range(w, 1, 19, 1);
    expect_range(w, 20, 21, 2);
    expect_range(w, 22, 22, 3);
    append_ok(w, 1, 2, 5); /* everything */
    ck_assert_uint_eq(wal_first_index(w), 1);
    ck_assert_uint_eq(wal_last_index(w), 2);
    expect_range(w, 1, 2, 5);
    wal_close(w);
    w = open_ok(f, &o);
    expect_range(w, 1, 2, 5);
    wal_close(w);
    fsf_free(f);
}
END_TEST

/* wal.h rule 6: a conflict inside a batch already on disk leaves that batch
 * whole and writes an override batch after it; a conflict reaching into a
 * full earlier segment writes an override marker there, then rolls. Both
 * survive a reopen, and the scan finds nothing wrong. */
START_TEST(test_truncate_inside_batch) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal_options o = tiny(4096);
    wal *w = open_ok(f, &o);
    append_ok(w, 1, 10, 1); /* one batch */
    append_ok(w, 5, 3, 2);  /* cuts it after 4 */
    append_ok(w, 8, 2, 2);
    append_ok(w, 6, 1, 3); /* cuts the override batch itself */
    ck_assert_uint_eq(wal_last_index(w), 6);
    ck_assert_uint_eq(count_segments(f), 1);
    wal_close(w);
    w = open_ok(f, &o);
    ck_assert_uint_eq(wal_last_index(w), 6);
    expect_range(w, 1, 4, 1);
    expect_range(w, 5, 5, 2);
    expect_range(w, 6, 6, 3);
    wal_close(w);

    o = tiny(300);
    fsf_free(f);
    f = tu_fake_datadir(tu_seed());
    w = open_ok(f, &o);
    for (uint64_t i = 1; i <= 40; i += 2)
        append_ok(w, i, 2, 1);
    size_t segs = count_segments(f);
    ck_assert_uint_gt(segs, 4);
    const char *seg1 = TU_DIR "/wal/0000000000000001.wal";
    uint64_t end1 = tu_data_end(f, seg1);
    append_ok(w, 2, 3, 2); /* into the full first segment */
    ck_assert_uint_eq(wal_last_index(w), 4);
    ck_assert_uint_lt(count_segments(f), segs);
    ck_assert_uint_eq(tu_data_end(f, seg1), end1 + WAL_BATCH_HEADER_BYTES); /* a marker */
    wal_close(w);
    w = open_ok(f, &o);
    expect_range(w, 1, 1, 1);
    expect_range(w, 2, 4, 2);
    append_ok(w, 5, 2, 2);
    wal_close(w);
    ck_assert_int_eq(wal_check(fsf_fs(f), TU_DIR, NULL, NULL, NULL), 0);
    fsf_free(f);
}
END_TEST

START_TEST(test_drop_prefix) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal_options o = tiny(300);
    wal *w = open_ok(f, &o);
    for (uint64_t i = 1; i <= 100; i += 4)
        append_ok(w, i, 4, 2);
    size_t segs = count_segments(f);
    ck_assert_int_eq(wal_drop_prefix(w, 50), 0);
    uint64_t first = wal_first_index(w);
    ck_assert_uint_gt(first, 1);
    ck_assert_uint_le(first, 51); /* nothing above 50 dropped */
    ck_assert_uint_lt(count_segments(f), segs);
    uint64_t t = 0;
    ck_assert_int_eq(wal_term_at(w, first - 1, &t), 0);
    ck_assert_uint_eq(t, 2);
    ck_assert_int_eq(wal_term_at(w, first - 2, &t), KV_ECOMPACTED);
    wal_entry *e = NULL;
    size_t n = 0;
    ck_assert_int_eq(wal_read(w, first - 1, first + 1, 100, &e, &n), KV_ECOMPACTED);
    expect_range(w, first, 100, 2);
    ck_assert_int_eq(wal_drop_prefix(w, 1000), 0); /* the last segment stays */
    ck_assert_uint_eq(wal_last_index(w), 100);
    uint64_t first2 = wal_first_index(w);
    ck_assert_uint_le(first2, 100);
    append_ok(w, 101, 2, 3);
    wal_close(w);
    w = open_ok(f, &o);
    ck_assert_uint_eq(wal_first_index(w), first2);
    ck_assert_int_eq(wal_term_at(w, first2 - 1, &t), 0);
    ck_assert_uint_eq(t, 2);
    expect_range(w, first2, 100, 2);
    expect_range(w, 101, 102, 3);
    wal_close(w);
    fsf_free(f);
}
END_TEST

START_TEST(test_reset) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal_options o = tiny(300);
    wal *w = open_ok(f, &o);
    for (uint64_t i = 1; i <= 30; i += 3)
        append_ok(w, i, 3, 1);
    ck_assert_int_eq(wal_reset(w, 500, 7), 0);
    ck_assert_uint_eq(wal_first_index(w), 501);
    ck_assert_uint_eq(wal_last_index(w), 500);
    ck_assert_uint_eq(count_segments(f), 1);
    uint64_t t = 0;
    ck_assert_int_eq(wal_term_at(w, 500, &t), 0);
    ck_assert_uint_eq(t, 7);
    ck_assert_int_eq(wal_term_at(w, 20, &t), KV_ECOMPACTED);
    wal_entry e[1];
    uint8_t bufs[1][TU_LEN_MAX];
    tu_entries(e, bufs, 30, 1, 1);
    ck_assert_int_eq(wal_append_wait(w, e, 1), KV_EINVAL);
    wal_close(w);
    w = open_ok(f, &o); /* (500, 7) is durable in the RESET segment */
    ck_assert_uint_eq(wal_first_index(w), 501);
    ck_assert_uint_eq(wal_last_index(w), 500);
    ck_assert_int_eq(wal_term_at(w, 500, &t), 0);
    ck_assert_uint_eq(t, 7);
    append_ok(w, 501, 20, 8);
    expect_range(w, 501, 520, 8);
    ck_assert_int_eq(wal_reset(w, 510, 8), 0); /* behind the last index: still a reset */
    ck_assert_uint_eq(wal_last_index(w), 510);
    wal_close(w);
    w = open_ok(f, &o);
    ck_assert_uint_eq(wal_first_index(w), 511);
    append_ok(w, 511, 1, 9);
    expect_range(w, 511, 511, 9);
    wal_close(w);
    fsf_free(f);
}
END_TEST

/* Group commit: while the first sync is held open, 200 more appends queue
 * up; none is acknowledged before a sync that covers it returned, and they
 * share a handful of syncs. */
START_TEST(test_group_commit) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal *w = open_ok(f, NULL);
    tu_gate g;
    tu_gate_init(&g);
    fsf_set_sync_hook(f, tu_gate_hook, &g);
    enum { OPS = 201 };
    static tu_op ops[OPS];
    tu_wait t;
    tu_wait_init(&t);
    for (int i = 0; i < OPS; i++) {
        ops[i] = (tu_op){.index = (uint64_t)i + 1, .n = 1, .term = 1, .fake = f};
        ck_assert_int_eq(tu_submit(w, &ops[i], &t), 0);
        if (i == 0)
            tu_gate_wait_entered(&g, 1); /* the storage thread is in sync #1 */
    }
    usleep(50 * 1000);
    pthread_mutex_lock(&t.mu);
    ck_assert_int_eq(t.done, 0); /* nothing acknowledged while its sync is held */
    pthread_mutex_unlock(&t.mu);
    ck_assert_uint_eq(wal_last_index(w), 0); /* not durable, not visible */
    tu_gate_open(&g);
    tu_wait_all(&t);
    ck_assert_int_eq(t.done, OPS);
    ck_assert_int_eq(t.failed, 0);
    for (int i = 0; i < OPS; i++) {
        ck_assert_int_eq(ops[i].status, 0);
        ck_assert_uint_gt(ops[i].syncs_at_done, ops[i].syncs_at_submit);
    }
    wal_stats st;
    wal_get_stats(w, &st);
    ck_assert_uint_le(st.syncs, 4);
    ck_assert_uint_le(st.batches, 3);
    ck_assert_uint_eq(st.records, OPS);
    ck_assert_uint_eq(wal_last_index(w), OPS);
    wal_close(w);
    fsf_set_sync_hook(f, NULL, NULL);
    tu_wait_destroy(&t);
    fsf_free(f);
}
END_TEST

/* wal_append_now's callbacks: which thread ran each, in what order. */
#define NOW_MAX 64
typedef struct now_log {
    pthread_mutex_t mu;
    int n;
    uint64_t index[NOW_MAX];
    bool here[NOW_MAX];
    pthread_t caller;
} now_log;
typedef struct now_arg {
    now_log *log;
    uint64_t index;
} now_arg;

static void now_done(void *arg, int status) {
    now_arg *a = arg;
    ck_assert_int_eq(status, 0);
    pthread_mutex_lock(&a->log->mu);
    a->log->index[a->log->n] = a->index;
    a->log->here[a->log->n++] = pthread_equal(pthread_self(), a->log->caller);
    pthread_mutex_unlock(&a->log->mu);
}

static int now_append(wal *w, now_arg *a) {
    wal_entry e[1];
    uint8_t bufs[1][TU_LEN_MAX];
    tu_entries(e, bufs, a->index, 1, 1);
    return wal_append_now(w, e, 1, now_done, a);
}

static int now_count(now_log *l) {
    pthread_mutex_lock(&l->mu);
    int n = l->n;
    pthread_mutex_unlock(&l->mu);
    return n;
}

/* Waits for callback number n (from 0) and says whether it ran here. */
static bool nth_here(now_log *l, int n) {
    for (int i = 0; i < 500 && now_count(l) <= n; i++)
        usleep(1000);
    ck_assert_int_gt(now_count(l), n);
    return l->here[n];
}

/* Appends entries next, next + 1, ... with wal_append_now, each waited for,
 * until one runs on the caller's thread, as it must on an idle log whose
 * last sync was fast. Not always the first: the storage thread gives the log
 * up just after its last callback, and under ASan a fake sync may take over
 * WAL_NOW_SYNC_NS_MAX (CI, KV_SEED=1796570138). Returns the index after the
 * one that ran here. */
static uint64_t append_until_here(wal *w, now_log *l, uint64_t next) {
    static now_arg args[NOW_MAX];
    for (;;) {
        int before = now_count(l);
        ck_assert_msg(before < NOW_MAX, "no append ran on the caller's thread in %d", NOW_MAX);
        args[before] = (now_arg){l, next};
        ck_assert_int_eq(now_append(w, &args[before]), 0);
        bool here = nth_here(l, before);
        ck_assert_int_eq(now_count(l), before + 1);
        ck_assert_uint_eq(l->index[before], next);
        next++;
        if (here)
            return next;
        usleep(2000); /* for the storage thread to give the log up */
    }
}

/* wal_append_now on an idle log writes, syncs and calls back before it
 * returns, on the caller's thread; behind a batch still syncing it queues,
 * and the callbacks keep the queue's order; after a slow sync it queues,
 * and after fast ones it runs on the caller's thread again. */
START_TEST(test_append_now) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal *w = open_ok(f, NULL);
    now_log l = {.caller = pthread_self()};
    pthread_mutex_init(&l.mu, NULL);
    uint64_t next = append_until_here(w, &l, 1);
    ck_assert_uint_eq(wal_last_index(w), next - 1); /* durable and visible */
    /* entry next by the storage thread, its sync held: next + 1 must wait
     * behind it */
    tu_gate g;
    tu_gate_init(&g);
    fsf_set_sync_hook(f, tu_gate_hook, &g);
    tu_wait t;
    tu_wait_init(&t);
    tu_op op = {.index = next, .n = 1, .term = 1};
    ck_assert_int_eq(tu_submit(w, &op, &t), 0);
    tu_gate_wait_entered(&g, 1);
    int c = now_count(&l);
    now_arg behind = {&l, next + 1};
    ck_assert_int_eq(now_append(w, &behind), 0);
    ck_assert_int_eq(now_count(&l), c); /* queued, not written here */
    ck_assert_uint_eq(wal_last_index(w), next - 1);
    tu_gate_open(&g);
    tu_wait_all(&t);
    ck_assert_int_eq(op.status, 0);
    ck_assert(!nth_here(&l, c)); /* on a log thread */
    ck_assert_uint_eq(l.index[c], next + 1);
    fsf_set_sync_hook(f, NULL, NULL);
    next += 2;
    /* idle, but its last sync took over WAL_NOW_SYNC_NS_MAX: a disk turned
     * slow holds the caller up no more; queued */
    tu_gate slow;
    tu_gate_init(&slow);
    fsf_set_sync_hook(f, tu_gate_hook, &slow);
    tu_op op4 = {.index = next, .n = 1, .term = 1};
    ck_assert_int_eq(tu_submit(w, &op4, &t), 0);
    tu_gate_wait_entered(&slow, 1);
    usleep(WAL_NOW_SYNC_NS_MAX / 1000 + 5000);
    tu_gate_open(&slow);
    tu_wait_all(&t);
    fsf_set_sync_hook(f, NULL, NULL);
    c = now_count(&l);
    now_arg after_slow = {&l, next + 1};
    ck_assert_int_eq(now_append(w, &after_slow), 0);
    ck_assert(!nth_here(&l, c)); /* on a log thread, after its fast sync */
    ck_assert_uint_eq(l.index[c], next + 1);
    next = append_until_here(w, &l, next + 2); /* the disk is fast again */
    expect_range(w, 1, next - 1, 1);
    wal_close(w);
    w = open_ok(f, NULL); /* and on disk */
    expect_range(w, 1, next - 1, 1);
    wal_close(w);
    tu_wait_destroy(&t);
    pthread_mutex_destroy(&l.mu);
    fsf_free(f);
}
END_TEST

/* Past the queue limit an append gets BUSY at once and nothing is kept. */
START_TEST(test_queue_full_busy) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal_options o;
    wal_options_default(&o);
    o.queue_bytes_max = 4096;
    wal *w = open_ok(f, &o);
    tu_gate g;
    tu_gate_init(&g);
    fsf_set_sync_hook(f, tu_gate_hook, &g);
    static tu_op ops[200];
    tu_wait t;
    tu_wait_init(&t);
    uint64_t queued = 0;
    int k = 0, rv = 0;
    for (; k < 200; k++) {
        ops[k] = (tu_op){.index = (uint64_t)k + 1, .n = 1, .term = 1};
        rv = tu_submit(w, &ops[k], &t);
        if (rv != 0)
            break;
        queued += KV_WAL_RECORD_HEADER_BYTES + tu_len((uint64_t)k + 1, 1);
    }
    ck_assert_int_eq(rv, KV_EBUSY);
    ck_assert_uint_le(queued, 4096);
    ck_assert_uint_gt(queued + KV_WAL_RECORD_HEADER_BYTES + tu_len((uint64_t)k + 1, 1), 4096);
    tu_gate_open(&g);
    tu_wait_all(&t);
    ck_assert_int_eq(t.failed, 0);
    ck_assert_uint_eq(wal_last_index(w), (uint64_t)k); /* the refused one was not kept */
    ops[k].status = 1;
    ck_assert_int_eq(tu_submit(w, &ops[k], &t), 0); /* room again */
    tu_wait_all(&t);
    ck_assert_int_eq(ops[k].status, 0);
    wal_close(w);
    tu_wait_destroy(&t);
    fsf_free(f);
}
END_TEST

/* docs/rules.md, etcd#14025: the append check and the decoder share
 * KV_ENTRY_BYTES_MAX; an entry at the limit is written, reopened, read. */
START_TEST(test_entry_size_limit) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal *w = open_ok(f, NULL);
    uint8_t *big = malloc(KV_ENTRY_BYTES_MAX + 1);
    ck_assert_ptr_nonnull(big);
    for (size_t i = 0; i <= KV_ENTRY_BYTES_MAX; i++)
        big[i] = (uint8_t)(i * 131 + 7);
    wal_entry e = {.index = 1, .term = 1, .type = 9, .len = KV_ENTRY_BYTES_MAX + 1, .data = big};
    ck_assert_int_eq(wal_append_wait(w, &e, 1), KV_ETOOBIG);
    ck_assert_uint_eq(wal_last_index(w), 0);
    e.len = KV_ENTRY_BYTES_MAX;
    ck_assert_int_eq(wal_append_wait(w, &e, 1), 0);
    wal_close(w);
    w = open_ok(f, NULL);
    ck_assert_uint_eq(wal_last_index(w), 1);
    wal_entry *out = NULL;
    size_t n = 0;
    ck_assert_int_eq(wal_read(w, 1, 2, 0, &out, &n), 0);
    ck_assert_uint_eq(n, 1);
    ck_assert_uint_eq(out[0].len, KV_ENTRY_BYTES_MAX);
    ck_assert_uint_eq(out[0].type, 9);
    ck_assert(memcmp(out[0].data, big, KV_ENTRY_BYTES_MAX) == 0);
    wal_entries_free(out, n);
    wal_close(w);
    free(big);
    fsf_free(f);
}
END_TEST

typedef struct reader_arg {
    wal *w;
    volatile int stop;
    long reads;
} reader_arg;

static void *reader(void *p) {
    reader_arg *a = p;
    while (!a->stop) {
        uint64_t first = wal_first_index(a->w), last = wal_last_index(a->w);
        wal_entry *e = NULL;
        size_t n = 0;
        int rv = first <= last ? wal_read(a->w, first, last + 1, 4096, &e, &n) : KV_ENOTFOUND;
        if (rv == 0) {
            for (size_t i = 0; i < n; i++)
                ck_assert(tu_entry_ok(&e[i]));
            wal_entries_free(e, n);
            __atomic_add_fetch(&a->reads, 1, __ATOMIC_RELAXED);
        } else {
            /* the log moved between the two calls (drop, truncate) */
            ck_assert(rv == KV_ENOTFOUND || rv == KV_ECOMPACTED);
        }
    }
    return NULL;
}

/* Readers run while the storage thread appends, truncates and drops. */
START_TEST(test_concurrent_reads) {
    fsf *f = tu_fake_datadir(tu_seed());
    wal_options o = tiny(1024);
    wal *w = open_ok(f, &o);
    append_ok(w, 1, 1, 1);
    reader_arg a = {.w = w};
    pthread_t th;
    ck_assert_int_eq(pthread_create(&th, NULL, reader, &a), 0);
    uint64_t term = 1;
    for (uint64_t i = 2; i < 400; i += 4) {
        if (i > 10 && i % 40 == 2)
            term++, i -= 3; /* a conflicting suffix now and then */
        append_ok(w, i, 4, term);
        if (i % 100 < 4)
            ck_assert_int_eq(wal_drop_prefix(w, i / 2), 0);
    }
    /* The reader must have overlapped some of that; give it a moment on a
     * busy machine before stopping it. */
    for (int i = 0; i < 500 && __atomic_load_n(&a.reads, __ATOMIC_RELAXED) < 3; i++)
        usleep(10 * 1000);
    a.stop = 1;
    pthread_join(th, NULL);
    ck_assert_int_gt(a.reads, 0);
    wal_close(w);
    ck_assert_int_eq(wal_check(fsf_fs(f), TU_DIR, NULL, NULL, NULL), 0);
    fsf_free(f);
}
END_TEST

/* The real file layer, end to end, in a temporary directory. */
START_TEST(test_posix_roundtrip) {
    char dir[] = "/tmp/kv-test-wal-XXXXXX";
    ck_assert_ptr_nonnull(mkdtemp(dir));
    kv_fs *fs = kv_fs_posix();
    ck_assert_int_eq(dd_init(fs, dir), 0);
    /* A file that is not a segment: the scan ignores it. */
    char foreign[64];
    snprintf(foreign, sizeof foreign, "%s/wal/README", dir);
    ck_assert_int_eq(kv_fs_write_atomic(fs, foreign, "x\n", 2), 0);
    wal_options o = tiny(4096);
    wal *w = NULL;
    ck_assert_int_eq(wal_open(fs, dir, &o, NULL, NULL, &w), 0);
    for (uint64_t i = 1; i <= 200; i += 10)
        append_ok(w, i, 10, 1);
    append_ok(w, 150, 5, 2);
    wal_close(w);
    ck_assert_int_eq(wal_open(fs, dir, &o, NULL, NULL, &w), 0);
    ck_assert_uint_eq(wal_last_index(w), 154);
    expect_range(w, 1, 149, 1);
    expect_range(w, 150, 154, 2);
    ck_assert_int_eq(wal_reset(w, 1000, 3), 0);
    wal_close(w);
    ck_assert_int_eq(wal_check(fs, dir, NULL, NULL, NULL), 0);
    char cmd[128];
    snprintf(cmd, sizeof cmd, "rm -rf %s", dir);
    ck_assert_int_eq(system(cmd), 0);
}
END_TEST

int main(void) {
    tu_seed();
    Suite *s = suite_create("wal");
    TCase *tc = tcase_create("core");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_append_read_reopen);
    tcase_add_test(tc, test_invalid_appends);
    tcase_add_test(tc, test_truncate_suffix);
    tcase_add_test(tc, test_truncate_inside_batch);
    tcase_add_test(tc, test_drop_prefix);
    tcase_add_test(tc, test_reset);
    tcase_add_test(tc, test_group_commit);
    tcase_add_test(tc, test_append_now);
    tcase_add_test(tc, test_queue_full_busy);
    tcase_add_test(tc, test_entry_size_limit);
    tcase_add_test(tc, test_concurrent_reads);
    tcase_add_test(tc, test_posix_roundtrip);
    suite_add_tcase(s, tc);
    SRunner *sr = srunner_create(s);
    srunner_run_all(sr, CK_NORMAL);
    int failed = srunner_ntests_failed(sr);
    srunner_free(sr);
    return failed == 0 ? EXIT_SUCCESS : EXIT_FAILURE;
}
