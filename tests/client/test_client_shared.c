/*
 * One kv_client shared by many threads (client.h, "THREADS") against fake
 * nodes (fake_server.h): every thread's calls complete with their own
 * answers; a node that hangs up in the middle (answers lost, requests on the
 * wire, all resent) applies no write twice and loses no acknowledged one,
 * and as each write has a session of its own, every call still succeeds;
 * past KVC_SESSIONS_MAX writes in flight, sessions are shared and no more
 * are registered; the asynchronous form and the operator calls refuse to
 * run beside other threads' calls (BUSY), and the other way round.
 */
#include "client_test_util.h"

#include "common/clock.h"

#include <check.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct worker {
    kv_client *c;
    int t, writes;
    uint64_t counter;           /* the thread's view of its counter */
    int acked, timeouts, other; /* put and CAS outcomes */
    int compare;                /* CAS said COMPARE: never expected */
    int first_other;
    int get_mismatch;
} worker;

static void note(worker *w, int rc) {
    if (rc == 0)
        w->acked++;
    else if (rc == KV_ETIMEOUT)
        w->timeouts++;
    else if (rc == KV_ECOMPARE)
        w->compare++;
    else if (w->other++ == 0)
        w->first_other = rc;
}

/* Each thread: a put of a key of its own, a get of it, and one more on a
 * counter of its own by compare-and-swap, `writes` times. */
static void *work(void *arg) {
    worker *w = arg;
    char key[32], ckey[32], want[32], next[32];
    snprintf(ckey, sizeof ckey, "c/%d", w->t);
    for (int i = 0; i < w->writes; i++) {
        int klen = snprintf(key, sizeof key, "p/%d/%d", w->t, i);
        int rc = kv_put(w->c, key, (size_t)klen, key, (size_t)klen);
        note(w, rc);
        if (rc == 0) {
            void *v = NULL;
            size_t n = 0;
            rc = kv_get(w->c, key, (size_t)klen, &v, &n);
            if (rc != 0 || n != (size_t)klen || memcmp(v, key, n) != 0)
                w->get_mismatch++;
            kv_free(v);
        }
        snprintf(want, sizeof want, "%" PRIu64, w->counter);
        int nlen = snprintf(next, sizeof next, "%" PRIu64, w->counter + 1);
        rc = w->counter == 0
                 ? kv_cas(w->c, ckey, strlen(ckey), NULL, 0, next, (size_t)nlen)
                 : kv_cas(w->c, ckey, strlen(ckey), want, strlen(want), next, (size_t)nlen);
        note(w, rc);
        if (rc == 0)
            w->counter++;
        if (rc != 0 && rc != KV_ETIMEOUT)
            break;
        if (rc == KV_ETIMEOUT) {
            void *v = NULL;
            size_t n = 0;
            if (kv_get(w->c, ckey, strlen(ckey), &v, &n) != 0 || n >= sizeof want)
                break;
            memcpy(want, v, n);
            want[n] = '\0';
            kv_free(v);
            w->counter = strtoull(want, NULL, 10);
        }
    }
    return NULL;
}

/* threads workers on c, `writes` rounds each; returns the workers (free). */
static worker *run_workers(kv_client *c, int threads, int writes) {
    worker *ws = calloc((size_t)threads, sizeof *ws);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    ck_assert(ws != NULL && tids != NULL);
    for (int t = 0; t < threads; t++) {
        ws[t] = (worker){.c = c, .t = t, .writes = writes};
        ck_assert_int_eq(pthread_create(&tids[t], NULL, work, &ws[t]), 0);
    }
    for (int t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    free(tids);
    return ws;
}

/* Every acknowledged put is stored with its value; every counter holds what
 * its thread saw; nothing failed but by TIMEOUT (when allowed). */
static void check_workers(fake_server *f, worker *ws, int threads, bool timeouts_ok) {
    for (int t = 0; t < threads; t++) {
        worker *w = &ws[t];
        ck_assert_msg(w->other == 0, "thread %d: %d calls failed, the first %s", t, w->other,
                      kv_errword(w->first_other));
        ck_assert_msg(w->compare == 0, "thread %d: a CAS said COMPARE (applied twice?)", t);
        ck_assert_int_eq(w->get_mismatch, 0);
        if (!timeouts_ok)
            ck_assert_msg(w->timeouts == 0, "thread %d: %d TIMEOUT", t, w->timeouts);
        ck_assert_uint_eq(w->counter, (uint64_t)w->writes);
        char ckey[32];
        snprintf(ckey, sizeof ckey, "c/%d", t);
        size_t len = 0;
        char *v = fake_value(f, ckey, &len);
        ck_assert_ptr_nonnull(v);
        char want[32];
        ck_assert_uint_eq(len, (size_t)snprintf(want, sizeof want, "%d", w->writes));
        ck_assert_int_eq(memcmp(v, want, len), 0);
        free(v);
        for (int i = 0; i < w->writes; i++) {
            char key[32];
            int klen = snprintf(key, sizeof key, "p/%d/%d", t, i);
            v = fake_value(f, key, &len);
            ck_assert_msg(v != NULL, "%s missing", key);
            ck_assert_uint_eq(len, (size_t)klen);
            ck_assert_int_eq(memcmp(v, key, len), 0);
            free(v);
        }
    }
}

START_TEST(test_shared_calls) {
    fake_server *f = start(&(fake_config){0});
    kv_client *c = open_short(fake_addr(f), 5000);
    worker *ws = run_workers(c, 16, 60);
    check_workers(f, ws, 16, false);
    ck_assert_uint_eq(fake_applied(f), 16 * 60 * 2);
    ck_assert_uint_eq(fake_duplicates(f), 0);
    /* a session per write in flight: at most one per thread */
    ck_assert_uint_le(fake_registers(f), 16);
    free(ws);
    /* one thread alone again: one session, the first one free */
    ck_assert_int_eq(kv_put(c, "alone", 5, "1", 1), 0);
    kv_client_close(c);
    fake_stop(f);
}
END_TEST

START_TEST(test_shared_node_hangs_up) {
    /* The node applies the 600th write and hangs up without answering;
     * what else was on the wire is resent with the same (client id, seq)
     * on a new connection. Each write had a session of its own, so every
     * resent one that was applied gets its stored reply: nothing fails,
     * nothing is applied twice. */
    fake_server *f = start(&(fake_config){.close_after_apply = 600});
    kv_client *c = open_short(fake_addr(f), 5000);
    worker *ws = run_workers(c, 24, 40);
    check_workers(f, ws, 24, false);
    ck_assert_uint_eq(fake_applied(f), 24 * 40 * 2);
    ck_assert_uint_ge(fake_duplicates(f), 1);
    ck_assert_uint_ge(fake_hellos(f), 2);
    free(ws);
    kv_client_close(c);
    fake_stop(f);
}
END_TEST

START_TEST(test_shared_many_threads) {
    /* More threads than sessions a client keeps (KVC_SESSIONS_MAX, 64):
     * writes share sessions past it, no more are registered, and all
     * succeed. */
    fake_server *f = start(&(fake_config){0});
    kv_client *c = open_short(fake_addr(f), 10000);
    worker *ws = run_workers(c, 80, 10);
    check_workers(f, ws, 80, false);
    ck_assert_uint_le(fake_registers(f), 64);
    free(ws);
    kv_client_close(c);
    fake_stop(f);
}
END_TEST

static void *slow_put(void *arg) {
    kv_client *c = arg;
    return (void *)(intptr_t)kv_put(c, "slow", 4, "1", 1);
}

static void on_done(void *arg, int status, const void *value, size_t len) {
    (void)value;
    (void)len;
    *(int *)arg = status;
}

START_TEST(test_shared_mixing) {
    /* A node that never answers holds one thread's put (until its
     * timeout); meanwhile the other forms refuse to run beside it. */
    fake_server *bh = start(&(fake_config){.black_hole = true});
    kv_client *c = open_short(fake_addr(bh), 600);
    pthread_t tid;
    ck_assert_int_eq(pthread_create(&tid, NULL, slow_put, c), 0);
    usleep(100 * 1000); /* the put waits for its REGISTER's answer */
    int st = 1;
    ck_assert_int_eq(kv_put_async(c, "a", 1, "1", 1, on_done, &st), KV_EBUSY);
    ck_assert_int_eq(kv_client_poll(c, 0), KV_EBUSY);
    kv_member *m = NULL;
    size_t n = 0;
    ck_assert_int_eq(kv_member_list(c, &m, &n), KV_EBUSY);
    char *line = NULL;
    ck_assert_int_eq(kv_node_status(c, NULL, &line), KV_EBUSY);
    /* a second synchronous call runs beside it */
    void *v = NULL;
    size_t vlen = 0;
    ck_assert_int_eq(kv_get(c, "k", 1, &v, &vlen), KV_EUNAVAILABLE);
    void *ret;
    pthread_join(tid, &ret);
    ck_assert_int_eq((int)(intptr_t)ret, KV_EUNAVAILABLE); /* REGISTER unanswered */
    /* alone again: the other forms run */
    ck_assert_int_eq(kv_put_async(c, "a", 1, "1", 1, on_done, &st), 0);
    while (kv_client_inflight(c) > 0)
        ck_assert_int_ge(kv_client_poll(c, 100), 0);
    ck_assert_int_eq(st, KV_EUNAVAILABLE);
    kv_client_close(c);
    fake_stop(bh);
}
END_TEST

int main(void) {
    Suite *s = suite_create("client_shared");
    TCase *tc = tcase_create("client_shared");
    tcase_set_timeout(tc, 120);
    tcase_add_test(tc, test_shared_calls);
    tcase_add_test(tc, test_shared_node_hangs_up);
    tcase_add_test(tc, test_shared_many_threads);
    tcase_add_test(tc, test_shared_mixing);
    suite_add_tcase(s, tc);
    SRunner *r = srunner_create(s);
    srunner_run_all(r, CK_NORMAL);
    int failed = srunner_ntests_failed(r);
    srunner_free(r);
    return failed ? 1 : 0;
}
