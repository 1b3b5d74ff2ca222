/*
 * shared_writer: THREADS threads sharing one kv_client (client.h "THREADS")
 * write for SECONDS seconds while tests/cluster/test_shared_kill.sh kills
 * the leader. Each thread puts keys of its own ("s/T/N" = "vT/N") and adds
 * one to a counter of its own ("c/T") by compare-and-swap. Then, with a
 * fresh client, it checks what a user would notice:
 *   - every acknowledged put reads back with its value, a put that failed
 *     UNAVAILABLE (never accepted by a leader) is absent, a put that failed
 *     TIMEOUT (outcome unknown) is absent or holds its value;
 *   - no call failed with COMPARE: the counter has one writer, so COMPARE
 *     would mean an increment applied twice (a retry without its session)
 *     or an acknowledgement lost; after a TIMEOUT the thread reads the
 *     counter back before going on;
 *   - each counter holds its acknowledged increments, plus at most those
 *     whose outcome was unknown;
 *   - no call failed with anything but TIMEOUT or UNAVAILABLE, and puts
 *     were acknowledged after the kill (KILLED_FILE appeared).
 * PROGRESS_FILE is created once 200 puts were acknowledged.
 *
 * Usage: shared_writer ENDPOINTS THREADS SECONDS PROGRESS_FILE KILLED_FILE
 * Prints "acked=A unknown=U unavailable=N after_kill=K increments=I"; exit
 * 0 when every check holds, 1 otherwise (each failure on stderr).
 */
#include "kv/client.h"

#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define THREADS_MAX 256
#define PUTS_MAX 100000

typedef struct worker {
    kv_client *c;
    int t;
    uint64_t end_ns;
    int *put_status; /* by put number */
    int puts;
    uint64_t counter, incr_acked, incr_unknown;
    int bad; /* calls that failed with a code no retry explains */
    int compare;
} worker;

static const char *g_progress, *g_killed;
static int g_acked, g_after_kill, g_killed_seen;
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;

static uint64_t now_ns(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void count_ack(void) {
    pthread_mutex_lock(&g_mu);
    if (++g_acked == 200) {
        FILE *f = fopen(g_progress, "w");
        if (f != NULL)
            fclose(f);
    }
    if (!g_killed_seen && g_acked % 20 == 0 && access(g_killed, F_OK) == 0)
        g_killed_seen = 1;
    if (g_killed_seen)
        g_after_kill++;
    pthread_mutex_unlock(&g_mu);
}

/* The counter's value, read until a read succeeds (or 30 s). */
static int read_counter(kv_client *c, const char *key, uint64_t *v) {
    uint64_t until = now_ns() + 30000000000ull;
    for (;;) {
        void *p = NULL;
        size_t n = 0;
        int rc = kv_get(c, key, strlen(key), &p, &n);
        if (rc == 0 || rc == KV_ENOTFOUND) {
            char buf[32] = "0";
            if (rc == 0 && n < sizeof buf) {
                memcpy(buf, p, n);
                buf[n] = '\0';
            }
            kv_free(p);
            *v = strtoull(buf, NULL, 10);
            return 0;
        }
        if (now_ns() > until)
            return rc;
    }
}

static void *work(void *arg) {
    worker *w = arg;
    char key[64], val[64], ckey[32], want[32], next[32];
    snprintf(ckey, sizeof ckey, "c/%d", w->t);
    while (now_ns() < w->end_ns && w->puts < PUTS_MAX) {
        int i = w->puts++;
        snprintf(key, sizeof key, "s/%d/%d", w->t, i);
        snprintf(val, sizeof val, "v%d/%d", w->t, i);
        int rc = kv_put(w->c, key, strlen(key), val, strlen(val));
        w->put_status[i] = rc;
        if (rc == 0)
            count_ack();
        else if (rc != KV_ETIMEOUT && rc != KV_EUNAVAILABLE) {
            fprintf(stderr, "FAIL: put %s: %s (%s)\n", key, kv_errword(rc), kv_errstr());
            w->bad++;
        }
        snprintf(want, sizeof want, "%" PRIu64, w->counter);
        snprintf(next, sizeof next, "%" PRIu64, w->counter + 1);
        rc = w->counter == 0
                 ? kv_cas(w->c, ckey, strlen(ckey), NULL, 0, next, strlen(next))
                 : kv_cas(w->c, ckey, strlen(ckey), want, strlen(want), next, strlen(next));
        if (rc == 0) {
            w->counter++;
            w->incr_acked++;
        } else if (rc == KV_ETIMEOUT) {
            w->incr_unknown++;
            uint64_t v;
            if (read_counter(w->c, ckey, &v) != 0) {
                fprintf(stderr, "FAIL: %s unreadable after a TIMEOUT\n", ckey);
                w->bad++;
                break;
            }
            if (v != w->counter && v != w->counter + 1) {
                fprintf(stderr, "FAIL: %s is %" PRIu64 " after an unknown %" PRIu64 " -> %s\n",
                        ckey, v, w->counter, next);
                w->bad++;
            }
            w->counter = v;
        } else if (rc == KV_ECOMPARE) {
            fprintf(stderr, "FAIL: cas %s %s -> %s: COMPARE (applied twice, or an answer lost)\n",
                    ckey, want, next);
            w->compare++;
            break;
        } else if (rc != KV_EUNAVAILABLE) {
            fprintf(stderr, "FAIL: cas %s: %s (%s)\n", ckey, kv_errword(rc), kv_errstr());
            w->bad++;
        }
    }
    return NULL;
}

static int check(kv_client *c, worker *w) {
    int bad = 0;
    for (int i = 0; i < w->puts; i++) {
        char key[64], val[64];
        snprintf(key, sizeof key, "s/%d/%d", w->t, i);
        snprintf(val, sizeof val, "v%d/%d", w->t, i);
        void *p = NULL;
        size_t n = 0;
        int rc, tries = 0;
        while ((rc = kv_get(c, key, strlen(key), &p, &n)) != 0 && rc != KV_ENOTFOUND &&
               ++tries < 50)
            ;
        bool same = rc == 0 && n == strlen(val) && memcmp(p, val, n) == 0;
        kv_free(p);
        int st = w->put_status[i];
        if ((st == 0 && !same) || (st == KV_EUNAVAILABLE && rc != KV_ENOTFOUND) ||
            (st == KV_ETIMEOUT && !same && rc != KV_ENOTFOUND)) {
            fprintf(stderr, "FAIL: %s (put said %s) reads %s%s\n", key, kv_errword(st),
                    kv_errword(rc), rc == 0 && !same ? " with another value" : "");
            bad++;
        }
    }
    char ckey[32];
    snprintf(ckey, sizeof ckey, "c/%d", w->t);
    uint64_t v = 0;
    if (read_counter(c, ckey, &v) != 0 || v != w->counter || v < w->incr_acked ||
        v > w->incr_acked + w->incr_unknown) {
        fprintf(stderr,
                "FAIL: %s holds %" PRIu64 ": the thread saw %" PRIu64 ", %" PRIu64
                " acknowledged and %" PRIu64 " unknown increments\n",
                ckey, v, w->counter, w->incr_acked, w->incr_unknown);
        bad++;
    }
    return bad;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr,
                "usage: shared_writer ENDPOINTS THREADS SECONDS PROGRESS_FILE KILLED_FILE\n");
        return 2;
    }
    int threads = atoi(argv[2]), seconds = atoi(argv[3]);
    if (threads < 1 || threads > THREADS_MAX || seconds < 1)
        return 2;
    g_progress = argv[4];
    g_killed = argv[5];
    struct kv_client_options o;
    kv_client_options_init(&o);
    o.timeout_ms = 3000;
    o.connect_timeout_ms = 500;
    kv_client *c = NULL;
    int rc = kv_client_open(&c, argv[1], &o);
    if (rc != 0) {
        fprintf(stderr, "FAIL: open %s: %s\n", argv[1], kv_errword(rc));
        return 1;
    }
    worker *ws = calloc((size_t)threads, sizeof *ws);
    pthread_t *tids = calloc((size_t)threads, sizeof *tids);
    uint64_t end = now_ns() + (uint64_t)seconds * 1000000000ull;
    for (int t = 0; t < threads; t++) {
        ws[t] =
            (worker){.c = c, .t = t, .end_ns = end, .put_status = calloc(PUTS_MAX, sizeof(int))};
        if (ws[t].put_status == NULL || pthread_create(&tids[t], NULL, work, &ws[t]) != 0)
            abort();
    }
    for (int t = 0; t < threads; t++)
        pthread_join(tids[t], NULL);
    kv_client_close(c);
    o.timeout_ms = 5000;
    rc = kv_client_open(&c, argv[1], &o);
    if (rc != 0) {
        fprintf(stderr, "FAIL: open %s for the checks: %s\n", argv[1], kv_errword(rc));
        return 1;
    }
    int bad = 0, acked = 0, unknown = 0, unavailable = 0;
    uint64_t incr = 0;
    for (int t = 0; t < threads; t++) {
        bad += ws[t].bad + ws[t].compare + check(c, &ws[t]);
        incr += ws[t].incr_acked;
        for (int i = 0; i < ws[t].puts; i++) {
            acked += ws[t].put_status[i] == 0;
            unknown += ws[t].put_status[i] == KV_ETIMEOUT;
            unavailable += ws[t].put_status[i] == KV_EUNAVAILABLE;
        }
        free(ws[t].put_status);
    }
    kv_client_close(c);
    printf("acked=%d unknown=%d unavailable=%d after_kill=%d increments=%" PRIu64 "\n", acked,
           unknown, unavailable, g_after_kill, incr);
    if (g_after_kill < 20) {
        fprintf(stderr, "FAIL: %d puts acknowledged after the kill, want 20 or more\n",
                g_after_kill);
        bad++;
    }
    free(ws);
    free(tids);
    return bad ? 1 : 0;
}
