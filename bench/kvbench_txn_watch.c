/*
 * kvbench txn and watch (the top comment of kvbench.c says what each
 * measures); kvbench.c runs their client threads and their histogram.
 *
 * txn values: the preloaded value with its first 8 bytes replaced by a tag,
 * unique per write ((client + 1) << 40 | count), so a client remembers a
 * key's value as 8 bytes and rebuilds it for the compare. watch values: the
 * first 8 bytes are the CLOCK_REALTIME nanoseconds of the send, the rest
 * fixed-seed random.
 */
#include "kvbench.h"

#include "common/clock.h"
#include "kv/errors.h"

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#define BENCH_TXN_ABSENT UINT64_MAX /* cl->seen: the key was absent when last read */
#define BENCH_TAG_BYTES 8u
#define BENCH_WATCH_PREFIX "kvbench/watch/"
#define BENCH_WATCH_MARKER BENCH_WATCH_PREFIX "start"
#define BENCH_WATCH_DIGITS 10u
/* How long bench_watch_start waits for the watcher's first event: longer
 * than a leader election and a reconnect. */
#define BENCH_WATCH_READY_S 10

/* ---- txn ---------------------------------------------------------------------- */

void bench_txn_client_init(bench_client *cl) {
    cluster_bench *b = cl->b;
    assert(b->op == BENCH_TXN && b->preload_value != NULL);
    assert(b->size >= BENCH_TAG_BYTES && b->keys > 0);
    cl->seen = malloc(b->keys * sizeof *cl->seen);
    cl->expect = malloc(b->size);
    assert(cl->seen != NULL && cl->expect != NULL);
    uint64_t tag;
    memcpy(&tag, b->preload_value, BENCH_TAG_BYTES);
    for (uint64_t k = 0; k < b->keys; k++)
        cl->seen[k] = tag; /* every key is preloaded before the clock starts */
}

/* The value with tag: the preloaded one, its first 8 bytes the tag. */
static void txn_value(const cluster_bench *b, uint8_t *buf, uint64_t tag) {
    memcpy(buf, b->preload_value, b->size);
    memcpy(buf, &tag, BENCH_TAG_BYTES);
}

/* What a transaction's answer tells about the key: *seen := the new tag when
 * the compare held, else the value the failure branch's get read. */
static void txn_learn(bench_client *cl, uint64_t k, uint64_t tag, bool held,
                      const kv_txn_result *res, size_t n) {
    if (held) {
        cl->seen[k] = tag;
        return;
    }
    __atomic_fetch_add(&cl->b->compares_failed, 1, __ATOMIC_RELAXED);
    assert(n == 1); /* the failure branch is one get */
    if (res[0].code == KV_ENOTFOUND)
        cl->seen[k] = BENCH_TXN_ABSENT;
    else if (res[0].value_len >= BENCH_TAG_BYTES)
        memcpy(&cl->seen[k], res[0].value, BENCH_TAG_BYTES);
    else
        cl->seen[k] = 0; /* not a value of ours: the next compare fails and reads again */
}

int bench_txn_request(bench_client *cl) {
    cluster_bench *b = cl->b;
    assert(b->op == BENCH_TXN && cl->seen != NULL);
    uint64_t k = bench_rand(&cl->rng) % b->keys;
    char key[BENCH_KEY_BYTES];
    size_t klen = (size_t)bench_key(key, true, k);
    uint64_t tag = (cl->index + 1) << 40 | ++cl->tags;
    txn_value(b, cl->value, tag);
    kv_txn *t = kv_txn_new();
    assert(t != NULL);
    int rc;
    if (cl->seen[k] == BENCH_TXN_ABSENT) {
        rc = kv_txn_compare(t, KV_CMP_VERSION, KV_CMP_EQUAL, key, klen, NULL, 0, 0);
    } else {
        txn_value(b, cl->expect, cl->seen[k]);
        rc = kv_txn_compare(t, KV_CMP_VALUE, KV_CMP_EQUAL, key, klen, cl->expect, b->size, 0);
    }
    if (rc == 0)
        rc = kv_txn_put(t, true, key, klen, cl->value, b->size, 0);
    if (rc == 0)
        rc = kv_txn_get(t, false, key, klen);
    bool held = false;
    kv_txn_result *res = NULL;
    size_t n = 0;
    if (rc == 0)
        rc = kv_txn_commit(cl->c, t, &held, &res, &n);
    if (rc == 0) /* KV_ETIMEOUT and the rest: seen stays; a wrong guess fails a compare */
        txn_learn(cl, k, tag, held, res, n);
    kv_txn_results_free(res, n);
    kv_txn_free(t);
    return rc;
}

/* ---- watch -------------------------------------------------------------------- */

struct bench_watch {
    pthread_t tid;
    kv_client *c;
    uint64_t from_rev; /* the marker's revision */
    uint64_t expected; /* the writers' puts: b->requests */
    pthread_mutex_t mu;
    pthread_cond_t cond;
    bool ready, ended, writers_done; /* under mu */
    bool started, joined;            /* the watcher thread's state, for bench_watch_free */
    int rc;                          /* kv_watch's (1: stopped by watch_event); under mu */
    /* the watcher thread's own until it is joined: */
    uint64_t received, duplicates, last_ns;
    uint8_t *got; /* a bit per put */
    hist lat;     /* microseconds from the send to the event, first sightings */
};

/* The put number of a writer's key, false for any other key (the marker). */
static bool watch_index(const kv_event *ev, uint64_t *i) {
    size_t plen = sizeof BENCH_WATCH_PREFIX - 1;
    if (ev->key_len != plen + BENCH_WATCH_DIGITS)
        return false;
    const char *d = (const char *)ev->key + plen;
    *i = 0;
    for (size_t j = 0; j < BENCH_WATCH_DIGITS; j++) {
        if (d[j] < '0' || d[j] > '9')
            return false;
        *i = *i * 10 + (uint64_t)(d[j] - '0');
    }
    return true;
}

/* kv_watch's callback: counts the writers' events; stops once each put was
 * seen, or at the first idle second after the writers are done. */
static int watch_event(void *arg, const kv_event *ev) {
    bench_watch *w = arg;
    uint64_t i;
    if (ev == NULL || !watch_index(ev, &i)) {
        pthread_mutex_lock(&w->mu);
        bool stop = ev == NULL && w->writers_done;
        w->ready = true; /* the marker, or a quiet second: the watch is live */
        pthread_cond_broadcast(&w->cond);
        pthread_mutex_unlock(&w->mu);
        return stop;
    }
    if (ev->type != KV_EVENT_PUT || ev->value_len < BENCH_TAG_BYTES || i >= w->expected)
        return 0;
    uint64_t sent_ns, now_ns = bench_realtime_ns();
    w->last_ns = kv_now_ns();
    if (w->got[i / 8] & (1u << (i % 8))) {
        w->duplicates++;
        return 0;
    }
    memcpy(&sent_ns, ev->value, BENCH_TAG_BYTES);
    hist_add(&w->lat, now_ns > sent_ns ? (now_ns - sent_ns) / 1000 : 0);
    w->got[i / 8] |= (uint8_t)(1u << (i % 8));
    w->received++;
    assert(w->received <= w->expected);
    return w->received == w->expected;
}

static void *watch_run(void *arg) {
    bench_watch *w = arg;
    int rc = kv_watch(w->c, BENCH_WATCH_PREFIX, sizeof BENCH_WATCH_PREFIX - 1, w->from_rev,
                      watch_event, w);
    pthread_mutex_lock(&w->mu);
    w->rc = rc;
    w->ended = true;
    pthread_cond_broadcast(&w->cond);
    pthread_mutex_unlock(&w->mu);
    return NULL;
}

/* The marker's revision: the watch starts there, so no writer's put can
 * come before it. */
static int watch_marker(bench_watch *w) {
    int rc = kv_put(w->c, BENCH_WATCH_MARKER, sizeof BENCH_WATCH_MARKER - 1, "start", 5);
    void *v = NULL;
    size_t vlen = 0;
    kv_keyinfo info = {0};
    if (rc == 0)
        rc = kv_get_ex(w->c, BENCH_WATCH_MARKER, sizeof BENCH_WATCH_MARKER - 1, &v, &vlen, &info);
    kv_free(v);
    w->from_rev = info.mod_rev;
    assert(rc != 0 || w->from_rev > 0);
    return rc;
}

int bench_watch_start(cluster_bench *b) {
    assert(b->op == BENCH_WATCH && b->watch == NULL && b->requests > 0);
    bench_watch *w = calloc(1, sizeof *w); /* the histogram: 26 KiB */
    assert(w != NULL);
    w->expected = b->requests;
    w->got = calloc(b->requests / 8 + 1, 1);
    assert(w->got != NULL);
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cond, NULL);
    b->watch = w;
    int rc = kv_client_open(&w->c, b->cluster, &b->opts);
    if (rc == 0)
        rc = watch_marker(w);
    if (rc != 0)
        return rc;
    if (pthread_create(&w->tid, NULL, watch_run, w) != 0)
        abort();
    w->started = true;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_sec += BENCH_WATCH_READY_S;
    pthread_mutex_lock(&w->mu);
    while (!w->ready && !w->ended)
        if (pthread_cond_timedwait(&w->cond, &w->mu, &until) == ETIMEDOUT)
            break;
    rc = w->ready ? 0 : w->ended ? w->rc : KV_ETIMEOUT;
    pthread_mutex_unlock(&w->mu);
    return rc; /* not ready: the thread is left blocked, and the process ends */
}

int bench_watch_put(bench_client *cl, uint64_t i) {
    cluster_bench *b = cl->b;
    assert(b->op == BENCH_WATCH && b->size >= BENCH_TAG_BYTES);
    char key[BENCH_KEY_BYTES];
    int klen = snprintf(key, sizeof key, BENCH_WATCH_PREFIX "%010" PRIu64, cl->first + i);
    assert(klen == (int)(sizeof BENCH_WATCH_PREFIX - 1 + BENCH_WATCH_DIGITS));
    bench_fill(&cl->rng, cl->value, b->size);
    uint64_t sent_ns = bench_realtime_ns();
    memcpy(cl->value, &sent_ns, BENCH_TAG_BYTES);
    return kv_put(cl->c, key, (size_t)klen, cl->value, b->size);
}

double bench_watch_finish(cluster_bench *b, uint64_t t0_ns) {
    bench_watch *w = b->watch;
    assert(w != NULL && w->ready);
    pthread_mutex_lock(&w->mu);
    w->writers_done = true;
    pthread_mutex_unlock(&w->mu);
    pthread_join(w->tid, NULL);
    w->joined = true;
    if (w->rc < 0)
        fprintf(stderr, "kvbench watch: the watch ended with %s\n", kv_errword(w->rc));
    uint64_t end_ns = w->received > 0 ? w->last_ns : kv_now_ns();
    return (double)(end_ns - t0_ns) / 1e9;
}

void bench_watch_print(const cluster_bench *b, double secs) {
    const bench_watch *w = b->watch;
    assert(w != NULL && w->received <= w->expected);
    uint64_t p50 = hist_percentile(&w->lat, 0.50), p99 = hist_percentile(&w->lat, 0.99),
             p999 = hist_percentile(&w->lat, 0.999);
    const char *fmt =
        b->json ? "{\"op\":\"watch\",\"clients\":%" PRIu64 ",\"depth\":1,\"requests\":%" PRIu64
                  ",\"size\":%" PRIu64 ",\"secs\":%.3f,\"ops_per_s\":%.0f,\"p50_us\":%" PRIu64
                  ",\"p99_us\":%" PRIu64 ",\"p999_us\":%" PRIu64 ",\"errors\":%" PRIu64
                  ",\"events\":%" PRIu64 ",\"duplicates\":%" PRIu64 ",\"put_errors\":%" PRIu64 "}\n"
                : "op=watch clients=%" PRIu64 " depth=1 requests=%" PRIu64 " size=%" PRIu64
                  " secs=%.3f ops_per_s=%.0f p50_us=%" PRIu64 " p99_us=%" PRIu64 " p999_us=%" PRIu64
                  " errors=%" PRIu64 " events=%" PRIu64 " duplicates=%" PRIu64
                  " put_errors=%" PRIu64 "\n";
    printf(fmt, b->clients, w->expected, b->size, secs, w->received / secs, p50, p99, p999,
           w->expected - w->received, w->received, w->duplicates, b->errors);
}

uint64_t bench_watch_missing(const bench_watch *w) {
    assert(w->joined && w->received <= w->expected);
    return w->expected - w->received;
}

void bench_watch_free(bench_watch *w) {
    if (w == NULL || (w->started && !w->joined))
        return; /* the watcher may still be blocked in kv_watch: the process ends */
    kv_client_close(w->c);
    pthread_mutex_destroy(&w->mu);
    pthread_cond_destroy(&w->cond);
    free(w->got);
    free(w);
}
